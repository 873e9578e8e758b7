"""Training that fits the data: a schedule in passes over it, and the checkpoint chosen on a development slice.

A user's file may hold a few hundred texts or a few hundred thousand; a fixed number of steps is many passes
over the first and a fraction of one over the second. `scheduled` turns `epochs` into steps for the data at hand.
`DevSelection` watches the development slice (carved from the training part by `carve_dev`, never from the
validation part) at every validation pass: it keeps a copy of the best weights (`keep_best`) and says when to
stop (`early_stopping` passes without a better development accuracy). The validation split never chooses
anything; it only scores what was chosen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def scheduled(cfg, n_train: int):
    """`cfg` with max_steps, eval_interval and warmup_steps set from `epochs` for `n_train` training reviews (the
    config itself when it has no `epochs`)."""
    if cfg.epochs is None:
        return cfg
    per_epoch = max(1, math.ceil(n_train / cfg.batch_size))
    steps = max(1, math.ceil(cfg.epochs * per_epoch))
    return cfg.replace(max_steps=steps, eval_interval=max(1, math.ceil(per_epoch / cfg.evals_per_epoch)),
                       warmup_steps=min(cfg.warmup_steps, steps // 10))


def carve_dev(split, fraction: float, seed: int, origin: str = "training part"):
    """(training reviews, development slice): a stratified `fraction` of `split` drawn with `seed` (the split
    seed, so every training seed of a study selects on the same reviews)."""
    from nanogpt.data.imdb import split_indices

    keep, dev = split_indices(split.labels, seed + 1, fraction, origin)  # + 1: not the validation split's draw
    return split.take(np.sort(keep)), split.take(np.sort(dev))


@dataclass
class DevSelection:
    """The best point on the development slice so far, and whether training should stop."""

    patience: int = 0  # validation passes without a better development accuracy before stopping; 0: never
    keep_best: bool = False  # keep a copy of the best weights (restored at the end)
    best_step: int | None = None
    best_accuracy: float = -math.inf
    best_loss: float = math.inf
    since_best: int = 0
    stopped_at: int | None = None
    best_state: dict | None = field(default=None, repr=False)

    def observe(self, step: int, accuracy: float, loss: float, model) -> bool:
        """Record a development score at `step`; True when training should stop here."""
        better = accuracy > self.best_accuracy or (accuracy == self.best_accuracy and loss < self.best_loss)
        if better:
            self.best_step, self.best_accuracy, self.best_loss, self.since_best = step, accuracy, loss, 0
            if self.keep_best:
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.since_best += 1
        if self.patience and self.since_best >= self.patience:
            self.stopped_at = step
            return True
        return False

    def restore(self, model) -> bool:
        """Load the best weights into `model`; False when there are none to load (keep_best off, or no pass)."""
        if not self.keep_best or self.best_state is None:
            return False
        model.load_state_dict(self.best_state)
        return True

    def state(self) -> dict:
        """Everything needed to resume it (saved with the training state)."""
        return {"best_step": self.best_step, "best_accuracy": self.best_accuracy, "best_loss": self.best_loss,
                "since_best": self.since_best, "stopped_at": self.stopped_at, "best_state": self.best_state}

    def load(self, state: dict | None) -> None:
        for key, value in (state or {}).items():
            setattr(self, key, value)

    def summary(self) -> dict:
        """What the run's row and meta record of the choice."""
        return {"best_step": self.best_step, "best_dev_accuracy": None if self.best_step is None
                else self.best_accuracy, "best_dev_loss": None if self.best_step is None else self.best_loss,
                "stopped_early_at": self.stopped_at}
