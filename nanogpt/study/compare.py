"""The honest comparison after a run: the GPT beside both bags of words on the same split, which one to deploy,
and a small model card in the run's folder (`model_card.json`).

The bags of words (study/baseline.py) are fitted on the run's own data, split seed and validation fraction, so
all three are scored on the same validation reviews. Reviews per second are measured here, on this machine,
batched (the GPT in batches of 64); the card names the processor.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from nanogpt.core.artifacts import atomic_write_json
from nanogpt.core.runtime import processor_of
from nanogpt.study.baseline import nbsvm_baseline, tfidf_baseline

CARD = "model_card.json"


def _gpt_speed(checkpoint: Path, texts: list[str], limit: int = 1000) -> float | None:
    from nanogpt.serve.predict import Classifier

    if not checkpoint.is_file():
        return None
    return _speed(Classifier.load(checkpoint, precision="fp32"), texts, limit)


def _speed(clf, texts: list[str], limit: int = 1000) -> float:
    """Reviews per second of a loaded classifier, batched (64), after a warm-up."""
    sample = texts[:limit]
    clf.predict(sample[:8])  # warm-up: allocations
    t0 = time.perf_counter()
    clf.predict(sample, batch_size=64)
    return len(sample) / (time.perf_counter() - t0)


def margin(accuracy: float, n: int) -> float:
    """Half-width of a 95% normal interval of an accuracy measured on n reviews (points)."""
    return 100 * 1.96 * math.sqrt(max(accuracy * (1 - accuracy), 1e-12) / max(n, 1))


def deploy_advice(rows: list[dict], n_val: int) -> str:
    """Which model to deploy, and why, in one or two sentences."""
    gpt = rows[0]
    best = max(rows[1:], key=lambda r: r["accuracy"])
    gap = gpt["accuracy"] - best["accuracy"]
    noise = margin(best["accuracy"] / 100, n_val)
    faster = (best["reviews_per_second"] / gpt["reviews_per_second"]
              if gpt.get("reviews_per_second") and best.get("reviews_per_second") else None)
    speed = f", and it answers {faster:.0f}x more reviews per second" if faster and faster >= 1.5 else ""
    if gap > noise:
        return (f"Deploy the GPT: {gap:+.2f} points over {best['model']} on the same {n_val} validation texts, more "
                f"than the +-{noise:.2f} points a score on them carries by chance.")
    if round(gap, 2) == 0:  # the same score to a hundredth of a point (a float's -0.00 included)
        return (f"Deploy {best['model']}: it scores what the GPT scores ({gpt['accuracy']:.2f}%) on the same {n_val} "
                f"validation texts{speed}, so training the GPT on this file added nothing.")
    if gap > 0:
        return (f"Deploy {best['model']}: the GPT is {gap:+.2f} points ahead, within the +-{noise:.2f} points a score "
                f"on {n_val} validation texts carries by chance{speed}.")
    return (f"Deploy {best['model']}: it is {-gap:.2f} points more accurate than the GPT on the same {n_val} "
            f"validation texts{speed}.")


def start_as_it_is(cfg: dict, texts: list[str], labels: np.ndarray) -> dict | None:
    """Where the run started from a finished classifier (`--init shipped` or lm:<model.pt>) that is still here: that
    classifier as it is, never trained on this file, scored on the same validation texts (a row to set beside the
    run: training on a small file can cost a model that already does the task)."""
    from nanogpt.run.backbone import backbone_path
    from nanogpt.run.checkpoints import CheckpointError
    from nanogpt.serve.predict import Classifier

    path = backbone_path(cfg.get("init", "scratch"))
    if path is None or not path.is_file():
        return None
    try:
        clf = Classifier.load(path, precision="fp32")
    except CheckpointError:  # a pre-trained backbone, not a classifier: nothing to score as it is
        return None
    probs = clf.predict(texts).probabilities
    return {"model": f"the start as it is ({path.name}, not trained on this file)",
            "accuracy": 100 * float(np.mean((probs > 0.5) == labels)), "roc_auc": None,
            "reviews_per_second": _speed(clf, texts)}


def compare_run(run_dir: str | Path, results_dir: str | Path | None = None) -> dict:
    """Fit both bags of words on the run's split, measure all three, write and return the model card."""
    from nanogpt.data.imdb import load_imdb

    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "meta.json").read_text())
    cfg, row = meta["config"], meta["row"]
    results_dir = Path(results_dir) if results_dir is not None else run_dir.parent.parent
    split = dict(source=cfg["source"], split_seed=cfg["split_seed"], val_fraction=cfg["val_fraction"],
                 out_dir=results_dir)
    baselines = {"tfidf": tfidf_baseline(**split), "nbsvm": nbsvm_baseline(**split)}
    dsd = load_imdb(cfg["source"], cfg["split_seed"], cfg["val_fraction"])
    texts = list(dsd["validation"]["text"])
    n_val = int(row["n_val"])
    scored_all = not cfg.get("val_limit")
    rows = [{"model": f"GPT ({cfg['loss'].upper()}, profile {cfg['profile']})", "accuracy": 100 * row["val_accuracy"],
             "roc_auc": row.get("roc_auc"), "reviews_per_second": _gpt_speed(run_dir / "model.pt", texts)}]
    start = start_as_it_is(cfg, texts, np.asarray(dsd["validation"]["label"])) if scored_all else None
    rows += [start] if start else []
    for kind, b in baselines.items():
        rows.append({"model": b.get("label", kind), "accuracy": 100 * b["accuracy"], "roc_auc": b.get("roc_auc"),
                     "reviews_per_second": b.get("reviews_per_second_batched")})
    card = {
        "run_id": row["run_id"], "checkpoint": str(run_dir / "model.pt"),
        "data": {"source": cfg["source"], "label_mapping": meta.get("label_mapping"), "split_seed": cfg["split_seed"],
                 "val_fraction": cfg["val_fraction"], "n_train": row["n_train"], "n_dev": row.get("n_dev"),
                 "n_val": n_val, "validation_scored_whole": scored_all},
        "schedule": meta.get("schedule"), "chosen_checkpoint": meta.get("selection"),
        "gpt": {"config": {k: cfg[k] for k in ("profile", "loss", "seed", "init", "n_layer", "n_embd", "block_size",
                                               "epochs", "dev_fraction", "early_stopping", "keep_best")
                           if k in cfg},
                "accuracy": rows[0]["accuracy"], "roc_auc": row.get("roc_auc"), "ece": row.get("ece"),
                "train_seconds": row.get("train_seconds")},
        "comparison": rows, "deploy": deploy_advice(rows, n_val),
        "processor": processor_of("cpu"), "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(run_dir / CARD, card)
    return card


def format_card(card: dict) -> str:
    """The comparison as a table and the advice, for the terminal."""
    lines = [f"On the same {card['data']['n_val']} validation texts ({card['data']['source']}):",
             f"  {'model':<80} {'accuracy':>9} {'reviews/s':>10}"]
    for r in card["comparison"]:
        speed = f"{r['reviews_per_second']:,.0f}" if r.get("reviews_per_second") else "-"
        lines.append(f"  {r['model']:<80} {r['accuracy']:>8.2f}% {speed:>10}")
    mapping = card["data"].get("label_mapping")
    if mapping and mapping != {"0": 0, "1": 1}:
        lines.append(f"  labels: {', '.join(f'{k!r} -> {v}' for k, v in mapping.items())}")
    chosen = card.get("chosen_checkpoint")
    if chosen and chosen.get("best_step") is not None:
        stop = f", stopped early at step {chosen['stopped_early_at']}" if chosen.get("stopped_early_at") else ""
        lines.append(f"  kept checkpoint: step {chosen['best_step']} (development accuracy "
                     f"{100 * chosen['best_dev_accuracy']:.2f}%{stop})")
    lines.append(card["deploy"])
    lines.append(f"(processor: {card['processor']['processor']}; card: {Path(card['checkpoint']).parent / CARD})")
    return "\n".join(lines)
