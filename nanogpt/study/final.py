"""Plan 3's final comparison (results/analysis-plan-3.json): does a single GPT beat the strongest bag of words?

The plan was committed before any of its runs existed; this module only computes what it fixed:
- the primary endpoint per loss: the mean validation accuracy of its runs, where a loss has runs from several
  backbones the mean of the backbone means (each backbone counts once), with a one-sided 95% lower bound (t over
  the backbone means, or over the fine-tuning seeds of one backbone); the goal is met if the mean is above
  NBSVM's accuracy, and 'clearly above' only if the lower bound is;
- churn: the share of validation reviews two runs label differently, between fine-tuning seeds of one backbone
  and between runs of different backbones;
- one row that is not the goal: the hybrid (study/hybrid.py, weight 0.5) for backbone 0's CE seed-0 run;
- the run to ship: among the runs of the winning loss (goal met, higher mean; if neither loss meets it, the loss
  with the higher mean, shipped under no winner's name), the one closest to its loss's endpoint.

`python -m nanogpt.study.final --results results/final` reads the finished runs of the plan's recipe and writes
`plan-3-verdict.json` beside them; `study --pretraining --recipe ft-long-lm` ends with it.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats as sps

RECIPE = "ft-long-lm"  # the plan's recipe (study/pretrain_study.RECIPES)
LEVEL = 0.95  # the one-sided lower bound's confidence
BACKBONE_MINUTES = 120.0  # the goal's budget per backbone, on 2 cores
HYBRID_RUN = ("ce", 0)  # the plan's hybrid row: backbone 0's run of this loss and seed


def endpoint(runs: pd.DataFrame, order: list[str], bar: float, level: float = LEVEL) -> dict:
    """Per loss of `runs` (pre-trained rows: loss, seed, backbone, val_accuracy): the plan's endpoint in points
    against `bar` (NBSVM's accuracy, points). `order` is the backbones' order (backbone 0 first)."""
    out = {}
    for loss, g in runs.groupby("loss", sort=True):
        points = g["val_accuracy"].astype(float) * 100
        per_backbone = points.groupby(g["backbone"]).mean()
        per_backbone = per_backbone.reindex([b for b in order if b in per_backbone.index])
        if len(per_backbone) >= 2:
            values, unit = per_backbone.to_numpy(), "backbone means"
        else:
            values, unit = points.to_numpy(), "fine-tuning seeds of one backbone"
        n = int(values.size)
        mean = float(values.mean())
        sd = float(values.std(ddof=1)) if n > 1 else math.nan
        lower = mean - float(sps.t.ppf(level, n - 1)) * sd / math.sqrt(n) if n > 1 else math.nan
        out[loss] = {"mean": mean, "lower_bound": lower, "level": level, "n": n, "unit": unit, "sd": sd,
                     "runs": int(len(g)), "backbones": [b for b in order if b in set(g["backbone"])],
                     "per_backbone": {b: float(v) for b, v in per_backbone.items()},
                     "goal_met": bool(mean > bar), "clearly_above": bool(lower > bar) if n > 1 else False,
                     "margin": mean - bar}
    return out


def paired_backbone(runs: pd.DataFrame, order: list[str]) -> str:
    """The backbone whose fine-tunes compare CE with BCE: the first in seed order with runs of both losses (plan 3
    named backbone 0; its amendment of 2026-12-07, made before any BCE run of the plan, lets any backbone carry
    both, since a backbone's file does not outlive the session that pre-trains it here); backbone 0 when none has."""
    for b in order:
        if {"ce", "bce"} <= set(runs.loc[runs["backbone"] == b, "loss"]):
            return b
    return order[0]


def churn_by_backbone(labels: np.ndarray, backbones: list[str]) -> dict:
    """Churn (points) over pairs of distinct runs of one backbone (fine-tuning seeds) and over pairs of runs of
    different backbones, from a label matrix (runs x reviews) and each run's backbone."""
    from nanogpt.study.churn import pair_matrix

    if len(backbones) != len(labels):
        raise ValueError(f"{len(labels)} runs in the label matrix but {len(backbones)} backbones given.")
    d = pair_matrix(np.asarray(labels, dtype=np.float64))
    same = np.equal.outer(np.asarray(backbones), np.asarray(backbones))
    distinct = ~np.eye(len(backbones), dtype=bool)
    within_pairs, between_pairs = same & distinct, ~same
    # None where there are no such pairs (one backbone, or one run each): null in the verdict file, never NaN
    out = {"within_backbone": 100 * float(d[within_pairs].mean()) if within_pairs.any() else None,
           "between_backbones": 100 * float(d[between_pairs].mean()) if between_pairs.any() else None,
           "within_pairs": int(within_pairs.sum() // 2), "between_pairs": int(between_pairs.sum() // 2)}
    out["ratio"] = (out["between_backbones"] / out["within_backbone"]
                    if out["within_backbone"] and out["between_backbones"] is not None else None)
    return out


def ship_candidate(runs: pd.DataFrame, endpoints: dict, order: list[str]) -> dict:
    """The run to ship: the winning loss's run closest to that loss's endpoint (ties: backbone order, then seed).
    `winner` is False where no loss met the goal (the card then says where it stands)."""
    met = [loss for loss, e in endpoints.items() if e["goal_met"]]
    pool = met or list(endpoints)
    loss = max(pool, key=lambda k: (endpoints[k]["mean"], k))
    g = runs[runs["loss"] == loss].assign(points=lambda f: f["val_accuracy"].astype(float) * 100)
    g = g.assign(distance=(g["points"] - endpoints[loss]["mean"]).abs(),
                 rank=g["backbone"].map({b: i for i, b in enumerate(order)}))
    best = g.sort_values(["distance", "rank", "seed"]).iloc[0]
    return {"run_id": str(best["run_id"]), "loss": loss, "seed": int(best["seed"]), "backbone": str(best["backbone"]),
            "accuracy": float(best["points"]), "endpoint": endpoints[loss]["mean"], "winner": bool(met)}


def backbone_budget(backbones: pd.DataFrame, results_dir: str | Path | None = None,
                    minutes: float = BACKBONE_MINUTES) -> list[dict]:
    """Each backbone's pre-training minutes, processor and precision, and whether it is within the goal's budget of
    2-core compute. `minutes` is wall time as recorded, on whatever share of the cores the run had (a backbone that
    shared them, or was resumed, records more than it computed); where its curve (backbones/<id>/history.csv) is
    here, `pace_minutes` is its tokens at the median pace of its intervals, and that decides the budget."""
    rows = []
    for _, b in backbones.iterrows():
        m, pace = float(b["train_seconds"]) / 60, None
        path = None if results_dir is None else Path(results_dir) / "backbones" / str(b["backbone_id"]) / "history.csv"
        if path is not None and path.is_file():
            h = pd.read_csv(path)
            rates = (np.diff(np.r_[0.0, h["tokens"].to_numpy(float)])
                     / np.diff(np.r_[0.0, h["train_seconds"].to_numpy(float)]))
            pace = round(float(b["tokens"]) / float(np.median(rates)) / 60, 1) if len(rates) else None
        rows.append({"backbone_id": b["backbone_id"], "seed": int(b["seed"]), "tokens": int(b["tokens"]),
                     "minutes": round(m, 1), "pace_minutes": pace,
                     "within_budget": bool((m if pace is None else pace) <= minutes),
                     "processor": str(b.get("processor", "")), "isa": str(b.get("isa", "")),
                     "precision": str(b.get("precision", ""))})
    return rows


def verdict_lines(report: dict) -> list[str]:
    """Plain sentences generated from `report` (never written by hand)."""
    bar, tfidf = report["nbsvm"], report["tfidf"]
    out = []
    for loss, e in report["endpoints"].items():
        unit = e["unit"] if e["n"] != 1 else "run (no bound from one)"
        over = f"over {e['n']} {unit}" + (f" ({e['runs']} runs)" if e["unit"] == "backbone means" else "")
        where = ("clearly above" if e["clearly_above"] else "above, though not clearly (the lower bound is not)"
                 if e["goal_met"] else "below")
        out.append(f"{loss.upper()}: {e['mean']:.2f}% {over}, one-sided {100 * e['level']:.0f}% lower bound "
                   f"{e['lower_bound']:.2f}%: {where} NBSVM ({bar:.2f}%, {e['margin']:+.2f} points); TF-IDF "
                   f"{tfidf:.2f}%.")
    met = [k for k, e in report["endpoints"].items() if e["goal_met"]]
    out.append(("Goal met for " + " and ".join(k.upper() for k in met) + ".") if met else
               "Goal not met: no loss's mean is above NBSVM's accuracy.")
    claim = report.get("ce_vs_bce")
    if claim:
        out.append(f"BCE - CE on {claim.get('backbone', 'backbone 0')}: {claim['diff']:+.2f} points, 95% CI [{claim['ci_low']:+.2f}, "
                   f"{claim['ci_high']:+.2f}], TOST p = {claim['tost_p']:.2g}: {claim['decision']} (margin "
                   f"+-{claim['margin']:g}).")
    for loss, c in report.get("churn", {}).items():
        between = (f"{c['between_backbones']:.2f}% between backbones ({c['between_pairs']} pairs)"
                   if c["between_pairs"] else "none between backbones yet (one backbone)")
        within = (f"{c['within_backbone']:.2f}% of reviews between fine-tuning seeds of one backbone "
                  f"({c['within_pairs']} pairs)" if c["within_pairs"] else "none between fine-tuning seeds of one "
                  "backbone yet (one run a backbone)")
        out.append(f"{loss.upper()} churn: {within}, {between}.")
    hyb = report.get("hybrid")
    if hyb:
        r = hyb["row"]
        out.append(f"Not the goal: the hybrid of {hyb['run_id']} and NBSVM (weight {r['weight']:g}) scores "
                   f"{r['hybrid']:.2f}% ({r['hybrid_minus_gpt']:+.2f} over that GPT, {r['hybrid'] - bar:+.2f} over "
                   "NBSVM), and it is two models to serve.")
    def minutes(b):
        return (f"{b['minutes']:.0f} min" if b["pace_minutes"] is None else
                f"{b['pace_minutes']:.0f} min at its median pace, {b['minutes']:.0f} as recorded")

    over = [b for b in report["backbones"] if not b["within_budget"]]
    out.append(("Over the goal's 2 hours of 2-core compute per backbone: " if over else
                "Every backbone within the goal's 2 hours of 2-core compute: ")
               + ", ".join(f"{b['backbone_id']} ({minutes(b)}, {b['precision']})" for b in (over or report["backbones"]))
               + ".")
    gone = report.get("superseded", [])
    if gone:
        out.append(f"Left out: {len(gone)} run(s) fine-tuned from earlier weights of a backbone id, lost and "
                   "pre-trained again (" + ", ".join(f"{g['loss'].upper()} seed {g['seed']} {g['accuracy']:.2f}%"
                                                     for g in gone) + ").")
    ship = report["ship"]
    out.append(f"To ship: {ship['run_id']} ({ship['loss'].upper()} seed {ship['seed']}, {ship['accuracy']:.2f}%, the "
               f"run closest to its loss's {ship['endpoint']:.2f}%)" +
               (", the winner." if ship["winner"] else ", under no winner's name: its card says it is below NBSVM."))
    return out


def final_report(results_dir: str | Path, baseline_dir: str | Path = "results", recipe: str = RECIPE,
                 profile: str = "ft", pretrain_profile: str = "lm-cpu", source: str = "bundled") -> dict:
    """Everything plan 3 fixed, from the finished runs of `recipe` in `results_dir` and the baselines cached in
    `baseline_dir` (refitted there when absent)."""
    from nanogpt.run.predictions import available_val_predictions
    from nanogpt.study.analysis import accuracy_claim, load_plan
    from nanogpt.study.baseline import nbsvm_baseline, tfidf_baseline
    from nanogpt.study.churn import label_matrix
    from nanogpt.study.pretrain_study import get_recipe, stored_pretraining, superseded_runs

    spec = get_recipe(recipe)
    runs, backbones = stored_pretraining(results_dir, profile, pretrain_profile, spec["finetune"],
                                         spec["pretrain_overrides"])
    order = list(backbones["backbone_id"])
    pre = runs[runs["start"] == "pre-trained"].reset_index(drop=True)
    nbsvm = 100 * nbsvm_baseline(source, out_dir=baseline_dir)["accuracy"]
    tfidf = 100 * tfidf_baseline(source, out_dir=baseline_dir)["accuracy"]
    endpoints = endpoint(pre, order, nbsvm)
    report = {"plan": "results/analysis-plan-3.json", "recipe": recipe, "results": str(results_dir),
              "nbsvm": nbsvm, "tfidf": tfidf, "endpoints": endpoints, "backbones": backbone_budget(backbones, results_dir),
              "ship": ship_candidate(pre, endpoints, order),
              "superseded": [{"run_id": r.run_id, "loss": r.loss, "seed": int(r.seed), "backbone": r.backbone,
                              "accuracy": 100 * float(r.val_accuracy)}
                             for r in superseded_runs(results_dir, profile, pretrain_profile, spec["finetune"],
                                                      spec["pretrain_overrides"]).itertuples()]}
    first = pre[pre["backbone"] == order[0]]
    paired = pre[pre["backbone"] == paired_backbone(pre, order)]
    ce, bce = (paired[paired["loss"] == k].set_index("seed")["val_accuracy"] * 100 for k in ("ce", "bce"))
    if len(ce) >= 2 and len(bce) >= 2:
        report["ce_vs_bce"] = {**accuracy_claim(ce.sort_index(), bce.sort_index(), load_plan()),
                               "backbone": paired_backbone(pre, order)}
    found, missing = available_val_predictions(results_dir, pre)
    report["missing_predictions"] = sorted(missing)
    report["churn"] = {}
    for loss, g in pre[pre["run_id"].isin(found)].groupby("loss"):
        if len(g) >= 2:
            labels, _, _ = label_matrix(found, list(g["run_id"]))
            report["churn"][loss] = churn_by_backbone(labels, list(g["backbone"]))
    loss, seed = HYBRID_RUN
    pick = first[(first["loss"] == loss) & (first["seed"] == seed) & first["run_id"].isin(found)]
    if len(pick):
        report["hybrid"] = hybrid_row(pick, found, baseline_dir, source)
    report["verdict"] = verdict_lines(report)
    return report


def hybrid_row(pick: pd.DataFrame, found: dict, baseline_dir, source: str) -> dict:
    """The plan's hybrid row: the picked run's P(positive) and NBSVM's (refitted as the baseline records it), 0.5
    each, on the run's validation reviews."""
    from nanogpt.study.hybrid import hybrid_table, nbsvm_validation

    cfg = json.loads(pick["config"].iloc[0])
    labels, bow, _ = nbsvm_validation(source, cfg.get("split_seed"), cfg.get("val_fraction"), baseline_dir)
    row = hybrid_table(found, pick, labels, bow).iloc[0].to_dict()
    return {"run_id": str(pick["run_id"].iloc[0]), "row": row}


def ship_note(report: dict) -> str:
    """What the shipped model's card says of it against the plan's bar (one sentence)."""
    ship, e = report["ship"], report["endpoints"][report["ship"]["loss"]]
    standing = (f"the plan's winner: {ship['loss'].upper()} above NBSVM ({e['mean']:.2f}% against "
                f"{report['nbsvm']:.2f}%)" if ship["winner"] else
                f"not a winner: the best GPT recipe's {ship['loss'].upper()} mean is {e['mean']:.2f}%, "
                f"{-e['margin']:.2f} points below NBSVM ({report['nbsvm']:.2f}%), which serves better where accuracy "
                "is what counts")
    return (f"Plan 3 ({report['plan']}), recipe {report['recipe']}: the run closest to its loss's endpoint "
            f"({e['runs']} {ship['loss'].upper()} runs from {len(e['backbones'])} backbone(s) when shipped); "
            f"{standing}.")


def ship_winner(report: dict, results_dir: str | Path, models_dir: str | Path | None = None) -> dict:
    """Export the report's run to ship (serve/shipped.py: fp16 where its labels agree, else refused) with the
    plan's standing on its card."""
    from nanogpt.serve.shipped import MODELS_DIR, ship

    return ship(Path(results_dir) / "runs" / report["ship"]["run_id"], models_dir or MODELS_DIR,
                note=ship_note(report))


def write_verdict(results_dir: str | Path, baseline_dir: str | Path = "results", to_ship: bool = False) -> int:
    """Compute the report, write `plan-3-verdict.json` in `results_dir` and print its sentences (and with
    `to_ship`, export the run to ship); 2 (with one line saying so) when the plan's runs are not there yet."""
    from nanogpt.core.artifacts import write_report_json

    try:
        report = final_report(results_dir, baseline_dir)
    except FileNotFoundError as err:
        print(f"plan 3: {err}")
        return 2
    path = Path(results_dir) / "plan-3-verdict.json"
    write_report_json(path, json.loads(json.dumps(report, default=float)))
    print("Plan 3 (results/analysis-plan-3.json):")
    for line in report["verdict"]:
        print("-", line)
    print(f"report -> {path}")
    if to_ship:
        from nanogpt.serve.shipped import describe

        print(describe(ship_winner(report, results_dir)))
    return 0


def after_study(recipe: str, results_dir: str | Path) -> int:
    """How `study --pretraining` ends: for the plan's recipe with the plan's answer (its baselines cached beside
    its runs), or where its runs are not all there yet one line saying so; 0 either way (the study itself ran)."""
    if recipe == RECIPE:
        print()
        write_verdict(results_dir, results_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanogpt.study.final", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/final", help="the plan's runs (default: results/final)")
    parser.add_argument("--baselines", default="results", help="where the baselines are cached (default: results)")
    parser.add_argument("--ship", action="store_true", help="also export the run to ship to models/ (its card "
                        "says where it stands against NBSVM)")
    args = parser.parse_args(argv)
    return write_verdict(args.results, args.baselines, args.ship)


if __name__ == "__main__":
    raise SystemExit(main())
