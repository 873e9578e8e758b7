"""Classifier checkpoints (`model.pt`): written atomically, read without ever executing anything in them.

A checkpoint holds only tensors and plain containers and is read back with `torch.load(weights_only=True)`.
It describes itself (model config, loss, tokenizer, truncation, data source and split, the run's config), so
a model can be rebuilt from the file alone.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import asdict
from pathlib import Path

import torch

from nanogpt.core.artifacts import atomic_write_bytes
from nanogpt.core.losses import Criterion, get_criterion
from nanogpt.core.model import GPTClassifier, ModelConfig
from nanogpt.data.tokenizer import TOKENIZER_NAME

CHECKPOINT_FORMAT = "nanogpt-imdb-classifier/1"


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of this project."""


def save_torch_atomic(path: str | Path, payload: dict) -> str:
    """`torch.save` of plain tensors and containers, written atomically; returns the file's sha256."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def classifier_payload(model: GPTClassifier, loss: str, truncation: str, head_fraction: float, **extra) -> dict:
    """What a classifier checkpoint holds: CPU weights, architecture, loss, tokenizer, truncation, plus `extra`
    (training records it: data source, split seed, train config, step, validation accuracy)."""
    return {"model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "model_config": asdict(model.config), "loss": loss, "tokenizer": TOKENIZER_NAME,
            "truncation": truncation, "head_fraction": head_fraction, **extra}


def half_precision(payload: dict) -> dict:
    """The same checkpoint with its floating-point weights in fp16: half the disk. Loading casts them back to
    the model's dtype; predictions move by about fp16's rounding (1e-3 relative), not more."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in payload["model_state"].items()}
    return {**payload, "model_state": state, "weights_dtype": "float16"}


def save_checkpoint(path: str | Path, payload: dict) -> str:
    """Write a classifier checkpoint atomically; returns its sha256 (recorded with the run, verified later)."""
    return save_torch_atomic(path, {"format": CHECKPOINT_FORMAT, **payload})


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint`; any other file gives one clear CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}. Fix: pass the model.pt of a finished run "
                                "(results/runs/<run_id>/model.pt).")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated, corrupt, or holds objects "
                              f"that are not plain tensors): {load_failure_reason(exc)}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a checkpoint of this project (format {found!r}, "
                              f"expected {CHECKPOINT_FORMAT!r}).")
    for key in ("model_state", "model_config", "loss"):
        if key not in ckpt:
            raise CheckpointError(f"{path} lacks '{key}'; it was not written by nanogpt.run.train.")
    return ckpt


def load_failure_reason(exc: Exception) -> str:
    """Why torch.load refused a file, without torch's advice to retry with weights_only=False: that would
    execute whatever the file holds, which must never be suggested for a file of unknown origin."""
    text = str(exc).strip()
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and "weights_only" not in line and "torch.load" not in line]
    return (lines[0][:300] if lines else type(exc).__name__)


def model_from_checkpoint(ckpt: dict, path: str | Path, attention: str = "auto") -> tuple[GPTClassifier, Criterion]:
    """The model (on CPU, weights loaded) and criterion a checkpoint describes, or a CheckpointError saying
    which part does not fit."""
    try:
        config = ModelConfig.from_dict(ckpt["model_config"])
        criterion = get_criterion(ckpt["loss"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its model config or loss is not one this code knows ({exc}).") from exc
    if config.n_outputs != criterion.n_outputs:
        raise CheckpointError(f"{path}: loss {criterion.name!r} needs {criterion.n_outputs} outputs but the "
                              f"model has {config.n_outputs}.")
    model = GPTClassifier(config, attention)
    try:
        model.load_state_dict(ckpt["model_state"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model config it records: "
                              f"{str(exc).splitlines()[0]} ...") from exc
    return model, criterion
