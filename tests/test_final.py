"""Plan 3's final comparison (study/final.py): the endpoint per loss against hand-computed numbers (each backbone
counts once), churn within and between backbones, the run to ship, and the whole report from a results folder."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nanogpt.study import final as F

BAR = 91.85


def _runs(spec):
    """(loss, backbone, seed, accuracy in points) -> pre-trained rows as stored_pretraining returns them."""
    return pd.DataFrame([{"run_id": f"{b}-{loss}-{s}", "loss": loss, "backbone": b, "seed": s,
                          "val_accuracy": acc / 100, "start": "pre-trained"} for loss, b, s, acc in spec])


RUNS = _runs([("ce", "b0", 0, 91.0), ("ce", "b0", 1, 92.0), ("ce", "b1", 0, 92.5), ("ce", "b1", 1, 92.5),
              ("ce", "b2", 0, 93.0), ("bce", "b0", 0, 91.0), ("bce", "b0", 1, 91.5), ("bce", "b0", 2, 92.0)])
ORDER = ["b0", "b1", "b2"]


def test_the_endpoint_counts_each_backbone_once_and_bounds_it_from_below():
    e = F.endpoint(RUNS, ORDER, BAR)
    ce, bce = e["ce"], e["bce"]
    # CE: backbone means 91.5, 92.5, 93.0 -> 92.333 (the five runs' own mean would be 92.2); sd 0.76376, t(0.95, 2)
    assert ce["mean"] == pytest.approx(92.33333, abs=1e-4) and ce["unit"] == "backbone means"
    assert (ce["n"], ce["runs"], ce["backbones"]) == (3, 5, ORDER)
    assert ce["per_backbone"] == pytest.approx({"b0": 91.5, "b1": 92.5, "b2": 93.0})
    assert ce["lower_bound"] == pytest.approx(92.33333 - 2.919986 * 0.763763 / 3 ** 0.5, abs=1e-4)  # 91.046
    assert ce["goal_met"] and not ce["clearly_above"] and ce["margin"] == pytest.approx(0.48333, abs=1e-4)
    # BCE: one backbone, so its fine-tuning seeds: 91.5, sd 0.5 -> 90.657
    assert bce["unit"] == "fine-tuning seeds of one backbone" and (bce["n"], bce["runs"]) == (3, 3)
    assert bce["mean"] == pytest.approx(91.5) and bce["lower_bound"] == pytest.approx(90.65707, abs=1e-4)
    assert not bce["goal_met"] and not bce["clearly_above"]
    assert F.endpoint(RUNS, ORDER, 90.0)["ce"]["clearly_above"]  # the bound 91.05 is above 90


def test_churn_within_and_between_backbones_by_hand():
    labels = np.array([[1, 1, 0, 0], [1, 1, 0, 1], [0, 1, 0, 0], [0, 0, 1, 1]])
    c = F.churn_by_backbone(labels, ["a", "a", "b", "b"])
    # within: (0,1) 1/4, (2,3) 3/4 -> 50%; between: (0,2) 1/4, (0,3) 1, (1,2) 2/4, (1,3) 3/4 -> 62.5%
    assert (c["within_backbone"], c["between_backbones"]) == (pytest.approx(50.0), pytest.approx(62.5))
    assert (c["within_pairs"], c["between_pairs"]) == (2, 4) and c["ratio"] == pytest.approx(1.25)
    with pytest.raises(ValueError, match="4 runs in the label matrix but 3 backbones"):
        F.churn_by_backbone(labels, ["a", "a", "b"])
    # one backbone (or one run a backbone): what has no pairs is None, null in the verdict file, not NaN
    one = F.churn_by_backbone(labels, ["a"] * 4)
    assert (one["between_backbones"], one["ratio"], one["between_pairs"]) == (None, None, 0)
    alone = F.churn_by_backbone(labels[:2], ["a", "b"])
    assert (alone["within_backbone"], alone["within_pairs"], alone["between_pairs"]) == (None, 0, 1)
    json.dumps(one, allow_nan=False), json.dumps(alone, allow_nan=False)
    line = F.verdict_lines({"nbsvm": 90.0, "tfidf": 89.0, "endpoints": {}, "backbones": [], "churn": {"ce": alone},
                            "ship": {"run_id": "r", "loss": "ce", "seed": 0, "accuracy": 1.0, "endpoint": 1.0,
                                     "winner": False}})
    assert "CE churn: none between fine-tuning seeds of one backbone yet (one run a backbone), 25.00% between" in (
        " ".join(line))


def test_the_run_to_ship_is_the_winners_closest_to_its_endpoint():
    ship = F.ship_candidate(RUNS, F.endpoint(RUNS, ORDER, BAR), ORDER)
    # CE won (92.33); b1's two runs (92.5) tie at 0.167 from it: the lower seed
    assert (ship["run_id"], ship["loss"], ship["winner"]) == ("b1-ce-0", "ce", True)
    assert ship["accuracy"] == pytest.approx(92.5)
    # no loss above the bar: the higher mean is shipped, under no winner's name
    none = F.ship_candidate(RUNS, F.endpoint(RUNS, ORDER, 93.5), ORDER)
    assert (none["loss"], none["winner"]) == ("ce", False)
    # a loss that meets the goal wins over one with a higher mean that does not exist: BCE alone above its bar
    bce_only = {**F.endpoint(RUNS, ORDER, BAR), "ce": {"mean": 95.0, "goal_met": False}}
    assert F.ship_candidate(RUNS, {**bce_only, "bce": {**bce_only["bce"], "goal_met": True}}, ORDER)["loss"] == "bce"


def _folder(tmp_path):
    """A results folder as the final study writes it: three backbones of plan 3's length, CE seeds 0-1 from each
    and BCE seeds 0-1 from backbone 0 with the recipe's fine-tuning, a scratch run, a run of another recipe, and
    every run's validation predictions (4 reviews)."""
    from nanogpt.run.pretrain import get_pretrain_profile
    from nanogpt.run.profiles import get_profile
    from nanogpt.study.pretrain_study import get_recipe

    recipe = get_recipe(F.RECIPE)
    bb = get_pretrain_profile("lm-cpu").replace(**recipe["pretrain_overrides"])
    pd.DataFrame([{"backbone_id": f"bb{s}", "profile": "lm-cpu", "seed": s, "steps": bb.max_steps, "tokens": 65536000,
                   "val_perplexity": 120.0, "train_seconds": 60.0 * m, "precision": "fp32", "processor": "cpu x",
                   "isa": "avx2", "config": json.dumps(bb.replace(seed=s).__dict__)} for s, m in ((0, 100), (1, 130),
                                                                                                   (2, 110))]
                 ).to_csv(tmp_path / "backbones.csv", index=False)
    # bb1's curve: four intervals of 16,384,000 tokens, one of them slowed (shared cores): 130 min as recorded,
    # 100 at its median pace (the budget's measure); bb2 has no curve here, so its recorded 110 min count
    (tmp_path / "backbones" / "bb1").mkdir(parents=True)
    pd.DataFrame({"tokens": [16384000 * k for k in (1, 2, 3, 4)], "train_seconds": [1500.0, 3000.0, 6300.0, 7800.0]}
                 ).to_csv(tmp_path / "backbones" / "bb1" / "history.csv", index=False)
    ft = get_profile("ft")
    truth = np.array([1, 0, 1, 0])
    rows = []
    spec = [("ce", "bb0", 0, [1, 0, 1, 0]), ("ce", "bb0", 1, [1, 0, 1, 1]), ("ce", "bb1", 0, [1, 1, 1, 0]),
            ("ce", "bb1", 1, [1, 0, 1, 0]), ("ce", "bb2", 0, [0, 0, 1, 0]), ("ce", "bb2", 1, [1, 0, 1, 0]),
            ("bce", "bb0", 0, [1, 0, 0, 0]), ("bce", "bb0", 1, [1, 0, 1, 0])]
    for loss, b, s, said in spec:
        cfg = ft.make_config(loss, s, init=f"lm:{b}", **recipe["finetune"])
        rows.append((f"{b}-{loss}-{s}", loss, s, f"lm:{b}", cfg, said))
    rows.append(("scratch-ce-0", "ce", 0, "scratch", ft.make_config("ce", 0), [1, 0, 0, 0]))
    other = ft.make_config("ce", 2, init="lm:bb0", **{**recipe["finetune"], "lm_weight": 0.0})  # ft-long's run
    rows.append(("other-ce-2", "ce", 2, "lm:bb0", other, [1, 1, 1, 1]))
    table = []
    for rid, loss, s, init, cfg, said in rows:
        said = np.array(said)
        table.append({"run_id": rid, "status": "ok", "loss": loss, "seed": s, "profile": "ft", "init": init,
                      "arm": loss + ("-lm" if init != "scratch" else ""), "precision": "fp32", "processor": "cpu x",
                      "val_accuracy": float(np.mean(said == truth)), "train_seconds": 600.0,
                      "config": json.dumps(cfg.__dict__)})
        folder = tmp_path / "runs" / rid
        folder.mkdir(parents=True)
        pd.DataFrame({"label": truth, "positive_probability": np.where(said == 1, 0.9, 0.1)}).to_csv(
            folder / "val_predictions.csv", index=False)
    pd.DataFrame(table).to_csv(tmp_path / "runs.csv", index=False)
    return truth


