"""One training run: `train(TrainConfig(...)) -> RunResult`.

CUDA first (bf16 autocast, TF32, fused AdamW, torch.compile), then MPS, then CPU, where the same code runs
with bf16 autocast if the processor has native bf16 matmul (AVX512-BF16 or AMX) and fp32 otherwise.
Batches are bucketed by length so little compute goes to padding. The reported number is the validation
accuracy at the end of the fixed schedule: nothing is selected on the split that is reported.

Outputs, each written atomically, under `<out_dir>/runs/<run_id>/`: model.pt, meta.json, history.csv; and one
row in `<out_dir>/runs.csv`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from nanogpt.artifacts import (CheckpointError, atomic_write_bytes, atomic_write_csv, atomic_write_json,
                               save_checkpoint, upsert_result_row)
from nanogpt.data import DEFAULT_SPLIT_SEED, DEFAULT_VAL_FRACTION, TRUNCATIONS, TokenizedSplit, load_tokenized
from nanogpt.losses import LOSS_NAMES, Criterion, get_criterion
from nanogpt.metrics import classification_metrics
from nanogpt.model import POOLINGS, GPTClassifier, ModelConfig
from nanogpt.tokenizer import TOKENIZER_NAME

# Fields that say where and how loudly a run happens, not what it computes: left out of the run id.
_RUN_LOCAL_FIELDS = ("quiet", "out_dir", "cache_dir", "num_threads", "checkpoint_interval")


@dataclass
class TrainConfig:
    # --- what is compared
    loss: str = "ce"  # "ce" (2 logits, softmax) or "bce" (1 logit, sigmoid)
    seed: int = 0  # training seed: init, dropout, batch order. The split has its own seed.
    profile: str = "custom"  # name of the profile this config came from (recorded with the result)
    # --- data
    source: str = "bundled"  # "bundled" (offline IMDB), "hub" (stanfordnlp/imdb), or a CSV path
    split_seed: int = DEFAULT_SPLIT_SEED  # fixed validation split, independent of `seed`
    val_fraction: float = DEFAULT_VAL_FRACTION
    block_size: int = 384  # tokens per review; 77% of IMDB reviews fit in 384 GPT-2 tokens
    truncation: str = "head_tail"  # longer reviews keep their opening and their verdict
    head_fraction: float = 0.25  # share of the block given to the head under head_tail
    train_limit: int | None = None  # use only the first N training reviews (smoke runs, tests)
    val_limit: int | None = None  # score only the first N validation reviews (smoke runs, tests)
    # --- model
    init: str = "scratch"  # "scratch" (random) or "gpt2" (pretrained backbone; needs a network)
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.1
    attn_dropout: float = 0.0  # > 0 forces SDPA onto its slow math path
    pooling: str = "mean"  # "mean" over real tokens or "last" real token
    gelu: str = "tanh"  # "tanh" (GPT-2's form) or "none" (exact; 2x faster on CPU)
    attention: str = "auto"  # "auto" (chunked matmul attention on CPU in bf16, else SDPA) or "sdpa"
    bias: bool = True
    # --- optimisation
    batch_size: int = 32
    max_steps: int = 1000  # fixed schedule length; the reported accuracy is taken at its end
    learning_rate: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to learning_rate * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1  # decoupled (AdamW), on matrices and embeddings only
    beta1: float = 0.9
    beta2: float = 0.98
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    # --- evaluation and logging
    eval_interval: int = 200  # steps between validation passes (and one at the end)
    eval_batch_size: int = 64  # CPU, cpu profile model: 1,246 reviews/s at 64 against 1,016 at 128
    checkpoint_interval: int | None = None  # steps between resumable states; None = eval_interval
    # --- hardware
    device: str = "auto"  # "auto" = cuda, then mps, then cpu
    precision: str = "auto"  # "auto", "bf16" or "fp32"
    compile: str = "auto"  # "auto" = on for CUDA only (measured 0.9x of eager on CPU), "on", "off"
    pad_multiple: int = 8  # pad batch length up to a multiple of this
    num_threads: int | None = None  # CPU threads; None = torch's default
    # --- output
    out_dir: str = "results"
    cache_dir: str | None = None  # token cache; None = data/cache
    quiet: bool = False

    def validate(self) -> "TrainConfig":
        def need(cond: bool, msg: str):
            if not cond:
                raise ValueError(msg)

        need(self.loss in LOSS_NAMES, f"Unknown loss {self.loss!r}; use one of {LOSS_NAMES}.")
        need(self.truncation in TRUNCATIONS, f"Unknown truncation {self.truncation!r}; use one of {TRUNCATIONS}.")
        need(self.pooling in POOLINGS, f"Unknown pooling {self.pooling!r}; use one of {POOLINGS}.")
        need(self.init in ("scratch", "gpt2"), f"init must be 'scratch' or 'gpt2', got {self.init!r}.")
        need(self.precision in ("auto", "bf16", "fp32"), f"precision must be auto, bf16 or fp32, got {self.precision!r}.")
        need(self.compile in ("auto", "on", "off"), f"compile must be auto, on or off, got {self.compile!r}.")
        for name in ("max_steps", "batch_size", "block_size", "eval_interval", "eval_batch_size", "n_layer",
                     "n_head", "n_embd", "pad_multiple"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) > 0,
                 f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        need(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}.")
        need(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}.")
        need(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}.")
        need(0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}.")
        need(self.seed >= 0, f"seed must be >= 0, got {self.seed}.")
        for name in ("train_limit", "val_limit"):
            v = getattr(self, name)
            need(v is None or (isinstance(v, int) and v > 1), f"{name} must be None or an integer > 1, got {v!r}.")
        ModelConfig(**self.model_kwargs(n_outputs=1))  # checks head/embedding divisibility, dropout ranges
        return self

    def model_kwargs(self, n_outputs: int) -> dict:
        return dict(block_size=self.block_size, n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                    dropout=self.dropout, attn_dropout=self.attn_dropout, bias=self.bias, n_outputs=n_outputs,
                    pooling=self.pooling, gelu=self.gelu, attention=self.attention)

    def run_id(self) -> str:
        """Deterministic: the same computation always gets the same id (so a study can skip it)."""
        core = {k: v for k, v in asdict(self).items() if k not in _RUN_LOCAL_FIELDS}
        digest = hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.profile}-{self.loss}-seed{self.seed}-{digest}"

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    loss: str
    seed: int
    val_accuracy: float
    val_loss: float
    metrics: dict
    history: pd.DataFrame
    steps: int
    train_seconds: float
    tokens_per_second: float
    device: str
    precision: str
    row: dict = field(repr=False, default_factory=dict)

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "model.pt"


# ------------------------------------------------------------------------------------------- hardware


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for, but no CUDA GPU is visible. Fix: use --device auto or cpu.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device 'mps' was asked for, but MPS is not available. Fix: use --device auto or cpu.")
    return dev


def cpu_has_fast_bf16() -> bool:
    """True where the CPU multiplies bf16 natively (AMX or AVX512-BF16): measured 4x fp32 on these machines."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in (" amx_bf16", " avx512_bf16"))


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------- data


