"""Running a trained model over many reviews: P(positive) for prediction, and the loss too for training.

Reviews go through in order of length (little padding) and come back in their own order. Prediction needs
no labels; the training pass adds the mean loss on the labelled validation split.
"""
from __future__ import annotations

import numpy as np
import torch

from nanogpt.core.losses import Criterion
from nanogpt.core.runtime import autocast
from nanogpt.data.batching import collate_ids
from nanogpt.data.tokens import TokenizedSplit


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


def positive_probabilities(model: torch.nn.Module, criterion: Criterion, split: TokenizedSplit,
                           device: torch.device, precision: str, batch_size: int = 64,
                           pad_multiple: int = 8) -> np.ndarray:
    """P(positive) for every review of `split`, in split order; labels are not needed."""
    probs = np.empty(len(split), dtype=np.float64)
    for idx, logits in _logits_by_length(model, split, device, precision, batch_size, pad_multiple):
        probs[idx] = criterion.positive_probability(logits).cpu().double().numpy()
    return probs


def evaluate(model: torch.nn.Module, criterion: Criterion, split: TokenizedSplit, device: torch.device,
             precision: str, batch_size: int = 64, pad_multiple: int = 8) -> tuple[np.ndarray, float]:
    """P(positive) for every review of the labelled `split` (in split order) and the mean loss."""
    if split.labels is None:
        raise ValueError("evaluate needs labelled reviews; use positive_probabilities for unlabelled ones.")
    probs = np.empty(len(split), dtype=np.float64)
    total_loss = 0.0
    for idx, logits in _logits_by_length(model, split, device, precision, batch_size, pad_multiple):
        y = torch.from_numpy(split.labels[idx]).to(device)
        total_loss += criterion.loss(logits, y).item() * len(idx)
        probs[idx] = criterion.positive_probability(logits).cpu().double().numpy()
    return probs, total_loss / len(split)
