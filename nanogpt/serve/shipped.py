"""The model shipped with the repository: one trained classifier in `safetensors` under `models/`, with its card,
so that `classify`, `serve` and notebook 05's panel answer on a fresh clone without training or pre-training.

`ship(run_dir)` exports a finished run's weights (fp16 by default: half the bytes) after checking that the
exported model labels the run's validation reviews as the fp32 model did on at least `MIN_AGREEMENT` of them, and
writes the card (data, recipe, accuracy, agreement, processor, sha256) beside it; where the processor multiplies
bf16 natively, the card also holds the bf16 model's agreement with fp32 there (what `serve --precision auto`
gives). `shipped_model()` is the path the commands fall back to when no checkpoint is named.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from nanogpt.core.artifacts import atomic_write_json
from nanogpt.core.resources import REPO_ROOT
from nanogpt.core.runtime import cpu_has_fast_bf16, processor_of

MODELS_DIR = REPO_ROOT / "models"
DEFAULT_NAME = "imdb-gpt"
MIN_AGREEMENT = 0.995  # labels of the exported model against the fp32 model's, on the validation reviews
MAX_BYTES = 32 * 1024 * 1024


def shipped_model(models_dir: str | Path = MODELS_DIR, name: str = DEFAULT_NAME) -> Path | None:
    """The shipped model's file, or None when this checkout has none."""
    path = Path(models_dir) / f"{name}.safetensors"
    return path if path.is_file() else None


def no_model_message(command: str) -> str:
    return (f"{command}: no --checkpoint given and no model shipped in {MODELS_DIR}. Fix: give --checkpoint "
            "results/runs/<run_id>/model.pt.")


def shipped_option(models_dir: str | Path = MODELS_DIR, name: str = DEFAULT_NAME) -> tuple[str, tuple[str, str]] | None:
    """(loss, (label, path)) of the shipped model for the review panel, or None when there is none."""
    path = shipped_model(models_dir, name)
    if path is None:
        return None
    card = json.loads(card_path(path).read_text()) if card_path(path).is_file() else {}
    accuracy = card.get("validation_accuracy_shipped")
    label = f"shipped model ({path.stem})" + (f": {100 * accuracy:.2f}% val" if accuracy is not None else "")
    if "loss" not in card:  # no card beside it: the checkpoint says
        from nanogpt.run.checkpoints import load_checkpoint

        card["loss"] = load_checkpoint(path)["loss"]
    return card["loss"], (label, str(path))


SHIPPED_BACKBONE_LR_SCALE = 0.25  # the fine-tuning of a start measured on files of one's own (docs/own-data.md)


def default_start(cfg, named=()) -> tuple[dict, str]:
    """What a run on a file of one's own that names no --init starts from, as (config changes, one line why): the
    shipped model's transformer (its head left behind, the body at SHIPPED_BACKBONE_LR_SCALE of the learning rate
    unless `named`, the fields the command line or notebook set, holds it) where a model is shipped and it fits the
    run (check_fits: its shape, and the file's validation texts not among the reviews it trained on); else random
    weights, the line saying why."""
    path = shipped_model()
    if path is None:
        return {}, "start: random weights (no model is shipped in models/; --init lm:PATH names a start)"
    from nanogpt.run.backbone import check_fits, load_backbone

    init = f"lm:{path}"
    try:
        check_fits(load_backbone(path), cfg.replace(init=init), path)
    except ValueError as exc:
        why = str(exc).split(": ", 1)[-1].split(". Fix:")[0]
        return {}, f"start: random weights, not the shipped model ({why})"
    changes = {"init": init}
    if "backbone_lr_scale" not in named:
        changes["backbone_lr_scale"] = SHIPPED_BACKBONE_LR_SCALE
    return changes, (f"start: the shipped model's transformer ({path.name}, an IMDB sentiment classifier; a fresh "
                     f"head, the body at {changes.get('backbone_lr_scale', cfg.backbone_lr_scale):g} of the learning "
                     "rate); --init scratch trains from random weights")