def collate(split: TokenizedSplit, idx: np.ndarray, pad_multiple: int = 8) -> tuple[torch.Tensor, ...]:
    """Right-padded ids (B, T), real lengths (B,), labels (B,) for the reviews `idx`."""
    lengths = split.lengths[idx]
    T = int(math.ceil(lengths.max() / pad_multiple) * pad_multiple)
    out = np.zeros((len(idx), T), dtype=np.int64)
    for row, i in enumerate(idx):
        ids = split.ids(int(i))
        out[row, : len(ids)] = ids
    return torch.from_numpy(out), torch.from_numpy(lengths.astype(np.int64)), torch.from_numpy(split.labels[idx])


def bucketed_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, bucket_batches: int = 50):
    """One epoch of batch index arrays: shuffle, sort by length within windows of `bucket_batches` batches,
    cut into batches, shuffle the batch order. Similar lengths share a batch, so padding stays small, and the
    order is still random. Deterministic in (seed, epoch); the last incomplete batch is dropped."""
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    n_full = len(perm) // batch_size * batch_size
    perm = perm[:n_full]
    window = batch_size * bucket_batches
    batches = []
    for start in range(0, n_full, window):
        chunk = perm[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def infinite_batches(lengths: np.ndarray, batch_size: int, seed: int, skip: int = 0):
    """Epoch after epoch of bucketed batches, starting after the first `skip` batches (to resume a run)."""
    per_epoch = len(lengths) // batch_size
    epoch, offset = divmod(skip, per_epoch)
    while True:
        yield from bucketed_batches(lengths, batch_size, seed, epoch)[offset:]
        epoch, offset = epoch + 1, 0


# ------------------------------------------------------------------------------------------ schedule


def learning_rate_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to learning_rate, then cosine decay to learning_rate * min_lr_ratio at max_steps."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    min_lr = cfg.learning_rate * cfg.min_lr_ratio
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - min_lr)


