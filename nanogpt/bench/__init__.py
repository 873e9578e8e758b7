"""Benchmarks that print numbers (and never assert a time): `python -m nanogpt bench [--quick] [--json FILE]`.

Each line sets our code beside the obvious alternative or the machine's own limit, measured in one process:
matmul throughput, a training step against Hugging Face `GPT2ForSequenceClassification`, an epoch of our
length-bucketed pipeline against batches padded to the block size, time to 85% validation accuracy, data
loading, inference latency, the HTTP service under load (micro-batched against one forward per request), and
a study in-process against Dask workers. On a CUDA device, the GPU section too.

Outside the core import graph: nothing in `nanogpt` imports this package, and its references need the
optional packages of requirements-bench.txt (transformers, accelerate), which `make setup` installs.
"""
from __future__ import annotations

import importlib.util
import platform
from dataclasses import asdict

import torch

from nanogpt.bench.accelerator import accelerator_figures
from nanogpt.bench.hf import hf_trainer_seconds_to_accuracy
from nanogpt.bench.inference import data_times, inference_times, label_agreement, shipped_times, shortcut_times
from nanogpt.bench.timing import matmul_gflops, model_flops_per_token
from nanogpt.bench.training import epoch_comparison, seconds_to_accuracy
from nanogpt.core.artifacts import atomic_write_json
from nanogpt.core.runtime import cpu_has_fast_bf16, resolve_device
from nanogpt.run.profiles import get_profile

OPTIONAL_PACKAGES = ("transformers", "accelerate")


def require_optional_packages() -> None:
    """The HF references need transformers and accelerate; say how to get them rather than fail mid-run."""
    missing = [m for m in OPTIONAL_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"bench needs the optional package(s) {', '.join(missing)} for its Hugging Face "
                          "references. Fix: pip install -r requirements-bench.txt (or `make setup`).")


