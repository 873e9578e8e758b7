"""The stability study of `results/analysis-plan-2.json`: prediction churn per arm and between arms, per review,
the seed ensemble, how surprising the paper's max-min observation is, and stage 2's decision, drawn on the
replication sample alone, with the pilot and the processor as secondary strata. Numbers from `nanogpt.study.churn`;
this module chooses the rows, applies the plan, and words the verdict."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from nanogpt.core.resources import REPO_ROOT
from nanogpt.data.imdb import DEFAULT_SPLIT_SEED
from nanogpt.run.predictions import available_val_predictions
from nanogpt.run.results import describe_processor, processor_key
from nanogpt.study import churn as C
from nanogpt.study.analysis import accuracy_claim, load_plan, stability_claim, welch_ci
from nanogpt.study.stats import compare_spread

PLAN2_PATH = REPO_ROOT / "results" / "analysis-plan-2.json"
PILOT_SEEDS, REPLICATION_SEEDS = range(0, 100), range(100, 200)
TFIDF_ACCURACY = 90.74  # results/baseline-tfidf-*.json on the fixed split, for the ensemble figure's reference


def plan_samples(rows: pd.DataFrame, profile: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(plan 1's rows, the replication's rows) of a profile's runs: for `fast`, the fixed design's seeds 100-199
    are plan 2's replication sample and stay out of plan 1's analysis (which was planned on seeds 0-99, and is
    not re-drawn on a larger sample after the fact); for other profiles nothing is set apart."""
    if profile != "fast" or rows.empty:
        return rows, rows.iloc[:0]
    arm = rows["arm"].fillna(rows["loss"]) if "arm" in rows.columns else rows["loss"]
    second = (rows["split_seed"] == DEFAULT_SPLIT_SEED) & (arm == rows["loss"]) & rows["seed"].isin(list(REPLICATION_SEEDS))
    return rows[~second].reset_index(drop=True), rows[second].reset_index(drop=True)


def load_plan2(path: str | Path = PLAN2_PATH) -> dict:
    return json.loads(Path(path).read_text())


def matched(rows: pd.DataFrame, seeds=None) -> pd.DataFrame:
    """Of fixed-design rows (results.fixed_design), the CE and BCE rows of the seeds both arms have (within
    `seeds` if given), by seed."""
    if seeds is not None:
        rows = rows[rows["seed"].isin(list(seeds))]
    both = set(rows.loc[rows["loss"] == "ce", "seed"]) & set(rows.loc[rows["loss"] == "bce", "seed"])
    return rows[rows["seed"].isin(both)].sort_values(["loss", "seed"]).reset_index(drop=True)


def labels_of(rows: pd.DataFrame, predictions: dict, loss: str):
    ids = rows.loc[rows["loss"] == loss].sort_values("seed")["run_id"].astype(str)
    return C.label_matrix(predictions, ids)


def churn_section(rows: pd.DataFrame, predictions: dict, n_boot: int = 10_000, seed: int = 0,
                  n_perm: int = 2_000) -> dict:
    """Churn of CE and of BCE, their ratio BCE/CE, between-arm churn and the energy distance, on `rows` (CE and
    BCE runs of the same seeds, every one with predictions)."""
    ce, _, _ = labels_of(rows, predictions, "ce")
    bce, _, _ = labels_of(rows, predictions, "bce")
    out = C.compare_churn(ce, bce, n_boot, seed=seed, n_perm=n_perm)
    return {"n_ce": out.pop("n_a"), "n_bce": out.pop("n_b"), "churn_ce": out.pop("churn_a"),
            "churn_bce": out.pop("churn_b"), "churn_ce_ci": out.pop("churn_a_ci"),
            "churn_bce_ci": out.pop("churn_b_ci"), **out}


