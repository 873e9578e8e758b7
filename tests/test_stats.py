import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from nanogpt.study.runs import parse_seeds
from nanogpt.study.stats import (
    arm_summary,
    compare_means,
    compare_spread,
    comparison_table,
    format_comparison,
    hedges_g,
    runs_needed,
    summarize,
    welch_power,
    welch_test,
)


def test_summarize():
    s = summarize([0.85, 0.86, 0.87])
    assert s["n"] == 3 and s["mean"] == pytest.approx(86.0) and s["std"] == pytest.approx(1.0)
    assert s["spread"] == pytest.approx(2.0) and s["min"] == pytest.approx(85.0)


def test_comparison_table_and_welch():
    runs = pd.DataFrame({"loss": ["ce"] * 3 + ["bce"] * 4,
                         "val_accuracy": [0.85, 0.86, 0.87, 0.86, 0.861, 0.862, 0.859]})
    table = comparison_table(runs)
    assert list(table.index) == ["ce", "bce"]
    assert table.loc["ce", "paper_mean"] == 85.84 and table.loc["bce", "paper_spread"] == 1.04
    assert table.loc["bce", "n"] == 4
    w = welch_test(runs.loc[runs.loss == "bce", "val_accuracy"], runs.loc[runs.loss == "ce", "val_accuracy"])
    ref = sps.ttest_ind([0.86, 0.861, 0.862, 0.859], [0.85, 0.86, 0.87], equal_var=False)
    assert w["p_value"] == pytest.approx(ref.pvalue) and w["t"] == pytest.approx(ref.statistic)
    assert w["diff_points"] == pytest.approx((np.mean([0.86, 0.861, 0.862, 0.859]) - 0.86) * 100)
    text = format_comparison(runs)
    assert "paper" in text and "Welch" in text


@pytest.mark.parametrize("text, seeds", [("0-4", [0, 1, 2, 3, 4]), ("0,2,7", [0, 2, 7]), ("3", [3]),
                                         ("1-2,5", [1, 2, 5]), ("2,2", [2])])
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text, match", [("5-2", "backwards"), ("x", "not a seed"), ("", "not a seed"),
                                         ("-1", "not a seed|>= 0")])
def test_parse_seeds_errors(text, match):
    with pytest.raises(ValueError, match=match):
        parse_seeds(text)



def test_compare_means_against_scipy_and_hand_values():
    a = np.array([86.1, 85.2, 87.0, 86.4, 85.9])
    b = np.array([85.0, 84.1, 86.2, 85.5, 84.7, 85.3])
    r = compare_means(a, b, n_boot=4000)
    assert r["welch_p"] == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)
    assert r["mannwhitney_p"] == pytest.approx(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    assert r["diff"] == pytest.approx(a.mean() - b.mean())
    assert r["diff_ci_low"] < r["diff"] < r["diff_ci_high"]
    sp = np.sqrt((4 * a.var(ddof=1) + 5 * b.var(ddof=1)) / 9)
    assert r["hedges_g"] == pytest.approx((a.mean() - b.mean()) / sp * (1 - 3 / (4 * 11 - 9)))


def test_bootstrap_ci_is_reproducible_and_covers():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 1.0, 40), rng.normal(0.0, 1.0, 40)
    first = compare_means(a, b, n_boot=2000, seed=3)
    assert first == compare_means(a, b, n_boot=2000, seed=3)
    assert first["diff_ci_low"] > 0  # a true difference of one sd, 40 per group: the CI excludes 0


def test_compare_spread():
    a = np.array([80.1, 83.0, 85.9, 82.2, 86.5, 81.0])
    b = np.array([85.0, 85.3, 84.8, 85.1, 85.4, 84.9])
    r = compare_spread(a, b, n_boot=2000)
    assert r["brown_forsythe_p"] == pytest.approx(sps.levene(a, b, center="median").pvalue)
    assert r["sd_ratio"] == pytest.approx(a.std(ddof=1) / b.std(ddof=1))
    assert r["sd_ratio_ci_low"] > 1


