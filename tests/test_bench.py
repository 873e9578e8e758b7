import json
import math
import subprocess
import sys

import pytest

from nanogpt.core.runtime import cpu_has_fast_bf16

pytestmark = pytest.mark.slow  # every test here runs the bench or trains for real


def test_quick_bench_runs_and_reports_sane_numbers(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "nanogpt", "bench", "--quick", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for line in ("machine limit", "training step", "epoch", "data", "inference"):
        assert line in r.stdout
    b = json.loads(out.read_text())
    positive = ["matmul_bf16_gflops", "matmul_fp32_gflops", "train_tokens_per_s", "hf_train_tokens_per_s",
                "train_step_ratio_vs_hf", "train_fraction_of_peak", "epoch_ratio_vs_hf_padded", "tokenize_cold_s",
                "cache_load_s", "predict_latency_ms_median", "predict_latency_ms_p95", "predict_reviews_per_s"]
    for key in positive:
        assert isinstance(b[key], float) and math.isfinite(b[key]) and b[key] > 0, key
    assert 0 < b["padding_share"] < b["padding_share_hf_padded"] < 1
    assert b["train_fraction_of_peak"] < 1.5  # a fraction of measured peak, not a unit slip
    assert b["predict_latency_ms_p95"] >= b["predict_latency_ms_median"]
    # serving's last-token shortcut against the full forward: both timed, the same probabilities
    assert "inference, whole reviews" in r.stdout and b["shortcut_max_probability_difference"] < 1e-5
    assert all(b[f"shortcut_{w}_{k}"] > 0 for w in ("full", "shortcut") for k in ("reviews_per_s", "ms_median"))
    assert b["seconds_to_85_ce"] is None and b["seconds_to_85_bce"] is None and b["hf_trainer_seconds_to_85"] is None
    assert b["config"]["n_embd"] > 0 and b["torch_version"]
    # the shipped model as it serves: fp32, and bf16 with its label agreement where the processor has bf16
    assert b["shipped_precision"] == "fp32" and b["shipped_reviews_per_s_batch32"] > 0
    if cpu_has_fast_bf16():
        assert b["shipped_bf16_precision"] == "bf16" and b["shipped_bf16_reviews"] == 500
        assert 0.9 < b["shipped_bf16_label_agreement"] <= 1 and "of 500 reviews" in r.stdout
    else:
        assert "shipped_bf16_precision" not in b
    assert "serve, micro-batch" in r.stdout and "serve, batching gain" in r.stdout
    rows = b["serving_rows"]  # the service under load, both modes, 1 and 32 clients (quick: one review a request)
    assert {(r["mode"], r["clients"], r["reviews_per_request"]) for r in rows} == {
        (m, c, 1) for m in ("micro-batched", "one forward per request") for c in (1, 32)}
    assert all(r["errors"] == 0 and r["requests"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in rows)
    assert b["serving_batching_speedup"] > 0
    assert "Dask worker" in r.stdout and b["sweep_runs"] == 2  # a study in-process against 2 Dask workers
    assert b["sweep_in_process_s"] > 0 and b["sweep_workers2_s"] > 0 and b["sweep_workers2_overhead"] > -1
    # accuracy per compute minute, read from the committed pre-training study
    assert "compute, ft pre-trained CE" in r.stdout and "budget, CE seed 0" in r.stdout
    starts = {(row["start"], row["loss"]) for row in b["pretraining_compute"]["ft"]}
    assert starts == {(s, loss) for s in ("scratch", "pre-trained") for loss in ("ce", "bce")}
    assert b["pretraining_budget"][0]["tokens"] == 0 and len(b["pretraining_budget"]) >= 2
    positions = [row["block_size"] for row in b["pretraining_positions"]["ft-long"]]  # the committed 64-256 runs
    assert positions == sorted(positions) and positions[-1] == 256 and len(positions) >= 3
    # the cost to serve beside the accuracy, from the committed rows: TF-IDF, the cpu model, the pre-trained recipes
    cost = {row["model"]: row for row in b["cost_rows"]}
    nbsvm = "NBSVM (binary 1-2 grams x log-count ratios) + logistic regression"
    assert {"TF-IDF + logistic regression", nbsvm, "cpu, from scratch", "ft, 16.4M-token backbone, head+tail"} <= set(cost)
    assert cost[nbsvm]["accuracy"] > cost["TF-IDF + logistic regression"]["accuracy"]  # the stronger bag of words
    assert cost["cpu, from scratch"]["runs"] == "15 CE + 15 BCE" and "384 tokens" in cost["cpu, from scratch"]["reading"]
    assert all(r["reviews_per_s_single"] > 0 and r["reviews_per_s_batched"] > 0 and 50 < r["accuracy"] < 100
               for r in cost.values())
    pre = cost["ft, 16.4M-token backbone, head+tail"]
    assert pre["total_minutes"] > pre["shared_minutes"] > pre["train_minutes"] > 0  # the backbone, whole and shared


def test_hf_trainer_time_to_accuracy_stops_at_the_target(tmp_path):
    """The HF Trainer reference on a tiny config: a target met at the first evaluation stops training there;
    one never met runs the whole schedule and reports None."""
    from conftest import tiny_config

    from nanogpt.bench import hf_trainer_seconds_to_accuracy

    cfg = tiny_config(tmp_path, train_limit=128, val_limit=64, max_steps=4, warmup_steps=1, batch_size=8,
                      eval_batch_size=32)
    hit = hf_trainer_seconds_to_accuracy(cfg, target=0.0, eval_steps=2)
    assert hit["hf_trainer_step_at_85"] == 2 and [s for s, _, _ in hit["hf_trainer_curve"]] == [2]
    assert 0 < hit["hf_trainer_seconds_to_85"] < 600
    miss = hf_trainer_seconds_to_accuracy(cfg, target=1.01, eval_steps=2)
    assert miss["hf_trainer_seconds_to_85"] is None and miss["hf_trainer_step_at_85"] is None
    assert [s for s, _, _ in miss["hf_trainer_curve"]] == [2, 4]
    assert all(0 <= acc <= 1 for _, acc, _ in miss["hf_trainer_curve"])


def test_accelerator_figures_on_cpu_with_a_tiny_study(tmp_path):
    """The GPU section's code path, run on the CPU with the smoke profile shrunk: it measures both models,
    gives a fraction of the matmul limit, and times a real (tiny) study of both losses."""
    import torch

    from nanogpt.bench import accelerator_figures

    out = accelerator_figures(torch.device("cpu"), "smoke", rounds=2, study=True, study_seeds=[0], max_steps=4,
                              warmup_steps=1, train_limit=64, val_limit=32, eval_interval=2)
    for key in ("accel_matmul_gflops", "accel_train_tokens_per_s", "accel_hf_train_tokens_per_s",
                "accel_train_step_ratio_vs_hf", "accel_train_fraction_of_peak", "accel_study_seconds"):
        assert isinstance(out[key], float) and math.isfinite(out[key]) and out[key] > 0, key
    assert out["accel_train_fraction_of_peak"] < 1.5
    assert out["accel_study_runs"] == 2 and set(out["accel_study_mean_accuracy"]) == {"ce", "bce"}
    assert all(0 <= a <= 1 for a in out["accel_study_mean_accuracy"].values())


def test_our_time_to_accuracy_reports_the_first_evaluation_past_the_target(tmp_path):
    from conftest import tiny_config

    from nanogpt.bench import seconds_to_accuracy

    cfg = tiny_config(tmp_path, max_steps=6, warmup_steps=1)
    seconds, step = seconds_to_accuracy(cfg, target=0.0, eval_interval=2)
    assert step == 2 and 0 < seconds < 600
    assert seconds_to_accuracy(cfg, target=1.01, eval_interval=2) == (None, None)
    assert not (tmp_path / "results").exists()  # the runs went to a temporary folder