def describe_sample(rows: pd.DataFrame) -> dict:
    seeds = [int(rows["seed"].min()), int(rows["seed"].max())] if len(rows) else []
    return {"seeds": seeds, "per_loss": int(len(rows) // 2), "processors": processor_strata(rows)}


def processor_strata(rows: pd.DataFrame) -> list[dict]:
    """Which processors the rows came from, with how many runs of each loss."""
    keys = [processor_key(r) for _, r in rows.iterrows()]
    table = rows.assign(processor=[describe_processor(k) for k in keys]).groupby(["processor", "loss"]).size()
    return [{"processor": p, "loss": loss, "runs": int(n)} for (p, loss), n in table.items()]


def sample_shift(pilot: pd.DataFrame, replication: pd.DataFrame, predictions: dict, n_boot: int, seed: int,
                 n_perm: int) -> dict:
    """Per loss, replication minus pilot: mean accuracy (Welch CI), sd ratio (bootstrap CI), churn ratio (CI) and
    the energy distance between the two samples' runs (permutation p). With the two samples on two processors,
    this is the test of whether the processor moves mean, spread or churn."""
    out = {}
    for loss in ("ce", "bce"):
        a = pilot.loc[pilot["loss"] == loss, "val_accuracy"].to_numpy() * 100
        b = replication.loc[replication["loss"] == loss, "val_accuracy"].to_numpy() * 100
        diff, lo, hi = welch_ci(b, a)
        spread = compare_spread(b, a, n_boot=n_boot, seed=seed)
        la, _, _ = labels_of(pilot, predictions, loss)
        lb, _, _ = labels_of(replication, predictions, loss)
        churn = C.compare_churn(la, lb, n_boot, seed=seed, n_perm=n_perm)
        out[loss] = {"mean_diff": diff, "mean_diff_ci": [lo, hi], "sd_ratio": spread["sd_ratio"],
                     "sd_ratio_ci": [spread["sd_ratio_ci_low"], spread["sd_ratio_ci_high"]],
                     "churn_ratio": churn["ratio"], "churn_ratio_ci": churn["ratio_ci"],
                     "energy_distance": churn["energy_distance"], "energy_ci": churn["energy_ci"],
                     "energy_permutation_p": churn["energy_permutation_p"],
                     "shifts": bool(lo > 0 or hi < 0 or spread["sd_ratio_ci_low"] > 1 or spread["sd_ratio_ci_high"] < 1
                                    or churn["ratio_ci"][0] > 1 or churn["ratio_ci"][1] < 1
                                    or churn["energy_permutation_p"] < 0.05)}
    return out


def review_section(rows: pd.DataFrame, predictions: dict, lengths: np.ndarray | None, seed: int = 0,
                   flips: int = 4) -> dict:
    """Per review and per arm: where the flips sit (by the ensemble's confidence, by length), and the seed
    ensemble's accuracy against k; and the `flipping` reviews both arms split on most evenly."""
    out = {"by_confidence": {}, "by_length": {}, "ensemble": {}, "p_correct": {}}
    positive = {}
    for loss in ("ce", "bce"):
        labels, probs, truth = labels_of(rows, predictions, loss)
        positive[loss] = labels.mean(0)
        rev = C.per_review(labels, truth)
        confidence = np.abs(probs.mean(0) - 0.5)
        out["by_confidence"][loss] = C.churn_by(rev["flip"].to_numpy(), confidence, [0, 0.1, 0.2, 0.3, 0.4, 0.5],
                                                ["0-0.1", "0.1-0.2", "0.2-0.3", "0.3-0.4", "0.4-0.5"]) \
            .astype({"bin": str}).to_dict("records")
        if lengths is not None:
            out["by_length"][loss] = C.churn_by(rev["flip"].to_numpy(), lengths, 5).astype({"bin": str}) \
                .to_dict("records")
        out["ensemble"][loss] = C.ensemble_curve(probs, truth, seed=seed).to_dict("records")
        out["p_correct"][loss] = {"always_right": float((rev["p_correct"] == 1).mean()),
                                  "always_wrong": float((rev["p_correct"] == 0).mean()),
                                  "flips_at_all": float((rev["flip"] > 0).mean())}
    split = np.abs((positive["ce"] + positive["bce"]) / 2 - 0.5)
    out["flipping"] = [{"review": int(i), "ce_positive": float(positive["ce"][i]),
                        "bce_positive": float(positive["bce"][i])} for i in np.argsort(split, kind="stable")[:flips]]
    return out


def stability_report(runs: pd.DataFrame, results_dir: str | Path, plan: dict | None = None,
                     lengths: np.ndarray | None = None, n_boot: int = 10_000, seed: int = 0,
                     n_perm: int = 2_000, planned: bool = True) -> dict:
    """Plan 2 on one population's fixed-design rows of its profile (`fast`, cpu/fp32): the primary statistic on
    the replication sample (seeds 100-199) and every secondary one. Parts without runs are None. With
    `planned=False` (another profile, which no plan covers) only the churn of all its runs, per review, the
    ensemble and the resampled paper's observation: numbers, not a decision."""
    plan = load_plan2() if plan is None else plan
    plan1 = load_plan()
    predictions, missing = available_val_predictions(results_dir, runs)
    have = runs[runs["run_id"].astype(str).isin(predictions)]
    pilot, replication, every = matched(have, PILOT_SEEDS), matched(have, REPLICATION_SEEDS), matched(have)
    report = {"plan": "results/analysis-plan-2.json", "runs_without_predictions": missing,
              "samples": {name: describe_sample(s) for name, s in
                          (("pilot", pilot), ("replication", replication), ("all", every))}}
    band = tuple(plan["primary"]["equivalence_band"])
    report["all_runs"] = churn_section(every, predictions, n_boot, seed, n_perm) if len(every) >= 6 else None
    if not planned:
        pilot = replication = every.iloc[:0]
    if len(replication) >= 2 * 5:
        primary = churn_section(replication, predictions, n_boot, seed, n_perm)
        rule = C.band_decision(primary["ratio"], primary["ratio_ci"], band, primary["n_ce"])
        report["primary"] = {**primary, **rule, "band": list(band)}
        acc = lambda s, loss: s.loc[s["loss"] == loss, "val_accuracy"].to_numpy() * 100  # noqa: E731
        report["replication_accuracy"] = accuracy_claim(acc(replication, "ce"), acc(replication, "bce"), plan1)
        report["sd_ratio"] = {name: stability_claim(acc(s, "ce"), acc(s, "bce"), plan1, n_boot, seed)
                              for name, s in (("replication", replication), ("all", every))}
        report["processor"] = (sample_shift(pilot, replication, predictions, n_boot, seed, n_perm)
                               if len(pilot) >= 10 else None)
    else:
        report["primary"] = None
    main = replication if report["primary"] else every
    report["pilot"] = churn_section(pilot, predictions, n_boot, seed, n_perm) if len(pilot) >= 10 else None
    report["reviews"] = review_section(main, predictions, lengths, seed) if len(main) >= 4 else None
    report["paper_observation"] = C.paper_observation(
        every.loc[every["loss"] == "ce", "val_accuracy"].to_numpy() * 100,
        every.loc[every["loss"] == "bce", "val_accuracy"].to_numpy() * 100, seed=seed).to_dict("records")
    report["verdict"] = stability_verdict(report)
    return report


def churn_sentence(c: dict, what: str) -> str:
    return (f"{what}: two CE runs disagree on {100 * c['churn_ce']:.2f}% of validation reviews (95% CI "
            f"{100 * c['churn_ce_ci'][0]:.2f}-{100 * c['churn_ce_ci'][1]:.2f}), two BCE runs on "
            f"{100 * c['churn_bce']:.2f}% ({100 * c['churn_bce_ci'][0]:.2f}-{100 * c['churn_bce_ci'][1]:.2f}); churn "
            f"ratio BCE/CE {c['ratio']:.3f}, 95% CI [{c['ratio_ci'][0]:.3f}, {c['ratio_ci'][1]:.3f}] "
            f"({c['n_ce']} + {c['n_bce']} runs); a CE run against a BCE run: {100 * c['between']:.2f}% (energy "
            f"distance {100 * c['energy_distance']:+.3f} points, permutation p = {c['energy_permutation_p']:.2g})")


def stability_verdict(report: dict) -> list[str]:
    """Plain sentences: plan 2's decision first, then the pilot, the processor test and the paper's observation."""
    lines = []
    p = report["primary"]
    if p:
        band = f"[{p['band'][0]:.2f}, {p['band'][1]:.2f}]"
        head = {"equivalent": f"Stability (plan 2, prediction churn): CE and BCE are equally stable within the "
                              f"declared band {band}; the paper's 'BCE is more stable' does not hold",
                "b less": "Stability (plan 2, prediction churn): BCE is more stable (its runs disagree less)",
                "b more": "Stability (plan 2, prediction churn): CE is more stable (BCE's runs disagree more)",
                "undecided": "Stability (plan 2, prediction churn): undecided"}[p["decision"]]
        more = (f" About {p['runs_to_decide']} runs per loss would decide it." if p["decision"] == "undecided"
                and p["runs_to_decide"] else "")
        planned = len(REPLICATION_SEEDS)
        if min(p["n_ce"], p["n_bce"]) < planned:  # the plan decides on the whole sample, not on the way there
            head = (f"Stability (plan 2, prediction churn), interim at {min(p['n_ce'], p['n_bce'])} of {planned} "
                    f"seeds per loss; the plan decides on all {planned}: so far "
                    + head.split(": ", 1)[1])
        lines.append(f"{head}. {churn_sentence(p, 'Replication sample')}.{more}")
        sd = report["sd_ratio"]["replication"]
        lines.append(f"Accuracy sd on the replication sample (plan 1's statistic, secondary): sd BCE/CE "
                     f"{sd['sd_ratio']:.2f}, 95% CI [{sd['sd_ratio_ci_low']:.2f}, {sd['sd_ratio_ci_high']:.2f}] "
                     f"({sd['decision']}); on all runs {report['sd_ratio']['all']['sd_ratio']:.2f} "
                     f"[{report['sd_ratio']['all']['sd_ratio_ci_low']:.2f}, "
                     f"{report['sd_ratio']['all']['sd_ratio_ci_high']:.2f}].")
    if report["pilot"]:
        lines.append(churn_sentence(report["pilot"], "Pilot (seeds 0-99, post hoc)") + ".")
    if report["all_runs"] and not p:  # beside a decision, the pooled churn is in the report, not the verdict
        lines.append(churn_sentence(report["all_runs"], "Churn (all runs; no plan decides it for this profile)")
                     + ".")
    shift = report.get("processor")
    if shift:
        procs = {name: sorted({s["processor"] for s in report["samples"][name]["processors"]})
                 for name in ("pilot", "replication")}
        parts = [f"{loss.upper()}: mean {v['mean_diff']:+.2f} points [{v['mean_diff_ci'][0]:+.2f}, "
                 f"{v['mean_diff_ci'][1]:+.2f}], sd x{v['sd_ratio']:.2f} [{v['sd_ratio_ci'][0]:.2f}, "
                 f"{v['sd_ratio_ci'][1]:.2f}], churn x{v['churn_ratio']:.3f} [{v['churn_ratio_ci'][0]:.3f}, "
                 f"{v['churn_ratio_ci'][1]:.3f}], energy p = {v['energy_permutation_p']:.2g}"
                 for loss, v in shift.items()]
        moved = [loss.upper() for loss, v in shift.items() if v["shifts"]]
        lines.append(f"Processor (replication on {'; '.join(procs['replication'])} minus pilot on "
                     f"{'; '.join(procs['pilot'])}): " + "; ".join(parts) + ". "
                     + (f"The processor shifts {' and '.join(moved)}: pooled numbers carry that caveat."
                        if moved else "No shift detected: the processor acts as one more random factor here."))
    obs = pd.DataFrame(report["paper_observation"])
    if len(obs):
        at = obs.set_index("n")
        seen = "; ".join(f"{n} runs per loss: {100 * at.loc[n, 'both_as_paper']:.1f}% and "
                         f"{100 * at.loc[n, 'ratio_at_most_paper']:.1f}%" for n in (5, 10, 20) if n in at.index)
        lines.append("The paper's observation, resampled from these runs (how often a study sees BCE's max-min <= "
                     "1.04 with CE's >= 2.36 points, and how often a max-min ratio <= 0.44, when CE and BCE are as "
                     f"alike as measured here): {seen}.")
    return lines


def validation_reviews(profile: str = "fast") -> pd.DataFrame:
    """The validation reviews a profile's fixed-design runs were scored on, in the order of their predictions:
    text, label and GPT-2 token count (before truncation), for the flips by length and the reviews shown."""
    from nanogpt.data.imdb import load_imdb, load_splits
    from nanogpt.run.profiles import get_profile

    cfg = get_profile(profile).make_config()
    _, val = load_splits(cfg)
    texts = load_imdb(cfg.source, cfg.split_seed, cfg.val_fraction)["validation"]
    n = len(val)
    frame = pd.DataFrame({"text": texts["text"][:n], "label": texts["label"][:n], "tokens": val.full_lengths})
    if not np.array_equal(frame["label"].to_numpy(), val.labels):
        raise ValueError(f"the validation texts of profile {profile!r} are not in the order of its token splits")
    return frame


def flipping_reviews(report: dict, reviews: pd.DataFrame) -> pd.DataFrame:
    """The reviews of the report's `flipping` list (validation_reviews' rows), with the share of each arm's runs
    that call them positive: what a retrained model changes its mind about."""
    flips = pd.DataFrame(report["reviews"]["flipping"]).set_index("review")
    chosen = reviews.iloc[flips.index].join(flips)
    return chosen.assign(text=chosen["text"].str.slice(0, 300) + "...")
