"""Pre-training (`pretrain`) and fine-tuning from its backbone (`--init lm:<checkpoint>`)."""
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_config

from nanogpt.data.imdb import load_corpus, split_indices
from nanogpt.data.tokenizer import EOT_TOKEN
from nanogpt.run import pretrain as P
from nanogpt.run.backbone import load_backbone
from nanogpt.run.checkpoints import CheckpointError
from nanogpt.run.train import build_model, train


def smoke(tmp_path, **changes) -> P.PretrainConfig:
    """lm-smoke in conftest's tiny classifier's shape (1 x 32, 2 heads, 64 positions)."""
    return P.get_pretrain_profile("lm-smoke").replace(out_dir=str(tmp_path / "results"), quiet=True, n_embd=32,
                                                      block_size=64, **changes)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """One lm-smoke backbone, whose shape is conftest's tiny classifier's (1 x 32, 2 heads, 64 positions)."""
    return P.pretrain(smoke(tmp_path_factory.mktemp("pre")))


def _review_digests(split) -> set[bytes]:
    return {hashlib.sha256(split.ids(i).tobytes()).digest() for i in range(len(split))}


def test_no_validation_review_is_ever_read_in_pretraining():
    cfg = P.get_pretrain_profile("lm-cpu")
    corpus = P.lm_corpus(cfg)
    everything = load_corpus(cfg.source, P.WHOLE, "head")["all"]
    train_idx, val_idx = split_indices(everything.labels, cfg.split_seed, cfg.val_fraction)
    # by row number: the stream's reviews are exactly the training split's, none of the validation split's
    assert np.array_equal(np.sort(corpus.review_ids), np.sort(train_idx))
    assert not set(corpus.review_ids.tolist()) & set(val_idx.tolist())
    # by content: the stream is those reviews whole, each closed by EOT, and no validation text is among them
    train, val = everything.take(corpus.review_ids), everything.take(val_idx)
    assert len(corpus.stream) == len(train.tokens) + len(train)
    ends = np.cumsum(train.lengths + 1) - 1
    assert (corpus.stream[ends] == EOT_TOKEN).all()
    assert np.array_equal(np.delete(corpus.stream, ends), train.tokens.astype(np.int64))
    assert not _review_digests(train) & _review_digests(val)
    # the ranks are a permutation of the vocabulary, most frequent training token first
    assert np.array_equal(np.sort(corpus.rank), np.arange(len(corpus.rank)))
    assert corpus.rank[np.bincount(corpus.stream).argmax()] == 0


