import json
import math
import subprocess
import sys


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
    assert b["seconds_to_85_ce"] is None and b["seconds_to_85_bce"] is None and b["hf_trainer_seconds_to_85"] is None
    assert b["config"]["n_embd"] > 0 and b["torch_version"]
