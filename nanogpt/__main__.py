"""Command line: `python -m nanogpt {train,compare,study,pretrain,levers,ship,bench,classify,serve,gpu-check} ...` (see `--help` of each).

Errors end with one line on stderr and a non-zero exit: 2 for a bad command line, 1 for a failure while
running (bad data, a missing or foreign checkpoint, no network for the hub, ...). Never a traceback.
"""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from nanogpt.cli import (  # noqa: F401 (LOSS_CHOICES and OWN_OPTIONS: the grammar's names, as tests read them here)
    LOSS_CHOICES,
    OWN_OPTIONS,
    PRETRAIN_OWN_OPTIONS,
    UsageError,
    _overrides,
    build_parser,
    init_of,
    source_of,
)

EXIT_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130  # a bad command line, a failure while running, Ctrl-C


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: writes in flight finish or are rolled back, then exit."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _run_overrides(args) -> dict:
    over = _overrides(args.set)
    for flag, key in (("device", "device"), ("precision", "precision"), ("init", "init"), ("steps", "max_steps"),
                      ("keep", "keep")):
        value = getattr(args, flag)
        if value is not None:
            over[key] = init_of(value) if flag == "init" else value
    over["source"] = source_of(args)
    return over


def _resolve_profile(name):
    from nanogpt.run.profiles import default_profile_name, get_profile

    try:
        return get_profile(name or default_profile_name())
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_train(args) -> int:
    from nanogpt.run.train import train

    overrides = _run_overrides(args)
    own_file = overrides["source"] not in ("bundled", "hub")
    # a file of one's own trains on the profile made for it unless another is named
    prof = _resolve_profile(args.profile or ("own" if own_file else None))
    try:
        cfg = prof.make_config(args.loss, args.seed, out_dir=args.out, quiet=args.quiet, **overrides)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    if own_file:
        from nanogpt.data.imdb import label_mapping
        from nanogpt.serve.shipped import default_start

        mapping = label_mapping(cfg.source)  # the file read and checked first: a bad one fails here, in one line
        if not args.quiet:
            print(f"labels of {cfg.source}: " + ", ".join(f"{k!r} -> {v}" for k, v in mapping.items()))
        if args.init is None:  # the default start for a file of one's own: the shipped model where it fits
            changes, start = default_start(cfg, overrides)
            cfg = cfg.replace(**changes)
            print(start)
    result = train(cfg, resume=args.resume)
    if (own_file or args.compare) and result.checkpoint.is_file():
        from nanogpt.study.compare import compare_run, format_card

        print(format_card(compare_run(result.run_dir, args.out)))
    print(json.dumps({"run_id": result.run_id, "val_accuracy": result.val_accuracy, "val_loss": result.val_loss,
                      "checkpoint": str(result.checkpoint) if result.checkpoint.is_file() else None}))
    return 0


def cmd_compare(args) -> int:
    from nanogpt.study.compare import compare_run, format_card

    run_dir = Path(args.run)
    if run_dir.name == "model.pt":
        run_dir = run_dir.parent
    if not (run_dir / "meta.json").is_file():
        raise UsageError(f"{args.run}: not a finished run's folder (no meta.json). Give results/runs/<run_id>.")
    print(format_card(compare_run(run_dir)))
    return 0


def _is_main_job(args) -> bool:
    """`study` with none of the options that name a study: the main job (see cmd_study)."""
    return (args.profile is None and args.seeds is None and args.design == "fixed" and args.losses == "ce,bce"
            and not args.pretraining)


def cmd_study(args) -> int:
    from nanogpt.study.runs import parse_seeds, run_study
    from nanogpt.study.stats import format_comparison

    if args.pretraining:
        if args.fresh:
            raise UsageError("--fresh retrains the decided study; the pre-training study resumes on its own.")
        args.figures, args.reports = args.figures or "figures", args.reports or "reports"
        return _pretraining_study(args)
    main_job = _is_main_job(args)
    if args.fresh and not main_job:
        raise UsageError("--fresh retrains the decided study as it was run: give no --profile, --seeds, --design "
                         "or --losses with it.")
    if args.fresh:
        args.figures = args.figures or str(Path(args.out) / "figures")
        args.reports = args.reports or str(Path(args.out) / "reports")
    args.figures, args.reports = args.figures or "figures", args.reports or "reports"
    if main_job:
        from nanogpt.run.profiles import default_profile_name

        if default_profile_name() != "paper" or args.fresh:  # a CPU: the decided study is the whole main job
            return _decided_study(args)
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
    if main_job:  # with CUDA: the paper profile above is its own population; the answer is the decided study's
        print("\n" + _answer_or_reason(args))
    return 0


