"""Running a trained model over many reviews: P(positive) for prediction, and the loss too for training.

Reviews go through in order of length (little padding) and come back in their own order. Prediction needs
no labels; the training pass adds the mean loss on the labelled validation split. Under the `windows` reading
(`windows.py`) the split holds whole reviews: each is read as its windows, and its logits are the mean of
theirs; a review that fits the block gets the logits the `truncated` reading gives it.
"""
from __future__ import annotations

import numpy as np
import torch

from nanogpt.core.losses import Criterion
from nanogpt.core.runtime import autocast
from nanogpt.data.batching import collate_ids
from nanogpt.data.tokens import TokenizedSplit
from nanogpt.data.windows import expand_windows, pool_windows, resolved_stride


def _logits_by_length(model: torch.nn.Module, split: TokenizedSplit, device: torch.device, precision: str,
                      batch_size: int, pad_multiple: int):
    """(review indices, logits) batch by batch, shortest reviews first, in eval mode without gradients."""
    was_training = model.training
    model.eval()
    order = np.argsort(split.lengths, kind="stable")  # similar lengths together: little padding
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                x, lengths = (t.to(device) for t in collate_ids(split, idx, pad_multiple))
                with autocast(device, precision):
                    logits = model(x, lengths)
                yield idx, logits  # outside autocast: the caller's loss and softmax run as before, in fp32
    finally:
        model.train(was_training)


def window_logits(model: torch.nn.Module, split: TokenizedSplit, device: torch.device, precision: str,
                  batch_size: int = 64, pad_multiple: int = 8, stride: int | None = None) -> np.ndarray:
    """Logits (n, n_outputs), float32, of every review of `split` (whole reviews) read as overlapping windows of the
    model's block: each review's the mean of its windows' (`windows.pool_windows`), in split order."""
    block = model.config.block_size
    windows, owner = expand_windows(split, block, resolved_stride(block, stride))
    out = np.empty((len(windows), model.config.n_outputs), dtype=np.float32)
    for idx, logits in _logits_by_length(model, windows, device, precision, batch_size, pad_multiple):
        out[idx] = logits.float().cpu().numpy()
    return pool_windows(out, owner, len(split))


def positive_probabilities(model: torch.nn.Module, criterion: Criterion, split: TokenizedSplit,
                           device: torch.device, precision: str, batch_size: int = 64,
                           pad_multiple: int = 8, reading: str = "truncated",
                           stride: int | None = None) -> np.ndarray:
    """P(positive) for every review of `split`, in split order; labels are not needed. Under `reading="windows"`
    the split holds whole reviews, read as windows `stride` apart (half a block when None)."""
    if reading == "windows":
        logits = torch.from_numpy(window_logits(model, split, device, precision, batch_size, pad_multiple, stride))
        return criterion.positive_probability(logits).double().numpy()
    _check_reading(reading)
    probs = np.empty(len(split), dtype=np.float64)
    for idx, logits in _logits_by_length(model, split, device, precision, batch_size, pad_multiple):
        probs[idx] = criterion.positive_probability(logits).cpu().double().numpy()
    return probs


def evaluate(model: torch.nn.Module, criterion: Criterion, split: TokenizedSplit, device: torch.device,
             precision: str, batch_size: int = 64, pad_multiple: int = 8, reading: str = "truncated",
             stride: int | None = None) -> tuple[np.ndarray, float]:
    """P(positive) for every review of the labelled `split` (in split order) and the mean loss (under `windows`,
    of the pooled logits)."""
    if split.labels is None:
        raise ValueError("evaluate needs labelled reviews; use positive_probabilities for unlabelled ones.")
    if reading == "windows":
        logits = torch.from_numpy(window_logits(model, split, device, precision, batch_size, pad_multiple, stride))
        y = torch.from_numpy(split.labels)
        return criterion.positive_probability(logits).double().numpy(), criterion.loss(logits, y).item()
    _check_reading(reading)
    probs = np.empty(len(split), dtype=np.float64)
    total_loss = 0.0
    for idx, logits in _logits_by_length(model, split, device, precision, batch_size, pad_multiple):
        y = torch.from_numpy(split.labels[idx]).to(device)
        total_loss += criterion.loss(logits, y).item() * len(idx)
        probs[idx] = criterion.positive_probability(logits).cpu().double().numpy()
    return probs, total_loss / len(split)


def _check_reading(reading: str) -> None:
    if reading != "truncated":
        raise ValueError(f"reading must be 'truncated' or 'windows', got {reading!r}.")
