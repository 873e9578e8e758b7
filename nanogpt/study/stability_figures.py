"""Figures of notebook 04's churn section, drawn from `stability.stability_report`'s dict."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from nanogpt.study.stability import TFIDF_ACCURACY

COLORS = {"ce": "#4f81bd", "bce": "#c0504d", "between": "#7f7f7f"}


def plot_churn(report: dict, profile: str):
    """Churn within CE, within BCE and between them, with 95% CIs, for each sample the report has."""
    samples = [(name, report[key]) for name, key in (("pilot", "pilot"), ("replication (plan 2)", "primary"))
               if report.get(key)] or [("all runs", report["all_runs"])]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    width = 0.25
    for i, (_, c) in enumerate(samples):
        for j, (what, value, ci) in enumerate((("ce", c["churn_ce"], c["churn_ce_ci"]),
                                              ("bce", c["churn_bce"], c["churn_bce_ci"]),
                                              ("between", c["between"], c["between_ci"]))):
            x = i + (j - 1) * width
            ax.bar(x, 100 * value, width, color=COLORS[what], label=(what.upper() if what != "between" else
                                                                      "CE run vs BCE run") if i == 0 else None)
            ax.errorbar(x, 100 * value, yerr=[[100 * (value - ci[0])], [100 * (ci[1] - value)]], color="black",
                        capsize=3)
    ax.set_xticks(range(len(samples)), [f"{n}\n{c['n_ce']} + {c['n_bce']} runs" for n, c in samples])
    low = min(min(c["churn_ce_ci"][0], c["churn_bce_ci"][0]) for _, c in samples)
    ax.set(ylim=(max(0, 100 * low - 1), None), ylabel="reviews two runs label differently (%)",
           title=f"Prediction churn between training seeds (profile '{profile}', 95% CIs over runs)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return fig


def plot_flips(report: dict, profile: str):
    """Where the flips sit: per-review churn by the ensemble's confidence and by review length."""
    reviews = report["reviews"]
    panels = [("by_confidence", "ensemble confidence |mean P - 0.5|")]
    if reviews["by_length"]:
        panels.append(("by_length", "review length (GPT-2 tokens, quintiles)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 3.8), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        frame = pd.concat([pd.DataFrame(rows).assign(loss=loss.upper()) for loss, rows in reviews[key].items()])
        sns.barplot(data=frame.assign(churn=100 * frame["churn"]), x="bin", y="churn", hue="loss",
                    palette={"CE": COLORS["ce"], "BCE": COLORS["bce"]}, ax=ax)
        ax.set(xlabel=label, ylabel="chance two runs disagree (%)")
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle(f"Where retrained models change their answer (profile '{profile}')", y=1.02)
    return fig


def plot_ensemble(report: dict, profile: str, tfidf: float = TFIDF_ACCURACY):
    """Accuracy of the mean probability over k seeds, per loss, beside TF-IDF."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for loss, rows in report["reviews"]["ensemble"].items():
        frame = pd.DataFrame(rows)
        ax.plot(frame["k"], 100 * frame["accuracy"], color=COLORS[loss], label=f"{loss.upper()} (mean of 20 orders)")
        ax.fill_between(frame["k"], 100 * frame["min"], 100 * frame["max"], color=COLORS[loss], alpha=0.15)
    ax.axhline(tfidf, color="gray", ls=":", label=f"TF-IDF + logistic regression ({tfidf:.2f}%)")
    ax.set(xscale="log", xlabel="runs averaged (k)", ylabel="validation accuracy (%)",
           title=f"The seed ensemble: averaging k runs' probabilities (profile '{profile}')")
    ax.legend(frameon=False, loc="lower right")
    return fig


def plot_paper_observation(report: dict, profile: str):
    """How often a study of n runs per loss sees the paper's max-min pattern, drawn from this study's runs."""
    frame = pd.DataFrame(report["paper_observation"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(frame["n"], 100 * frame["both_as_paper"], marker="o", label="BCE max-min <= 1.04 and CE's >= 2.36")
    ax.plot(frame["n"], 100 * frame["ratio_at_most_paper"], marker="s", label="max-min ratio BCE/CE <= 0.44")
    ax.set(xlabel="runs per loss in the study (n)", ylabel="share of resampled studies (%)",
           title=f"How surprising is the paper's observation? (resampled from profile '{profile}')")
    ax.legend(frameon=False)
    return fig
