"""Prediction churn: how often two training runs of one recipe answer a review differently. The stability a user
of a retrained classifier meets, and the instrument `results/analysis-plan-2.json` decides stability with.

Everything starts from a label matrix (runs x reviews, 1 where a run says positive) and its pair matrix D, where
D[i, j] is the share of reviews runs i and j label differently. An arm's churn is the mean of D over pairs of
distinct runs: a U-statistic whose pairs share runs, so its CI resamples runs (never reviews or pairs), and a
resample leaves out the pairs of a run with its own copy (they would count as perfect agreement and bias it
down). For weights w (how often each run was drawn) that is w'Dw / ((sum w)^2 - sum w^2), since D's diagonal is 0.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd


def label_matrix(predictions: dict[str, pd.DataFrame], run_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels runs x reviews as float32 0/1, P(positive) rounded to float16, the reviews' true labels) for
    `run_ids`, in that order. A ValueError when the runs were scored on different reviews (their label columns differ)."""
    ids = list(run_ids)
    if not ids:
        raise ValueError("no runs to build a label matrix from")
    # at the archive's precision (float16): a run folder's CSV and a fresh clone's archive then give the same labels
    probs = np.stack([predictions[r]["positive_probability"].to_numpy(np.float16) for r in ids]).astype(np.float32)
    truth = predictions[ids[0]]["label"].to_numpy()
    for r in ids[1:]:
        if not np.array_equal(predictions[r]["label"].to_numpy(), truth):
            raise ValueError(f"run {r} was scored on other reviews than run {ids[0]} (its labels differ): churn "
                             "compares runs on one validation set only")
    return (probs > 0.5).astype(np.float32), probs, truth


