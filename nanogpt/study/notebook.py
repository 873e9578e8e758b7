"""What every study notebook shares: checked parameters, folders, plot style, figure saving, and the training
story of notebooks 02 (CE) and 03 (BCE), which differ only in the loss they pass.

A notebook's first code cell after `parameters` is `nb = setup(...)`: it checks each parameter (a bad one stops
there with a message naming it), resolves folders against the repository root, and styles the plots.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from nanogpt.core.resources import REPO_ROOT
from nanogpt.run.profiles import get_profile
from nanogpt.run.results import load_histories, population_of, population_tag
from nanogpt.run.rundir import RunDir
from nanogpt.study import params as P
from nanogpt.study.figure_digest import save_figure

PALETTE = {"negative": "#c0504d", "positive": "#4f81bd"}


def resolve(folder) -> Path:
    """Relative folders are taken from the repository root, wherever the notebook runs."""
    path = Path(folder)
    return path if path.is_absolute() else REPO_ROOT / path


@dataclass
class Notebook:
    """A notebook's checked parameters. Folders are absolute; `seeds` is a list (the profile's by default)."""

    profile: str
    source: str = "bundled"
    seeds: list[int] = field(default_factory=list)
    results_dir: Path | None = None
    figures_dir: Path | None = None
    overrides: dict = field(default_factory=dict)
    design: str = "fixed"
    workers: int | None = None  # a local Dask cluster of this many workers; None: train in this process
    scheduler: str | None = None  # or the address of a running Dask scheduler
    population: str | None = None  # 'device/precision' of the runs the figures show, once the notebook knows it
    name: str | None = None  # a named study of the profile (notebook 06's `ft-long`): files go under it instead

    @property
    def tag(self) -> str:
        """What the figures and reports are filed under: the profile (or the study's name), plus the population
        where it is not cpu/fp32 ('cpu-bf16'; see results.population_tag)."""
        return population_tag(self.name or self.profile, self.population)

    def save(self, fig, name: str) -> Path:
        """Save a figure as figures_dir/<tag>/name (and say where), with the design in the name when it is not
        the fixed one: studies of different profiles, populations or designs never overwrite each other's."""
        if self.figures_dir is None:
            raise P.ParameterError("this notebook was set up without figures_dir; pass it to setup().")
        if self.design != "fixed":
            name = f"{Path(name).stem}-{self.design}{Path(name).suffix}"
        path = self.figures_dir / self.tag / name
        written = save_figure(fig, path, dpi=120, bbox_inches="tight")
        print(f"figure -> {path}" + ("" if written else " (unchanged: it already shows this)"))
        return path


def setup(profile, source="bundled", seeds=None, results_dir=None, figures_dir=None, overrides=None,
          design="fixed", workers=None, scheduler=None, name=None) -> Notebook:
    """Check the parameters a notebook was given, style the plots, and return them as a `Notebook`."""
    profile = P.check_profile(profile)
    nb = Notebook(profile=profile, source=P.check_source(source),
                  seeds=list(get_profile(profile).seeds) if seeds is None else P.check_seeds(seeds),
                  design=P.check_design(design), workers=P.check_workers(workers),
                  scheduler=P.check_scheduler(scheduler), name=P.check_name(name))
    if results_dir is not None:
        nb.results_dir = resolve(P.check_folder("results_dir", results_dir))
    if figures_dir is not None:
        nb.figures_dir = resolve(P.check_folder("figures_dir", figures_dir))
        nb.figures_dir.mkdir(parents=True, exist_ok=True)
    if overrides is not None and not isinstance(overrides, dict):
        raise P.ParameterError(f"parameter overrides={overrides!r}: give a dict of TrainConfig fields.")
    nb.overrides = dict(overrides or {})
    sns.set_theme(style="whitegrid", context="notebook")
    # seaborn's strip-plot jitter and bootstrapped error bands draw from numpy's global generator: seeded here, a
    # notebook run top to bottom saves the same figure bytes every time (so regenerated figures show no diff)
    np.random.seed(0)
    pd.set_option("display.precision", 4)
    return nb


# ------------------------------------------------------------------------------- notebook 05

DEMO_PROFILE = "smoke"


def panel_checkpoints(nb: Notebook) -> dict[str, list[tuple[str, str]]]:
    """The model shipped in models/ (first) and the checkpoints of the study's finished runs of `nb.profile` for
    the review panel; when there are none of either, a quick CE/BCE pair of the smoke profile trained now into `<results_dir>/demo/`, so the
    panel works before any study has run. The study's own results are never touched."""
    from nanogpt.run.results import study_checkpoints
    from nanogpt.serve.shipped import shipped_option

    found = study_checkpoints(nb.results_dir, nb.profile)
    shipped = shipped_option()  # the model in models/, offered first: it answers on a fresh clone
    if shipped is not None:
        loss, option = shipped
        return {loss: [option, *found.get(loss, [])], **{k: v for k, v in found.items() if k != loss}}
    if found:
        return found
    demo_dir = nb.results_dir / "demo"
    demo = study_checkpoints(demo_dir, DEMO_PROFILE)
    if set(demo) == {"ce", "bce"}:
        print(f"No trained '{nb.profile}' models in {nb.results_dir}; using the quick demo pair in {demo_dir}.")
        return demo
    print(f"No trained '{nb.profile}' models in {nb.results_dir} yet (run notebooks 02 and 03 for them). "
          f"Training a quick '{DEMO_PROFILE}'-profile CE/BCE pair into {demo_dir} so that the panel can be tried "
          "now (measured on 2 cores: about 7 s a model with bf16, 17 s without):")
    from nanogpt.study.runs import run_study

    run_study(DEMO_PROFILE, seeds=[0], out_dir=demo_dir, source=nb.source)
    return study_checkpoints(demo_dir, DEMO_PROFILE)


# ------------------------------------------------------------------------------- notebooks 02 and 03


# The arms a notebook trains for its loss in each design (study.DESIGNS): in the paired design CE's head starts as
# the BCE head of the same seed, and notebook 03 also trains the third arm, BCE with CE's effective head step.
DESIGN_ARMS = {"fixed": {"ce": ("ce",), "bce": ("bce",)}, "resplit": {"ce": ("ce",), "bce": ("bce",)},
               "paired": {"ce": ("ce",), "bce": ("bce", "bce-head2x")}}


def train_loss(nb: Notebook, loss: str) -> pd.DataFrame:
    """Train every seed of `nb`'s profile with `loss` in `nb.design` (finished runs reused, interrupted ones
    resumed) and return their rows, with each run's checkpoint path."""
    from nanogpt.study.runs import run_study

    runs = run_study(nb.profile, nb.seeds, losses=DESIGN_ARMS[nb.design][loss], out_dir=nb.results_dir,
                     source=nb.source, design=nb.design, workers=nb.workers, scheduler=nb.scheduler, **nb.overrides)
    if len(runs):
        nb.population = population_of(runs)  # its figures go under the population it trained
    runs["checkpoint"] = [str(RunDir(nb.results_dir, r).model) for r in runs["run_id"]]
    runs["arm"] = runs["arm"].fillna(runs["loss"])
    return runs[["seed", "arm", "val_accuracy", "val_loss", "roc_auc", "ece", "train_seconds", "tokens_per_second",
                 "checkpoint", "run_id", "loss"]]


def plot_learning_curves(nb: Notebook, runs: pd.DataFrame, loss: str, name: str):
    """Training loss, validation loss and accuracy against step, one line per seed; saved as `name`. Runs whose
    folder is not here (rows of --keep none runs trained elsewhere) have no curve, and it says how many."""
    history = load_histories(nb.results_dir, runs)
    missing = len(runs) - (history["run_id"].nunique() if len(history) else 0)
    if missing:
        print(f"{missing} of {len(runs)} run(s) have no learning curve here: their folders are not in "
              f"{nb.results_dir / 'runs'} (trained elsewhere with --keep none; only their rows were committed).")
    if history.empty:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for ax, column, label in zip(axes, ["train_loss", "val_loss", "val_accuracy"],
                                 ["training loss (mean over the steps since the previous point)", "validation loss",
                                  "validation accuracy"]):
        points = history.dropna(subset=[column])  # training loss every log_interval steps, validation less often
        sns.lineplot(data=points, x="step", y=column, hue="seed", palette="viridis",
                     style="arm" if runs["arm"].nunique() > 1 else None,
                     marker="o" if column != "train_loss" else None, ax=ax)
        ax.set(title=label, xlabel="training step", ylabel=label.split(" (")[0])
    fig.suptitle(f"{loss.upper()} on profile '{nb.profile}': learning curves per seed", y=1.03)
    nb.save(fig, name)
    return fig


def plot_final_accuracy(nb: Notebook, runs: pd.DataFrame, loss: str, name: str):
    """Validation accuracy of each seed at the end of the schedule, as bars; saved as `name`."""
    arms = runs["arm"].nunique()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(runs)), 3.5))
    accuracy = runs["val_accuracy"] * 100
    sns.barplot(data=runs.assign(accuracy=accuracy), x="seed", y="accuracy", hue="arm" if arms > 1 else None,
                color=None if arms > 1 else PALETTE["positive"], ax=ax)
    ax.set(title=f"{loss.upper()}: validation accuracy at the end of the schedule", xlabel="seed",
           ylabel="validation accuracy (%)", ylim=(max(0, accuracy.min() - 5), min(100, accuracy.max() + 2)))
    if len(runs) <= 20:  # a number on each bar while they are readable
        for container in ax.containers:
            ax.bar_label(container, fmt="%.2f")
    step = max(1, len(ax.get_xticklabels()) // 20)  # at most ~20 seed labels on a long axis
    for i, label in enumerate(ax.get_xticklabels()):
        label.set_visible(i % step == 0)
    nb.save(fig, name)
    means = runs.assign(accuracy=accuracy).groupby("arm")["accuracy"].agg(["mean", "size"])
    print("; ".join(f"{arm}: mean {m:.2f}% over {n} seeds"
                    for arm, m, n in zip(means.index, means["mean"], means["size"]))
          + f"; checkpoints in {nb.results_dir / 'runs'}")
    return fig