# ------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def predict_split(model: torch.nn.Module, criterion: Criterion, split: TokenizedSplit, device: torch.device,
                  precision: str, batch_size: int = 128, pad_multiple: int = 8) -> tuple[np.ndarray, float]:
    """P(positive) for every review of `split` (in split order) and the mean loss."""
    was_training = model.training
    model.eval()
    order = np.argsort(split.lengths, kind="stable")  # similar lengths together: little padding
    probs = np.empty(len(split), dtype=np.float64)
    total_loss = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x, lengths, y = (t.to(device) for t in collate(split, idx, pad_multiple))
        with autocast(device, precision):
            logits = model(x, lengths)
        total_loss += criterion.loss(logits, y).item() * len(idx)
        probs[idx] = criterion.positive_probability(logits).cpu().double().numpy()
    model.train(was_training)
    return probs, total_loss / len(split)


# ---------------------------------------------------------------------------------------------- train


class NonFiniteLossError(FloatingPointError):
    pass


def load_splits(cfg: TrainConfig, verbose: bool = False) -> tuple[TokenizedSplit, TokenizedSplit]:
    """The training and validation reviews `cfg` trains and scores on (its data, split, truncation, limits)."""
    splits = load_tokenized(cfg.source, cfg.block_size, cfg.truncation, cfg.split_seed, cfg.val_fraction,
                            cfg.head_fraction, cfg.cache_dir, verbose=verbose)
    return splits["train"].subset(cfg.train_limit), splits["validation"].subset(cfg.val_limit)


def build_model(cfg: TrainConfig, n_outputs: int) -> GPTClassifier:
    mc = ModelConfig(**cfg.model_kwargs(n_outputs))
    if cfg.init == "gpt2":
        return GPTClassifier.from_pretrained_gpt2(mc)
    return GPTClassifier(mc)


