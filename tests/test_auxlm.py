"""The auxiliary language-model loss while fine-tuning (run/auxlm.py): the backbone file keeps its next-token output,
the loss is pre-training's own on the real tokens only, a run trains that output with it, resumes with it, and keeps
it out of the classifier."""
import json
import re

import numpy as np
import pytest
import torch
from conftest import spy, tiny_config
from test_pretrain import smoke
from test_run_identity import RESUMABLE, _interrupted_run

from nanogpt.__main__ import main
from nanogpt.run import pretrain as P
from nanogpt.run.auxlm import LM_OUTPUT_KEY, AuxLM, AuxLMError
from nanogpt.run.backbone import load_backbone
from nanogpt.run.rundir import RunDir
from nanogpt.run.train import build_model, train
from nanogpt.study.levers import arm_of, parse_arm


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return P.pretrain(smoke(tmp_path_factory.mktemp("aux")))


def _language_model(backbone) -> tuple[P.LanguageModel, AuxLM, dict]:
    ckpt = load_backbone(backbone.path)
    cfg = P.PretrainConfig(**json.loads(ckpt["pretrain_config"]))
    aux = AuxLM.from_backbone(ckpt, backbone.path)
    lm = P.LanguageModel(cfg, aux.rank.numpy())
    lm.gpt.load_state_dict(ckpt["backbone_state"], strict=False)
    lm.output.load_state_dict(ckpt[LM_OUTPUT_KEY]["state"])
    return lm.eval(), aux.eval(), ckpt


