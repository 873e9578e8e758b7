"""`python -m nanogpt gpu-check`: the CUDA path, checked in minutes on a GPU, with one JSON report.

Parts, each timed, each passing or failing on its own (a failure never hides the parts after it):
  environment        GPU, driver, torch and CUDA versions, bf16 support, TF32 state after `prepare_device`
  compiled_vs_eager  a tiny model trained a few steps compiled (dynamic shapes, batches of several lengths) and
                     eager gives the same losses within the precision's tolerance; the compiled run's checkpoint
                     is the plain module's and loads for prediction
  bf16_fused_step    one bf16-autocast training step with fused AdamW: finite loss and gradients, fp32 master
                     weights that moved
  paper_run          a `paper`-profile run cut to a few hundred steps (compiled, as `train` runs on CUDA):
                     tokens/s, seconds per step, peak GPU memory, accuracy reached
  study_estimate     the full `paper` study's wall time predicted from that run's steady-state steps
  bench              the bench's GPU section (bf16 matmul limit, our step against Hugging Face's GPT-2)

Without CUDA the command prints one line and exits with EXIT_NO_CUDA. The parts are plain functions of a
device, which is how the tests run all of them on a CPU with tiny sizes.
"""
from __future__ import annotations

import math
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from nanogpt.core.artifacts import atomic_write_json
from nanogpt.core.runtime import autocast, environment, prepare_device, resolve_precision, use_compile

EXIT_NO_CUDA = 77  # the automake convention for "skipped": nothing was checked, nothing failed
# Largest |eager - compiled| allowed in a training loss after a few steps. fp32 on CPU: Inductor fuses and
# reorders reductions; measured here: losses identical, probabilities within 6e-8, far below 1e-4. CUDA fp32
# runs TF32 matmuls (10-bit mantissa) in both modes, in different orders: 5e-3. bf16 (8-bit mantissa, ~0.4%
# per value): 3e-2 on a loss near 0.69. The CUDA tolerances are reasoned, not yet measured.
TOLERANCE = {"fp32": 1e-4, "tf32": 5e-3, "bf16": 3e-2}
TINY = dict(block_size=256, train_limit=512, val_limit=256, n_layer=1, n_head=2, n_embd=32, dropout=0.0,
            gelu="none", batch_size=16, max_steps=6, warmup_steps=2, eval_interval=6, log_interval=1,
            learning_rate=2e-3, quiet=True)


def _tiny_config(out_dir: Path, device: torch.device, **changes):
    from nanogpt.run.config import TrainConfig

    return TrainConfig(profile="gpu-check", device=device.type, out_dir=str(out_dir),
                       **{**TINY, **changes}).validate()


def check_environment(device: torch.device) -> dict:
    prepare_device(device)
    precision = resolve_precision("auto", device)
    env = {**environment(device, precision), "cuda_build": torch.version.cuda}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu_memory_gib=round(props.total_memory / 2**30, 1), capability=f"{props.major}.{props.minor}",
                   bf16_supported=torch.cuda.is_bf16_supported(), driver=_driver_version(),
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return env


def _driver_version() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def batch_lengths(cfg, steps: int) -> list[int]:
    """The padded lengths of the first `steps` training batches of `cfg` (what the compiled graph sees)."""
    from nanogpt.data.batching import collate, infinite_batches
    from nanogpt.data.imdb import load_splits

    split = load_splits(cfg)[0]
    batches = infinite_batches(split.lengths, cfg.batch_size, cfg.seed)
    return [int(collate(split, next(batches), cfg.pad_multiple)[0].shape[1]) for _ in range(steps)]


