"""The powered study's analysis, exactly as `results/analysis-plan.json` decided it before the runs.

Library tests where a library has them: scipy.stats (Welch's t, Brown-Forsythe, the t and normal
distributions, integration), statsmodels (TOST: `ttost_ind`; power: `TTestIndPower`). Hand-written, because no
maintained library offers them in this form: the seeded percentile bootstrap (in stats.py), d2(n) (the
expected range of n standard normal draws, by numerical integration) and the normal-approximation sample size
of a TOST.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import integrate
from scipy import stats as sps

from nanogpt.core.resources import REPO_ROOT
from nanogpt.study.stats import PAPER, bootstrap_ci, compare_spread

PLAN_PATH = REPO_ROOT / "results" / "analysis-plan.json"


def load_plan(path: str | Path = PLAN_PATH) -> dict:
    return json.loads(Path(path).read_text())


@lru_cache(maxsize=256)
def d2(n: int) -> float:
    """Expected range (max - min) of n independent standard normal draws: the integral over x of
    1 - Phi(x)^n - (1 - Phi(x))^n. Textbook values: d2(2) = 1.128, d2(5) = 2.326, d2(10) = 3.078."""
    if n < 2:
        return 0.0
    value, _ = integrate.quad(lambda x: 1 - sps.norm.cdf(x) ** n - sps.norm.sf(x) ** n, -np.inf, np.inf)
    return float(value)


def runs_for_expected_range(spread: float, sd: float, max_n: int = 1000) -> int | None:
    """Smallest n whose expected max-min under `sd` reaches `spread` (None beyond max_n)."""
    if sd <= 0 or sd * d2(max_n) < spread:
        return None
    lo, hi = 1, max_n  # d2 grows with n: bisect for the first n with sd * d2(n) >= spread
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if sd * d2(mid) >= spread else (mid, hi)
    return hi


def welch_ci(a, b, level: float = 0.95) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its Welch-Satterthwaite t confidence interval."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = sps.t.ppf(0.5 + level / 2, df) * se
    diff = float(a.mean() - b.mean())
    return diff, diff - half, diff + half


def tost(a, b, margin: float) -> float:
    """p of the equivalence test |mean(a) - mean(b)| < margin (two one-sided Welch t-tests, statsmodels)."""
    from statsmodels.stats.weightstats import ttost_ind

    p, _, _ = ttost_ind(np.asarray(a, float), np.asarray(b, float), -margin, margin, usevar="unequal")
    return float(p)


def runs_to_detect(diff: float, sd_a: float, sd_b: float, alpha: float, power: float = 0.8) -> int | None:
    """Runs per arm for a two-sided t-test to detect a true `diff` with `power` (statsmodels TTestIndPower)."""
    from statsmodels.stats.power import TTestIndPower

    pooled = math.sqrt((sd_a**2 + sd_b**2) / 2)
    if diff == 0 or pooled == 0:
        return None
    n = TTestIndPower().solve_power(effect_size=abs(diff) / pooled, alpha=alpha, power=power)
    return int(math.ceil(n))


def runs_for_equivalence(diff: float, sd_a: float, sd_b: float, margin: float, alpha: float,
                         power: float = 0.8) -> int | None:
    """Runs per arm for a TOST with `margin` to reach `power` when the true difference is `diff` (normal
    approximation: n = (z_{1-alpha} + z_{1-beta/2 or 1-beta})^2 (sd_a^2 + sd_b^2) / (margin - |diff|)^2)."""
    room = margin - abs(diff)
    if room <= 0:
        return None
    z_beta = sps.norm.ppf(1 - (1 - power) / 2) if diff == 0 else sps.norm.ppf(power)
    return int(math.ceil((sps.norm.ppf(1 - alpha) + z_beta) ** 2 * (sd_a**2 + sd_b**2) / room**2))


def runs_for_sd_ratio(ratio: float, band: tuple[float, float], alpha: float, power: float = 0.8) -> dict:
    """Runs per arm to decide an sd ratio, from the normal approximation of log(sd_a / sd_b), whose variance is
    1/(2(n_a - 1)) + 1/(2(n_b - 1)) for normal runs: to detect `ratio` against 1 (two-sided, `power`), and to
    show it inside `band` (both one-sided bounds, `power`). None where no n will do (ratio at a band edge or
    outside it; a ratio of exactly 1 is never "detected")."""
    z_a, z_a2, z_b = sps.norm.ppf(1 - alpha), sps.norm.ppf(1 - alpha / 2), sps.norm.ppf(power)
    log_r = abs(math.log(ratio))
    detect = None if log_r == 0 else int(math.ceil(1 + ((z_a2 + z_b) / log_r) ** 2))
    room = min(math.log(ratio) - math.log(band[0]), math.log(band[1]) - math.log(ratio))
    z_eq = sps.norm.ppf(1 - (1 - power) / 2) if log_r == 0 else z_b  # both bounds bind at a ratio of 1
    equivalent = None if room <= 0 else int(math.ceil(1 + ((z_a + z_eq) / room) ** 2))
    return {"to_detect": detect, "for_equivalence": equivalent}


def accuracy_claim(ce, bce, plan: dict) -> dict:
    """BCE - CE in points: Welch CI, TOST within the plan's margin, and the decision the plan prescribes."""
    rule = plan["claims"]["accuracy"]
    alpha, margin = plan["alpha"], rule["equivalence_margin_points"]
    ce, bce = np.asarray(ce, float), np.asarray(bce, float)
    diff, lo, hi = welch_ci(bce, ce, 1 - alpha)
    p_welch = float(sps.ttest_ind(bce, ce, equal_var=False).pvalue)
    p_tost = tost(bce, ce, margin)
    sd_ce, sd_bce = ce.std(ddof=1), bce.std(ddof=1)
    if lo > 0 or hi < 0:
        decision = "difference"
    elif p_tost < alpha:
        decision = "equivalent"
    else:
        decision = "undecided"
    return {"n_ce": int(ce.size), "n_bce": int(bce.size), "mean_ce": float(ce.mean()), "mean_bce": float(bce.mean()),
            "diff": diff, "ci_low": lo, "ci_high": hi, "welch_p": p_welch, "margin": margin, "tost_p": p_tost,
            "decision": decision, "paper_diff": PAPER["bce"]["mean"] - PAPER["ce"]["mean"],
            "runs_to_detect_paper_diff": runs_to_detect(PAPER["bce"]["mean"] - PAPER["ce"]["mean"], sd_bce, sd_ce,
                                                        alpha),
            "runs_for_equivalence": runs_for_equivalence(diff, sd_bce, sd_ce, margin, alpha)}


