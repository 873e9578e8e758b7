import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from nanogpt.stats import comparison_table, format_comparison, summarize, welch_test
from nanogpt.study import parse_seeds


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
