"""Language-model pre-training of the classifier's backbone: next-token prediction on the training split's texts.

`pretrain(PretrainConfig(...))` trains a GPT backbone (the classifier's `transformer`) to predict the next GPT-2
token of the training reviews, and writes a self-describing backbone checkpoint (architecture, tokenizer, the
data and split it read, the ids of the reviews it read). `train --init lm:<checkpoint>` starts a classifier's
backbone from it (`backbone.py` checks that it fits); the head is new.

What is read: the reviews of the training split of (source, split_seed, val_fraction), whole (never truncated),
each followed by GPT-2's end-of-text token, as one stream; a batch is `batch_size` windows of `block_size + 1`
tokens at random offsets (drawn from the seed and the step, so a resumed run reads what an uninterrupted one
reads). No validation review is ever in the stream (`LMCorpus.review_ids`, tests/test_pretrain.py). The
validation texts give the perplexity curve only; nothing is selected on them. With `unlabelled=True` (`pretrain
--unlabelled`, needs a network) the Hub's 50,000 unlabelled IMDB reviews follow the training reviews in the
stream, less any whose tokens equal a labelled review's.

The output layer is an adaptive softmax (`torch.nn.AdaptiveLogSoftmaxWithLoss`, Grave et al. 2017) over tokens
ranked by their frequency in the training stream: the 2,000 most frequent (81% of the training tokens) in the
head, the rest in two smaller clusters. It is an exact, normalised distribution over all 50,257 tokens (so the
perplexity is a real one) at a fraction of a full softmax's cost: a full 50,257-way output has ~16x the
multiply-adds per token of the 2-layer, 128-dim backbone's weights (128 x 50,257 = 6.4M against 0.4M, counted).
The backbone file keeps it (`lm_output`) for fine-tuning's auxiliary LM loss (run/auxlm.py); classifiers never do.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from nanogpt.core.artifacts import atomic_write_json, stable_digest
from nanogpt.core.model import GPTClassifier, ModelConfig, decay_groups
from nanogpt.core.runtime import (
    autocast,
    environment,
    prepare_device,
    processor_of,
    resolve_device,
    resolve_precision,
)
from nanogpt.data.imdb import DEFAULT_SPLIT_SEED, DEFAULT_VAL_FRACTION, data_identity, load_corpus, split_indices
from nanogpt.data.tokenizer import EOT_TOKEN, VOCAB_SIZE
from nanogpt.data.tokens import TokenizedSplit, tokenize_texts
from nanogpt.data.windows import WHOLE
from nanogpt.run.auxlm import LM_OUTPUT_KEY, lm_output_record
from nanogpt.run.backbone import BACKBONE_FORMAT, backbone_data_record, load_backbone
from nanogpt.run.checkpoints import CheckpointError, load_failure_reason, save_torch_atomic
from nanogpt.run.config import _PROFILE_NAME
from nanogpt.run.progress import progress
from nanogpt.run.train import learning_rate_at

# PretrainConfig fields that do not change what is computed: out of the backbone id, free to differ on resume.
LOCAL_FIELDS = ("out_dir", "cache_dir", "num_threads", "checkpoint_interval", "quiet")
# Fields added after backbones were committed: in the id only when set otherwise, so those backbones keep theirs.
NEUTRAL_DEFAULTS = {"unlabelled": False}


@dataclass
class PretrainConfig:
    seed: int = 0  # init, window offsets and dropout
    profile: str = "custom"
    # --- data: the training split of these is all that is read
    source: str = "bundled"
    split_seed: int = DEFAULT_SPLIT_SEED
    val_fraction: float = DEFAULT_VAL_FRACTION
    train_limit: int | None = None  # only the first N training reviews (tests)
    unlabelled: bool = False  # also read the Hub's 50,000 unlabelled IMDB reviews (needs a network)
    # --- backbone (what a classifier fine-tuned from it must match; dropout is the fine-tuning's own choice)
    block_size: int = 256  # window length; a classifier may use this many positions or fewer
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    gelu: str = "none"
    bias: bool = True
    # --- output layer: adaptive softmax cluster boundaries in frequency ranks, and the tail size divisor
    cutoffs: tuple[int, ...] = (2000, 10000)
    div_value: float = 4.0
    # --- optimisation
    batch_size: int = 32
    max_steps: int = 2000
    learning_rate: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 200
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    grad_clip: float = 1.0
    # --- evaluation (the curve only) and hardware
    eval_interval: int = 250
    eval_tokens: int = 131_072  # validation tokens scored per pass (the first ones of the validation stream)
    device: str = "auto"
    precision: str = "auto"
    num_threads: int | None = None
    out_dir: str = "results"
    cache_dir: str | None = None
    checkpoint_interval: int | None = None  # steps between resumable states; None = eval_interval
    quiet: bool = False

    def validate(self) -> "PretrainConfig":
        def need(cond: bool, msg: str):
            if not cond:
                raise ValueError(msg)

        need(isinstance(self.profile, str) and _PROFILE_NAME.fullmatch(self.profile) is not None,
             f"profile name {self.profile!r} must be letters, digits, '_', '-' or '.' (it names the folder).")
        for name in ("max_steps", "batch_size", "block_size", "eval_interval", "eval_tokens", "n_layer", "n_head",
                     "n_embd"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) > 0,
                 f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        need(self.seed >= 0, f"seed must be >= 0, got {self.seed}.")
        need(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}.")
        need(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}.")
        need(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}.")
        need(self.precision in ("auto", "bf16", "fp32"), f"precision must be auto, bf16 or fp32, got {self.precision!r}.")
        cut = tuple(self.cutoffs)
        need(len(cut) >= 1 and all(isinstance(c, int) for c in cut) and list(cut) == sorted(set(cut))
             and 0 < cut[0] and cut[-1] < VOCAB_SIZE - 1,
             f"cutoffs must be increasing integers between 1 and {VOCAB_SIZE - 2}, got {self.cutoffs!r}.")
        need(self.div_value >= 1, f"div_value must be >= 1, got {self.div_value}.")
        need(isinstance(self.unlabelled, bool), f"unlabelled must be True or False, got {self.unlabelled!r}.")
        need(self.train_limit is None or (isinstance(self.train_limit, int) and self.train_limit > 1),
             f"train_limit must be None or an integer > 1, got {self.train_limit!r}.")
        self.model_config()  # head/embedding divisibility, dropout range
        return self

    def model_config(self) -> ModelConfig:
        return ModelConfig(vocab_size=VOCAB_SIZE, block_size=self.block_size, n_layer=self.n_layer,
                           n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout, bias=self.bias,
                           n_outputs=1, pooling="last", gelu=self.gelu)

    def identity(self) -> dict:
        device = resolve_device(self.device)
        core = {k: v for k, v in asdict(self).items()
                if k not in LOCAL_FIELDS and not (k in NEUTRAL_DEFAULTS and v == NEUTRAL_DEFAULTS[k])}
        core.update(device=device.type, precision=resolve_precision(self.precision, device),
                    source=data_identity(self.source))
        return core

    def backbone_id(self) -> str:
        return f"{self.profile}-seed{self.seed}-{stable_digest(self.identity(), 8)}"

    def replace(self, **changes) -> "PretrainConfig":
        from dataclasses import replace

        return replace(self, **changes)


# Pre-training profiles. `lm-cpu` was sized on a 2-core AVX2 machine (fp32): the 2-layer, 128-dim backbone of the
# fine-tuning profile `ft` reads 10.2k tokens/s with the adaptive softmax (2 x 128: 10.2k; 4 x 128: 7.5k;
# 3 x 192: 6.4k; 4 x 256: 4.2k), so 2,000 steps of 32 x 256 tokens (16.4M tokens, 2.7 passes over the 6.0M
# training tokens): seed 0 ran 1,000 uncontended steps in 801 s there, about 27 minutes for all 2,000, under the
# 60-minute budget per backbone.
PRETRAIN_PROFILES = {
    # the `smoke` classifier's shape (1 x 64, 2 heads, 128 positions), so `--profile smoke` fine-tunes from it
    "lm-smoke": PretrainConfig(profile="lm-smoke", train_limit=400, block_size=128, n_layer=1, n_head=2, n_embd=64,
                               cutoffs=(500, 4000), batch_size=8, max_steps=30, warmup_steps=5, eval_interval=15,
                               eval_tokens=4096, learning_rate=3e-3),
    # fp32 pinned, as the `ft` classifier is: one population on machines with and without bf16 (bf16 ran only 1.08x
    # faster on an AMX machine, 1.34x on another: the step is not matmul-bound). Ids of fp32 backbones are unchanged.
    "lm-cpu": PretrainConfig(profile="lm-cpu", precision="fp32"),
}


def get_pretrain_profile(name: str) -> PretrainConfig:
    if name not in PRETRAIN_PROFILES:
        raise ValueError(f"Unknown pre-training profile {name!r}; use one of {tuple(PRETRAIN_PROFILES)}.")
    return PRETRAIN_PROFILES[name]


# ------------------------------------------------------------------------------------------------- data


@dataclass
class LMCorpus:
    """The training split's reviews as one token stream (each review then EOT), and what it was cut from."""

    stream: np.ndarray  # int64 token ids
    review_ids: np.ndarray  # row numbers (in `load_corpus` order) of the reviews in the stream, in stream order
    val_stream: np.ndarray  # the validation reviews, likewise (for the perplexity curve only)
    val_review_ids: np.ndarray
    rank: np.ndarray  # token id -> rank by frequency in `stream` (0 = most frequent); ties by id
    n_unlabelled: int = 0  # unlabelled reviews appended to the stream after the training reviews
    unlabelled_dropped: int = 0  # unlabelled reviews left out because a labelled review has the same tokens


