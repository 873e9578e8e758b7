"""The cost to serve beside the accuracy (`bench --only cost`): for TF-IDF, today's `cpu` model and the pre-trained
recipes, one row each with the validation accuracy of the committed runs (mean over their seeds), reviews per
second from `Classifier.predict` on this machine (one review at a time, and in batches), and the training compute
the rows recorded (a pre-trained recipe is charged its whole backbone, and its share when one backbone serves
the ten runs of its study).

Speed does not depend on what the weights learned, so each GPT is timed as an untrained model of its recipe's shape
and reading: the bench needs no checkpoint, only the rows. fp32, as the service answers by default.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

# What the table compares: (label, profile, precision, start, backbone pre-training steps, recipe name, the
# results sub-folder its runs are in: plan 3's final runs are a population of their own in results/final)
ENTRIES = (
    ("cpu, from scratch", "cpu", "fp32", "scratch", None, None, ""),
    ("ft, from scratch", "ft", "fp32", "scratch", None, None, ""),
    ("ft, 16.4M-token backbone, head+tail", "ft", "fp32", "pre-trained", 2000, "ft", ""),
    ("ft, 65.6M-token backbone, whole review", "ft", "fp32", "pre-trained", 8000, "ft-long", ""),
    ("ft, 65.6M-token backbone, whole review, auxiliary LM loss (plan 3)", "ft", "fp32", "pre-trained", 8000,
     "ft-long-lm", "final"),
)


def recipe_rows(results_dir, profile: str, precision: str, start: str, backbone_steps: int | None,
                recipe: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The finished runs of one table entry (its profile, population, start and recipe) and their backbones."""
    from nanogpt.run.results import read_results, runs_csv
    from nanogpt.study.pretrain_study import get_recipe, of_recipe, stored_backbones, superseded_mask, with_start

    runs = with_start(read_results(runs_csv(results_dir), finished_only=True))
    runs = runs[(runs["profile"] == profile) & (runs["precision"] == precision) & (runs["start"] == start)]
    if "arm" in runs:
        runs = runs[runs["arm"].isin(["ce", "bce", "ce-lm", "bce-lm"])]  # no paired or head-scaled arms
    if start == "scratch":
        return runs.reset_index(drop=True), pd.DataFrame()
    backbones = stored_backbones(results_dir, "lm-cpu")
    backbones = backbones[(backbones["steps"] == backbone_steps) & backbones["differs"].map(lambda d: set(d) <= {"max_steps"})]
    runs = runs[runs["backbone"].isin(set(backbones["backbone_id"]))]
    runs = runs[~superseded_mask(runs, backbones)]  # fine-tuned from lost weights of a backbone id: not this row's
    if runs.empty:
        return runs, backbones.iloc[:0]
    runs = of_recipe(runs, get_recipe(recipe)["finetune"])
    return runs.reset_index(drop=True), backbones[backbones["backbone_id"].isin(set(runs["backbone"]))]


def _speed(predict, texts: list[str], one_at_a_time: int, batched: int) -> tuple[float, float]:
    """Reviews per second: `one_at_a_time` reviews in separate calls, then `batched` reviews in one call."""
    predict(texts[:2])  # warm-up
    t0 = time.perf_counter()
    for t in texts[:one_at_a_time]:
        predict([t])
    single = one_at_a_time / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    predict(texts[:batched])
    return single, batched / (time.perf_counter() - t0)


def gpt_speed(config: dict, texts: list[str], one_at_a_time: int, batched: int) -> tuple[float, float]:
    """Reviews per second of `Classifier.predict` (fp32, batches of 64) for an untrained model of this run config's
    shape, truncation and reading."""
    from nanogpt.bench.inference import untrained_checkpoint
    from nanogpt.run.config import TrainConfig
    from nanogpt.serve.predict import Classifier

    cfg = TrainConfig(**{**config, "init": "scratch"})
    with tempfile.TemporaryDirectory() as tmp:
        clf = Classifier.load(untrained_checkpoint(cfg, Path(tmp) / "model.pt"), precision="fp32")
    return _speed(lambda t: clf.predict(t, batch_size=64), texts, one_at_a_time, batched)


