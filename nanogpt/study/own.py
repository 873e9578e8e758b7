"""Notebook 07's helpers: a demo file when the reader brings none, and the figure of how the checkpoint was chosen."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from nanogpt.core.artifacts import atomic_write_csv
from nanogpt.study.probe import first_sentences  # notebook 06's probe cuts reviews the same way


def demo_file(path: str | Path, n: int = 2000, seed: int = 0) -> Path:
    """A labelled file made offline from the bundled IMDB training reviews: `n` of them, each cut to its first two
    sentences, in columns `review` and `sentiment` (`pos` / `neg`), so the notebook shows a file whose columns
    and labels are not the defaults. Written once; an existing file is left as it is."""
    from nanogpt.data.imdb import load_imdb

    path = Path(path)
    if path.is_file():
        return path
    reviews = load_imdb()["train"].to_pandas().sample(n, random_state=seed)
    frame = pd.DataFrame({"review": reviews["text"].map(first_sentences),
                          "sentiment": reviews["label"].map({1: "pos", 0: "neg"})})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(path, frame)
    return path


MEASUREMENT_FILES = ("val3k-short", "valrest-short", "val3k-whole")  # docs/own-data.md: reporting, tuning 2, long


def measurement_files(folder: str | Path, n: int = 3000, seed: int = 0) -> dict[str, Path]:
    """The files docs/own-data.md measures on, made from the bundled reviews' validation part (never read by a
    backbone or by the shipped model): `n` of them (`sample(n, random_state=seed)`) cut to their first two
    sentences (the reporting file), the rest cut the same way (tuning file 2), and the same `n` whole (long
    texts); columns `text` and `label`. Existing files are left as they are."""
    from nanogpt.data.imdb import load_imdb

    val = load_imdb()["validation"].to_pandas()
    reporting = val.sample(n, random_state=seed)
    parts = {"val3k-short": (reporting, True), "valrest-short": (val.drop(reporting.index), True),
             "val3k-whole": (reporting, False)}
    out = {}
    for name, (part, short) in parts.items():
        path = out[name] = Path(folder) / f"{name}.csv"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_csv(path, pd.DataFrame({"text": part["text"].map(first_sentences) if short else part["text"],
                                                 "label": part["label"]}))
    return out


def plot_selection(history: pd.DataFrame, row: dict, title: str):
    """Development and validation accuracy at each validation pass, the kept step and the early stop marked."""
    points = history.dropna(subset=["val_accuracy"])
    fig, ax = plt.subplots(figsize=(8, 4))
    if "dev_accuracy" in points:
        ax.plot(points["step"], 100 * points["dev_accuracy"], marker="o", label="development slice (chooses)")
    ax.plot(points["step"], 100 * points["val_accuracy"], marker="s", label="validation (only scores)")
    best = row.get("best_step")
    if best is not None and best == best:  # not NaN
        ax.axvline(best, color="#2a7", ls="--", label=f"kept checkpoint (step {int(best)})")
    stopped = row.get("stopped_early_at")
    if stopped is not None and stopped == stopped:
        ax.axvline(stopped, color="#a33", ls=":", label=f"stopped early (step {int(stopped)})")
    ax.set(title=title, xlabel="training step", ylabel="accuracy (%)")
    ax.legend(loc="lower right", frameon=False)
    return fig
