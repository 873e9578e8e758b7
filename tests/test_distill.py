"""Distillation (run/distill.py): the soft-target losses, the teacher file and its refusals, and a student that
trains on exactly its teacher's probabilities for exactly the reviews of each batch."""
import numpy as np
import pytest
import torch
from conftest import separable_csv, spy, tiny_config

from nanogpt.core.losses import get_criterion
from nanogpt.data.imdb import load_splits
from nanogpt.data.tokens import TokenizedSplit
from nanogpt.run import distill
from nanogpt.run.train import train


def _split(n=6, seed=0) -> TokenizedSplit:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 6, size=n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return TokenizedSplit(rng.integers(0, 50000, offsets[-1]).astype(np.uint16), offsets,
                          (np.arange(n) % 2).astype(np.int64), lengths.astype(np.int64))


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_soft_targets_of_0_and_1_are_the_labels_loss(loss):
    criterion = get_criterion(loss)
    torch.manual_seed(0)
    logits = torch.randn(8, criterion.n_outputs)
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    assert torch.allclose(criterion.soft_loss(logits, labels.float()), criterion.loss(logits, labels), atol=1e-6)
    p = torch.rand(8)  # a soft target moves the loss: not the labels' loss
    assert not torch.allclose(criterion.soft_loss(logits, p), criterion.loss(logits, labels), atol=1e-3)


def test_ce_and_bce_soft_losses_are_one_function_of_the_logits():
    """As with labels, CE over (a, b) against [1 - p, p] equals BCE over b - a against p."""
    torch.manual_seed(1)
    logits, p = torch.randn(16, 2), torch.rand(16)
    ce = get_criterion("ce").soft_loss(logits, p)
    bce = get_criterion("bce").soft_loss((logits[:, 1] - logits[:, 0]).unsqueeze(-1), p)
    assert torch.allclose(ce, bce, atol=1e-6)
    label_loss = torch.tensor(2.0)
    mixed = distill.distilled_objective(get_criterion("ce"), logits, label_loss, p, 0.25)
    assert torch.allclose(mixed, 0.75 * label_loss + 0.25 * ce)


def test_a_temperature_softens_both_sides_of_the_teachers_term():
    """Hinton et al.: at T the teacher's log-odds and the student's logits are divided by T, the term times T^2."""
    p = torch.tensor([0.01, 0.5, 0.9, 0.999])
    assert torch.equal(distill.softened(p, 1.0), p)
    log_odds = torch.log(p / (1 - p))
    np.testing.assert_allclose(torch.logit(distill.softened(p, 2.0)), log_odds / 2, rtol=1e-4, atol=1e-5)
    torch.manual_seed(2)
    logits, label_loss = torch.randn(4, 1), torch.tensor(0.7)
    bce = get_criterion("bce")
    expected = 0.5 * label_loss + 0.5 * 9 * torch.nn.functional.binary_cross_entropy_with_logits(
        logits.squeeze(-1) / 3, torch.sigmoid(log_odds / 3))
    assert torch.allclose(distill.distilled_objective(bce, logits, label_loss, p, 0.5, 3.0), expected, atol=1e-5)


def test_a_teacher_file_round_trips_and_refuses_what_it_did_not_score(tmp_path):
    split, probs = _split(), np.array([0.1, 0.9, 0.5, 0.0, 1.0, 0.3], dtype=np.float32)
    path = distill.write_teacher(tmp_path / "t.npz", probs, split, ["run-a", "run-b"])
    np.testing.assert_array_equal(distill.load_teacher(path, split), probs)
    assert distill.read_teacher(path)[1]["members"] == ["run-a", "run-b"]
    other = _split(seed=1)  # same size, other reviews
    with pytest.raises(distill.TeacherError, match="scored other reviews"):
        distill.load_teacher(path, other)
    relabelled = TokenizedSplit(split.tokens, split.offsets, 1 - split.labels, split.full_lengths)
    with pytest.raises(distill.TeacherError, match="scored other reviews"):
        distill.load_teacher(path, relabelled)  # the labels are part of what it scored
    with pytest.raises(distill.TeacherError, match="one probability in"):
        distill.write_teacher(tmp_path / "bad.npz", probs[:-1], split, [])
    with pytest.raises(distill.TeacherError, match="one probability in"):
        distill.write_teacher(tmp_path / "bad.npz", probs * 2, split, [])
    cut = tmp_path / "cut.npz"
    cut.write_bytes(path.read_bytes()[:100])
    with pytest.raises(distill.TeacherError, match="cannot be read"):
        distill.load_teacher(cut, split)
    np.savez(tmp_path / "foreign.npz", probabilities=probs, meta=np.frombuffer(b'{"format": "x"}', dtype=np.uint8))
    with pytest.raises(distill.TeacherError, match="not a teacher file"):
        distill.load_teacher(tmp_path / "foreign.npz", split)
    with pytest.raises(distill.TeacherError, match="no such file"):
        distill.load_teacher(tmp_path / "none.npz", split)


