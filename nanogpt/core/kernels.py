"""CPU kernels the model uses in place of torch's defaults, where measurement showed torch's to be slow.

Both are execution details: they change speed (and, for attention, bf16 rounding), never the architecture,
so a checkpoint does not record them and loads under either.
"""
from __future__ import annotations

import functools
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

ATTENTIONS = ("auto", "sdpa")  # "auto": chunked matmul attention on CPU in bf16, SDPA elsewhere; "sdpa": always


class ByteMaskDropout(nn.Dropout):
    """nn.Dropout, with a cheaper mask on CPU.

    On CPU, `bernoulli_` draws each mask element separately and cost 13% of a training step here. Instead we
    draw random int32 words and use three of their four bytes (the fourth holds the always-zero sign bit) as
    uniform bytes: each element is kept when its byte >= round(p * 256). The drop rate is therefore p rounded
    to a multiple of 1/256 (0.1 -> 0.1016), and kept values are scaled so the expectation is unchanged.
    Twice as fast as `F.dropout` on a (32, 256, 256) bf16 tensor. Other devices use `F.dropout`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or sys.byteorder != "little":
            return F.dropout(x, self.p, True)
        threshold = round(self.p * 256)
        n = x.numel()
        words = torch.empty((n + 2) // 3, dtype=torch.int32).random_()  # uniform in [0, 2**31)
        low_bytes = words.view(torch.uint8).view(-1, 4)[:, :3]  # little-endian: bytes 0-2 are uniform
        keep = (low_bytes >= threshold).reshape(-1)[:n].view(x.shape)
        return x * keep.to(x.dtype) * (256.0 / (256 - threshold))


# Elements of the attention matrix (batch rows x heads x T x T) handled at once by chunked_causal_attention.
# Budgets of 2M-4M elements were fastest for fwd+bwd on 2 cores at T = 64..384 (B=32, 4 heads of 32); 3M is between.
ATTENTION_CHUNK_ELEMENTS = 3 * 2**20


@functools.lru_cache(maxsize=64)
def _causal_bias(T: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(T, T) additive mask: 0 on and below the diagonal, -inf above it."""
    return torch.full((T, T), float("-inf"), device=device).triu(1).to(dtype)


def use_chunked_attention(q: torch.Tensor) -> bool:
    """Chunked matmul attention wins on CPU in bf16; SDPA wins in fp32 and on GPUs.

    Measured on 2 cores (B=32, 4 heads of 32, bf16 fwd+bwd): T=128 6-9 ms vs 18-21 ms for SDPA's flash kernel,
    T=240 11-17 ms vs 29-34 ms, T=384 24-36 ms vs 59-60 ms. Inference over 2,000 validation reviews (cpu
    profile model, batch 32): 306k tokens/s vs 195k. Larger shapes, fwd+bwd: B=16, 6 heads of 64, T=512 (the
    paper profile) 52 vs 118 ms; B=4, 12 heads of 64, T=1024: equal (138 ms). In fp32 the flash kernel is
    faster (T=240: 26 vs 35 ms).
    """
    return q.device.type == "cpu" and q.dtype == torch.bfloat16


def chunked_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + causal mask) v, a few batch rows at a time, in q's dtype.

    SDPA's CPU flash kernel tiles for long sequences and large heads; for short sequences and 32-wide heads
    its backward ran at ~30 GFLOP/s here. Plain batched matmuls do better as long as one chunk's attention
    matrix stays in cache, hence the chunks. Scores are rounded to q's dtype before the softmax (as nanoGPT's
    non-flash path does under autocast); the softmax itself accumulates in fp32.
    """
    B, H, T, D = q.shape
    rows = max(1, min(B, ATTENTION_CHUNK_ELEMENTS // (H * T * T)))
    bias = _causal_bias(T, q.dtype, q.device)
    scale = 1.0 / math.sqrt(D)
    out = []
    with torch.autocast(q.device.type, enabled=False):  # dtypes are explicit here
        # split, not slicing: its backward is one cat, where slices would each scatter into a zeroed copy
        for qc, kc, vc in zip(q.split(rows), k.split(rows), v.split(rows)):
            n = qc.size(0) * H
            scores = torch.baddbmm(bias, qc.reshape(n, T, D), kc.reshape(n, T, D).transpose(1, 2), alpha=scale)
            out.append(torch.bmm(scores.softmax(-1), vc.reshape(n, T, D)).view(qc.size(0), H, T, D))
    return out[0] if len(out) == 1 else torch.cat(out)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
                     attention: str = "auto") -> torch.Tensor:
    """Causal attention over (B, H, T, D) tensors with the kernel that is fastest here (see `ATTENTIONS`)."""
    if dropout_p == 0.0 and attention == "auto" and use_chunked_attention(q):
        return chunked_causal_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
