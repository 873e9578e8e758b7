"""The model shipped in models/ (serve/shipped.py): exported to safetensors with its card, read back as the same
classifier, refused with one line when truncated or altered, and used by classify and serve when no checkpoint is
named."""
import json

import numpy as np
import pandas as pd
import pytest

from nanogpt.__main__ import main
from nanogpt.run.checkpoints import CheckpointError, load_checkpoint
from nanogpt.serve import shipped
from nanogpt.serve.predict import Classifier


@pytest.fixture(scope="module")
def exported(learnt_run, tmp_path_factory):
    _, result = learnt_run
    models = tmp_path_factory.mktemp("models")
    card = shipped.ship(result.run_dir, models, name="m")
    return result, models / "m.safetensors", card


def test_the_shipped_model_answers_as_the_run_did(exported):
    result, path, card = exported
    reference = pd.read_csv(result.run_dir / "val_predictions.csv")
    assert card["label_agreement_with_fp32"] >= shipped.MIN_AGREEMENT
    assert card["sha256"] and card["bytes"] == path.stat().st_size and card["weights"] == "float16"
    assert card["run_id"] == result.run_id and card["validation_accuracy_fp32"] == result.val_accuracy
    assert json.loads(shipped.card_path(path).read_text()) == card
    from conftest import separable_csv  # noqa: F401 (the fixture's data: the run's validation reviews)

    from nanogpt.data.imdb import load_imdb

    texts = list(load_imdb(result.row["source"])["validation"]["text"])
    probs = Classifier.load(path).predict(texts).probabilities
    np.testing.assert_allclose(probs, reference["positive_probability"], atol=5e-3)  # fp16 weights
    assert np.mean((probs > 0.5) == (reference["positive_probability"] > 0.5)) >= 0.995
    full = shipped.ship(result.run_dir, path.parent, name="full", half=False)
    probs32 = Classifier.load(path.parent / "full.safetensors").predict(texts).probabilities
    np.testing.assert_allclose(probs32, reference["positive_probability"], atol=1e-5)  # the same fp32 model
    assert full["bytes"] > 1.8 * card["bytes"]


def test_the_card_holds_bf16_agreement_only_where_bf16_is_native(learnt_run, tmp_path, monkeypatch):
    """On a processor that multiplies bf16 natively the card says how bf16 serving labels the validation reviews
    against fp32 (what `serve --precision auto` gives there); elsewhere it measures nothing (None)."""
    from nanogpt.data.imdb import load_imdb

    _, result = learnt_run
    monkeypatch.setattr(shipped, "cpu_has_fast_bf16", lambda: False)
    assert shipped.ship(result.run_dir, tmp_path, name="plain")["bf16"] is None
    monkeypatch.setattr(shipped, "cpu_has_fast_bf16", lambda: True)  # bf16 is emulated where it is not native
    card = shipped.ship(result.run_dir, tmp_path, name="bf16")
    kept = pd.read_csv(result.run_dir / "val_predictions.csv")
    fp32, truth = kept["positive_probability"].to_numpy(), kept["label"].to_numpy()
    reference = fp32 > 0.5
    texts = list(load_imdb(result.row["source"])["validation"]["text"])
    served = Classifier.load(tmp_path / "bf16.safetensors", precision="bf16").predict(texts)
    assert card["bf16"]["label_agreement_with_fp32"] == np.mean(served.labels == reference)
    assert card["bf16"]["validation_accuracy"] == np.mean(served.labels == truth)
    assert card["bf16"]["max_probability_difference"] == np.max(np.abs(served.probabilities - fp32))  # bf16's own
    assert card["bf16"]["processor"] and "served in bf16" in shipped.describe(card)
    assert "served in bf16" not in shipped.describe({**card, "bf16": None})


def test_a_truncated_or_altered_file_is_one_clear_error(exported, tmp_path):
    _, path, _ = exported
    data = path.read_bytes()
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(truncated)
    altered = bytearray(data)
    altered[-10] ^= 0xFF  # one byte of the last tensor's data
    changed = tmp_path / "a.safetensors"
    changed.write_bytes(bytes(altered))
    with pytest.raises(CheckpointError, match="do not match the digest in its header"):
        Classifier.load(changed)
    header = tmp_path / "h.safetensors"
    header.write_bytes(data.replace(b'"format"', b'"formit"', 1))
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint|not a checkpoint of this"):
        load_checkpoint(header)


