"""The command line's grammar: `build_parser()` (every subcommand and option, their help), `--set KEY=VALUE` parsed
into typed config overrides, `source_of` (a file's column and label options folded into its source string), and
`UsageError` for a bad command line. `__main__.py` runs the commands.

No torch, pandas or package import at module level: `--help` answers at once.
"""
from __future__ import annotations

import argparse
import types
import typing
from dataclasses import fields
from pathlib import Path

LOSS_CHOICES = ("ce", "bce")  # nanogpt.core.losses.LOSS_NAMES; spelled here so --help needs no torch import
# TrainConfig fields that have an option of their own: `--set` refuses them and names the option.
OWN_OPTIONS = {"out_dir": "--out", "quiet": "--quiet", "loss": "--loss", "seed": "--seed/--seeds",
               "profile": "--profile", "source": "--source", "device": "--device", "precision": "--precision",
               "init": "--init", "max_steps": "--steps", "keep": "--keep"}


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


def _add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default="bundled", help="bundled (offline, default) | hub | a labelled file of your own: "
                                                       "CSV, TSV, JSON Lines or Parquet")
    p.add_argument("--text-column", default=None, metavar="NAME", help="with a file: the column of texts (default text)")
    p.add_argument("--label-column", default=None, metavar="NAME",
                   help="with a file: the column of labels (default label): 0/1, booleans or two strings")
    p.add_argument("--positive-label", default=None, metavar="VALUE",
                   help="with a file whose labels are two strings: the one that means positive (default: pos, "
                        "positive, yes or true when present, else the second in sorted order)")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=None, help="smoke | fast | cpu | ft | paper | own (default: own for a file of "
                                                   "your own; else paper with CUDA, cpu without)")
    _add_source_options(p)
    p.add_argument("--out", default="results", help="results folder (default: results)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
    p.add_argument("--precision", default=None, choices=("auto", "bf16", "fp32"))
    p.add_argument("--init", default=None, metavar="scratch|gpt2|shipped|lm:PATH",
                   help="the backbone's start: scratch (random), gpt2 (needs a network), shipped (the model in "
                        "models/, its head left behind), or lm:PATH, a backbone pre-trained by `pretrain` "
                        "(results/backbones/<id>/backbone.pt) or a finished run's model.pt / .safetensors")
    p.add_argument("--steps", type=int, default=None, help="override the profile's max_steps")
    p.add_argument("--keep", default=None, choices=("final", "half", "none", "all"),
                   help="what a finished run keeps: final fp32 weights (default), half (fp16 weights), none "
                        "(metrics and predictions only), all (also its last resumable state)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any TrainConfig field, e.g. --set learning_rate=5e-4 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _lever_folder(value: str) -> str:
    """`levers --against`: the --out folder of an earlier `levers` run (it holds runs.csv)."""
    if not (Path(value) / "runs.csv").is_file():
        raise argparse.ArgumentTypeError(f"{value}: no lever results there (no runs.csv); give an earlier --out.")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nanogpt", description="A small GPT as an IMDB sentiment classifier: CE against BCE.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train one run")
    p.add_argument("--loss", required=True, choices=LOSS_CHOICES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last saved state")
    p.add_argument("--compare", action="store_true",
                   help="after training, fit TF-IDF and NBSVM on the same split and say which model to deploy (always "
                        "on for a file of your own); writes model_card.json in the run's folder")
    _add_run_options(p)

    p = sub.add_parser("compare", help="a finished run beside TF-IDF and NBSVM on its split: which to deploy")
    p.add_argument("run", help="the run's folder (results/runs/<run_id>) or its model.pt")

    p = sub.add_parser("study", help="the study's answer (no options), or train both losses over a profile's seeds, "
                                     "then compare",
                       description="Without --profile, --seeds, --design or --losses: the main job. On a CPU it "
                                   "trains what is unfinished of the study that decided the paper's claims (profile "
                                   "fast: 200 + 200 fixed-split runs, 20 + 20 paired and 30 + 30 split-varied; on a fresh "
                                   "clone every run is committed as finished), runs notebooks 01-05 on it and ends "
                                   "with both verdicts; with CUDA it trains and analyses the paper profile first. "
                                   "With any of those options: that study, as given (--profile defaults to paper "
                                   "with CUDA, else cpu).")
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
    p.add_argument("--backbones", default=None, help="with --pretraining: pre-training seeds (default: the "
                                                         "recipe's; 0-2 for ft)")
    p.add_argument("--recipe", default="ft", help="with --pretraining: the named study (pretrain_study.RECIPES): ft "
                                                  "(default; 16.4M tokens, head+tail) | ft-long (65.6M tokens, whole "
                                                  "reviews in windows) | ft-long-lm (plan 3's final recipe: ft-long "
                                                  "with an auxiliary LM loss at 0.5, CE seeds 0-4 on every backbone)")
    p.add_argument("--fresh", action="store_true",
                   help="retrain the decided study from scratch into --out, which must be a new or empty folder "
                        "(not the committed results/): prints the time estimate first (500 runs: about "
                        "2.5 hours of 2-core CPU at the fast profile's 18 s a run; less with --workers); figures and reports go under --out")
    p.add_argument("--no-notebooks", action="store_true",
                   help="train and print the table only, without executing the notebooks")
    p.add_argument("--figures", default=None, help="where the notebooks write figures (default: figures; with "
                                                   "--fresh: <out>/figures)")
    p.add_argument("--reports", default=None, help="where executed notebooks go (default: reports; with --fresh: "
                                                   "<out>/reports)")
    _add_run_options(p)

    p = sub.add_parser("pretrain", help="pre-train a backbone as a language model on the training split's texts")
    p.add_argument("--profile", default="lm-cpu", help="lm-cpu (default; ~27 min on 2 AVX2 cores) | lm-smoke")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", default=None, help="several backbones, e.g. 0-2 (one after another)")
    _add_source_options(p)
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

    p = sub.add_parser("levers", help="levers against plain fine-tuning from one backbone, on a development slice",
                       description="Fine-tune the ft recipe from --backbone with each trained arm (plain, at-<eps>: "
                                   "adversarial, vat-<eps>: virtual adversarial, distill-<w>: trained on the plain "
                                   "--teacher-seeds' ensemble, lm-<w>: an auxiliary language-model loss) over --seeds, each "
                                   "scored at the end "
                                   "on 10%% of the training split that no run trains on; then the weight soup and the "
                                   "ensemble of the plain runs. Prints the table (paired with plain by seed) and "
                                   "writes <out>/levers.json. The validation split chooses nothing here.")
    p.add_argument("--backbone", required=True, metavar="PATH", help="a backbone.pt written by `pretrain`")
    p.add_argument("--arms", default="plain,at-0.01,vat-0.01", help="comma-separated (default: plain,at-0.01,vat-0.01)")
    p.add_argument("--seeds", default="0-2", help="fine-tuning seeds, e.g. 0-2 (default)")
    p.add_argument("--teacher-seeds", default="0-2", metavar="SEEDS",
                   help="the plain runs whose ensemble teaches the distill arms (default: 0-2)")
    p.add_argument("--loss", default="ce", choices=LOSS_CHOICES)
    p.add_argument("--out", default="results/levers", help="results folder (default: results/levers)")
    p.add_argument("--against", metavar="DIR", default=None, type=_lever_folder,
                   help="a backbone lever: also pair this backbone's plain runs by seed with the plain runs in DIR "
                        "(an earlier --out, fine-tuned from another backbone)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a TrainConfig field of every lever run (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("ship", help="export a finished run to models/<name>.safetensors with its card (the model "
                                    "classify and serve use when no checkpoint is named)")
    p.add_argument("run", help="the run's folder (results/runs/<run_id>)")
    p.add_argument("--name", default="imdb-gpt", help="file name under models/ (default: imdb-gpt, the default model)")
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: fp16 where labels agree >= 99.5%%)")
    p.add_argument("--models", default=None, help="folder (default: the repository's models/)")

    p = sub.add_parser("bench", help="benchmarks that print numbers (never assert a time)")
    p.add_argument("--quick", action="store_true", help="fewer repeats, no time-to-accuracy runs (~1-2 minutes)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write every figure to FILE as JSON")
    p.add_argument("--only", choices=("serving", "sweep", "pretraining", "cost"), default=None,
                   help="one section: serving (the service under load, ~2 min), sweep (a study in-process "
                        "against Dask workers, ~3 min), pretraining (accuracy per minute of compute, read from "
                        "the pre-training study's rows) or cost (accuracy, reviews/s and training minutes of "
                        "TF-IDF, the cpu model and the pre-trained recipes, ~2 min)")

    p = sub.add_parser("classify", help="classify reviews with a trained checkpoint")
    p.add_argument("--checkpoint", default=None,
                   help="results/runs/<run_id>/model.pt, or a .safetensors export (default: the model shipped in "
                        "models/)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument("--device", default="cpu")
    p.add_argument("--reading", default=None, choices=("truncated", "windows"),
                   help="how long reviews are read (default: as the checkpoint records): one block, or all of them "
                        "in overlapping windows")
    p.add_argument("texts", nargs="+", metavar="TEXT", help="reviews to classify; '-' reads them from standard "
                                                             "input, one per line")
    p = sub.add_parser("serve", help="serve trained checkpoints over HTTP (FastAPI; see /docs)")
    p.add_argument("--checkpoint", action="append", default=None, metavar="[NAME=]PATH",
                   help="a model.pt or .safetensors export to serve (repeatable); NAME defaults to its loss (ce, bce); "
                        "default: the model shipped in models/, named 'shipped'")
    p.add_argument("--default", default=None, help="the model a request without 'model' gets (default: the first)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                   help="fp32 (default: the same answers on every CPU) or bf16 where the processor has it")
    p.add_argument("--reading", default=None, choices=("truncated", "windows"),
                   help="how long reviews are read (default: as each checkpoint records)")
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


def source_of(args) -> str:
    """--source, with --text-column / --label-column / --positive-label folded into a file's source string."""
    options = {k: v for k, v in (("text", getattr(args, "text_column", None)),
                                 ("label", getattr(args, "label_column", None)),
                                 ("positive", getattr(args, "positive_label", None))) if v is not None}
    if not options:
        return args.source
    if args.source in ("bundled", "hub"):
        raise UsageError(f"--text-column, --label-column and --positive-label describe a file of your own; "
                         f"--source {args.source} has its own columns.")
    from nanogpt.data.userfile import file_source, parse_source

    spec = parse_source(args.source)
    merged = {"text": spec.text, "label": spec.label, "positive": spec.positive, **options}
    return file_source(spec.path, merged["text"], merged["label"], merged["positive"])


def init_of(value: str) -> str:
    """--init, with `shipped` resolved to the model shipped in models/ (a UsageError when none is)."""
    if value != "shipped":
        return value
    from nanogpt.serve.shipped import MODELS_DIR, shipped_model

    if (path := shipped_model()) is None:
        raise UsageError(f"--init shipped: no model is shipped in {MODELS_DIR}. Fix: start from a backbone or a "
                         "finished run with --init lm:PATH, or ship one with `python -m nanogpt ship`.")
    return f"lm:{path}"