def _teacher_for(cfg, probabilities_of, path):
    train_split, _ = load_splits(cfg, verbose=False)
    return distill.write_teacher(path, probabilities_of(train_split), train_split, ["made by the test"])


def test_a_student_whose_teacher_knows_the_labels_trains_as_the_plain_run(tmp_path):
    """BCE against soft targets equal to the labels, at weight 1, is the plain loss: the student must reproduce the
    plain run to the bit, which it does only if each batch reads its own reviews' targets."""
    plain_cfg = tiny_config(tmp_path, loss="bce", precision="fp32", max_steps=8)
    teacher = _teacher_for(plain_cfg, lambda s: s.labels.astype(np.float32), tmp_path / "labels.npz")
    plain = train(plain_cfg)
    student = train(plain_cfg.replace(teacher=str(teacher), distill_weight=1.0))
    assert student.run_id != plain.run_id
    np.testing.assert_array_equal(student.history["train_loss"], plain.history["train_loss"])
    a = np.loadtxt(plain.run_dir / "val_predictions.csv", delimiter=",", skiprows=1, usecols=1)
    b = np.loadtxt(student.run_dir / "val_predictions.csv", delimiter=",", skiprows=1, usecols=1)
    np.testing.assert_array_equal(a, b)


def test_a_student_learns_what_its_teacher_says(tmp_path):
    """Taught the opposite of every label (weight 1), a student on separable reviews labels them the other way."""
    source = separable_csv(tmp_path / "separable.csv")
    cfg = tiny_config(tmp_path, loss="ce", source=source, train_limit=None, val_limit=None, precision="fp32",
                      max_steps=100, eval_interval=50, warmup_steps=5, learning_rate=3e-3, dropout=0.0)
    contrary = _teacher_for(cfg, lambda s: 1.0 - s.labels.astype(np.float32), tmp_path / "contrary.npz")
    student = train(cfg.replace(teacher=str(contrary), distill_weight=1.0))
    assert student.val_accuracy < 0.2
    half = train(cfg.replace(teacher=str(contrary), distill_weight=0.5))  # equal pulls: close to a coin
    assert 0.2 < half.val_accuracy < 0.8


def test_the_teacher_is_part_of_the_run_and_checked_before_training(tmp_path):
    cfg = tiny_config(tmp_path, loss="bce")
    path = _teacher_for(cfg, lambda s: np.full(len(s), 0.5, np.float32), tmp_path / "t.npz")
    student = cfg.replace(teacher=str(path))
    first = student.run_id()
    _teacher_for(cfg, lambda s: np.full(len(s), 0.6, np.float32), path)  # same path, other content
    assert student.run_id() != first and cfg.run_id() not in (first, student.run_id())
    assert cfg.replace(distill_weight=0.9, distill_temperature=2.0).run_id() == cfg.run_id()  # no teacher: nothing
    assert student.replace(distill_temperature=2.0).run_id() != student.run_id()
    with pytest.raises(FileNotFoundError, match="no such file"):
        cfg.replace(teacher=str(tmp_path / "none.npz")).run_id()
    for bad, message in ((dict(distill_weight=0.0), "distill_weight"), (dict(distill_weight=1.5), "distill_weight"),
                         (dict(distill_temperature=0.5), "distill_temperature"),
                         (dict(adversarial="at"), "not combined")):
        with pytest.raises(ValueError, match=message):
            student.replace(**bad).validate()
    with pytest.raises(distill.TeacherError, match="scored other reviews"):  # taught on 512, training on 256
        train(student.replace(train_limit=256))


def test_the_loop_hands_the_teacher_term_its_weight_and_temperature(tmp_path, monkeypatch):
    """The run's distill_weight and distill_temperature reach the objective (what the objective does with them is
    tested above), and the teacher's probabilities of exactly the batch's reviews."""
    from nanogpt.run import train as train_module

    cfg = tiny_config(tmp_path, loss="bce", precision="fp32", max_steps=2, eval_interval=2, val_limit=32)
    teacher = _teacher_for(cfg, lambda s: np.linspace(0.1, 0.9, len(s)).astype(np.float32), tmp_path / "t.npz")
    seen = spy(monkeypatch, train_module, "distilled_objective")
    train(cfg.replace(teacher=str(teacher), distill_weight=0.25, distill_temperature=2.0))
    assert len(seen) == 2
    for args, kwargs, _ in seen:
        assert args[4:] == (0.25, 2.0) and not kwargs
        assert args[3].dtype == torch.float32 and args[3].shape == (cfg.batch_size,) and args[3].min() >= 0.1