def compiled_matches_eager(device: torch.device, workdir: Path, precision: str | None = None) -> dict:
    """Train the tiny model eager and compiled from one seed; compare every step's loss, the validation loss
    and probabilities; load the compiled run's checkpoint for prediction."""
    from nanogpt.run.checkpoints import load_checkpoint
    from nanogpt.run.predictions import load_val_predictions
    from nanogpt.run.train import train
    from nanogpt.serve.predict import Classifier

    precision = precision or resolve_precision("auto", device)
    results = {}
    for mode in ("off", "on"):
        results[mode] = train(_tiny_config(workdir / f"compile-{mode}", device, compile=mode, precision=precision))
    eager, compiled = results["off"], results["on"]
    kind = "tf32" if device.type == "cuda" and precision == "fp32" else precision
    tolerance = TOLERANCE[kind]
    step_diff = float(np.max(np.abs(eager.history["train_loss"].to_numpy() - compiled.history["train_loss"].to_numpy())))
    probs = [load_val_predictions(r.run_dir.parent.parent, r.run_id)["positive_probability"].to_numpy()
             for r in (eager, compiled)]
    prob_diff = float(np.max(np.abs(probs[0] - probs[1])))
    wrapped = [k for k in load_checkpoint(compiled.checkpoint)["model_state"] if k.startswith("_orig_mod.")]
    predicted = Classifier.load(compiled.checkpoint).predict(["A fine film.", "Dull and far too long."])
    lengths = batch_lengths(_tiny_config(workdir / "lengths", device), TINY["max_steps"])
    out = {"precision": precision, "tolerance": tolerance, "max_step_loss_diff": step_diff,
           "val_loss_diff": abs(eager.val_loss - compiled.val_loss), "max_probability_diff": prob_diff,
           "batch_lengths": lengths, "checkpoint_keys_wrapped": len(wrapped),
           "checkpoint_predicts": [float(p) for p in predicted.probabilities]}
    problems = []
    if len(set(lengths)) < 2:
        problems.append(f"the batches had one length only ({lengths}): dynamic shapes were not exercised")
    if not step_diff <= tolerance or not out["val_loss_diff"] <= tolerance:
        problems.append(f"compiled and eager losses differ by {max(step_diff, out['val_loss_diff']):.2e} > {tolerance:g}")
    if wrapped:
        problems.append(f"the checkpoint holds the compiled wrapper's keys ({wrapped[0]}, ...), not the module's")
    if problems:
        raise AssertionError("; ".join(problems))
    return out