def test_the_report_from_a_results_folder(tmp_path, monkeypatch):
    from nanogpt.study import baseline, hybrid

    truth = _folder(tmp_path)
    monkeypatch.setattr(baseline, "nbsvm_baseline", lambda source, out_dir: {"accuracy": 0.80})
    monkeypatch.setattr(baseline, "tfidf_baseline", lambda source, out_dir: {"accuracy": 0.70})
    bow = np.array([0.8, 0.4, 0.3, 0.2])  # NBSVM says 1, 0, 0, 0: 75%
    monkeypatch.setattr(hybrid, "nbsvm_validation", lambda *a: (truth, bow, {}))
    report = F.final_report(tmp_path, baseline_dir=tmp_path)
    ce, bce = report["endpoints"]["ce"], report["endpoints"]["bce"]
    # CE backbone means: bb0 (100, 75) 87.5, bb1 (75, 100) 87.5, bb2 (75, 100) 87.5; the other recipe's run and
    # the scratch run are not in it
    assert (ce["runs"], ce["n"], ce["mean"]) == (6, 3, pytest.approx(87.5)) and ce["goal_met"]
    assert (bce["runs"], bce["mean"]) == (2, pytest.approx(87.5))
    assert report["backbones"][1] == {"backbone_id": "bb1", "seed": 1, "tokens": 65536000, "minutes": 130.0,
                                      "pace_minutes": 100.0, "within_budget": True, "processor": "cpu x",
                                      "isa": "avx2", "precision": "fp32"}
    assert [(b["pace_minutes"], b["within_budget"]) for b in report["backbones"]] == [(None, True), (100.0, True),
                                                                                     (None, True)]
    assert report["ship"]["loss"] in ("ce", "bce") and report["ship"]["winner"]
    assert report["missing_predictions"] == []
    # CE churn within a backbone: 1/4 on each of the three pairs; between: the 12 cross pairs by hand
    assert report["churn"]["ce"]["within_backbone"] == pytest.approx(25.0)
    assert report["churn"]["ce"]["between_pairs"] == 12
    # the hybrid row is backbone 0's CE seed 0 (right on all 4) mixed with NBSVM: 0.85, 0.25, 0.6, 0.15 -> 100%
    assert report["hybrid"]["run_id"] == "bb0-ce-0"
    assert report["hybrid"]["row"]["hybrid"] == pytest.approx(100.0) and report["hybrid"]["row"]["gpt"] == 100.0
    assert report["ce_vs_bce"]["n_ce"] == 2 and report["ce_vs_bce"]["n_bce"] == 2
    assert report["ce_vs_bce"]["backbone"] == "bb0"
    lines = report["verdict"]
    assert lines[0].startswith("BCE: 87.50% over 2 fine-tuning seeds of one backbone")
    assert lines[1].startswith("CE: 87.50% over 3 backbone means (6 runs)")
    assert "Goal met for BCE and CE." in lines
    assert ("Every backbone within the goal's 2 hours of 2-core compute: bb0 (100 min, fp32), bb1 (100 min at its "
            "median pace, 130 as recorded, fp32), bb2 (110 min, fp32).") in lines
    over = F.verdict_lines({**report, "backbones": [{**report["backbones"][2], "within_budget": False,
                                                     "minutes": 125.0}]})
    assert "Over the goal's 2 hours of 2-core compute per backbone: bb2 (125 min, fp32)." in over


