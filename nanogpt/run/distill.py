"""Distillation: one student trained on the probabilities of a teacher (an ensemble of runs) over the training texts.

Hinton, Vinyals and Dean (2015), "Distilling the knowledge in a neural network"; Furlanello et al. (2018),
"Born-again neural networks" (a student of the teacher's own size): the probabilities of several models averaged
carry more than the labels (how sure, and about which reviews), and a single student trained on them can keep part
of the ensemble's gain at one model's cost to serve.

A teacher file (`.npz`, no pickled objects) holds P(positive) for every review of one training part, in the order
the training loop sees it, with a digest of those reviews' tokens and labels: a student reads it only for exactly
those reviews (same data, split seed, development slice), and refuses anything else in one line. The teacher scores
training texts only; the validation split's reviews never enter it. The student's loss is

    (1 - w) * loss(logits, labels) + w * loss(logits, teacher's P(positive))

with the run's own criterion (CE against [1 - p, p], or BCE against p: `Criterion.soft_loss`), w = `distill_weight`.
At a temperature T > 1 (`distill_temperature`, Hinton et al.'s softening) the teacher's log-odds and the student's
logits are divided by T in the second term, which is multiplied by T^2 so that its gradient keeps its size; the
student still answers at T = 1.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from nanogpt.core.artifacts import atomic_write_bytes

TEACHER_FORMAT = "nanogpt-teacher-1"


class TeacherError(ValueError):
    """A teacher file that cannot be read, or that scored other reviews than this run trains on."""


def reviews_digest(split) -> str:
    """sha256 of a split's reviews in order: their tokens, where each starts, and their labels."""
    h = hashlib.sha256()
    for part in (split.tokens.astype(np.uint16), split.offsets.astype(np.int64), np.asarray(split.labels, np.int64)):
        h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()


def write_teacher(path: str | Path, probabilities: np.ndarray, split, members: list[str]) -> Path:
    """Write a teacher file atomically: P(positive) for each review of `split` (the training part it scored),
    and the run ids whose probabilities were averaged."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.shape != (len(split),) or not np.all((probabilities >= 0) & (probabilities <= 1)):
        raise TeacherError(f"a teacher needs one probability in [0, 1] per training review ({len(split)}), got "
                           f"shape {probabilities.shape}.")
    buffer = io.BytesIO()
    np.savez(buffer, probabilities=probabilities,
             meta=np.frombuffer(json.dumps({"format": TEACHER_FORMAT, "reviews_sha256": reviews_digest(split),
                                            "members": list(members)}).encode(), dtype=np.uint8))
    return atomic_write_bytes(path, buffer.getvalue())


def read_teacher(path: str | Path) -> tuple[np.ndarray, dict]:
    """(probabilities, meta) of a teacher file; a TeacherError saying what is wrong otherwise."""
    path = Path(path)
    fix = "Fix: form it again (`python -m nanogpt levers` with a distill arm writes it)."
    try:
        with np.load(path, allow_pickle=False) as z:
            probabilities, meta = z["probabilities"], json.loads(z["meta"].tobytes().decode())
    except FileNotFoundError:
        raise TeacherError(f"teacher {path}: no such file. {fix}") from None
    except Exception as exc:  # a truncated zip, a missing array, bad JSON: all one answer
        raise TeacherError(f"teacher {path} cannot be read ({type(exc).__name__}: {exc}). {fix}") from exc
    if not isinstance(meta, dict) or meta.get("format") != TEACHER_FORMAT:
        raise TeacherError(f"teacher {path} is not a teacher file of this project (format "
                           f"{meta.get('format') if isinstance(meta, dict) else meta!r}). {fix}")
    return probabilities.astype(np.float32), meta


def load_teacher(path: str | Path, split) -> np.ndarray:
    """The teacher's P(positive) for each review of `split`, refused unless it scored exactly these reviews."""
    probabilities, meta = read_teacher(path)
    if len(probabilities) != len(split) or meta.get("reviews_sha256") != reviews_digest(split):
        raise TeacherError(f"teacher {path} scored other reviews ({len(probabilities)}) than this run trains on "
                           f"({len(split)}): its data, split seed or development slice differ. Fix: form the teacher "
                           "from runs with this run's data settings.")
    return probabilities


def softened(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """P(positive) with its log-odds divided by `temperature` (1: unchanged)."""
    if temperature == 1.0:
        return probabilities
    p = probabilities.double().clamp(1e-12, 1 - 1e-12)
    return torch.sigmoid(torch.log(p / (1 - p)) / temperature).to(probabilities.dtype)


def distilled_objective(criterion, logits: torch.Tensor, label_loss: torch.Tensor, targets: torch.Tensor,
                        weight: float, temperature: float = 1.0) -> torch.Tensor:
    """(1 - weight) x the labels' loss (given: the loop logs it) + weight x T^2 x the loss of the logits / T
    against the teacher's probabilities `targets` softened at T."""
    soft = criterion.soft_loss(logits / temperature, softened(targets, temperature)) * temperature ** 2
    return (1.0 - weight) * label_loss + weight * soft


def ensemble_teacher(run_dirs: list[Path], path: str | Path) -> Path:
    """Score the training part (development slice carved off, as the runs trained) with each run's kept weights,
    average their probabilities, and write them as a teacher file at `path`. The runs must share their data
    settings; the validation split is not read."""
    from nanogpt.core.losses import get_criterion
    from nanogpt.core.runtime import resolve_device
    from nanogpt.data.imdb import load_splits
    from nanogpt.run.checkpoints import load_checkpoint, model_from_checkpoint
    from nanogpt.run.config import TrainConfig
    from nanogpt.run.evaluate import evaluate
    from nanogpt.run.selection import carve_dev

    if not run_dirs:
        raise TeacherError("an ensemble teacher needs at least one finished run with its weights (model.pt).")
    probabilities, members, data = [], [], None
    for run_dir in run_dirs:
        ckpt = load_checkpoint(Path(run_dir) / "model.pt")
        cfg = TrainConfig(**ckpt["train_config"])
        settings = (cfg.source, cfg.split_seed, cfg.val_fraction, cfg.dev_fraction, cfg.train_limit, cfg.block_size,
                    cfg.truncation, cfg.head_fraction)
        if data is None:
            data = settings
            train_split, _ = load_splits(cfg.replace(val_limit=2), verbose=False)
            if cfg.dev_fraction:
                train_split, _ = carve_dev(train_split, cfg.dev_fraction, cfg.split_seed)
        elif settings != data:
            raise TeacherError(f"{run_dir} trained on other data settings than {run_dirs[0]}; a teacher averages "
                               "runs of one training part.")
        model, _ = model_from_checkpoint(ckpt, Path(run_dir) / "model.pt")
        probs, _ = evaluate(model, get_criterion(cfg.loss), train_split, resolve_device("cpu"), "fp32",
                            cfg.eval_batch_size, cfg.pad_multiple, cfg.reading, cfg.window_stride)
        probabilities.append(probs)
        members.append(Path(run_dir).name)
    return write_teacher(path, np.mean(probabilities, axis=0), train_split, members)
