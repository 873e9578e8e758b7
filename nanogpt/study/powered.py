"""The powered study's report: every analysis `results/analysis-plan.json` decided before the runs, on one
profile's rows, and the verdict sentences notebook 04 and the README show (generated from the numbers).

A row's design is read from its split seed: the fixed split (DEFAULT_SPLIT_SEED) or the split-varied design
(RESPLIT_OFFSET + seed). Its arm says what was trained: `ce`, `bce`, or a paired arm (`ce-paired`: CE started
as the BCE function of the same seed; `bce-headlr2-headwd0.5`: BCE with CE's effective head step). The paired
design's BCE arm is the fixed design's BCE run itself (same config, same run id).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from nanogpt.data.imdb import DEFAULT_SPLIT_SEED, RESPLIT_OFFSET
from nanogpt.study.analysis import (
    accuracy_claim,
    d2,
    load_plan,
    paired_comparison,
    stability_claim,
    variance_components,
    welch_ci,
)
from nanogpt.study.stats import MIN_RUNS_TO_JUDGE

CE_PAIRED, BCE_HEAD2X = "ce-paired", "bce-headlr2-headwd0.5"
# (a, b, what it asks): the paired comparisons, a - b per seed
PAIRS = ((CE_PAIRED, "bce", "does pairing CE with BCE (same function at step 0) narrow the CI of the difference?"),
         (CE_PAIRED, BCE_HEAD2X, "does BCE with CE's effective head step behave like CE, seed by seed?"),
         (BCE_HEAD2X, "bce", "what the head step alone changes in BCE"))


def with_design(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with a `design` column (fixed, resplit or other) and `arm` filled in for rows from before arms."""
    runs = runs.copy()
    runs["arm"] = runs["arm"].fillna(runs["loss"]) if "arm" in runs.columns else runs["loss"]
    split, seed = runs["split_seed"].astype("int64"), runs["seed"].astype("int64")
    runs["design"] = np.select([split == DEFAULT_SPLIT_SEED, split == RESPLIT_OFFSET + seed],
                               ["fixed", "resplit"], "other")
    return runs


def accuracies(runs: pd.DataFrame, design: str, arm: str) -> pd.Series:
    """Validation accuracy in points of one design and arm, indexed by seed (sorted)."""
    rows = runs[(runs["design"] == design) & (runs["arm"] == arm)]
    return (rows.set_index("seed")["val_accuracy"] * 100).sort_index().rename(arm)