def _environment(device: torch.device, precision: str) -> dict:
    env = {"device": device.type, "precision": precision, "torch_version": torch.__version__,
           "python": platform.python_version(), "platform": platform.platform(), "threads": torch.get_num_threads(),
           "processor": platform.processor() or platform.machine()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _row(cfg: TrainConfig, run_id: str, n_train: int, n_val: int, device: torch.device, precision: str,
         status: str, **numbers) -> dict:
    row = {"run_id": run_id, "status": status, "loss": cfg.loss, "seed": cfg.seed, "profile": cfg.profile,
           "source": cfg.source, "split_seed": cfg.split_seed, "n_train": n_train, "n_val": n_val,
           "val_accuracy": float("nan"), "val_loss": float("nan"), "roc_auc": float("nan"), "ece": float("nan"),
           "f1": float("nan"), "steps": cfg.max_steps, "train_seconds": float("nan"),
           "tokens_per_second": float("nan"), "device": device.type, "precision": precision,
           "torch_version": torch.__version__, "config": json.dumps(asdict(cfg), sort_keys=True), "error": ""}
    row.update(numbers)
    return row


def _load_state(path: Path, cfg: TrainConfig) -> dict | None:
    """The resumable state of an interrupted run, if it belongs to exactly this config."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} cannot be read to resume ({str(exc).splitlines()[0][:200]}). "
                              "Fix: delete it to start the run afresh.") from exc
    if not isinstance(state, dict) or state.get("config") != asdict(cfg.replace(quiet=False)):
        raise CheckpointError(f"{path} belongs to another configuration; delete it to start this run afresh.")
    return state


def train(config: TrainConfig, resume: bool = False) -> RunResult:
    """Train one classifier with a fixed schedule and record everything about it.

    Every `checkpoint_interval` steps the full training state (weights, optimizer, RNG, history, counters) is
    written atomically to `state.pt` in the run folder. With `resume=True` an interrupted run continues from
    there and ends with the same numbers as an uninterrupted one (bit-identical on CPU); without it the run
    starts afresh.
    """
    cfg = config.validate()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    criterion = get_criterion(cfg.loss)
    run_id = cfg.run_id()
    out_dir = Path(cfg.out_dir)
    run_dir = out_dir / "runs" / run_id
    state_path = run_dir / "state.pt"

    train_split, val_split = load_splits(cfg, verbose=not cfg.quiet)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, criterion.n_outputs).to(device)
    raw_model = model  # the uncompiled module is what gets saved
    optimizer = raw_model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2),
                                               device.type)
    history: list[dict] = []
    start_step, train_tokens, train_seconds, interval_loss, interval_n = 0, 0, 0.0, 0.0, 0
    state = _load_state(state_path, cfg) if resume else None
    if state is not None:
        raw_model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        history = list(state["history"])
        start_step, train_tokens, train_seconds = state["step"], state["train_tokens"], state["train_seconds"]
        interval_loss, interval_n = state["interval_loss"], state["interval_n"]
    use_compile = cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")
    if use_compile:
        model = torch.compile(model, dynamic=True)
    if not cfg.quiet:
        resumed = f", resumed at step {start_step}" if state is not None else ""
        print(f"run {run_id}: {raw_model.num_parameters() / 1e6:.2f}M parameters "
              f"({raw_model.num_parameters(True) / 1e6:.2f}M non-embedding), {len(train_split)} train / "
              f"{len(val_split)} val reviews, {device.type} {precision}{' compiled' if use_compile else ''}{resumed}")

    def save_state(step: int) -> None:
        payload = {"config": asdict(cfg.replace(quiet=False)), "step": step,
                   "model_state": raw_model.state_dict(), "optimizer_state": optimizer.state_dict(),
                   "torch_rng": torch.get_rng_state(), "history": history, "train_tokens": train_tokens,
                   "train_seconds": train_seconds, "interval_loss": interval_loss, "interval_n": interval_n}
        if device.type == "cuda":
            payload["cuda_rng"] = torch.cuda.get_rng_state_all()
        buf = io.BytesIO()
        torch.save(payload, buf)
        atomic_write_bytes(state_path, buf.getvalue())

    def fail(message: str, step: int) -> None:
        upsert_result_row(out_dir / "runs.csv", _row(cfg, run_id, len(train_split), len(val_split), device,
                                                     precision, "failed", steps=step, error=message))
        raise NonFiniteLossError(message)

    batches = infinite_batches(train_split.lengths, cfg.batch_size, cfg.seed, skip=start_step)
    checkpoint_every = cfg.checkpoint_interval or cfg.eval_interval
    probs, val_loss = None, float("nan")
    last_val_acc = history[-1]["val_accuracy"] if history else float("nan")
    tps = train_tokens / train_seconds if train_seconds else 0.0
    bar = tqdm(total=cfg.max_steps, initial=start_step, desc=f"{cfg.loss} seed {cfg.seed}", disable=cfg.quiet,
               unit="step", dynamic_ncols=True)
    model.train()
    for step in range(start_step, cfg.max_steps):
        t0 = time.perf_counter()
        lr = learning_rate_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, lengths, y = (t.to(device, non_blocking=True) for t in collate(train_split, next(batches), cfg.pad_multiple))
        with autocast(device, precision):
            logits = model(x, lengths)
        loss = criterion.loss(logits, y)
        if not torch.isfinite(loss):
            bar.close()
            kept = f"; the last good state (step {history[-1]['step']}) is kept in {state_path}" if history else ""
            fail(f"run {run_id}: loss became {loss.item()} at step {step} (learning rate {lr:.3g}){kept}. "
                 "Hint: lower --set learning_rate, keep grad_clip > 0, or use --precision fp32.", step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
        optimizer.step()
        loss_value = loss.item()  # also synchronises the device, so the timing below is honest
        train_seconds += time.perf_counter() - t0
        train_tokens += int(lengths.sum())
        interval_loss += loss_value
        interval_n += 1
        tps = train_tokens / max(train_seconds, 1e-9)
        done = step + 1
        if done % cfg.eval_interval == 0 or done == cfg.max_steps:
            probs, val_loss = predict_split(model, criterion, val_split, device, precision, cfg.eval_batch_size,
                                            cfg.pad_multiple)
            last_val_acc = float(np.mean((probs > 0.5) == val_split.labels))
            history.append({"step": done, "train_loss": interval_loss / interval_n, "val_loss": val_loss,
                            "val_accuracy": last_val_acc, "lr": lr, "tokens_per_second": tps,
                            "train_seconds": train_seconds})
            interval_loss, interval_n = 0.0, 0
        if done % checkpoint_every == 0 and done < cfg.max_steps:
            save_state(done)
        bar.set_postfix(loss=f"{loss_value:.3f}", val_acc=f"{last_val_acc:.3f}", tok_s=f"{tps:,.0f}", refresh=False)
        bar.update(1)
    bar.close()
    if probs is None:  # resumed after the last step: score the (identical) final weights again
        probs, val_loss = predict_split(model, criterion, val_split, device, precision, cfg.eval_batch_size,
                                        cfg.pad_multiple)

    metrics = classification_metrics(val_split.labels, probs)
    env = _environment(device, precision)
    history_df = pd.DataFrame(history)
    row = _row(cfg, run_id, len(train_split), len(val_split), device, precision, "ok",
               val_accuracy=metrics["accuracy"], val_loss=val_loss, roc_auc=metrics["roc_auc"], ece=metrics["ece"],
               f1=metrics["f1"], train_seconds=round(train_seconds, 3), tokens_per_second=round(tps, 1))
    model_config = asdict(raw_model.config)
    save_checkpoint(run_dir / "model.pt", {
        "model_state": {k: v.detach().cpu() for k, v in raw_model.state_dict().items()},
        "model_config": model_config, "loss": cfg.loss, "tokenizer": TOKENIZER_NAME, "data_source": cfg.source,
        "split_seed": cfg.split_seed, "truncation": cfg.truncation, "head_fraction": cfg.head_fraction,
        "train_config": asdict(cfg), "step": cfg.max_steps, "val_accuracy": metrics["accuracy"],
    })
    atomic_write_csv(run_dir / "history.csv", history_df)
    atomic_write_csv(run_dir / "val_predictions.csv", pd.DataFrame(
        {"row": np.arange(len(val_split)), "label": val_split.labels, "positive_probability": probs}))
    atomic_write_json(run_dir / "meta.json", {"run_id": run_id, "config": asdict(cfg), "model_config": model_config,
                                              "metrics": metrics, "environment": env, "val_loss": val_loss,
                                              "train_seconds": train_seconds, "tokens_per_second": tps,
                                              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    upsert_result_row(out_dir / "runs.csv", row)
    state_path.unlink(missing_ok=True)  # the run is complete; its resumable state is no longer needed
    if not cfg.quiet:
        print(f"run {run_id}: val accuracy {metrics['accuracy']:.4f}, val loss {val_loss:.4f}, "
              f"{train_seconds:.0f}s training, {tps:,.0f} tokens/s -> {run_dir}")
    return RunResult(run_id=run_id, run_dir=run_dir, loss=cfg.loss, seed=cfg.seed, val_accuracy=metrics["accuracy"],
                     val_loss=val_loss, metrics=metrics, history=history_df, steps=cfg.max_steps,
                     train_seconds=train_seconds, tokens_per_second=tps, device=device.type, precision=precision,
                     row=row)
