"""The GPU section of the bench (also runs on a CPU, which is how the tests exercise it)."""
from __future__ import annotations

import tempfile
import time

import torch

from nanogpt.bench.timing import matmul_gflops, model_flops_per_token
from nanogpt.bench.training import train_step_comparison
from nanogpt.core.runtime import resolve_precision
from nanogpt.data.batching import bucketed_batches, collate, evenly_spaced
from nanogpt.data.imdb import load_splits
from nanogpt.run.profiles import get_profile


def accelerator_figures(device: torch.device, profile: str = "paper", rounds: int = 20, study: bool = True,
                        study_seeds: list[int] | None = None, **overrides) -> dict:
    """On a GPU (or any `device`): bf16 matmul limit at the profile's shapes, training tokens/s of ours and of
    the HF model on length-bucketed batches (both eager, so the ratio compares models, not compilers), our
    fraction of the limit, and the wall time of the profile's whole study (both losses x its seeds, notebooks
    off, trained as `train` does: compiled on CUDA) when `study`. `overrides` shrink the study in tests."""
    from nanogpt.study.runs import run_study

    cfg = get_profile(profile).config.replace(**overrides)
    precision = resolve_precision(cfg.precision, device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    split = load_splits(cfg)[0]
    sample = evenly_spaced(bucketed_batches(split.lengths, cfg.batch_size, seed=0, epoch=0), rounds)
    batches = [collate(split, b, cfg.pad_multiple) for b in sample]
    out = {"accel_device": str(device), "accel_profile": profile, "accel_precision": precision}
    if device.type == "cuda":
        out["accel_name"] = torch.cuda.get_device_name(device)
    out["accel_matmul_gflops"] = matmul_gflops(cfg, dtype, 10, device, tokens=cfg.batch_size * cfg.block_size)
    step = train_step_comparison(cfg, batches, len(batches), device=device)
    out["accel_train_tokens_per_s"] = step["train_tokens_per_s"]
    out["accel_hf_train_tokens_per_s"] = step["hf_train_tokens_per_s"]
    out["accel_train_step_ratio_vs_hf"] = step["train_step_ratio_vs_hf"]
    achieved = step["train_tokens_per_s"] * model_flops_per_token(cfg, step["seq_len"]) / 1e9
    out["accel_train_fraction_of_peak"] = achieved / out["accel_matmul_gflops"]
    out["accel_study_seconds"] = None
    if study:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            runs = run_study(profile, seeds=study_seeds, out_dir=tmp, quiet=True, device=device.type, **overrides)
            out["accel_study_seconds"] = time.perf_counter() - t0
            out["accel_study_runs"] = len(runs)
            out["accel_study_mean_accuracy"] = {loss: float(g["val_accuracy"].mean())
                                                for loss, g in runs.groupby("loss")}
    return out
