"""How long a study will take on this machine, measured before it starts rather than assumed.

A few training steps of the study's own configuration (on batches spread over an epoch, each shape warmed up
once first, as training repeats its shapes) and one validation batch are timed on the device and precision the runs will use; the schedule and the
number of runs turn that into a wall time. bf16 and fp32 CPUs differ by 3x or more, so a fixed table would be
wrong on one of them.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from nanogpt.core.losses import get_criterion
from nanogpt.core.runtime import autocast, prepare_device, resolve_device, resolve_precision
from nanogpt.data.batching import bucketed_batches, collate, collate_ids, evenly_spaced
from nanogpt.data.imdb import load_splits
from nanogpt.data.windows import expand_windows, random_windows, resolved_stride
from nanogpt.run.config import TrainConfig

RUN_OVERHEAD_S = 1.0  # writing a run's files and starting the next, measured at about 0.5-1 s on 2 cores


def estimate_run_seconds(cfg: TrainConfig, steps: int = 4) -> dict:
    """Seconds one run of `cfg` will take here: its training steps, its validation passes and the overhead. The
    steps are the run's own: random windows of whole reviews where it trains on them, the auxiliary language-model
    loss where it takes one; the validation pass reads whole reviews in windows where the run will."""
    from nanogpt.run.auxlm import AuxLM
    from nanogpt.run.backbone import backbone_path, load_backbone
    from nanogpt.run.train import build_model

    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    prepare_device(device, cfg.num_threads)
    train_split, val_split = load_splits(cfg)
    criterion = get_criterion(cfg.loss)
    state = torch.get_rng_state()  # leave the caller's random stream as it was
    torch.manual_seed(0)
    model = build_model(cfg, criterion.n_outputs).to(device)
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), device.type)
    aux = AuxLM.from_backbone(load_backbone(backbone_path(cfg.init)), cfg.init).to(device) if cfg.lm_weight else None
    windowed = cfg.truncation == "random_window"
    lengths_for_batches = np.minimum(train_split.lengths, cfg.block_size) if windowed else train_split.lengths
    batches = evenly_spaced(bucketed_batches(lengths_for_batches, cfg.batch_size, 0, 0), steps)
    rng = np.random.default_rng(0)

    def step(idx):
        part, rows = (random_windows(train_split, idx, cfg.block_size, rng), np.arange(len(idx))) if windowed else (
            train_split, idx)
        x, lengths, y = (t.to(device) for t in collate(part, rows, cfg.pad_multiple))
        with autocast(device, precision):
            h = model.hidden_states(x)
            loss = criterion.loss(model.classify(h, lengths), y)
        if aux is not None:
            loss = loss + cfg.lm_weight * aux.loss(h, x, lengths)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()

    for idx in batches:  # warm-up: the first step of each batch shape pays for kernels and allocations
        step(idx)
    t0 = time.perf_counter()
    for idx in batches:
        step(idx)
    step_s = (time.perf_counter() - t0) / len(batches)
    model.eval()
    if cfg.reading == "windows":  # each whole review as its windows
        val_split, _ = expand_windows(val_split, cfg.block_size, resolved_stride(cfg.block_size, cfg.window_stride))
    eval_idx = evenly_spaced(list(range(len(val_split))), min(cfg.eval_batch_size, len(val_split)))
    with torch.no_grad():
        x, lengths = (t.to(device) for t in collate_ids(val_split, eval_idx, cfg.pad_multiple))
        t0 = time.perf_counter()
        with autocast(device, precision):
            model(x, lengths).float().sum().item()
        eval_batch_s = time.perf_counter() - t0
    torch.set_rng_state(state)
    n_evals = len(range(cfg.eval_interval, cfg.max_steps + 1, cfg.eval_interval)) + (cfg.max_steps % cfg.eval_interval != 0)
    eval_s = n_evals * eval_batch_s * len(val_split) / len(eval_idx)
    return {"device": device.type, "precision": precision, "step_seconds": step_s,
            "run_seconds": cfg.max_steps * step_s + eval_s + RUN_OVERHEAD_S}


def describe_estimate(configs: list[TrainConfig]) -> str:
    """One line: how many runs, about how long each and in all, on what."""
    if not configs:
        return "nothing to train"
    est = estimate_run_seconds(configs[0])
    total = est["run_seconds"] * len(configs)
    unit = f"{total / 60:.0f} min" if total < 5400 else f"{total / 3600:.1f} h"
    return (f"estimated wall time: about {unit} for {len(configs)} run(s), {est['run_seconds']:.0f} s each "
            f"({est['device']} {est['precision']}; measured on {configs[0].profile}'s own batches just now)")
