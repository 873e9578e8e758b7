"""Bags of words on the same split, so a reader can place the GPTs.

- `tfidf`: TF-IDF (word 1-2 grams) and logistic regression (scikit-learn), the project's first baseline.
- `nbsvm`: Wang and Manning's NBSVM idea ("Baselines and Bigrams", ACL 2012): binary word 1-2-gram features, each
  column scaled by its naive-Bayes log-count ratio r = log((p / |p|_1) / (q / |q|_1)) (p, q: the column's counts
  in positive and negative training reviews, plus `alpha`), then a linear classifier (logistic regression). The
  strongest bag of words a careful practitioner would deploy; its C is chosen by cross-validation on the training
  split alone (r refitted inside each fold), never on the validation split, and so is how a review becomes tokens
  (scikit-learn's default words, or every word and "!"/"?" with the "<br />" breaks removed).

Each result is cached as JSON under the results folder, keyed by data, split and settings.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import sklearn
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline

from nanogpt.core.artifacts import atomic_write_json, stable_digest
from nanogpt.core.metrics import classification_metrics
from nanogpt.data.imdb import DEFAULT_SPLIT_SEED, DEFAULT_VAL_FRACTION, load_imdb, source_fingerprint

SETTINGS = {
    "ngram_range": [1, 2],  # words and word pairs ("not good")
    "min_df": 2,  # drop n-grams seen in one review only
    "sublinear_tf": True,  # 1 + log(tf): a word said ten times is not ten times the evidence
    "C": 4.0,  # inverse regularisation strength of the logistic regression
}
NBSVM_SETTINGS = {
    "ngram_range": [1, 2],  # Wang and Manning's best IMDB features: word unigrams and bigrams
    "binary": True,  # presence, not counts
    "min_df": 1,  # every n-gram: the log-count ratio weighs the rare ones down by itself
    "alpha": 1.0,  # smoothing of the per-class counts
    "C_grid": [0.1, 0.3, 1.0, 3.0],  # chosen by cross-validation on the training split
    # how a review becomes tokens, chosen by the same cross-validation: scikit-learn's default (words of two or
    # more letters), or every word and the marks "!" and "?" with the reviews' "<br />" line breaks removed
    "tokenizations": {
        "words": {"token_pattern": r"(?u)\b\w\w+\b", "strip_breaks": False},
        "words+marks": {"token_pattern": r"(?u)\b\w+\b|[!?]", "strip_breaks": True},
    },
    "cv_folds": 3,
    "cv_seed": 0,
}
LABELS = {"tfidf": "TF-IDF (1-2 grams) + logistic regression",
          "nbsvm": "NBSVM: binary 1-2 grams x naive-Bayes log-count ratios + logistic regression"}


class NBScaler(TransformerMixin, BaseEstimator):
    """Scale each column of a (binary) document-term matrix by its naive-Bayes log-count ratio, learnt from the
    labels it is fitted on."""

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha

    def fit(self, x, y):
        y = np.asarray(y)
        p = self.alpha + np.asarray(x[y == 1].sum(axis=0)).ravel()
        q = self.alpha + np.asarray(x[y == 0].sum(axis=0)).ravel()
        self.r_ = np.log((p / p.sum()) / (q / q.sum()))
        return self

    def transform(self, x):
        return sparse.csr_matrix(x).multiply(self.r_).tocsr()


def _cached(kind: str, source: str, split_seed: int, val_fraction: float, out_dir, settings: dict, refresh: bool,
            fit) -> dict:
    parts = {"data": source_fingerprint(source), "split_seed": split_seed, "val_fraction": val_fraction,
             "settings": settings, "sklearn": sklearn.__version__}
    name = f"baseline-{kind}-{stable_digest(parts, 12)}.json"
    path = Path(out_dir) / name
    if not refresh:
        from nanogpt.core.resources import REPO_ROOT

        for known in (path, REPO_ROOT / "results" / name):  # the committed result of the same data and settings
            if known.is_file():
                return json.loads(known.read_text())
    t0 = time.perf_counter()
    dsd = load_imdb(source, split_seed=split_seed, val_fraction=val_fraction)
    model, extra = fit(dsd)
    fit_seconds = time.perf_counter() - t0
    texts = list(dsd["validation"]["text"])
    t1 = time.perf_counter()
    probs = model.predict_proba(texts)[:, 1]
    predict_seconds = time.perf_counter() - t1
    result = {"model": kind, "label": LABELS[kind], "source": source, "split_seed": split_seed,
              "val_fraction": val_fraction, "n_train": len(dsd["train"]), "n_val": len(dsd["validation"]),
              "seconds": round(fit_seconds, 2), "reviews_per_second_batched": round(len(texts) / predict_seconds, 1),
              "settings": settings, "sklearn": sklearn.__version__, **extra,
              **classification_metrics(dsd["validation"]["label"], probs)}
    atomic_write_json(path, result)
    return result


def tfidf_baseline(source: str = "bundled", split_seed: int = DEFAULT_SPLIT_SEED,
                   val_fraction: float = DEFAULT_VAL_FRACTION, out_dir: str | Path = "results",
                   refresh: bool = False) -> dict:
    """Validation metrics of TF-IDF + logistic regression on the study's split (cached)."""
    def fit(dsd):
        pipe = fit_tfidf(source, split_seed, val_fraction, dsd, pipeline=True)
        return pipe, {"n_features": len(pipe.named_steps["features"].vocabulary_)}

    # the cache key of the first baseline is kept: committed results name it (baseline-tfidf-<key>.json)
    return _cached("tfidf", source, split_seed, val_fraction, out_dir, SETTINGS, refresh, fit)


