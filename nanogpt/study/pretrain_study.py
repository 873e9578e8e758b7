"""The pre-training study (notebook 06): scratch against pre-trained backbones for both losses, the sources of
variance (fine-tuning seed against pre-training seed), accuracy against total compute, and a probe with short
inputs and by review length, each beside TF-IDF.

Runs: for the fine-tuning profile (`ft`), CE and BCE over `seeds` from scratch and from backbone 0; then
`variance_loss` over `variance_seeds` from every further backbone. The rows carry `init` ('scratch' or
'lm:<backbone id>'), so the two starts never mix in a comparison.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats as sps

from nanogpt.study.analysis import accuracy_claim, load_plan, welch_ci

STARTS = ("scratch", "pre-trained")
# How a pre-trained backbone is fine-tuned, on top of the profile (scratch runs keep the profile as it is).
# Chosen by measurement (README, "Pre-training"): CE seed 0, profile ft, backbone lm-cpu seed 0, 600 steps:
# the backbone at the full rate (2e-3) 88.18%, at a quarter of it (5e-4; the new head at 2e-3) 88.76%.
FINETUNE = {"backbone_lr_scale": 0.25}
# Named pre-training studies, each with its report (results/pretraining-<name>.json) and figures (figures/<name>/):
# how long the backbones pre-train (PretrainConfig overrides) and how they are fine-tuned (TrainConfig overrides of
# the pre-trained runs). `ft`: the first study (16.4M tokens, head+tail). `ft-long`: backbones pre-trained 4x longer
# (65.6M tokens), fine-tuned and scored on whole reviews (docs/pretraining.md has the runs that chose it).
# `ft-long-lm`: plan 3's final recipe (results/analysis-plan-3.json): ft-long with the one lever that passed the
# plan's rule on the development slice, GPT-1's auxiliary language-model loss at weight 0.5 (docs/levers.md), and
# `variance_seeds` 0-4 from every backbone (at least 3 backbones for CE; the others: seed 0); its backbones must keep their next-token
# output, which backbones written since that lever do.
WHOLE_REVIEWS = {**FINETUNE, "reading": "windows", "truncation": "random_window"}
RECIPES = {
    "ft": {"pretrain_overrides": {}, "finetune": FINETUNE, "backbone_seeds": (0, 1, 2), "variance_seeds": (0,)},
    "ft-long": {"pretrain_overrides": {"max_steps": 8000}, "finetune": WHOLE_REVIEWS, "backbone_seeds": (0, 1, 2),
                "variance_seeds": (0,)},
    "ft-long-lm": {"pretrain_overrides": {"max_steps": 8000}, "finetune": {**WHOLE_REVIEWS, "lm_weight": 0.5},
                   "backbone_seeds": (0, 1, 2), "variance_seeds": (0, 1, 2, 3, 4)},
}


def get_recipe(name: str) -> dict:
    if name not in RECIPES:
        raise ValueError(f"Unknown pre-training study {name!r}; use one of {tuple(RECIPES)}.")
    return RECIPES[name]


def pretraining_runs(out_dir: str | Path, profile: str, pretrain_profile: str, seeds, backbone_seeds,
                     variance_loss: str = "ce", variance_seeds=(0,), source: str = "bundled",
                     overrides: dict | None = None, pretrain_overrides: dict | None = None,
                     finetune: dict | None = None, quiet: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pre-train the backbones of `backbone_seeds` (finished ones reused), then train every fine-tuning and
    scratch run not yet finished; return (the runs' rows, the backbones' rows). `overrides` change every run;
    `finetune` (default FINETUNE) only the runs from a backbone."""
    from nanogpt.run.pretrain import get_pretrain_profile, pretrain
    from nanogpt.run.profiles import get_profile
    from nanogpt.study.runs import run_configs

    if not backbone_seeds:
        raise ValueError("backbone_seeds is empty: give at least one pre-training seed.")
    base = get_pretrain_profile(pretrain_profile)
    backbones = [pretrain(base.replace(seed=s, source=source, out_dir=str(out_dir), quiet=quiet,
                                       **(pretrain_overrides or {}))) for s in backbone_seeds]
    prof = get_profile(profile)
    common = dict(out_dir=str(out_dir), quiet=quiet, source=source, **(overrides or {}))
    configs = [prof.make_config(loss, s, **common) for loss in ("ce", "bce") for s in seeds]
    tuned = {**common, **(FINETUNE if finetune is None else finetune)}
    configs += [prof.make_config(loss, s, init=f"lm:{backbones[0].path}", **tuned) for loss in ("ce", "bce")
                for s in seeds]
    configs += [prof.make_config(variance_loss, s, init=f"lm:{b.path}", **tuned) for b in backbones[1:]
                for s in variance_seeds]
    runs = run_configs(configs, out_dir, quiet)
    ids = [b.backbone_id for b in backbones]
    rows = pd.DataFrame([b.row for b in backbones]).set_index("backbone_id").loc[ids].reset_index()
    return with_start(runs), rows


