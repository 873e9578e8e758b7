"""Classification metrics from labels and positive-class probabilities (scikit-learn where it has them)."""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def _arrays(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in length: {y.shape[0]} vs {p.shape[0]}.")
    if y.size == 0:
        raise ValueError("No examples to score.")
    if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError("Probabilities must be finite and within [0, 1].")
    return y, p


def expected_calibration_error(labels, probs, n_bins: int = 15) -> float:
    """ECE of P(positive): the bin-size-weighted gap between mean predicted probability and observed
    frequency of positives, over equal-width bins of the predicted probability."""
    y, p = _arrays(labels, probs)
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    conf = np.bincount(bins, weights=p, minlength=n_bins)
    freq = np.bincount(bins, weights=y, minlength=n_bins)
    nonzero = count > 0
    return float(np.sum(np.abs(conf[nonzero] - freq[nonzero])) / y.size)


def reliability_curve(labels, probs, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per equal-width bin: count, mean predicted probability, observed frequency of positives."""
    y, p = _arrays(labels, probs)
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(bins, weights=p, minlength=n_bins) / count
        frequency = np.bincount(bins, weights=y, minlength=n_bins) / count
    return {"bin_lower": np.arange(n_bins) / n_bins, "count": count, "mean_prob": mean_prob, "frequency": frequency}


def classification_metrics(labels, probs, threshold: float = 0.5) -> dict[str, float]:
    """accuracy, precision, recall, f1, roc_auc, log_loss, ece, and the confusion matrix cells."""
    y, p = _arrays(labels, probs)
    pred = (p > threshold).astype(np.int64)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    both_classes = len(np.unique(y)) == 2
    return {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y, p)) if both_classes else float("nan"),
        "log_loss": float(skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "ece": expected_calibration_error(y, p),
        "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp),
    }
