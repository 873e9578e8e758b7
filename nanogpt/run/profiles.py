"""Named configurations: `smoke` (CI), `fast` (hundreds of runs for the powered study), `cpu` (a real result on a
laptop-class CPU), `ft` (scratch against a pre-trained backbone, see pretrain.py), `paper` (GPU).

A profile is a TrainConfig with every choice written down, plus the seeds its default study runs. The loss
and the seed are filled in per run; everything else is fixed by the profile, so runs of one profile differ
only in what the study compares.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from nanogpt.run.config import TrainConfig


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    config: TrainConfig
    seeds: tuple[int, ...]  # the seeds `study` runs by default, for each loss

    def make_config(self, loss: str = "ce", seed: int = 0, **overrides) -> TrainConfig:
        return self.config.replace(**{"loss": loss, "seed": seed, "profile": self.name, **overrides}).validate()


SMOKE = Profile(
    name="smoke",
    description="CI and tests: about 10 seconds per run on 2 CPU cores, ~82% on 1,000 validation reviews",
    seeds=(0, 1),
    config=TrainConfig(
        profile="smoke",
        block_size=128,  # short reviews keep steps cheap; head_tail keeps the verdict
        train_limit=6000,  # a third of the training split is enough to learn well above chance
        val_limit=1000,  # a smaller validation set: +-1.5 points of sampling error, fine for a smoke test
        n_layer=1,
        n_head=2,
        n_embd=64,
        dropout=0.0,  # too few steps to overfit; dropout would only slow it down
        gelu="none",  # exact GELU: 6.5 ms against 13.4 ms for the tanh form (bf16 fwd+bwd, 8M values, CPU)
        pooling="last",
        batch_size=32,
        max_steps=300,
        learning_rate=2e-3,  # small model, short schedule: a high peak rate
        warmup_steps=30,
        eval_interval=100,
    ),
)

CPU = Profile(
    name="cpu",
    description="a real result on 2 CPU cores: ~88% validation accuracy in about 2.2 minutes per run with "
                "AVX512-BF16, 7-8 minutes in fp32 (AVX2 only)",
    seeds=(0, 1, 2, 3, 4),  # 10 runs and the notebooks: 22 minutes on 2 cores with AVX512-BF16
    config=TrainConfig(
        profile="cpu",
        block_size=384,  # 77% of reviews fit whole; longer ones keep head and tail
        n_layer=2,
        n_head=4,
        n_embd=128,  # 77-84k tokens/s; at 256 dims (27k tokens/s then) it learned less in equal time
        dropout=0.1,
        attn_dropout=0.0,  # > 0 sends attention to SDPA, and to its slow path there (1.7-2x slower step)
        gelu="none",  # exact GELU: half the cost of the tanh form on CPU
        pooling="last",  # 256-dim trial, 600 steps, CE seed 0: last token 87.1%, mean pooling 82.9%
        batch_size=32,
        max_steps=1200,  # about 1.9 epochs of the 19,923 training reviews
        learning_rate=2e-3,  # right for 128 dims; the 256-dim model did worse at 2e-3 than at 1e-3
        warmup_steps=100,
        eval_interval=400,  # three full validation passes give the learning curve
    ),
)

FAST = Profile(
    name="fast",
    description="many runs for the powered study: ~18 s per run on 2 CPU cores, full split, ~86% accuracy",
    seeds=tuple(range(100)),  # the powered study: 100 runs per loss on the fixed split
    config=TrainConfig(
        profile="fast",
        block_size=128,  # head_tail at 128: 600 steps -> CE 86.8%, BCE 85.9% (seed 0); 400 steps: 84.6 / 83.8%
        n_layer=1,
        n_head=2,
        n_embd=64,
        dropout=0.0,  # 600 steps is under one epoch: nothing to regularise
        gelu="none",
        pooling="last",
        batch_size=32,
        max_steps=600,  # 0.96 epochs; 18 s wall per run in one process on 2 cores (fp32, 135-150k tokens/s)
        learning_rate=2e-3,
        warmup_steps=60,
        eval_interval=600,  # one validation pass, at the end; the training loss is logged every 50 steps
        precision="fp32",  # pinned, so runs from machines with and without bf16 are one population
    ),
)

FT = Profile(
    name="ft",
    description="scratch against pre-trained (`--init lm:<backbone>` of `pretrain --profile lm-cpu`): the lm-cpu "
                "backbone's shape, 2.6-2.7 min of training per run on 2 AVX2 cores",
    seeds=(0, 1, 2, 3, 4),
    config=TrainConfig(
        profile="ft",
        block_size=256,  # the lm-cpu backbone's window; head_tail keeps opening and verdict
        n_layer=2,  # the lm-cpu backbone: 2 x 128, 4 heads, exact GELU (backbone.ARCHITECTURE must match)
        n_head=4,
        n_embd=128,
        dropout=0.1,
        gelu="none",
        pooling="last",
        batch_size=32,
        max_steps=600,  # ~1 epoch; the same schedule for scratch and pre-trained runs
        learning_rate=2e-3,
        warmup_steps=60,
        eval_interval=200,
        precision="fp32",  # pinned: one population on machines with and without bf16
    ),
)

PAPER = Profile(
    name="paper",
    description="GPU: a larger model and a longer schedule, 10 seeds per loss",
    seeds=tuple(range(10)),
    config=TrainConfig(
        profile="paper",
        block_size=512,  # 85% of reviews fit whole
        n_layer=6,
        n_head=6,
        n_embd=384,
        dropout=0.1,
        gelu="none",
        pooling="last",
        batch_size=64,
        max_steps=2000,  # about 6.4 epochs
        learning_rate=6e-4,
        warmup_steps=200,
        eval_interval=250,
        eval_batch_size=256,
    ),
)

OWN = Profile(
    name="own",
    description="a labelled file of your own (`train --source FILE`): the ft model, a schedule in passes over the "
                "data, the checkpoint chosen on a development slice of the training part, early stopping",
    seeds=(0,),
    config=FT.config.replace(  # the ft model (the backbones' shape, so --init lm:<backbone> fits)
        profile="own",
        precision="auto",  # a user's run is its own population: bf16 where the processor has it
        warmup_steps=60,  # at most a tenth of the schedule (run/selection.py)
        epochs=6,  # at most 6 passes; early stopping usually ends it sooner on a few thousand texts
        evals_per_epoch=2,  # a development score every half pass
        dev_fraction=0.1,  # 10% of the training part chooses the checkpoint; the validation part only scores
        early_stopping=4,  # two passes without a better development accuracy
        keep_best=True,
        max_steps=1000,  # replaced by the schedule (epochs); kept so the profile's run ids stay as first recorded
    ),
)

PROFILES = {p.name: p for p in (SMOKE, FAST, CPU, FT, PAPER, OWN)}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r}; use one of {tuple(PROFILES)}.")
    return PROFILES[name]


def default_profile_name() -> str:
    """The profile that fits this machine: `paper` with a CUDA GPU, else `cpu`."""
    return "paper" if torch.cuda.is_available() else "cpu"


def profile_table() -> list[dict]:
    """One row per profile with the fields that differ from TrainConfig's defaults (for the README)."""
    base = TrainConfig()
    rows = []
    for p in PROFILES.values():
        changed = {f.name: getattr(p.config, f.name) for f in fields(TrainConfig)
                   if getattr(p.config, f.name) != getattr(base, f.name) and f.name != "profile"}
        rows.append({"profile": p.name, "seeds": len(p.seeds), "description": p.description, **changed})
    return rows