def test_the_loss_is_pretrainings_own_next_token_nll(backbone):
    lm, aux, _ = _language_model(backbone)
    window = torch.randint(0, 50257, (3, 33), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = lm(window, torch.device("cpu"), "fp32")
        # causal: the window's first 32 hidden states are those pre-training computed from its first 32 tokens
        got = aux.loss(lm.gpt.hidden_states(window), window, torch.full((3,), 33))
        assert torch.allclose(got, expected, rtol=1e-6), (got, expected)


def test_padding_is_neither_predicted_nor_predicts(backbone):
    lm, aux, _ = _language_model(backbone)
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([20, 7, 2, 1])
    x = torch.randint(0, 50257, (4, 20), generator=g)
    with torch.no_grad():
        batched = aux.loss(lm.gpt.hidden_states(x), x, lengths)
        other_pad = x.clone()
        for i, n in enumerate(lengths):
            other_pad[i, n:] = 7
        assert torch.equal(batched, aux.loss(lm.gpt.hidden_states(other_pad), other_pad, lengths))
        # by hand: each review alone, unpadded, weighted by how many next tokens it has
        total, count = 0.0, 0
        for i, n in enumerate(lengths.tolist()):
            if n > 1:
                one = x[i:i + 1, :n]
                total += aux.loss(lm.gpt.hidden_states(one), one, torch.tensor([n])).item() * (n - 1)
                count += n - 1
        assert batched.item() == pytest.approx(total / count, rel=1e-5)
        assert aux.loss(lm.gpt.hidden_states(x[2:]), x[2:], torch.tensor([1, 1])).item() == 0.0


def test_a_run_trains_the_output_resumes_with_it_and_keeps_it_out_of_the_classifier(tmp_path, backbone,
                                                                                      monkeypatch):
    changes = dict(init=f"lm:{backbone.path}", lm_weight=0.5)
    reference = train(tiny_config(tmp_path / "ref", **RESUMABLE, **changes))
    cfg = _interrupted_run(tmp_path, monkeypatch, **changes)
    state = torch.load(RunDir(cfg.out_dir, cfg.run_id()).state, weights_only=True)
    start = load_backbone(backbone.path)[LM_OUTPUT_KEY]["state"]
    assert any(not torch.equal(state["aux_lm_state"][f"output.{k}"], v) for k, v in start.items())  # it trained
    assert torch.equal(state["aux_lm_state"]["rank"], load_backbone(backbone.path)[LM_OUTPUT_KEY]["rank"])
    resumed = train(cfg, resume=True)
    assert resumed.resumed_from_step == 8
    assert resumed.val_loss == reference.val_loss and resumed.val_accuracy == reference.val_accuracy
    assert (resumed.run_dir / "val_predictions.csv").read_text() == (reference.run_dir / "val_predictions.csv").read_text()
    saved = torch.load(resumed.run_dir / "model.pt", weights_only=True)
    assert not any("output" in k or "rank" in k for k in saved["model_state"])
    assert set(saved["model_state"]) == set(build_model(cfg.validate(), 2).state_dict())
    plain = train(tiny_config(tmp_path / "plain", **RESUMABLE, init=f"lm:{backbone.path}"))
    assert plain.val_loss != reference.val_loss  # the auxiliary term changed what was learnt


def test_the_weight_is_part_of_the_run_and_checked(tmp_path, backbone):
    plain = tiny_config(tmp_path, init=f"lm:{backbone.path}")
    aux = plain.replace(lm_weight=0.5)
    assert "lm_weight" not in json.dumps(plain.identity())  # off: committed run ids unchanged
    assert len({plain.run_id(), aux.run_id(), aux.replace(lm_weight=1.0).run_id()}) == 3
    with pytest.raises(ValueError, match="lm_weight must be >= 0"):
        plain.replace(lm_weight=-1.0).validate()
    with pytest.raises(ValueError, match="needs a pre-trained backbone"):
        tiny_config(tmp_path, lm_weight=0.5).validate()
    with pytest.raises(ValueError, match="not combined"):
        aux.replace(adversarial="at", adversarial_epsilon=0.01).validate()


def test_a_backbone_without_its_output_is_one_line(tmp_path, backbone, capsys):
    ckpt = dict(load_backbone(backbone.path))
    del ckpt[LM_OUTPUT_KEY]
    old = tmp_path / "old-backbone.pt"
    torch.save(ckpt, old)
    with pytest.raises(AuxLMError, match=rf"^{re.escape(str(old))}: this backbone file has no next-token output"):
        train(tiny_config(tmp_path, init=f"lm:{old}", lm_weight=0.5))
    code = main(["train", "--loss", "ce", "--profile", "smoke", "--out", str(tmp_path / "cli"), "--init", f"lm:{old}",
                 "--set", "lm_weight=0.5", "--quiet", *[a for k, v in dict(n_layer=1, n_head=2, n_embd=32,
                                                                           block_size=64).items()
                                                        for a in ("--set", f"{k}={v}")]])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "no next-token output" in err and "pretrain" in err


def test_the_lever_arm():
    assert parse_arm("lm-0.5") == {"lm_weight": 0.5}
    assert arm_of({"lm_weight": 0.5}) == "lm-0.5" and arm_of({"lm_weight": 0.0}) == "plain"
    for bad in ("lm-0", "lm--1", "lm-x", "lm-0.5-t2"):
        with pytest.raises(ValueError, match="lm-<weight > 0>"):
            parse_arm(bad)


def test_the_objective_adds_the_weighted_language_model_loss(tmp_path, backbone, monkeypatch):
    """What each step minimises is the labels' loss (the curve's, logged every step here) plus lm_weight times the
    next-token loss: read off the tensor that is differentiated."""
    backward, aux = spy(monkeypatch, torch.Tensor, "backward"), spy(monkeypatch, AuxLM, "loss")
    result = train(tiny_config(tmp_path, init=f"lm:{backbone.path}", lm_weight=0.5, max_steps=3, eval_interval=3,
                               log_interval=1, val_limit=32))
    differentiated = [args[0].item() for args, _, _ in backward]
    lm_losses = [loss.item() for _, _, loss in aux]
    assert len(differentiated) == len(lm_losses) == 3 and min(lm_losses) > 0
    expected = result.history["train_loss"].to_numpy() + 0.5 * np.array(lm_losses)
    np.testing.assert_allclose(differentiated, expected, rtol=1e-6)


def test_one_clip_covers_the_classifier_and_the_language_model_output(tmp_path, backbone, monkeypatch):
    clipped = []
    real = torch.nn.utils.clip_grad_norm_

    def listing_clip(params, max_norm, *a, **k):  # not conftest's spy: the generator must be listed before use
        params = list(params)
        clipped.append({id(p) for p in params})
        return real(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", listing_clip)
    built, real_from = [], AuxLM.from_backbone  # the output the run builds, to know its parameters
    monkeypatch.setattr(AuxLM, "from_backbone", classmethod(lambda cls, *a: built.append(real_from(*a)) or built[-1]))
    train(tiny_config(tmp_path, init=f"lm:{backbone.path}", lm_weight=0.5, max_steps=1, eval_interval=1, val_limit=32))
    (ids,) = clipped
    assert {id(p) for p in built[0].parameters()} <= ids and len(ids) > len(list(built[0].parameters()))


def test_the_wall_time_estimate_takes_the_runs_own_steps(tmp_path, backbone, monkeypatch):
    """The estimate a study prints before it trains runs the run's own steps: whole reviews cut to random windows
    (a review longer than the block never reaches the model whole), the auxiliary loss's output forward and
    backward, and a validation pass over the windows of whole reviews."""
    from nanogpt.study import estimate

    cut = spy(monkeypatch, estimate, "random_windows")
    read = spy(monkeypatch, estimate, "expand_windows")
    aux_calls = spy(monkeypatch, AuxLM, "loss")
    cfg = tiny_config(tmp_path, init=f"lm:{backbone.path}", lm_weight=0.5, reading="windows",
                      truncation="random_window", block_size=32, max_steps=20, eval_interval=10)
    est = estimate.estimate_run_seconds(cfg.validate())
    assert est["run_seconds"] > 20 * est["step_seconds"] > 0
    assert len(cut) == len(aux_calls) == 8  # 4 batches warmed up, then 4 timed: each cut and with the LM loss
    assert all(int(r.lengths.max()) <= 32 for _, _, r in cut)  # no input over the block
    ((args, _, (split, owner)),) = read
    assert len(split) > len(args[0]) == len(set(owner.tolist()))  # more windows than reviews: whole reviews
