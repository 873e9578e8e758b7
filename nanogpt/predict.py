"""Classify reviews with a trained checkpoint: `Classifier.load(path).predict(texts)`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nanogpt.artifacts import CheckpointError, load_checkpoint
from nanogpt.data import TokenizedSplit, tokenize_texts
from nanogpt.losses import Criterion, get_criterion
from nanogpt.model import GPTClassifier, ModelConfig
from nanogpt.train import predict_split, resolve_device, resolve_precision

LABEL_NAMES = ("negative", "positive")


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
        return [{"label": int(l), "sentiment": LABEL_NAMES[int(l)], "positive_probability": float(p)}
                for l, p in zip(self.labels, self.probabilities)]


def check_texts(texts) -> list[str]:
    """A list of non-empty review strings, or a clear TypeError/ValueError naming the bad element."""
    if isinstance(texts, str):
        texts = [texts]
    elif texts is None or not isinstance(texts, (list, tuple)):
        raise TypeError(f"Expected a review (str) or a list of reviews, got {type(texts).__name__}.")
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
                 device: torch.device, precision: str, checkpoint: dict | None = None):
        self.model = model.eval()
        self.criterion = criterion
        self.truncation = truncation
        self.head_fraction = head_fraction
        self.device = device
        self.precision = precision
        self.checkpoint = checkpoint or {}

    @property
    def loss(self) -> str:
        return self.criterion.name

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", precision: str = "fp32") -> "Classifier":
        """Load a model.pt written by training. fp32 on CPU by default: predictions then do not depend on
        whether the processor has bf16."""
        ckpt = load_checkpoint(path)
        try:
            config = ModelConfig(**ckpt["model_config"])
            criterion = get_criterion(ckpt["loss"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: its model config or loss is not one this code knows ({exc}).") from exc
        if config.n_outputs != criterion.n_outputs:
            raise CheckpointError(f"{path}: loss {criterion.name!r} needs {criterion.n_outputs} outputs but the "
                                  f"model has {config.n_outputs}.")
        model = GPTClassifier(config)
        try:
            model.load_state_dict(ckpt["model_state"], strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: weights do not fit the model config it records: "
                                  f"{str(exc).splitlines()[0]} ...") from exc
        dev = resolve_device(device)
        model.to(dev)
        return cls(model, criterion, ckpt.get("truncation", "head_tail"), float(ckpt.get("head_fraction", 0.25)),
                   dev, resolve_precision(precision, dev), ckpt)

    def tokenize(self, texts) -> TokenizedSplit:
        clean = check_texts(texts)
        return tokenize_texts(clean, np.zeros(len(clean), dtype=np.int64), self.model.config.block_size,
                              self.truncation, self.head_fraction)

    def predict(self, texts, batch_size: int = 64) -> Predictions:
        """Labels and P(positive) for one review or a list of them; long reviews are truncated as in training."""
        split = self.tokenize(texts)
        probs, _ = predict_split(self.model, self.criterion, split, self.device, self.precision, batch_size)
        return Predictions(labels=(probs > 0.5).astype(np.int64), probabilities=probs)
