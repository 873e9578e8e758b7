"""The CUDA path, as far as a CPU can check it: torch.compile (dynamic shapes, checkpoint, resume), fused AdamW
with bf16 autocast, the CUDA branches of device and precision resolution, and `gpu-check`'s parts on a CPU.

What a CPU cannot check (CUDA kernels, TF32, bf16 on tensor cores, GPU memory, the `paper` profile's speed) is
what `python -m nanogpt gpu-check` checks on a GPU; README lists it."""
import json

import pytest
import torch

from nanogpt import gpucheck as G
from nanogpt.__main__ import main
from nanogpt.core import runtime
from nanogpt.run.config import TrainConfig

CPU = torch.device("cpu")


def test_cuda_reported_present_takes_the_cuda_branches(monkeypatch):
    from nanogpt.run.profiles import default_profile_name

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert runtime.resolve_device("auto").type == "cuda" and runtime.resolve_device("cuda").type == "cuda"
    assert runtime.resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert default_profile_name() == "paper"
    assert runtime.use_compile("auto", torch.device("cuda")) and not runtime.use_compile("auto", CPU)
    assert runtime.use_compile("on", CPU) and not runtime.use_compile("off", torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100
    assert runtime.resolve_precision("auto", torch.device("cuda")) == "fp32"
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        runtime.prepare_device(torch.device("cuda"))
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def test_fused_adamw_and_a_bf16_step(tmp_path):
    out = G.fused_bf16_step(CPU)  # raises, naming the problem, if any part of the step is wrong
    assert out["fused_adamw"] and out["logits_dtype"] == "torch.bfloat16" and out["weights_dtype"] == "torch.float32"
    # the project's optimizer (configure_optimizers: fused, matrices decayed, biases and norms not) takes the
    # step a plain, unfused AdamW with those groups takes (one step, fp32)
    from nanogpt.run.train import build_model

    cfg = TrainConfig(n_layer=1, n_head=2, n_embd=32, block_size=64)
    x, y = torch.randint(1, 1000, (4, 32)), torch.tensor([0, 1, 0, 1])
    models = []
    for ours in (True, False):
        torch.manual_seed(0)
        model = build_model(cfg, 2)
        if ours:
            opt = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu")
            assert opt.defaults.get("fused") is True
        else:
            params = list(model.parameters())
            opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                                     {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                                    lr=1e-2, betas=(0.9, 0.95), foreach=False)
        torch.manual_seed(1)
        loss = torch.nn.functional.cross_entropy(model(x, torch.full((4,), 32)), y)
        loss.backward()
        opt.step()
        models.append(model)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_compiled_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    """A compiled run interrupted after its state at step 3 was saved resumes compiled and ends where an eager
    run of the same seed ends (fp32; compiled and eager agree to 1e-4, see gpucheck.TOLERANCE)."""
    import nanogpt.run.train as T

    changes = dict(compile="on", checkpoint_interval=3, precision="fp32")
    eager = T.train(G._tiny_config(tmp_path / "eager", CPU, **{**changes, "compile": "off"}))
    cfg = G._tiny_config(tmp_path / "compiled", CPU, **changes)
    original = T.learning_rate_at

    def stop_at_step_4(step, c):
        if step == 4:
            raise KeyboardInterrupt("interrupted at step 4")
        return original(step, c)

    compiles, real_compile = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiles.append(kw) or real_compile(model, **kw))
    monkeypatch.setattr(T, "learning_rate_at", stop_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg)
    monkeypatch.setattr(T, "learning_rate_at", original)
    resumed = T.train(cfg, resume=True)
    assert compiles == [{"dynamic": True}] * 2  # both legs compiled, with dynamic shapes (batches vary in length)
    assert resumed.resumed_from_step == 3  # the compiled run continued from its saved state
    assert resumed.history["step"].tolist() == eager.history["step"].tolist() == list(range(1, 7))
    diff = (resumed.history["train_loss"] - eager.history["train_loss"]).abs().max()
    assert diff <= G.TOLERANCE["fp32"] and abs(resumed.val_loss - eager.val_loss) <= G.TOLERANCE["fp32"]


@pytest.mark.slow
def test_gpu_check_runs_every_part_on_a_cpu(tmp_path):
    """Every part of gpu-check, on a CPU with tiny sizes: compiled against eager (dynamic shapes, checkpoint
    of the plain module that loads for prediction), the bf16 fused step, a cut paper run, the study estimate
    and the bench's GPU section."""
    tiny = dict(n_layer=1, n_head=2, n_embd=32, block_size=128, batch_size=8, train_limit=256, val_limit=128,
                eval_batch_size=64)
    report = G.gpu_check(CPU, tmp_path / "gpu-check.json", steps=6, paper_overrides=tiny,
                         bench_overrides=dict(tiny, train_limit=256), progress=lambda line: None)
    assert json.loads((tmp_path / "gpu-check.json").read_text()) == json.loads(json.dumps(report))
    failed = {name: part.get("error") for name, part in report["parts"].items() if not part["ok"]}
    assert report["ok"] and not failed, failed
    assert list(report["parts"]) == ["environment", "compiled_vs_eager", "bf16_fused_step", "paper_run",
                                     "study_estimate", "bench"]
    compiled = report["parts"]["compiled_vs_eager"]["result"]
    assert len(set(compiled["batch_lengths"])) >= 2  # dynamic shapes were exercised
    assert compiled["max_step_loss_diff"] <= 1e-4 and compiled["checkpoint_keys_wrapped"] == 0
    assert all(0 <= p <= 1 for p in compiled["checkpoint_predicts"])
    estimate = report["parts"]["study_estimate"]["result"]
    assert estimate["runs"] == 20 and estimate["study_minutes"] > 0
    parts = report["parts"]  # the parts that train or time something took time; together, no more than the whole
    assert all(parts[name]["seconds"] > 0 for name in ("compiled_vs_eager", "paper_run", "study_estimate"))
    assert sum(part["seconds"] for part in parts.values()) <= report["seconds"] + 0.05


def test_gpu_check_reports_a_failing_part_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(G, "compiled_matches_eager", lambda *a, **k: (_ for _ in ()).throw(AssertionError("drift")))
    monkeypatch.setattr(G, "short_paper_run", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("out of memory")))
    monkeypatch.setattr(G, "bench_section", lambda *a, **k: {"skipped": True})
    report = G.gpu_check(CPU, tmp_path / "r.json", progress=lambda line: None)
    parts = report["parts"]
    assert not report["ok"] and parts["environment"]["ok"] and parts["bf16_fused_step"]["ok"]
    assert parts["compiled_vs_eager"]["error"] == "AssertionError: drift"
    assert "paper_run part, which failed" in parts["study_estimate"]["error"]


def test_gpu_check_without_cuda_says_so_in_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: gpu-check would run for minutes")
    assert main(["gpu-check"]) == G.EXIT_NO_CUDA
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU visible" in err[0]
