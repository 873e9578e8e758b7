"""The powered study's statistics against textbook and library values."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from nanogpt.study import analysis as A


def test_plan_is_committed_and_complete():
    plan = A.load_plan()
    assert plan["alpha"] == 0.05 and plan["claims"]["accuracy"]["equivalence_margin_points"] == 0.5
    assert plan["claims"]["stability"]["equivalence_band"] == [0.8, 1.25]


@pytest.mark.parametrize("n, textbook", [(2, 1.128), (3, 1.693), (5, 2.326), (10, 3.078), (25, 3.931)])
def test_d2_matches_the_control_chart_tables(n, textbook):
    assert A.d2(n) == pytest.approx(textbook, abs=1e-3)


def test_expected_range_by_simulation_and_runs_for_a_range():
    rng = np.random.default_rng(0)
    sim = np.ptp(rng.normal(0, 0.7, size=(20000, 8)), axis=1).mean()
    assert 0.7 * A.d2(8) == pytest.approx(sim, rel=0.01)
    n = A.runs_for_expected_range(2.36, 1.0)
    assert A.d2(n) >= 2.36 > A.d2(n - 1)


def test_welch_ci_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(86, 0.6, 40), rng.normal(85.8, 1.1, 30)
    diff, lo, hi = A.welch_ci(a, b)
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-10) and diff == pytest.approx(a.mean() - b.mean())


def test_tost_is_the_larger_of_two_one_sided_welch_tests():
    rng = np.random.default_rng(2)
    a, b = rng.normal(86.0, 0.6, 100), rng.normal(86.1, 0.7, 100)
    low = sps.ttest_ind(a, b - 0.5, equal_var=False, alternative="greater").pvalue  # H0: diff <= -0.5
    high = sps.ttest_ind(a, b + 0.5, equal_var=False, alternative="less").pvalue  # H0: diff >= +0.5
    assert A.tost(a, b, 0.5) == pytest.approx(max(low, high), rel=1e-8)
    assert A.tost(a, b, 0.5) < 0.05 and A.tost(a, b + 1.0, 0.5) > 0.5


def test_sample_sizes_match_textbook_power_tables():
    # Cohen: d = 0.5 needs 64 per group, d = 1 needs 17 (alpha 0.05 two-sided, power 0.8)
    assert A.runs_to_detect(0.5, 1.0, 1.0, 0.05) == 64 and A.runs_to_detect(1.0, 1.0, 1.0, 0.05) == 17
    n = A.runs_for_equivalence(0.0, 1.0, 1.0, 0.5, 0.05)
    assert n == int(np.ceil((sps.norm.ppf(0.95) + sps.norm.ppf(0.9)) ** 2 * 2 / 0.25))
    assert A.runs_for_equivalence(0.6, 1.0, 1.0, 0.5, 0.05) is None  # outside the margin: no n will do


def test_claims_decide_as_the_plan_says():
    plan = A.load_plan()
    rng = np.random.default_rng(3)
    same = A.accuracy_claim(rng.normal(86, 0.5, 200), rng.normal(86, 0.5, 200), plan)
    assert same["decision"] == "equivalent" and same["tost_p"] < 0.05
    apart = A.accuracy_claim(rng.normal(86, 0.5, 200), rng.normal(87, 0.5, 200), plan)
    assert apart["decision"] == "difference" and apart["ci_low"] > 0
    few = A.accuracy_claim(rng.normal(86, 1.0, 5), rng.normal(86, 1.0, 5), plan)
    assert few["decision"] == "undecided" and few["runs_for_equivalence"] > 5
    calm = A.stability_claim(rng.normal(86, 1.0, 300), rng.normal(86, 0.4, 300), plan, n_boot=2000)
    assert calm["decision"] == "difference" and calm["sd_ratio_ci_high"] < 1
    alike = A.stability_claim(rng.normal(86, 1.0, 400), rng.normal(86, 1.0, 400), plan, n_boot=2000)
    assert alike["decision"] in ("equivalent", "undecided") and alike["sd_ratio_ci_low"] < 1 < alike["sd_ratio_ci_high"]
    assert alike["expected_range"]["ce"][5] == pytest.approx(alike["sd_b"] * A.d2(5))  # sd_b is CE's


def test_variance_components_find_the_split_share():
    rng = np.random.default_rng(4)
    fixed = rng.normal(86, 0.5, 400)
    resplit = rng.normal(86, 0.5, 400) + rng.normal(0, 0.5, 400)  # the split adds as much variance again
    vc = A.variance_components(pd.Series(fixed), pd.Series(resplit), n_boot=2000)
    assert vc["split_share"] == pytest.approx(0.5, abs=0.12)
    assert vc["var_split_ci"][0] < vc["var_split"] < vc["var_split_ci"][1] and vc["var_split_ci"][0] > 0


def test_pairing_narrows_the_ci_when_runs_are_correlated():
    rng = np.random.default_rng(5)
    seed_effect = rng.normal(0, 1.0, 60)
    a = pd.Series(86 + seed_effect + rng.normal(0, 0.2, 60))
    b = pd.Series(85.9 + seed_effect + rng.normal(0, 0.2, 60))
    pc = A.paired_comparison(a, b)
    assert pc["n_pairs"] == 60 and pc["correlation"] > 0.9 and pc["ci_width_ratio"] < 0.35
    t = sps.ttest_rel(a, b)
    ci = t.confidence_interval(0.95)
    assert pc["paired_ci"] == pytest.approx([ci.low, ci.high], abs=1e-10)


def test_runs_for_an_sd_ratio_give_the_power_of_the_exact_f_test():
    """The log-ratio approximation against the exact F-test of equal variances (normal runs): at the n it
    gives, the two-sided F-test detects the ratio with about the asked power."""
    ratio, alpha = 0.86, 0.05
    n = A.runs_for_sd_ratio(ratio, (0.8, 1.25), alpha)["to_detect"]
    df = n - 1
    lo, hi = sps.f.ppf(alpha / 2, df, df), sps.f.ppf(1 - alpha / 2, df, df)
    power = sps.f.cdf(lo / ratio**2, df, df) + sps.f.sf(hi / ratio**2, df, df)  # F = s_a^2/s_b^2 ~ r^2 F(df, df)
    assert power == pytest.approx(0.8, abs=0.02)
    need = A.runs_for_sd_ratio(1.0, (0.8, 1.25), alpha)
    df = need["for_equivalence"] - 1  # equivalence by two one-sided F-tests, true ratio 1: S^2 ~ F(df, df)
    both = sps.f.cdf(1.25**2 * sps.f.ppf(alpha, df, df), df, df) - sps.f.cdf(0.8**2 * sps.f.ppf(1 - alpha, df, df),
                                                                              df, df)
    assert need["to_detect"] is None and both == pytest.approx(0.8, abs=0.1)
    assert A.runs_for_sd_ratio(0.7, (0.8, 1.25), alpha)["for_equivalence"] is None  # outside the band
