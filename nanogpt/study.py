"""Many runs: both losses x the profile's seeds; runs already in `runs.csv` (with their checkpoint) are reused."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from nanogpt.artifacts import read_results
from nanogpt.losses import LOSS_NAMES
from nanogpt.profiles import get_profile
from nanogpt.train import train


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '0,2,7' -> [0, 2, 7]; '3' -> [3]."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise ValueError(f"range {part!r} runs backwards; write it as {hi}-{lo}")
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError as exc:
            detail = str(exc) if "backwards" in str(exc) else f"{part!r} is not a seed"
            raise ValueError(f"Bad --seeds {text!r}: {detail}. Use a range like 0-4 or a list like 0,1,2.") from None
    if any(s < 0 for s in seeds):
        raise ValueError(f"Bad --seeds {text!r}: seeds must be >= 0.")
    return list(dict.fromkeys(seeds))


def finished_run_ids(out_dir: str | Path) -> set[str]:
    runs = read_results(Path(out_dir) / "runs.csv", finished_only=True)
    if runs.empty:
        return set()
    return {rid for rid in runs["run_id"].astype(str) if (Path(out_dir) / "runs" / rid / "model.pt").is_file()}


def run_study(profile: str, seeds: list[int] | None = None, losses=LOSS_NAMES, out_dir: str | Path = "results",
              quiet: bool = False, **overrides) -> pd.DataFrame:
    """Train every (loss, seed) of the study not yet finished; return the rows of this study's runs."""
    prof = get_profile(profile)
    seeds = list(prof.seeds) if seeds is None else seeds
    configs = [prof.make_config(loss, seed, out_dir=str(out_dir), quiet=quiet, **overrides)
               for loss in losses for seed in seeds]
    done = finished_run_ids(out_dir)
    todo = [c for c in configs if c.run_id() not in done]
    if not quiet:
        print(f"study '{profile}': {len(configs)} runs ({', '.join(losses)} x seeds {seeds}), "
              f"{len(configs) - len(todo)} already finished, {len(todo)} to train")
    for i, cfg in enumerate(todo, 1):
        if not quiet:
            print(f"[{i}/{len(todo)}] training {cfg.loss} seed {cfg.seed}")
        train(cfg, resume=True)  # an interrupted run continues from its last state
    runs = read_results(Path(out_dir) / "runs.csv", finished_only=True)
    wanted = {c.run_id() for c in configs}
    return runs[runs["run_id"].astype(str).isin(wanted)].reset_index(drop=True)
