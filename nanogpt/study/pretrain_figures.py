"""Notebook 06's figures: the pre-training curves, every run by start and loss beside TF-IDF, accuracy against
total compute, and the short-input and length probe. Each returns the figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from nanogpt.study.pretrain_study import with_start

COLORS = {"ce": "#1f4e79", "bce": "#c0504d"}
BASELINE = dict(color="#3a7d44", ls="--", lw=1.2)


def plot_pretraining_curves(histories: dict[str, pd.DataFrame]):
    """Validation perplexity of each backbone against the tokens it read (and the minutes it took)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for name, h in histories.items():
        axes[0].plot(h["tokens"] / 1e6, h["val_perplexity"], marker="o", ms=3, label=name)
        axes[1].plot(h["train_seconds"] / 60, h["val_perplexity"], marker="o", ms=3, label=name)
    axes[0].set(xlabel="tokens read (millions)", ylabel="validation perplexity", yscale="log",
                title="Pre-training: next-token perplexity on the validation texts")
    axes[1].set(xlabel="pre-training minutes", ylabel="validation perplexity", yscale="log", title="against time")
    axes[0].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def plot_starts(runs: pd.DataFrame, baseline: float, primary: str):
    """Every run's accuracy by start and loss (pre-trained: backbone `primary`; other backbones as crosses)."""
    acc = with_start(runs).assign(accuracy=lambda d: d["val_accuracy"] * 100)
    main = acc[(acc["start"] == "scratch") | (acc["backbone"] == primary)]
    others = acc[(acc["start"] == "pre-trained") & (acc["backbone"] != primary)]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    sns.stripplot(data=main, x="start", y="accuracy", hue="loss", palette=COLORS, dodge=True, order=["scratch", "pre-trained"],
                  hue_order=["ce", "bce"], size=6, jitter=0.15, ax=ax)
    if not others.empty:
        for loss, g in others.groupby("loss"):
            ax.scatter([1 + (0.2 if loss == "bce" else -0.2)] * len(g), g["accuracy"], marker="x", s=50,
                       color=COLORS[loss], label=f"{loss.upper()}, other backbones")
    ax.axhline(baseline * 100, **BASELINE, label=f"TF-IDF + logistic regression ({baseline * 100:.2f}%)")
    ax.set(title="Validation accuracy from scratch and from a pre-trained backbone", xlabel="",
           ylabel="validation accuracy (%)")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_accuracy_per_compute(points: pd.DataFrame, baseline: float):
    """Accuracy against total compute minutes: scratch runs, pre-trained runs charged the whole backbone, and
    pre-trained runs charged their share of it (one backbone serves all fine-tuning runs). `points` has columns
    run_id, loss, start, minutes, minutes_shared, accuracy (one row per validation pass)."""
    fig, ax = plt.subplots(figsize=(9, 4.8))
    styles = {"scratch": dict(ls="-", marker="o"), "pre-trained": dict(ls="-", marker="s"),
              "pre-trained, shared": dict(ls=":", marker="s")}
    for (start, loss), g in points.groupby(["start", "loss"]):
        for i, (_, run) in enumerate(g.groupby("run_id")):
            run = run.sort_values("minutes")
            kw = dict(color=COLORS[loss], alpha=0.6, ms=3, lw=1)
            ax.plot(run["minutes"], run["accuracy"], **styles[start], **kw,
                    label=f"{loss.upper()} {start}" if i == 0 else None)
            if start == "pre-trained":
                ax.plot(run["minutes_shared"], run["accuracy"], **styles["pre-trained, shared"], **kw,
                        label=f"{loss.upper()} pre-trained, backbone shared by the runs" if i == 0 else None)
    ax.axhline(baseline * 100, **BASELINE, label=f"TF-IDF ({baseline * 100:.2f}%, ~10 s)")
    ax.set(xlabel="total compute (minutes of training on this machine)", ylabel="validation accuracy (%)",
           title="Accuracy reached per minute of compute (pre-training + fine-tuning)")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def plot_budget(curve: pd.DataFrame, baseline: float, loss: str = "ce"):
    """`pretraining_budget`'s curve: one seed's accuracy against the tokens its backbone read (0: from scratch)
    and against total minutes (pre-training + fine-tuning), beside TF-IDF."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, x, label in ((axes[0], curve["tokens"] / 1e6, "pre-training tokens (millions; 0 = from scratch)"),
                         (axes[1], curve["total_minutes"], "total minutes (pre-training + fine-tuning)")):
        ax.plot(x, curve["accuracy"], marker="o", ls="", color=COLORS[loss])
        ax.axhline(baseline * 100, **BASELINE, label=f"TF-IDF ({baseline * 100:.2f}%)")
        ax.set(xlabel=label, ylabel="validation accuracy (%)")
    means = curve.groupby("tokens")["accuracy"].mean()  # several backbone seeds at one budget: their mean
    axes[0].plot(means.index / 1e6, means.values, color=COLORS[loss], lw=1, alpha=0.7, label="mean over backbones")
    axes[0].set_title(f"{loss.upper()}, one fine-tuning seed, against the pre-training budget")
    axes[0].legend(frameon=False, fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_probe(table: pd.DataFrame):
    """Accuracy of each model on full reviews by length bucket, and on their first two sentences."""
    long = table.reset_index().melt(id_vars="model", var_name="input", value_name="accuracy")
    fig, ax = plt.subplots(figsize=(11, 4.5))
    sns.barplot(data=long, x="input", y="accuracy", hue="model", ax=ax)
    low = max(40.0, long["accuracy"].min() - 5)
    ax.set(ylim=(low, 100), xlabel="", ylabel="validation accuracy (%)",
           title="Short inputs and long reviews: full reviews by length, and the first two sentences")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig
