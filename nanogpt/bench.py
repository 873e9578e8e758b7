"""Benchmarks that print numbers (and never assert a time): `python -m nanogpt bench [--quick] [--json FILE]`.

Each line sets our code beside the obvious alternative or the machine's own limit, measured in one process:
matmul throughput, a training step against Hugging Face `GPT2ForSequenceClassification`, an epoch of our
length-bucketed pipeline against batches padded to the block size, time to 85% validation accuracy, data
loading, and inference latency.
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import asdict

import numpy as np
import torch

from nanogpt.artifacts import atomic_write_json
from nanogpt.data import load_tokenized
from nanogpt.losses import get_criterion
from nanogpt.profiles import get_profile
from nanogpt.tokenizer import EOT_TOKEN
from nanogpt.train import (TrainConfig, autocast, build_model, bucketed_batches, collate, load_splits,
                           resolve_device, resolve_precision)


def _timed(fn, repeats: int) -> float:
    """Median seconds of fn() over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _evenly_spaced(items: list, n: int) -> list:
    """n items spread over the whole list (all of them when it is shorter)."""
    return items[:: max(1, len(items) // n)][:n]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(cfg: TrainConfig, dtype: torch.dtype, repeats: int, device: torch.device = torch.device("cpu"),
                  tokens: int = 8192) -> float:
    """Best GFLOP/s over the matmul shapes of the model's linear layers (`tokens` rows)."""
    m, d = tokens, cfg.n_embd
    best = 0.0
    for k, n in ((d, 3 * d), (d, 4 * d), (4 * d, d)):
        a, b = torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device)

        def mm():
            a @ b
            _sync(device)

        best = max(best, 2 * m * k * n / _timed(mm, repeats) / 1e9)
    return best


def model_flops_per_token(cfg: TrainConfig, seq_len: float) -> float:
    """Training FLOPs per token: 6 x non-embedding parameters, plus attention (causal, so half of 12 L T d)."""
    n = 12 * cfg.n_layer * cfg.n_embd**2
    return 6 * n + 6 * cfg.n_layer * seq_len * cfg.n_embd


def _hf_model(cfg: TrainConfig, n_outputs: int):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    hf_cfg = GPT2Config(vocab_size=50257, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                        n_head=cfg.n_head, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
                        attn_pdrop=cfg.attn_dropout, num_labels=n_outputs, pad_token_id=EOT_TOKEN)
    return GPT2ForSequenceClassification._from_config(hf_cfg, attn_implementation="sdpa")


def train_step_comparison(cfg: TrainConfig, batches, rounds: int, models=("ours", "hf"),
                          device: torch.device = torch.device("cpu")) -> dict:
    """Our model against the HF model on the same batches, same precision and optimizer, alternating A B A B.
    `models` limits the timing to one of them (the epoch comparison feeds each its own batches)."""
    precision = resolve_precision(cfg.precision, device)
    crit = get_criterion("ce")
    torch.manual_seed(0)
    ours = build_model(cfg, 2).to(device)
    hf = _hf_model(cfg, 2).to(device)
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

    def step_hf(x, lengths, y):
        mask = (torch.arange(x.size(1), device=x.device)[None, :] < lengths[:, None]).long()
        ids = torch.where(mask.bool(), x, torch.full_like(x, EOT_TOKEN))
        with autocast(device, precision):
            logits = hf(input_ids=ids, attention_mask=mask).logits
        loss = crit.loss(logits, y)
        opt_hf.zero_grad(set_to_none=True)
        loss.backward()
        opt_hf.step()

    seconds = {name: 0.0 for name in models}
    steps = {"ours": step_ours, "hf": step_hf}
    tokens = 0
    for i in range(rounds + 1):  # round 0 warms both up
        batch = batches[i % len(batches)]
        for name in models:
            fn = steps[name]
            t0 = time.perf_counter()
            fn(*batch)
            _sync(device)
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


def epoch_comparison(cfg: TrainConfig, n_batches: int) -> dict:
    """Real (non-pad) tokens/s of our bucketed pipeline against padding every batch to the block size."""
    split = load_splits(cfg)[0]
    bucketed = bucketed_batches(split.lengths, cfg.batch_size, seed=0, epoch=0)
    real = int(split.lengths[np.concatenate(bucketed)].sum())
    padded_ours = sum(int(np.ceil(split.lengths[b].max() / cfg.pad_multiple) * cfg.pad_multiple) * len(b)
                      for b in bucketed)
    padded_block = len(bucketed) * cfg.batch_size * cfg.block_size
    sample = _evenly_spaced(bucketed, n_batches)
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


def seconds_to_accuracy(cfg: TrainConfig, target: float = 0.85, eval_interval: int = 100
                        ) -> tuple[float | None, int | None]:
    """Wall seconds (training plus evaluations) until a run of `cfg`, evaluated every `eval_interval` steps,
    first reaches `target` validation accuracy, and the step of that evaluation; (None, None) if it never does.
    The run goes to a temporary folder."""
    import tempfile

    from nanogpt.train import train

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = train(cfg.replace(out_dir=tmp, quiet=True, eval_interval=eval_interval))
        wall = time.perf_counter() - t0
    h = result.history
    hit = h[h["val_accuracy"] >= target]
    if hit.empty:
        return None, None
    # train seconds at the hit plus the evaluation time spent so far, in proportion to the run's total
    eval_share = (wall - h["train_seconds"].iloc[-1]) * (len(h[h["step"] <= hit["step"].iloc[0]]) / len(h))
    return float(hit["train_seconds"].iloc[0] + eval_share), int(hit["step"].iloc[0])


class _PaddedReviews(torch.utils.data.Dataset):
    """Reviews as a user of the HF stack feeds them: every one padded to the block size, with a mask."""

    def __init__(self, split, block_size: int, pad_id: int = EOT_TOKEN):
        self.split, self.block_size, self.pad_id = split, block_size, pad_id

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict:
        ids = torch.from_numpy(self.split.ids(i).astype(np.int64))
        input_ids = torch.full((self.block_size,), self.pad_id, dtype=torch.long)
        input_ids[: len(ids)] = ids
        mask = torch.zeros(self.block_size, dtype=torch.long)
        mask[: len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "labels": int(self.split.labels[i])}


def hf_trainer_seconds_to_accuracy(cfg: TrainConfig, target: float = 0.85, eval_steps: int = 100) -> dict:
    """Wall seconds until HF `GPT2ForSequenceClassification`, trained by the HF `Trainer` at `cfg`'s model,
    batch size, learning rate and schedule (warmup, cosine to min_lr_ratio) on inputs padded to the block size,
    first reaches `target` accuracy on the same validation reviews; evaluations included, as for ours.
    Training stops at the hit (or at cfg.max_steps)."""
    import tempfile

    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    train_split, val_split = load_splits(cfg)
    precision = resolve_precision(cfg.precision, torch.device("cpu"))

    class StopAtTarget(TrainerCallback):
        def __init__(self):
            self.t0, self.seconds, self.step, self.curve = 0.0, None, None, []

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            acc = float(metrics["eval_accuracy"])
            self.curve.append((state.global_step, acc, time.perf_counter() - self.t0))
            if acc >= target and self.seconds is None:
                self.seconds, self.step = time.perf_counter() - self.t0, state.global_step
                control.should_training_stop = True

    def accuracy(pred) -> dict:
        return {"accuracy": float((np.asarray(pred.predictions).argmax(-1) == pred.label_ids).mean())}

    torch.manual_seed(cfg.seed)
    model = _hf_model(cfg, 2)
    stop = StopAtTarget()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, use_cpu=True, bf16=precision == "bf16", seed=cfg.seed, max_steps=cfg.max_steps,
            per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
            learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, adam_beta1=cfg.beta1,
            adam_beta2=cfg.beta2, max_grad_norm=cfg.grad_clip, warmup_steps=cfg.warmup_steps,
            lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": cfg.min_lr_ratio},
            optim="adamw_torch_fused", eval_strategy="steps", eval_steps=eval_steps, save_strategy="no",
            logging_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, train_dataset=_PaddedReviews(train_split, cfg.block_size),
                          eval_dataset=_PaddedReviews(val_split, cfg.block_size), compute_metrics=accuracy,
                          callbacks=[stop])
        trainer.remove_callback(PrinterCallback)  # the bench prints one line; no per-evaluation dicts
        trainer.train()
    return {"hf_trainer_seconds_to_85": stop.seconds, "hf_trainer_step_at_85": stop.step,
            "hf_trainer_curve": stop.curve, "hf_trainer_precision": precision}


