"""Data and inference speed: tokenizing, the token cache, one review and a batch through `Classifier`."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nanogpt.bench.timing import timed
from nanogpt.data.imdb import load_imdb, load_tokenized
from nanogpt.data.tokens import tokenize_texts
from nanogpt.run.checkpoints import classifier_payload, save_checkpoint
from nanogpt.run.train import build_model
from nanogpt.serve.predict import Classifier


def data_times() -> dict:
    dsd = load_imdb()
    texts = list(dsd["train"]["text"]) + list(dsd["validation"]["text"])
    labels = list(dsd["train"]["label"]) + list(dsd["validation"]["label"])
    t0 = time.perf_counter()
    tokenize_texts(texts, labels, 384)
    cold = time.perf_counter() - t0
    load_tokenized()  # make sure the cache exists
    cache = timed(lambda: load_tokenized(), 3)
    return {"tokenize_cold_s": cold, "cache_load_s": cache, "reviews": len(texts)}


def untrained_checkpoint(cfg, path) -> Path:
    """A CE checkpoint of `cfg`'s shape and reading with seeded random weights at `path`: speed does not depend on
    what the weights learned."""
    torch.manual_seed(0)
    save_checkpoint(path, classifier_payload(build_model(cfg, 2), "ce", cfg.truncation, cfg.head_fraction,
                                             reading=cfg.reading, window_stride=cfg.window_stride))
    return Path(path)


def latencies_ms(clf, reviews) -> list[float]:
    """Milliseconds of `clf.predict` for each review, one review per call (as a service answers one request)."""
    out = []
    for review in reviews:
        t0 = time.perf_counter()
        clf.predict(review)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def inference_times(cfg, calls: int, batch: int) -> dict:
    """Latency of one review (median, p95 over `calls`) and throughput on `batch` validation reviews, for an
    untrained model of `cfg`'s shape (weights do not change the speed)."""
    with tempfile.TemporaryDirectory() as tmp:
        clf = Classifier.load(untrained_checkpoint(cfg, f"{tmp}/model.pt"), precision="auto")
    texts = list(load_imdb()["validation"]["text"])
    review = texts[0]
    clf.predict(review)
    lat = latencies_ms(clf, [review] * calls)
    many = list(texts[:batch])
    t0 = time.perf_counter()
    clf.predict(many)
    rps = len(many) / (time.perf_counter() - t0)
    return {"predict_latency_ms_median": float(np.median(lat)), "predict_latency_ms_p95": float(np.percentile(lat, 95)),
            "predict_reviews_per_s": rps, "predict_precision": clf.precision,
            "review_tokens": len(clf.tokenize(review).ids(0))}


def shortcut_times(calls: int, batch: int) -> dict:
    """Serving's last-token shortcut (`GPTClassifier.last_position_state`) against the full forward, on the
    whole-review recipe's shape (`ft` + windows): median ms for one review and batched reviews/s, each way, and
    the largest difference in P(positive) between the two on the batch."""
    from nanogpt.run.profiles import get_profile
    from nanogpt.study.pretrain_study import WHOLE_REVIEWS

    reading = {k: v for k, v in WHOLE_REVIEWS.items() if k in ("reading", "truncation")}
    with tempfile.TemporaryDirectory() as tmp:
        clf = Classifier.load(untrained_checkpoint(get_profile("ft").make_config("ce", 0, **reading),
                                                   f"{tmp}/model.pt"), precision="fp32")
    texts = list(load_imdb()["validation"]["text"])[:batch]
    out, probs = {}, {}
    for name, flag in (("full", False), ("shortcut", True)):
        clf.model.last_position_only = flag
        clf.predict(texts[:8])
        lat = latencies_ms(clf, texts[:calls])
        t0 = time.perf_counter()
        probs[name] = clf.predict(texts).probabilities
        out[f"{name}_reviews_per_s"] = len(texts) / (time.perf_counter() - t0)
        out[f"{name}_ms_median"] = float(np.median(lat))
    clf.model.last_position_only = True
    out["max_probability_difference"] = float(np.max(np.abs(probs["full"] - probs["shortcut"])))
    return out


def shipped_times(path, calls: int, batch: int, batch_sizes=(16, 32, 64), precision: str = "fp32") -> dict:
    """The shipped model (or any checkpoint) as a service answers: median and p95 ms for one review (each of
    `calls` validation reviews in its own call) and batched reviews/s on `batch` validation reviews for each of
    `batch_sizes` (windows per forward pass), on the threads torch has here, in `precision`."""
    clf = Classifier.load(path, precision=precision)
    texts = list(load_imdb()["validation"]["text"])
    clf.predict(texts[:8])
    lat = latencies_ms(clf, texts[:calls])
    out = {"ms_median": float(np.median(lat)), "ms_p95": float(np.percentile(lat, 95)), "calls": calls,
           "batch": batch, "precision": clf.precision, "reading": clf.reading, "threads": torch.get_num_threads()}
    for size in batch_sizes:
        t0 = time.perf_counter()
        clf.predict(texts[:batch], batch_size=size)
        out[f"reviews_per_s_batch{size}"] = batch / (time.perf_counter() - t0)
    return out


def label_agreement(path, precision: str, reviews: int | None = None) -> dict:
    """How often `path`'s labels in `precision` are those of the same weights in fp32, on the first `reviews`
    validation reviews (all when None): the bar a faster precision must clear before it serves."""
    texts = list(load_imdb()["validation"]["text"])[:reviews]
    ref = Classifier.load(path, precision="fp32").predict(texts)
    other = Classifier.load(path, precision=precision).predict(texts)
    return {"reviews": len(texts), "precision": precision,
            "label_agreement": float(np.mean(ref.labels == other.labels)),
            "max_probability_difference": float(np.max(np.abs(ref.probabilities - other.probabilities)))}
