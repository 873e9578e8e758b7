"""Comparing the two losses across seeds: per-loss summaries beside the paper, and a test of the means."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats as sps

from nanogpt.run.results import finished

# Fewer finished runs per loss than this, and the conclusion reports the numbers without judging either claim:
# with 2-4 runs a test's p-value rests on one or two degrees of freedom and sd ratios span orders of magnitude.
MIN_RUNS_TO_JUDGE = 5

# Apeinans, Kodors, Zarembo (HET 2024): validation accuracy and max-min spread over its runs, in percent.
PAPER = {"ce": {"mean": 85.84, "spread": 2.36}, "bce": {"mean": 86.10, "spread": 1.04}}


def standard_error(values) -> float:
    """The standard error of the mean of `values` (sd with ddof=1 over sqrt(n)); NaN for fewer than two."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else float("nan")


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


def arm_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """n, mean, std, min, max and max-min of validation accuracy (percent) per study arm (e.g. 'ce-paired',
    'bce', 'bce-headlr2-headwd0.5'); rows without an arm column are grouped by loss."""
    runs = finished(runs)
    key = "arm" if "arm" in runs.columns else "loss"
    return pd.DataFrame([{key: arm, **summarize(g["val_accuracy"])} for arm, g in runs.groupby(key)]).set_index(key)


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
    if values.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def compare_means(a, b, n_boot: int = 10_000, seed: int = 0) -> dict:
    """Is mean(a) different from mean(b)? Welch's t, Mann-Whitney U, a bootstrap 95% CI of the difference,
    and Hedges' g. Inputs in any unit; the difference is reported in that unit."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant runs: t is undefined (NaN), said as such
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
    sd_b = b.std(ddof=1)
    with warnings.catch_warnings():
        # Levene divides by the spread of the absolute deviations from each median: with constant runs, or two
        # runs a group (both deviations equal), that is zero and the test is undefined, not "significant"
        warnings.simplefilter("ignore", RuntimeWarning)
        bf = sps.levene(a, b, center="median")
    bf_W, bf_p = (float(bf.statistic), float(bf.pvalue)) if np.isfinite(bf.statistic) else (float("nan"),) * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # resamples of constant runs: no ratio, dropped
        lo, hi = bootstrap_ci(a, b, lambda x, y: x.std(ddof=1) / y.std(ddof=1) if y.std(ddof=1) > 0 else np.nan,
                              n_boot=n_boot, seed=seed)
    return {"sd_a": float(a.std(ddof=1)), "sd_b": float(sd_b),
            "sd_ratio": float(a.std(ddof=1) / sd_b) if sd_b > 0 else float("nan"),
            "brown_forsythe_W": bf_W, "brown_forsythe_p": bf_p,
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


def study_report(runs: pd.DataFrame, n_boot: int = 10_000, seed: int = 0, power: float = 0.8) -> dict:
    """Everything notebook 04 reports about BCE against CE, in percentage points of validation accuracy."""
    runs = finished(runs)
    ce = runs.loc[runs["loss"] == "ce", "val_accuracy"].to_numpy() * 100
    bce = runs.loc[runs["loss"] == "bce", "val_accuracy"].to_numpy() * 100
    if ce.size < 2 or bce.size < 2:
        raise ValueError(f"Need at least 2 finished runs per loss to compare; have CE {ce.size}, BCE {bce.size}.")
    paper_diff = PAPER["bce"]["mean"] - PAPER["ce"]["mean"]
    means = compare_means(bce, ce, n_boot=n_boot, seed=seed)
    spread = compare_spread(bce, ce, n_boot=n_boot, seed=seed)
    sd_ce, sd_bce = ce.std(ddof=1), bce.std(ddof=1)
    needed = runs_needed(paper_diff, sd_bce, sd_ce, power=power) if sd_ce > 0 and sd_bce > 0 else None
    return {"n_ce": int(ce.size), "n_bce": int(bce.size), "mean_ce": float(ce.mean()), "mean_bce": float(bce.mean()),
            "spread_ce": float(np.ptp(ce)), "spread_bce": float(np.ptp(bce)), "paper_diff": paper_diff,
            "means": means, "spread": spread, "runs_needed_for_paper_diff": needed, "power": power}


def conclusion(report: dict, alpha: float = 0.05) -> list[str]:
    """Plain sentences on each claim of the paper, generated from the numbers (never written by hand). Below
    MIN_RUNS_TO_JUDGE runs per loss they give the numbers and say the runs are too few to judge."""
    m, s = report["means"], report["spread"]
    n = f"{report['n_ce']} CE and {report['n_bce']} BCE runs"
    lines = []
    if min(report["n_ce"], report["n_bce"]) < MIN_RUNS_TO_JUDGE:
        return [f"Accuracy: BCE {report['mean_bce']:.2f}%, CE {report['mean_ce']:.2f}% (BCE - CE = {m['diff']:+.2f} "
                f"points; paper {report['paper_diff']:+.2f}; {n}).",
                f"Stability: sd BCE {s['sd_a']:.2f}, CE {s['sd_b']:.2f} points; max-min BCE "
                f"{report['spread_bce']:.2f}, CE {report['spread_ce']:.2f} points.",
                f"Too few runs to judge either claim: fewer than {MIN_RUNS_TO_JUDGE} per loss. With so few runs a "
                "test rests on one or two degrees of freedom; train more seeds before reading anything into these "
                "numbers."]
    if s["sd_a"] == 0 or s["sd_b"] == 0:
        constant = "BCE" if s["sd_a"] == 0 else "CE"
        spread_line = (f"Stability: every {constant} run scored the same, so there is no spread to compare "
                       "(identical runs usually mean the seed is not reaching the run).")
    else:
        spread_line = None
    ci = f"95% CI [{m['diff_ci_low']:+.2f}, {m['diff_ci_high']:+.2f}]"
    if m["welch_p"] < alpha:
        better = "BCE" if m["diff"] > 0 else "CE"
        lines.append(f"Accuracy: {better} is more accurate, by {abs(m['diff']):.2f} points ({ci}, Welch p = "
                     f"{m['welch_p']:.3f}, {n}). The paper's BCE advantage of {report['paper_diff']:+.2f} points is "
                     + ("supported in direction." if better == "BCE" else "refuted: the sign is the other way."))
    else:
        lines.append(f"Accuracy: no detectable difference (BCE - CE = {m['diff']:+.2f} points, {ci}, Welch p = "
                     f"{m['welch_p']:.2f}, Mann-Whitney p = {m['mannwhitney_p']:.2f}, {n}). The paper's "
                     f"{report['paper_diff']:+.2f}-point advantage for BCE "
                     + ("lies inside the CI: these runs cannot decide it." if m["diff_ci_low"] <= report["paper_diff"]
                        <= m["diff_ci_high"] else "lies outside the CI: these runs refute a gap that large."))
    if report["runs_needed_for_paper_diff"] is not None:
        lines.append(f"Deciding a {report['paper_diff']:.2f}-point difference with {report['power']:.0%} power at the "
                     f"seed-to-seed spread seen here would take about {report['runs_needed_for_paper_diff']} runs "
                     "per loss.")
    ratio_ci = f"95% CI [{s['sd_ratio_ci_low']:.2f}, {s['sd_ratio_ci_high']:.2f}]"
    if spread_line is not None:
        lines.append(spread_line)
    elif s["brown_forsythe_p"] < alpha:
        calmer = "BCE" if s["sd_ratio"] < 1 else "CE"
        lines.append(f"Stability: {calmer} varies less across seeds (sd BCE/CE = {s['sd_ratio']:.2f}, {ratio_ci}, "
                     f"Brown-Forsythe p = {s['brown_forsythe_p']:.3f}). The paper's claim that BCE is more stable is "
                     + ("supported." if calmer == "BCE" else "refuted."))
    else:
        lines.append(f"Stability: no detectable difference in spread (sd BCE {s['sd_a']:.2f} vs CE {s['sd_b']:.2f} "
                     f"points, ratio {s['sd_ratio']:.2f}, {ratio_ci}, Brown-Forsythe p = {s['brown_forsythe_p']:.2f}). "
                     "The paper's claim that BCE is more stable cannot be decided at this number of runs; its "
                     "max-min figures are not comparable to ours, since max-min grows with the number of runs.")
    return lines