def test_runs_needed_matches_textbook_values():
    # two-sided two-sample t-test, alpha 0.05, power 0.8: d = 1 needs 17 per group, d = 0.5 needs 64
    assert runs_needed(1.0, 1.0, 1.0) == 17
    assert runs_needed(0.5, 1.0, 1.0) == 64
    assert welch_power(17, 1.0, 1.0, 1.0) >= 0.8 > welch_power(16, 1.0, 1.0, 1.0)
    # the paper's 0.26 points against a seed-to-seed sd of ~1 point needs hundreds of runs per loss
    assert runs_needed(0.26, 1.0, 1.0) > 200
    assert hedges_g([1, 1], [1, 1]) != hedges_g([1, 1], [1, 1])  # nan: no spread, no effect size


def test_conclusion_follows_the_numbers():
    from nanogpt.study.stats import conclusion, study_report

    rng = np.random.default_rng(0)
    clear = pd.DataFrame({"loss": ["ce"] * 12 + ["bce"] * 12,
                          "val_accuracy": np.r_[rng.normal(0.85, 0.02, 12), rng.normal(0.88, 0.002, 12)]})
    text = " ".join(conclusion(study_report(clear, n_boot=2000)))
    assert "BCE is more accurate" in text and "supported in direction" in text
    assert "Stability: BCE varies less" in text and "more stable is supported" in text

    reverse = clear.assign(loss=clear["loss"].map({"ce": "bce", "bce": "ce"}))
    text = " ".join(conclusion(study_report(reverse, n_boot=2000)))
    assert "CE is more accurate" in text and "refuted" in text

    same = pd.DataFrame({"loss": ["ce"] * 5 + ["bce"] * 5,
                         "val_accuracy": [0.87, 0.89, 0.88, 0.875, 0.885, 0.88, 0.872, 0.89, 0.878, 0.886]})
    lines = conclusion(study_report(same, n_boot=2000))
    assert lines[0].startswith("Accuracy: no detectable difference") and "cannot decide" in lines[0]
    assert "runs per loss" in lines[1]
    tight = pd.DataFrame({"loss": ["ce"] * 6 + ["bce"] * 6,
                          "val_accuracy": [0.880, 0.8801, 0.8799, 0.8802, 0.8798, 0.880] * 2})
    assert "refute a gap that large" in conclusion(study_report(tight, n_boot=2000))[0]
    failed = pd.concat([same, pd.DataFrame({"loss": ["ce"], "val_accuracy": [np.nan], "status": ["failed"]})])
    assert study_report(failed, n_boot=500)["n_ce"] == 5  # a failed run never counts
    with pytest.raises(ValueError, match="at least 2 finished runs"):
        study_report(same.head(6), n_boot=100)


def _runs(ce, bce):
    return pd.DataFrame({"loss": ["ce"] * len(ce) + ["bce"] * len(bce), "val_accuracy": list(ce) + list(bce),
                         "status": "ok"})


def test_conclusion_does_not_judge_below_the_minimum_number_of_runs():
    import warnings

    from nanogpt.study.stats import MIN_RUNS_TO_JUDGE, conclusion, study_report

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning may leak into a notebook
        lines = conclusion(study_report(_runs([0.80, 0.86], [0.861, 0.8611]), n_boot=500))
    text = " ".join(lines)
    assert "Too few runs to judge" in text and f"fewer than {MIN_RUNS_TO_JUDGE}" in text
    assert [line.split(":")[0] for line in lines[:2]] == ["Accuracy", "Stability"]  # both claims named, as always
    assert "max-min BCE 0.01, CE 6.00 points" in lines[1]
    assert "refute" not in text and "support" not in text


def test_zero_variance_is_said_plainly_without_warnings():
    import warnings

    from nanogpt.study.stats import conclusion, study_report

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = study_report(_runs([0.85] * 6, [0.85] * 6), n_boot=500)
        lines = conclusion(report)
    assert np.isnan(report["spread"]["brown_forsythe_p"])
    assert any("no spread to compare" in line for line in lines)
    assert not any("refuted" in line or "supported" in line for line in lines)


# ------------------------------------------------------------------ killers of surviving mutants (docs/testing.md)


def test_summarize_one_and_two_runs():
    one = summarize([0.85])
    assert one["n"] == 1 and one["mean"] == pytest.approx(85.0) and np.isnan(one["std"])
    assert summarize([0.80, 0.90])["std"] == pytest.approx(np.std([80.0, 90.0], ddof=1))
    with pytest.raises(ValueError, match="No runs to summarise"):
        summarize([])


