"""Command line: `python -m nanogpt {train,study,pretrain,bench,classify,serve,gpu-check} ...` (see `--help` of each).

Errors end with one line on stderr and a non-zero exit: 2 for a bad command line, 1 for a failure while
running (bad data, a missing or foreign checkpoint, no network for the hub, ...). Never a traceback.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import types
import typing
from dataclasses import fields
from pathlib import Path

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130
LOSS_CHOICES = ("ce", "bce")  # nanogpt.core.losses.LOSS_NAMES; spelled here so --help needs no torch import
# TrainConfig fields that have an option of their own: `--set` refuses them and names the option.
OWN_OPTIONS = {"out_dir": "--out", "quiet": "--quiet", "loss": "--loss", "seed": "--seed/--seeds",
               "profile": "--profile", "source": "--source", "device": "--device", "precision": "--precision",
               "init": "--init", "max_steps": "--steps", "keep": "--keep"}


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: writes in flight finish or are rolled back, then exit."""


def _on_sigterm(signum, frame):
    raise Terminated()


class UsageError(Exception):
    """A bad command line (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + error; we want one line and exit 2
        raise UsageError(f"{message} (see `python -m nanogpt {self.prog.split()[-1]} --help`)"
                         if " " in self.prog else message)


# PretrainConfig fields that have an option of their own in `pretrain`.
PRETRAIN_OWN_OPTIONS = {"seed": "--seed/--seeds", "profile": "--profile", "source": "--source", "out_dir": "--out",
                        "device": "--device", "precision": "--precision", "max_steps": "--steps", "quiet": "--quiet"}


def _coerce(name: str, text: str, config_cls=None, own: dict | None = None):
    """Turn `--set name=text` into the type of <config_cls>.<name> (TrainConfig by default); fields in `own`
    (OWN_OPTIONS by default) have an option of their own and are refused here."""
    if config_cls is None:
        from nanogpt.run.config import TrainConfig as config_cls
    own = OWN_OPTIONS if own is None else own
    hints = typing.get_type_hints(config_cls)
    if name in own:
        raise UsageError(f"--set {name}: use {own[name]} instead.")
    if name not in hints:
        raise UsageError(f"--set {name}: no such setting. Settings: {', '.join(f.name for f in fields(config_cls))}")
    hint = hints[name]
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    if type(None) in args and text.lower() in ("none", "null", ""):
        return None
    base = next(a for a in args if a is not type(None))
    try:
        if typing.get_origin(base) is tuple:  # e.g. cutoffs=2000,10000
            item = typing.get_args(base)[0]
            return tuple(item(x) for x in text.split(","))
        if base is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return base(text)
    except ValueError:
        raise UsageError(f"--set {name}={text}: expected {base.__name__ if isinstance(base, type) else base}.") from None


def _overrides(pairs: list[str], config_cls=None, own: dict | None = None) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UsageError(f"--set {pair!r}: write it as key=value, e.g. --set max_steps=200.")
        key, value = pair.split("=", 1)
        out[key.strip()] = _coerce(key.strip(), value.strip(), config_cls, own)
    return out


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=None, help="smoke | fast | cpu | paper (default: paper with CUDA, else cpu)")
    p.add_argument("--source", default="bundled", help="bundled (offline, default) | hub | path to a CSV")
    p.add_argument("--out", default="results", help="results folder (default: results)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
    p.add_argument("--precision", default=None, choices=("auto", "bf16", "fp32"))
    p.add_argument("--init", default=None, metavar="scratch|gpt2|lm:PATH",
                   help="the backbone's start: scratch (random), gpt2 (needs a network), or lm:PATH, a backbone "
                        "pre-trained by `pretrain` (results/backbones/<id>/backbone.pt)")
    p.add_argument("--steps", type=int, default=None, help="override the profile's max_steps")
    p.add_argument("--keep", default=None, choices=("final", "half", "none", "all"),
                   help="what a finished run keeps: final fp32 weights (default), half (fp16 weights), none "
                        "(metrics and predictions only), all (also its last resumable state)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any TrainConfig field, e.g. --set learning_rate=5e-4 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nanogpt", description="A small GPT as an IMDB sentiment classifier: CE against BCE.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train one run")
    p.add_argument("--loss", required=True, choices=LOSS_CHOICES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last saved state")
    _add_run_options(p)

    p = sub.add_parser("study", help="train both losses over the profile's seeds, then compare")
    p.add_argument("--seeds", default=None, help="e.g. 0-4 or 0,1,2 (default: the profile's seeds)")
    p.add_argument("--losses", default="ce,bce", help="comma-separated subset of ce,bce (with --no-notebooks); "
                                                       "with --design paired, arms among ce,bce,bce-head2x")
    p.add_argument("--design", default="fixed", choices=("fixed", "resplit", "paired"),
                   help="fixed: the split is fixed, the training seed varies (default); resplit: the split varies "
                        "with the seed; paired: CE started as the BCE function of the same seed, and BCE with CE's "
                        "head step")
    p.add_argument("--workers", type=int, default=None,
                   help="train the runs on a local Dask cluster of N worker processes (one per GPU with CUDA); "
                        "default: one after another in this process")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="train the runs on the Dask cluster at ADDRESS (e.g. tcp://10.0.0.5:8786); the results "
                        "folder must be storage the workers share")
    p.add_argument("--pretraining", action="store_true",
                   help="the pre-training study instead (notebook 06): pre-train --backbones backbones (profile "
                        "--pretrain-profile), fine-tune them and train from scratch with --profile (default ft)")
    p.add_argument("--pretrain-profile", default="lm-cpu", help="with --pretraining: lm-cpu (default) | lm-smoke")
    p.add_argument("--backbones", default=None, help="with --pretraining: pre-training seeds (default 0-2)")
    p.add_argument("--no-notebooks", action="store_true",
                   help="train and print the table only, without executing the notebooks")
    p.add_argument("--figures", default="figures", help="where the notebooks write figures (default: figures)")
    p.add_argument("--reports", default="reports", help="where executed notebooks go (default: reports)")
    _add_run_options(p)

    p = sub.add_parser("pretrain", help="pre-train a backbone as a language model on the training split's texts")
    p.add_argument("--profile", default="lm-cpu", help="lm-cpu (default; ~27 min on 2 AVX2 cores) | lm-smoke")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", default=None, help="several backbones, e.g. 0-2 (one after another)")
    p.add_argument("--source", default="bundled", help="bundled (offline, default) | hub | path to a CSV")
    p.add_argument("--out", default="results", help="results folder; backbones go to <out>/backbones/<id>/")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
    p.add_argument("--precision", default=None, choices=("auto", "bf16", "fp32"))
    p.add_argument("--steps", type=int, default=None, help="override the profile's max_steps")
    p.add_argument("--unlabelled", action="store_true",
                   help="also read the Hub's 50,000 unlabelled IMDB reviews (needs a network)")
    p.add_argument("--fresh", action="store_true", help="start afresh instead of resuming an interrupted run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any PretrainConfig field, e.g. --set learning_rate=1e-3 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("bench", help="benchmarks that print numbers (never assert a time)")
    p.add_argument("--quick", action="store_true", help="fewer repeats, no time-to-accuracy runs (~1-2 minutes)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write every figure to FILE as JSON")
    p.add_argument("--only", choices=("serving", "sweep", "pretraining"), default=None,
                   help="one section: serving (the service under load, ~2 min), sweep (a study in-process "
                        "against Dask workers, ~3 min) or pretraining (accuracy per minute of compute, read from "
                        "the pre-training study's rows)")

    p = sub.add_parser("classify", help="classify reviews with a trained checkpoint")
    p.add_argument("--checkpoint", required=True, help="results/runs/<run_id>/model.pt")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument("--device", default="cpu")
    p.add_argument("texts", nargs="+", metavar="TEXT", help="reviews to classify; '-' reads them from standard "
                                                             "input, one per line")
    p = sub.add_parser("serve", help="serve trained checkpoints over HTTP (FastAPI; see /docs)")
    p.add_argument("--checkpoint", action="append", required=True, metavar="[NAME=]PATH",
                   help="a model.pt to serve (repeatable); NAME defaults to its loss (ce, bce)")
    p.add_argument("--default", default=None, help="the model a request without 'model' gets (default: the first)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                   help="fp32 (default: the same answers on every CPU) or bf16 where the processor has it")
    p.add_argument("--max-batch", type=int, default=32, help="texts per merged forward pass (1: no merging)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="how long a batch waits for more requests")
    p.add_argument("--max-texts", type=int, default=64, help="texts per request")
    p.add_argument("--max-chars", type=int, default=20_000, help="characters per text")
    p.add_argument("--max-body-bytes", type=int, default=2_000_000, help="request body size, checked before parsing")
    p.add_argument("--api-key-env", default=None, metavar="NAME",
                   help="require the API key held in environment variable NAME (X-API-Key header)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))

    p = sub.add_parser("gpu-check", help="check the CUDA path on this GPU in minutes and write a JSON report")
    p.add_argument("--out", default="results/gpu-check.json", help="the report (default: results/gpu-check.json)")
    p.add_argument("--steps", type=int, default=300, help="steps of the short paper-profile run (default: 300)")
    return parser


def _run_overrides(args) -> dict:
    over = _overrides(args.set)
    for flag, key in (("device", "device"), ("precision", "precision"), ("init", "init"), ("steps", "max_steps"),
                      ("keep", "keep")):
        value = getattr(args, flag)
        if value is not None:
            over[key] = value
    over["source"] = args.source
    return over


def _resolve_profile(name):
    from nanogpt.run.profiles import default_profile_name, get_profile

    try:
        return get_profile(name or default_profile_name())
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_train(args) -> int:
    from nanogpt.run.train import train

    prof = _resolve_profile(args.profile)
    try:
        cfg = prof.make_config(args.loss, args.seed, out_dir=args.out, quiet=args.quiet, **_run_overrides(args))
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    result = train(cfg, resume=args.resume)
    print(json.dumps({"run_id": result.run_id, "val_accuracy": result.val_accuracy, "val_loss": result.val_loss,
                      "checkpoint": str(result.checkpoint) if result.checkpoint.is_file() else None}))
    return 0


def cmd_study(args) -> int:
    from nanogpt.study.runs import parse_seeds, run_study
    from nanogpt.study.stats import format_comparison

    if args.pretraining:
        return _pretraining_study(args)
    prof = _resolve_profile(args.profile)
    try:
        seeds = parse_seeds(args.seeds) if args.seeds is not None else None
        losses = tuple(x.strip() for x in args.losses.split(",") if x.strip())
        allowed = LOSS_CHOICES + (("bce-head2x",) if args.design == "paired" else ())
        bad = [x for x in losses if x not in allowed]
        if bad or not losses:
            raise ValueError(f"Bad --losses {args.losses!r}: use a subset of {','.join(allowed)}.")
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers {args.workers}: use 1 or more.")
        if args.workers is not None and args.scheduler:
            raise ValueError("--workers starts a local cluster and --scheduler uses an existing one: give one.")
        overrides = _run_overrides(args)
        prof.make_config("ce", 0, **overrides)  # validate before any training starts
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    if args.design == "paired" and args.losses == "ce,bce":
        losses = ("ce", "bce", "bce-head2x")
    # the runs train here first, with the estimate, each run's progress and its result on this terminal; the
    # notebooks then execute over finished runs (inside a papermill kernel that output would be invisible)
    runs = run_study(prof.name, seeds, losses, out_dir=args.out, quiet=args.quiet, design=args.design,
                     workers=args.workers, scheduler=args.scheduler, **overrides)
    if not args.no_notebooks:
        from nanogpt.run.results import population_tag
        from nanogpt.study.runs import run_notebooks, study_rows, trained_population

        source = overrides.pop("source")
        if not args.quiet:
            print("\nevery run has finished; the notebooks now analyse them (01 -> 05):")
        executed = run_notebooks(prof.name, seeds, source, args.out, args.figures, args.reports,
                                 overrides=overrides, progress=not args.quiet, design=args.design,
                                 workers=args.workers, scheduler=args.scheduler)
        runs = study_rows(prof.name, args.design, seeds, out_dir=args.out, source=source, **overrides)
        print("\nexecuted notebooks:\n" + "\n".join(f"  {p}" for p in executed.values()))
        print(f"figures: {args.figures}/{population_tag(prof.name, trained_population(prof.name, overrides))}/")
    print()
    if args.design == "fixed":
        print(format_comparison(runs))
    else:
        from nanogpt.study.stats import arm_summary

        print(f"Validation accuracy (%) per arm, design '{args.design}'\n" + arm_summary(runs).round(2).to_string())
    print(f"\nresults: {args.out}/runs.csv; checkpoints: {args.out}/runs/<run_id>/model.pt")
    return 0


def cmd_pretrain(args) -> int:
    from nanogpt.run.pretrain import PretrainConfig, get_pretrain_profile, pretrain
    from nanogpt.study.runs import parse_seeds

    try:
        base = get_pretrain_profile(args.profile)
        seeds = parse_seeds(args.seeds) if args.seeds is not None else [args.seed]
        over = _overrides(args.set, PretrainConfig, PRETRAIN_OWN_OPTIONS)
        for flag, key in (("device", "device"), ("precision", "precision"), ("steps", "max_steps")):
            if getattr(args, flag) is not None:
                over[key] = getattr(args, flag)
        if args.unlabelled:
            over["unlabelled"] = True
        configs = [base.replace(seed=s, source=args.source, out_dir=args.out, quiet=args.quiet, **over).validate()
                   for s in seeds]
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    for cfg in configs:
        result = pretrain(cfg, resume=not args.fresh)
        print(json.dumps({"backbone_id": result.backbone_id, "checkpoint": str(result.path),
                          "val_perplexity": round(result.val_perplexity, 3), "tokens": result.tokens,
                          "train_minutes": round(result.train_seconds / 60, 2),
                          "init": f"lm:{result.path}"}))
    return 0


def _pretraining_study(args) -> int:
    from nanogpt.run.pretrain import get_pretrain_profile
    from nanogpt.study.runs import parse_seeds, run_pretraining_notebook

    prof = _resolve_profile(args.profile or "ft")
    try:
        get_pretrain_profile(args.pretrain_profile)
        if args.design != "fixed" or args.workers or args.scheduler or args.no_notebooks:
            raise ValueError("--pretraining runs notebook 06 in this process: it takes no --design, --workers, "
                             "--scheduler or --no-notebooks.")
        seeds = parse_seeds(args.seeds) if args.seeds is not None else None
        backbones = parse_seeds(args.backbones) if args.backbones is not None else None
        overrides = _run_overrides(args)
        if overrides.get("init", "scratch") != "scratch":
            raise ValueError("--pretraining chooses the starts itself (scratch and each backbone): drop --init.")
        prof.make_config("ce", 0, **overrides)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    source = overrides.pop("source")
    executed = run_pretraining_notebook(prof.name, args.pretrain_profile, seeds, backbones, source, args.out,
                                        args.figures, args.reports, overrides, progress=not args.quiet)
    summary = json.loads((Path(args.out) / f"pretraining-{prof.name}.json").read_text())
    print(f"\nexecuted notebook: {executed}\nfigures: {args.figures}/{prof.name}/06_*.png")
    print("\n".join(f"- {s}" for s in summary["verdict"]))
    return 0


def cmd_classify(args) -> int:
    from nanogpt.serve.predict import Classifier

    texts = args.texts
    if texts == ["-"]:
        texts = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
        if not texts:
            raise ValueError("classify -: standard input held no review (one review per line).")
    clf = Classifier.load(args.checkpoint, device=args.device)
    preds = clf.predict(texts)
    for text, rec in zip(texts, preds.to_records()):
        if args.json:
            print(json.dumps({"text": text, **rec}))
        else:
            short = text if len(text) <= 60 else text[:57] + "..."
            print(f"{rec['sentiment']:8s}  P(positive)={rec['positive_probability']:.3f}  {short}")
    return 0


def cmd_bench(args) -> int:
    from nanogpt.bench import run_bench, run_section

    if args.only:
        run_section(args.only, json_path=args.json)
    else:
        run_bench(quick=args.quick, json_path=args.json)
    return 0


def cmd_serve(args) -> int:
    import os

    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: use 1-65535.")
    api_key = None
    if args.api_key_env is not None:
        api_key = os.environ.get(args.api_key_env, "")
        if not api_key.strip():
            raise UsageError(f"--api-key-env {args.api_key_env}: that environment variable is unset or empty.")
    try:
        from nanogpt.serve.service import Limits, load_models, serve
    except ImportError as exc:
        raise ImportError(f"serve needs FastAPI and uvicorn ({exc}); install them with make setup or "
                          "pip install -r requirements.txt") from None
    try:
        limits = Limits(args.max_texts, args.max_chars, args.max_body_bytes, args.max_batch, args.max_wait_ms)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    models = load_models(args.checkpoint, device=args.device, precision=args.precision)
    serve(models, args.host, args.port, limits, api_key, args.default, args.log_level)
    return 0


def cmd_gpu_check(args) -> int:
    import torch

    from nanogpt.gpucheck import EXIT_NO_CUDA, gpu_check

    if not torch.cuda.is_available():
        print(f"nanogpt gpu-check: no CUDA GPU visible (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda or 'none'}); nothing checked. Run it on a machine with an NVIDIA GPU.",
              file=sys.stderr)
        return EXIT_NO_CUDA
    if args.steps < 20:
        raise UsageError(f"--steps {args.steps}: use at least 20, so that a steady-state step time exists.")
    report = gpu_check(torch.device("cuda"), args.out, steps=args.steps)
    print(f"gpu-check {'passed' if report['ok'] else 'FAILED'} in {report['seconds'] / 60:.1f} min; report: {args.out}")
    return 0 if report["ok"] else EXIT_FAILURE


COMMANDS = {"train": cmd_train, "study": cmd_study, "pretrain": cmd_pretrain, "classify": cmd_classify, "bench": cmd_bench,
            "serve": cmd_serve, "gpu-check": cmd_gpu_check}


def main(argv: list[str] | None = None) -> int:
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"nanogpt: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"nanogpt: {what}; finished runs are kept in the results folder, an unfinished one resumes from "
              "its last state.", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    except (ValueError, TypeError, OSError, RuntimeError, ConnectionError, KeyError, ImportError,
            FloatingPointError) as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"nanogpt: error: {msg}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
