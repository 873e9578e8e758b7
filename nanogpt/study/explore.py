"""Numbers for the data exploration notebook: split sizes, lengths, truncation coverage, indicative tokens."""
from __future__ import annotations

import re
from collections import Counter

import datasets
import numpy as np
import pandas as pd

from nanogpt.core.losses import LABEL_NAMES
from nanogpt.data.tokenizer import encode_batch


def split_summary(dsd: datasets.DatasetDict) -> pd.DataFrame:
    """Per split: reviews, share positive, mean and median length in characters."""
    rows = []
    for name, ds in dsd.items():
        labels = np.asarray(ds["label"])
        chars = np.fromiter((len(t) for t in ds["text"]), dtype=np.int64)
        rows.append({"split": name, "reviews": len(ds), "positive_share": float(labels.mean()),
                     "mean_chars": float(chars.mean()), "median_chars": float(np.median(chars))})
    return pd.DataFrame(rows)


def length_table(dsd: datasets.DatasetDict) -> pd.DataFrame:
    """One row per review: split, sentiment, length in characters and in GPT-2 tokens."""
    frames = []
    for name, ds in dsd.items():
        texts = ds["text"]
        tokens = np.fromiter((len(ids) for ids in encode_batch(texts)), dtype=np.int64, count=len(texts))
        frames.append(pd.DataFrame({"split": name, "sentiment": [LABEL_NAMES[int(y)] for y in ds["label"]],
                                    "chars": [len(t) for t in texts], "tokens": tokens}))
    return pd.concat(frames, ignore_index=True)


def truncation_coverage(token_lengths, block_sizes=(64, 128, 256, 384, 512, 768, 1024)) -> pd.DataFrame:
    """For each block size: share of reviews that fit whole, and share of all tokens kept."""
    n = np.asarray(token_lengths, dtype=np.int64)
    return pd.DataFrame([{"block_size": b, "reviews_whole": float((n <= b).mean()),
                          "tokens_kept": float(np.minimum(n, b).sum() / n.sum())} for b in block_sizes])


_WORD = re.compile(r"[a-z][a-z']+")


def indicative_words(texts, labels, top: int = 15, min_count: int = 20) -> pd.DataFrame:
    """Words most indicative of each class by smoothed log-odds ratio (each review counts a word once).

    log-odds = log((c_pos + 1) / (N_pos - c_pos + 1)) - log((c_neg + 1) / (N_neg - c_neg + 1)), where c is the
    number of reviews of that class containing the word and N the class size. Equal log-odds are ordered by
    the word, so the table (and figure) is the same in every process.
    """
    labels = np.asarray(labels)
    pos, neg = Counter(), Counter()
    for text, label in zip(texts, labels):
        words = set(_WORD.findall(text.lower().replace("<br />", " ")))
        (pos if label == 1 else neg).update(words)
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    rows = []
    for word in sorted(set(pos) | set(neg)):
        cp, cn = pos[word], neg[word]
        if cp + cn < min_count:
            continue
        lo = np.log((cp + 1) / (n_pos - cp + 1)) - np.log((cn + 1) / (n_neg - cn + 1))
        rows.append({"word": word, "log_odds": lo, "positive_reviews": cp, "negative_reviews": cn})
    # ties broken by the word: set order changes with each process's string hashing, and the figure with it
    df = pd.DataFrame(rows)
    top_neg = df.sort_values(["log_odds", "word"], kind="stable").head(top).assign(indicates="negative")
    top_pos = (df.sort_values(["log_odds", "word"], ascending=[False, True], kind="stable").head(top)
               .assign(indicates="positive"))
    return pd.concat([top_pos, top_neg], ignore_index=True)