def test_a_model_that_drifts_in_fp16_is_not_shipped(learnt_run, tmp_path, monkeypatch):
    _, result = learnt_run
    monkeypatch.setattr(shipped, "MIN_AGREEMENT", 1.01)  # no model can agree on more than all reviews
    with pytest.raises(ValueError, match=r"agree with the fp32 model's on .* ship it with half=False"):
        shipped.ship(result.run_dir, tmp_path, name="m")
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_classify_and_the_panel_use_the_shipped_model_when_none_is_named(exported, monkeypatch, capsys):
    _, path, card = exported
    monkeypatch.setattr(shipped, "MODELS_DIR", path.parent)
    monkeypatch.setattr(shipped, "DEFAULT_NAME", "m")
    monkeypatch.setattr(shipped.shipped_model, "__defaults__", (path.parent, "m"))
    monkeypatch.setattr(shipped.shipped_option, "__defaults__", (path.parent, "m"))
    assert main(["classify", "--json", "a wonderful superb film"]) == 0
    answer = json.loads(capsys.readouterr().out)
    direct = Classifier.load(path).predict(["a wonderful superb film"]).to_records()[0]
    assert answer["positive_probability"] == pytest.approx(direct["positive_probability"])
    loss, (label, where) = shipped.shipped_option()
    assert loss == card["loss"] and where == str(path) and f"{100 * card['validation_accuracy_shipped']:.2f}%" in label
    monkeypatch.setattr(shipped.shipped_model, "__defaults__", (path.parent / "none", "m"))
    assert main(["classify", "a film"]) == 2
    assert "no --checkpoint given and no model shipped" in capsys.readouterr().err


def test_the_service_loads_a_safetensors_export(exported):
    _, path, _ = exported
    from nanogpt.serve.service import load_models

    models = load_models([f"shipped={path}"])
    assert list(models) == ["shipped"]
    got = models["shipped"].classifier.predict(["a wonderful superb film"]).probabilities
    np.testing.assert_allclose(got, Classifier.load(path).predict(["a wonderful superb film"]).probabilities)


def test_ship_command_line(learnt_run, tmp_path, capsys):
    _, result = learnt_run
    assert main(["ship", str(result.run_dir), "--models", str(tmp_path), "--name", "cli"]) == 0
    card = json.loads((tmp_path / "cli.json").read_text())
    assert f"{100 * card['validation_accuracy_shipped']:.2f}%" in capsys.readouterr().out
    assert (tmp_path / "cli.safetensors").is_file() and card["weights"] == "float16"
    assert main(["ship", str(tmp_path), "--models", str(tmp_path)]) == 2
    assert "not a finished run's folder" in capsys.readouterr().err


def test_the_bench_times_the_shipped_model_as_it_serves(exported):
    """bench's shipped-model line: one review per call over `calls` reviews, then the batch at each batch size."""
    from nanogpt.bench.inference import shipped_times

    _, path, _ = exported
    out = shipped_times(path, 3, 8, batch_sizes=(4, 8))
    assert (out["calls"], out["batch"], out["reading"]) == (3, 8, Classifier.load(path).reading)
    assert 0 < out["ms_median"] <= out["ms_p95"]
    assert out["reviews_per_s_batch4"] > 0 and out["reviews_per_s_batch8"] > 0 and "reviews_per_s_batch16" not in out


def test_label_agreement_compares_a_precision_with_fp32_on_the_same_reviews(exported):
    """The serving bar for bf16: fp32 against itself agrees everywhere; bf16 is compared with fp32 review by
    review (its labels and probabilities read from the same texts)."""
    from nanogpt.bench.inference import label_agreement
    from nanogpt.data.imdb import load_imdb

    _, path, _ = exported
    same = label_agreement(path, "fp32", reviews=12)
    assert (same["reviews"], same["label_agreement"], same["max_probability_difference"]) == (12, 1.0, 0.0)
    bf16 = label_agreement(path, "bf16", reviews=12)
    texts = list(load_imdb()["validation"]["text"])[:12]
    ref, low = (Classifier.load(path, precision=p).predict(texts) for p in ("fp32", "bf16"))
    assert bf16["label_agreement"] == np.mean(ref.labels == low.labels)
    assert bf16["max_probability_difference"] == np.max(np.abs(ref.probabilities - low.probabilities)) > 0
