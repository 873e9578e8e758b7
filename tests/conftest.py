import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never wait on a network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Under xdist each worker takes its share of the cores, for itself and the processes it starts (studies, notebook
# kernels, services): torch's default is a thread per core in every process, so two workers on 2 cores ran 4
# OpenMP threads that wait on each other. make test on a 2-core AMD EPYC: 679 s with the default, 497 s with this.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # macOS: no affinity
    _share = _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))


def tiny_config(tmp_path, **changes):
    """A model small enough to train for a few steps in seconds on 2 cores."""
    from nanogpt.run.config import TrainConfig

    base = dict(profile="test", block_size=64, train_limit=512, val_limit=256, n_layer=1, n_head=2, n_embd=32,
                dropout=0.1, gelu="none", batch_size=16, max_steps=12, warmup_steps=3, eval_interval=6,
                learning_rate=2e-3, out_dir=str(tmp_path / "results"), quiet=True)
    base.update(changes)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished tiny CE run and one BCE run, shared by tests that only read their outputs."""
    from nanogpt.run.train import train

    tmp = tmp_path_factory.mktemp("tiny")
    return {loss: train(tiny_config(tmp, loss=loss)) for loss in ("ce", "bce")}


POSITIVE_WORDS = ["wonderful", "superb", "delightful", "brilliant", "moving", "charming", "masterful", "gripping"]
NEGATIVE_WORDS = ["awful", "dreadful", "tedious", "clumsy", "boring", "wooden", "pointless", "lifeless"]
FILLER_WORDS = ["the", "film", "plot", "actor", "scene", "story", "camera", "score", "ending", "director", "cast",
                "script", "was", "and", "with", "a", "of", "in", "this", "its", "music", "light", "city", "night"]


def separable_csv(path, n: int = 800, seed: int = 0):
    """Reviews a tiny model learns to tell apart in a few dozen steps: 60-90 filler words with a few words of one
    sentiment among the last 20 (label 1 for the positive words), so a reader of only a review's first few hundred
    characters cannot tell them apart; every text distinct. Returns the CSV's path as a string."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = list(rng.choice(FILLER_WORDS, size=int(rng.integers(60, 90))))
        for _ in range(int(rng.integers(5, 9))):
            words.insert(len(words) - int(rng.integers(0, 20)),
                         rng.choice(POSITIVE_WORDS if label else NEGATIVE_WORDS))
        rows.append((f"review {i}: " + " ".join(words) + ".", label))
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="session")
def learnt_run(tmp_path_factory):
    """A tiny CE run (fp32) that learns: on `separable_csv` reviews it labels most validation reviews right, with
    both labels among its answers, so label and per-review checks can tell a broken scorer from a working one."""
    from nanogpt.run.train import train

    tmp = tmp_path_factory.mktemp("learnt")
    source = separable_csv(tmp / "separable.csv")
    cfg = tiny_config(tmp, loss="ce", source=source, train_limit=None, val_limit=None, precision="fp32",
                      max_steps=100, eval_interval=50, warmup_steps=5, learning_rate=3e-3, dropout=0.0)
    return cfg, train(cfg)


def figures_tag(profile: str) -> str:
    """The folder (and report suffix) a study of `profile` on this machine files its figures under: the
    profile, plus the population where it is not cpu/fp32 (smoke runs in bf16 on a CPU with AVX512-BF16)."""
    from nanogpt.run.results import population_tag
    from nanogpt.study.runs import trained_population

    return population_tag(profile, trained_population(profile, {}))


def spy(monkeypatch, owner, name: str) -> list:
    """Wrap `owner.name` (a function, or a method looked up on its class) so that every call still runs and is
    recorded as (args, kwargs, result) in the list returned."""
    real, calls = getattr(owner, name), []

    def wrapper(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append((args, kwargs, result))
        return result

    monkeypatch.setattr(owner, name, wrapper)
    return calls
