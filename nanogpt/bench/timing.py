"""Timing helpers and the machine's own limit: median of repeated calls, matmul GFLOP/s, model FLOPs."""
from __future__ import annotations

import statistics
import time

import torch


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sync(device: torch.device) -> None:
    """Wait for the device, so a timer read afterwards has seen the work finish."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(cfg, dtype: torch.dtype, repeats: int, device: torch.device | None = None,
                  tokens: int = 8192) -> float:
    """Best GFLOP/s over the matmul shapes of the model's linear layers (`tokens` rows), on `device` (CPU)."""
    device = device or torch.device("cpu")
    m, d = tokens, cfg.n_embd
    best = 0.0
    for k, n in ((d, 3 * d), (d, 4 * d), (4 * d, d)):
        a, b = torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device)

        def mm(a=a, b=b):  # bound now: timed() runs it in this iteration only, but say so
            a @ b
            sync(device)

        best = max(best, 2 * m * k * n / timed(mm, repeats) / 1e9)
    return best


def model_flops_per_token(cfg, seq_len: float) -> float:
    """Training FLOPs per token: 6 x non-embedding parameters, plus attention (causal, so half of 12 L T d)."""
    n = 12 * cfg.n_layer * cfg.n_embd**2
    return 6 * n + 6 * cfg.n_layer * seq_len * cfg.n_embd