def test_unlabelled_reviews_join_the_stream_but_no_copy_of_a_labelled_one(monkeypatch, tmp_path):
    """--unlabelled (the Hub's unsupervised split; here a stand-in, the tests are offline): the unlabelled reviews
    follow the training reviews in the stream, each closed by EOT, less any that repeats a labelled review (here
    a validation review), and the backbone gets another id."""
    from nanogpt.data import imdb as D
    from nanogpt.data.tokens import tokenize_texts

    cfg = smoke(tmp_path, unlabelled=True)
    _, labelled, _, _ = D.deduplicated_reviews(cfg.source)
    everything = load_corpus(cfg.source, P.WHOLE, "head")["all"]
    _, val_idx = split_indices(everything.labels, cfg.split_seed, cfg.val_fraction)
    new = ["A brand new unlabelled review of a film nobody saw.", "Another one. <br /><br />Never seen before."]
    monkeypatch.setattr(D, "read_unlabelled_reviews", lambda: [new[0], labelled["text"].iloc[val_idx[0]], new[1]])
    corpus, plain = P.lm_corpus(cfg), P.lm_corpus(cfg.replace(unlabelled=False))
    assert (corpus.n_unlabelled, corpus.unlabelled_dropped) == (2, 1)
    extra = P._joined(tokenize_texts(new, None, P.WHOLE, "head"))
    assert np.array_equal(corpus.stream, np.concatenate([plain.stream, extra])) and extra[-1] == EOT_TOKEN
    assert np.array_equal(corpus.review_ids, plain.review_ids)  # the labelled reviews read are the same
    assert cfg.backbone_id() != cfg.replace(unlabelled=False).backbone_id()
    # off, the new field leaves the ids of the committed backbones (trained before it existed) as they were
    assert P.get_pretrain_profile("lm-cpu").replace(precision="fp32").backbone_id() == "lm-cpu-seed0-dcc21f00"
    # without a network: one error that says what to do
    monkeypatch.undo()
    monkeypatch.setattr(D.datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(ConnectionError, match="unlabelled reviews.*Fix: pre-train without unlabelled=True"):
        P.lm_corpus(cfg)


def test_window_batches_depend_on_seed_and_step_only():
    stream = np.arange(1000, dtype=np.int64)
    a = P.window_batch(stream, 3, 7, 4, 16)
    assert a.shape == (4, 17) and torch.equal(a, P.window_batch(stream, 3, 7, 4, 16))
    assert (a[:, 1:] - a[:, :-1] == 1).all()  # contiguous windows: the target is the next token
    assert not torch.equal(a, P.window_batch(stream, 3, 8, 4, 16))
    with pytest.raises(ValueError, match="fewer than one window"):
        P.window_batch(stream[:10], 0, 0, 2, 16)


def test_pretraining_learns_and_writes_a_self_describing_backbone(backbone):
    hist = backbone.history
    assert hist["val_perplexity"].iloc[-1] < hist["val_perplexity"].iloc[0] < 50257 * 1.5
    assert hist["val_perplexity"].iloc[-1] < 5000  # a uniform guess over the vocabulary is 50,257
    ckpt = load_backbone(backbone.path)
    assert ckpt["backbone_id"] == backbone.backbone_id
    assert all(k.startswith("transformer.") for k in ckpt["backbone_state"])
    assert ckpt["model_config"]["n_embd"] == 32 and ckpt["model_config"]["block_size"] == 64
    assert ckpt["data"]["split_seed"] == 1337 and ckpt["data"]["n_reviews"] == 400
    assert ckpt["data"]["tokenizer"]["name"] == "gpt2"
    folder = backbone.path.parent
    assert {p.name for p in folder.iterdir()} == {"backbone.pt", "history.csv", "meta.json"}  # no state left
    rows = pd.read_csv(folder.parent.parent / "backbones.csv")
    assert rows["backbone_id"].tolist() == [backbone.backbone_id] and rows["steps"].iloc[0] == 30
    again = P.pretrain(smoke(folder.parent.parent.parent))  # finished: returned as it is, not retrained
    assert again.path == backbone.path and again.val_perplexity == backbone.val_perplexity


def test_interrupted_pretraining_resumes_to_the_same_backbone(tmp_path, backbone, monkeypatch):
    cfg = smoke(tmp_path, checkpoint_interval=5)
    real = P.window_batch

    def interrupt(stream, seed, step, *a):
        if step == 17:
            raise KeyboardInterrupt
        return real(stream, seed, step, *a)

    monkeypatch.setattr(P, "window_batch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        P.pretrain(cfg)
    state = tmp_path / "results" / "backbones" / cfg.backbone_id() / "state.pt"
    assert state.is_file() and torch.load(state, weights_only=True)["step"] == 15
    monkeypatch.setattr(P, "window_batch", real)
    again = P.pretrain(cfg)
    assert again.resumed_from_step == 15 and backbone.resumed_from_step == 0  # from the state, not step 0
    assert json.loads((again.path.parent / "meta.json").read_text())["resumed_from_step"] == 15
    resumed = load_backbone(again.path)
    first = load_backbone(backbone.path)
    for k, v in first["backbone_state"].items():
        assert torch.equal(v, resumed["backbone_state"][k]), k
    numbers = ("step", "tokens", "train_loss", "val_loss")  # not the wall-clock fields
    assert [[h[k] for k in numbers] for h in resumed["history"]] == [[h[k] for k in numbers] for h in first["history"]]


def test_fine_tuning_starts_from_the_backbone_with_the_scratch_head(tmp_path, backbone):
    cfg = tiny_config(tmp_path, init=f"lm:{backbone.path}")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.validate(), 2)
    torch.manual_seed(cfg.seed)
    scratch = build_model(tiny_config(tmp_path).validate(), 2)
    state = load_backbone(backbone.path)["backbone_state"]
    for k, v in model.state_dict().items():
        if k.startswith("transformer."):
            assert torch.equal(v, state[k]), k
        else:
            assert torch.equal(v, scratch.state_dict()[k]), k  # the head: what a scratch run of the seed draws
    result = train(cfg)
    row = result.row
    assert row["init"] == f"lm:{backbone.backbone_id}" and row["arm"] == "ce-lm"
    assert result.run_id != train(tiny_config(tmp_path)).run_id


def test_the_run_id_names_the_backbone_by_content(tmp_path, backbone):
    moved = tmp_path / "elsewhere" / "b.pt"
    moved.parent.mkdir()
    shutil.copy(backbone.path, moved)
    a = tiny_config(tmp_path, init=f"lm:{backbone.path}").run_id()
    assert tiny_config(tmp_path, init=f"lm:{moved}").run_id() == a
    ckpt = torch.load(moved, weights_only=True)
    ckpt["backbone_state"]["transformer.ln_f.bias"] += 1.0
    torch.save(ckpt, moved)
    assert tiny_config(tmp_path, init=f"lm:{moved}").run_id() != a


@pytest.mark.parametrize("change, message", [
    ({"n_embd": 64, "n_head": 2}, "n_embd 64"),
    ({"n_layer": 2}, "n_layer 2"),
    ({"block_size": 128}, "block_size 128"),
    ({"split_seed": 7}, "reviews this run would be scored on"),
])
def test_a_backbone_that_does_not_fit_is_one_clear_error(tmp_path, backbone, change, message):
    cfg = tiny_config(tmp_path, init=f"lm:{backbone.path}", **change).validate()
    with pytest.raises(ValueError, match=rf"^The backbone {re.escape(str(backbone.path))} does not fit this run: "
                                         rf".*{message}"):
        build_model(cfg, 2)


def test_a_smaller_block_takes_the_first_positions(tmp_path, backbone):
    model = build_model(tiny_config(tmp_path, init=f"lm:{backbone.path}", block_size=32).validate(), 1)
    wpe = load_backbone(backbone.path)["backbone_state"]["transformer.wpe.weight"]
    assert torch.equal(model.transformer.wpe.weight, wpe[:32])


def test_what_is_not_a_backbone_is_refused(tmp_path, tiny_run):
    junk = tmp_path / "junk.pt"
    torch.save({"format": "something else", "weights": torch.zeros(2)}, junk)
    with pytest.raises(CheckpointError, match="is not a backbone .* nor a classifier of this project"):
        load_backbone(junk)
    with pytest.raises(FileNotFoundError, match="pre-train one"):
        tiny_config(tmp_path, init="lm:/nowhere/backbone.pt").run_id()
    with pytest.raises(ValueError, match="lm:<backbone checkpoint>"):
        tiny_config(tmp_path, init="bert").validate()


def test_backbone_learning_rate_scale_reaches_the_optimiser(tmp_path):
    model = build_model(tiny_config(tmp_path).validate(), 1)
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.98), "cpu", backbone_lr_scale=0.25)
    head = {id(p) for p in model.head.parameters()}
    for group in opt.param_groups:
        in_head = all(id(p) in head for p in group["params"])
        assert group["lr_scale"] == (1.0 if in_head else 0.25)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_pretrain_command_line(tmp_path, capsys):
    """In-process (the entry point itself is tested in test_cli): refusals, a backbone, fine-tuning from it."""
    from nanogpt.__main__ import main

    def run(*args):
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    code, _, err = run("pretrain", "--profile", "lm-smoke", "--set", "nope=1", "--out", str(tmp_path))
    assert code == 2 and "no such setting" in err
    code, _, err = run("pretrain", "--profile", "lm-huge")
    assert code == 2 and "lm-cpu" in err
    code, out, err = run("pretrain", "--profile", "lm-smoke", "--steps", "6", "--set", "eval_interval=3", "--quiet",
                         "--out", str(tmp_path))
    assert code == 0, err
    made = json.loads(out.strip().splitlines()[-1])
    assert made["init"].startswith("lm:") and made["tokens"] == 6 * 8 * 128
    code, _, err = run("train", "--loss", "bce", "--profile", "smoke", "--init", made["init"], "--steps", "4", "--set",
                       "train_limit=64", "--set", "val_limit=64", "--set", "eval_interval=4", "--quiet", "--out",
                       str(tmp_path))
    assert code == 0, err  # lm-smoke has the smoke classifier's shape
    code, _, err = run("train", "--loss", "ce", "--profile", "smoke", "--init", "lm:/nowhere.pt", "--out",
                       str(tmp_path))
    assert code == 1 and "no backbone checkpoint" in err


