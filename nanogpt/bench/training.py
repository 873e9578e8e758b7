"""Training speed: our step against HF's on the same batches, an epoch of bucketed batches against batches
padded to the block, and the wall time until a real run first reaches a validation accuracy."""
from __future__ import annotations

import tempfile
import time

import numpy as np
import torch

from nanogpt.bench.hf import hf_model, hf_step
from nanogpt.bench.timing import sync
from nanogpt.core.losses import get_criterion
from nanogpt.core.runtime import autocast, resolve_precision
from nanogpt.data.batching import bucketed_batches, collate, evenly_spaced
from nanogpt.data.imdb import load_splits
from nanogpt.run.train import build_model, train


def train_step_comparison(cfg, batches, rounds: int, models=("ours", "hf"),
                          device: torch.device | None = None) -> dict:
    """Our model against the HF model on the same batches, same precision and optimizer, alternating A B A B.
    `models` limits the timing to one of them (the epoch comparison feeds each its own batches)."""
    device = device or torch.device("cpu")
    precision = resolve_precision(cfg.precision, device)
    crit = get_criterion("ce")
    torch.manual_seed(0)
    ours = build_model(cfg, 2).to(device)
    hf = hf_model(cfg, 2).to(device)
    opt_ours = ours.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), device.type)
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                               weight_decay=cfg.weight_decay, fused=True)
    batches = [tuple(t.to(device) for t in b) for b in batches]

    def step_ours(x, lengths, y):
        with autocast(device, precision):
            logits = ours(x, lengths)
        loss = crit.loss(logits, y)
        opt_ours.zero_grad(set_to_none=True)
        loss.backward()
        opt_ours.step()

    steps = {"ours": step_ours, "hf": hf_step(hf, opt_hf, crit, device, precision)}
    seconds = {name: 0.0 for name in models}
    tokens = 0
    for i in range(rounds + 1):  # round 0 warms both up
        batch = batches[i % len(batches)]
        for name in models:
            t0 = time.perf_counter()
            steps[name](*batch)
            sync(device)
            if i:
                seconds[name] += time.perf_counter() - t0
        if i:
            tokens += int(batch[0].numel())
    out = {"precision": precision, "seq_len": float(np.mean([b[0].size(1) for b in batches]))}
    if "ours" in seconds:
        out["train_tokens_per_s"] = tokens / seconds["ours"]
    if "hf" in seconds:
        out["hf_train_tokens_per_s"] = tokens / seconds["hf"]
    if len(seconds) == 2:
        out["train_step_ratio_vs_hf"] = seconds["hf"] / seconds["ours"]
    return out


def epoch_comparison(cfg, n_batches: int) -> dict:
    """Real (non-pad) tokens/s of our bucketed pipeline against padding every batch to the block size."""
    split = load_splits(cfg)[0]
    bucketed = bucketed_batches(split.lengths, cfg.batch_size, seed=0, epoch=0)
    real = int(split.lengths[np.concatenate(bucketed)].sum())
    padded_ours = sum(int(np.ceil(split.lengths[b].max() / cfg.pad_multiple) * cfg.pad_multiple) * len(b)
                      for b in bucketed)
    padded_block = len(bucketed) * cfg.batch_size * cfg.block_size
    sample = evenly_spaced(bucketed, n_batches)
    ours_batches = [collate(split, b, cfg.pad_multiple) for b in sample]
    block_batches = [collate(split, b, cfg.block_size) for b in sample]
    step = train_step_comparison(cfg, ours_batches, len(ours_batches))
    step_block = train_step_comparison(cfg, block_batches, len(block_batches), models=("hf",))
    # seconds per epoch: padded positions in the epoch / measured padded tokens per second
    ours_epoch = padded_ours / step["train_tokens_per_s"]
    hf_epoch = padded_block / step_block["hf_train_tokens_per_s"]
    return {"epoch_real_tokens_per_s": real / ours_epoch, "hf_padded_epoch_real_tokens_per_s": real / hf_epoch,
            "epoch_ratio_vs_hf_padded": hf_epoch / ours_epoch, "padding_share": 1 - real / padded_ours,
            "padding_share_hf_padded": 1 - real / padded_block, "epoch_seconds": ours_epoch,
            "hf_padded_epoch_seconds": hf_epoch, **{k: v for k, v in step.items() if k != "seq_len"},
            "seq_len": step["seq_len"]}


def seconds_to_accuracy(cfg, target: float = 0.85, eval_interval: int = 100) -> tuple[float | None, int | None]:
    """Wall seconds (training plus evaluations) until a run of `cfg`, evaluated every `eval_interval` steps,
    first reaches `target` validation accuracy, and the step of that evaluation; (None, None) if it never does.
    The run goes to a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = train(cfg.replace(out_dir=tmp, quiet=True, eval_interval=eval_interval))
        wall = time.perf_counter() - t0
    h = result.history.dropna(subset=["val_accuracy"])  # validation passes only, not training-loss points
    hit = h[h["val_accuracy"] >= target]
    if hit.empty:
        return None, None
    # train seconds at the hit plus the evaluation time spent so far, in proportion to the run's total
    eval_share = (wall - h["train_seconds"].iloc[-1]) * (len(h[h["step"] <= hit["step"].iloc[0]]) / len(h))
    return float(hit["train_seconds"].iloc[0] + eval_share), int(hit["step"].iloc[0])
