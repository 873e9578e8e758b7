"""The powered study's report: designs read from the rows, the CI as runs accumulate, the verdict's decisions."""
import math

import numpy as np
import pandas as pd
import pytest

from nanogpt.data.imdb import DEFAULT_SPLIT_SEED, RESPLIT_OFFSET
from nanogpt.study import powered as W
from nanogpt.study.analysis import load_plan, welch_ci


def rows(arm, loss, accs, design="fixed", seeds=None):
    seeds = range(len(accs)) if seeds is None else seeds
    split = (lambda s: DEFAULT_SPLIT_SEED) if design == "fixed" else (lambda s: RESPLIT_OFFSET + s)
    return pd.DataFrame({"run_id": [f"{arm}-{design}-{s}" for s in seeds], "arm": arm, "loss": loss,
                         "seed": list(seeds), "split_seed": [split(s) for s in seeds],
                         "val_accuracy": np.asarray(accs) / 100})


def study(rng, n=60, shift=0.0, sd_bce=0.5, n_resplit=10, paired=None):
    parts = [rows("ce", "ce", rng.normal(86, 0.5, n)), rows("bce", "bce", rng.normal(86 + shift, sd_bce, n)),
             rows("ce", "ce", rng.normal(85.5, 0.9, n_resplit), "resplit"),
             rows("bce", "bce", rng.normal(85.5, 0.9, n_resplit), "resplit")]
    return pd.concat(parts + (paired or []), ignore_index=True)


def test_designs_and_arms_are_read_from_the_rows():
    runs = pd.concat([rows("ce", "ce", [86, 85]), rows("bce", "bce", [85, 86], "resplit", seeds=[3, 4]),
                      rows("ce-paired", "ce", [86]).assign(split_seed=777)], ignore_index=True)
    runs.loc[0, "arm"] = None  # a row from before arms existed counts as its loss
    labelled = W.with_design(runs)
    assert labelled["design"].tolist() == ["fixed", "fixed", "resplit", "resplit", "other"]
    assert labelled["arm"].tolist()[:2] == ["ce", "ce"]
    assert W.accuracies(labelled, "resplit", "bce").to_dict() == pytest.approx({3: 85.0, 4: 86.0})


def test_ci_by_n_narrows_and_ends_at_the_full_welch_ci():
    rng = np.random.default_rng(0)
    ce = pd.Series(rng.normal(86, 0.6, 40))
    bce = pd.Series(rng.normal(86, 0.6, 40))
    path = W.ci_by_n(ce, bce)
    assert path["n"].tolist() == list(range(5, 41))
    assert tuple(path.iloc[-1][["diff", "ci_low", "ci_high"]]) == pytest.approx(welch_ci(bce, ce))
    width = path["ci_high"] - path["ci_low"]
    assert width.iloc[-1] < 0.5 * width.iloc[0]  # sqrt(5/40) ~ 0.35 of the first width, in expectation


def test_correlation_ci_is_fishers_z():
    rng = np.random.default_rng(1)
    x = rng.normal(size=50)
    y = 0.6 * x + rng.normal(size=50)
    r, lo, hi = W.correlation_ci(x, y)
    z, half = math.atanh(r), 1.959964 / math.sqrt(50 - 3)
    assert (lo, hi) == pytest.approx((math.tanh(z - half), math.tanh(z + half)), abs=1e-5)


def test_report_finds_equivalence_and_a_difference():
    plan = load_plan()
    same = W.powered_report(study(np.random.default_rng(2), n=200), plan, n_boot=500)
    assert same["accuracy"]["decision"] == "equivalent"
    assert same["verdict"][0].startswith("Accuracy: CE and BCE are equivalent within the declared +-0.5")
    apart = W.powered_report(study(np.random.default_rng(3), shift=1.0), plan, n_boot=500)
    assert apart["accuracy"]["decision"] == "difference" and apart["verdict"][0].startswith("Accuracy: BCE is more")
    calm = W.powered_report(study(np.random.default_rng(4), n=150, sd_bce=0.2), plan, n_boot=500)
    assert calm["stability"]["decision"] == "difference" and calm["verdict"][1].startswith("Stability: BCE varies less")


def test_report_pairs_resplit_runs_by_their_shared_split():
    rng = np.random.default_rng(5)
    split_effect = rng.normal(0, 1.0, 12)  # each seed's split: both losses score it alike
    runs = study(rng, n_resplit=0)
    runs = pd.concat([runs, rows("ce", "ce", 85.5 + split_effect + rng.normal(0, 0.2, 12), "resplit"),
                      rows("bce", "bce", 85.5 + split_effect + rng.normal(0, 0.2, 12), "resplit")], ignore_index=True)
    report = W.powered_report(runs, n_boot=500)
    pairing = report["resplit"]["paired_by_split"]
    assert pairing["correlation"] > 0.8 and pairing["ci_width_ratio"] < 0.5
    vc = report["variance_components"]["ce"]
    assert vc["sd_resplit"] > vc["sd_fixed"] and vc["split_share"] > 0.5
    assert any(line.startswith("Sources of variance") for line in report["verdict"])


def test_report_says_whether_pairing_helps_and_whether_the_third_arm_behaves_like_ce():
    rng = np.random.default_rng(6)
    n = 30
    bce = rng.normal(86, 0.5, n)
    ce_paired = rng.normal(86, 0.5, n)  # pairing gives no correlation with BCE ...
    head2x = ce_paired + rng.normal(0, 0.05, n)  # ... but the third arm tracks paired CE seed by seed
    runs = study(rng, n=n, paired=[rows("ce-paired", "ce", ce_paired), rows(W.BCE_HEAD2X, "bce", head2x)])
    runs.loc[(runs["arm"] == "bce") & (runs["split_seed"] == DEFAULT_SPLIT_SEED), "val_accuracy"] = bce / 100
    report = W.powered_report(runs, n_boot=500)
    text = "\n".join(report["verdict"])
    assert "pairing does not narrow it" in text and "prediction (per-seed agreement near r = 1) holds." in text
    assert report["paired"][f"{W.CE_PAIRED} vs {W.BCE_HEAD2X}"]["correlation"] > 0.95


def test_report_needs_enough_fixed_runs_and_skips_missing_designs():
    runs = pd.concat([rows("ce", "ce", [86, 85, 86]), rows("bce", "bce", [86, 85, 86])], ignore_index=True)
    with pytest.raises(ValueError, match="at least 5 fixed-design runs per loss; have CE 3, BCE 3"):
        W.powered_report(runs)
    rng = np.random.default_rng(7)
    only_fixed = study(rng, n=8, n_resplit=0)
    report = W.powered_report(only_fixed, n_boot=200)
    assert report["resplit"] is None and report["variance_components"] == {"ce": None, "bce": None}
    assert all(v is None for v in report["paired"].values()) and len(report["verdict"]) == 2
