"""Comparing the two losses across seeds: per-loss summaries beside the paper, and a test of the means."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from nanogpt.artifacts import finished

# Apeinans, Kodors, Zarembo (HET 2024): validation accuracy and max-min spread over its runs, in percent.
PAPER = {"ce": {"mean": 85.84, "spread": 2.36}, "bce": {"mean": 86.10, "spread": 1.04}}


def summarize(accuracies) -> dict:
    """n, mean, std (ddof=1), min, max and max-min of accuracies given as fractions, reported in percent."""
    a = np.asarray(accuracies, dtype=np.float64) * 100.0
    if a.size == 0:
        raise ValueError("No runs to summarise.")
    return {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else float("nan"),
            "min": float(a.min()), "max": float(a.max()), "spread": float(a.max() - a.min())}


def comparison_table(runs: pd.DataFrame, metric: str = "val_accuracy") -> pd.DataFrame:
    """One row per loss: our n, mean, std, min, max, max-min (percent), and the paper's mean and spread."""
    missing = {"loss", metric} - set(runs.columns)
    if missing:
        raise ValueError(f"The runs table lacks column(s) {sorted(missing)}.")
    runs = finished(runs)
    rows = []
    for loss in ("ce", "bce"):
        sub = runs.loc[runs["loss"] == loss, metric].dropna()
        if len(sub) == 0:
            continue
        rows.append({"loss": loss, **summarize(sub), "paper_mean": PAPER[loss]["mean"],
                     "paper_spread": PAPER[loss]["spread"]})
    return pd.DataFrame(rows).set_index("loss")


def welch_test(a, b) -> dict:
    """Welch's unequal-variance t-test of mean(a) - mean(b) (accuracies as fractions; difference in points)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        return {"diff_points": float((a.mean() - b.mean()) * 100) if a.size and b.size else float("nan"),
                "t": float("nan"), "p_value": float("nan")}
    t = sps.ttest_ind(a, b, equal_var=False)
    return {"diff_points": float((a.mean() - b.mean()) * 100), "t": float(t.statistic), "p_value": float(t.pvalue)}


def format_comparison(runs: pd.DataFrame) -> str:
    """The comparison table as text, with Welch's test of BCE minus CE under it."""
    runs = finished(runs)
    table = comparison_table(runs)
    if table.empty:
        return "No finished runs to compare."
    shown = table.copy()
    for col in ("mean", "std", "min", "max", "spread", "paper_mean", "paper_spread"):
        shown[col] = shown[col].map(lambda v: f"{v:.2f}")
    text = "Validation accuracy (%) per loss, ours beside the paper's\n" + shown.to_string()
    if {"ce", "bce"} <= set(table.index):
        w = welch_test(runs.loc[runs["loss"] == "bce", "val_accuracy"], runs.loc[runs["loss"] == "ce", "val_accuracy"])
        text += (f"\nBCE - CE: {w['diff_points']:+.2f} points (paper: {PAPER['bce']['mean'] - PAPER['ce']['mean']:+.2f}); "
                 f"Welch t = {w['t']:.2f}, p = {w['p_value']:.3f}")
    return text
