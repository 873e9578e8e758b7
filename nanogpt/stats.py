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


def hedges_g(a, b) -> float:
    """Standardised mean difference (a - b) with the small-sample correction J = 1 - 3 / (4(na + nb) - 9)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = a.size, b.size
    pooled = np.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    if pooled == 0:
        return float("nan")
    return float((a.mean() - b.mean()) / pooled * (1 - 3 / (4 * (na + nb) - 9)))


def bootstrap_ci(a, b, statistic, n_boot: int = 10_000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of statistic(a, b), resampling each group independently."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, a.size, size=(n_boot, a.size))
    ib = rng.integers(0, b.size, size=(n_boot, b.size))
    values = np.array([statistic(a[i], b[j]) for i, j in zip(ia, ib)])
    values = values[np.isfinite(values)]
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def compare_means(a, b, n_boot: int = 10_000, seed: int = 0) -> dict:
    """Is mean(a) different from mean(b)? Welch's t, Mann-Whitney U, a bootstrap 95% CI of the difference,
    and Hedges' g. Inputs in any unit; the difference is reported in that unit."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    welch = sps.ttest_ind(a, b, equal_var=False)
    mw = sps.mannwhitneyu(a, b, alternative="two-sided")
    lo, hi = bootstrap_ci(a, b, lambda x, y: x.mean() - y.mean(), n_boot=n_boot, seed=seed)
    return {"diff": float(a.mean() - b.mean()), "welch_t": float(welch.statistic), "welch_p": float(welch.pvalue),
            "mannwhitney_u": float(mw.statistic), "mannwhitney_p": float(mw.pvalue), "diff_ci_low": lo,
            "diff_ci_high": hi, "hedges_g": hedges_g(a, b)}


def compare_spread(a, b, n_boot: int = 10_000, seed: int = 0) -> dict:
    """Is a more variable than b? Brown-Forsythe (Levene with the median) and a bootstrap 95% CI of sd(a)/sd(b).
    max-min is not tested: it grows with the number of runs, so it only compares equal-sized studies."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    bf = sps.levene(a, b, center="median")
    lo, hi = bootstrap_ci(a, b, lambda x, y: x.std(ddof=1) / y.std(ddof=1) if y.std(ddof=1) > 0 else np.nan,
                          n_boot=n_boot, seed=seed)
    sd_b = b.std(ddof=1)
    return {"sd_a": float(a.std(ddof=1)), "sd_b": float(sd_b),
            "sd_ratio": float(a.std(ddof=1) / sd_b) if sd_b > 0 else float("nan"),
            "brown_forsythe_W": float(bf.statistic), "brown_forsythe_p": float(bf.pvalue),
            "sd_ratio_ci_low": lo, "sd_ratio_ci_high": hi}


def welch_power(n: int, diff: float, sd_a: float, sd_b: float, alpha: float = 0.05) -> float:
    """Power of a two-sided Welch t-test with n runs per group to detect a true difference `diff`."""
    se = np.sqrt(sd_a**2 / n + sd_b**2 / n)
    df = (sd_a**2 / n + sd_b**2 / n) ** 2 / ((sd_a**2 / n) ** 2 / (n - 1) + (sd_b**2 / n) ** 2 / (n - 1))
    t_crit = sps.t.ppf(1 - alpha / 2, df)
    nc = abs(diff) / se
    return float(sps.nct.sf(t_crit, df, nc) + sps.nct.cdf(-t_crit, df, nc))


def runs_needed(diff: float, sd_a: float, sd_b: float, power: float = 0.8, alpha: float = 0.05,
                max_n: int = 1_000_000) -> int:
    """Smallest number of runs per group for which Welch's test reaches `power` against a true `diff`."""
    if diff == 0:
        return max_n
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    n = max(2, int(np.floor(z**2 * (sd_a**2 + sd_b**2) / diff**2)) - 2)  # normal approximation, from below
    while n < max_n and welch_power(n, diff, sd_a, sd_b, alpha) < power:
        n += 1
    return n