def fit_tfidf(source: str = "bundled", split_seed: int = DEFAULT_SPLIT_SEED, val_fraction: float = DEFAULT_VAL_FRACTION,
              dsd=None, pipeline: bool = False):
    """The baseline's vectoriser and classifier, fitted on the training split (about 10 s on 2 cores); with
    `pipeline=True` one scikit-learn Pipeline (texts in, probabilities out)."""
    dsd = dsd if dsd is not None else load_imdb(source, split_seed=split_seed, val_fraction=val_fraction)
    vec = TfidfVectorizer(ngram_range=tuple(SETTINGS["ngram_range"]), min_df=SETTINGS["min_df"],
                          sublinear_tf=SETTINGS["sublinear_tf"])
    x_train = vec.fit_transform(dsd["train"]["text"])
    model = LogisticRegression(C=SETTINGS["C"], max_iter=2000)
    model.fit(x_train, np.asarray(dsd["train"]["label"]))
    if pipeline:
        return Pipeline([("features", vec), ("classifier", model)])
    return vec, model


def strip_breaks(text: str) -> str:
    """Lower-case a review and remove its HTML line breaks ("<br />"), which are layout, not words."""
    return text.replace("<br />", " ").lower()


def _tokenization(tokens: str, settings: dict) -> dict:
    if tokens not in settings["tokenizations"]:
        raise ValueError(f"Unknown NBSVM tokenization {tokens!r}; use one of {tuple(settings['tokenizations'])}.")
    spec = settings["tokenizations"][tokens]
    return {"token_pattern": spec["token_pattern"], "preprocessor": strip_breaks if spec["strip_breaks"] else None}


def nbsvm_pipeline(c: float = 1.0, tokens: str = "words", settings: dict = NBSVM_SETTINGS) -> Pipeline:
    """Texts in, P(positive) out: binary 1-2 grams, scaled by log-count ratios, logistic regression."""
    return Pipeline([
        ("features", CountVectorizer(ngram_range=tuple(settings["ngram_range"]), binary=settings["binary"],
                                     min_df=settings["min_df"], **_tokenization(tokens, settings))),
        ("nb", NBScaler(alpha=settings["alpha"])),
        ("classifier", LogisticRegression(C=c, solver="liblinear", max_iter=1000)),
    ])


def fit_nbsvm(texts, labels, settings: dict = NBSVM_SETTINGS) -> tuple[Pipeline, dict, dict]:
    """NBSVM fitted on these training texts, its C and tokenization chosen among settings['C_grid'] and
    settings['tokenizations'] by stratified k-fold cross-validation on them alone (the log-count ratios refitted in
    each fold, so no fold sees its own labels); returns the pipeline refitted on all of them, the choice
    ({"C": .., "tokens": ..}) and {"<tokens> C=<C>": mean CV accuracy}."""
    texts, labels = list(texts), np.asarray(labels)
    folds = min(settings["cv_folds"], int(np.bincount(labels, minlength=2).min()))
    names = list(settings["tokenizations"])
    if folds < 2:  # too few of a class to cross-validate: the first tokenization and the grid's middle C
        grid = settings["C_grid"]
        choice = {"C": float(grid[len(grid) // 2]), "tokens": names[0]}
        return nbsvm_pipeline(choice["C"], choice["tokens"], settings).fit(texts, labels), choice, {}
    candidates = [{"features__" + k: [v] for k, v in _tokenization(name, settings).items()}
                  | {"classifier__C": list(settings["C_grid"])} for name in names]
    search = GridSearchCV(nbsvm_pipeline(settings=settings), candidates,
                          cv=StratifiedKFold(folds, shuffle=True, random_state=settings["cv_seed"]),
                          scoring="accuracy", refit=True, n_jobs=1)
    search.fit(texts, labels)
    patterns = {settings["tokenizations"][n]["token_pattern"]: n for n in names}
    scores = {f"{patterns[p['features__token_pattern']]} C={float(p['classifier__C']):g}": float(score)
              for p, score in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"])}
    best = search.best_params_
    choice = {"C": float(best["classifier__C"]), "tokens": patterns[best["features__token_pattern"]]}
    return search.best_estimator_, choice, scores


def nbsvm_baseline(source: str = "bundled", split_seed: int = DEFAULT_SPLIT_SEED,
                   val_fraction: float = DEFAULT_VAL_FRACTION, out_dir: str | Path = "results",
                   refresh: bool = False, settings: dict = NBSVM_SETTINGS) -> dict:
    """Validation metrics of NBSVM on the study's split (cached), with the C and tokenization that
    cross-validation on the training split chose and every candidate's CV accuracy. `settings` (part of the cache
    key) defaults to the project's NBSVM_SETTINGS."""
    def fit(dsd):
        model, choice, scores = fit_nbsvm(dsd["train"]["text"], dsd["train"]["label"], settings)
        return model, {**choice, "cv_accuracy": scores,
                       "n_features": len(model.named_steps["features"].vocabulary_)}

    return _cached("nbsvm", source, split_seed, val_fraction, out_dir, settings, refresh, fit)


BASELINES = {"tfidf": tfidf_baseline, "nbsvm": nbsvm_baseline}
