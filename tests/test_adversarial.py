"""Adversarial and virtual adversarial training (run/adversarial.py): the perturbation points where the paper says,
has the size asked for, leaves padding alone, and a run trained with it resumes and records what it was."""
import json

import pytest
import torch
from conftest import tiny_config
from test_run_identity import RESUMABLE, _interrupted_run

from nanogpt.core.losses import get_criterion
from nanogpt.core.model import GPTClassifier, ModelConfig
from nanogpt.run import adversarial
from nanogpt.run.rundir import RunDir
from nanogpt.run.train import train


def _model(n_outputs: int, seed: int = 0) -> GPTClassifier:
    torch.manual_seed(seed)
    model = GPTClassifier(ModelConfig(vocab_size=300, block_size=24, n_layer=1, n_head=2, n_embd=16, dropout=0.0,
                                      pooling="last", gelu="none", n_outputs=n_outputs))
    return model.eval()


def _batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 300, (6, 24), generator=g)
    lengths = torch.tensor([24, 20, 15, 9, 5, 2])
    return x, lengths, torch.tensor([1, 0, 1, 0, 1, 0])


def _mask(x, lengths):
    return (torch.arange(x.size(1))[None, :] < lengths[:, None]).unsqueeze(-1)


def _scored(loss: str):
    """criterion, model, batch (x, lengths, y), its embeddings and the clean logits."""
    criterion = get_criterion(loss)
    model = _model(criterion.n_outputs)
    x, lengths, y = _batch()
    embedded = model.embed(x)
    return criterion, model, x, lengths, y, embedded, model.forward_embedded(embedded, lengths)


def _random_like(r, x, lengths, seed: int):
    """A random perturbation of the real tokens with each review's norm equal to r's."""
    noise = torch.randn(r.shape, generator=torch.Generator().manual_seed(seed)) * _mask(x, lengths)
    return noise / noise.norm(dim=(1, 2), keepdim=True) * r.norm(dim=(1, 2), keepdim=True)


@pytest.mark.parametrize("loss", ["ce", "bce"])
@pytest.mark.parametrize("kind", ["at", "vat"])
def test_the_perturbation_has_the_asked_size_and_spares_padding(loss, kind):
    criterion = get_criterion(loss)
    model = _model(criterion.n_outputs)
    x, lengths, y = _batch()
    embedded = model.embed(x)
    r = adversarial.perturbation(model, criterion, kind, embedded, lengths, y,
                                 model.forward_embedded(embedded, lengths), epsilon=0.05)
    real = (embedded.detach() * _mask(x, lengths)).norm(dim=(1, 2))
    torch.testing.assert_close(r.norm(dim=(1, 2)), 0.05 * real, rtol=1e-4, atol=1e-6)
    assert (r * ~_mask(x, lengths)).abs().max() == 0  # padding is neither measured nor perturbed
    assert not r.requires_grad


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_the_adversarial_direction_hurts_more_than_random_ones(loss):
    criterion, model, x, lengths, y, embedded, clean = _scored(loss)
    r = adversarial.perturbation(model, criterion, "at", embedded, lengths, y, clean, epsilon=0.05)

    def per_review_loss(delta):
        with torch.no_grad():
            logits = model.forward_embedded(embedded + delta, lengths)
        return torch.stack([criterion.loss(logits[i:i + 1], y[i:i + 1]) for i in range(len(y))])

    adversarial_loss, clean_loss = per_review_loss(r), per_review_loss(0)
    assert (adversarial_loss > clean_loss).all()
    for seed in range(5):  # a random direction of the same size, per review
        assert (adversarial_loss > per_review_loss(_random_like(r, x, lengths, seed))).all()


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_the_virtual_adversarial_direction_moves_the_prediction_most(loss):
    criterion, model, x, lengths, y, embedded, clean = _scored(loss)
    torch.manual_seed(3)
    r = adversarial.perturbation(model, criterion, "vat", embedded, lengths, y, clean, epsilon=0.05)
    with torch.no_grad():
        moved = adversarial.kl_divergence(criterion, clean, model.forward_embedded(embedded + r, lengths))
        random_moves = []
        for seed in range(5):
            noise = _random_like(r, x, lengths, seed)
            random_moves.append(adversarial.kl_divergence(criterion, clean,
                                                          model.forward_embedded(embedded + noise, lengths)))
    assert moved > 0 and moved > 3 * max(random_moves)


def test_kl_divergence_is_that_of_the_two_class_distributions():
    ce, bce = get_criterion("ce"), get_criterion("bce")
    z_p, z_q = torch.tensor([[0.7], [-1.2]]), torch.tensor([[-0.3], [2.0]])
    p, q = torch.sigmoid(z_p).squeeze(-1), torch.sigmoid(z_q).squeeze(-1)
    expected = (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).mean()
    torch.testing.assert_close(adversarial.kl_divergence(bce, z_p, z_q), expected)
    # CE over (0, z) is BCE over z: the same distributions, the same divergence
    pad = torch.zeros_like(z_p)
    torch.testing.assert_close(adversarial.kl_divergence(ce, torch.cat([pad, z_p], 1), torch.cat([pad, z_q], 1)),
                               expected)
    assert adversarial.kl_divergence(bce, z_p, z_p) == 0


def test_with_weight_zero_the_objective_is_the_plain_loss_and_its_gradient():
    criterion = get_criterion("bce")
    x, lengths, y = _batch()
    model = _model(1)
    loss, objective = adversarial.adversarial_objective(model, criterion, "at", x, lengths, y, 0.05, 0.0)
    objective.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    plain = _model(1)
    criterion.loss(plain(x, lengths), y).backward()
    assert loss.item() == objective.item()
    for got, want in zip(grads, (p.grad for p in plain.parameters())):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="adversarial must be one of"):
        adversarial.perturbation(model, criterion, "fgsm", model.embed(x), lengths, y, model(x, lengths), 0.05)


def test_a_run_records_its_adversarial_setting_and_is_its_own_run(tmp_path):
    plain = tiny_config(tmp_path)
    at = plain.replace(adversarial="at", adversarial_epsilon=0.01)
    assert plain.run_id() != at.run_id() != at.replace(adversarial="vat").run_id()
    assert at.run_id() != at.replace(adversarial_epsilon=0.02).run_id()
    assert "adversarial" not in json.dumps(plain.identity())  # off: committed run ids unchanged
    with pytest.raises(ValueError, match="adversarial must be one of"):
        plain.replace(adversarial="fgsm").validate()
    with pytest.raises(ValueError, match="adversarial_epsilon must be > 0"):
        at.replace(adversarial_epsilon=0.0).validate()


def test_a_virtual_adversarial_run_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    changes = dict(adversarial="vat", adversarial_epsilon=0.01)
    reference = train(tiny_config(tmp_path / "ref", **RESUMABLE, **changes))
    cfg = _interrupted_run(tmp_path, monkeypatch, **changes)
    resumed = train(cfg, resume=True)
    assert resumed.resumed_from_step == 8
    assert json.loads(RunDir(cfg.out_dir, cfg.run_id()).meta.read_text())["config"]["adversarial"] == "vat"
    assert resumed.val_loss == reference.val_loss and resumed.val_accuracy == reference.val_accuracy
    plain = train(tiny_config(tmp_path / "plain", **RESUMABLE))
    assert plain.val_loss != reference.val_loss  # the adversarial term changed what was learnt
