"""A classical baseline on the same split, so a reader can place the GPTs: TF-IDF (word 1-2 grams) and
logistic regression (scikit-learn). Cached as JSON under the results folder, keyed by data and settings."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from nanogpt.core.artifacts import atomic_write_json, stable_digest
from nanogpt.core.metrics import classification_metrics
from nanogpt.data.imdb import DEFAULT_SPLIT_SEED, DEFAULT_VAL_FRACTION, load_imdb, source_fingerprint

SETTINGS = {
    "ngram_range": [1, 2],  # words and word pairs ("not good")
    "min_df": 2,  # drop n-grams seen in one review only
    "sublinear_tf": True,  # 1 + log(tf): a word said ten times is not ten times the evidence
    "C": 4.0,  # inverse regularisation strength of the logistic regression
}


def tfidf_baseline(source: str = "bundled", split_seed: int = DEFAULT_SPLIT_SEED,
                   val_fraction: float = DEFAULT_VAL_FRACTION, out_dir: str | Path = "results",
                   refresh: bool = False) -> dict:
    """Validation metrics of TF-IDF + logistic regression on the study's split (cached)."""
    parts = {"data": source_fingerprint(source), "split_seed": split_seed, "val_fraction": val_fraction,
             "settings": SETTINGS, "sklearn": sklearn.__version__}
    key = stable_digest(parts, 12)
    path = Path(out_dir) / f"baseline-tfidf-{key}.json"
    if path.is_file() and not refresh:
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    dsd = load_imdb(source, split_seed=split_seed, val_fraction=val_fraction)
    vec, model = fit_tfidf(source, split_seed, val_fraction, dsd)
    probs = model.predict_proba(vec.transform(dsd["validation"]["text"]))[:, 1]
    result = {"model": "tfidf_logreg", "source": source, "split_seed": split_seed, "val_fraction": val_fraction,
              "n_train": len(dsd["train"]), "n_val": len(dsd["validation"]), "n_features": len(vec.vocabulary_),
              "seconds": round(time.perf_counter() - t0, 2), "settings": SETTINGS, "sklearn": sklearn.__version__,
              **classification_metrics(dsd["validation"]["label"], probs)}
    atomic_write_json(path, result)
    return result


def fit_tfidf(source: str = "bundled", split_seed: int = DEFAULT_SPLIT_SEED, val_fraction: float = DEFAULT_VAL_FRACTION,
              dsd=None) -> tuple[TfidfVectorizer, LogisticRegression]:
    """The baseline's vectoriser and classifier, fitted on the training split (about 10 s on 2 cores)."""
    dsd = dsd if dsd is not None else load_imdb(source, split_seed=split_seed, val_fraction=val_fraction)
    vec = TfidfVectorizer(ngram_range=tuple(SETTINGS["ngram_range"]), min_df=SETTINGS["min_df"],
                          sublinear_tf=SETTINGS["sublinear_tf"])
    x_train = vec.fit_transform(dsd["train"]["text"])
    model = LogisticRegression(C=SETTINGS["C"], max_iter=2000)
    model.fit(x_train, np.asarray(dsd["train"]["label"]))
    return vec, model
