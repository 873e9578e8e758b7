import pandas as pd
import pytest

from nanogpt.run.results import study_checkpoints
from nanogpt.study.widgets import ReviewPanel


@pytest.fixture(scope="module")
def panel(tiny_run):
    results = tiny_run["ce"].run_dir.parent.parent
    checkpoints = study_checkpoints(results)
    samples = pd.DataFrame({"text": ["A wonderful, moving film.", "A dull mess."], "label": [1, 0]})
    return ReviewPanel(checkpoints, samples=samples)


def test_checkpoints_best_first(tiny_run):
    cps = study_checkpoints(tiny_run["ce"].run_dir.parent.parent)
    assert set(cps) == {"ce", "bce"}
    assert cps["ce"][0][1] == str(tiny_run["ce"].checkpoint) and cps["ce"][0][0].startswith("seed 0:")


def test_click_classifies_with_both_losses(panel):
    panel.text.value = "One of the best films I have seen this year."
    panel.button.click()  # the same handler a person's click fires
    result = panel.last_result
    assert set(result) == {"ce", "bce"}
    for loss, r in result.items():
        assert r["label"] in (0, 1) and 0 <= r["positive_probability"] <= 1
        assert panel.bars[loss].value == pytest.approx(r["positive_probability"])
        assert r["sentiment"] in panel.labels[loss].value
    assert panel.message.value == ""


@pytest.mark.parametrize("text", ["", "   \n ", "\t"])
def test_empty_input_shows_a_message(panel, text):
    panel.text.value = text
    panel.button.click()
    assert panel.last_result is None and "empty" in panel.message.value


def test_sample_fills_the_text(panel):
    panel.samples.value = "A dull mess."
    assert panel.text.value == "A dull mess."
    panel.button.click()
    assert panel.last_result is not None


def test_odd_unicode_and_markup_are_safe(panel):
    panel.text.value = "<script>alert(1)</script> 🎬 \x00 \u202e"
    panel.button.click()
    assert panel.last_result is not None and panel.message.value == ""
    assert all("<script>" not in label.value for label in panel.labels.values())


def test_an_error_naming_markup_is_shown_escaped(panel, monkeypatch):
    """The message is the one place the panel shows text it did not write (an error's words): escaped there."""
    def refuse(path):
        raise ValueError("<script>alert(1)</script> is not a checkpoint")

    monkeypatch.setattr(panel, "_classifier", refuse)
    panel.text.value = "A fine film."
    panel.button.click()
    assert panel.last_result is None
    assert "&lt;script&gt;alert(1)&lt;/script&gt; is not a checkpoint" in panel.message.value
    assert "<script>" not in panel.message.value


def test_no_checkpoints_is_a_clear_error(tmp_path):
    assert study_checkpoints(tmp_path) == {}
    with pytest.raises(ValueError, match="No trained checkpoints"):
        ReviewPanel({})