def ci_by_n(ce: pd.Series, bce: pd.Series, level: float = 0.95, start: int = MIN_RUNS_TO_JUDGE) -> pd.DataFrame:
    """BCE - CE with its Welch CI over the first n seeds both arms share, for n = start .. all: how the
    interval narrows as the runs accumulate (seed order is the order the study trains them)."""
    seeds = ce.index.intersection(bce.index).sort_values()
    rows = []
    for n in range(start, len(seeds) + 1):
        diff, lo, hi = welch_ci(bce.loc[seeds[:n]], ce.loc[seeds[:n]], level)
        rows.append({"n": n, "diff": diff, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=["n", "diff", "ci_low", "ci_high"])


def correlation_ci(a, b, level: float = 0.95) -> tuple[float, float, float]:
    """Pearson's r of paired runs with its Fisher-z CI (scipy)."""
    res = sps.pearsonr(np.asarray(a, float), np.asarray(b, float))
    ci = res.confidence_interval(confidence_level=level)
    return float(res.statistic), float(ci.low), float(ci.high)


def design_table(runs: pd.DataFrame) -> pd.DataFrame:
    """n, mean, sd and max-min (points) of every design and arm."""
    acc = runs.assign(accuracy=runs["val_accuracy"] * 100)
    table = acc.groupby(["design", "arm"])["accuracy"].agg(n="size", mean="mean", sd="std", min="min", max="max")
    return table.assign(max_min=table["max"] - table["min"]).drop(columns=["min", "max"])


def powered_report(runs: pd.DataFrame, plan: dict | None = None, n_boot: int = 10_000, seed: int = 0) -> dict:
    """Everything the plan asks, from one profile's finished rows of one population. Parts without enough runs
    (fewer than MIN_RUNS_TO_JUDGE per arm) are None, so a study under way reports what it can."""
    plan = load_plan() if plan is None else plan
    runs = with_design(runs)
    enough = lambda *xs: all(x.size >= MIN_RUNS_TO_JUDGE for x in xs)  # noqa: E731
    ce, bce = accuracies(runs, "fixed", "ce"), accuracies(runs, "fixed", "bce")
    if not enough(ce, bce):
        raise ValueError(f"The powered analysis needs at least {MIN_RUNS_TO_JUDGE} fixed-design runs per loss; "
                         f"have CE {ce.size}, BCE {bce.size}. Train more seeds (python -m nanogpt study).")
    report = {"alpha": plan["alpha"], "table": design_table(runs).reset_index().to_dict("records"),
              "accuracy": accuracy_claim(ce, bce, plan), "stability": stability_claim(ce, bce, plan, n_boot, seed),
              "ci_by_n": ci_by_n(ce, bce, 1 - plan["alpha"]).to_dict("records")}
    r_ce, r_bce = accuracies(runs, "resplit", "ce"), accuracies(runs, "resplit", "bce")
    report["resplit"] = ({"accuracy": accuracy_claim(r_ce, r_bce, plan),
                          "stability": stability_claim(r_ce, r_bce, plan, n_boot, seed),
                          "paired_by_split": paired_comparison(r_bce, r_ce, 1 - plan["alpha"])}
                         if enough(r_ce, r_bce) else None)
    report["variance_components"] = {
        loss: variance_components(fixed, resplit, n_boot, seed) if enough(fixed, resplit) else None
        for loss, fixed, resplit in (("ce", ce, r_ce), ("bce", bce, r_bce))}
    report["paired"] = {}
    for a, b, question in PAIRS:
        x, y = accuracies(runs, "fixed", a), accuracies(runs, "fixed", b)
        both = x.index.intersection(y.index)
        if both.size < MIN_RUNS_TO_JUDGE:
            report["paired"][f"{a} vs {b}"] = None
            continue
        r, r_lo, r_hi = correlation_ci(x.loc[both], y.loc[both], 1 - plan["alpha"])
        report["paired"][f"{a} vs {b}"] = {**paired_comparison(x, y, 1 - plan["alpha"]), "question": question,
                                           "correlation_ci": [r_lo, r_hi]}
    report["verdict"] = verdict(report)
    return report


# ------------------------------------------------------------------------------------------------- verdict


def _ci(lo: float, hi: float, fmt: str = "+.2f") -> str:
    return f"[{lo:{fmt}}, {hi:{fmt}}]"


def accuracy_sentence(acc: dict, alpha: float) -> str:
    n = f"{acc['n_ce']} CE and {acc['n_bce']} BCE runs"
    ci = f"BCE - CE = {acc['diff']:+.2f} points, {1 - alpha:.0%} CI {_ci(acc['ci_low'], acc['ci_high'])}"
    paper = (f"the paper's {acc['paper_diff']:+.2f} lies "
             + ("inside" if acc["ci_low"] <= acc["paper_diff"] <= acc["ci_high"] else "outside") + " it")
    if acc["decision"] == "difference":
        better = "BCE" if acc["diff"] > 0 else "CE"
        return (f"Accuracy: {better} is more accurate ({ci}, Welch p = {acc['welch_p']:.3g}, {n}); {paper}. "
                + ("The paper's direction holds." if better == "BCE" else "The paper's direction is reversed."))
    if acc["decision"] == "equivalent":
        inside = acc["ci_low"] <= acc["paper_diff"] <= acc["ci_high"]
        return (f"Accuracy: CE and BCE are equivalent within the declared +-{acc['margin']} points ({ci}, TOST p = "
                f"{acc['tost_p']:.3g}, {n}); {paper}, so "
                + ("a gap of the paper's size cannot be ruled out, though none that reaches the margin."
                   if inside else "a BCE advantage as large as the paper's is ruled out as well."))
    more = acc["runs_for_equivalence"]
    return (f"Accuracy: undecided ({ci}, Welch p = {acc['welch_p']:.2f}, TOST p = {acc['tost_p']:.2f} against "
            f"+-{acc['margin']} points, {n}); "
            + (f"about {more} runs per loss would show equivalence with 80% power if the true gap is the one seen."
               if more else "the gap seen is at or beyond the margin, so more runs would rather detect it."))


def stability_sentence(st: dict, n_ce: int, n_bce: int) -> str:
    ci = f"sd BCE/CE = {st['sd_ratio']:.2f}, 95% CI {_ci(st['sd_ratio_ci_low'], st['sd_ratio_ci_high'], '.2f')}"
    exp_ce, exp_bce = st["sd_b"] * d2(n_ce), st["sd_a"] * d2(n_bce)  # compare_spread(bce, ce): a is BCE, b is CE
    ranges = (f"max-min: CE {st['observed_range']['ce']:.2f} points over {n_ce} runs (expected from its sd: "
              f"{exp_ce:.2f}), BCE {st['observed_range']['bce']:.2f} over {n_bce} (expected {exp_bce:.2f})")
    paper = (f"the paper's ratio {st['paper_ratio']:.2f} (max-min {1.04} against {2.36}) is "
             + ("inside" if st["paper_ratio_in_ci"] else "outside") + " the CI")
    head = {"difference": ("Stability: " + ("BCE" if st["sd_ratio"] < 1 else "CE") + " varies less"),
            "equivalent": f"Stability: CE and BCE vary equally within the declared band {st['band']}",
            "undecided": "Stability: undecided"}[st["decision"]]
    more = ""
    if st["decision"] == "undecided":
        need = st["runs_to_decide"]
        parts = ([f"about {need['to_detect']} runs per loss would detect a ratio of {st['sd_ratio']:.2f} (80% power)"]
                 if need["to_detect"] else [])
        parts += ([f"about {need['for_equivalence']} would show it inside the band"] if need["for_equivalence"] else
                  ["no number of runs would show it inside the band, as it lies at or beyond an edge"])
        more = " To decide: " + ", and ".join(parts) + "."
    return f"{head} ({ci}, Brown-Forsythe p = {st['brown_forsythe_p']:.2g}); {paper}; {ranges}.{more}"


def verdict(report: dict) -> list[str]:
    """Plain sentences, one per question the plan asks, generated from `report`."""
    acc, st = report["accuracy"], report["stability"]
    lines = [accuracy_sentence(acc, report["alpha"]), stability_sentence(st, acc["n_ce"], acc["n_bce"])]
    vc = report["variance_components"]
    if all(vc.values()):
        parts = [f"{loss.upper()} sd {v['sd_fixed']:.2f} -> {v['sd_resplit']:.2f} points, the split's share of the "
                 f"variance {v['split_share']:.0%} (var difference CI {_ci(*v['var_split_ci'])})"
                 for loss, v in vc.items()]
        lines.append("Sources of variance: re-splitting for every run (" + "; ".join(parts) + ").")
    if report["resplit"]:
        r = report["resplit"]
        p, st = r["paired_by_split"], r["stability"]
        lines.append(f"Split-varied design ({r['accuracy']['n_ce']} CE and {r['accuracy']['n_bce']} BCE runs; CE and "
                     f"BCE of one seed share its split, so they pair): BCE - CE = {p['mean_diff']:+.2f} points, paired "
                     f"95% CI {_ci(*p['paired_ci'])} (unpaired {_ci(*p['unpaired_ci'])}, r = {p['correlation']:.2f}); "
                     f"sd ratio {st['sd_ratio']:.2f}, 95% CI {_ci(st['sd_ratio_ci_low'], st['sd_ratio_ci_high'], '.2f')}.")
    pairing = report["paired"].get(f"{CE_PAIRED} vs bce")
    if pairing:
        kept = pairing["ci_width_ratio"] < 0.9
        lines.append(f"Paired design: CE started as the BCE function of the same seed correlates with that BCE run "
                     f"at r = {pairing['correlation']:.2f} (95% CI {_ci(*pairing['correlation_ci'])}, "
                     f"{pairing['n_pairs']} pairs); the paired CI is {pairing['ci_width_ratio']:.2f} times the "
                     "unpaired one's width, so pairing " + ("narrows the CI and is kept." if kept else
                                                             "does not narrow it: the fixed design stays the test."))
    third = report["paired"].get(f"{CE_PAIRED} vs {BCE_HEAD2X}")
    if third and pairing:
        holds = third["correlation"] >= 0.9 and third["paired_ci"][0] <= 0 <= third["paired_ci"][1]
        closer = third["correlation_ci"][0] > pairing["correlation_ci"][1]
        outcome = ("holds" if holds else "holds in part: the runs are clearly closer than CE and BCE, but far from "
                   "identical" if closer else "does not hold: the runs are not measurably closer than CE and BCE")
        lines.append(f"Third arm (BCE with CE's head step: head lr x2, head decay x0.5): r = {third['correlation']:.2f} "
                     f"with paired CE (95% CI {_ci(*third['correlation_ci'])}), mean |difference| "
                     f"{third['mean_abs_diff']:.2f} points against {pairing['mean_abs_diff']:.2f} for plain BCE; "
                     f"mean difference {third['mean_diff']:+.2f} (95% CI {_ci(*third['paired_ci'])}). The prediction "
                     f"(per-seed agreement near r = 1) {outcome}.")
    return lines