def pair_matrix(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """D[i, j]: the share of reviews on which run i of `a` and run j of `b` (default: `a`) disagree."""
    b = a if b is None else b
    return (a @ (1 - b).T + (1 - a) @ b.T) / a.shape[1]


def within(d: np.ndarray, w: np.ndarray | None = None) -> np.ndarray | float:
    """Mean of D over pairs of distinct runs; with weights w (B x n, draw counts) one value per row of w, the
    pairs of a run with its own copies left out."""
    if w is None:
        n = len(d)
        return float(d.sum() / (n * (n - 1)))
    return np.einsum("bi,ij,bj->b", w, d, w) / (w.sum(1) ** 2 - (w ** 2).sum(1))


def between(d: np.ndarray, wa: np.ndarray | None = None, wb: np.ndarray | None = None) -> np.ndarray | float:
    """Mean of a cross-pair matrix (runs of a x runs of b), optionally under draw counts wa, wb (B x n each)."""
    if wa is None:
        return float(d.mean())
    return np.einsum("bi,ij,bj->b", wa, d, wb) / (wa.sum(1) * wb.sum(1))


def draw_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """n_boot bootstrap resamples of n runs, as draw counts (n_boot x n)."""
    picks = rng.integers(0, n, size=(n_boot, n))
    counts = np.zeros((n_boot, n))
    np.add.at(counts, (np.arange(n_boot)[:, None], picks), 1)
    return counts


def _percentile(x: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.nanpercentile(x, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def churn_ci(labels: np.ndarray, n_boot: int = 10_000, level: float = 0.95, seed: int = 0) -> dict:
    """One arm's churn with its percentile bootstrap CI over runs."""
    d = pair_matrix(labels)
    boot = within(d, draw_counts(len(d), n_boot, np.random.default_rng(seed)))
    lo, hi = _percentile(boot, level)
    return {"n_runs": len(d), "churn": within(d), "ci_low": lo, "ci_high": hi}


def compare_churn(a: np.ndarray, b: np.ndarray, n_boot: int = 10_000, level: float = 0.95, seed: int = 0,
                  n_perm: int = 2_000) -> dict:
    """Two groups of runs (label matrices on the same reviews): each one's churn, the ratio b/a with its CI (each
    group resampled on its own), the churn between them, and the energy distance 2 x between - within(a) -
    within(b), which is 0 when both groups draw their functions from one distribution (Hamming distance is of
    negative type), with its CI and a permutation p-value (group labels shuffled)."""
    rng = np.random.default_rng(seed)
    all_labels = np.concatenate([a, b])
    d = pair_matrix(all_labels)
    na = len(a)
    daa, dbb, dab = d[:na, :na], d[na:, na:], d[:na, na:]
    wa, wb = draw_counts(na, n_boot, rng), draw_counts(len(b), n_boot, rng)
    ca, cb, cab = within(daa, wa), within(dbb, wb), between(dab, wa, wb)
    energy = 2 * between(dab) - within(daa) - within(dbb)
    perm = []
    for _ in range(n_perm):
        order = rng.permutation(len(d))
        x, y = order[:na], order[na:]
        perm.append(2 * d[np.ix_(x, y)].mean() - within(d[np.ix_(x, x)]) - within(d[np.ix_(y, y)]))
    ratio = within(dbb) / within(daa)
    return {"n_a": na, "n_b": len(b), "churn_a": within(daa), "churn_b": within(dbb),
            "churn_a_ci": list(_percentile(ca, level)), "churn_b_ci": list(_percentile(cb, level)),
            "ratio": ratio, "ratio_ci": list(_percentile(cb / ca, level)),
            "between": between(dab), "between_ci": list(_percentile(cab, level)),
            "energy_distance": energy, "energy_ci": list(_percentile(2 * cab - ca - cb, level)),
            "energy_permutation_p": float((1 + np.sum(np.asarray(perm) >= energy)) / (1 + n_perm))}


def band_decision(ratio: float, ci: tuple[float, float], band: tuple[float, float], n: int) -> dict:
    """Plan 2's rule for a ratio b/a: 'equivalent' if the CI lies inside the band, else 'b less' / 'b more' when
    it lies below / above 1, else 'undecided' with the runs per group that would put a CI of this relative width,
    around the ratio seen, inside the band (None when the ratio itself is at or beyond an edge)."""
    lo, hi = ci
    if band[0] <= lo and hi <= band[1]:
        return {"decision": "equivalent", "runs_to_decide": None}
    if hi < 1:
        return {"decision": "b less", "runs_to_decide": None}
    if lo > 1:
        return {"decision": "b more", "runs_to_decide": None}
    half = (math.log(hi) - math.log(lo)) / 2  # on the log scale, where the band is symmetric
    room = min(math.log(band[1]) - math.log(ratio), math.log(ratio) - math.log(band[0]))
    return {"decision": "undecided", "runs_to_decide": math.ceil(n * (half / room) ** 2) if room > 0 else None}


# ------------------------------------------------------------------------------------------- per review


def per_review(labels: np.ndarray, truth: np.ndarray) -> pd.DataFrame:
    """Per review: the share of runs that label it correctly, and the chance that two distinct runs disagree on
    it (2k(n-k) / (n(n-1)) with k runs saying positive)."""
    n = len(labels)
    k = labels.sum(0)
    return pd.DataFrame({"p_correct": (labels == truth).mean(0), "flip": 2 * k * (n - k) / (n * (n - 1))})


def churn_by(flip: np.ndarray, by: np.ndarray, bins: int | list, labels=None) -> pd.DataFrame:
    """Mean per-review flip probability in bins of `by` (quantile bins when `bins` is an int), with the share of
    all flips each bin holds."""
    cut = (pd.qcut(by, bins, duplicates="drop") if isinstance(bins, int) else
           pd.cut(by, bins, include_lowest=True, labels=labels))
    frame = pd.DataFrame({"bin": cut, "flip": flip})
    out = frame.groupby("bin", observed=True)["flip"].agg(reviews="size", churn="mean", flips="sum")
    out["share_of_flips"] = out.pop("flips") / flip.sum()
    return out.reset_index()


def ensemble_curve(probs: np.ndarray, truth: np.ndarray, orders: int = 20, seed: int = 0) -> pd.DataFrame:
    """Accuracy of the mean P(positive) over the first k runs, k = 1 ... n, over `orders` random orders of the
    runs: how much of the run-to-run spread averaging seeds removes (mean, min and max over the orders)."""
    rng = np.random.default_rng(seed)
    n = len(probs)
    acc = np.empty((orders, n))
    for o in range(orders):
        running = np.cumsum(probs[rng.permutation(n)], axis=0) / np.arange(1, n + 1)[:, None]
        acc[o] = ((running > 0.5) == truth).mean(1)
    return pd.DataFrame({"k": np.arange(1, n + 1), "accuracy": acc.mean(0), "min": acc.min(0), "max": acc.max(0)})


def paper_observation(ce: np.ndarray, bce: np.ndarray, ns=range(3, 21), draws: int = 10_000, seed: int = 0,
                      paper=(2.36, 1.04)) -> pd.DataFrame:
    """How often a study of n runs per loss, drawn without replacement from these accuracies (points), sees what
    the paper saw: BCE's max-min at or below its 1.04 with CE's at or above 2.36, and a max-min ratio BCE/CE at or
    below 1.04 / 2.36."""
    rng = np.random.default_rng(seed)
    ce, bce = np.asarray(ce, float), np.asarray(bce, float)
    rows = []
    for n in ns:
        if n > min(len(ce), len(bce)):
            break
        rc = np.ptp(np.take_along_axis(np.broadcast_to(ce, (draws, len(ce))), rng.permuted(
            np.tile(np.arange(len(ce)), (draws, 1)), axis=1)[:, :n], 1), axis=1)
        rb = np.ptp(np.take_along_axis(np.broadcast_to(bce, (draws, len(bce))), rng.permuted(
            np.tile(np.arange(len(bce)), (draws, 1)), axis=1)[:, :n], 1), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):  # n equal CE accuracies: a ratio of inf or nan, not <=
            at_most = np.mean(rb / rc <= paper[1] / paper[0])
        rows.append({"n": n, "both_as_paper": float(np.mean((rb <= paper[1]) & (rc >= paper[0]))),
                     "ratio_at_most_paper": float(at_most),
                     "ce_range_median": float(np.median(rc)), "bce_range_median": float(np.median(rb))})
    return pd.DataFrame(rows)
