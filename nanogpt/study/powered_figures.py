"""Notebook 04's figures of the powered study: every run, the CI as runs accumulate, observed against expected
max-min, the sources of variance, and the paired runs. Each takes the rows (with `design`, from
`powered.with_design`) or the report of `powered.powered_report`, and returns the figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from nanogpt.study.analysis import d2
from nanogpt.study.powered import BCE_HEAD2X, CE_PAIRED, accuracies
from nanogpt.study.stats import PAPER

COLORS = {"ce": "#1f4e79", "bce": "#c0504d", CE_PAIRED: "#4f81bd", BCE_HEAD2X: "#e8a33d"}
LABELS = {"ce": "CE", "bce": "BCE", CE_PAIRED: "CE, paired head", BCE_HEAD2X: "BCE, head lr x2, decay x0.5"}


def plot_runs(runs: pd.DataFrame, profile: str):
    """Left: every run's accuracy per design and arm. Right: the ECDF of CE and BCE in each design."""
    acc = runs[runs["design"] != "other"].assign(accuracy=runs["val_accuracy"] * 100)
    short = {arm: label.replace(", ", ",\n") for arm, label in LABELS.items()}
    acc = acc.assign(group=acc["design"] + "\n" + acc["arm"].map(short).fillna(acc["arm"]))
    order = [f"{d}\n{short[a]}" for d in ("fixed", "resplit") for a in short if f"{d}\n{short[a]}" in set(acc["group"])]
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [1.4, 1]})
    sns.boxplot(data=acc, x="group", y="accuracy", order=order, color="#eef2f7", showfliers=False, width=0.55,
                ax=axes[0])
    sns.stripplot(data=acc, x="group", y="accuracy", order=order, hue="arm", palette=COLORS, size=4, jitter=0.2,
                  alpha=0.8, legend=False, ax=axes[0])
    counts = acc.groupby("group").size()
    axes[0].set_xticks(range(len(order)), [f"{g}\n(n = {counts[g]})" for g in order], fontsize=9)
    axes[0].set(title=f"Every run (profile '{profile}')", xlabel="", ylabel="validation accuracy (%)")
    for (design, arm), g in acc[acc["arm"].isin(["ce", "bce"])].groupby(["design", "arm"]):
        x = np.sort(g["accuracy"].to_numpy())
        axes[1].step(x, np.arange(1, x.size + 1) / x.size, where="post", color=COLORS[arm],
                     ls="-" if design == "fixed" else "--", label=f"{LABELS[arm]}, {design} (n = {x.size})")
    axes[1].legend(frameon=False, fontsize=9)
    for loss in ("ce", "bce"):
        axes[1].axvline(PAPER[loss]["mean"], color=COLORS[loss], ls=":", lw=1)
    axes[1].set(title="ECDF of CE and BCE per design (dotted: the paper's means)", xlabel="validation accuracy (%)",
                ylabel="share of runs at or below")
    fig.tight_layout()
    return fig


def plot_ci_by_n(report: dict, profile: str):
    """BCE - CE with its 95% CI over the first n seeds, against n, beside the margin and the paper's gap."""
    path = pd.DataFrame(report["ci_by_n"])
    acc = report["accuracy"]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.fill_between(path["n"], path["ci_low"], path["ci_high"], color="#4f81bd", alpha=0.25, label="95% CI (Welch)")
    ax.plot(path["n"], path["diff"], color="#1f4e79", label="BCE - CE")
    ax.axhline(0, color="black", lw=0.8)
    for sign in (-1, 1):
        ax.axhline(sign * acc["margin"], color="gray", ls="--", lw=1,
                   label="equivalence margin" if sign == 1 else None)
    ax.axhline(acc["paper_diff"], color="#c0504d", ls=":", label=f"paper ({acc['paper_diff']:+.2f})")
    ax.set(title=f"How the CI of the difference narrows as runs accumulate (profile '{profile}')",
           xlabel="runs per loss (the first n seeds)", ylabel="BCE - CE (points)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def plot_ranges(runs: pd.DataFrame, report: dict, profile: str):
    """Observed max-min of the first n seeds against the expected sd * d2(n) under each loss's measured sd, and
    the paper's max-min: max-min grows with n, so two studies' max-min only compare at equal n."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for loss in ("ce", "bce"):
        x = accuracies(runs, "fixed", loss)
        n = np.arange(2, x.size + 1)
        observed = [np.ptp(x.iloc[:k]) for k in n]
        ax.step(n, observed, where="post", color=COLORS[loss], alpha=0.7, label=f"{LABELS[loss]}: observed")
        ax.plot(n, [x.std(ddof=1) * d2(int(k)) for k in n], color=COLORS[loss], ls="--",
                label=f"{LABELS[loss]}: expected, sd {x.std(ddof=1):.2f} x d2(n)")
        ax.axhline(PAPER[loss]["spread"], color=COLORS[loss], ls=":", lw=1.2,
                   label=f"paper's {LABELS[loss]} max-min ({PAPER[loss]['spread']})")
    ax.set(title=f"Max-min of n runs: observed and expected (profile '{profile}')", xlabel="runs (the first n seeds)",
           ylabel="max - min (points)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return fig


def plot_variance(report: dict, profile: str):
    """The sd of each loss under the fixed split and with the split varied per run."""
    table = pd.DataFrame(report["table"])
    table = table[table["arm"].isin(["ce", "bce"]) & table["design"].isin(["fixed", "resplit"])]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.barplot(data=table.assign(loss=table["arm"].map(LABELS)), x="design", y="sd", hue="loss",
                palette=[COLORS["ce"], COLORS["bce"]], hue_order=["CE", "BCE"], ax=ax)
    for container, loss in zip(ax.containers, ("ce", "bce")):
        ns = table.set_index(["arm", "design"])["n"]
        ax.bar_label(container, labels=[f"n = {ns.get((loss, d), 0)}" for d in ("fixed", "resplit")], fontsize=9)
    ax.set(title=f"Run-to-run sd by design (profile '{profile}')", xlabel="", ylabel="sd of accuracy (points)")
    return fig


def plot_pairs(runs: pd.DataFrame, report: dict, profile: str):
    """Per seed: paired CE against BCE, and against BCE with CE's head step (the third arm)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    y = accuracies(runs, "fixed", CE_PAIRED)
    for ax, arm in zip(axes, ("bce", BCE_HEAD2X)):
        x = accuracies(runs, "fixed", arm)
        both = x.index.intersection(y.index)
        pair = report["paired"].get(f"{CE_PAIRED} vs {arm}")
        ax.scatter(x.loc[both], y.loc[both], color=COLORS[arm], s=18)
        lo, hi = float(min(x.loc[both].min(), y.loc[both].min())), float(max(x.loc[both].max(), y.loc[both].max()))
        ax.plot([lo, hi], [lo, hi], color="gray", ls=":", lw=1)
        r = f"r = {pair['correlation']:.2f}, {pair['n_pairs']} seeds" if pair else "too few pairs"
        ax.set(title=f"{LABELS[CE_PAIRED]} against {LABELS[arm]}\n({r})", xlabel=f"{LABELS[arm]} (%)",
               ylabel=f"{LABELS[CE_PAIRED]} (%)")
    fig.suptitle(f"Paired runs, one point per seed (profile '{profile}')", y=1.02)
    fig.tight_layout()
    return fig