def test_pretraining_logged_to_a_file_is_lines_not_redraws(tmp_path, capsys):
    """Off a terminal (here: pytest's captured stderr) the bar is a line every few seconds, not tqdm's redraws."""
    P.pretrain(smoke(tmp_path, max_steps=6, eval_interval=3).replace(quiet=False))
    err = capsys.readouterr().err
    assert "\r" not in err and 1 <= len(err.splitlines()) <= 3, err[:500]
    assert err.splitlines()[-1].startswith("pretrain seed 0: 6/6 steps")

# ----------------------------------------------------------------------------------- the study's analysis


def _rows(spec):
    """Synthetic finished rows: (init, loss, seed, accuracy, backbone_lr_scale)."""
    from nanogpt.run.config import TrainConfig

    rows = []
    for init, loss, seed, acc, scale in spec:
        cfg = json.dumps({**TrainConfig().__dict__, "backbone_lr_scale": scale, "init": init})
        rows.append({"run_id": f"{init}-{loss}-{seed}-{scale}", "loss": loss, "seed": seed, "val_accuracy": acc,
                     "init": init, "config": cfg, "train_seconds": 120.0, "split_seed": 1337})
    return pd.DataFrame(rows)


def test_the_comparison_keeps_the_study_recipe_only():
    from nanogpt.study.pretrain_study import of_recipe

    runs = _rows([("scratch", "ce", 0, 0.87, 1.0), ("scratch", "ce", 1, 0.86, 0.25),
                  ("lm:b0", "ce", 0, 0.88, 1.0), ("lm:b0", "ce", 0, 0.89, 0.25)])
    kept = of_recipe(runs, {"backbone_lr_scale": 0.25})
    assert sorted(zip(kept["start"], kept["val_accuracy"])) == [("pre-trained", 0.89), ("scratch", 0.87)]


