"""Levers against the bag of words, measured on a development slice (the open issue on beating NBSVM).

Every lever is scored on the same development slice: 10% of the training split (stratified, drawn with the split
seed + 1, `run/selection.carve_dev`), whose labels no run of this study trains on. Its texts may have been read by
the backbone's language model, which reads the training split's texts; the validation split is never read here,
neither to train nor to choose. A lever run is the `ft` recipe fine-tuned from one backbone (head+tail, 256
tokens, 600 steps, the backbone learning at a quarter of the rate) with the lever switched on; it keeps its
weights so that weight averages can be formed afterwards. Its one development score is taken at the end of the
fixed schedule (`last_dev_accuracy`): nothing is chosen inside a run.

Arms:
- `plain`: the recipe as it is.
- `at-<eps>` / `vat-<eps>`: adversarial / virtual adversarial training (run/adversarial.py) with that epsilon.
- `distill-<w>` / `distill-<w>-t<T>`: distillation (run/distill.py): the recipe trained on (1 - w) x the labels' loss + w x the loss
  against a teacher's probabilities over the training texts (softened at temperature T); the teacher is the ensemble of the `plain` runs of
  the teacher seeds (0, 1, 2 by default), formed once and named by their run ids. A student of seed s shares its
  initial weights and batch order with plain seed s, so the pair differs in its targets only.
- `lm-<w>`: an auxiliary language-model loss (run/auxlm.py, GPT-1's): w x the next-token NLL of the training
  reviews through the backbone's own next-token output is added to the labels' loss (GPT-1 used 0.5). Needs a
  backbone written with that output.
- `soup` (formed, not trained): the uniform average of the weights of the `plain` runs of all seeds (Wortsman et
  al. 2022, "Model soups": fine-tunes from one backbone averaged into one model of the same cost).
- `ensemble` (formed, not a single model): the mean of the `plain` runs' probabilities, the ceiling a distilled
  or averaged single model could approach.

The validation split's reviews are scored by every training run (the loop always does) but capped to a few
hundred here and never read by this module: what it reports and compares is the development slice.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nanogpt.run.profiles import get_profile
from nanogpt.run.results import read_results, runs_csv
from nanogpt.study.stats import standard_error

BASE = {"backbone_lr_scale": 0.25, "dev_fraction": 0.1, "eval_interval": 600, "val_limit": 256,
        "precision": "fp32"}
TEACHER_SEEDS = (0, 1, 2)


def parse_arm(arm: str) -> dict:
    """The TrainConfig overrides of a trained arm: 'plain', 'at-0.01', 'vat-0.003', 'distill-0.5'... (a distill
    arm's teacher file is added by `lever_config`)."""
    if arm == "plain":
        return {}
    kind, _, value = arm.partition("-")
    value, _, temperature = value.partition("-t")
    try:
        number, temperature = float(value), float(temperature or 1)
    except ValueError:
        number = math.nan
    if kind == "distill" and 0 < number <= 1 and temperature >= 1:
        return {"distill_weight": number, **({"distill_temperature": temperature} if temperature != 1 else {})}
    if kind == "lm" and number > 0 and temperature == 1:
        return {"lm_weight": number}
    if kind not in ("at", "vat") or not number > 0 or temperature != 1:
        raise ValueError(f"Unknown lever arm {arm!r}; use plain, at-<epsilon>, vat-<epsilon> (e.g. at-0.01), "
                         "distill-<weight in (0, 1]>[-t<temperature >= 1>] (e.g. distill-0.5, distill-1-t2) or "
                         "lm-<weight > 0> (e.g. lm-0.5).")
    return {"adversarial": kind, "adversarial_epsilon": number}


def lever_config(arm: str, seed: int, backbone: str | Path, out_dir: str | Path, loss: str = "ce",
                 teacher_seeds=TEACHER_SEEDS, **changes):
    """The TrainConfig of one lever run (a distill arm reads the teacher of `teacher_seeds`' plain runs)."""
    overrides = parse_arm(arm)
    if "distill_weight" in overrides:
        overrides["teacher"] = str(teacher_path(backbone, out_dir, loss, teacher_seeds, **changes))
    return get_profile("ft").make_config(loss, seed, init=f"lm:{backbone}", out_dir=str(out_dir),
                                         **{**BASE, **overrides, **changes})


def teacher_path(backbone: str | Path, out_dir: str | Path, loss: str = "ce", teacher_seeds=TEACHER_SEEDS,
                 **changes) -> Path:
    """Where the ensemble teacher of the plain runs of `teacher_seeds` lies: named by those runs' ids."""
    from nanogpt.core.artifacts import stable_digest

    ids = sorted(lever_config("plain", s, backbone, out_dir, loss, **changes).run_id() for s in teacher_seeds)
    seeds = ",".join(str(s) for s in sorted(teacher_seeds))
    return Path(out_dir) / "teachers" / f"plain-{loss}-seeds{seeds}-{stable_digest(ids, 8)}.npz"


def form_teacher(backbone: str | Path, out_dir: str | Path, loss: str = "ce", teacher_seeds=TEACHER_SEEDS,
                 quiet: bool = False, **changes) -> Path:
    """The teacher file of `teacher_seeds`' plain runs: trained first where unfinished, then their probabilities
    over the training part averaged (run/distill.ensemble_teacher); an existing teacher file is reused."""
    from nanogpt.run.distill import ensemble_teacher
    from nanogpt.run.rundir import RunDir

    path = teacher_path(backbone, out_dir, loss, teacher_seeds, **changes)
    if path.is_file():
        return path
    ids = run_levers(backbone, ["plain"], list(teacher_seeds), out_dir, loss, quiet=quiet, **changes)
    dirs = [RunDir(out_dir, run_id).path for run_id in ids]
    missing = [str(d) for d in dirs if not (d / "model.pt").is_file()]
    if missing:
        raise FileNotFoundError(f"the teacher needs the weights of its plain runs; {', '.join(missing)} kept none "
                                "(--set keep=none?). Fix: delete those run folders and run again.")
    if not quiet:
        print(f"teacher: the ensemble of plain seeds {list(teacher_seeds)} over the training texts -> {path}")
    return ensemble_teacher(dirs, path)


def run_levers(backbone: str | Path, arms: list[str], seeds: list[int], out_dir: str | Path, loss: str = "ce",
               quiet: bool = False, teacher_seeds=TEACHER_SEEDS, **changes) -> list[str]:
    """Train every (arm, seed) that is not finished in `out_dir` (a finished one is found and left alone, an
    interrupted one resumes); returns the run ids, trained or found. Distill arms first form their teacher."""
    from nanogpt.run.rundir import RunDir
    from nanogpt.run.train import train

    if any("distill_weight" in parse_arm(arm) for arm in arms):
        form_teacher(backbone, out_dir, loss, teacher_seeds, quiet=quiet, **changes)
    run_ids = []
    for seed in seeds:  # seed-major: an early stop still leaves complete pairs
        for arm in arms:
            cfg = lever_config(arm, seed, backbone, out_dir, loss, teacher_seeds, quiet=quiet, **changes)
            run_id = cfg.run_id()
            if RunDir(out_dir, run_id).finished_row() is None:
                train(cfg, resume=True)
            elif not quiet:
                print(f"{arm} seed {seed}: finished ({run_id})")
            run_ids.append(run_id)
    return run_ids


def arm_of(config: dict) -> str:
    if config.get("teacher"):
        temperature = config.get("distill_temperature", 1.0)
        return f"distill-{config.get('distill_weight', 0.5):g}" + (f"-t{temperature:g}" if temperature != 1 else "")
    if config.get("lm_weight"):
        return f"lm-{config['lm_weight']:g}"
    kind = config.get("adversarial", "none")
    return "plain" if kind == "none" else f"{kind}-{config['adversarial_epsilon']:g}"


def lever_runs(out_dir: str | Path) -> pd.DataFrame:
    """The finished lever runs in `out_dir`: arm, seed, loss, init, dev accuracy at the end, seconds, folder."""
    rows = read_results(runs_csv(out_dir))
    if rows.empty:
        return pd.DataFrame(columns=["arm", "seed", "loss", "init", "dev_accuracy", "train_seconds", "run_id"])
    rows = rows[rows["status"] == "ok"].copy()
    configs = rows["config"].map(json.loads)
    rows["arm"] = configs.map(arm_of)
    rows["dev_accuracy"] = rows["last_dev_accuracy"].astype(float)
    return rows[["arm", "seed", "loss", "init", "dev_accuracy", "train_seconds", "run_id", "n_dev"]].reset_index(drop=True)


def _dev_probabilities(run_dirs: list[Path], average: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, P(positive)) on the development slice of the runs in `run_dirs` (one recipe, different seeds),
    either of their weight average ('soup') or the mean of their probabilities ('ensemble')."""
    from nanogpt.core.losses import get_criterion
    from nanogpt.core.runtime import resolve_device
    from nanogpt.data.imdb import load_splits
    from nanogpt.run.checkpoints import load_checkpoint, model_from_checkpoint
    from nanogpt.run.config import TrainConfig
    from nanogpt.run.evaluate import evaluate
    from nanogpt.run.selection import carve_dev

    ckpts = [load_checkpoint(d / "model.pt") for d in run_dirs]
    cfg = TrainConfig(**ckpts[0]["train_config"])
    train_split, _ = load_splits(cfg)
    _, dev = carve_dev(train_split, cfg.dev_fraction, cfg.split_seed)
    device = resolve_device("cpu")
    criterion = get_criterion(cfg.loss)

    def scored(model):
        probs, _ = evaluate(model, criterion, dev, device, "fp32", cfg.eval_batch_size, cfg.pad_multiple,
                            cfg.reading, cfg.window_stride)
        return probs

    models = [model_from_checkpoint(c, d / "model.pt")[0] for c, d in zip(ckpts, run_dirs)]
    if average == "ensemble":
        return dev.labels, np.mean([scored(m) for m in models], axis=0)
    if average != "soup":
        raise ValueError(f"average must be 'soup' or 'ensemble', got {average!r}.")
    states = [m.state_dict() for m in models]
    soup = {k: torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype) for k in states[0]}
    models[0].load_state_dict(soup)
    return dev.labels, scored(models[0])


def formed_arms(out_dir: str | Path, runs: pd.DataFrame | None = None) -> list[dict]:
    """The soup and the ensemble of the `plain` runs (two or more seeds), scored on the development slice."""
    from nanogpt.run.rundir import RunDir

    runs = lever_runs(out_dir) if runs is None else runs
    plain = runs[runs["arm"] == "plain"].sort_values("seed")
    if len(plain) < 2:
        return []
    dirs = [RunDir(out_dir, r).path for r in plain["run_id"]]
    rows = []
    for name in ("soup", "ensemble"):
        labels, probs = _dev_probabilities(dirs, name)
        rows.append({"arm": name, "seeds": ",".join(str(s) for s in plain["seed"]), "runs": len(plain),
                     "dev_accuracy": float(np.mean((probs > 0.5) == labels)), "n_dev": int(len(labels)),
                     "single_model": name == "soup"})
    return rows


def lever_table(out_dir: str | Path, formed: bool = True) -> pd.DataFrame:
    """One row per arm: runs, mean and sd of the development accuracy, and against `plain` over the seeds both
    have (paired by seed: mean difference and its standard error); then the formed arms."""
    runs = lever_runs(out_dir)
    plain = runs[runs["arm"] == "plain"].set_index("seed")["dev_accuracy"]
    rows = []
    for arm, group in runs.groupby("arm", sort=False):
        acc = group.set_index("seed")["dev_accuracy"]
        shared = acc.index.intersection(plain.index)
        diff = (acc[shared] - plain[shared]) if arm != "plain" else pd.Series(dtype=float)
        rows.append({"arm": arm, "seeds": ",".join(str(s) for s in sorted(acc.index)), "runs": len(acc),
                     "dev_accuracy": acc.mean(), "sd": acc.std(ddof=1) if len(acc) > 1 else math.nan,
                     "minus_plain": diff.mean() if len(diff) else math.nan,
                     "se": standard_error(diff),
                     "minutes_per_run": group["train_seconds"].mean() / 60, "single_model": True})
    table = pd.DataFrame(rows)
    if formed:
        extra = pd.DataFrame(formed_arms(out_dir, runs))
        if not extra.empty:
            extra["minus_plain"] = extra["dev_accuracy"] - plain.mean()
            table = pd.concat([table, extra], ignore_index=True)
    return table


def against_plain(out_dir: str | Path, reference_dir: str | Path) -> dict:
    """A backbone lever: the `plain` runs of `out_dir` (fine-tuned from one backbone) against the `plain` runs of
    `reference_dir` (from another), paired by fine-tuning seed over the seeds both hold: the same recipe, seeds and
    development slice, so the pair differs in its backbone only."""
    ours, theirs = (r[r["arm"] == "plain"].set_index("seed")["dev_accuracy"]
                    for r in (lever_runs(out_dir), lever_runs(reference_dir)))
    shared = ours.index.intersection(theirs.index).sort_values()
    if ours.empty or theirs.empty or len(shared) == 0:
        raise ValueError(f"no fine-tuning seed has a finished plain run in both {out_dir} and {reference_dir}.")
    diff = ours[shared] - theirs[shared]
    return {"against": str(reference_dir), "seeds": ",".join(str(s) for s in shared), "runs": len(shared),
            "dev_accuracy": float(ours[shared].mean()), "reference_accuracy": float(theirs[shared].mean()),
            "minus_reference": float(diff.mean()),
            "se": standard_error(diff)}


def format_against(row: dict) -> str:
    se = "" if math.isnan(row["se"]) else f", se {100 * row['se']:.2f}"
    return (f"plain from this backbone against plain of {row['against']} (seeds {row['seeds']}): "
            f"{100 * row['dev_accuracy']:.2f}% against {100 * row['reference_accuracy']:.2f}%, "
            f"{100 * row['minus_reference']:+.2f} points{se}")


def format_table(table: pd.DataFrame) -> str:
    """The lever table as text: accuracies in percent, the paired difference with its standard error."""
    if table.empty:
        return "no finished lever runs yet"
    lines = [f"{'arm':<12} {'runs':>4} {'dev acc %':>9} {'sd':>5} {'- plain':>8} {'se':>5} {'min/run':>7}  one model"]
    for r in table.to_dict(orient="records"):
        def pct(v):
            return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"
        minutes = r.get("minutes_per_run")
        lines.append(f"{r['arm']:<12} {r['runs']:>4} {pct(r['dev_accuracy']):>9} {pct(r.get('sd')):>5} "
                     f"{pct(r.get('minus_plain')):>8} {pct(r.get('se')):>5} "
                     f"{'' if minutes is None or math.isnan(minutes) else f'{minutes:.1f}':>7}  "
                     f"{'yes' if r['single_model'] else 'no'}")
    return "\n".join(lines)


def study(backbone: str | Path, arms: list[str], seeds: list[int], out_dir: str | Path, loss: str = "ce",
          quiet: bool = False, teacher_seeds=TEACHER_SEEDS, against: str | Path | None = None, **changes) -> str:
    """`python -m nanogpt levers`: train what is unfinished, write `<out_dir>/levers.json`, return the table (and,
    with `against`, this backbone's plain runs against that folder's: `against_plain`)."""
    from nanogpt.core.artifacts import write_report_json

    run_levers(backbone, arms, seeds, out_dir, loss, quiet=quiet, teacher_seeds=teacher_seeds, **changes)
    table = lever_table(out_dir)
    report = {"backbone": str(backbone), "loss": loss, "rows": table.to_dict(orient="records")}
    text = format_table(table)
    if against is not None:
        report["against"] = against_plain(out_dir, against)
        text += "\n" + format_against(report["against"])
    write_report_json(Path(out_dir) / "levers.json", report)
    return text