def fused_bf16_step(device: torch.device) -> dict:
    """One training step as the CUDA path takes it: bf16 autocast, fused AdamW, fp32 weights."""
    from nanogpt.core.losses import get_criterion
    from nanogpt.run.train import build_model

    cfg = _tiny_config(Path(tempfile.gettempdir()), device, precision="bf16")
    criterion = get_criterion("bce")
    torch.manual_seed(0)
    model = build_model(cfg, criterion.n_outputs).to(device)
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), device.type)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randint(1, 50_000, (8, 64), device=device)
    lengths = torch.full((8,), 64, device=device)
    y = torch.tensor([0, 1] * 4, device=device)
    with autocast(device, "bf16"):
        logits = model(x, lengths)
    loss = criterion.loss(logits, y)
    loss.backward()
    grads_finite = all(torch.isfinite(p.grad).all().item() for p in model.parameters() if p.grad is not None)
    optimizer.step()
    moved = sum(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    fused = bool(optimizer.defaults.get("fused"))
    out = {"loss": float(loss.item()), "logits_dtype": str(logits.dtype), "fused_adamw": fused,
           "grads_finite": grads_finite, "weights_dtype": str(next(model.parameters()).dtype),
           "tensors_moved": moved, "tensors": len(before)}
    problems = [msg for bad, msg in [(not math.isfinite(out["loss"]), "the loss is not finite"),
                                     (logits.dtype != torch.bfloat16, "autocast did not produce bf16 logits"),
                                     (not fused, "AdamW is not the fused implementation"),
                                     (not grads_finite, "a gradient is not finite"),
                                     (out["weights_dtype"] != "torch.float32", "the master weights are not fp32"),
                                     (moved < len(before) // 2, "the optimizer step left most weights unchanged")]
                if bad]
    if problems:
        raise AssertionError("; ".join(problems))
    return out


def short_paper_run(device: torch.device, workdir: Path, steps: int, **overrides) -> dict:
    """The `paper` profile cut to `steps` steps, trained as `train` trains it here (compiled on CUDA)."""
    from nanogpt.run.profiles import get_profile
    from nanogpt.run.train import train

    log_every = max(1, steps // 5)
    cfg = get_profile("paper").make_config("ce", 0, out_dir=str(workdir / "paper"), quiet=True, max_steps=steps,
                                           eval_interval=steps, log_interval=log_every, warmup_steps=min(200, steps // 4),
                                           device=device.type, **overrides)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t0
    points = result.history.dropna(subset=["train_loss"])
    # steady state: the steps after the first logged point (which pays for compilation and warm-up)
    steady = (points["train_seconds"].iloc[-1] - points["train_seconds"].iloc[0]) / (points["step"].iloc[-1] -
                                                                                       points["step"].iloc[0])
    out = {"steps": steps, "wall_seconds": wall, "train_seconds": result.train_seconds,
           "steady_step_seconds": float(steady), "first_interval_seconds": float(points["train_seconds"].iloc[0]),
           "tokens_per_second": result.tokens_per_second, "val_accuracy": result.val_accuracy,
           "precision": result.precision, "compiled": use_compile(cfg.compile, device)}
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if not math.isfinite(result.val_loss):
        raise AssertionError(f"the paper run ended with validation loss {result.val_loss}")
    return out


def study_estimate(device: torch.device, run: dict, **overrides) -> dict:
    """The `paper` study's wall time: the short run's steady-state step time over the full schedule, its first
    interval once per run (compilation, warm-up), and the validation passes and fixed costs as `estimate`
    measures them on the profile's own batches."""
    from nanogpt.run.profiles import get_profile
    from nanogpt.study.estimate import RUN_OVERHEAD_S, estimate_run_seconds

    if not run:
        raise RuntimeError("no estimate: it needs the paper_run part, which failed")
    prof = get_profile("paper")
    cfg = prof.make_config("ce", 0, device=device.type, **overrides)
    eager = estimate_run_seconds(cfg)
    eval_seconds = eager["run_seconds"] - cfg.max_steps * eager["step_seconds"] - RUN_OVERHEAD_S
    per_run = cfg.max_steps * run["steady_step_seconds"] + run["first_interval_seconds"] + eval_seconds + RUN_OVERHEAD_S
    runs = 2 * len(prof.seeds)
    return {"run_seconds": per_run, "runs": runs, "study_minutes": per_run * runs / 60,
            "validation_seconds_per_run": eval_seconds, "eager_step_seconds": eager["step_seconds"],
            "compiled_speedup": eager["step_seconds"] / run["steady_step_seconds"]}


def bench_section(device: torch.device, **overrides) -> dict:
    from nanogpt.bench.accelerator import accelerator_figures

    return accelerator_figures(device, "paper", rounds=5, study=False, **overrides)


def gpu_check(device: torch.device, out_path: str | Path, steps: int = 300, paper_overrides: dict | None = None,
              bench_overrides: dict | None = None, progress=print) -> dict:
    """Run every part on `device`, write the report to `out_path` (atomically), and return it."""
    report = {"device": str(device), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "parts": {}}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        paper = {}
        parts = [("environment", lambda: check_environment(device)),
                 ("compiled_vs_eager", lambda: compiled_matches_eager(device, work)),
                 ("bf16_fused_step", lambda: fused_bf16_step(device)),
                 ("paper_run", lambda: paper.setdefault("run", short_paper_run(device, work, steps,
                                                                               **(paper_overrides or {})))),
                 ("study_estimate", lambda: study_estimate(device, paper.get("run"), **(paper_overrides or {}))),
                 ("bench", lambda: bench_section(device, **(bench_overrides or {})))]
        for name, fn in parts:
            t0 = time.perf_counter()
            try:
                part = {"ok": True, "result": fn()}
            except Exception as exc:  # noqa: BLE001 - every failure is reported, and the next part still runs
                part = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(limit=6)[-3000:]}
            part["seconds"] = round(time.perf_counter() - t0, 2)
            report["parts"][name] = part
            progress(f"gpu-check {name}: {'ok' if part['ok'] else 'FAILED'} in {part['seconds']:.1f} s"
                     + ("" if part["ok"] else f" ({part['error'][:300]})"))
    report["seconds"] = round(time.perf_counter() - t_all, 2)
    report["ok"] = all(p["ok"] for p in report["parts"].values())
    atomic_write_json(out_path, report)
    return report
