"""The probe of notebook 06: short inputs (the first two sentences of every validation review) and accuracy by review
length, for a study's models and TF-IDF side by side; a model that reads whole reviews is set beside its head+tail
twin read both ways."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from nanogpt.study.pretrain_study import with_start

LENGTH_BUCKETS = (0, 100, 200, 400, math.inf)  # words
BUCKET_LABELS = ("<= 100 words", "101-200", "201-400", "> 400")
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def first_sentences(text: str, n: int = 2) -> str:
    """The first `n` sentences of a review (HTML line breaks as spaces): what a service gets as a one-liner."""
    clean = " ".join(_BREAK.sub(" ", text).split())
    return " ".join(_SENTENCE_END.split(clean)[:n])


def length_bucket(texts) -> pd.Series:
    words = pd.Series([len(t.split()) for t in texts])
    return pd.cut(words, LENGTH_BUCKETS, labels=BUCKET_LABELS, right=True)


def probe_accuracy(labels, probabilities: dict[str, np.ndarray], texts) -> pd.DataFrame:
    """Accuracy (points) of every model's P(positive) on the same reviews, overall and per length bucket of the
    full reviews `texts`: one row per model."""
    labels = np.asarray(labels)
    bucket = length_bucket(texts)
    rows = []
    for name, p in probabilities.items():
        correct = pd.Series((np.asarray(p) > 0.5) == labels)
        row = {"model": name, "all": 100 * correct.mean()}
        row.update({str(b): 100 * correct[bucket == b].mean() for b in BUCKET_LABELS})
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def tfidf_probabilities(source: str, split_seed: int, val_fraction: float, texts_by_input: dict[str, list[str]]
                        ) -> dict[str, np.ndarray]:
    """TF-IDF + logistic regression (baseline.py's settings), fitted on the training split, scored on each of
    `texts_by_input` (e.g. full reviews and their first two sentences)."""
    from nanogpt.study.baseline import fit_tfidf

    vec, model = fit_tfidf(source, split_seed, val_fraction)
    return {k: model.predict_proba(vec.transform(v))[:, 1] for k, v in texts_by_input.items()}


def probe_models(results_dir: str | Path, runs: pd.DataFrame, primary: str, seed: int = 0,
                 every: pd.DataFrame | None = None) -> dict[str, tuple[Path, str | None]]:
    """The checkpoints of `seed` from scratch and from backbone `primary`, per loss, that are on disk, each with the
    reading to score it under (None: as it was trained). A pre-trained model that reads whole reviews is set beside
    its head+tail twin from `every` (the same run trained and scored truncated), read both ways, where that is on
    disk: what reading the whole review is worth, on one backbone and seed."""
    from nanogpt.run.rundir import RunDir

    runs = with_start(runs)
    out = {}
    for start, backbone in (("scratch", ""), ("pre-trained", primary)):
        for loss in ("ce", "bce"):
            row = runs[(runs["start"] == start) & (runs["backbone"] == backbone) & (runs["loss"] == loss)
                       & (runs["seed"] == seed)]
            if not len(row):
                continue
            path = RunDir(results_dir, str(row["run_id"].iloc[0])).model
            if not path.is_file():
                continue
            reads_windows = _reading(row["config"].iloc[0]) == "windows"
            out[f"{loss.upper()} {start}" + (" (whole review)" if reads_windows else "") + f" (seed {seed})"] = (path, None)
            twin = truncated_twin(every, row.iloc[0]) if reads_windows and every is not None else None
            if twin is not None and RunDir(results_dir, twin).model.is_file():
                twin_path = RunDir(results_dir, twin).model
                out[f"{loss.upper()} {start}, head+tail (seed {seed})"] = (twin_path, "truncated")
                out[f"{loss.upper()} {start}, head+tail read in windows (seed {seed})"] = (twin_path, "windows")
    return out


def _reading(config: str) -> str:
    import json

    return json.loads(config).get("reading", "truncated")


WHOLE_REVIEW_FIELDS = ("reading", "truncation", "window_stride")


def truncated_twin(every: pd.DataFrame, row: pd.Series) -> str | None:
    """The run id of `row`'s twin in `every`: the same config but trained head+tail and scored truncated."""
    import json

    mine = {k: v for k, v in json.loads(row["config"]).items() if k not in WHOLE_REVIEW_FIELDS + ("out_dir", "quiet")}
    for rid, config in zip(every["run_id"], every["config"]):
        theirs = json.loads(config)
        if (theirs.get("reading", "truncated") == "truncated" and theirs.get("truncation") == "head_tail"
                and {k: v for k, v in theirs.items() if k not in WHOLE_REVIEW_FIELDS + ("out_dir", "quiet")} == mine):
            return str(rid)
    return None


def short_input_probe(models: dict[str, Path | tuple[Path, str | None]], source: str, split_seed: int,
                      val_fraction: float, limit: int | None = None) -> pd.DataFrame:
    """Accuracy (points) of each model (a checkpoint, or a checkpoint and the reading to score it under) and of
    TF-IDF on the validation reviews by length bucket, and on the first two sentences of every validation review
    (of the first `limit` of them, if given)."""
    from nanogpt.data.imdb import load_imdb
    from nanogpt.serve.predict import Classifier

    val = load_imdb(source, split_seed=split_seed, val_fraction=val_fraction)["validation"]
    if limit is not None:
        val = val.select(range(min(limit, len(val))))
    texts, labels = list(val["text"]), np.asarray(val["label"])
    short = [first_sentences(t) for t in texts]
    full_p, short_p = {}, {}
    for name, spec in models.items():
        path, reading = spec if isinstance(spec, tuple) else (spec, None)
        clf = Classifier.load(path, reading=reading)
        full_p[name], short_p[name] = clf.predict(texts).probabilities, clf.predict(short).probabilities
    tfidf = tfidf_probabilities(source, split_seed, val_fraction, {"full": texts, "short": short})
    full_p["TF-IDF"], short_p["TF-IDF"] = tfidf["full"], tfidf["short"]
    table = probe_accuracy(labels, full_p, texts)
    table["first 2 sentences"] = [100 * np.mean((short_p[m] > 0.5) == labels) for m in table.index]
    return table
