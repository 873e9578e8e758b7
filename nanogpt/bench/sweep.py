"""Study throughput: one fixed small sweep trained in this process, one run after another, against the same
sweep as tasks on a local Dask cluster (`study --workers N`). On a 2-core CPU the two should be about equal:
the figure is the cluster's overhead (starting workers, shipping configs and rows), which should stay under
10% of the in-process time: measured with one worker that has every core, so that the only difference is
Dask. With N workers the figure also holds how well the machine runs N trainings at once. On a GPU machine,
the same sweep with 1, 2 and 4 workers sharing the one GPU."""
from __future__ import annotations

import tempfile
import time


def sweep_configs(out_dir, runs: int, profile: str = "smoke", **overrides):
    from nanogpt.run.profiles import get_profile

    prof = get_profile(profile)
    return [prof.make_config(loss, seed, out_dir=str(out_dir), quiet=True, **overrides)
            for seed in range(runs // 2) for loss in ("ce", "bce")]


def sweep_figures(runs: int = 8, worker_counts=(2,), profile: str = "smoke", **overrides) -> dict:
    """Wall time and runs per hour of `runs` runs in-process and on local clusters of each worker count."""
    from nanogpt.study.runs import run_configs

    out = {"sweep_runs": runs, "sweep_profile": profile, "sweep_overrides": overrides}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_configs(sweep_configs(f"{tmp}/local", runs, profile, **overrides), f"{tmp}/local", quiet=True)
        local = time.perf_counter() - t0
        out["sweep_in_process_s"] = local
        out["sweep_in_process_runs_per_hour"] = runs * 3600 / local
        for n in worker_counts:
            folder = f"{tmp}/workers{n}"
            t0 = time.perf_counter()
            run_configs(sweep_configs(folder, runs, profile, **overrides), folder, quiet=True, workers=n)
            wall = time.perf_counter() - t0
            out[f"sweep_workers{n}_s"] = wall
            out[f"sweep_workers{n}_runs_per_hour"] = runs * 3600 / wall
            out[f"sweep_workers{n}_overhead"] = wall / local - 1
    return out
