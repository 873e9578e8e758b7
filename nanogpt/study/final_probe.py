"""Plan 3's final runs by review length and on short inputs, beside both bags of words (`python -m
nanogpt.study.final_probe`, written to `<results>/plan-3-probe.json`).

By length: every plan run's validation predictions (the committed archive serves a fresh clone), each run scored
per length bucket, then averaged per loss (CE: each backbone counts once, as the plan's endpoint). On short inputs
(the first two sentences of every validation review): fine-tuning seed `seed` of every backbone and loss whose
weights are on disk (the archive holds full reviews only; weights are not in git). NBSVM and TF-IDF are refitted
on the training split as their baselines record them.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from nanogpt.study.probe import BUCKET_LABELS, first_sentences, length_bucket, probe_accuracy

COLUMNS = ["all", *BUCKET_LABELS]


def length_by_loss(per_run: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per loss, the mean over backbones of the backbone means of each column of `per_run` (one row per run id,
    as probe_accuracy returns): each backbone counts once, as in the plan's endpoint."""
    rows = []
    for loss, g in runs.groupby("loss", sort=False):
        by_backbone = per_run.loc[list(g["run_id"]), COLUMNS].groupby(list(g["backbone"])).mean()
        rows.append({"model": f"GPT {loss.upper()} ({len(g)} run(s), {len(by_backbone)} backbone(s))",
                     **by_backbone.mean().to_dict()})
    return pd.DataFrame(rows).set_index("model")


def final_probe(results_dir: str | Path = "results/final", baseline_dir: str | Path = "results", seed: int = 0,
                source: str = "bundled") -> dict:
    """The length table (every run with predictions) and the short-input table (seed `seed` where on disk)."""
    from nanogpt.data.imdb import DEFAULT_SPLIT_SEED, DEFAULT_VAL_FRACTION
    from nanogpt.run.predictions import available_val_predictions
    from nanogpt.serve.predict import Classifier
    from nanogpt.study.final import RECIPE
    from nanogpt.study.hybrid import nbsvm_fitted
    from nanogpt.study.pretrain_study import get_recipe, stored_pretraining
    from nanogpt.study.probe import tfidf_probabilities

    spec = get_recipe(RECIPE)
    runs, _ = stored_pretraining(results_dir, "ft", "lm-cpu", spec["finetune"], spec["pretrain_overrides"])
    runs = runs[runs["start"] == "pre-trained"]
    found, missing = available_val_predictions(results_dir, runs)
    runs = runs[runs["run_id"].isin(found)]
    nbsvm, data, _, nbsvm_full = nbsvm_fitted(source, DEFAULT_SPLIT_SEED, DEFAULT_VAL_FRACTION, baseline_dir)
    texts, labels = list(data["validation"]["text"]), np.asarray(data["validation"]["label"])
    for rid, frame in found.items():
        if not np.array_equal(frame["label"].to_numpy(), labels):
            raise ValueError(f"{rid}: its validation predictions are not of the split this probe reads.")
    short = [first_sentences(t) for t in texts]
    tfidf = tfidf_probabilities(source, DEFAULT_SPLIT_SEED, DEFAULT_VAL_FRACTION, {"full": texts, "short": short})
    bags = {"NBSVM": (nbsvm_full, nbsvm.predict_proba(short)[:, 1]), "TF-IDF": (tfidf["full"], tfidf["short"])}
    per_run = probe_accuracy(labels, {rid: found[rid]["positive_probability"].to_numpy() for rid in runs["run_id"]},
                             texts)
    length = pd.concat([length_by_loss(per_run, runs),
                        probe_accuracy(labels, {k: full for k, (full, _) in bags.items()}, texts)])
    shorts, no_weights = {}, []
    for r in runs[runs["seed"] == seed].itertuples():
        weights = Path(results_dir) / "runs" / r.run_id / "model.pt"
        if not weights.is_file():
            no_weights.append(r.run_id)
            continue
        p = Classifier.load(weights).predict(short).probabilities
        shorts[f"GPT {r.loss.upper()} seed {seed}, {r.backbone}"] = 100 * float(np.mean((p > 0.5) == labels))
    shorts.update({k: 100 * float(np.mean((s > 0.5) == labels)) for k, (_, s) in bags.items()})
    bucket = length_bucket(texts)
    return {"plan": "results/analysis-plan-3.json", "recipe": RECIPE, "reviews": len(texts),
            "bucket_reviews": {b: int((bucket == b).sum()) for b in BUCKET_LABELS},
            "by_length": length.round(4).reset_index().to_dict("records"),
            "first_two_sentences": shorts, "runs_without_predictions": sorted(missing),
            "short_input_models_missing_weights": sorted(no_weights)}

def main(argv: list[str] | None = None) -> int:
    from nanogpt.core.artifacts import write_report_json

    parser = argparse.ArgumentParser(prog="python -m nanogpt.study.final_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/final", help="the plan's runs (default: results/final)")
    parser.add_argument("--baselines", default="results", help="where the baselines are cached (default: results)")
    parser.add_argument("--out", default=None, help="report path (default: <results>/plan-3-probe.json)")
    args = parser.parse_args(argv)
    report = final_probe(args.results, args.baselines)
    out = Path(args.out or Path(args.results) / "plan-3-probe.json")
    write_report_json(out, report)
    print(pd.DataFrame(report["by_length"]).set_index("model").round(2).to_string())
    print("first two sentences:", json.dumps({k: round(v, 2) for k, v in report["first_two_sentences"].items()}))
    print(f"report -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