def test_the_final_recipe_keeps_its_runs_apart_and_asks_plan_3s_seeds(tmp_path, monkeypatch, capsys):
    """ft-long-lm (plan 3's recipe: ft-long with the auxiliary language-model loss at 0.5): its pre-trained runs are
    not ft-long's, nor ft-long's runs its own; the command line hands notebook 06 its backbones, its fine-tuning
    and CE seeds 0-4 on every backbone, while ft-long keeps one seed there."""
    from nanogpt.__main__ import main
    from nanogpt.study import runs as study_runs
    from nanogpt.study.pretrain_study import get_recipe, of_recipe

    runs = _rows([("lm:b0", "ce", 0, 0.89, 0.25), ("lm:b0", "ce", 0, 0.90, 0.25), ("scratch", "ce", 0, 0.87, 1.0)])
    windows = {"reading": "windows", "truncation": "random_window"}
    runs["config"] = [json.dumps({**json.loads(c), **extra}) for c, extra in
                      zip(runs["config"], ({**windows, "lm_weight": 0.0}, {**windows, "lm_weight": 0.5}, {}))]
    for recipe, accuracy in (("ft-long", 0.89), ("ft-long-lm", 0.90)):
        kept = of_recipe(runs, get_recipe(recipe)["finetune"])
        assert sorted(zip(kept["start"], kept["val_accuracy"])) == [("pre-trained", accuracy), ("scratch", 0.87)]
    handed = {}

    def notebook(profile, pretrain_profile, seeds, backbones, source, out, *args, name, **kwargs):
        handed[name] = {"backbones": backbones, **kwargs}
        (Path(out) / f"pretraining-{name}.json").write_text(json.dumps({"verdict": []}))
        return Path(out) / "06.ipynb"

    monkeypatch.setattr(study_runs, "run_pretraining_notebook", notebook)
    said = {}
    for recipe in ("ft-long", "ft-long-lm"):
        assert main(["study", "--pretraining", "--recipe", recipe, "--out", str(tmp_path)]) == 0
        said[recipe] = capsys.readouterr().out
    # the plan's recipe ends with the plan's answer (here: its runs are not in the folder yet); the others do not
    assert "plan 3: " in said["ft-long-lm"] and "no 'ft' runs fine-tuned with this recipe" in said["ft-long-lm"]
    assert "plan 3" not in said["ft-long"].lower()
    final, long = handed["ft-long-lm"], handed["ft-long"]
    assert final["variance_seeds"] == [0, 1, 2, 3, 4] and long["variance_seeds"] == [0]
    assert final["backbones"] == long["backbones"] == [0, 1, 2]
    assert final["pretrain_overrides"] == long["pretrain_overrides"] == {"max_steps": 8000}  # the same backbones
    assert final["finetune"] == {**long["finetune"], "lm_weight": 0.5}
    # read back before its runs exist (the committed results hold ft-long's backbones and scratch runs, none of
    # its own): one clear "not yet" for notebook 06, and the bench passes over it to the studies that are here
    from nanogpt.bench import pretraining_section
    from nanogpt.core.resources import REPO_ROOT
    from nanogpt.study.pretrain_study import stored_pretraining

    with pytest.raises(FileNotFoundError, match="no 'ft' runs fine-tuned with this recipe"):
        stored_pretraining(REPO_ROOT / "results", "ft", "lm-cpu", final["finetune"], final["pretrain_overrides"])
    shown = []
    out = pretraining_section(lambda label, text: shown.append(f"{label}: {text}"), quick=True)
    assert set(out["pretraining_compute"]) == {"ft", "ft-long"}
    assert any(line.startswith("pre-training ft-long-lm: skipped") for line in shown), shown