def card_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def ship(run_dir: str | Path, models_dir: str | Path = MODELS_DIR, name: str = DEFAULT_NAME,
         half: bool = True, note: str = "") -> dict:
    """Export the finished run in `run_dir` as `<models_dir>/<name>.safetensors` (+ `.json` card); returns the
    card. Refuses (ValueError) when the exported model's labels agree with the fp32 model's on fewer than
    MIN_AGREEMENT of the validation reviews, or when the file would exceed MAX_BYTES."""
    import pandas as pd

    from nanogpt.data.imdb import load_splits
    from nanogpt.run.checkpoints import export_safetensors, half_precision, load_checkpoint
    from nanogpt.run.config import TrainConfig
    from nanogpt.serve.predict import Classifier

    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "meta.json").read_text())
    ckpt = load_checkpoint(run_dir / "model.pt")
    exported = half_precision(ckpt) if half else ckpt
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"{name}.safetensors"
    tmp = models_dir / f".{name}.check.safetensors"
    export_safetensors(exported, tmp)
    try:
        cfg = TrainConfig(**ckpt["train_config"])
        _, val = load_splits(cfg)
        reference = pd.read_csv(run_dir / "val_predictions.csv")
        if len(reference) != len(val) or not np.array_equal(reference["label"].to_numpy(), val.labels):
            raise ValueError(f"{run_dir}: its val_predictions.csv is not the validation split its config makes.")
        classifier = Classifier.load(tmp)
        from nanogpt.run.evaluate import positive_probabilities

        probs = positive_probabilities(classifier.model, classifier.criterion, val, classifier.device, "fp32",
                                       64, cfg.pad_multiple, classifier.reading, classifier.window_stride)
        fp32_labels = reference["positive_probability"].to_numpy() > 0.5
        agreement = float(np.mean((probs > 0.5) == fp32_labels))
        accuracy = float(np.mean((probs > 0.5) == val.labels))
        bf16 = None  # measured only where this processor multiplies bf16 natively (elsewhere `auto` serves fp32)
        if classifier.device.type == "cpu" and cpu_has_fast_bf16():
            low = positive_probabilities(classifier.model, classifier.criterion, val, classifier.device, "bf16",
                                         64, cfg.pad_multiple, classifier.reading, classifier.window_stride)
            fp32 = reference["positive_probability"].to_numpy()
            bf16 = {"label_agreement_with_fp32": float(np.mean((low > 0.5) == fp32_labels)),
                    "max_probability_difference": float(np.max(np.abs(low - fp32))),
                    "validation_accuracy": float(np.mean((low > 0.5) == val.labels)), **processor_of("cpu"),
                    "serve": "serve --precision auto (or bf16) on such a processor"}
        if agreement < MIN_AGREEMENT:
            raise ValueError(f"the {'fp16' if half else 'exported'} model's labels agree with the fp32 model's on "
                             f"{100 * agreement:.2f}% of validation reviews, under {100 * MIN_AGREEMENT:.1f}%: "
                             "ship it with half=False.")
        size = tmp.stat().st_size
        if size > MAX_BYTES:
            raise ValueError(f"{size / 2**20:.1f} MiB is over the {MAX_BYTES / 2**20:.0f} MiB a shipped model may be.")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    row = meta["row"]
    card = {
        "model": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size,
        "weights": "float16" if half else "float32", "run_id": row["run_id"], "loss": ckpt["loss"],
        "data": {"source": cfg.source, "split_seed": cfg.split_seed, "val_fraction": cfg.val_fraction,
                 "n_train": row.get("n_train"), "n_val": row.get("n_val"), "n_dev": row.get("n_dev")},
        "recipe": {k: v for k, v in ckpt["train_config"].items() if k not in ("out_dir", "cache_dir", "quiet")},
        "init": row.get("init"), "reading": classifier.reading,
        "validation_accuracy_fp32": float(row["val_accuracy"]), "validation_accuracy_shipped": accuracy,
        "label_agreement_with_fp32": agreement, "bf16": bf16,
        "processor": {k: row.get(k) for k in ("device", "precision", "processor", "isa")
                      if row.get(k) is not None},
        "note": note,
    }
    atomic_write_json(card_path(path), card)
    return card


def describe(card: dict) -> str:
    """One line on what was shipped, from its card."""
    return (f"shipped {card['model']} ({card['bytes'] / 2**20:.1f} MiB, {card['weights']}): validation accuracy "
            f"{100 * card['validation_accuracy_shipped']:.2f}% (fp32 {100 * card['validation_accuracy_fp32']:.2f}%), "
            f"labels as fp32 on {100 * card['label_agreement_with_fp32']:.2f}% of validation reviews"
            + (f"; served in bf16 on this processor, {100 * card['bf16']['label_agreement_with_fp32']:.2f}%"
               if card.get("bf16") else ""))
