"""The two training criteria of the study, behind one interface chosen by name.

Cross-Entropy: a head of 2 logits (a, b), softmax, P(positive) = softmax(a, b)[1].
Binary Cross-Entropy: a head of 1 logit z, sigmoid, P(positive) = sigmoid(z).
They are the same function of the logits: CE over (a, b) equals BCE over z = b - a, because
softmax(a, b)[1] = 1 / (1 + exp(a - b)) = sigmoid(b - a). What differs is only the parametrisation the
optimiser sees: CE has an extra row in the head (its own init and weight decay) and a gradient that is split
between two logits. That difference is exactly what the study measures.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LABEL_NAMES = ("negative", "positive")  # label 0, label 1: what "P(positive)" is the probability of


class Criterion:
    name: str
    n_outputs: int

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def soft_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The same loss against soft targets: `targets` is P(positive) per example (a teacher's, when distilling);
        at targets 0 and 1 it is `loss` with those labels."""
        raise NotImplementedError

    def positive_probability(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Labels 0/1 at a probability threshold of 0.5."""
        return (self.positive_probability(logits) > 0.5).long()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CrossEntropyCriterion(Criterion):
    name = "ce"
    n_outputs = 2

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels.long())

    def soft_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = targets.float()
        return F.cross_entropy(logits.float(), torch.stack([1 - p, p], dim=-1))

    def positive_probability(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=-1)[:, 1]


class BinaryCrossEntropyCriterion(Criterion):
    name = "bce"
    n_outputs = 1

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float().squeeze(-1), labels.float())

    def soft_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float().squeeze(-1), targets.float())

    def positive_probability(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float().squeeze(-1))


CRITERIA = {"ce": CrossEntropyCriterion, "bce": BinaryCrossEntropyCriterion}
LOSS_NAMES = tuple(CRITERIA)


def get_criterion(name: str) -> Criterion:
    """`"ce"` or `"bce"` (case-insensitive)."""
    key = str(name).lower()
    if key not in CRITERIA:
        raise ValueError(f"Unknown loss {name!r}; use one of {LOSS_NAMES}.")
    return CRITERIA[key]()