def data_times() -> dict:
    from nanogpt.data import load_imdb, tokenize_texts

    dsd = load_imdb()
    texts = list(dsd["train"]["text"]) + list(dsd["validation"]["text"])
    labels = list(dsd["train"]["label"]) + list(dsd["validation"]["label"])
    t0 = time.perf_counter()
    tokenize_texts(texts, labels, 384)
    cold = time.perf_counter() - t0
    load_tokenized()  # make sure the cache exists
    cache = _timed(lambda: load_tokenized(), 3)
    return {"tokenize_cold_s": cold, "cache_load_s": cache, "reviews": len(texts)}


def inference_times(cfg: TrainConfig, calls: int, batch: int) -> dict:
    import tempfile

    from nanogpt.artifacts import save_checkpoint
    from nanogpt.data import load_imdb
    from nanogpt.predict import Classifier

    torch.manual_seed(0)
    model = build_model(cfg, 2)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/model.pt"
        save_checkpoint(path, {"model_state": model.state_dict(), "model_config": asdict(model.config), "loss": "ce",
                               "truncation": cfg.truncation, "head_fraction": cfg.head_fraction})
        clf = Classifier.load(path, precision="auto")
    texts = list(load_imdb()["validation"]["text"])
    review = texts[0]
    clf.predict(review)
    lat = []
    for _ in range(calls):
        t0 = time.perf_counter()
        clf.predict(review)
        lat.append((time.perf_counter() - t0) * 1000)
    many = list(texts[:batch])
    t0 = time.perf_counter()
    clf.predict(many)
    rps = len(many) / (time.perf_counter() - t0)
    return {"predict_latency_ms_median": float(np.median(lat)), "predict_latency_ms_p95": float(np.percentile(lat, 95)),
            "predict_reviews_per_s": rps, "predict_precision": clf.precision,
            "review_tokens": len(clf.tokenize(review).ids(0))}


