"""Prediction churn (nanogpt.study.churn): checked against brute force, and its CI against a simulation whose true
churn is known."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from nanogpt.study import churn as C


def brute_churn(labels) -> float:
    pairs = list(itertools.combinations(range(len(labels)), 2))
    return float(np.mean([np.mean(labels[i] != labels[j]) for i, j in pairs]))


def test_churn_equals_the_mean_over_pairs_of_distinct_runs():
    rng = np.random.default_rng(1)
    labels = (rng.random((7, 50)) < rng.random(50)).astype(np.float32)
    d = C.pair_matrix(labels)
    assert C.within(d) == pytest.approx(brute_churn(labels))
    counts = np.array([[2, 0, 1, 0, 3, 1, 0]], float)  # a resample: run 0 twice, run 4 three times, ...
    copies = np.repeat(np.arange(7), counts[0].astype(int))
    pairs = [(a, b) for a, b in itertools.combinations(copies, 2) if a != b]  # never a run with its own copy
    expected = np.mean([np.mean(labels[a] != labels[b]) for a, b in pairs])
    assert C.within(d, counts)[0] == pytest.approx(expected)
    other = (rng.random((4, 50)) < 0.5).astype(np.float32)
    assert C.between(C.pair_matrix(labels, other)) == pytest.approx(
        np.mean([np.mean(labels[i] != other[j]) for i in range(7) for j in range(4)]))


def simulated_runs(mu, n, shift_sd, noise_sd, rng):
    """n runs labelling reviews of margin mu: a run-level shift (shared by all its answers, so pairs that share a
    run are correlated, as real runs are) plus review-level noise; positive where the sum is > 0."""
    shift = rng.normal(0, shift_sd, (n, 1))
    return (mu + shift + rng.normal(0, noise_sd, (n, len(mu))) > 0).astype(np.float32)


def true_churn(mu, shift_sd, noise_sd) -> float:
    """Two independent runs disagree on review r with probability 2 P_r (1 - P_r), P_r = Phi(mu_r / total sd)."""
    p = norm.cdf(mu / np.hypot(shift_sd, noise_sd))
    return float(np.mean(2 * p * (1 - p)))


def test_the_churn_ci_covers_the_true_churn_95_percent_of_the_time():
    """300 simulated studies of 20 runs on one fixed set of 300 reviews (the study's estimand is churn on its
    validation set): the 95% CI of one arm, and of the ratio of two arms with different noise, must cover the
    truth in 90-99% of them. A CI that paired a run with its own copy (counted as agreement) would not."""
    rng = np.random.default_rng(0)
    mu = rng.normal(1.0, 1.2, 300)
    arms = {"a": (0.3, 0.5), "b": (0.3, 0.7)}
    truth = {k: true_churn(mu, *v) for k, v in arms.items()}
    covered = {"a": 0, "ratio": 0, "naive": 0}
    studies = 300
    for s in range(studies):
        a = simulated_runs(mu, 20, *arms["a"], rng)
        b = simulated_runs(mu, 20, *arms["b"], rng)
        one = C.churn_ci(a, n_boot=1000, seed=s)
        covered["a"] += one["ci_low"] <= truth["a"] <= one["ci_high"]
        both = C.compare_churn(a, b, n_boot=1000, seed=s, n_perm=1)
        lo, hi = both["ratio_ci"]
        covered["ratio"] += lo <= truth["b"] / truth["a"] <= hi
        w = C.draw_counts(20, 1000, np.random.default_rng(s))
        d = C.pair_matrix(a)
        naive = np.einsum("bi,ij,bj->b", w, d, w) / (w.sum(1) * (w.sum(1) - 1))  # self-copies as agreeing pairs
        lo, hi = np.percentile(naive, [2.5, 97.5])
        covered["naive"] += lo <= truth["a"] <= hi
    coverage = {k: v / studies for k, v in covered.items()}
    assert 0.90 <= coverage["a"] <= 0.99, coverage
    assert 0.90 <= coverage["ratio"] <= 0.99, coverage
    assert coverage["naive"] < 0.85, coverage


def test_energy_distance_sees_two_distributions_of_functions_and_not_one():
    rng = np.random.default_rng(3)
    mu = rng.normal(1.0, 1.2, 400)
    same = C.compare_churn(simulated_runs(mu, 15, 0.3, 0.5, rng), simulated_runs(mu, 15, 0.3, 0.5, rng),
                           n_boot=500, n_perm=500)
    moved = C.compare_churn(simulated_runs(mu, 15, 0.3, 0.5, rng),
                            simulated_runs(mu + rng.normal(0, 0.4, 400), 15, 0.3, 0.5, rng), n_boot=500, n_perm=500)
    assert same["energy_permutation_p"] > 0.05 and same["energy_ci"][0] <= 0 <= same["energy_ci"][1] + 1e-3
    assert moved["energy_permutation_p"] < 0.01 and moved["energy_distance"] > 0 and moved["energy_ci"][0] > 0
    assert moved["between"] > (moved["churn_a"] + moved["churn_b"]) / 2


def test_the_plans_decision_rule():
    band = (0.9, 1 / 0.9)
    assert C.band_decision(1.01, (0.97, 1.05), band, 100)["decision"] == "equivalent"
    assert C.band_decision(0.95, (0.92, 0.98), band, 100)["decision"] == "equivalent"  # below 1 but inside
    assert C.band_decision(0.6, (0.5, 0.7), band, 100)["decision"] == "b less"
    assert C.band_decision(1.3, (1.2, 1.4), band, 100)["decision"] == "b more"
    undecided = C.band_decision(1.0, (0.8, 1.25), band, 100)
    assert undecided["decision"] == "undecided"
    # log half-width log(1.25/0.8)/2 = 0.223 must shrink to log(1/0.9) = 0.105: (0.223/0.105)^2 = 4.5x the runs
    assert undecided["runs_to_decide"] == pytest.approx(450, abs=3)
    assert C.band_decision(0.85, (0.5, 1.3), band, 100)["runs_to_decide"] is None  # the ratio is outside the band


def test_per_review_flips_ensembles_and_the_paper_observation():
    labels = np.array([[1, 0, 1, 1], [1, 1, 0, 1], [1, 0, 0, 1]], np.float32)
    truth = np.array([1, 0, 1, 0])
    rev = C.per_review(labels, truth)
    assert rev["p_correct"].tolist() == pytest.approx([1, 2 / 3, 1 / 3, 0])
    assert rev["flip"].tolist() == pytest.approx([0, 2 / 3, 2 / 3, 0])  # 1 of 3 says positive: 2 of 3 pairs
    assert rev["flip"].mean() == pytest.approx(brute_churn(labels))
    by = C.churn_by(rev["flip"].to_numpy(), np.array([10, 20, 30, 40]), 2)
    assert by["share_of_flips"].sum() == pytest.approx(1) and by["churn"].tolist() == pytest.approx([1 / 3, 1 / 3])
    rng = np.random.default_rng(0)
    probs = rng.random((9, 200))
    y = (rng.random(200) < 0.5).astype(int)
    curve = C.ensemble_curve(probs, y, orders=5)
    full = float(((probs.mean(0) > 0.5) == y).mean())
    assert curve["k"].tolist() == list(range(1, 10)) and curve.iloc[-1][["accuracy", "min", "max"]].tolist() == \
        pytest.approx([full] * 3)  # every order ends at the whole ensemble
    seen = C.paper_observation(np.array([85.0, 86.5, 87.4]), np.array([86.0, 86.5, 87.0]), ns=[3], draws=50)
    assert seen.iloc[0][["both_as_paper", "ratio_at_most_paper"]].tolist() == [1.0, 1.0]
    never = C.paper_observation(np.array([86.0, 86.5, 87.0]), np.array([85.0, 86.5, 88.0]), ns=[3], draws=50)
    assert never.iloc[0][["both_as_paper", "ratio_at_most_paper"]].tolist() == [0.0, 0.0]


def test_runs_scored_on_other_reviews_are_refused():
    a = pd.DataFrame({"label": [0, 1], "positive_probability": [0.2, 0.9]})
    b = pd.DataFrame({"label": [1, 1], "positive_probability": [0.2, 0.9]})
    with pytest.raises(ValueError, match="other reviews"):
        C.label_matrix({"a": a, "b": b}, ["a", "b"])


def test_plan2_report_decides_on_the_replication_sample_alone(tmp_path):
    """Synthetic pilot (seeds 0-9, no processor recorded) and replication (seeds 100-109, one processor): the
    primary statistic is computed from the replication's runs only, the pilot and the processor test beside it,
    and the verdict names the decision."""
    from nanogpt.run.predictions import archive_val_predictions
    from nanogpt.study.stability import stability_report

    rng = np.random.default_rng(5)
    mu = rng.normal(1.0, 1.2, 300)
    truth = (mu > 0).astype(int)
    rows, preds = [], {}
    for loss, noise in (("ce", 0.5), ("bce", 0.5)):
        for seed in list(range(10)) + list(range(100, 110)):
            rid = f"fast-{loss}-seed{seed}"
            p = norm.cdf(mu + rng.normal(0, 0.3) + rng.normal(0, noise, 300)).astype(np.float16).astype(float)
            preds[rid] = pd.DataFrame({"label": truth, "positive_probability": p})
            rows.append({"run_id": rid, "loss": loss, "arm": loss, "seed": seed, "status": "ok",
                         "val_accuracy": float(((p > 0.5) == truth).mean()),
                         "processor": "AMD EPYC" if seed >= 100 else float("nan"),
                         "isa": "avx2 avx512f; torch AVX512" if seed >= 100 else float("nan")})
    archive_val_predictions(tmp_path, "fast", preds)
    runs = pd.DataFrame(rows)
    plan = {"primary": {"equivalence_band": [0.9, 1 / 0.9]}}
    report = stability_report(runs, tmp_path, plan, lengths=rng.integers(10, 500, 300), n_boot=300, n_perm=50)
    primary = report["primary"]
    assert primary["n_ce"] == primary["n_bce"] == 10
    labels = {loss: np.stack([(preds[f"fast-{loss}-seed{s}"]["positive_probability"] > 0.5).to_numpy(np.float32)
                              for s in range(100, 110)]) for loss in ("ce", "bce")}
    assert primary["churn_bce"] / primary["churn_ce"] == pytest.approx(
        brute_churn(labels["bce"]) / brute_churn(labels["ce"]))
    assert report["samples"]["pilot"]["processors"][0]["processor"].startswith("an unrecorded processor")
    assert report["samples"]["replication"]["seeds"] == [100, 109]
    assert set(report["processor"]) == {"ce", "bce"} and report["pilot"]["n_ce"] == 10
    assert report["verdict"][0].startswith("Stability (plan 2, prediction churn), interim at 10 of 100 seeds")
    assert any(line.startswith("Processor (replication on AMD EPYC") for line in report["verdict"])
    assert len(report["reviews"]["ensemble"]["ce"]) == 10 and len(report["reviews"]["by_length"]["bce"]) == 5
    assert pd.DataFrame(report["paper_observation"])["n"].tolist() == list(range(3, 21))


def _two_processor_study(tmp_path, replication_noise: dict, seed: int = 5):
    """Synthetic pilot (seeds 0-9, processor A) and replication (seeds 100-109, processor B), 300 reviews; each
    run's answers are the review's margin plus a run shift plus review noise, the replication's noise per loss as
    given (the pilot's is 0.5): plan 2's report over them."""
    from nanogpt.run.predictions import archive_val_predictions
    from nanogpt.study.stability import stability_report

    rng = np.random.default_rng(seed)
    mu = rng.normal(1.0, 1.2, 300)
    truth = (mu > 0).astype(int)
    rows, preds = [], {}
    for loss in ("ce", "bce"):
        for s in list(range(10)) + list(range(100, 110)):
            noise = replication_noise[loss] if s >= 100 else 0.5
            rid = f"fast-{loss}-seed{s}"
            p = norm.cdf(mu + rng.normal(0, 0.3) + rng.normal(0, noise, 300)).astype(np.float16).astype(float)
            preds[rid] = pd.DataFrame({"label": truth, "positive_probability": p})
            rows.append({"run_id": rid, "loss": loss, "arm": loss, "seed": s, "status": "ok",
                         "val_accuracy": float(((p > 0.5) == truth).mean()),
                         "processor": "Processor B" if s >= 100 else "Processor A", "isa": "avx2"})
    archive_val_predictions(tmp_path, "fast", preds)
    plan = {"primary": {"equivalence_band": [0.9, 1 / 0.9]}}
    return stability_report(pd.DataFrame(rows), tmp_path, plan, lengths=rng.integers(10, 500, 300), n_boot=400,
                            n_perm=200)


def test_the_processor_test_finds_a_real_shift_and_none_where_there_is_none(tmp_path):
    """Plan 2's processor test (replication minus pilot): CE's runs made much noisier on processor B is a shift
    (churn up, accuracy down) named in the verdict, BCE unchanged is not; the same noise on both processors is
    no shift for either loss."""
    shifted = _two_processor_study(tmp_path / "shifted", {"ce": 1.5, "bce": 0.5})
    ce, bce = shifted["processor"]["ce"], shifted["processor"]["bce"]
    assert ce["shifts"] and ce["churn_ratio_ci"][0] > 1 and ce["mean_diff_ci"][1] < 0
    assert not bce["shifts"]
    line = next(v for v in shifted["verdict"] if v.startswith("Processor (replication on Processor B"))
    assert "The processor shifts CE:" in line and "shifts CE and BCE" not in line
    same = _two_processor_study(tmp_path / "same", {"ce": 0.5, "bce": 0.5})
    assert not same["processor"]["ce"]["shifts"] and not same["processor"]["bce"]["shifts"]
    line = next(v for v in same["verdict"] if v.startswith("Processor (replication on Processor B"))
    assert line.endswith("No shift detected: the processor acts as one more random factor here.")


def test_compare_churn_reports_the_ratio_b_over_a_and_is_seeded():
    """Killers of mutants that survived `make mutation` (docs/testing.md): the point ratio is churn(b) / churn(a),
    and a seed gives the same CIs and permutation p twice (an unseeded generator would not)."""
    rng = np.random.default_rng(2)
    mu = rng.normal(1.0, 1.2, 200)
    a, b = simulated_runs(mu, 8, 0.3, 0.5, rng), simulated_runs(mu, 8, 0.3, 0.9, rng)
    r = C.compare_churn(a, b, n_boot=300, seed=4, n_perm=50)
    assert r["ratio"] == pytest.approx(brute_churn(b) / brute_churn(a)) and r["ratio"] > 1
    assert r == C.compare_churn(a, b, n_boot=300, seed=4, n_perm=50)
    assert C.churn_ci(a, n_boot=300, seed=4) == C.churn_ci(a, n_boot=300, seed=4)
    ce, bce = rng.normal(86, 0.6, 30), rng.normal(86, 0.6, 30)
    pd.testing.assert_frame_equal(C.paper_observation(ce, bce, ns=[5], draws=200, seed=1),
                                  C.paper_observation(ce, bce, ns=[5], draws=200, seed=1))


def test_a_probability_of_exactly_one_half_is_negative_as_the_classifier_says():
    preds = {"a": pd.DataFrame({"label": [0, 1], "positive_probability": [0.5, 0.75]})}
    labels, _, _ = C.label_matrix(preds, ["a"])
    assert labels.tolist() == [[0.0, 1.0]]  # predict labels P > 0.5 positive; 0.5 itself is negative
