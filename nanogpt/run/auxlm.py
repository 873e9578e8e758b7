"""An auxiliary language-model loss while fine-tuning (Radford et al. 2018, "Improving language understanding by
generative pre-training", GPT-1, section 3.2): the classifier keeps predicting the next token of the reviews it is
fine-tuned on, so that the backbone keeps what pre-training taught it while its head learns the labels. The
paper found that it helped on its larger datasets and not on its smaller ones.

The next-token output is the backbone's own: the adaptive softmax over frequency-ranked tokens that `pretrain`
trained with it and stores in the backbone file (`lm_output`; backbones written before that field cannot give
this loss, and say so in one line). It trains with the classifier at the backbone's learning rate
(`backbone_lr_scale`) in an optimizer of its own, is saved in the run's resumable state, and is thrown away with
the run: the classifier checkpoint never holds it. The step's objective is

    loss(labels) + lm_weight * mean next-token NLL over the batch's real tokens

where a position predicts the token after it only where both are real tokens of the same review (padding is
neither predicted nor predicts). The labels' loss alone is what the run's curve reports.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from nanogpt.core.model import decay_groups
from nanogpt.data.tokenizer import VOCAB_SIZE

LM_OUTPUT_KEY = "lm_output"


class AuxLMError(ValueError):
    """A backbone without its next-token output, or an output that does not fit the classifier."""


def lm_output_record(output: nn.AdaptiveLogSoftmaxWithLoss, rank: torch.Tensor, cutoffs, div_value: float) -> dict:
    """What a backbone file stores of its next-token output (weights, the token -> frequency rank map and shape)."""
    return {"state": {k: v.detach().cpu().clone() for k, v in output.state_dict().items()},
            "rank": rank.detach().cpu().clone(), "cutoffs": [int(c) for c in cutoffs], "div_value": float(div_value)}


class AuxLM(nn.Module):
    """The backbone's adaptive-softmax next-token output, trained beside the classifier."""

    def __init__(self, n_embd: int, cutoffs, div_value: float, rank: torch.Tensor):
        super().__init__()
        self.output = nn.AdaptiveLogSoftmaxWithLoss(n_embd, VOCAB_SIZE, cutoffs=list(cutoffs), div_value=div_value)
        self.register_buffer("rank", torch.as_tensor(rank, dtype=torch.long), persistent=True)

    @classmethod
    def from_backbone(cls, ckpt: dict, path) -> "AuxLM":
        record = ckpt.get(LM_OUTPUT_KEY)
        if ckpt.get("from_classifier"):
            raise AuxLMError(f"{path} is a classifier: it has no next-token output to give an auxiliary language-model "
                             "loss. Fix: set lm_weight=0, or start from a pre-trained backbone.pt.")
        if not isinstance(record, dict):
            raise AuxLMError(f"{path}: this backbone file has no next-token output (written before backbones kept "
                             "it), so it cannot give an auxiliary language-model loss. Fix: pre-train it again with "
                             "`python -m nanogpt pretrain` (the same recipe gives the same backbone), or set "
                             "lm_weight=0.")
        n_embd = int(ckpt["model_config"]["n_embd"])
        aux = cls(n_embd, record["cutoffs"], record["div_value"], record["rank"])
        try:
            aux.output.load_state_dict(record["state"])
        except RuntimeError as exc:
            raise AuxLMError(f"{path}: its next-token output does not fit a {n_embd}-dim backbone ({exc}).") from exc
        return aux

    def loss(self, h: torch.Tensor, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean next-token NLL (nats) of hidden states h (B, T, C) over every position t with t + 1 < length."""
        T = idx.size(1)
        real = torch.arange(T - 1, device=idx.device)[None, :] + 1 < lengths[:, None]  # (B, T - 1)
        inputs = h[:, :-1][real].float()
        targets = self.rank[idx[:, 1:][real]]
        if targets.numel() == 0:  # every review of the batch is one token long: nothing to predict
            return h.sum() * 0.0
        return self.output(inputs, targets).loss


def aux_lm_optimizer(aux: AuxLM, cfg, device_type: str) -> torch.optim.AdamW:
    """AdamW for the output, at the backbone's rate (its `lr_scale`, read by the loop's schedule) and decay on its
    matrices, as pre-training had it."""
    return torch.optim.AdamW(decay_groups(aux.parameters(), cfg.weight_decay, lr_scale=cfg.backbone_lr_scale), lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                             fused=device_type in ("cpu", "cuda"))
