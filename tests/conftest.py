import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never wait on a network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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


def figures_tag(profile: str) -> str:
    """The folder (and report suffix) a study of `profile` on this machine files its figures under: the
    profile, plus the population where it is not cpu/fp32 (smoke runs in bf16 on a CPU with AVX512-BF16)."""
    from nanogpt.run.results import population_tag
    from nanogpt.study.runs import trained_population

    return population_tag(profile, trained_population(profile, {}))