def _joined(split) -> np.ndarray:
    """Reviews back to back, each followed by the end-of-text token."""
    return np.insert(split.tokens.astype(np.int64), split.offsets[1:], EOT_TOKEN)


def lm_corpus(cfg: PretrainConfig, verbose: bool = False) -> LMCorpus:
    corpus = load_corpus(cfg.source, WHOLE, "head", cache_dir=cfg.cache_dir, verbose=verbose)["all"]
    train_idx, val_idx = split_indices(corpus.labels, cfg.split_seed, cfg.val_fraction, str(cfg.source))
    if cfg.train_limit is not None:
        train_idx = train_idx[: cfg.train_limit]
    stream = _joined(corpus.take(train_idx))
    n_unlabelled = dropped = 0
    if cfg.unlabelled:
        extra, dropped = _unlabelled(corpus)
        stream, n_unlabelled = np.concatenate([stream, _joined(extra)]), len(extra)  # each review ends in EOT
    counts = np.bincount(stream, minlength=VOCAB_SIZE)
    rank = np.empty(VOCAB_SIZE, dtype=np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(VOCAB_SIZE)
    return LMCorpus(stream, train_idx, _joined(corpus.take(val_idx)), val_idx, rank, n_unlabelled, dropped)


def _unlabelled(labelled: TokenizedSplit) -> tuple[TokenizedSplit, int]:
    """The Hub's unlabelled reviews, tokenized whole, less any whose tokens equal a labelled review's (so that
    no validation review can enter pre-training this way either); and how many were left out."""
    from nanogpt.data.imdb import read_unlabelled_reviews

    def digests(split: TokenizedSplit) -> list[bytes]:
        return [hashlib.sha256(split.tokens[a:b].tobytes()).digest() for a, b in zip(split.offsets, split.offsets[1:])]

    extra = tokenize_texts(read_unlabelled_reviews(), None, WHOLE, "head")
    seen = set(digests(labelled))
    keep = np.array([d not in seen for d in digests(extra)], dtype=bool)
    return extra.take(np.flatnonzero(keep)), int((~keep).sum())


def window_batch(stream: np.ndarray, seed: int, step: int, batch_size: int, block_size: int) -> torch.Tensor:
    """`batch_size` windows of block_size + 1 tokens at offsets drawn from (seed, step) alone."""
    if len(stream) < block_size + 2:
        raise ValueError(f"The training stream has {len(stream)} tokens, fewer than one window of "
                         f"{block_size + 1}. Fix: use more training reviews or a smaller block_size.")
    starts = np.random.default_rng([seed, step]).integers(0, len(stream) - block_size - 1, size=batch_size)
    return torch.from_numpy(stream[starts[:, None] + np.arange(block_size + 1)[None, :]])


# ------------------------------------------------------------------------------------------------ model


class LanguageModel(nn.Module):
    """The classifier's backbone with an adaptive-softmax next-token output over frequency-ranked tokens."""

    def __init__(self, cfg: PretrainConfig, rank: np.ndarray):
        super().__init__()
        self.gpt = GPTClassifier(cfg.model_config())
        self.output = nn.AdaptiveLogSoftmaxWithLoss(cfg.n_embd, VOCAB_SIZE, cutoffs=list(cfg.cutoffs),
                                                    div_value=cfg.div_value)
        self.register_buffer("rank", torch.as_tensor(rank, dtype=torch.long), persistent=True)

    def forward(self, window: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
        """Mean next-token negative log-likelihood (nats) over every position of the windows."""
        x, y = window[:, :-1], window[:, 1:]
        with autocast(device, precision):
            h = self.gpt.hidden_states(x)
        h = h.float().reshape(-1, h.size(-1))
        return self.output(h, self.rank[y].reshape(-1)).loss

    def backbone_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.gpt.state_dict().items() if k.startswith("transformer.")}

    def configure_optimizer(self, cfg: PretrainConfig, device: torch.device) -> torch.optim.AdamW:
        """AdamW; decay on matrices and embeddings (dim >= 2) only. The classifier head (unused here) is left out."""
        params = [p for n, p in self.named_parameters() if not n.startswith("gpt.head")]
        return torch.optim.AdamW(decay_groups(params, cfg.weight_decay), lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                                 fused=device.type in ("cpu", "cuda"))


@torch.no_grad()
def validation_nll(model: LanguageModel, stream: np.ndarray, cfg: PretrainConfig, device: torch.device,
                   precision: str) -> float:
    """Mean next-token NLL over the first `eval_tokens` tokens of `stream`, in non-overlapping windows."""
    T = cfg.block_size
    n_windows = min(max(1, cfg.eval_tokens // T), (len(stream) - 1) // T)
    if n_windows == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    starts = np.arange(n_windows) * T
    for i in range(0, n_windows, cfg.batch_size):
        s = starts[i: i + cfg.batch_size]
        window = torch.from_numpy(stream[s[:, None] + np.arange(T + 1)[None, :]]).to(device)
        total += float(model(window, device, precision)) * window[:, 1:].numel()
        count += window[:, 1:].numel()
    model.train(was_training)
    return total / count


# ------------------------------------------------------------------------------------------------ the loop


@dataclass
class BackboneResult:
    backbone_id: str
    path: Path  # the backbone checkpoint
    val_perplexity: float
    steps: int
    tokens: int
    train_seconds: float
    history: pd.DataFrame
    row: dict
    resumed_from_step: int = 0  # the saved step this process started from (0: from the first step)


def pretrain(config: PretrainConfig, resume: bool = True) -> BackboneResult:
    """Pre-train one backbone and write `<out_dir>/backbones/<backbone_id>/` (backbone.pt, history.csv, meta.json)
    and a row of `<out_dir>/backbones.csv`. A finished backbone is returned as it is; an interrupted one resumes
    from its last state (`resume=False` starts afresh)."""
    cfg = config.validate()
    backbone_id = cfg.backbone_id()
    folder = Path(cfg.out_dir) / "backbones" / backbone_id
    ckpt_path, state_path, meta_path = folder / "backbone.pt", folder / "state.pt", folder / "meta.json"
    index = Path(cfg.out_dir) / "backbones.csv"
    folder.mkdir(parents=True, exist_ok=True)
    if ckpt_path.is_file() and meta_path.is_file():
        ckpt = load_backbone(ckpt_path)
        if not cfg.quiet:
            print(f"backbone {backbone_id} is already pre-trained: {ckpt_path}")
        return BackboneResult(backbone_id, ckpt_path, ckpt["val_perplexity"], ckpt["steps"], ckpt["tokens"],
                              ckpt["train_seconds"], pd.DataFrame(ckpt["history"]), ckpt["row"])
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    prepare_device(device, cfg.num_threads)
    corpus = lm_corpus(cfg, verbose=not cfg.quiet)
    stream = corpus.stream

    torch.manual_seed(cfg.seed)
    model = LanguageModel(cfg, corpus.rank).to(device)
    optimizer = model.configure_optimizer(cfg, device)
    history: list[dict] = []
    start, tokens, seconds, interval_loss, interval_n = 0, 0, 0.0, 0.0, 0
    if resume and state_path.is_file():
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{state_path} cannot be read to resume ({load_failure_reason(exc)}). "
                                  "Fix: delete it to start the pre-training afresh.") from exc
        if not isinstance(state, dict) or state.get("backbone_id") != backbone_id:
            raise CheckpointError(f"{state_path} belongs to another pre-training; delete it to start afresh.")
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        torch.set_rng_state(state["torch_rng"])
        history, start, tokens, seconds = list(state["history"]), state["step"], state["tokens"], state["seconds"]
        interval_loss, interval_n = state["interval_loss"], state["interval_n"]
    n_params = sum(p.numel() for n, p in model.gpt.named_parameters() if n.startswith("transformer."))
    if not cfg.quiet:
        extra = (f" + {corpus.n_unlabelled} unlabelled ({corpus.unlabelled_dropped} left out as copies of labelled "
                 "ones)") if cfg.unlabelled else ""
        print(f"pre-training {backbone_id}: {n_params / 1e6:.2f}M backbone parameters, {len(corpus.review_ids)} "
              f"training reviews{extra} = {len(stream):,} tokens, {cfg.max_steps * cfg.batch_size * cfg.block_size:,} "
              f"tokens to read ({cfg.max_steps * cfg.batch_size * cfg.block_size / len(stream):.1f} passes), "
              f"{device.type} {precision}" + (f", resumed at step {start}" if start else ""))

    def save_state(step: int) -> None:
        save_torch_atomic(state_path, {
            "backbone_id": backbone_id, "step": step, "model_state": model.state_dict(),
            "optimizer_state": optimizer.state_dict(), "torch_rng": torch.get_rng_state(), "history": history,
            "tokens": tokens, "seconds": seconds, "interval_loss": interval_loss, "interval_n": interval_n})

    every = cfg.checkpoint_interval or cfg.eval_interval
    bar = progress(total=cfg.max_steps, initial=start, desc=f"pretrain seed {cfg.seed}", unit="step",
                   disable=cfg.quiet)
    model.train()
    for step in range(start, cfg.max_steps):
        t0 = time.perf_counter()
        lr = learning_rate_at(step, cfg)  # the classifier's schedule: warmup, then cosine to a floor
        for group in optimizer.param_groups:
            group["lr"] = lr
        window = window_batch(stream, cfg.seed, step, cfg.batch_size, cfg.block_size).to(device)
        loss = model(window, device, precision)
        if not torch.isfinite(loss):
            bar.close()
            raise FloatingPointError(f"pre-training {backbone_id}: loss became {loss.item()} at step {step} "
                                     f"(learning rate {lr:.3g}). Hint: lower learning_rate or use fp32; the last "
                                     f"good state is in {state_path}.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        value = loss.item()
        seconds += time.perf_counter() - t0
        tokens += window[:, 1:].numel()
        interval_loss, interval_n = interval_loss + value, interval_n + 1
        done = step + 1
        if done % cfg.eval_interval == 0 or done == cfg.max_steps:
            val = validation_nll(model, corpus.val_stream, cfg, device, precision)
            history.append({"step": done, "tokens": tokens, "train_seconds": seconds,
                            "train_loss": interval_loss / interval_n, "val_loss": val,
                            "val_perplexity": math.exp(val), "lr": lr, "tokens_per_second": tokens / seconds})
            interval_loss, interval_n = 0.0, 0
        if done % every == 0 and done < cfg.max_steps:
            save_state(done)
        val_ppl = f"{history[-1]['val_perplexity']:.1f}" if history else "-"
        bar.set_postfix(loss=f"{value:.3f}", val_ppl=val_ppl, tok_s=f"{tokens / seconds:,.0f}", refresh=False)
        bar.update(1)
    bar.close()

    last = history[-1]
    row = {"backbone_id": backbone_id, "profile": cfg.profile, "seed": cfg.seed, "source": cfg.source,
           "split_seed": cfg.split_seed, "n_train_reviews": len(corpus.review_ids), "stream_tokens": len(stream),
           "steps": cfg.max_steps, "tokens": tokens, "train_seconds": round(seconds, 3),
           "tokens_per_second": round(tokens / seconds, 1), "val_loss": last["val_loss"],
           "val_perplexity": last["val_perplexity"], "device": device.type, "precision": precision,
           "torch_version": str(torch.__version__), "config": json.dumps(asdict(cfg), sort_keys=True),
           **processor_of(device.type)}
    payload = {"format": BACKBONE_FORMAT, "backbone_id": backbone_id,
               "model_config": asdict(cfg.model_config()),
               "backbone_state": model.backbone_state(),
               LM_OUTPUT_KEY: lm_output_record(model.output, model.rank, cfg.cutoffs, cfg.div_value),
               "data": backbone_data_record(cfg.source, cfg.split_seed, cfg.val_fraction, corpus.review_ids,
                                            corpus.n_unlabelled),
               "pretrain_config": json.dumps(asdict(cfg), sort_keys=True), "steps": cfg.max_steps, "tokens": tokens,
               "train_seconds": seconds, "val_perplexity": last["val_perplexity"], "history": history, "row": row}
    sha = save_torch_atomic(ckpt_path, payload)
    row["backbone_sha256"] = sha
    pd.DataFrame(history).to_csv(folder / "history.csv", index=False)
    # meta.json last: with it the backbone counts as finished
    atomic_write_json(meta_path, {"row": row, "environment": environment(device, precision),
                                  "resumed_from_step": start})
    upsert_backbone_row(index, row)
    state_path.unlink(missing_ok=True)
    if not cfg.quiet:
        print(f"backbone {backbone_id}: validation perplexity {last['val_perplexity']:.1f} after {tokens:,} tokens, "
              f"{seconds / 60:.1f} min -> {ckpt_path}")
    return BackboneResult(backbone_id, ckpt_path, last["val_perplexity"], cfg.max_steps, tokens, seconds,
                          pd.DataFrame(history), row, resumed_from_step=start)


def upsert_backbone_row(index, row: dict) -> None:
    """Add or replace a backbone's row in backbones.csv, under the lock the results index uses."""
    from nanogpt.core.artifacts import atomic_write_csv, locked

    with locked(index):
        old = pd.read_csv(index) if index.is_file() and index.stat().st_size else pd.DataFrame()
        if not old.empty:
            old = old[old["backbone_id"] != row["backbone_id"]]
        atomic_write_csv(index, pd.concat([old, pd.DataFrame([row])], ignore_index=True))