def stability_claim(ce, bce, plan: dict, n_boot: int = 10_000, seed: int = 0) -> dict:
    """sd(BCE) / sd(CE) with its bootstrap CI, Brown-Forsythe, the plan's decision, the paper's ratio, and the
    expected max-min of n runs under each arm's measured sd beside the observed one."""
    rule = plan["claims"]["stability"]
    alpha = plan["alpha"]
    ce, bce = np.asarray(ce, float), np.asarray(bce, float)
    spread = compare_spread(bce, ce, n_boot=n_boot, seed=seed)
    lo, hi = spread["sd_ratio_ci_low"], spread["sd_ratio_ci_high"]
    band_lo, band_hi = rule["equivalence_band"]
    if (lo > 1 or hi < 1) and spread["brown_forsythe_p"] < alpha:
        decision = "difference"
    elif band_lo <= lo and hi <= band_hi:
        decision = "equivalent"
    else:
        decision = "undecided"
    paper_ratio = PAPER["bce"]["spread"] / PAPER["ce"]["spread"]
    expected = {loss: {n: float(x.std(ddof=1) * d2(n)) for n in (5, 10, 20, x.size)}
                for loss, x in (("ce", ce), ("bce", bce))}
    return {**spread, "decision": decision, "band": [band_lo, band_hi], "paper_ratio": paper_ratio,
            "paper_ratio_in_ci": bool(lo <= paper_ratio <= hi),
            "observed_range": {"ce": float(np.ptp(ce)), "bce": float(np.ptp(bce))},
            "expected_range": expected,
            "runs_for_paper_range": {loss: runs_for_expected_range(PAPER[loss]["spread"], float(x.std(ddof=1)))
                                     for loss, x in (("ce", ce), ("bce", bce))},
            "runs_to_decide": runs_for_sd_ratio(spread["sd_ratio"], (band_lo, band_hi), alpha)}


def variance_components(fixed: pd.Series, resplit: pd.Series, n_boot: int = 10_000, seed: int = 0) -> dict:
    """How much of the run-to-run variance the validation split adds: var(resplit) - var(fixed), its share of
    var(resplit), and a bootstrap CI of the difference (accuracies in points)."""
    a, b = np.asarray(resplit, float), np.asarray(fixed, float)
    lo, hi = bootstrap_ci(a, b, lambda x, y: x.var(ddof=1) - y.var(ddof=1), n_boot=n_boot, seed=seed)
    var_split = a.var(ddof=1) - b.var(ddof=1)
    return {"n_fixed": int(b.size), "n_resplit": int(a.size), "sd_fixed": float(b.std(ddof=1)),
            "sd_resplit": float(a.std(ddof=1)), "var_split": float(var_split), "var_split_ci": [lo, hi],
            "split_share": float(max(var_split, 0.0) / a.var(ddof=1)) if a.var(ddof=1) > 0 else float("nan")}


def paired_comparison(a: pd.Series, b: pd.Series, level: float = 0.95) -> dict:
    """Two arms matched by seed (Series indexed by seed, in points): the mean of a - b with a paired t CI, the
    correlation of the pairs, and the unpaired Welch CI on the same runs for comparison of widths."""
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    x, y = both["a"].to_numpy(), both["b"].to_numpy()
    d = x - y
    half = sps.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    _, w_lo, w_hi = welch_ci(x, y, level)
    return {"n_pairs": int(d.size), "mean_diff": float(d.mean()), "paired_ci": [float(d.mean() - half),
                                                                                float(d.mean() + half)],
            "unpaired_ci": [w_lo, w_hi], "correlation": float(np.corrcoef(x, y)[0, 1]),
            "mean_abs_diff": float(np.abs(d).mean()),
            "ci_width_ratio": float(2 * half / (w_hi - w_lo)) if w_hi > w_lo else float("nan")}
