"""Adversarial and virtual adversarial training on the input embeddings.

Miyato, Dai and Goodfellow, "Adversarial training methods for semi-supervised text classification" (ICLR 2017):
perturb each training sequence's embeddings in the direction that hurts the model most, within a small norm, and
train on the perturbed sequence as well. On IMDB a language-model-pre-trained LSTM went from 7.39% to 6.21% error
(adversarial) and 5.91% (virtual adversarial) in their Table 2.

- `at` (adversarial): r = eps * g / |g|, g the gradient of the loss with respect to the sequence's embeddings; the
  extra term is the loss of the labels on embeddings + r.
- `vat` (virtual adversarial): the direction that most changes the model's own prediction, found by one power
  iteration from a random direction d (the gradient of KL(p(x) || p(x + xi d)) with respect to d); the extra term
  is KL(p(x) || p(x + r)). It needs no label, so it could read unlabelled texts; here it reads the training batch.

The paper normalises embeddings to unit variance and uses |r| = 5 over a whole sequence. Our embeddings are
GPT-style (token plus position, never normalised), so the size of r is relative: `epsilon` times the norm of
that sequence's own embeddings (its real tokens; padding is neither measured nor perturbed). A review of 256
tokens in 128 dimensions with unit-variance entries would have norm 181, so the paper's 5 is about 0.028 of it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ADVERSARIAL = ("none", "at", "vat")
XI_FRACTION = 0.1  # VAT's finite-difference step: a tenth of epsilon (only its direction is used)


def _sequence_norm(t: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1): the L2 norm of each sequence's (already masked) embeddings."""
    return t.float().pow(2).sum(dim=(1, 2), keepdim=True).sqrt()


def _unit(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    t = t.float() * mask
    return t / (_sequence_norm(t) + 1e-12)


def two_class_log_probs(criterion, logits: torch.Tensor) -> torch.Tensor:
    """(B, 2) log-probabilities of (negative, positive) for either criterion's logits."""
    if criterion.n_outputs == 1:
        z = logits.float().squeeze(-1)
        return torch.stack([F.logsigmoid(-z), F.logsigmoid(z)], dim=-1)
    return F.log_softmax(logits.float(), dim=-1)


def kl_divergence(criterion, p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(p || q) between the two-class distributions the logits give."""
    log_p, log_q = two_class_log_probs(criterion, p_logits), two_class_log_probs(criterion, q_logits)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def perturbation(model, criterion, kind: str, embedded: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor,
                 clean_logits: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The perturbation r (detached) of `kind` ('at' or 'vat') for a batch's embeddings."""
    mask = (torch.arange(embedded.size(1), device=embedded.device)[None, :] < lengths[:, None]).unsqueeze(-1)
    radius = epsilon * _sequence_norm(embedded.detach() * mask)
    if kind == "at":
        (g,) = torch.autograd.grad(criterion.loss(clean_logits, labels), embedded, retain_graph=True)
    elif kind == "vat":
        d = (XI_FRACTION * radius * _unit(torch.randn_like(embedded, dtype=torch.float32), mask)).requires_grad_()
        probe = model.forward_embedded(embedded.detach() + d.to(embedded.dtype), lengths)
        (g,) = torch.autograd.grad(kl_divergence(criterion, clean_logits.detach(), probe), d)
    else:
        raise ValueError(f"adversarial must be one of {ADVERSARIAL[1:]} here, got {kind!r}.")
    return (radius * _unit(g, mask)).to(embedded.dtype).detach()


def adversarial_objective(model, criterion, kind: str, x: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor,
                          epsilon: float, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(the clean loss, the objective to minimise: clean loss + weight * the adversarial term). `model` is the
    uncompiled GPTClassifier; call inside the run's autocast."""
    embedded = model.embed(x)
    logits = model.forward_embedded(embedded, lengths)
    loss = criterion.loss(logits, labels)
    r = perturbation(model, criterion, kind, embedded, lengths, labels, logits, epsilon)
    perturbed = model.forward_embedded(embedded + r, lengths)
    extra = criterion.loss(perturbed, labels) if kind == "at" else kl_divergence(criterion, logits.detach(), perturbed)
    return loss, loss + weight * extra