def _answer_or_reason(args) -> str:
    """The decided answer from the reports in --out, or one line saying why it cannot be printed."""
    from nanogpt.study.answer import AnswerMissing, format_answer

    try:
        return format_answer(args.out, args.figures, None if args.no_notebooks else args.reports)
    except AnswerMissing as exc:
        return f"The decided answer is not available: {exc}"


def _decided_study(args) -> int:
    """The main job on a CPU: train what is unfinished of the decided study (DECIDED_STUDY, profile fast; on a
    fresh clone nothing), run notebooks 01-05 on its population, and end with both verdicts."""
    from nanogpt.study.answer import DECIDED_PROFILE, DECIDED_STUDY
    from nanogpt.study.runs import design_configs, run_notebooks, run_study

    try:
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers {args.workers}: use 1 or more.")
        if args.workers is not None and args.scheduler:
            raise ValueError("--workers starts a local cluster and --scheduler uses an existing one: give one.")
        overrides = _run_overrides(args)
        changed = {k: v for k, v in overrides.items() if not (k == "source" and v == "bundled")}
        if changed:
            raise ValueError(f"{sorted(changed)} would change the decided study's runs: name a --profile (e.g. "
                             "--profile fast) to train a study of your own.")
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out)
    if args.fresh:
        if out.resolve() == (Path("results")).resolve() or (out.is_dir() and any(out.iterdir())):
            raise UsageError(f"--fresh needs a new or empty results folder, and {out} is not: e.g. --out "
                             "results-fresh (the committed results/ stay as they are).")
        from nanogpt.study.estimate import describe_estimate

        every = [c for design, losses, seeds in DECIDED_STUDY
                 for c in design_configs(DECIDED_PROFILE, design, list(seeds), losses, out, True, **overrides)]
        print(f"retraining the decided study from scratch into {out}: "
              + (f"{len(every)} runs on Dask workers" if args.workers or args.scheduler
                 else describe_estimate(every)))
    if not args.quiet:
        print(f"the main job: the study that decided the paper's claims (profile '{DECIDED_PROFILE}'); unfinished runs "
              "train first, finished ones (committed rows included) are reused")
    # rows and predictions are all the verdicts read (the committed runs kept no weights): a run whose row is here,
    # from this processor, is finished, not trained again for weights nobody reads
    for design, losses, seeds in DECIDED_STUDY:
        run_study(DECIDED_PROFILE, list(seeds), losses, out_dir=out, quiet=args.quiet, design=design,
                  workers=args.workers, scheduler=args.scheduler, **{**overrides, "keep": "none"})
    if not args.no_notebooks:
        if not args.quiet:
            print("\nevery run has finished; the notebooks now analyse them (01 -> 05):")
        executed = run_notebooks(DECIDED_PROFILE, None, overrides["source"], out, args.figures, args.reports,
                                 progress=not args.quiet)
        print("\nexecuted notebooks:\n" + "\n".join(f"  {p}" for p in executed.values()))
    print("\n" + _answer_or_reason(args))
    if not args.fresh:
        print("\nOther populations are one option away: --profile cpu (2 layers, 128 dims), --profile fast --seeds "
              "0-9, --pretraining --recipe ft-long; retrain the decided study from scratch with --fresh --out DIR.")
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
        configs = [base.replace(seed=s, source=source_of(args), out_dir=args.out, quiet=args.quiet, **over).validate()
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
    from nanogpt.study.final import after_study
    from nanogpt.study.pretrain_study import get_recipe
    from nanogpt.study.runs import parse_seeds, run_pretraining_notebook

    prof = _resolve_profile(args.profile or "ft")
    try:
        get_pretrain_profile(args.pretrain_profile)
        recipe = get_recipe(args.recipe)
        if args.design != "fixed" or args.workers or args.scheduler or args.no_notebooks:
            raise ValueError("--pretraining runs notebook 06 in this process: it takes no --design, --workers, "
                             "--scheduler or --no-notebooks.")
        seeds = parse_seeds(args.seeds) if args.seeds is not None else None
        backbones = parse_seeds(args.backbones) if args.backbones is not None else list(recipe["backbone_seeds"])
        overrides = _run_overrides(args)
        if overrides.get("init", "scratch") != "scratch":
            raise ValueError("--pretraining chooses the starts itself (scratch and each backbone): drop --init.")
        prof.make_config("ce", 0, **overrides)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    source = overrides.pop("source")
    name = prof.name if args.recipe == "ft" else args.recipe  # the first study keeps the profile's files
    executed = run_pretraining_notebook(prof.name, args.pretrain_profile, seeds, backbones, source, args.out,
                                        args.figures, args.reports, overrides, progress=not args.quiet, name=name,
                                        pretrain_overrides=recipe["pretrain_overrides"], finetune=recipe["finetune"],
                                        variance_seeds=list(recipe["variance_seeds"]))
    summary = json.loads((Path(args.out) / f"pretraining-{name}.json").read_text())
    print(f"\nexecuted notebook: {executed}\nfigures: {args.figures}/{name}/06_*.png\n"
          + "\n".join(f"- {s}" for s in summary["verdict"]))
    return after_study(args.recipe, args.out)  # plan 3's recipe ends with the plan's answer


def _shipped(command: str) -> str:
    from nanogpt.serve.shipped import no_model_message, shipped_model

    if (path := shipped_model()) is None:
        raise UsageError(no_model_message(command))
    return str(path)


def cmd_classify(args) -> int:
    from nanogpt.serve.predict import Classifier

    texts = args.texts
    if texts == ["-"]:
        texts = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
        if not texts:
            raise ValueError("classify -: standard input held no review (one review per line).")
    clf = Classifier.load(args.checkpoint or _shipped("classify"), device=args.device, reading=args.reading)
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
    models = load_models(args.checkpoint or [f"shipped={_shipped('serve')}"], device=args.device, precision=args.precision, reading=args.reading)
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


def cmd_levers(args) -> int:
    from nanogpt.study import levers, runs

    if not Path(args.backbone).is_file():
        raise UsageError(f"--backbone {args.backbone}: no such file. Fix: give the backbone.pt that `pretrain` wrote "
                         "(results/backbones/<id>/backbone.pt).")
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    try:
        [levers.parse_arm(arm) for arm in arms]  # an unknown arm is a usage error before anything trains
        seeds, teacher_seeds = runs.parse_seeds(args.seeds), runs.parse_seeds(args.teacher_seeds)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    changes = _overrides(args.set, own={"loss": "--loss", "seed": "--seeds", "init": "--backbone", "out_dir": "--out",
                                        "quiet": "--quiet", "profile": "nothing (lever runs are the ft recipe)",
                                        "teacher": "--teacher-seeds"})
    print(levers.study(args.backbone, arms, seeds, args.out, args.loss, args.quiet, teacher_seeds, args.against,
                       **changes))
    return 0


def cmd_ship(args) -> int:
    from nanogpt.serve.shipped import MODELS_DIR, describe, ship

    if not (Path(args.run) / "meta.json").is_file() or not (Path(args.run) / "model.pt").is_file():
        raise UsageError(f"{args.run}: not a finished run's folder with weights; give results/runs/<run_id>.")
    print(describe(ship(args.run, args.models or MODELS_DIR, args.name, half=not args.fp32)))
    return 0


COMMANDS = {"train": cmd_train, "compare": cmd_compare, "study": cmd_study, "pretrain": cmd_pretrain,
            "classify": cmd_classify, "bench": cmd_bench, "levers": cmd_levers, "ship": cmd_ship,
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
