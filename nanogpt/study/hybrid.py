"""The GPT and the bag of words combined: what mixing buys, as one more row beside the single models.

Not the goal of any study here (a hybrid is two models to serve), but a reader deciding what to deploy should see
it. The rule is fixed before looking: P(positive) is the plain mean of the GPT's and NBSVM's probabilities, weight
0.5, so nothing is chosen on the validation reviews it is scored on. NBSVM is the baseline the project reports
(study/baseline.py), refitted with the C and tokenization its cross-validation on the training split chose; its
validation accuracy must reproduce the committed one, or nothing is reported.

`python -m nanogpt.study.hybrid` scores every pre-trained run of the `ft-long` study's primary backbone whose
validation predictions are here (the committed archive holds them) and writes results/hybrid-ft-long.json.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from nanogpt.study.stats import standard_error

WEIGHT = 0.5  # fixed before looking: the mean of the two probabilities


def hybrid_probabilities(gpt: np.ndarray, bow: np.ndarray, weight: float = WEIGHT) -> np.ndarray:
    """weight x P_gpt + (1 - weight) x P_bow, elementwise, for probabilities of the same reviews."""
    gpt, bow = np.asarray(gpt, dtype=np.float64), np.asarray(bow, dtype=np.float64)
    if gpt.shape != bow.shape:
        raise ValueError(f"the GPT scored {gpt.shape} reviews and the bag of words {bow.shape}: not the same reviews.")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}.")
    return weight * gpt + (1.0 - weight) * bow


def nbsvm_fitted(source: str = "bundled", split_seed: int | None = None, val_fraction: float | None = None,
                 results_dir: str | Path = "results"):
    """(NBSVM refitted on the study's training split with the committed choice of C and tokenization, the split,
    the baseline's record, its P(positive) on the validation reviews); a ValueError if its validation accuracy is
    not the recorded one."""
    from nanogpt.data.imdb import DEFAULT_SPLIT_SEED, DEFAULT_VAL_FRACTION, load_imdb
    from nanogpt.study.baseline import nbsvm_baseline, nbsvm_pipeline

    split_seed = DEFAULT_SPLIT_SEED if split_seed is None else split_seed
    val_fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    record = nbsvm_baseline(source, split_seed, val_fraction, out_dir=results_dir)
    dsd = load_imdb(source, split_seed=split_seed, val_fraction=val_fraction)
    model = nbsvm_pipeline(record["C"], record["tokens"]).fit(list(dsd["train"]["text"]),
                                                              np.asarray(dsd["train"]["label"]))
    labels = np.asarray(dsd["validation"]["label"])
    probs = model.predict_proba(list(dsd["validation"]["text"]))[:, 1]
    accuracy = float(np.mean((probs > 0.5) == labels))
    if abs(accuracy - record["accuracy"]) > 1e-9:
        raise ValueError(f"NBSVM refitted with C={record['C']} ({record['tokens']}) scores {accuracy:.6f}, not the "
                         f"recorded {record['accuracy']:.6f}: the data or scikit-learn differ from the baseline's.")
    return model, dsd, record, probs


def nbsvm_validation(source: str = "bundled", split_seed: int | None = None, val_fraction: float | None = None,
                     results_dir: str | Path = "results") -> tuple[np.ndarray, np.ndarray, dict]:
    """(validation labels, NBSVM's P(positive), the baseline's record) on the study's split (`nbsvm_fitted`)."""
    _, dsd, record, probs = nbsvm_fitted(source, split_seed, val_fraction, results_dir)
    return np.asarray(dsd["validation"]["label"]), probs, record


def hybrid_table(predictions: dict[str, pd.DataFrame], runs: pd.DataFrame, labels: np.ndarray,
                 bow: np.ndarray, weight: float = WEIGHT) -> pd.DataFrame:
    """Per loss: the runs' GPT accuracy, the hybrid's and their paired difference (mean, se over runs), the bag of
    words' accuracy, and the share of reviews where the GPT and the bag of words disagree (points)."""
    rows = []
    for loss, group in runs.groupby("loss", sort=True):
        gpt_acc, mix_acc, disagree, gpt_there, mix_there = [], [], [], [], []
        for rid in group.sort_values("seed")["run_id"]:
            frame = predictions[rid]
            if not np.array_equal(frame["label"].to_numpy(), labels):
                raise ValueError(f"run {rid} was scored on other reviews than the bag of words (its labels differ).")
            p = frame["positive_probability"].to_numpy(np.float64)
            gpt_right = (p > 0.5) == labels
            mix_right = (hybrid_probabilities(p, bow, weight) > 0.5) == labels
            split = (p > 0.5) != (bow > 0.5)
            gpt_acc.append(np.mean(gpt_right))
            mix_acc.append(np.mean(mix_right))
            disagree.append(np.mean(split))
            if split.any():  # where the two disagree: who is right, and how often the mean gets it right
                gpt_there.append(np.mean(gpt_right[split]))
                mix_there.append(np.mean(mix_right[split]))
        gain = np.array(mix_acc) - np.array(gpt_acc)
        rows.append({"loss": loss, "runs": len(gpt_acc), "gpt": 100 * float(np.mean(gpt_acc)),
                     "hybrid": 100 * float(np.mean(mix_acc)), "hybrid_min": 100 * float(np.min(mix_acc)),
                     "hybrid_max": 100 * float(np.max(mix_acc)),
                     "hybrid_minus_gpt": 100 * float(gain.mean()),
                     "se": 100 * standard_error(gain),
                     "nbsvm": 100 * float(np.mean((bow > 0.5) == labels)),
                     "disagree": 100 * float(np.mean(disagree)),
                     "gpt_right_where_they_disagree": 100 * float(np.mean(gpt_there)) if gpt_there else math.nan,
                     "hybrid_right_where_they_disagree": 100 * float(np.mean(mix_there)) if mix_there else math.nan,
                     "weight": weight})
    return pd.DataFrame(rows)


def ft_long_hybrid(results_dir: str | Path = "results", weight: float = WEIGHT) -> dict:
    """The hybrid of every pre-trained `ft-long` run of the study's primary backbone with NBSVM."""
    from nanogpt.run.predictions import available_val_predictions
    from nanogpt.study.pretrain_study import get_recipe, stored_pretraining

    recipe = get_recipe("ft-long")
    report = json.loads((Path(results_dir) / "pretraining-ft-long.json").read_text())
    runs, _ = stored_pretraining(results_dir, report["profile"], report["pretrain_profile"], recipe["finetune"],
                                 recipe["pretrain_overrides"])
    runs = runs[runs["backbone"] == report["backbone"]]
    found, missing = available_val_predictions(results_dir, runs)
    if missing:
        raise FileNotFoundError(f"no validation predictions for {len(missing)} run(s) of {report['backbone']} "
                                f"({missing[:3]}...): they are in the committed archive of a full clone.")
    labels, bow, record = nbsvm_validation(results_dir=results_dir)
    table = hybrid_table(found, runs, labels, bow, weight)
    return {"study": "ft-long", "backbone": report["backbone"], "rule": f"P = {weight:g} x P_gpt + "
            f"{1 - weight:g} x P_nbsvm, fixed before looking", "nbsvm": {"C": record["C"], "tokens": record["tokens"],
                                                                       "accuracy": record["accuracy"]},
            "n_val": int(len(labels)), "rows": table.to_dict(orient="records")}


def format_hybrid(report: dict) -> str:
    lines = [f"GPT ({report['study']}, backbone {report['backbone']}) and NBSVM combined: {report['rule']}; "
             f"{report['n_val']} validation reviews"]
    for r in report["rows"]:
        lines.append(f"  {r['loss'].upper()}: GPT {r['gpt']:.2f}% (mean of {r['runs']}), NBSVM {r['nbsvm']:.2f}%, "
                     f"hybrid {r['hybrid']:.2f}% (runs {r['hybrid_min']:.2f}-{r['hybrid_max']:.2f}): "
                     f"{r['hybrid_minus_gpt']:+.2f} points over the GPT (se {r['se']:.2f}), "
                     f"{r['hybrid'] - r['nbsvm']:+.2f} over NBSVM; the two disagree on "
                     f"{r['disagree']:.1f}% of reviews, where the GPT is right on "
                     f"{r['gpt_right_where_they_disagree']:.1f}% and the hybrid on {r['hybrid_right_where_they_disagree']:.1f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from nanogpt.core.artifacts import write_report_json

    parser = argparse.ArgumentParser(prog="python -m nanogpt.study.hybrid", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results", help="the results folder (default: results)")
    args = parser.parse_args(argv)
    report = ft_long_hybrid(args.results)
    write_report_json(Path(args.results) / "hybrid-ft-long.json", report)
    print(format_hybrid(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
