"""Classify reviews with a trained checkpoint: `Classifier.load(path).predict(texts)`.

Imports the model, the runtime, the evaluation pass and the checkpoint reader only: never the training loop
or the data stack (pandas, datasets, scikit-learn), so a service starts fast.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nanogpt.core.losses import LABEL_NAMES, Criterion
from nanogpt.core.model import GPTClassifier
from nanogpt.core.runtime import resolve_device, resolve_precision
from nanogpt.data.tokens import TokenizedSplit, tokenize_texts
from nanogpt.data.windows import READINGS, WHOLE, resolved_stride
from nanogpt.run.checkpoints import load_checkpoint, model_from_checkpoint
from nanogpt.run.evaluate import positive_probabilities


@dataclass
class Predictions:
    labels: np.ndarray  # int64: 0 = negative, 1 = positive
    probabilities: np.ndarray  # float64: P(positive)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def sentiments(self) -> list[str]:
        return [LABEL_NAMES[int(i)] for i in self.labels]

    def to_records(self) -> list[dict]:
        return [{"label": int(y), "sentiment": LABEL_NAMES[int(y)], "positive_probability": float(p)}
                for y, p in zip(self.labels, self.probabilities)]


def check_texts(texts) -> list[str]:
    """A list of non-empty review strings, or a clear TypeError/ValueError naming the bad element. Takes one
    review, or any ordered collection of them: a list or tuple, a pandas Series, a numpy array of strings, a
    `datasets` Column, a generator. Unordered or keyed containers (a set, a dict) are refused: the answers come
    back in the order of the texts."""
    if isinstance(texts, str):
        texts = [texts]
    elif texts is None or isinstance(texts, (bytes, bytearray, Mapping, AbstractSet)) or not isinstance(texts, Iterable):
        raise TypeError(f"Expected a review (str) or a sequence of reviews (list, tuple, pandas Series, numpy array, "
                        f"datasets Column), got {type(texts).__name__}.")
    texts = list(texts)
    if len(texts) == 0:
        raise ValueError("No reviews given: pass at least one review text.")
    clean = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"Review {i} is a {type(t).__name__}, not text: pass strings only.")
        if not t.strip():
            raise ValueError(f"Review {i} is empty (or only whitespace): type a review to classify.")
        # Lone surrogates cannot be encoded as UTF-8 bytes for the tokenizer; replace them, keep the rest.
        clean.append(t.encode("utf-8", "replace").decode("utf-8"))
    return clean


class Classifier:
    def __init__(self, model: GPTClassifier, criterion: Criterion, truncation: str, head_fraction: float,
                 device: torch.device, precision: str, checkpoint: dict | None = None, reading: str = "truncated",
                 window_stride: int | None = None):
        if reading not in READINGS:
            raise ValueError(f"reading must be one of {READINGS}, got {reading!r}.")
        if reading == "truncated" and truncation == "random_window":
            raise ValueError("This model was trained on random windows: read it with reading='windows'.")
        self.model = model.eval()
        model.last_position_only = True  # under last-token pooling the last block runs at the pooled token only
        self.criterion = criterion
        self.truncation = truncation
        self.head_fraction = head_fraction
        self.device = device
        self.precision = precision
        self.checkpoint = checkpoint or {}
        self.reading = reading
        self.window_stride = resolved_stride(model.config.block_size, window_stride) if reading == "windows" else None

    @property
    def loss(self) -> str:
        return self.criterion.name

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", precision: str = "fp32", reading: str | None = None,
             window_stride: int | None = None) -> "Classifier":
        """Load a model.pt written by training. fp32 on CPU by default: predictions then do not depend on
        whether the processor has bf16. Long reviews are read as the checkpoint records (`reading`: its scoring
        in training; older checkpoints `truncated`) unless `reading` says otherwise."""
        ckpt = load_checkpoint(path)
        model, criterion = model_from_checkpoint(ckpt, path)
        dev = resolve_device(device)
        model.to(dev)
        if reading is None:
            reading, window_stride = ckpt.get("reading", "truncated"), window_stride or ckpt.get("window_stride")
        return cls(model, criterion, ckpt.get("truncation", "head_tail"), float(ckpt.get("head_fraction", 0.25)),
                   dev, resolve_precision(precision, dev), ckpt, reading, window_stride)

    def tokenize(self, texts) -> TokenizedSplit:
        """Unlabelled token ids of one review or a list of them: truncated as in training, or whole when they are
        read as windows."""
        if self.reading == "windows":
            return tokenize_texts(check_texts(texts), None, WHOLE, "head")
        return tokenize_texts(check_texts(texts), None, self.model.config.block_size, self.truncation,
                              self.head_fraction)

    def predict(self, texts, batch_size: int = 64) -> Predictions:
        """Labels and P(positive) for one review or a sequence of them (see check_texts); long reviews are
        truncated as in training, or read whole in windows (`reading`)."""
        split = self.tokenize(texts)
        probs = positive_probabilities(self.model, self.criterion, split, self.device, self.precision, batch_size,
                                       reading=self.reading, stride=self.window_stride)
        return Predictions(labels=(probs > 0.5).astype(np.int64), probabilities=probs)
