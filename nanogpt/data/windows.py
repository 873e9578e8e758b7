"""Reading a whole review through a short model: overlapping windows, and random windows for training.

A classifier learns `block_size` positions; 41% of the reviews are longer than 256 tokens. Under the `truncated`
reading a long review is cut to one block (its head and tail, `tokens.truncate_ids`). Under the `windows`
reading it is read whole: windows of `block_size` tokens, `stride` apart, the last one ending at the review's
last token, so that together they cover every token; the review's logits are the mean of its windows' logits
(`evaluate.py`). A review that fits the block is one window, read exactly as under `truncated`.

For training, `random_window` cuts each long review drawn into a batch at a random offset (drawn from the seed
and the step, so a resumed run reads what an uninterrupted one does): over the epochs every part of a review is
seen, as the windows reading will read it.

Light on purpose (numpy only), like tokens.py: serving imports it.
"""
from __future__ import annotations

import numpy as np

from nanogpt.data.tokens import TokenizedSplit

READINGS = ("truncated", "windows")
WHOLE = 1 << 20  # the token cache's block size for whole reviews (no IMDB review comes near it)


def resolved_stride(block_size: int, stride: int | None) -> int:
    """The windows' stride: half a block when not given (every token then sits in one or two windows)."""
    stride = block_size // 2 if stride is None else stride
    if not isinstance(stride, int) or not 1 <= stride <= block_size:
        raise ValueError(f"window_stride must be an integer between 1 and block_size ({block_size}), got {stride!r}.")
    return stride


def window_starts(length: int, block_size: int, stride: int) -> np.ndarray:
    """Start offsets of the windows that cover a review of `length` tokens: 0, stride, 2 stride, ... while a window
    would end before the review does, then one window ending at its last token."""
    if length <= block_size:
        return np.zeros(1, dtype=np.int64)
    last = length - block_size
    starts = np.arange(0, last, stride, dtype=np.int64)
    return np.append(starts, last)


def expand_windows(split: TokenizedSplit, block_size: int, stride: int) -> tuple[TokenizedSplit, np.ndarray]:
    """Every review of `split` (whole reviews) as its windows, in review order and window order within a review:
    (the windows as a split, without labels; for each window the index of its review)."""
    lengths = split.lengths
    starts = [window_starts(int(n), block_size, stride) for n in lengths]
    counts = np.fromiter((len(s) for s in starts), dtype=np.int64, count=len(starts))
    owner = np.repeat(np.arange(len(split), dtype=np.int64), counts)
    begin = np.concatenate(starts) + split.offsets[:-1][owner]
    width = np.minimum(lengths[owner], block_size)
    offsets = np.zeros(len(owner) + 1, dtype=np.int64)
    np.cumsum(width, out=offsets[1:])
    gather = np.repeat(begin - offsets[:-1], width) + np.arange(int(offsets[-1]), dtype=np.int64)
    windows = TokenizedSplit(split.tokens[gather], offsets, None, split.full_lengths[owner])
    return windows, owner


def pool_windows(window_logits: np.ndarray, owner: np.ndarray, n_reviews: int) -> np.ndarray:
    """Each review's logits: the mean of its windows' (rows of `window_logits`, `owner` sorted as
    `expand_windows` gives it). Summed in window order, whatever order the windows were computed in."""
    counts = np.bincount(owner, minlength=n_reviews)
    if (counts == 0).any():
        raise ValueError("pool_windows: a review has no window.")
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.add.reduceat(window_logits, first, axis=0) / counts[:, None].astype(window_logits.dtype)


def random_windows(split: TokenizedSplit, idx: np.ndarray, block_size: int,
                   rng: np.random.Generator) -> TokenizedSplit:
    """The reviews `idx` of `split` (whole reviews), each cut to one window of at most `block_size` tokens at a
    random offset (a review that fits is kept whole), packed with their labels."""
    idx = np.asarray(idx, dtype=np.int64)
    lengths = split.lengths[idx]
    room = np.maximum(lengths - block_size, 0)
    shift = rng.integers(0, room + 1)  # one draw per review, whether or not it is long: the stream stays aligned
    width = np.minimum(lengths, block_size)
    offsets = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(width, out=offsets[1:])
    begin = split.offsets[idx] + shift
    gather = np.repeat(begin - offsets[:-1], width) + np.arange(int(offsets[-1]), dtype=np.int64)
    labels = None if split.labels is None else split.labels[idx]
    return TokenizedSplit(split.tokens[gather], offsets, labels, split.full_lengths[idx])


def windows_per_review(lengths: np.ndarray, block_size: int, stride: int) -> np.ndarray:
    """How many windows the `windows` reading runs for reviews of these token lengths (its cost, in forward passes
    of up to a block each)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    extra = np.maximum(lengths - block_size, 0)
    return np.where(extra > 0, -(-extra // stride) + 1, 1)