def serving_section(show, quick: bool) -> dict:
    from nanogpt.bench.serving import serving_figures

    out = (serving_figures("cpu", concurrency=(1, 32), per_request=(1,), requests=40, seconds=2) if quick else
           serving_figures("cpu", requests=400, seconds=20))
    for r in out["serving_rows"]:
        show(f"serve, {r['mode'][:12]}", f"{r['clients']:>2} clients x {r['reviews_per_request']:>2} reviews: "
                                        f"{r['requests_per_s']:,.0f} req/s ({r['reviews_per_s']:,.0f} reviews/s), "
                                        f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, {r['errors']} errors")
    if "serving_batching_speedup" in out:
        show("serve, batching gain", f"{out['serving_batching_speedup']:.1f}x requests/s at 32 clients x 1 review, "
                                     f"p99 {out['serving_p99_ms_batched']:.0f} ms")
    return out


def sweep_section(show, quick: bool) -> dict:
    import torch

    from nanogpt.bench.sweep import sweep_figures

    gpu = torch.cuda.is_available()
    # 1 worker with every core against in-process isolates Dask's own cost; N workers add how well this
    # machine runs N trainings at once (on these 2-vCPU machines two 1-thread processes ran at half speed each)
    out = sweep_figures(runs=2 if quick else 8, worker_counts=(1, 2, 4) if gpu else ((2,) if quick else (1, 2)),
                        profile="paper" if gpu else "smoke", max_steps=30 if quick else 150)
    for key in [k for k in out if k.startswith("sweep_workers") and k.endswith("_s")]:
        n = key.removeprefix("sweep_workers").removesuffix("_s")
        show(f"study on {n} Dask worker(s)", f"{out[key]:.0f} s for {out['sweep_runs']} runs against "
                                             f"{out['sweep_in_process_s']:.0f} s in-process: overhead "
                                             f"{out[f'sweep_workers{n}_overhead']:+.0%}")
    return out


def pretraining_section(show, quick: bool, results_dir=None) -> dict:
    """Accuracy per minute of total compute (pre-training + fine-tuning) against the scratch runs of the same
    profile, for each named pre-training study (`pretrain_study.RECIPES`) whose rows are here (their measured
    train_seconds: a backbone takes 30-60 minutes, so the bench reads the studies rather than re-running them), and
    the accuracy against the pre-training budget. No study here: one line saying how to make one."""
    from nanogpt.core.resources import REPO_ROOT
    from nanogpt.run.results import read_results, runs_csv
    from nanogpt.study.pretrain_study import (
        RECIPES,
        compute_table,
        pretraining_budget,
        pretraining_positions,
        stored_backbones,
        stored_pretraining,
    )

    results_dir = results_dir or REPO_ROOT / "results"
    out: dict = {"pretraining_compute": {}, "pretraining_positions": {}}
    every = read_results(runs_csv(results_dir), finished_only=True) if runs_csv(results_dir).is_file() else None
    for name, recipe in RECIPES.items():
        try:
            runs, backbones = stored_pretraining(results_dir, "ft", "lm-cpu", recipe["finetune"],
                                                 recipe["pretrain_overrides"])
        except FileNotFoundError as exc:
            show(f"pre-training {name}", f"skipped: {exc}")
            continue
        table = compute_table(runs, backbones)
        where = ", ".join(sorted(set(runs["precision"].astype(str)) | set(backbones["precision"].astype(str))))
        tokens = f"{int(backbones['tokens'].iloc[0]) / 1e6:.1f}M tokens"
        show(f"compute, study {name}", f"the study's rows ({where}; profile ft, backbones lm-cpu, {tokens})")
        for r in table.itertuples():
            text = (f"{r.accuracy:.2f}% ({r.runs} runs) after {r.total_minutes:.1f} min of training"
                    if r.start == "scratch" else
                    f"{r.accuracy:.2f}% ({r.runs} runs) after {r.total_minutes:.1f} min ({r.backbone_minutes:.1f} "
                    f"pre-training + {r.finetune_minutes:.1f} fine-tuning), {r.shared_minutes:.1f} with the backbone "
                    f"shared by its runs: {r.points_per_extra_minute:+.3f} points per extra minute "
                    f"({r.points_per_extra_minute_shared:+.3f} shared)")
            show(f"compute, {name} {r.start} {r.loss.upper()}", text)
        out["pretraining_compute"][name] = table.to_dict("records")
        out.setdefault("pretraining_precision", where)
        positions = pretraining_positions(every[every["profile"] == "ft"], backbones["backbone_id"].iloc[0], "ce", 0,
                                          recipe["finetune"])
        if len(positions) > 1:  # runs reading fewer of the backbone's positions are here
            show(f"positions, {name}", "CE seed 0, positions per window: " + ", ".join(
                f"{r.block_size} -> {r.accuracy:.2f}%" for r in positions.itertuples()))
            out["pretraining_positions"][name] = positions.drop(columns="run_id").to_dict("records")
    if not out["pretraining_compute"]:
        return {"pretraining_compute": None}
    budget = pretraining_budget(every[every["profile"] == "ft"], stored_backbones(results_dir, "lm-cpu"))
    for r in budget.itertuples():
        show("budget, CE seed 0", f"{r.tokens / 1e6:4.1f}M pre-training tokens: {r.accuracy:.2f}% after "
                                  f"{r.total_minutes:.1f} min" + (f" (perplexity {r.val_perplexity:.1f})" if r.tokens else ""))
    out["pretraining_budget"] = budget.to_dict("records")
    return out


def cost_section(show, quick: bool) -> dict:
    from nanogpt.bench.cost import cost_section as section

    return section(show, quick)


SECTIONS = {"serving": serving_section, "sweep": sweep_section, "pretraining": pretraining_section,
            "cost": cost_section}


def run_section(name: str, json_path: str | None = None) -> dict:
    """One section alone (`bench --only serving|sweep|pretraining|cost`), full size."""
    out = SECTIONS[name](lambda label, text: print(f"{label:<28}{text}", flush=True), False)
    if json_path:
        atomic_write_json(json_path, out)
    return out


def run_bench(quick: bool = False, json_path: str | None = None) -> dict:
    cfg = get_profile("cpu").config
    device = resolve_device("auto")
    out: dict = {"quick": quick, "config": asdict(cfg), "torch_version": torch.__version__,
                 "python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                 "threads": torch.get_num_threads(), "device": device.type}

    def show(name: str, text: str):
        print(f"{name:<28}{text}", flush=True)

    require_optional_packages()
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
    cut = shortcut_times(20 if quick else 100, 64 if quick else 400)
    out.update({f"shortcut_{k}": v for k, v in cut.items()})
    show("inference, whole reviews", f"the last block at the pooled token only: {cut['shortcut_reviews_per_s']:,.0f} "
                                     f"reviews/s batched, one review {cut['shortcut_ms_median']:.1f} ms; full "
                                     f"forward {cut['full_reviews_per_s']:,.0f} reviews/s, {cut['full_ms_median']:.1f} "
                                     f"ms (P(positive) within {cut['max_probability_difference']:.1e})")
    from nanogpt.serve.shipped import shipped_model

    if (path := shipped_model()) is not None:
        out.update(shipped_section(show, path, quick))
    out.update(serving_section(show, quick))
    out.update(sweep_section(show, quick))
    out.update(pretraining_section(show, quick))
    out.update(cost_section(show, quick))
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


def shipped_section(show, path, quick: bool) -> dict:
    """The shipped model as a service answers it, in fp32 and, where the processor multiplies bf16 natively, in
    bf16 with how often its labels are fp32's (the bar: 99.5% of validation reviews; all of them unless quick)."""
    out = {}
    for precision in ("fp32", "bf16") if cpu_has_fast_bf16() else ("fp32",):
        ship = shipped_times(path, 50 if quick else 200, 200 if quick else 1000, precision=precision)
        key = "shipped" if precision == "fp32" else "shipped_bf16"
        out.update({f"{key}_{k}": v for k, v in ship.items()})
        rates = ", ".join(f"{ship[f'reviews_per_s_batch{b}']:,.0f} in batches of {b}" for b in (16, 32, 64))
        agree = ""
        if precision != "fp32":
            same = label_agreement(path, precision, 500 if quick else None)
            out.update({f"{key}_{k}": v for k, v in same.items() if k != "precision"})
            agree = f"; labels those of fp32 on {same['label_agreement']:.2%} of {same['reviews']:,} reviews"
        show("shipped model", f"{path.name} ({precision}, {ship['threads']} thread(s)): one review median "
                              f"{ship['ms_median']:.1f} ms, p95 {ship['ms_p95']:.1f} ms; {rates} reviews/s{agree}")
    return out
