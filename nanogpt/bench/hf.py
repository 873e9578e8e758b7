"""The obvious alternative, for reference: Hugging Face `GPT2ForSequenceClassification` and its `Trainer`.

Needs the optional packages of requirements-bench.txt (transformers, accelerate); nothing outside the bench
imports this module.
"""
from __future__ import annotations

import tempfile
import time

import numpy as np
import torch

from nanogpt.core.runtime import resolve_precision
from nanogpt.data.imdb import load_splits
from nanogpt.data.tokenizer import EOT_TOKEN


def hf_model(cfg, n_outputs: int):
    """HF's GPT-2 classifier with `cfg`'s shape, dropout and SDPA attention (random weights)."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    hf_cfg = GPT2Config(vocab_size=50257, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                        n_head=cfg.n_head, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
                        attn_pdrop=cfg.attn_dropout, num_labels=n_outputs, pad_token_id=EOT_TOKEN)
    return GPT2ForSequenceClassification._from_config(hf_cfg, attn_implementation="sdpa")


def hf_step(model, optimizer, criterion, device: torch.device, precision: str):
    """One training step of the HF model on our (ids, lengths, labels) batches, fed as a HF user would:
    pad id EOT and an attention mask."""
    from nanogpt.core.runtime import autocast

    def step(x, lengths, y):
        mask = (torch.arange(x.size(1), device=x.device)[None, :] < lengths[:, None]).long()
        ids = torch.where(mask.bool(), x, torch.full_like(x, EOT_TOKEN))
        with autocast(device, precision):
            logits = model(input_ids=ids, attention_mask=mask).logits
        loss = criterion.loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


class PaddedReviews(torch.utils.data.Dataset):
    """Reviews as a user of the HF stack feeds them: every one padded to the block size, with a mask."""

    def __init__(self, split, block_size: int, pad_id: int = EOT_TOKEN):
        self.split, self.block_size, self.pad_id = split, block_size, pad_id

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict:
        ids = torch.from_numpy(self.split.ids(i).astype(np.int64))
        input_ids = torch.full((self.block_size,), self.pad_id, dtype=torch.long)
        input_ids[: len(ids)] = ids
        mask = torch.zeros(self.block_size, dtype=torch.long)
        mask[: len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "labels": int(self.split.labels[i])}


def hf_trainer_seconds_to_accuracy(cfg, target: float = 0.85, eval_steps: int = 100) -> dict:
    """Wall seconds until HF `GPT2ForSequenceClassification`, trained by the HF `Trainer` at `cfg`'s model,
    batch size, learning rate and schedule (warmup, cosine to min_lr_ratio) on inputs padded to the block size,
    first reaches `target` accuracy on the same validation reviews; evaluations included, as for ours.
    Training stops at the hit (or at cfg.max_steps)."""
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    train_split, val_split = load_splits(cfg)
    precision = resolve_precision(cfg.precision, torch.device("cpu"))

    class StopAtTarget(TrainerCallback):
        def __init__(self):
            self.t0, self.seconds, self.step, self.curve = 0.0, None, None, []

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            acc = float(metrics["eval_accuracy"])
            self.curve.append((state.global_step, acc, time.perf_counter() - self.t0))
            if acc >= target and self.seconds is None:
                self.seconds, self.step = time.perf_counter() - self.t0, state.global_step
                control.should_training_stop = True

    def accuracy(pred) -> dict:
        return {"accuracy": float((np.asarray(pred.predictions).argmax(-1) == pred.label_ids).mean())}

    torch.manual_seed(cfg.seed)
    model = hf_model(cfg, 2)
    stop = StopAtTarget()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, use_cpu=True, bf16=precision == "bf16", seed=cfg.seed, max_steps=cfg.max_steps,
            per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
            learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, adam_beta1=cfg.beta1,
            adam_beta2=cfg.beta2, max_grad_norm=cfg.grad_clip, warmup_steps=cfg.warmup_steps,
            lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": cfg.min_lr_ratio},
            optim="adamw_torch_fused", eval_strategy="steps", eval_steps=eval_steps, save_strategy="no",
            logging_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, train_dataset=PaddedReviews(train_split, cfg.block_size),
                          eval_dataset=PaddedReviews(val_split, cfg.block_size), compute_metrics=accuracy,
                          callbacks=[stop])
        trainer.remove_callback(PrinterCallback)  # the bench prints one line; no per-evaluation dicts
        trainer.train()
    return {"hf_trainer_seconds_to_85": stop.seconds, "hf_trainer_step_at_85": stop.step,
            "hf_trainer_curve": stop.curve, "hf_trainer_precision": precision}