def test_arm_summary_per_arm_finished_runs_only():
    """The study command's table for the paired and resplit designs: one row per arm, failed runs left out."""
    runs = pd.DataFrame({
        "loss": ["ce", "ce", "ce", "bce", "bce", "bce"],
        "arm": ["ce-paired", "ce-paired", "ce-paired", "bce", "bce-head2x", "bce-head2x"],
        "val_accuracy": [0.80, 0.84, 0.99, 0.86, 0.87, 0.89],
        "status": ["ok", "ok", "failed", "ok", "ok", "ok"]})
    table = arm_summary(runs)
    assert table.index.name == "arm" and sorted(table.index) == ["bce", "bce-head2x", "ce-paired"]
    assert table.loc["ce-paired"].to_dict() == pytest.approx(summarize([0.80, 0.84]))  # the failed 0.99 left out
    assert table.loc["bce-head2x", "n"] == 2 and table.loc["bce-head2x", "spread"] == pytest.approx(2.0)
    assert table.loc["bce", "n"] == 1 and table.loc["bce", "mean"] == pytest.approx(86.0)
    by_loss = arm_summary(runs.drop(columns="arm"))  # rows without an arm column: grouped by loss
    assert by_loss.index.name == "loss" and sorted(by_loss.index) == ["bce", "ce"]
    assert by_loss.loc["bce"].to_dict() == pytest.approx(summarize([0.86, 0.87, 0.89]))
    assert by_loss.loc["ce", "n"] == 2


def test_welch_test_at_its_smallest_sizes():
    lone = welch_test([0.80], [0.90, 0.91])  # one run: a difference, no test
    assert lone["diff_points"] == pytest.approx(-10.5) and np.isnan(lone["t"]) and np.isnan(lone["p_value"])
    assert np.isnan(welch_test([0.8, 0.81], [0.9])["t"]) and np.isnan(welch_test([], [0.9, 0.8])["diff_points"])
    two = welch_test([0.80, 0.82], [0.90, 0.93])  # two runs each: the test runs
    ref = sps.ttest_ind([0.80, 0.82], [0.90, 0.93], equal_var=False)
    assert two["t"] == pytest.approx(ref.statistic) and two["p_value"] == pytest.approx(ref.pvalue)


def test_the_bootstrap_ci_draws_every_run_and_cuts_at_its_level():
    from nanogpt.study.stats import bootstrap_ci

    a = np.array([100.0, 0, 0, 0, 0])  # the first run is the only one that moves the mean
    lo, hi = bootstrap_ci(a, np.zeros(5), lambda x, y: x.mean() - y.mean(), n_boot=2000)
    assert lo == 0 and hi >= 40  # resamples that hold it
    rng = np.random.default_rng(3)
    x, y = rng.normal(1.0, 1.0, 400), rng.normal(0.0, 2.0, 400)
    lo, hi = bootstrap_ci(x, y, lambda p, q: p.mean() - q.mean(), n_boot=4000, seed=1)
    se = np.sqrt(x.var(ddof=1) / x.size + y.var(ddof=1) / y.size)
    center = x.mean() - y.mean()  # large samples: the percentile CI is the normal one to within a few percent
    assert lo == pytest.approx(center - 1.96 * se, abs=0.08 * se) and hi == pytest.approx(center + 1.96 * se,
                                                                                         abs=0.08 * se)
    assert bootstrap_ci(x, y, lambda p, q: np.nan) == (pytest.approx(np.nan, nan_ok=True),) * 2


def test_compare_means_reports_every_statistic_with_its_bootstrap():
    from nanogpt.study.stats import bootstrap_ci

    a, b = [0.85, 0.86, 0.88, 0.84, 0.87], [0.83, 0.85, 0.84, 0.82, 0.86]
    r = compare_means(a, b, n_boot=300, seed=4)
    welch = sps.ttest_ind(a, b, equal_var=False)
    mw = sps.mannwhitneyu(a, b, alternative="two-sided")
    assert (r["welch_t"], r["welch_p"]) == (pytest.approx(welch.statistic), pytest.approx(welch.pvalue))
    assert (r["mannwhitney_u"], r["mannwhitney_p"]) == (pytest.approx(mw.statistic), pytest.approx(mw.pvalue))
    ci = bootstrap_ci(np.array(a), np.array(b), lambda x, y: x.mean() - y.mean(), n_boot=300, seed=4)
    assert (r["diff_ci_low"], r["diff_ci_high"]) == ci  # its own resamples, as many as asked for
    assert compare_means(a, b, n_boot=300, seed=5)["diff_ci_low"] != r["diff_ci_low"] or \
        compare_means(a, b, n_boot=300, seed=5)["diff_ci_high"] != r["diff_ci_high"]


