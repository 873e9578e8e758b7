"""The GPT and NBSVM combined (study/hybrid.py): the fixed rule, the per-loss table against hand-computed numbers,
and the committed report against the committed study it combines."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nanogpt.study.hybrid import WEIGHT, format_hybrid, hybrid_probabilities, hybrid_table

ROOT = Path(__file__).resolve().parents[1]


def test_the_rule_is_the_mean_of_the_two_probabilities():
    assert WEIGHT == 0.5
    np.testing.assert_allclose(hybrid_probabilities([0.9, 0.2, 0.6], [0.3, 0.4, 0.1]), [0.6, 0.3, 0.35])
    np.testing.assert_allclose(hybrid_probabilities([0.9], [0.1], weight=1.0), [0.9])
    with pytest.raises(ValueError, match="not the same reviews"):
        hybrid_probabilities([0.1, 0.2], [0.3])
    with pytest.raises(ValueError, match="weight must be in"):
        hybrid_probabilities([0.1], [0.3], weight=1.5)


def test_the_table_against_hand_computed_numbers():
    labels = np.array([1, 1, 0, 0, 1])
    bow = np.array([0.8, 0.3, 0.4, 0.6, 0.45])  # right on 2 of 5
    gpt = {"a": [0.9, 0.6, 0.7, 0.2, 0.4],  # right on 3; mean with bow: .85 .45 .55 .4 .425 -> right on 2
           "b": [0.4, 0.9, 0.1, 0.1, 0.9],  # right on 4; mean: .6 .6 .25 .35 .675 -> right on 5
           "c": [0.7, 0.7, 0.3, 0.3, 0.7]}  # right on 5 (another loss)
    predictions = {k: pd.DataFrame({"label": labels, "positive_probability": v}) for k, v in gpt.items()}
    runs = pd.DataFrame({"run_id": ["b", "a", "c"], "seed": [1, 0, 0], "loss": ["bce", "bce", "ce"]})
    table = hybrid_table(predictions, runs, labels, bow).set_index("loss")
    bce = table.loc["bce"]
    assert bce["runs"] == 2 and bce["gpt"] == pytest.approx(70.0) and bce["hybrid"] == pytest.approx(70.0)
    assert (bce["hybrid_min"], bce["hybrid_max"]) == (pytest.approx(40.0), pytest.approx(100.0))
    assert bce["hybrid_minus_gpt"] == pytest.approx(0.0)  # -20 and +20
    assert bce["se"] == pytest.approx(100 * math.sqrt(2 * 0.2 ** 2) / math.sqrt(2))
    assert bce["nbsvm"] == pytest.approx(40.0)
    assert bce["disagree"] == pytest.approx(100 * (3 / 5 + 4 / 5) / 2)  # a: 3 of 5; b: 4 of 5
    # a disagrees on reviews 1, 2, 3: right on 1 and 3 (2 of 3), hybrid right on 3 only (1 of 3);
    # b disagrees on 0, 1, 3, 4: right on 1, 3, 4 (3 of 4), hybrid right on all 4
    assert bce["gpt_right_where_they_disagree"] == pytest.approx(100 * (2 / 3 + 3 / 4) / 2)
    assert bce["hybrid_right_where_they_disagree"] == pytest.approx(100 * (1 / 3 + 1) / 2)
    assert table.loc["ce", "runs"] == 1 and math.isnan(table.loc["ce", "se"])
    other = dict(predictions, a=predictions["a"].assign(label=[0, 1, 0, 0, 1]))
    with pytest.raises(ValueError, match="other reviews"):
        hybrid_table(other, runs, labels, bow)


def test_the_committed_report_combines_the_committed_study():
    report = json.loads((ROOT / "results" / "hybrid-ft-long.json").read_text())
    study = json.loads((ROOT / "results" / "pretraining-ft-long.json").read_text())
    baseline = json.loads((ROOT / "results" / "baseline-nbsvm-ef3f95501ca0.json").read_text())
    assert report["backbone"] == study["backbone"] and report["n_val"] == 4981
    assert report["nbsvm"]["accuracy"] == baseline["accuracy"]
    for row in report["rows"]:
        arm = study["arms"][f"pre-trained/{row['loss']}"]
        assert row["runs"] == arm["n"] == 5
        assert row["gpt"] == pytest.approx(arm["mean"], abs=0.02)  # the archive keeps float16 probabilities
        assert row["nbsvm"] == pytest.approx(100 * baseline["accuracy"], abs=1e-9)
        assert row["hybrid_min"] <= row["hybrid"] <= row["hybrid_max"]
    assert "hybrid" in format_hybrid(report) and "over NBSVM" in format_hybrid(report)
