import numpy as np
import pytest

from nanogpt.core.metrics import classification_metrics, expected_calibration_error, reliability_curve


def test_metrics_known_values():
    y = [0, 0, 1, 1, 1]
    p = [0.1, 0.6, 0.4, 0.8, 0.9]
    m = classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (1, 1, 1, 2)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["roc_auc"] == pytest.approx(5 / 6)  # 5 of 6 (pos, neg) pairs ranked correctly
    expected_ll = -np.mean(np.log([0.9, 0.4, 0.4, 0.8, 0.9]))
    assert m["log_loss"] == pytest.approx(expected_ll)


def test_ece():
    # two bins used: [0.2, 0.2] with 1 positive of 2 (gap 0.3), [0.9] x 2 with 2 positives (gap 0.1)
    assert expected_calibration_error([0, 1, 1, 1], [0.2, 0.2, 0.9, 0.9], n_bins=10) == pytest.approx(0.2)
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == pytest.approx(0.0)
    curve = reliability_curve([0, 1, 1, 1], [0.2, 0.2, 0.9, 0.9], n_bins=10)
    assert curve["count"].sum() == 4 and curve["frequency"][2] == pytest.approx(0.5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="differ in length"):
        classification_metrics([0, 1], [0.5])
    with pytest.raises(ValueError, match="within"):
        classification_metrics([0, 1], [0.5, 1.5])
    with pytest.raises(ValueError, match="No examples"):
        classification_metrics([], [])
