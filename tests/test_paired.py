"""The paired design: CE started as exactly the BCE function, and what CE's extra head row does under AdamW.

On paper (CE over (a, b) is BCE over z = b - a). With a paired head, CE's rows are r_a = -w/2 and r_b = w/2 and
its logit difference is (r_b - r_a).h = w.h, the BCE logit. The gradient CE sends to its rows is -e.h and +e.h,
where e = sigmoid(z) - y is exactly the gradient BCE sends to its one logit; so each CE row sees BCE's gradient
(up to sign), and Adam's moments of each row equal BCE's. Each row then moves by BCE's step, and their
difference, which is all the function depends on, moves by twice BCE's step: CE trains its head at twice the
learning rate. AdamW's decoupled decay shrinks each row by lr x wd, so the difference shrinks by lr x wd too,
while a BCE head at twice the learning rate would shrink by 2 lr x wd; the rows' sum, which no gradient
reaches (softmax ignores it), decays towards zero and never matters. The backbone receives e.(r_b - r_a) =
e.w in both. Hence: CE with a paired head = BCE with head_lr_scale=2 and head_weight_decay_scale=0.5, step for
step, as long as gradient clipping is off (CE's two head rows count twice in the global norm that clipping
uses). These tests check each part of that argument on real models.
"""
import pytest
import torch
from conftest import tiny_config

from nanogpt.core.losses import get_criterion
from nanogpt.data.batching import collate
from nanogpt.data.imdb import load_splits
from nanogpt.run.train import build_model, train


def _models(tmp_path, **changes):
    base = {"dropout": 0.1, **changes}
    torch.manual_seed(3)
    bce = build_model(tiny_config(tmp_path, loss="bce", seed=3, **base), 1)
    bce_rng = torch.get_rng_state()
    torch.manual_seed(3)
    ce = build_model(tiny_config(tmp_path, loss="ce", seed=3, head_init="paired", **base), 2)
    return bce, ce, bce_rng


def test_paired_models_start_as_the_same_function_and_the_same_random_stream(tmp_path):
    bce, ce, bce_rng = _models(tmp_path)
    assert torch.equal(torch.get_rng_state(), bce_rng)  # same draws: the dropout masks will match too
    backbone = {k: v for k, v in bce.state_dict().items() if not k.startswith("head")}
    assert all(torch.equal(v, ce.state_dict()[k]) for k, v in backbone.items())
    train_split, _ = load_splits(tiny_config(tmp_path))
    x, lengths, _ = collate(train_split, list(range(8)))
    bce.eval(), ce.eval()
    p_bce = get_criterion("bce").positive_probability(bce(x, lengths))
    p_ce = get_criterion("ce").positive_probability(ce(x, lengths))
    torch.testing.assert_close(p_ce, p_bce, atol=1e-6, rtol=1e-6)
    assert torch.equal(ce.head.weight.sum(0), torch.zeros_like(ce.head.weight[0]))  # rows sum to zero


def test_each_ce_row_gets_the_bce_gradient_up_to_sign(tmp_path):
    bce, ce, _ = _models(tmp_path, dropout=0.0)
    train_split, _ = load_splits(tiny_config(tmp_path))
    x, lengths, y = collate(train_split, list(range(16)))
    for model, loss in ((bce, "bce"), (ce, "ce")):
        get_criterion(loss).loss(model(x, lengths), y).backward()
    g = bce.head.weight.grad[0]
    torch.testing.assert_close(ce.head.weight.grad[1], g, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ce.head.weight.grad[0], -g, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ce.transformer.wte.weight.grad, bce.transformer.wte.weight.grad, atol=1e-7, rtol=1e-5)


def _trained_probabilities(tmp_path, grad_clip, **bce_changes):
    common = dict(max_steps=30, warmup_steps=3, eval_interval=30, grad_clip=grad_clip, precision="fp32")
    ce = train(tiny_config(tmp_path / "ce", loss="ce", head_init="paired", **common))
    bce = train(tiny_config(tmp_path / "bce", loss="bce", **common, **bce_changes))
    from nanogpt.run.predictions import load_val_predictions

    return [load_val_predictions(r.run_dir.parent.parent, r.run_id)["positive_probability"].to_numpy()
            for r in (ce, bce)]


def test_ce_with_a_paired_head_is_bce_with_twice_the_head_learning_rate(tmp_path):
    ce, bce_2x = _trained_probabilities(tmp_path, grad_clip=0.0, head_lr_scale=2.0, head_weight_decay_scale=0.5)
    assert abs(ce - bce_2x).max() < 1e-4  # 30 AdamW steps, dropout on: the same function throughout
    _, bce = _trained_probabilities(tmp_path / "plain", grad_clip=0.0)
    assert abs(ce - bce).max() > 1e-3  # while plain BCE has drifted away: the factor 2 is real


def test_with_clipping_the_equivalence_is_only_approximate(tmp_path):
    ce, bce_2x = _trained_probabilities(tmp_path, grad_clip=1.0, head_lr_scale=2.0, head_weight_decay_scale=0.5)
    assert abs(ce - bce_2x).max() < 0.05  # close, but CE's two rows count twice in the clipped norm


def test_paired_head_is_refused_for_bce():
    from nanogpt.run.config import TrainConfig

    with pytest.raises(ValueError, match="paired"):
        TrainConfig(loss="bce", head_init="paired").validate()


def test_designs_seed_each_run_and_go_seed_by_seed():
    """Each design's runs, in the order a study trains them: every arm of a seed before the next seed (a study
    stopped part-way stays balanced); the fixed design keeps the profile's split, the split-varied one draws
    the split from the seed, the paired one builds CE's head from the BCE head of the same seed."""
    from nanogpt.study.runs import RESPLIT_OFFSET, design_configs

    fixed = design_configs("smoke", "fixed", [0, 1, 2])
    assert [(c.loss, c.seed) for c in fixed] == [(loss, s) for s in (0, 1, 2) for loss in ("ce", "bce")]
    assert {c.split_seed for c in fixed} == {fixed[0].split_seed} and fixed[0].split_seed != RESPLIT_OFFSET
    resplit = design_configs("smoke", "resplit", [0, 1])
    assert [(c.loss, c.seed, c.split_seed) for c in resplit] == [
        (loss, s, RESPLIT_OFFSET + s) for s in (0, 1) for loss in ("ce", "bce")]
    paired = design_configs("smoke", "paired", [4, 5])
    assert [(c.arm(), c.seed) for c in paired] == [(a, s) for s in (4, 5) for a in ("ce-paired", "bce",
                                                                                    "bce-headlr2-headwd0.5")]
    assert [c.head_init for c in paired if c.loss == "ce"] == ["paired", "paired"]
    assert len({c.run_id() for c in paired}) == 6