def accelerator_figures(device: torch.device, profile: str = "paper", rounds: int = 20, study: bool = True,
                        study_seeds: list[int] | None = None, **overrides) -> dict:
    """On a GPU (or any `device`): bf16 matmul limit at the profile's shapes, training tokens/s of ours and of
    the HF model on length-bucketed batches (both eager, so the ratio compares models, not compilers), our
    fraction of the limit, and the wall time of the profile's whole study (both losses x its seeds, notebooks
    off, trained as `train` does: compiled on CUDA) when `study`. `overrides` shrink the study in tests."""
    import tempfile

    from nanogpt.study import run_study

    cfg = get_profile(profile).config.replace(**overrides)
    precision = resolve_precision(cfg.precision, device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    split = load_splits(cfg)[0]
    sample = _evenly_spaced(bucketed_batches(split.lengths, cfg.batch_size, seed=0, epoch=0), rounds)
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


def run_bench(quick: bool = False, json_path: str | None = None) -> dict:
    cfg = get_profile("cpu").config
    device = resolve_device("auto")
    out: dict = {"quick": quick, "config": asdict(cfg), "torch_version": torch.__version__,
                 "python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                 "threads": torch.get_num_threads(), "device": device.type}

    def show(name: str, text: str):
        print(f"{name:<28}{text}", flush=True)

    out["matmul_fp32_gflops"] = matmul_gflops(cfg, torch.float32, 3 if quick else 10)
    out["matmul_bf16_gflops"] = matmul_gflops(cfg, torch.bfloat16, 3 if quick else 10)
    show("machine limit", f"matmul fp32 {out['matmul_fp32_gflops']:,.0f} GFLOP/s, bf16 {out['matmul_bf16_gflops']:,.0f} "
                          "GFLOP/s (model shapes, 8k tokens)")
    ep = epoch_comparison(cfg, 6 if quick else 30)
    out.update(ep)
    peak = out["matmul_bf16_gflops"] if ep["precision"] == "bf16" else out["matmul_fp32_gflops"]
    achieved = ep["train_tokens_per_s"] * model_flops_per_token(cfg, ep["seq_len"]) / 1e9
    out["train_gflops"] = achieved
    out["train_fraction_of_peak"] = achieved / peak
    show("training step", f"ours {ep['train_tokens_per_s']:,.0f} tok/s, HF GPT-2 {ep['hf_train_tokens_per_s']:,.0f} "
                          f"tok/s: {ep['train_step_ratio_vs_hf']:.2f}x; {achieved:,.0f} GFLOP/s = "
                          f"{out['train_fraction_of_peak']:.0%} of {ep['precision']} matmul")
    show("epoch", f"ours {ep['epoch_seconds']:.0f} s ({ep['padding_share']:.1%} padding), HF padded to block "
                  f"{ep['hf_padded_epoch_seconds']:.0f} s ({ep['padding_share_hf_padded']:.1%} padding): "
                  f"{ep['epoch_ratio_vs_hf_padded']:.2f}x")
    for loss in ("ce", "bce"):
        out[f"seconds_to_85_{loss}"], out[f"step_at_85_{loss}"] = (
            (None, None) if quick else seconds_to_accuracy(get_profile("cpu").make_config(loss, 0, device="cpu")))
    if quick:
        out["hf_trainer_seconds_to_85"] = None
    else:
        out.update(hf_trainer_seconds_to_accuracy(cfg))
        fmt = {k: "not reached" if out[k] is None else f"{out[k]:.0f} s"
               for k in ("seconds_to_85_ce", "seconds_to_85_bce", "hf_trainer_seconds_to_85")}
        show("time to 85%", f"ours CE {fmt['seconds_to_85_ce']}, BCE {fmt['seconds_to_85_bce']}; HF Trainer (CE, "
                            f"padded to block) {fmt['hf_trainer_seconds_to_85']} (cpu profile, seed 0, "
                            "evaluations every 100 steps included)")
    out.update(data_times())
    show("data", f"tokenize {out['reviews']:,} reviews cold {out['tokenize_cold_s']:.2f} s, cache load "
                 f"{out['cache_load_s'] * 1000:.0f} ms")
    inf = inference_times(cfg, 50 if quick else 200, 200 if quick else 1000)
    out.update(inf)
    show("inference", f"one review ({inf['review_tokens']} tokens) median {inf['predict_latency_ms_median']:.1f} ms, "
                      f"p95 {inf['predict_latency_ms_p95']:.1f} ms; batch {inf['predict_reviews_per_s']:,.0f} reviews/s")
    if device.type == "cuda":
        acc = accelerator_figures(device, "paper", rounds=5 if quick else 20, study=not quick)
        out.update(acc)
        study = ("paper study (20 runs): skipped under --quick" if acc["accel_study_seconds"] is None else
                 f"paper study ({acc['accel_study_runs']} runs) {acc['accel_study_seconds'] / 60:.1f} min")
        show("gpu", f"{acc.get('accel_name', 'cuda')}: eager step ours {acc['accel_train_tokens_per_s']:,.0f} tok/s, HF "
                    f"{acc['accel_hf_train_tokens_per_s']:,.0f} ({acc['accel_train_step_ratio_vs_hf']:.2f}x), "
                    f"{acc['accel_train_fraction_of_peak']:.0%} of {acc['accel_matmul_gflops']:,.0f} GFLOP/s "
                    f"{acc['accel_precision']} matmul; {study}")
    else:
        show("gpu", "no CUDA device: skipped")
    if json_path:
        atomic_write_json(json_path, out)
        show("json", json_path)
    return out


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run_bench(quick=True), indent=1, default=str))
