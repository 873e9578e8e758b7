import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from nanogpt.study.runs import parse_seeds
from nanogpt.study.stats import (
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