def with_start(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows with `init` (older rows, written before it existed, started from scratch) and `start`."""
    runs = runs.copy()
    runs["init"] = runs["init"].fillna("scratch") if "init" in runs.columns else "scratch"
    runs["start"] = np.where(runs["init"].astype(str).str.startswith("lm:"), "pre-trained", "scratch")
    runs["backbone"] = runs["init"].astype(str).str.removeprefix("lm:").where(runs["start"] == "pre-trained", "")
    return runs


def _summary(acc: pd.Series) -> dict:
    a = np.asarray(acc, float)
    half = sps.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size) if a.size > 1 else float("nan")
    return {"n": int(a.size), "mean": float(a.mean()), "sd": float(a.std(ddof=1)) if a.size > 1 else float("nan"),
            "ci_low": float(a.mean() - half), "ci_high": float(a.mean() + half), "min": float(a.min()),
            "max": float(a.max())}


def difference_of_differences(a1, b1, a2, b2, level: float = 0.95) -> dict:
    """(mean a2 - mean b2) - (mean a1 - mean b1) with a Welch-Satterthwaite t interval over the four groups:
    does the BCE - CE gap change with the start?"""
    groups = [np.asarray(g, float) for g in (a1, b1, a2, b2)]
    v = [g.var(ddof=1) / g.size for g in groups]
    se = math.sqrt(sum(v))
    df = sum(v) ** 2 / sum(vi**2 / (g.size - 1) for vi, g in zip(v, groups))
    diff = float((groups[2].mean() - groups[3].mean()) - (groups[0].mean() - groups[1].mean()))
    half = float(sps.t.ppf(0.5 + level / 2, df) * se)
    return {"diff": diff, "ci_low": diff - half, "ci_high": diff + half, "df": float(df)}


def pretraining_report(runs: pd.DataFrame, backbones: pd.DataFrame, baseline_accuracy: float,
                       variance_loss: str = "ce", plan: dict | None = None) -> dict:
    """Every number notebook 06 reports, in points: per (start, loss) summaries of backbone 0's runs and the
    scratch runs; BCE - CE for each start (the plan's TOST and margin); the lift of pre-training per loss; the
    change of the gap; the spread over backbones against the spread over fine-tuning seeds; compute."""
    plan = plan or load_plan()
    runs = with_start(runs)
    primary = backbones["backbone_id"].iloc[0]
    acc = runs.assign(points=runs["val_accuracy"] * 100)
    main = acc[(acc["start"] == "scratch") | (acc["backbone"] == primary)]
    report: dict = {"backbone": primary, "baseline_tfidf": baseline_accuracy * 100, "arms": {}, "by_start": {},
                    "lift": {}}
    for (start, loss), g in main.groupby(["start", "loss"]):
        report["arms"][f"{start}/{loss}"] = {**_summary(g["points"]),
                                             "train_minutes": float(g["train_seconds"].mean() / 60)}
    arms = {k: main[(main["start"] == s) & (main["loss"] == loss)].set_index("seed")["points"].sort_index()
            for k, (s, loss) in {"sc": ("scratch", "ce"), "sb": ("scratch", "bce"), "pc": ("pre-trained", "ce"),
                              "pb": ("pre-trained", "bce")}.items()}
    for start, (ce, bce) in {"scratch": (arms["sc"], arms["sb"]), "pre-trained": (arms["pc"], arms["pb"])}.items():
        if len(ce) >= 2 and len(bce) >= 2:
            report["by_start"][start] = accuracy_claim(ce, bce, plan)
    for loss, (s, p) in {"ce": (arms["sc"], arms["pc"]), "bce": (arms["sb"], arms["pb"])}.items():
        if len(s) >= 2 and len(p) >= 2:
            d, lo, hi = welch_ci(p, s)
            report["lift"][loss] = {"diff": d, "ci_low": lo, "ci_high": hi}
    if all(len(a) >= 2 for a in arms.values()):
        report["gap_change"] = difference_of_differences(arms["sb"], arms["sc"], arms["pb"], arms["pc"])
    # variance from pre-training: the first variance seed of `variance_loss` on every backbone
    pre = acc[(acc["start"] == "pre-trained") & (acc["loss"] == variance_loss)]
    first_seed = int(pre[pre["backbone"] != primary]["seed"].min()) if (pre["backbone"] != primary).any() else 0
    per_backbone = pre[pre["seed"] == first_seed].set_index("backbone")["points"]
    per_backbone = per_backbone.reindex([b for b in backbones["backbone_id"] if b in per_backbone.index])
    over_seeds = arms["pc" if variance_loss == "ce" else "pb"]
    report["variance"] = {"loss": variance_loss, "seed": first_seed, "backbones": per_backbone.round(4).to_dict(),
                          "sd_over_backbones": float(per_backbone.std(ddof=1)) if len(per_backbone) > 1 else None,
                          "n_backbones": int(len(per_backbone)),
                          "sd_over_finetune_seeds": float(over_seeds.std(ddof=1)) if len(over_seeds) > 1 else None,
                          "n_finetune_seeds": int(len(over_seeds))}
    if report["variance"]["sd_over_backbones"] is not None and report["variance"]["sd_over_finetune_seeds"]:
        n1, n2 = len(per_backbone), len(over_seeds)
        ratio = report["variance"]["sd_over_backbones"] / report["variance"]["sd_over_finetune_seeds"]
        f_lo, f_hi = sps.f.ppf([0.975, 0.025], n1 - 1, n2 - 1)  # the F interval of a variance ratio
        report["variance"].update(sd_ratio=ratio, sd_ratio_ci=[ratio / math.sqrt(f_lo), ratio / math.sqrt(f_hi)])
    report["pretraining"] = {
        "minutes_per_backbone": backbones["train_seconds"].astype(float).div(60).round(2).tolist(),
        "val_perplexity": backbones["val_perplexity"].astype(float).round(2).tolist(),
        "tokens": backbones["tokens"].astype(int).tolist(),
        "precision": sorted(set(backbones["precision"].astype(str))),
    }
    pc_mean = report["arms"].get("pre-trained/ce", {}).get("mean")
    pb_mean = report["arms"].get("pre-trained/bce", {}).get("mean")
    report["beats_baseline"] = {loss: (m > report["baseline_tfidf"]) if m is not None else None
                                for loss, m in (("ce", pc_mean), ("bce", pb_mean))}
    return report


def pretraining_verdict(report: dict) -> list[str]:
    """Plain sentences generated from `report` (never written by hand)."""
    out = []
    base = report["baseline_tfidf"]
    arms = report["arms"]
    for loss in ("ce", "bce"):
        s, p = arms.get(f"scratch/{loss}"), arms.get(f"pre-trained/{loss}")
        if s and p:
            lift = report["lift"].get(loss)
            lift_text = (f"lift {lift['diff']:+.2f} points, 95% CI [{lift['ci_low']:+.2f}, {lift['ci_high']:+.2f}]"
                         if lift else "lift not estimable")
            side = "above" if p["mean"] > base else "below"
            out.append(f"{loss.upper()}: {p['mean']:.2f}% pre-trained (n = {p['n']}) against {s['mean']:.2f}% from "
                       f"scratch (n = {s['n']}), {lift_text}; {abs(p['mean'] - base):.2f} points {side} TF-IDF "
                       f"({base:.2f}%).")
    for start, claim in report["by_start"].items():
        what = {"difference": "a difference", "equivalent": f"equivalent within +-{claim['margin']:g} points",
                "undecided": "undecided"}[claim["decision"]]
        out.append(f"BCE - CE {start}: {claim['diff']:+.2f} points, 95% CI [{claim['ci_low']:+.2f}, "
                   f"{claim['ci_high']:+.2f}], TOST p = {claim['tost_p']:.2g}: {what} (n = {claim['n_ce']} + "
                   f"{claim['n_bce']}).")
    gap = report.get("gap_change")
    if gap:
        changed = gap["ci_low"] > 0 or gap["ci_high"] < 0
        out.append(f"The BCE - CE gap changes by {gap['diff']:+.2f} points with pre-training, 95% CI "
                   f"[{gap['ci_low']:+.2f}, {gap['ci_high']:+.2f}]: "
                   + ("the start changes the verdict." if changed else
                      "no change detected at this n (the hidden assumption holds as far as these runs can tell)."))
    var = report["variance"]
    if var.get("sd_over_backbones") is not None:
        text = (f"{var['loss'].upper()} seed {var['seed']} over {var['n_backbones']} backbones: sd "
                f"{var['sd_over_backbones']:.2f} points")
        if var.get("sd_over_finetune_seeds") is not None:
            text += f", against {var['sd_over_finetune_seeds']:.2f} over {var['n_finetune_seeds']} fine-tuning seeds"
            text += " of one backbone"
        if "sd_ratio" in var:  # not when the fine-tuning seeds agree exactly (sd 0)
            lo, hi = var["sd_ratio_ci"]
            text += f" (ratio {var['sd_ratio']:.2f}, 95% CI [{lo:.2f}, {hi:.2f}])"
        out.append(text + ".")
    return out


# --------------------------------------------------------------------------------------- reading back


def of_recipe(runs: pd.DataFrame, finetune: dict | None = None, free: tuple[str, ...] = ()) -> pd.DataFrame:
    """The rows trained as the study trains them: scratch rows with their profile's own settings of the compared
    fields, pre-trained rows with `finetune` (default FINETUNE) on top of it. The compared fields: every field
    some recipe sets, and the block (a run reading fewer positions is a point of `pretraining_positions`), less
    `free`. Rows of other recipes (the measurements that chose it) stay in runs.csv but out of the comparison."""
    import json

    finetune = FINETUNE if finetune is None else finetune
    runs = with_start(runs)
    if runs.empty:
        return runs.reset_index(drop=True)
    # every field some recipe sets: a run of another recipe (e.g. whole reviews) never passes for this one's
    fields = (set(finetune) | {k for r in RECIPES.values() for k in r["finetune"]} | {"block_size"}) - set(free)
    profiles = runs["profile"] if "profile" in runs.columns else pd.Series([None] * len(runs), index=runs.index)
    configs = runs["config"].map(json.loads)
    keep = []
    for c, start, profile in zip(configs, runs["start"], profiles):
        base = _profile_config(profile)
        want = {k: finetune.get(k, getattr(base, k)) if start == "pre-trained" else getattr(base, k) for k in fields}
        keep.append(all(c.get(k, getattr(base, k)) == want[k] for k in fields))
    return runs[keep].reset_index(drop=True)


def _profile_config(profile):
    """The TrainConfig of a row's profile (the dataclass defaults for rows of no known profile)."""
    from nanogpt.run.config import TrainConfig
    from nanogpt.run.profiles import PROFILES

    return PROFILES[profile].config if isinstance(profile, str) and profile in PROFILES else TrainConfig()


def pretraining_positions(runs: pd.DataFrame, backbone_id: str, loss: str = "ce", seed: int = 0,
                          finetune: dict | None = None) -> pd.DataFrame:
    """Accuracy against positions: `loss`/`seed` fine-tuned from one backbone with the study's recipe, each run
    reading its own `block_size` at a time (the backbone's block or fewer of its positions), with its training
    minutes. One seed per point: a hint of what more positions would buy, not a result."""
    import json

    runs = of_recipe(runs[(runs["loss"] == loss) & (runs["seed"] == seed)], finetune, free=("block_size",))
    runs = runs[runs["backbone"] == backbone_id]
    return pd.DataFrame({"block_size": runs["config"].map(lambda c: int(json.loads(c)["block_size"])),
                         "accuracy": runs["val_accuracy"].astype(float) * 100,
                         "train_minutes": runs["train_seconds"].astype(float) / 60,
                         "run_id": runs["run_id"]}).sort_values("block_size").reset_index(drop=True)


def stored_pretraining(results_dir: str | Path, profile: str, pretrain_profile: str,
                       finetune: dict | None = None, pretrain_overrides: dict | None = None
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The finished runs of `profile` (of the study's recipe, `of_recipe`) and the backbones of
    `pretrain_profile` with `pretrain_overrides` (seed order; backbones trained otherwise, such as the budget
    points of `pretraining_budget`, and the runs from them are left out) a results folder holds: what notebook
    06 analyses when it does not train (a fresh clone reads the committed files). Runs from other weights of a
    backbone's id than its row's (`superseded_runs`) are left out too."""
    runs, backbones = _stored(results_dir, profile, pretrain_profile, finetune, pretrain_overrides)
    runs = runs[~superseded_mask(runs, backbones)].reset_index(drop=True)
    used = set(runs["backbone"]) - {""} if not runs.empty else set()
    if not used:  # no runs, no backbones, or no run fine-tuned with this recipe from them
        raise FileNotFoundError(f"{results_dir} holds no '{profile}' runs fine-tuned with this recipe from its "
                                f"'{pretrain_profile}' backbones yet. Fix: run notebook 06 with train=True (or "
                                "`python -m nanogpt study --pretraining --recipe <name>`).")
    return runs, backbones[backbones["backbone_id"].isin(used)].reset_index(drop=True)


def superseded_runs(results_dir: str | Path, profile: str, pretrain_profile: str, finetune: dict | None = None,
                    pretrain_overrides: dict | None = None) -> pd.DataFrame:
    """The recipe's finished runs fine-tuned from a backbone id whose weights are no longer its row's: a backbone
    lost with its machine and pre-trained again (same config and seed, other weights, since fp32 sums are not
    reproduced bit for bit) supersedes the runs of the lost one; they stay in runs.csv, out of the comparison."""
    runs, backbones = _stored(results_dir, profile, pretrain_profile, finetune, pretrain_overrides)
    return runs[superseded_mask(runs, backbones)].reset_index(drop=True)


def superseded_mask(runs: pd.DataFrame, backbones: pd.DataFrame) -> pd.Series:
    """Per row of `runs`: started from its backbone id but from other weights than the backbone row's (both
    sha256s recorded; rows from before the run's column existed are taken as the row's weights)."""
    if runs.empty or "backbone_sha256" not in runs or "backbone_sha256" not in backbones:
        return pd.Series(False, index=runs.index)
    current = dict(zip(backbones["backbone_id"], backbones["backbone_sha256"]))
    read = runs["backbone_sha256"].fillna("").astype(str)
    now = runs["backbone"].map(current).fillna("").astype(str)
    return (runs["start"] == "pre-trained") & (read != "") & (now != "") & (read != now)


def _stored(results_dir, profile, pretrain_profile, finetune, pretrain_overrides):
    """(the recipe's finished runs from scratch or from the profile's backbones, those backbones)."""
    from nanogpt.run.results import read_results, runs_csv

    runs = read_results(runs_csv(results_dir), finished_only=True)
    runs = of_recipe(runs[runs["profile"] == profile], finetune) if not runs.empty else runs
    backbones = stored_backbones(results_dir, pretrain_profile, pretrain_overrides)
    backbones = backbones[backbones["differs"].map(len) == 0].drop(columns="differs")
    if runs.empty or backbones.empty:
        return runs.iloc[0:0], backbones
    runs = runs[(runs["start"] == "scratch") | runs["backbone"].isin(set(backbones["backbone_id"]))]
    return runs.reset_index(drop=True), backbones


def stored_backbones(results_dir: str | Path, pretrain_profile: str, overrides: dict | None = None) -> pd.DataFrame:
    """The backbones.csv rows of `pretrain_profile` (seed order), each with `differs`: the fields (other than the
    seed and the fields that change nothing computed) in which it departs from the profile with `overrides`,
    e.g. ('max_steps',) for a shorter or longer pre-training; the precision by what the row computed. The study's
    backbones differ in nothing."""
    import json

    from nanogpt.run.pretrain import LOCAL_FIELDS, NEUTRAL_DEFAULTS, get_pretrain_profile

    path = Path(results_dir) / "backbones.csv"
    rows = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["backbone_id", "profile", "seed", "config"])
    rows = rows[rows["profile"] == pretrain_profile].sort_values(["seed", "steps"] if "steps" in rows else "seed")
    base = json.loads(json.dumps(get_pretrain_profile(pretrain_profile).replace(**(overrides or {})).__dict__))
    skip = {"seed", *LOCAL_FIELDS}
    stored = [{**NEUTRAL_DEFAULTS, **json.loads(c)} for c in rows["config"]]  # rows from before a field existed
    if "precision" in rows:  # what was computed, not what was asked ('auto' on an AVX2 machine computed fp32)
        stored = [{**c, "precision": p if base["precision"] != "auto" else c.get("precision")}
                  for c, p in zip(stored, rows["precision"])]
    rows["differs"] = [tuple(k for k in base if k not in skip and c.get(k) != base[k]) for c in stored]
    return rows.reset_index(drop=True)


def pretraining_budget(runs: pd.DataFrame, backbones: pd.DataFrame, loss: str = "ce", seed: int = 0,
                       finetune: dict | None = None) -> pd.DataFrame:
    """Accuracy against the pre-training budget: `loss`/`seed` fine-tuned with the study's recipe from every
    backbone of `backbones` (`stored_backbones`) that departs from its profile in the number of steps at most,
    and from scratch (0 tokens); with each backbone's tokens, validation perplexity and minutes."""
    runs = of_recipe(runs[(runs["loss"] == loss) & (runs["seed"] == seed)], finetune)
    backbones = backbones[backbones["differs"].map(lambda d: set(d) <= {"max_steps"})]
    rows = [{"backbone_id": "", "backbone_seed": None, "tokens": 0, "val_perplexity": None, "backbone_minutes": 0.0}]
    rows += [{"backbone_id": b["backbone_id"], "backbone_seed": int(b["seed"]), "tokens": int(b["tokens"]),
              "val_perplexity": float(b["val_perplexity"]), "backbone_minutes": float(b["train_seconds"]) / 60}
             for _, b in backbones.iterrows()]
    curve = pd.DataFrame(rows).merge(runs[["backbone", "val_accuracy", "train_seconds"]], left_on="backbone_id",
                                     right_on="backbone", how="inner").drop(columns="backbone")
    return curve.assign(accuracy=curve["val_accuracy"] * 100,
                        total_minutes=curve["backbone_minutes"] + curve["train_seconds"] / 60).sort_values(
        ["tokens", "backbone_seed"], na_position="first").reset_index(drop=True)


def backbone_histories(results_dir: str | Path, backbones: pd.DataFrame) -> dict[str, pd.DataFrame]:
    out = {}
    for _, b in backbones.iterrows():
        path = Path(results_dir) / "backbones" / b["backbone_id"] / "history.csv"
        if path.is_file():
            out[f"seed {b['seed']} ({b['backbone_id']})"] = pd.read_csv(path)
    return out


def compute_points(results_dir: str | Path, runs: pd.DataFrame, backbones: pd.DataFrame) -> pd.DataFrame:
    """Accuracy against compute minutes, one row per validation pass of each run (its final pass only where the
    run folder with its learning curve is not here): `minutes` charges a pre-trained run its whole backbone,
    `minutes_shared` the backbone's minutes divided by the runs fine-tuned from it."""
    from nanogpt.run.results import load_histories

    runs = with_start(runs)
    hist = load_histories(results_dir, runs)
    have = set(hist["run_id"]) if not hist.empty else set()
    frames = [hist[hist["val_accuracy"].notna()][["run_id", "train_seconds", "val_accuracy"]]] if have else []
    rest = runs[~runs["run_id"].isin(have)]
    frames.append(rest[["run_id", "train_seconds", "val_accuracy"]])
    points = pd.concat(frames, ignore_index=True).merge(runs[["run_id", "loss", "start", "backbone"]], on="run_id")
    return _charged(points, runs, backbones)


def _charged(frame: pd.DataFrame, runs: pd.DataFrame, backbones: pd.DataFrame) -> pd.DataFrame:
    """`frame` (train_seconds and backbone per row) with its compute: `backbone_minutes`, `minutes` (training plus
    the whole backbone) and `minutes_shared` (plus the backbone divided among the `runs` fine-tuned from it)."""
    minutes = backbones.set_index("backbone_id")["train_seconds"].astype(float) / 60
    sharing = runs[runs["start"] == "pre-trained"].groupby("backbone").size()
    pre = frame["backbone"].map(minutes).fillna(0.0)
    return frame.assign(accuracy=frame["val_accuracy"] * 100, backbone_minutes=pre,
                        minutes=frame["train_seconds"] / 60 + pre,
                        minutes_shared=frame["train_seconds"] / 60 + pre / frame["backbone"].map(sharing).fillna(1.0))


def compute_table(runs: pd.DataFrame, backbones: pd.DataFrame) -> pd.DataFrame:
    """Final accuracy against total compute per (start, loss), from the rows' measured train_seconds: minutes
    of fine-tuning, of the backbone (whole: one run pays for it; shared: divided among the runs fine-tuned from
    it), and the accuracy points each extra minute over the scratch runs of that loss bought. Pre-trained runs:
    those of the first backbone, as in `pretraining_report`'s arms."""
    runs = with_start(runs)
    runs = runs[(runs["start"] == "scratch") | (runs["backbone"] == backbones["backbone_id"].iloc[0])]
    runs = _charged(runs, runs, backbones).assign(train=runs["train_seconds"] / 60)
    table = runs.groupby(["start", "loss"]).agg(runs=("accuracy", "size"), accuracy=("accuracy", "mean"),
                                                 finetune_minutes=("train", "mean"),
                                                 backbone_minutes=("backbone_minutes", "mean"),
                                                 total_minutes=("minutes", "mean"),
                                                 shared_minutes=("minutes_shared", "mean"))
    scratch = table.xs("scratch", level="start")
    for col, out in (("total_minutes", "points_per_extra_minute"), ("shared_minutes", "points_per_extra_minute_shared")):
        extra = table[col] - table.index.get_level_values("loss").map(scratch[col]).to_numpy()
        gain = table["accuracy"] - table.index.get_level_values("loss").map(scratch["accuracy"]).to_numpy()
        table[out] = (gain / extra).where(extra > 0)
    return table.reset_index()


def seed_churn(results_dir: str | Path, runs: pd.DataFrame, primary: str) -> dict:
    """Prediction churn between fine-tuning seeds (notebook 04's stability measure: the share of validation reviews
    two runs of one arm label differently, with a bootstrap CI over runs) for each arm of backbone `primary` and
    from scratch whose runs have their validation predictions here (two at least)."""
    from nanogpt.run.predictions import available_val_predictions
    from nanogpt.study.churn import churn_ci, label_matrix

    runs = with_start(runs)
    out = {}
    for (start, loss), arm in runs[(runs["start"] == "scratch") | (runs["backbone"] == primary)].groupby(
            ["start", "loss"]):
        found, _ = available_val_predictions(results_dir, arm.sort_values("seed"))
        if len(found) >= 2:
            labels, _, _ = label_matrix(found, list(found))
            out[f"{start}/{loss}"] = {k: float(v) * (100 if k != "n_runs" else 1)
                                      for k, v in churn_ci(labels).items()}
    return out
