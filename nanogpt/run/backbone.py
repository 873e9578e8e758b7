"""Pre-trained backbones as files: what a backbone checkpoint records, reading one back, and putting it into a
classifier (`train --init lm:<checkpoint>`) only when it fits.

A finished classifier (a run's model.pt, or a `safetensors` export such as the shipped model) is a starting point
too: its transformer is read as a backbone (its head is left behind, the new run draws its own), recorded with
the data and split it was trained on, so the same checks apply. Unlike a pre-trained backbone it has read its
training reviews' labels as well as their texts.

A backbone checkpoint is self-describing: its architecture, the tokenizer (by the sha256 of its BPE files),
the data it read (source content, split seed, validation fraction and the digest of the training reviews' row
numbers) and its pre-training config. A classifier can start from it only when the architecture matches and
its own split is the one the backbone was pre-trained on: a backbone pre-trained on another split has read
reviews that the classifier would be scored on. Every mismatch is one clear error.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import torch

from nanogpt.data.imdb import SOURCES, data_identity
from nanogpt.data.tokenizer import ENCODER_JSON_SHA256, TOKENIZER_NAME, VOCAB_BPE_SHA256
from nanogpt.run.checkpoints import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, load_failure_reason

BACKBONE_FORMAT = "nanogpt-imdb-backbone/1"
INIT_PREFIX = "lm:"
# ModelConfig fields a classifier must share with its backbone (block_size may be smaller; dropout is free).
ARCHITECTURE = ("vocab_size", "n_layer", "n_head", "n_embd", "bias", "gelu")


def tokenizer_record() -> dict:
    return {"name": TOKENIZER_NAME, "vocab_bpe_sha256": VOCAB_BPE_SHA256, "encoder_json_sha256": ENCODER_JSON_SHA256}


def backbone_data_record(source: str, split_seed: int, val_fraction: float, review_ids: np.ndarray,
                         n_unlabelled: int = 0) -> dict:
    """What the backbone read: the data by content, the split, the digest of its reviews' row numbers, and how
    many of the Hub's unlabelled reviews besides."""
    ids = np.asarray(review_ids, dtype=np.int64)
    return {"identity": data_identity(source), "split_seed": int(split_seed), "val_fraction": float(val_fraction),
            "n_reviews": int(len(ids)), "review_ids_sha256": hashlib.sha256(ids.tobytes()).hexdigest(),
            "unlabelled_reviews": int(n_unlabelled), "tokenizer": tokenizer_record()}


def backbone_path(init: str) -> Path | None:
    """The checkpoint path of an `lm:<path>` init, else None."""
    return Path(init[len(INIT_PREFIX):]) if isinstance(init, str) and init.startswith(INIT_PREFIX) else None


