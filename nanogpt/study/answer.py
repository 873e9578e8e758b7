"""The study's answer, as the main job ends with it: both of the paper's claims, decided by the plans committed
before their runs, read from the reports notebook 04 writes for the decided population (`fast`, fixed split):
`results/powered-fast.json` (plan 1, accuracy) and `results/stability-fast.json` (plan 2, stability).

Nothing here computes a statistic: the numbers are the reports', so what the terminal prints is what README,
the notebooks and the committed JSON say.
"""
from __future__ import annotations

import json
from pathlib import Path

DECIDED_PROFILE = "fast"  # the population whose runs decided both claims (plans 1 and 2)
# The decided study, chunk by chunk as `make powered-study` and `make replication-study` trained it:
# (design, losses, seeds). 200 + 200 fixed-split runs, 20 + 20 paired arms, 30 + 30 split-varied runs.
DECIDED_STUDY = (("fixed", ("ce", "bce"), tuple(range(200))),
                 ("paired", ("ce", "bce-head2x"), tuple(range(20))),
                 ("resplit", ("ce", "bce"), tuple(range(30))))


class AnswerMissing(FileNotFoundError):
    """A report the answer is read from is not there (or not readable)."""


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AnswerMissing(f"{path} cannot be read ({exc}). Fix: restore it from git (git checkout -- {path}) "
                            "or run notebook 04 on the decided population (python -m nanogpt study).") from None


def decided_answer(results_dir: str | Path = "results", tag: str = DECIDED_PROFILE) -> dict:
    """The two verdicts and the evidence behind them, from `powered-<tag>.json` and `stability-<tag>.json`."""
    results_dir = Path(results_dir)
    powered = _read(results_dir / f"powered-{tag}.json")
    stability = _read(results_dir / f"stability-{tag}.json")
    acc, churn = powered["accuracy"], stability["primary"]
    if churn is None:
        raise AnswerMissing(f"{results_dir / f'stability-{tag}.json'} holds no plan-2 decision (its replication "
                            "sample, seeds 100-199, is not finished). Fix: make replication-study.")
    samples = stability["samples"]
    processors = sorted({p["processor"] for p in samples["all"]["processors"]})
    return {"profile": powered.get("profile", tag), "population": powered.get("population"),
            "accuracy": acc, "stability": churn, "samples": samples, "processors": processors,
            "accuracy_sd": stability.get("sd_ratio", {}).get("replication")}


def accuracy_words(acc: dict) -> str:
    """Plan 1's decision as README's table says it."""
    if acc["decision"] == "difference":
        return "yes: BCE is more accurate" if acc["diff"] > 0 else "no: CE is more accurate"
    return {"equivalent": "no: equivalent", "undecided": "undecided"}[acc["decision"]]



STABILITY_WORDS = {"equivalent": "no: equally stable", "b less": "yes: BCE is more stable",
                   "b more": "no: CE is more stable", "undecided": "undecided"}


def answer_lines(answer: dict) -> list[str]:
    """The answer in README's words, with its numbers, runs and processors."""
    a, s, samples = answer["accuracy"], answer["stability"], answer["samples"]
    band = s["band"]
    lines = [
        "The answer (decided by the plans committed before their runs; profile "
        f"'{answer['profile']}', population {answer['population']}):",
        f"  BCE is more accurate (paper: +{a['paper_diff']:.2f} points)? "
        f"{accuracy_words(a)} (margin +-{a['margin']:g} points, plan 1). "
        f"BCE - CE = {a['diff']:+.2f} points, 95% CI [{a['ci_low']:+.2f}, {a['ci_high']:+.2f}], TOST p = "
        f"{a['tost_p']:.2g}; {a['n_ce']} CE and {a['n_bce']} BCE runs (seeds "
        f"{samples['pilot']['seeds'][0]}-{samples['pilot']['seeds'][1]}).",
        f"  BCE is more stable (paper: max-min 1.04 against 2.36)? "
        f"{STABILITY_WORDS.get(s['decision'], s['decision'])} within the band [{band[0]:.2f}, {band[1]:.2f}] "
        f"(plan 2, prediction churn on the replication sample, seeds {samples['replication']['seeds'][0]}-"
        f"{samples['replication']['seeds'][1]}). Two CE runs disagree on {100 * s['churn_ce']:.2f}% of validation "
        f"reviews, two BCE runs on {100 * s['churn_bce']:.2f}%; ratio BCE/CE {s['ratio']:.3f}, 95% CI "
        f"[{s['ratio_ci'][0]:.3f}, {s['ratio_ci'][1]:.3f}]; {s['n_ce']} + {s['n_bce']} runs.",
    ]
    sd = answer.get("accuracy_sd")
    if sd:
        lines.append(f"  Accuracy sd (secondary): BCE/CE {sd['sd_ratio']:.2f}, 95% CI [{sd['sd_ratio_ci_low']:.2f}, "
                     f"{sd['sd_ratio_ci_high']:.2f}] on the replication sample ({sd['decision']}).")
    per_loss = samples["all"]["per_loss"]
    lines.append(f"  Runs: {per_loss} per loss on the fixed split (seeds {samples['all']['seeds'][0]}-"
                 f"{samples['all']['seeds'][1]}), from " + "; ".join(answer["processors"]) + ".")
    return lines


def format_answer(results_dir: str | Path = "results", figures_dir: str | Path = "figures",
                  reports_dir: str | Path | None = "reports", tag: str = DECIDED_PROFILE) -> str:
    """The block `python -m nanogpt study` ends with: the verdicts, then where the evidence is."""
    lines = answer_lines(decided_answer(results_dir, tag))
    where = [f"  Reports: {Path(results_dir) / f'powered-{tag}.json'}, {Path(results_dir) / f'stability-{tag}.json'}; "
             f"figures: {Path(figures_dir) / tag}/"]
    if reports_dir is not None:
        where.append(f"  Executed notebooks: {Path(reports_dir)}/ (04_statistical_comparison.ipynb holds every "
                     "analysis); docs/study.md explains each number.")
    return "\n".join(lines + where)
