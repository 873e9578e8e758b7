"""Classifier checkpoints (`model.pt`): written atomically, read without ever executing anything in them.

A checkpoint holds only tensors and plain containers and is read back with `torch.load(weights_only=True)`.
It describes itself (model config, loss, tokenizer, truncation, data source and split, the run's config), so
a model can be rebuilt from the file alone.

A model shipped with the repository is the same checkpoint in `safetensors` (`export_safetensors`): the tensors,
and everything else as JSON in the header's metadata, with a sha256 of the tensors' bytes that `load_checkpoint`
checks, so a truncated or altered file is one clear error, never a model that answers differently.
"""
from __future__ import annotations

import hashlib
import io
import json
import struct
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


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def export_safetensors(ckpt: dict, path: str | Path) -> str:
    """Write checkpoint `ckpt` (as `load_checkpoint` returns it) as a safetensors file, atomically: its tensors,
    and the rest as JSON metadata with the tensors' sha256. Returns the file's sha256."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in ckpt["model_state"].items()}
    rest = {k: v for k, v in ckpt.items() if k != "model_state"}
    data = save(tensors, metadata={"format": CHECKPOINT_FORMAT, "checkpoint": json.dumps(rest, sort_keys=True),
                                   "tensors_sha256": _tensor_digest(tensors)})
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def _load_safetensors(path: Path) -> dict:
    from safetensors.torch import load

    data = path.read_bytes()
    try:
        (size,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8:8 + size])["__metadata__"]
        tensors = load(data)
        rest = json.loads(meta["checkpoint"])
        expected = meta["tensors_sha256"]
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint of this project (truncated or "
                              f"corrupt: {' '.join(str(exc).split())[:200] or type(exc).__name__}). Fix: restore it "
                              "with `git checkout -- <file>` or export it again.") from None
    if _tensor_digest(tensors) != expected:
        raise CheckpointError(f"{path}: its weights do not match the digest in its header (the file was altered). "
                              "Fix: restore it with `git checkout -- <file>` or export it again.")
    return {**rest, "model_state": tensors, "format": meta.get("format")}


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint` (or `export_safetensors`, a .safetensors file); any other
    file gives one clear CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}. Fix: pass the model.pt of a finished run "
                                "(results/runs/<run_id>/model.pt).")
    if path.suffix == ".safetensors":
        ckpt = _load_safetensors(path)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} is not a checkpoint of this project (format {ckpt.get('format')!r}, "
                                  f"expected {CHECKPOINT_FORMAT!r}).")
        return _complete(ckpt, path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated, corrupt, or holds objects "
                              f"that are not plain tensors): {load_failure_reason(exc)}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a checkpoint of this project (format {found!r}, "
                              f"expected {CHECKPOINT_FORMAT!r}).")
    return _complete(ckpt, path)


def _complete(ckpt: dict, path: Path) -> dict:
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