def load_backbone(path: str | Path) -> dict:
    """A backbone checkpoint written by `pretrain` (weights only: nothing in the file is executed). Read once per
    file version (path, size, modification time) in a process: a run builds its model from it and names it in
    its row, and a study fine-tunes many runs from one backbone. Callers must not modify what it returns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No backbone checkpoint at {path}. Fix: pre-train one with `python -m nanogpt "
                                "pretrain` and pass its backbone.pt (results/backbones/<id>/backbone.pt).")
    stat = path.stat()
    return _read_backbone(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _read_backbone(path: str, size: int, mtime_ns: int) -> dict:
    if path.endswith(".safetensors"):
        return backbone_of_classifier(load_checkpoint(path), path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable backbone checkpoint ({load_failure_reason(exc)}).") from exc
    if isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT:
        return backbone_of_classifier(ckpt, path)  # read once: torch.load above is load_checkpoint's own read
    if not isinstance(ckpt, dict) or ckpt.get("format") != BACKBONE_FORMAT:
        raise CheckpointError(f"{path} is not a backbone (format {ckpt.get('format') if isinstance(ckpt, dict) else None!r}"
                              f"), nor a classifier of this project. Fix: pass the backbone.pt that `python -m nanogpt "
                              "pretrain` wrote, or a finished run's model.pt.")
    return ckpt


def backbone_of_classifier(ckpt: dict, path: str | Path) -> dict:
    """A classifier checkpoint as a backbone record: its transformer weights (fp32), its architecture, and the data
    and split it was trained on (which must be here to be identified). No next-token output: a run from it cannot
    take the auxiliary language-model loss."""
    from nanogpt.core.artifacts import file_sha256

    missing = [k for k in ("model_state", "model_config") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}; it was not written by nanogpt.run.train.")
    cfg = ckpt.get("train_config") or {}
    if not {"source", "split_seed", "val_fraction"} <= set(cfg):
        raise CheckpointError(f"{path} does not record the data it was trained on (no train_config): it cannot be "
                              "checked against a run's split. Fix: start from a run trained by this version.")
    try:
        identity = data_identity(cfg["source"])
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} was trained on {cfg['source']!r}, which is not here to identify "
                              f"({type(exc).__name__}): a start is checked against the data it read.") from exc
    state = {k: v.float() for k, v in ckpt["model_state"].items() if k.startswith("transformer.")}
    return {"format": BACKBONE_FORMAT, "backbone_id": f"classifier-{Path(path).stem}-{file_sha256(path)[:8]}",
            "model_config": ckpt["model_config"], "backbone_state": state, "from_classifier": True,
            "data": {"identity": identity, "split_seed": int(cfg["split_seed"]),
                     "val_fraction": float(cfg["val_fraction"]),
                     "tokenizer": tokenizer_record() if ckpt.get("tokenizer") == TOKENIZER_NAME else
                     {"name": ckpt.get("tokenizer")}}}


def check_fits(ckpt: dict, cfg, path: str | Path = "backbone") -> None:
    """Raise a ValueError naming every way the classifier run `cfg` (a TrainConfig) does not fit the backbone."""
    arch, data = ckpt["model_config"], ckpt["data"]
    model_config = cfg.model_config(n_outputs=1)
    problems = []
    for name in ARCHITECTURE:
        ours = getattr(model_config, name)
        if ours != arch[name]:
            problems.append(f"{name} {ours!r} (the backbone has {arch[name]!r})")
    if cfg.block_size > arch["block_size"]:
        problems.append(f"block_size {cfg.block_size} (the backbone learned {arch['block_size']} positions)")
    if data["tokenizer"] != tokenizer_record():
        problems.append("the tokenizer (the backbone's BPE files differ from this installation's)")
    # A file of one's own may start from a backbone pre-trained on IMDB: the backbone read other texts, so the data
    # and split checks (which keep a run's validation reviews out of its backbone's reading) do not apply. A file
    # cut from the bundled training reviews can still hold texts the backbone read: make such files from the
    # validation part.
    own_file = cfg.source not in SOURCES and data["identity"].get("kind") in SOURCES
    if data["identity"] != data_identity(cfg.source) and not own_file:
        problems.append(f"data {cfg.source!r} (the backbone read {data['identity']})")
    if (data["split_seed"], data["val_fraction"]) != (cfg.split_seed, cfg.val_fraction) and not own_file:
        problems.append(f"split (seed {cfg.split_seed}, val_fraction {cfg.val_fraction}); the backbone read the "
                        f"training reviews of split seed {data['split_seed']}, val_fraction {data['val_fraction']}, "
                        "so it has read reviews this run would be scored on")
    if own_file and not problems:
        seen, n_val = validation_texts_read(cfg, data)
        if seen > max(2, n_val // 100):
            what = "texts and labels" if ckpt.get("from_classifier") else "texts"
            raise ValueError(f"The backbone {path} does not fit this run: {seen} of this file's {n_val} validation "
                             f"texts begin as {data['identity']['kind']} training reviews do, whose {what} it has "
                             "read, so its scores on them would not be measurements. Fix: make the file from IMDB's "
                             "validation part, or start from scratch.")
    if problems:
        raise ValueError(f"The backbone {path} does not fit this run: " + "; ".join(problems) +
                         ". Fix: fine-tune with the backbone's settings (e.g. --profile ft) or pre-train a backbone "
                         "for these.")


_SIGNATURE = 48  # letters and digits that identify a text's beginning


def _signature(text: str) -> str:
    return "".join(ch for ch in text.replace("<br />", " ").lower() if ch.isalnum())[:_SIGNATURE]


def validation_texts_read(cfg, data: dict) -> tuple[int, int]:
    """(how many of the run's validation texts begin as one of the start's training reviews, how many there are):
    a file cut from the reviews a backbone or classifier read (e.g. their first sentences) would score it on what it
    has seen. Texts too short to identify (under 48 letters and digits) are not counted."""
    from nanogpt.data.imdb import load_imdb

    read = {_signature(t) for t in load_imdb(data["identity"]["kind"], data["split_seed"],
                                             data["val_fraction"])["train"]["text"]}
    texts = load_imdb(cfg.source, cfg.split_seed, cfg.val_fraction)["validation"]["text"]
    signatures = [_signature(t) for t in texts]
    return sum(len(sig) == _SIGNATURE and sig in read for sig in signatures), len(signatures)


def load_into(model, ckpt: dict) -> None:
    """Copy the backbone's weights into a classifier (positions cut to the classifier's block size)."""
    own = model.state_dict()
    state = dict(ckpt["backbone_state"])
    wpe = "transformer.wpe.weight"
    state[wpe] = state[wpe][: own[wpe].shape[0]]
    missing = [k for k in own if k.startswith("transformer.") and k not in state]
    unknown = [k for k in state if k not in own]
    if missing or unknown:
        raise CheckpointError(f"The backbone's weights do not match the classifier: missing {missing[:3]}, "
                              f"unknown {unknown[:3]}.")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)