def test_the_command_writes_the_verdict_and_says_not_yet_without_runs(tmp_path, monkeypatch, capsys):
    from nanogpt.study import baseline, hybrid

    assert F.main(["--results", str(tmp_path), "--baselines", str(tmp_path)]) == 2
    assert "plan 3:" in capsys.readouterr().out
    truth = _folder(tmp_path)
    monkeypatch.setattr(baseline, "nbsvm_baseline", lambda source, out_dir: {"accuracy": 0.95})
    monkeypatch.setattr(baseline, "tfidf_baseline", lambda source, out_dir: {"accuracy": 0.70})
    monkeypatch.setattr(hybrid, "nbsvm_validation", lambda *a: (truth, np.full(4, 0.6), {}))
    assert F.main(["--results", str(tmp_path), "--baselines", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "- Goal not met: no loss's mean is above NBSVM's accuracy." in out
    assert "under no winner's name" in out
    written = json.loads((tmp_path / "plan-3-verdict.json").read_text())
    assert written["nbsvm"] == pytest.approx(95.0) and written["verdict"] == [
        line.removeprefix("- ") for line in out.splitlines() if line.startswith("- ")]


def test_the_cost_table_finds_the_plans_runs_in_their_own_folder(tmp_path):
    """bench --only cost: plan 3's runs are a population of their own (results/final); the table's row for the
    recipe comes from there, with the training minutes of its runs and its backbones, and only from there."""
    from nanogpt.bench.cost import gpt_rows

    (tmp_path / "final").mkdir()
    _folder(tmp_path / "final")
    texts = ["A fine film.", "Dull and long, and then it got worse.", "I laughed.", "Not for me."]
    rows = gpt_rows(tmp_path, texts, one_at_a_time=2, batched=4)
    assert [r["model"] for r in rows] == ["ft, 65.6M-token backbone, whole review, auxiliary LM loss (plan 3)"]
    (row,) = rows
    assert row["runs"] == "6 CE + 2 BCE" and row["trained_on"] == "cpu x"
    # accuracy: the 8 runs pooled (right on 4, 3, 3, 4, 3, 4 and 3, 4 of 4 reviews)
    assert row["accuracy"] == pytest.approx(100 * 28 / 32)
    # 10 min of fine-tuning; backbones of 100 (bb0: 4 runs), 130 and 110 min (2 runs each): whole and shared
    assert row["train_minutes"] == pytest.approx(10.0)
    assert row["backbone_minutes"] == pytest.approx((4 * 100 + 2 * 130 + 2 * 110) / 8)
    assert row["shared_minutes"] == pytest.approx(10.0 + (4 * 25 + 2 * 65 + 2 * 55) / 8)
    assert row["reading"].startswith("windows (256 tokens") and row["reviews_per_s_batched"] > 0
    # the folder read as the top: its scratch run and its ft-long run (lm_weight 0) are rows of their entries, and
    # the plan's entry, which looks in final/ below it, finds nothing
    top = {r["model"]: r["runs"] for r in gpt_rows(tmp_path / "final", texts, 2, 4)}
    assert top == {"ft, from scratch": "1 CE + 0 BCE", "ft, 65.6M-token backbone, whole review": "1 CE + 0 BCE"}


def test_the_shipped_models_card_says_where_it_stands(tmp_path, monkeypatch, capsys):
    from nanogpt.serve import shipped
    from nanogpt.study import baseline, hybrid

    truth = _folder(tmp_path)
    monkeypatch.setattr(baseline, "nbsvm_baseline", lambda source, out_dir: {"accuracy": 0.95})
    monkeypatch.setattr(baseline, "tfidf_baseline", lambda source, out_dir: {"accuracy": 0.70})
    monkeypatch.setattr(hybrid, "nbsvm_validation", lambda *a: (truth, np.full(4, 0.6), {}))
    calls = []
    monkeypatch.setattr(shipped, "ship", lambda run_dir, models_dir, note: calls.append((run_dir, note)) or {
        "model": "m.safetensors", "bytes": 2**20, "weights": "float16", "validation_accuracy_shipped": 0.75,
        "validation_accuracy_fp32": 0.75, "label_agreement_with_fp32": 1.0})
    assert F.main(["--results", str(tmp_path), "--baselines", str(tmp_path)]) == 0
    assert calls == []  # only when asked
    assert F.main(["--results", str(tmp_path), "--baselines", str(tmp_path), "--ship"]) == 0
    ((run_dir, note),) = calls
    report = json.loads((tmp_path / "plan-3-verdict.json").read_text())
    assert run_dir == tmp_path / "runs" / report["ship"]["run_id"]
    assert "not a winner" in note and "7.50 points below NBSVM (95.00%)" in note  # 87.50% against 95.00%
    e = report["endpoints"][report["ship"]["loss"]]
    assert f"({e['runs']} {report['ship']['loss'].upper()} runs from {len(e['backbones'])} backbone(s) when shipped)" in note
    assert "shipped m.safetensors" in capsys.readouterr().out
    winner = {**report, "nbsvm": 80.0, "ship": {**report["ship"], "winner": True}}
    assert "the plan's winner: CE above NBSVM (87.50% against 80.00%)" in F.ship_note(winner)


def test_runs_from_earlier_weights_of_a_backbone_id_are_left_out_and_named(tmp_path, monkeypatch):
    """A backbone lost with its machine and pre-trained again keeps its id (same config and seed) but not its
    weights: runs fine-tuned from the lost weights stay in runs.csv, out of the endpoint, named in the verdict."""
    from nanogpt.run.profiles import get_profile
    from nanogpt.study import baseline, hybrid
    from nanogpt.study.pretrain_study import get_recipe, stored_pretraining

    truth = _folder(tmp_path)
    monkeypatch.setattr(baseline, "nbsvm_baseline", lambda source, out_dir: {"accuracy": 0.80})
    monkeypatch.setattr(baseline, "tfidf_baseline", lambda source, out_dir: {"accuracy": 0.70})
    monkeypatch.setattr(hybrid, "nbsvm_validation", lambda *a: (truth, np.full(4, 0.6), {}))
    backbones = pd.read_csv(tmp_path / "backbones.csv")
    backbones["backbone_sha256"] = ["a" * 64, "b" * 64, "c" * 64]
    backbones.to_csv(tmp_path / "backbones.csv", index=False)
    runs = pd.read_csv(tmp_path / "runs.csv")
    runs["backbone_sha256"] = np.where(runs["init"] == "lm:bb0", "a" * 64, "")
    cfg = get_profile("ft").make_config("ce", 2, init="lm:bb0", **get_recipe(F.RECIPE)["finetune"])
    lost = {**runs.iloc[0].to_dict(), "run_id": "bb0-ce-2-lost", "seed": 2, "val_accuracy": 0.0,
            "config": json.dumps(cfg.__dict__), "backbone_sha256": "f" * 64}  # wrong on every review
    pd.concat([runs, pd.DataFrame([lost])]).to_csv(tmp_path / "runs.csv", index=False)
    folder = tmp_path / "runs" / "bb0-ce-2-lost"
    folder.mkdir()
    pd.DataFrame({"label": truth, "positive_probability": np.where(truth == 1, 0.1, 0.9)}).to_csv(
        folder / "val_predictions.csv", index=False)
    kept, _ = stored_pretraining(tmp_path, "ft", "lm-cpu", get_recipe(F.RECIPE)["finetune"],
                                 get_recipe(F.RECIPE)["pretrain_overrides"])
    assert "bb0-ce-2-lost" not in set(kept["run_id"]) and "bb0-ce-0" in set(kept["run_id"])
    from nanogpt.bench.cost import ENTRIES, recipe_rows

    plan = next(e for e in ENTRIES if e[6] == "final")  # the cost table's row for plan 3 leaves them out too
    costed, _ = recipe_rows(tmp_path, *plan[1:6])
    assert "bb0-ce-2-lost" not in set(costed["run_id"]) and "bb0-ce-0" in set(costed["run_id"])
    report = F.final_report(tmp_path, baseline_dir=tmp_path)
    assert report["endpoints"]["ce"]["runs"] == 6 and report["endpoints"]["ce"]["mean"] == pytest.approx(87.5)
    assert report["superseded"] == [{"run_id": "bb0-ce-2-lost", "loss": "ce", "seed": 2, "backbone": "bb0",
                                     "accuracy": 0.0}]
    assert ("Left out: 1 run(s) fine-tuned from earlier weights of a backbone id, lost and pre-trained again (CE "
            "seed 2 0.00%).") in report["verdict"]


def test_ce_against_bce_is_read_on_the_first_backbone_with_both_losses():
    """Plan 3's amendment: the backbone that carries both losses compares them (backbone 0 where it does)."""
    runs = pd.DataFrame({"backbone": ["bb0", "bb0", "bb1", "bb1", "bb2"], "loss": ["ce", "ce", "ce", "bce", "bce"]})
    assert F.paired_backbone(runs, ["bb0", "bb1", "bb2"]) == "bb1"
    assert F.paired_backbone(runs.assign(loss="ce"), ["bb0", "bb1", "bb2"]) == "bb0"  # none has both
    both0 = pd.concat([runs, pd.DataFrame({"backbone": ["bb0"], "loss": ["bce"]})])
    assert F.paired_backbone(both0, ["bb0", "bb1", "bb2"]) == "bb0"
    line = F.verdict_lines({"nbsvm": 90.0, "tfidf": 89.0, "endpoints": {}, "backbones": [],
                            "ship": {"run_id": "r", "loss": "ce", "seed": 0, "accuracy": 1.0, "endpoint": 1.0,
                                     "winner": False},
                            "ce_vs_bce": {"diff": 0.1, "ci_low": -0.2, "ci_high": 0.4, "tost_p": 0.01,
                                          "decision": "equivalent", "margin": 0.5, "backbone": "bb1"}})
    assert any(x.startswith("BCE - CE on bb1: +0.10 points") for x in line)
    one = F.verdict_lines({"nbsvm": 90.0, "tfidf": 89.0, "endpoints": {}, "backbones": [],
                           "ship": {"run_id": "r", "loss": "ce", "seed": 0, "accuracy": 1.0, "endpoint": 1.0,
                                    "winner": False},
                           "churn": {"ce": {"within_backbone": 4.5, "within_pairs": 10, "between_backbones": None,
                                            "between_pairs": 0}}})
    assert ("CE churn: 4.50% of reviews between fine-tuning seeds of one backbone (10 pairs), none between backbones "
            "yet (one backbone).") in one


def test_the_length_table_counts_each_backbone_once():
    """final_probe.length_by_loss: per loss, the mean of the backbone means of each column (as the endpoint)."""
    from nanogpt.study.final_probe import COLUMNS, length_by_loss

    per_run = pd.DataFrame([[90.0] * 5, [92.0] * 5, [80.0] * 5, [70.0] * 5], columns=COLUMNS,
                           index=["a0", "a1", "b0", "c0"])
    per_run.loc["a1", "> 400"] = 100.0
    runs = pd.DataFrame({"run_id": ["a0", "a1", "b0", "c0"], "loss": ["ce", "ce", "ce", "bce"],
                         "backbone": ["A", "A", "B", "A"]})
    table = length_by_loss(per_run, runs)
    # CE: backbone A's mean 91 (> 400: 95), B's 80 -> 85.5 (87.5); the three runs' own mean would be 87.33
    assert table.loc["GPT CE (3 run(s), 2 backbone(s))", "all"] == pytest.approx(85.5)
    assert table.loc["GPT CE (3 run(s), 2 backbone(s))", "> 400"] == pytest.approx(87.5)
    assert table.loc["GPT BCE (1 run(s), 1 backbone(s))", "all"] == pytest.approx(70.0)
