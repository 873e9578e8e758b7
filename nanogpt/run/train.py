"""One training run: `train(TrainConfig(...)) -> RunResult`. This module is the loop; the rest lives in

config.py (what a run is), runtime.py (device, precision), batching.py (length-bucketed batches),
evaluate.py (the validation pass), checkpoints.py and rundir.py (what a run leaves behind).

CUDA first (bf16 autocast, TF32, fused AdamW, torch.compile), then MPS, then CPU, where the same code runs
with bf16 autocast if the processor has native bf16 matmul (AVX512-BF16 or AMX) and fp32 otherwise.
The reported number is the validation accuracy at the end of the fixed schedule: nothing is selected on the
split that is reported.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict

import numpy as np
import pandas as pd
import torch

from nanogpt.core.losses import get_criterion
from nanogpt.core.metrics import classification_metrics
from nanogpt.core.model import GPTClassifier
from nanogpt.core.runtime import autocast, environment, prepare_device, resolve_device, resolve_precision, use_compile
from nanogpt.data.batching import collate, infinite_batches
from nanogpt.data.imdb import DataValidationError, label_mapping, load_splits
from nanogpt.data.windows import random_windows
from nanogpt.run.adversarial import adversarial_objective
from nanogpt.run.auxlm import AuxLM, aux_lm_optimizer
from nanogpt.run.backbone import backbone_path, check_fits, load_backbone, load_into
from nanogpt.run.checkpoints import (
    CheckpointError,
    classifier_payload,
    half_precision,
    load_failure_reason,
    save_checkpoint,
    save_torch_atomic,
)
from nanogpt.run.config import RUN_LOCAL_FIELDS, RunResult, TrainConfig
from nanogpt.run.distill import distilled_objective, load_teacher
from nanogpt.run.evaluate import evaluate
from nanogpt.run.predictions import archive_finished_run
from nanogpt.run.progress import progress
from nanogpt.run.results import refuse_foreign, result_row, runs_csv, upsert_result_row
from nanogpt.run.rundir import RunDir
from nanogpt.run.selection import DevSelection, carve_dev, scheduled


def learning_rate_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to learning_rate, then cosine decay to learning_rate * min_lr_ratio at max_steps."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    min_lr = cfg.learning_rate * cfg.min_lr_ratio
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - min_lr)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message gives the step, the learning rate and a hint."""


class RunClaimedError(RuntimeError):
    """Another live process is training this run (it holds the run's claim)."""


def build_model(cfg: TrainConfig, n_outputs: int) -> GPTClassifier:
    """The classifier `cfg` trains, with the attention kernel it asks for (random or GPT-2 backbone)."""
    if cfg.head_init == "paired":  # draw exactly what the BCE model of this seed draws, then pair its head
        return build_model(cfg.replace(head_init="independent"), 1).paired_ce_head()
    mc = cfg.model_config(n_outputs)
    if cfg.init == "gpt2":
        return GPTClassifier.from_pretrained_gpt2(mc, attention=cfg.attention)
    model = GPTClassifier(mc, cfg.attention)  # draws what a scratch run of this seed draws: the same head
    path = backbone_path(cfg.init)
    if path is not None:
        ckpt = load_backbone(path)
        check_fits(ckpt, cfg, path)
        load_into(model, ckpt)
    return model


def _core(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in RUN_LOCAL_FIELDS}