def test_the_sd_ratio_ci_is_symmetric_for_equal_samples_and_finite_for_tiny_ones():
    same = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    r = compare_spread(same, same, n_boot=10_000, seed=0)
    assert r["sd_ratio"] == 1 and r["sd_ratio_ci_low"] * r["sd_ratio_ci_high"] == pytest.approx(1.0, rel=0.05)
    levene = sps.levene(same, [1.0, 1.5, 2.0, 2.5, 3.0, 6.0], center="median")
    spread = compare_spread(same, [1.0, 1.5, 2.0, 2.5, 3.0, 6.0], n_boot=200)
    assert (spread["brown_forsythe_W"], spread["brown_forsythe_p"]) == (pytest.approx(levene.statistic),
                                                                        pytest.approx(levene.pvalue))
    tiny = compare_spread([1.0, 2.0, 3.0], [1.0, 2.0, 4.0], n_boot=2000)  # some resamples are constant
    assert np.isfinite(tiny["sd_ratio_ci_low"]) and np.isfinite(tiny["sd_ratio_ci_high"])
    assert compare_spread(same, same, n_boot=300, seed=1)["sd_ratio_ci_low"] != \
        compare_spread(same, same, n_boot=300, seed=2)["sd_ratio_ci_low"]  # the seed reaches the bootstrap


def test_welch_power_with_unequal_spreads_matches_a_simulation():
    """Power of Welch's test at n = 20 per arm, sds 0.6 and 1.5: the noncentral-t formula against 200,000
    simulated studies (standard error 0.0011). The formula is an approximation that drifts at tiny n (0.294
    against 0.310 simulated at n = 4, sds 0.5 and 2.0), so the check sits where it is meant to hold."""
    rng = np.random.default_rng(0)
    n, diff, sd_a, sd_b, sims = 20, 0.8, 0.6, 1.5, 200_000
    a = rng.normal(diff, sd_a, (sims, n))
    b = rng.normal(0.0, sd_b, (sims, n))
    simulated = float(np.mean(sps.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05))
    assert welch_power(n, diff, sd_a, sd_b) == pytest.approx(simulated, abs=0.006)
    assert welch_power(n, -diff, sd_a, sd_b) == pytest.approx(simulated, abs=0.006)
    assert welch_power(n, 0.0, sd_a, sd_b) == pytest.approx(0.05, abs=1e-9)  # no effect: both tails make alpha


@pytest.mark.parametrize("diff, sd_a, sd_b, power", [(1.0, 0.5, 2.0, 0.8), (0.3, 1.0, 0.6, 0.9), (5.0, 0.1, 0.2, 0.8)])
def test_runs_needed_is_the_smallest_n_with_the_power(diff, sd_a, sd_b, power):
    n = runs_needed(diff, sd_a, sd_b, power=power)
    assert welch_power(n, diff, sd_a, sd_b) >= power
    assert n == 2 or welch_power(n - 1, diff, sd_a, sd_b) < power


def test_study_report_passes_its_bootstrap_settings_on():
    from nanogpt.study.stats import study_report

    runs = pd.DataFrame({"loss": ["ce"] * 5 + ["bce"] * 5,
                         "val_accuracy": [0.85, 0.86, 0.88, 0.84, 0.87, 0.83, 0.85, 0.84, 0.82, 0.86]})
    report = study_report(runs, n_boot=300, seed=7, power=0.9)
    ce, bce = np.array([85, 86, 88, 84, 87.0]), np.array([83, 85, 84, 82, 86.0])
    means = compare_means(bce, ce, n_boot=300, seed=7)
    assert report["means"]["diff_ci_low"] == pytest.approx(means["diff_ci_low"])
    spread = compare_spread(bce, ce, n_boot=300, seed=7)
    assert report["spread"]["sd_ratio_ci_low"] == pytest.approx(spread["sd_ratio_ci_low"])
    assert report["runs_needed_for_paper_diff"] == runs_needed(report["paper_diff"], bce.std(ddof=1), ce.std(ddof=1),
                                                               power=0.9)