def cost_table(results_dir=None, one_at_a_time: int = 200, batched: int = 1000) -> pd.DataFrame:
    """One row per entry with runs here, and TF-IDF: accuracy (mean, sd, runs), reviews/s one at a time and
    batched, training minutes (the runs' mean; plus the backbone, whole and shared), and where the rows ran."""
    from nanogpt.core.resources import REPO_ROOT
    from nanogpt.data.imdb import load_imdb
    from nanogpt.study.baseline import fit_tfidf, tfidf_baseline

    results_dir = Path(results_dir or REPO_ROOT / "results")
    texts = list(load_imdb()["validation"]["text"])
    rows = []
    t0 = time.perf_counter()
    vec, model = fit_tfidf()
    fit_minutes = (time.perf_counter() - t0) / 60
    single, many = _speed(lambda t: model.predict_proba(vec.transform(t))[:, 1], texts, one_at_a_time, batched)
    rows.append({"model": "TF-IDF + logistic regression", "runs": "1 fit",
                 "accuracy": 100 * tfidf_baseline(out_dir=results_dir)["accuracy"], "sd": float("nan"),
                 "reviews_per_s_single": single, "reviews_per_s_batched": many, "train_minutes": fit_minutes,
                 "backbone_minutes": 0.0, "total_minutes": fit_minutes, "shared_minutes": fit_minutes,
                 "reading": "bag of words", "trained_on": "this machine"})
    from nanogpt.study.baseline import nbsvm_baseline, nbsvm_pipeline

    nbsvm = nbsvm_baseline(out_dir=results_dir)  # cached: its accuracy and the C cross-validation chose
    train = load_imdb()["train"]
    t0 = time.perf_counter()
    pipe = nbsvm_pipeline(nbsvm["C"], nbsvm["tokens"]).fit(list(train["text"]), list(train["label"]))
    fit_minutes = (time.perf_counter() - t0) / 60  # one fit at the chosen C (the choice itself: 3-fold CV over C and tokenization)
    single, many = _speed(lambda t: pipe.predict_proba(t)[:, 1], texts, one_at_a_time, batched)
    rows.append({"model": "NBSVM (binary 1-2 grams x log-count ratios) + logistic regression", "runs": "1 fit",
                 "accuracy": 100 * nbsvm["accuracy"], "sd": float("nan"), "reviews_per_s_single": single,
                 "reviews_per_s_batched": many, "train_minutes": fit_minutes, "backbone_minutes": 0.0,
                 "total_minutes": fit_minutes, "shared_minutes": fit_minutes, "reading": "bag of words",
                 "trained_on": "this machine"})
    rows += gpt_rows(results_dir, texts, one_at_a_time, batched)
    return pd.DataFrame(rows)


def gpt_rows(results_dir: Path, texts: list[str], one_at_a_time: int, batched: int) -> list[dict]:
    """One row per entry of ENTRIES whose runs are here (its results sub-folder), timed on `texts`."""
    rows = []
    for label, profile, precision, start, steps, recipe, folder in ENTRIES:
        if not (results_dir / folder / "runs.csv").is_file():
            continue  # that population has no runs here yet
        runs, backbones = recipe_rows(results_dir / folder, profile, precision, start, steps, recipe)
        if runs.empty:
            continue
        config = json.loads(runs["config"].iloc[0])
        single, many = gpt_speed(config, texts, one_at_a_time, batched)
        train = float(runs["train_seconds"].mean()) / 60
        own = pd.Series(0.0, index=runs.index)
        if len(backbones):
            own = runs["backbone"].map(backbones.set_index("backbone_id")["train_seconds"].astype(float) / 60)
        shared = own / runs["backbone"].map(runs["backbone"].value_counts())  # a backbone split among its runs
        processors = sorted(set(runs.get("processor", pd.Series(dtype=str)).fillna("unrecorded").astype(str)))
        reading = config.get("reading", "truncated")
        rows.append({"model": label, "runs": f"{(runs['loss'] == 'ce').sum()} CE + {(runs['loss'] == 'bce').sum()} BCE",
                     "accuracy": 100 * float(runs["val_accuracy"].mean()),
                     "sd": 100 * float(runs["val_accuracy"].std(ddof=1)) if len(runs) > 1 else float("nan"),
                     "reviews_per_s_single": single, "reviews_per_s_batched": many, "train_minutes": train,
                     "backbone_minutes": float(own.mean()), "total_minutes": train + float(own.mean()),
                     "shared_minutes": train + float(shared.mean()),
                     "reading": f"{reading} ({config['block_size']} tokens" + (
                         f", stride {config.get('window_stride') or config['block_size'] // 2})" if reading == "windows"
                         else f", {config['truncation']})"),
                     "trained_on": "; ".join(processors)})
    return rows


def cost_section(show, quick: bool, results_dir=None) -> dict:
    table = cost_table(results_dir, *((50, 200) if quick else (200, 1000)))
    threads = torch.get_num_threads()
    show("cost, measured on", f"{threads} thread(s), fp32, batches of 64; accuracy (CE and BCE runs pooled) and "
                              "training minutes from the rows")
    for r in table.itertuples():
        sd = f" +- {r.sd:.2f}" if not np.isnan(r.sd) else ""
        show("cost", f"{r.model}: {r.accuracy:.2f}%{sd} ({r.runs}); {r.reviews_per_s_single:,.0f} reviews/s one at a "
                     f"time, {r.reviews_per_s_batched:,.0f} batched; {r.total_minutes:.1f} min of training "
                     f"({r.shared_minutes:.1f} with the backbone shared); reads {r.reading}; trained on {r.trained_on}")
    return {"cost_rows": table.to_dict("records"), "cost_threads": threads}
