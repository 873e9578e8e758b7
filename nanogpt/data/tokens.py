"""Reviews as token ids: truncation to the block and a compact packed form (`TokenizedSplit`).

Light on purpose (numpy and the tokenizer only): prediction and serving tokenize through this module without
loading the data stack (pandas, datasets, scikit-learn).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nanogpt.data.tokenizer import encode_batch

TRUNCATIONS = ("head", "tail", "head_tail")


@dataclass
class TokenizedSplit:
    """Reviews as one flat uint16 array of token ids plus offsets: compact, and loads in milliseconds."""

    tokens: np.ndarray  # uint16, all reviews' (truncated) ids back to back
    offsets: np.ndarray  # int64, len n+1; review i is tokens[offsets[i]:offsets[i+1]]
    labels: np.ndarray | None  # int64, 0 = negative, 1 = positive; None for unlabelled texts (prediction)
    full_lengths: np.ndarray  # int64, token count before truncation (for coverage plots)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def ids(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def subset(self, n: int | None) -> "TokenizedSplit":
        """The first n reviews (the split is already shuffled), or all of them when n is None."""
        if n is None or n >= len(self):
            return self
        labels = None if self.labels is None else self.labels[:n]
        return TokenizedSplit(self.tokens[: self.offsets[n]], self.offsets[: n + 1], labels, self.full_lengths[:n])

    def take(self, idx) -> "TokenizedSplit":
        """The reviews at positions `idx`, in that order, packed anew."""
        idx = np.asarray(idx, dtype=np.int64)
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(self.lengths[idx], out=offsets[1:])
        tokens = (np.concatenate([self.tokens[self.offsets[i]: self.offsets[i + 1]] for i in idx]) if len(idx)
                  else self.tokens[:0])
        labels = None if self.labels is None else self.labels[idx]
        return TokenizedSplit(tokens, offsets, labels, self.full_lengths[idx])


def truncate_ids(ids: list[int], block_size: int, truncation: str, head_fraction: float = 0.25) -> list[int]:
    """Cut a review to block_size tokens: keep its head, its tail, or both (head_fraction of the block first).

    Head+tail keeps the opening and the verdict that long reviews usually end with (Sun et al., 2019).
    """
    if len(ids) <= block_size:
        return ids
    if truncation == "head":
        return ids[:block_size]
    if truncation == "tail":
        return ids[-block_size:]
    if truncation == "head_tail":
        n_head = int(block_size * head_fraction)
        return ids[:n_head] + ids[len(ids) - (block_size - n_head) :]
    raise ValueError(f"Unknown truncation {truncation!r}; use one of {TRUNCATIONS}.")


def tokenize_texts(texts: list[str], labels, block_size: int, truncation: str = "head_tail",
                   head_fraction: float = 0.25) -> TokenizedSplit:
    """Encode with the batched tiktoken encoder, truncate, and pack into a TokenizedSplit (labels may be None)."""
    if truncation not in TRUNCATIONS:
        raise ValueError(f"Unknown truncation {truncation!r}; use one of {TRUNCATIONS}.")
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}.")
    encoded = encode_batch(texts)
    cut = [truncate_ids(ids, block_size, truncation, head_fraction) for ids in encoded]
    lengths = np.fromiter((len(c) for c in cut), dtype=np.int64, count=len(cut))
    offsets = np.zeros(len(cut) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((t for c in cut for t in c), dtype=np.uint16, count=int(offsets[-1]))
    full = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    return TokenizedSplit(flat, offsets, None if labels is None else np.asarray(labels, dtype=np.int64), full)
