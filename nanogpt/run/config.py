"""What one run is: `TrainConfig` (every choice, validated, with its run id) and `RunResult` (what it gave)."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nanogpt.core.artifacts import stable_digest
from nanogpt.core.kernels import ATTENTIONS
from nanogpt.core.losses import LOSS_NAMES
from nanogpt.core.model import POOLINGS, ModelConfig
from nanogpt.data.imdb import DEFAULT_SPLIT_SEED, DEFAULT_VAL_FRACTION, data_identity
from nanogpt.data.tokens import TRUNCATIONS
from nanogpt.data.windows import READINGS, resolved_stride
from nanogpt.run.adversarial import ADVERSARIAL

# Fields that say where, how loudly and with how much disk a run happens, not what it computes: left out of the
# run id, and free to differ when an interrupted run is resumed.
RUN_LOCAL_FIELDS = ("quiet", "out_dir", "cache_dir", "num_threads", "checkpoint_interval", "keep", "log_interval")
HEAD_INITS = ("independent", "paired")
# Fields added after runs were already recorded, at the value that means "this feature is off": left out of the
# identity at that value, so adding a field does not change the ids of the runs that came before it. A new
# field goes here with its neutral value.
IDENTITY_NEUTRAL = {"head_init": "independent", "head_lr_scale": 1.0, "head_weight_decay_scale": 1.0,
                    "backbone_lr_scale": 1.0, "reading": "truncated", "window_stride": None, "epochs": None,
                    "evals_per_epoch": 4, "dev_fraction": 0.0, "early_stopping": 0, "keep_best": False,
                    "adversarial": "none", "adversarial_epsilon": 0.03, "adversarial_weight": 1.0,
                    "teacher": "", "distill_weight": 0.5, "distill_temperature": 1.0, "lm_weight": 0.0}
# How a training review longer than the block is cut: the tokenizer's truncations, or a window at a random offset
# drawn anew each time the review is drawn (whole reviews in memory; only with reading="windows").
TRAIN_CUTS = TRUNCATIONS + ("random_window",)
KEEP = ("final", "half", "none", "all")  # what a finished run keeps on disk; see TrainConfig.keep
_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass
class TrainConfig:
    # --- what is compared
    loss: str = "ce"  # "ce" (2 logits, softmax) or "bce" (1 logit, sigmoid)
    seed: int = 0  # training seed: init, dropout, batch order. The split has its own seed.
    profile: str = "custom"  # name of the profile this config came from (recorded with the result)
    # --- data
    source: str = "bundled"  # "bundled" (offline IMDB), "hub" (stanfordnlp/imdb), or a CSV path
    split_seed: int = DEFAULT_SPLIT_SEED  # fixed validation split, independent of `seed`
    val_fraction: float = DEFAULT_VAL_FRACTION
    block_size: int = 384  # tokens per review; 77% of IMDB reviews fit in 384 GPT-2 tokens
    truncation: str = "head_tail"  # longer reviews keep their opening and their verdict (TRAIN_CUTS)
    head_fraction: float = 0.25  # share of the block given to the head under head_tail
    # How a review is scored (validation, predict, the service): "truncated" (one block, cut by `truncation`) or
    # "windows" (the whole review in windows of the block, `window_stride` apart, their logits averaged; see
    # data/windows.py). Recorded in the checkpoint, so a model is served as it was scored.
    reading: str = "truncated"
    window_stride: int | None = None  # None: half a block
    train_limit: int | None = None  # use only the first N training reviews (smoke runs, tests)
    val_limit: int | None = None  # score only the first N validation reviews (smoke runs, tests)
    # --- model
    # "scratch" (random), "gpt2" (GPT-2's weights; needs a network) or "lm:<path>" (a backbone pre-trained by
    # `python -m nanogpt pretrain`; see backbone.py). The run id names an lm backbone by its file's sha256.
    init: str = "scratch"
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.1
    attn_dropout: float = 0.0  # > 0 forces SDPA onto its slow math path
    pooling: str = "mean"  # "mean" over real tokens or "last" real token
    gelu: str = "tanh"  # "tanh" (GPT-2's form) or "none" (exact; 2x faster on CPU)
    # The kernel changes bf16 rounding, so it is part of the run id; it is not architecture, so checkpoints
    # do not record it. "auto": chunked matmul attention on CPU in bf16, else SDPA; "sdpa": always SDPA.
    attention: str = "auto"
    bias: bool = True
    # "independent": the head's rows drawn at random (CE's two rows independently). "paired" (CE only): the
    # head is built from the BCE head of the same seed (rows -w/2, w/2), so CE and BCE start as the same
    # function with the same backbone, batches and dropout masks (see GPTClassifier.paired_ce_head).
    head_init: str = "independent"
    # --- optimisation
    batch_size: int = 32
    max_steps: int = 1000  # fixed schedule length; the reported accuracy is taken at its end
    learning_rate: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to learning_rate * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1  # decoupled (AdamW), on matrices and embeddings only
    beta1: float = 0.9
    beta2: float = 0.98
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    # The head's learning rate and weight decay relative to the rest. CE with a paired head equals BCE with
    # head_lr_scale=2 and head_weight_decay_scale=0.5 step for step without clipping (tests/test_paired.py).
    head_lr_scale: float = 1.0
    head_weight_decay_scale: float = 1.0
    # The backbone's learning rate relative to the schedule (fine-tuning a pre-trained backbone gently).
    backbone_lr_scale: float = 1.0
    # A schedule in passes over the data instead of steps: with `epochs` set, max_steps is epochs x (training
    # reviews / batch_size) rounded up, a validation pass comes `evals_per_epoch` times a pass, and warmup is at
    # most a tenth of the schedule (see run/selection.py). None: max_steps as given (every study profile).
    epochs: float | None = None
    evals_per_epoch: int = 4
    # A development slice carved from the training part (stratified, drawn with split_seed; never the validation
    # part): scored at every validation pass, it chooses the checkpoint to keep (`keep_best`) and when to stop
    # (`early_stopping`: after that many passes without a better development accuracy; 0 never stops early).
    dev_fraction: float = 0.0
    early_stopping: int = 0
    keep_best: bool = False
    # Adversarial ("at") or virtual adversarial ("vat") training on the input embeddings (run/adversarial.py):
    # each batch is also scored with its embeddings perturbed by `adversarial_epsilon` times their own norm, in the
    # direction that hurts most, and `adversarial_weight` times that term is added to the loss. 2-3x a step's cost.
    adversarial: str = "none"
    adversarial_epsilon: float = 0.03
    adversarial_weight: float = 1.0
    # Distillation (run/distill.py): a teacher file of P(positive) for every training review (an ensemble's, formed
    # by `python -m nanogpt levers`); the loss is (1 - distill_weight) x the labels' + distill_weight x the
    # teacher's. "" trains on the labels alone. The run id names the teacher by its content.
    teacher: str = ""
    distill_weight: float = 0.5
    distill_temperature: float = 1.0  # > 1 softens the teacher's and the student's log-odds in the teacher's term
    # An auxiliary language-model loss (run/auxlm.py, GPT-1's): lm_weight x the next-token NLL of the batch's
    # reviews through the backbone's own adaptive softmax is added to the labels' loss. Needs an lm: backbone
    # written with its next-token output. 0: off.
    lm_weight: float = 0.0
    # --- evaluation and logging
    eval_interval: int = 200  # steps between validation passes (and one at the end)
    eval_batch_size: int = 64  # CPU, cpu profile model: 1,246 reviews/s at 64 against 1,016 at 128
    checkpoint_interval: int | None = None  # steps between resumable states; None = eval_interval
    log_interval: int = 50  # steps between training-loss points of the learning curve (cheap: no validation)
    # --- hardware
    device: str = "auto"  # "auto" = cuda, then mps, then cpu
    precision: str = "auto"  # "auto", "bf16" or "fp32"
    compile: str = "auto"  # "auto" = on for CUDA only (measured 0.9x of eager on CPU), "on", "off"
    pad_multiple: int = 8  # pad batch length up to a multiple of this
    num_threads: int | None = None  # CPU threads; None = torch's default
    # --- output
    out_dir: str = "results"
    cache_dir: str | None = None  # token cache; None = data/cache
    # What a finished run keeps: "final" its fp32 weights (model.pt), "half" them in fp16 (half the disk),
    # "none" no weights (metrics, curve and validation predictions only: enough for the statistics), "all" the
    # final weights and its last resumable state. Metrics never depend on it.
    keep: str = "final"
    quiet: bool = False

    def validate(self) -> "TrainConfig":
        def need(cond: bool, msg: str):
            if not cond:
                raise ValueError(msg)

        need(self.loss in LOSS_NAMES, f"Unknown loss {self.loss!r}; use one of {LOSS_NAMES}.")
        need(isinstance(self.profile, str) and _PROFILE_NAME.fullmatch(self.profile) is not None,
             f"profile name {self.profile!r} must be letters, digits, '_', '-' or '.', starting with a letter "
             "or digit (it names the run's folder).")
        need(self.keep in KEEP, f"keep must be one of {KEEP}, got {self.keep!r}.")
        need(self.head_init in HEAD_INITS, f"head_init must be one of {HEAD_INITS}, got {self.head_init!r}.")
        need(self.head_init == "independent" or self.loss == "ce",
             "head_init='paired' builds a CE head from the BCE one; a BCE run is always 'independent'.")
        for name in ("head_lr_scale", "head_weight_decay_scale", "backbone_lr_scale"):
            need(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}.")
        need(isinstance(self.log_interval, int) and self.log_interval >= 0,
             f"log_interval must be an integer >= 0 (0: at validation passes only), got {self.log_interval!r}.")
        need(self.truncation in TRAIN_CUTS, f"Unknown truncation {self.truncation!r}; use one of {TRAIN_CUTS}.")
        need(self.reading in READINGS, f"reading must be one of {READINGS}, got {self.reading!r}.")
        need(self.truncation != "random_window" or self.reading == "windows",
             "truncation='random_window' trains on windows of whole reviews; score them the same way: "
             "--set reading=windows.")
        need(self.window_stride is None or self.reading == "windows",
             f"window_stride={self.window_stride!r} is only used by reading='windows' (reading is {self.reading!r}).")
        if self.reading == "windows" and isinstance(self.block_size, int) and self.block_size > 0:
            resolved_stride(self.block_size, self.window_stride)
        need(self.pooling in POOLINGS, f"Unknown pooling {self.pooling!r}; use one of {POOLINGS}.")
        need(self.attention in ATTENTIONS, f"attention must be one of {ATTENTIONS}, got {self.attention!r}.")
        need(isinstance(self.init, str) and (self.init in ("scratch", "gpt2") or
                                             (self.init.startswith("lm:") and len(self.init) > 3)),
             f"init must be 'scratch', 'gpt2' or 'lm:<backbone checkpoint>', got {self.init!r}.")
        need(self.precision in ("auto", "bf16", "fp32"), f"precision must be auto, bf16 or fp32, got {self.precision!r}.")
        need(self.compile in ("auto", "on", "off"), f"compile must be auto, on or off, got {self.compile!r}.")
        for name in ("max_steps", "batch_size", "block_size", "eval_interval", "eval_batch_size", "n_layer",
                     "n_head", "n_embd", "pad_multiple"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) > 0,
                 f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        need(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}.")
        need(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}.")
        need(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}.")
        need(0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}.")
        need(self.seed >= 0, f"seed must be >= 0, got {self.seed}.")
        for name in ("train_limit", "val_limit"):
            v = getattr(self, name)
            need(v is None or (isinstance(v, int) and v > 1), f"{name} must be None or an integer > 1, got {v!r}.")
        need(self.epochs is None or (isinstance(self.epochs, (int, float)) and self.epochs > 0),
             f"epochs must be None or > 0, got {self.epochs!r}.")
        need(isinstance(self.evals_per_epoch, int) and self.evals_per_epoch > 0,
             f"evals_per_epoch must be a positive integer, got {self.evals_per_epoch!r}.")
        need(0 <= self.dev_fraction < 0.5, f"dev_fraction must be in [0, 0.5), got {self.dev_fraction}.")
        need(isinstance(self.early_stopping, int) and self.early_stopping >= 0,
             f"early_stopping must be an integer >= 0 (validation passes without improvement), got "
             f"{self.early_stopping!r}.")
        need(self.adversarial in ADVERSARIAL, f"adversarial must be one of {ADVERSARIAL}, got {self.adversarial!r}.")
        need(self.adversarial_epsilon > 0 and self.adversarial_weight >= 0,
             f"adversarial_epsilon must be > 0 and adversarial_weight >= 0, got {self.adversarial_epsilon} and "
             f"{self.adversarial_weight}.")
        need(isinstance(self.teacher, str), f"teacher must be a path to a teacher file or '', got {self.teacher!r}.")
        need(0 < self.distill_weight <= 1, f"distill_weight must be in (0, 1], got {self.distill_weight}.")
        need(self.distill_temperature >= 1, f"distill_temperature must be >= 1, got {self.distill_temperature}.")
        need(self.lm_weight >= 0, f"lm_weight must be >= 0, got {self.lm_weight}.")
        need(not self.lm_weight or (isinstance(self.init, str) and self.init.startswith("lm:")),
             "lm_weight > 0 needs a pre-trained backbone with its next-token output: --init lm:<backbone.pt>.")
        need(not (self.lm_weight and self.adversarial != "none"),
             "the auxiliary language-model loss and adversarial training are not combined: set one of them.")
        need(not (self.teacher and self.adversarial != "none"),
             "distillation and adversarial training are not combined: set teacher or adversarial, not both.")
        need(self.dev_fraction > 0 or not (self.keep_best or self.early_stopping),
             "keep_best and early_stopping choose on the development slice: give it with --set dev_fraction=0.1.")
        self.model_config(n_outputs=1)  # checks head/embedding divisibility, dropout ranges
        return self

    def model_config(self, n_outputs: int) -> ModelConfig:
        """The architecture: every ModelConfig field this config shares by name, and the head's outputs."""
        shared = {name: getattr(self, name) for name in ModelConfig.field_names() if hasattr(self, name)}
        return ModelConfig(**{**shared, "n_outputs": n_outputs})

    def identity(self) -> dict:
        """Everything the run's numbers depend on: the config without its local fields, the data by content
        (not by path), and the device type and precision it resolves to here (bf16 and fp32 runs of one seed
        differ, so they never share an id)."""
        core = {k: v for k, v in asdict(self).items()
                if k not in RUN_LOCAL_FIELDS and not (k in IDENTITY_NEUTRAL and v == IDENTITY_NEUTRAL[k])}
        core["device"], core["precision"] = self.population()
        core["source"] = data_identity(self.source)
        if self.init.startswith("lm:"):  # the backbone by content, not by where it lies
            core["init"] = "lm:" + self.backbone_sha256()
        if not self.teacher:  # no teacher: its weight and temperature compute nothing
            core.pop("distill_weight", None)
            core.pop("distill_temperature", None)
        else:  # the teacher by content too
            from nanogpt.core.artifacts import file_sha256

            if not Path(self.teacher).is_file():
                raise FileNotFoundError(f"teacher {self.teacher!r}: no such file. Fix: form it with `python -m "
                                        "nanogpt levers` (a distill arm) or give the path of one.")
            core["teacher"] = file_sha256(self.teacher)
        return core

    def population(self) -> tuple[str, str]:
        """(device type, precision) this config resolves to on this machine, e.g. ('cpu', 'fp32') on an AVX2-only
        CPU: the columns of runs.csv that keep bf16 and fp32 (or CPU and GPU) runs apart."""
        from nanogpt.core.runtime import resolve_device, resolve_precision

        device = resolve_device(self.device)
        return device.type, resolve_precision(self.precision, device)

    def backbone_sha256(self) -> str:
        """The sha256 of the `lm:` backbone file (a clear error when it is missing)."""
        from nanogpt.core.artifacts import file_sha256
        from nanogpt.run.backbone import backbone_path

        path = backbone_path(self.init)
        if path is None or not path.is_file():
            raise FileNotFoundError(f"init {self.init!r}: no backbone checkpoint there. Fix: pre-train one with "
                                    "`python -m nanogpt pretrain` and pass lm:<its backbone.pt>.")
        return file_sha256(path)

    def run_id(self) -> str:
        """Deterministic: the same computation always gets the same id (so a study can skip it)."""
        return f"{self.profile}-{self.loss}-seed{self.seed}-{stable_digest(self.identity(), 8)}"

    def arm(self) -> str:
        """The study arm this run belongs to: the loss, and what differs from the standard recipe."""
        name = self.loss + ("-paired" if self.head_init == "paired" else "")
        if (self.head_lr_scale, self.head_weight_decay_scale) != (1.0, 1.0):
            name += f"-headlr{self.head_lr_scale:g}-headwd{self.head_weight_decay_scale:g}"
        if self.init != "scratch":
            name += "-lm" if self.init.startswith("lm:") else f"-{self.init}"
        return name

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    loss: str
    seed: int
    val_accuracy: float
    val_loss: float
    metrics: dict
    history: "pandas.DataFrame"  # noqa: F821 (one row per validation pass)
    steps: int
    train_seconds: float
    tokens_per_second: float
    device: str
    precision: str
    row: dict = field(repr=False, default_factory=dict)
    resumed_from_step: int = 0  # the saved step this process started from (0: trained from the first step)

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "model.pt"