def test_fewer_positions_make_the_positions_curve_not_the_comparison():
    from nanogpt.run.profiles import get_profile
    from nanogpt.study.pretrain_study import of_recipe, pretraining_positions

    block = get_profile("ft").config.block_size
    runs = _rows([("lm:b0", "ce", 0, 0.89, 0.25), ("lm:b0", "ce", 0, 0.88, 0.25), ("lm:b0", "ce", 0, 0.86, 0.25),
                  ("lm:b0", "ce", 0, 0.80, 1.0), ("lm:b1", "ce", 0, 0.90, 0.25), ("lm:b0", "bce", 0, 0.9, 0.25)])
    blocks = [block, block // 2, block // 4, block // 2, block // 2, block]
    runs["config"] = [json.dumps({**json.loads(c), "block_size": b}) for c, b in zip(runs["config"], blocks)]
    runs["run_id"] = [f"r{i}" for i in range(len(runs))]
    runs["profile"] = "ft"
    kept = of_recipe(runs, {"backbone_lr_scale": 0.25})
    assert kept["run_id"].tolist() == ["r0", "r5"]  # the profile's block only (rows of "ft" compare with it)
    curve = pretraining_positions(runs, "b0", "ce", 0, {"backbone_lr_scale": 0.25})
    assert curve["block_size"].tolist() == [block // 4, block // 2, block]  # not b1, not BCE, not another rate
    assert curve["accuracy"].tolist() == pytest.approx([86.0, 88.0, 89.0])
    assert curve["train_minutes"].tolist() == pytest.approx([2.0] * 3)


def test_report_numbers_against_hand_computed_ones():
    from nanogpt.study.analysis import load_plan
    from nanogpt.study.pretrain_study import difference_of_differences, pretraining_report, pretraining_verdict

    rng = np.random.default_rng(0)
    spec = []
    for seed in range(6):
        spec += [("scratch", "ce", seed, 0.86 + rng.normal(0, 0.004), 1.0),
                 ("scratch", "bce", seed, 0.86 + rng.normal(0, 0.004), 1.0),
                 ("lm:b0", "ce", seed, 0.89 + rng.normal(0, 0.004), 1.0),
                 ("lm:b0", "bce", seed, 0.89 + rng.normal(0, 0.004), 1.0)]
    spec += [("lm:b1", "ce", 0, 0.885, 1.0), ("lm:b2", "ce", 0, 0.895, 1.0)]
    runs = _rows(spec)
    backbones = pd.DataFrame({"backbone_id": ["b0", "b1", "b2"], "train_seconds": [1800.0] * 3,
                              "val_perplexity": [150.0] * 3, "tokens": [16_384_000] * 3, "precision": ["fp32"] * 3})
    report = pretraining_report(runs, backbones, 0.9074, "ce", load_plan())
    acc = runs.assign(p=runs["val_accuracy"] * 100)
    sc = acc[(acc["init"] == "scratch") & (acc["loss"] == "ce")]["p"]
    pc = acc[(acc["init"] == "lm:b0") & (acc["loss"] == "ce")]["p"]
    assert report["arms"]["pre-trained/ce"]["mean"] == pytest.approx(pc.mean())
    assert report["lift"]["ce"]["diff"] == pytest.approx(pc.mean() - sc.mean())
    assert report["lift"]["ce"]["ci_low"] > 0  # 3 points of lift at sd 0.4 is detected
    assert report["variance"]["n_backbones"] == 3
    assert report["variance"]["sd_over_backbones"] == pytest.approx(np.std([pc.iloc[0], 88.5, 89.5], ddof=1))
    assert report["beats_baseline"] == {"ce": False, "bce": False}
    # the change of the gap: an exact zero-noise case
    d = difference_of_differences([1, 2, 3], [0, 1, 2], [5, 6, 7], [3, 4, 5])
    assert d["diff"] == pytest.approx(1.0) and d["ci_low"] < 1 < d["ci_high"]
    assert any(s.startswith("CE: ") for s in pretraining_verdict(report))
    # backbones that agree exactly (tiny models, few reviews) give an sd of 0, and still a verdict
    lm_ce = runs["init"].str.startswith("lm:") & (runs["loss"] == "ce")
    same = runs.assign(val_accuracy=np.where(lm_ce, 0.885, runs["val_accuracy"]))
    flat = pretraining_report(same, backbones, 0.9074, "ce", load_plan())
    assert flat["variance"]["sd_over_backbones"] == 0.0 and flat["variance"]["sd_over_finetune_seeds"] == 0.0
    assert "sd_ratio" not in flat["variance"]
    assert any("over 3 backbones: sd 0.00 points, against 0.00" in s for s in pretraining_verdict(flat))


def test_compute_table_charges_the_backbone_whole_and_shared():
    from nanogpt.bench import pretraining_section
    from nanogpt.study.pretrain_study import compute_table

    runs = _rows([("scratch", "ce", 0, 0.86, 1.0), ("scratch", "ce", 1, 0.88, 1.0),
                  ("lm:b0", "ce", 0, 0.89, 1.0), ("lm:b0", "ce", 1, 0.91, 1.0), ("lm:b0", "bce", 0, 0.90, 1.0),
                  ("scratch", "bce", 0, 0.85, 1.0), ("lm:b1", "ce", 0, 0.70, 1.0)])  # b1: not the primary
    backbones = pd.DataFrame({"backbone_id": ["b0", "b1"], "train_seconds": [1800.0, 1800.0]})
    t = compute_table(runs, backbones).set_index(["start", "loss"])
    pc, sc = t.loc[("pre-trained", "ce")], t.loc[("scratch", "ce")]
    assert pc["runs"] == 2 and pc["accuracy"] == pytest.approx(90.0) and sc["accuracy"] == pytest.approx(87.0)
    assert pc["total_minutes"] == pytest.approx(2 + 30) and sc["total_minutes"] == pytest.approx(2)
    assert pc["shared_minutes"] == pytest.approx(2 + 30 / 3)  # b0 served three runs
    assert pc["points_per_extra_minute"] == pytest.approx(3 / 30)
    assert pc["points_per_extra_minute_shared"] == pytest.approx(3 / 10)
    assert np.isnan(sc["points_per_extra_minute"])
    shown = []
    out = pretraining_section(lambda label, text: shown.append(label + text), quick=True,
                              results_dir=Path("/nonexistent-results"))
    assert out == {"pretraining_compute": None} and "skipped" in shown[0] and "study --pretraining" in shown[0]


def test_budget_backbones_stay_out_of_the_study_and_make_the_curve(tmp_path):
    from nanogpt.study.pretrain_study import pretraining_budget, stored_backbones

    base = P.get_pretrain_profile("lm-cpu")
    made = [("b0", base), ("b1", base.replace(seed=1)), ("short", base.replace(max_steps=500)),
            ("wide", base.replace(n_embd=256)), ("local", base.replace(out_dir="elsewhere", quiet=True))]
    pd.DataFrame([{"backbone_id": name, "profile": "lm-cpu", "seed": c.seed, "steps": c.max_steps,
                   "tokens": c.max_steps * c.batch_size * c.block_size, "val_perplexity": 100.0,
                   "train_seconds": 60.0 * c.max_steps / 100, "config": json.dumps(c.__dict__)} for name, c in made]
                 ).to_csv(tmp_path / "backbones.csv", index=False)
    stored = stored_backbones(tmp_path, "lm-cpu").set_index("backbone_id")["differs"].to_dict()
    assert stored == {"b0": (), "local": (), "short": ("max_steps",), "b1": (), "wide": ("n_embd",)}
    assert stored_backbones(tmp_path, "lm-cpu", {"max_steps": 500}).set_index("backbone_id").loc["short", "differs"] == ()
    runs = _rows([("scratch", "ce", 0, 0.87, 1.0), ("lm:b0", "ce", 0, 0.89, 0.25), ("lm:short", "ce", 0, 0.88, 0.25),
                  ("lm:wide", "ce", 0, 0.95, 0.25), ("lm:b0", "ce", 1, 0.90, 0.25), ("lm:b0", "bce", 0, 0.9, 0.25)])
    curve = pretraining_budget(runs, stored_backbones(tmp_path, "lm-cpu"))
    assert curve["backbone_id"].tolist() == ["", "short", "b0"]  # scratch, 500 steps, 2,000; not the wider one
    assert curve["accuracy"].tolist() == pytest.approx([87.0, 88.0, 89.0])
    assert curve["total_minutes"].tolist() == pytest.approx([2.0, 2.0 + 5.0, 2.0 + 20.0])


def test_short_inputs_and_length_buckets():
    from nanogpt.study.probe import first_sentences, probe_accuracy

    assert first_sentences("Great film!<br /><br />I loved it. The end was weak.") == "Great film! I loved it."
    assert first_sentences("No full stop at all") == "No full stop at all"
    texts = ["good " * 50, "bad " * 150, "fine " * 500]
    table = probe_accuracy([1, 0, 1], {"m": np.array([0.9, 0.8, 0.7])}, texts)
    assert table.loc["m", "all"] == pytest.approx(200 / 3)
    assert table.loc["m", "<= 100 words"] == 100 and table.loc["m", "101-200"] == 0 and table.loc["m", "> 400"] == 100
    assert np.isnan(table.loc["m", "201-400"])  # an empty bucket is no accuracy, not 0


def test_a_file_of_ones_own_may_start_from_an_imdb_backbone(tmp_path, backbone):
    """The backbone read IMDB's training texts; a user's file is other data, so it may start from it (the data and
    split checks guard the IMDB runs' validation reviews), while a wrong shape is still refused."""
    from conftest import separable_csv

    source = separable_csv(tmp_path / "mine.csv", n=200)
    cfg = tiny_config(tmp_path, init=f"lm:{backbone.path}", source=source, train_limit=None, val_limit=None,
                      split_seed=7)
    model = build_model(cfg.validate(), 2)  # no error: loads
    state = load_backbone(backbone.path)["backbone_state"]
    assert torch.equal(model.state_dict()["transformer.h.0.attn.c_attn.weight"],
                       state["transformer.h.0.attn.c_attn.weight"])
    with pytest.raises(ValueError, match="does not fit this run: n_embd 64"):
        build_model(cfg.replace(n_embd=64, n_head=2).validate(), 2)
    with pytest.raises(ValueError, match="does not fit this run: split"):  # IMDB itself, another split: refused
        build_model(tiny_config(tmp_path, init=f"lm:{backbone.path}", split_seed=7).validate(), 2)


def test_a_run_starts_from_a_finished_classifier_with_a_fresh_head(tmp_path, tiny_run):
    """`--init lm:<a run's model.pt>`: the classifier's transformer, the head a scratch run of the seed draws; the
    row names the classifier, the run id its content; a BCE run from a CE classifier is fine (the head is new)."""
    ckpt = torch.load(tiny_run["ce"].checkpoint, weights_only=True)
    cfg = tiny_config(tmp_path, init=f"lm:{tiny_run['ce'].checkpoint}", loss="bce", seed=3)
    torch.manual_seed(3)
    model = build_model(cfg.validate(), 1)
    torch.manual_seed(3)
    scratch = build_model(tiny_config(tmp_path, loss="bce", seed=3).validate(), 1)
    for k, v in model.state_dict().items():
        want = ckpt["model_state"][k] if k.startswith("transformer.") else scratch.state_dict()[k]
        assert torch.equal(v, want), k
    start = load_backbone(tiny_run["ce"].checkpoint)
    assert start["backbone_id"].startswith("classifier-model-") and start["from_classifier"]
    result = train(cfg.replace(max_steps=6))
    assert result.row["init"] == f"lm:{start['backbone_id']}" and result.row["arm"] == "bce-lm"
    other = tiny_config(tmp_path, init=f"lm:{tiny_run['bce'].checkpoint}", loss="bce", seed=3)
    assert other.run_id() != cfg.replace(max_steps=6).run_id() != tiny_config(tmp_path, loss="bce", seed=3).run_id()
    # what it was trained on is checked as a backbone's reading is: another split of IMDB is refused
    with pytest.raises(ValueError, match="does not fit this run: split"):
        build_model(cfg.replace(split_seed=7).validate(), 1)
    # it has no next-token output: the auxiliary loss says so in one line
    from nanogpt.run.auxlm import AuxLM, AuxLMError

    with pytest.raises(AuxLMError, match="is a classifier: it has no next-token output"):
        AuxLM.from_backbone(start, tiny_run["ce"].checkpoint)


def test_a_run_starts_from_a_safetensors_export_and_from_the_shipped_model(tmp_path, tiny_run, monkeypatch, capsys):
    """The shipped model (fp16 safetensors) as a start: its transformer in fp32; `--init shipped` names it, and
    says in one line when no model is shipped."""
    from nanogpt.__main__ import main
    from nanogpt.cli import UsageError, init_of
    from nanogpt.run.checkpoints import load_checkpoint
    from nanogpt.serve import shipped

    shipped.ship(tiny_run["ce"].run_dir, tmp_path / "models")
    path = tmp_path / "models" / "imdb-gpt.safetensors"
    exported = load_checkpoint(path)["model_state"]
    model = build_model(tiny_config(tmp_path, init=f"lm:{path}").validate(), 2)
    for k, v in model.state_dict().items():
        if k.startswith("transformer."):
            assert v.dtype == torch.float32 and torch.equal(v, exported[k].float()), k
    monkeypatch.setattr(shipped, "shipped_model", lambda: None)
    with pytest.raises(UsageError, match="--init shipped: no model is shipped in"):
        init_of("shipped")
    assert main(["train", "--loss", "ce", "--profile", "smoke", "--init", "shipped", "--out", str(tmp_path / "r")]) == 2
    assert "--init shipped: no model is shipped" in capsys.readouterr().err
    monkeypatch.setattr(shipped, "shipped_model", lambda: path)
    assert init_of("shipped") == f"lm:{path}" and init_of("scratch") == "scratch"


def test_a_file_cut_from_the_reviews_a_start_has_read_is_refused(tmp_path, tiny_run, backbone):
    """A user's file whose validation texts begin as the start's training reviews do (notebook 07's demo file is
    first sentences of training reviews) would be scored on what the start has read: one clear error, naming
    labels for a classifier; a file from IMDB's validation part starts as before."""
    from nanogpt.data.imdb import load_imdb
    from nanogpt.study.probe import first_sentences

    dsd = load_imdb()
    for name, split in (("read", "train"), ("unread", "validation")):
        part = dsd[split].to_pandas().head(400)
        pd.DataFrame({"text": part["text"].map(first_sentences), "label": part["label"]}).to_csv(
            tmp_path / f"{name}.csv", index=False)
    for start, what in ((tiny_run["ce"].checkpoint, "texts and labels"), (backbone.path, "texts")):
        cfg = tiny_config(tmp_path, init=f"lm:{start}", source=str(tmp_path / "read.csv"), train_limit=None,
                          val_limit=None, split_seed=7)
        with pytest.raises(ValueError, match=rf"does not fit this run: \d+ of this file's \d+ validation texts begin "
                                             rf"as bundled training reviews do, whose {what} it has read.*"
                                             "Fix: make the file from IMDB's validation part"):
            build_model(cfg.validate(), 1)
        build_model(cfg.replace(source=str(tmp_path / "unread.csv")).validate(), 1)  # no error


def test_a_file_of_ones_own_starts_from_the_shipped_model_unless_it_has_read_the_files_texts(
        tmp_path, tiny_run, monkeypatch, capsys):
    """Without --init, a run on a file of one's own starts from the shipped model's transformer (the body at a
    quarter of the learning rate unless --set names it) where one is shipped and fits the run; from random weights,
    saying why, where none is shipped or the file was cut from the reviews it trained on."""
    from nanogpt.__main__ import main
    from nanogpt.data.imdb import load_imdb
    from nanogpt.run.backbone import load_backbone
    from nanogpt.serve import shipped
    from nanogpt.study.probe import first_sentences

    dsd = load_imdb()
    for name, split in (("read", "train"), ("unread", "validation")):
        part = dsd[split].to_pandas().head(400)
        pd.DataFrame({"text": part["text"].map(first_sentences), "label": part["label"]}).to_csv(
            tmp_path / f"{name}.csv", index=False)
    cfg = tiny_config(tmp_path, source=str(tmp_path / "unread.csv"), train_limit=None, val_limit=None, split_seed=7)
    monkeypatch.setattr(shipped, "shipped_model", lambda: None)
    assert shipped.default_start(cfg) == ({}, "start: random weights (no model is shipped in models/; --init lm:PATH "
                                       "names a start)")
    shipped.ship(tiny_run["ce"].run_dir, tmp_path / "models")
    path = tmp_path / "models" / "imdb-gpt.safetensors"
    monkeypatch.setattr(shipped, "shipped_model", lambda: path)
    changes, line = shipped.default_start(cfg)
    assert changes == {"init": f"lm:{path}", "backbone_lr_scale": 0.25}
    assert line.startswith("start: the shipped model's transformer (imdb-gpt.safetensors")
    assert shipped.default_start(cfg, {"backbone_lr_scale": 1.0})[0] == {"init": f"lm:{path}"}
    changes, line = shipped.default_start(cfg.replace(source=str(tmp_path / "read.csv")))
    assert changes == {} and re.match(r"start: random weights, not the shipped model \(\d+ of this file's 80 "
                                      r"validation texts begin as bundled training reviews do", line)
    assert shipped.default_start(cfg.replace(n_embd=64))[0] == {}  # a shape it does not have: random weights
    # the command: the shipped start, named in the run's row
    tiny = [f"{k}={v}" for k, v in dict(n_layer=1, n_head=2, n_embd=32, block_size=64, epochs=1, gelu="none").items()]
    out = tmp_path / "r"
    assert main(["train", "--loss", "bce", "--source", str(tmp_path / "unread.csv"), "--out", str(out), "--quiet",
                 *[a for s in tiny for a in ("--set", s)]]) == 0
    assert "start: the shipped model's transformer" in capsys.readouterr().out
    row = pd.read_csv(out / "runs.csv").iloc[0]
    assert row["init"] == "lm:" + load_backbone(path)["backbone_id"]
    assert json.loads(row["config"])["backbone_lr_scale"] == 0.25