def _load_state(path, cfg: TrainConfig, run_id: str) -> dict | None:
    """The resumable state of an interrupted run, if it belongs to this run's identity (data content,
    config and precision; not its folder, thread count, checkpoint interval or verbosity)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} cannot be read to resume ({load_failure_reason(exc)}). "
                              "Fix: delete it to start the run afresh.") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a training state of this project; delete it to start afresh.")
    same = (state["run_id"] == run_id if "run_id" in state
            else _core(state.get("config") or {}) == _core(asdict(cfg)))  # states written before run ids did
    if not same:
        raise CheckpointError(f"{path} belongs to another configuration; delete it to start this run afresh.")
    return state


def check_batch_fits(n_train: int, cfg: TrainConfig) -> None:
    """A clear error when the training split cannot fill one batch (an epoch would hold no batch)."""
    if n_train < cfg.batch_size:
        limit = f" (train_limit={cfg.train_limit})" if cfg.train_limit else ""
        raise DataValidationError(
            f"{cfg.source}: the training split has {n_train} reviews{limit}, fewer than one batch of "
            f"{cfg.batch_size}. Fix: give at least {cfg.batch_size} training reviews (about "
            f"{int(cfg.batch_size / (1 - cfg.val_fraction)) + 1} rows before the split), or --set "
            f"batch_size={max(1, n_train)} or smaller.")


def train(config: TrainConfig, resume: bool = False) -> RunResult:
    """Train one classifier with a fixed schedule and record everything about it.

    Every `checkpoint_interval` steps the full training state (weights, optimizer, RNG, history, counters) is
    written atomically to `state.pt` in the run folder. With `resume=True` an interrupted run continues from
    there and ends with the same numbers as an uninterrupted one (bit-identical on CPU); without it the run
    starts afresh.
    """
    cfg = config.validate()
    run = RunDir(cfg.out_dir, cfg.run_id())
    with run.claim() as mine:
        if not mine:
            raise RunClaimedError(f"run {run.run_id} is being trained by another process (pid "
                                  f"{run.claimed_by()}); its result will appear in {runs_csv(cfg.out_dir)}.")
        run.clean_stale(finished=False)  # temporary files of writes killed in an earlier attempt
        return train_claimed(cfg, run, resume)


def train_claimed(cfg: TrainConfig, run: RunDir, resume: bool, write_index: bool = True) -> RunResult:
    """`train` for a caller that already holds the run's claim (a study, which checks first whether another
    process finished the run meanwhile). With `write_index=False` the row goes to the run folder only, and the
    caller upserts it into runs.csv (a Dask worker: the client writes the index once)."""
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    prepare_device(device, cfg.num_threads)
    criterion = get_criterion(cfg.loss)
    run_id = run.run_id
    index = runs_csv(cfg.out_dir)
    if write_index:
        refuse_foreign(index, run_id, device.type)

    train_split, val_split = load_splits(cfg, verbose=not cfg.quiet)
    dev_split = None
    if cfg.dev_fraction:  # carved from the training part: the validation part never chooses anything
        train_split, dev_split = carve_dev(train_split, cfg.dev_fraction, cfg.split_seed, f"{cfg.source} training part")
    check_batch_fits(len(train_split), cfg)
    teacher = torch.from_numpy(load_teacher(cfg.teacher, train_split)) if cfg.teacher else None
    recorded, cfg = cfg, scheduled(cfg, len(train_split))  # the loop runs the schedule; the row records the config
    selection = DevSelection(patience=cfg.early_stopping, keep_best=cfg.keep_best)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, criterion.n_outputs).to(device)
    raw_model = model  # the uncompiled module is what gets saved
    optimizer = raw_model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2),
                                               device.type, cfg.head_lr_scale, cfg.head_weight_decay_scale,
                                               cfg.backbone_lr_scale)
    aux = aux_optimizer = None
    if cfg.lm_weight:  # the backbone's next-token output, trained beside the classifier (run/auxlm.py)
        path = backbone_path(cfg.init)
        aux = AuxLM.from_backbone(load_backbone(path), path).to(device)
        aux_optimizer = aux_lm_optimizer(aux, cfg, device.type)
    optimizers = [optimizer] if aux_optimizer is None else [optimizer, aux_optimizer]
    history: list[dict] = []
    start_step, train_tokens, train_seconds, interval_loss, interval_n = 0, 0, 0.0, 0.0, 0
    state = _load_state(run.state, cfg, run_id) if resume else None
    if state is not None:
        raw_model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        if aux is not None:
            aux.load_state_dict(state["aux_lm_state"])
            aux_optimizer.load_state_dict(state["aux_optimizer_state"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        history = list(state["history"])
        start_step, train_tokens, train_seconds = state["step"], state["train_tokens"], state["train_seconds"]
        interval_loss, interval_n = state["interval_loss"], state["interval_n"]
        selection.load(state.get("selection"))
    compiled = use_compile(cfg.compile, device)
    if compiled:
        model = torch.compile(model, dynamic=True)
    if not cfg.quiet:
        resumed = f", resumed at step {start_step}" if state is not None else ""
        dev = f" / {len(dev_split)} dev" if dev_split is not None else ""
        schedule = f", {cfg.max_steps} steps ({cfg.epochs:g} passes)" if cfg.epochs is not None else ""
        print(f"run {run_id}: {raw_model.num_parameters() / 1e6:.2f}M parameters "
              f"({raw_model.num_parameters(True) / 1e6:.2f}M non-embedding), {len(train_split)} train{dev} / "
              f"{len(val_split)} val reviews{schedule}, {device.type} {precision}{' compiled' if compiled else ''}"
              f"{resumed}")

    def save_state(step: int) -> None:
        payload = {"run_id": run_id, "config": asdict(recorded), "step": step, "selection": selection.state(),
                   "model_state": raw_model.state_dict(), "optimizer_state": optimizer.state_dict(),
                   "torch_rng": torch.get_rng_state(), "history": history, "train_tokens": train_tokens,
                   "train_seconds": train_seconds, "interval_loss": interval_loss, "interval_n": interval_n}
        if device.type == "cuda":
            payload["cuda_rng"] = torch.cuda.get_rng_state_all()
        if aux is not None:
            payload.update(aux_lm_state=aux.state_dict(), aux_optimizer_state=aux_optimizer.state_dict())
        save_torch_atomic(run.state, payload)

    def fail(message: str, step: int) -> None:
        row = result_row(recorded, run_id, len(train_split), len(val_split), device.type, precision, "failed",
                         steps=step, error=message)
        run.write_meta(row, config=asdict(recorded), environment=environment(device, precision))
        if write_index:
            upsert_result_row(index, row)
        raise NonFiniteLossError(message)

    windowed = cfg.truncation == "random_window"  # whole training reviews, each cut to a random window per draw
    batch_lengths = np.minimum(train_split.lengths, cfg.block_size) if windowed else train_split.lengths
    batches = infinite_batches(batch_lengths, cfg.batch_size, cfg.seed, skip=start_step)

    def next_batch(step: int) -> tuple[np.ndarray, tuple[torch.Tensor, ...]]:
        idx = next(batches)
        if windowed:  # offsets drawn from (seed, step): a resumed run cuts what an uninterrupted one cuts
            part = random_windows(train_split, idx, cfg.block_size, np.random.default_rng([cfg.seed, step, 1]))
            return idx, collate(part, np.arange(len(idx)), cfg.pad_multiple)
        return idx, collate(train_split, idx, cfg.pad_multiple)

    checkpoint_every = cfg.checkpoint_interval or cfg.eval_interval
    probs, val_loss = None, float("nan")
    evaluated = [h for h in history if not math.isnan(h["val_accuracy"])]
    last_val_acc = evaluated[-1]["val_accuracy"] if evaluated else float("nan")
    last_saved = start_step
    tps = train_tokens / train_seconds if train_seconds else 0.0
    bar = progress(cfg.max_steps, start_step, f"{cfg.loss} seed {cfg.seed}", "step", disable=cfg.quiet)
    model.train()
    done = start_step
    for step in range(start_step, cfg.max_steps):  # an early stop breaks out before any save: no state holds one
        t0 = time.perf_counter()
        lr = learning_rate_at(step, cfg)
        for group in (g for opt in optimizers for g in opt.param_groups):
            group["lr"] = lr * group.get("lr_scale", 1.0)
        idx, batch = next_batch(step)
        x, lengths, y = (t.to(device, non_blocking=True) for t in batch)
        if cfg.adversarial == "none":
            with autocast(device, precision):
                if aux is None:
                    logits = model(x, lengths)
                else:  # the uncompiled module: its hidden states feed both outputs
                    h = raw_model.hidden_states(x)
                    logits = raw_model.classify(h, lengths)
            loss = objective = criterion.loss(logits, y)  # the labels' loss: the curve's, whatever the objective
            if teacher is not None:
                objective = distilled_objective(criterion, logits, loss, teacher[idx].to(device), cfg.distill_weight,
                                                cfg.distill_temperature)
            if aux is not None:  # in fp32, as pre-training computed it
                objective = objective + cfg.lm_weight * aux.loss(h, x, lengths)
        else:  # the uncompiled module: the perturbation needs the embeddings' gradient
            with autocast(device, precision):
                loss, objective = adversarial_objective(raw_model, criterion, cfg.adversarial, x, lengths, y,
                                                        cfg.adversarial_epsilon, cfg.adversarial_weight)
        if not torch.isfinite(objective):
            bar.close()
            kept = f"; the last good state (step {last_saved}) is kept in {run.state}" if last_saved else ""
            fail(f"run {run_id}: loss became {objective.item()} at step {step} (learning rate {lr:.3g}){kept}. "
                 "Hint: lower --set learning_rate, keep grad_clip > 0, or use --precision fp32.", step)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        objective.backward()
        if cfg.grad_clip > 0:  # one norm over everything the objective trains
            torch.nn.utils.clip_grad_norm_(raw_model.parameters() if aux is None
                                           else [*raw_model.parameters(), *aux.parameters()], cfg.grad_clip)
        for opt in optimizers:
            opt.step()
        loss_value = loss.item()  # also synchronises the device, so the timing below is honest
        train_seconds += time.perf_counter() - t0
        train_tokens += int(lengths.sum())
        interval_loss += loss_value
        interval_n += 1
        tps = train_tokens / max(train_seconds, 1e-9)
        done = step + 1
        evaluate_now = done % cfg.eval_interval == 0 or done == cfg.max_steps
        stop = False
        if evaluate_now or (cfg.log_interval and done % cfg.log_interval == 0):
            point = {"step": done, "train_loss": interval_loss / interval_n, "val_loss": float("nan"),
                     "val_accuracy": float("nan"), "lr": lr, "tokens_per_second": tps, "train_seconds": train_seconds}
            if evaluate_now:
                probs, val_loss = evaluate(model, criterion, val_split, device, precision, cfg.eval_batch_size,
                                           cfg.pad_multiple, cfg.reading, cfg.window_stride)
                last_val_acc = float(np.mean((probs > 0.5) == val_split.labels))
                point.update(val_loss=val_loss, val_accuracy=last_val_acc)
                if dev_split is not None:  # the development slice: what chooses the checkpoint and the stop
                    dev_probs, dev_loss = evaluate(model, criterion, dev_split, device, precision, cfg.eval_batch_size,
                                                   cfg.pad_multiple, cfg.reading, cfg.window_stride)
                    point.update(dev_loss=dev_loss, dev_accuracy=float(np.mean((dev_probs > 0.5) == dev_split.labels)))
                    stop = selection.observe(done, point["dev_accuracy"], dev_loss, raw_model)
            history.append(point)  # the training loss is the mean since the previous point
            interval_loss, interval_n = 0.0, 0
            if stop:  # set only by a development pass
                bar.close()
                if not cfg.quiet:
                    print(f"run {run_id}: stopped early at step {done}: no better development accuracy in "
                          f"{cfg.early_stopping} validation passes (best {selection.best_accuracy:.4f} at step "
                          f"{selection.best_step})")
                break
        if done % checkpoint_every == 0 and done < cfg.max_steps:
            save_state(done)
            last_saved = done
        bar.set_postfix(loss=f"{loss_value:.3f}", val_acc=f"{last_val_acc:.3f}", tok_s=f"{tps:,.0f}", refresh=False)
        bar.update(1)
    bar.close()
    restored = selection.restore(raw_model)  # the kept model: the best one on the development slice
    kept_step = selection.best_step if restored else done
    if restored:
        probs = None
    if probs is None:  # resumed after the last step, or the best weights restored: score the kept weights
        probs, val_loss = evaluate(model, criterion, val_split, device, precision, cfg.eval_batch_size,
                                   cfg.pad_multiple, cfg.reading, cfg.window_stride)

    metrics = classification_metrics(val_split.labels, probs)
    history_df = pd.DataFrame(history)
    model_sha256 = ""
    if cfg.keep != "none":
        payload = classifier_payload(raw_model, cfg.loss, cfg.truncation, cfg.head_fraction, data_source=cfg.source,
                                     split_seed=cfg.split_seed, train_config=asdict(recorded),
                                     step=kept_step,
                                     val_accuracy=metrics["accuracy"], reading=cfg.reading,
                                     window_stride=cfg.window_stride)
        model_sha256 = save_checkpoint(run.model, half_precision(payload) if cfg.keep == "half" else payload)
    else:
        run.model.unlink(missing_ok=True)  # weights of an earlier attempt would not match this record
    chosen = {}
    if dev_split is not None:  # the choice, and the last development score (a fixed schedule's own number)
        dev_scores = [h["dev_accuracy"] for h in history if not math.isnan(h.get("dev_accuracy", math.nan))]
        chosen = {**selection.summary(), "last_dev_accuracy": dev_scores[-1] if dev_scores else None}
    row = result_row(recorded, run_id, len(train_split), len(val_split), device.type, precision, "ok",
                     val_accuracy=metrics["accuracy"], val_loss=val_loss, roc_auc=metrics["roc_auc"],
                     ece=metrics["ece"], f1=metrics["f1"], train_seconds=round(train_seconds, 3),
                     tokens_per_second=round(tps, 1), model_sha256=model_sha256, steps=done,
                     **({"n_dev": len(dev_split), **chosen} if dev_split is not None else {}))
    run.write_history(history_df)
    run.write_val_predictions(val_split.labels, probs)
    # meta.json last in the folder: with it the run counts as finished, whatever happens to runs.csv
    run.write_meta(row, config=asdict(recorded), model_config=asdict(raw_model.config), metrics=metrics,
                   environment=environment(device, precision), val_loss=val_loss, train_seconds=train_seconds,
                   tokens_per_second=tps, resumed_from_step=start_step,
                   schedule={"max_steps": cfg.max_steps, "eval_interval": cfg.eval_interval,
                             "warmup_steps": cfg.warmup_steps, "epochs": cfg.epochs, "steps_run": done},
                   selection=chosen or None, label_mapping=label_mapping(cfg.source))
    if write_index:
        upsert_result_row(index, row)
        archive_finished_run(cfg.out_dir, row)  # with --keep none the archive is its predictions' lasting copy
    run.clean_stale(finished=True, keep=cfg.keep)  # the resumable state and any temporary files
    if not cfg.quiet:
        print(f"run {run_id}: val accuracy {metrics['accuracy']:.4f}, val loss {val_loss:.4f}, "
              f"{train_seconds:.0f}s training, {tps:,.0f} tokens/s -> {run.path}")
    return RunResult(run_id=run_id, run_dir=run.path, loss=cfg.loss, seed=cfg.seed, val_accuracy=metrics["accuracy"],
                     val_loss=val_loss, metrics=metrics, history=history_df, steps=done,
                     train_seconds=train_seconds, tokens_per_second=tps, device=device.type, precision=precision,
                     row=row, resumed_from_step=start_step)


def train_unless_finished(cfg: TrainConfig, run: RunDir, write_index: bool = True) -> tuple[str, dict]:
    """For a caller holding the run's claim: ('ok', its row) if it finished meanwhile, else train it (resuming
    its saved state) and return ('ok' or 'failed', the row it recorded). A NaN loss is a 'failed' row, never
    an accuracy."""
    row = run.finished_row()
    if row is not None:
        return "ok", row
    run.clean_stale(finished=False)
    try:
        return "ok", train_claimed(cfg, run, resume=True, write_index=write_index).row
    except NonFiniteLossError:
        return "failed", run.read_meta()["row"]
