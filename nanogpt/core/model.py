"""A GPT-2-architecture backbone with a classification head, in the spirit of karpathy/nanoGPT.

Pre-LayerNorm blocks, causal attention (SDPA, or on CPU in bf16 the chunked kernel of `kernels.py`), GELU MLP,
learned positions. Parameter names
and shapes follow nanoGPT, so a Hugging Face GPT-2 backbone loads by adding the `transformer.` prefix and
transposing its Conv1D weights (`load_hf_backbone`).

Padding is on the right and attention is causal, so a real token never sees a pad token: the hidden states of
real tokens, and therefore the pooled output, do not depend on how much padding follows. No padding mask is
needed, which keeps SDPA on its fast causal kernels (and lets the CPU bf16 path use one fixed causal mask).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn as nn

from nanogpt.core.kernels import ATTENTIONS, ByteMaskDropout, causal_attention

POOLINGS = ("mean", "last")
# ModelConfig fields that older checkpoints carry but that are not architecture; dropped on load.
_LEGACY_FIELDS = ("attention",)


@dataclass
class ModelConfig:
    vocab_size: int = 50257  # GPT-2 BPE
    block_size: int = 384  # longest input, in tokens (positions learned up to here)
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.1  # on embeddings, residual branches and before the head
    attn_dropout: float = 0.0  # dropout inside attention forces SDPA onto its slow path; 0 is ~2x faster
    bias: bool = True  # GPT-2 has biases in Linear and LayerNorm
    n_outputs: int = 2  # 2 for Cross-Entropy, 1 for Binary Cross-Entropy
    pooling: str = "mean"  # "mean" over real tokens, or "last" real token (as GPT-2 classifiers do)
    gelu: str = "tanh"  # "tanh" is GPT-2's "gelu_new" (needed for its weights); "none" is exact, 2x faster on CPU

    def __post_init__(self):
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}).")
        if self.pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {self.pooling!r}; use one of {POOLINGS}.")
        if self.n_outputs not in (1, 2):
            raise ValueError(f"n_outputs must be 1 (BCE) or 2 (CE), got {self.n_outputs}.")
        if self.gelu not in ("tanh", "none"):
            raise ValueError(f"gelu must be 'tanh' or 'none', got {self.gelu!r}.")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        """The config a checkpoint records; fields of older versions that are not architecture are ignored."""
        return cls(**{k: v for k, v in values.items() if k not in _LEGACY_FIELDS})

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig, attention: str = "auto"):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = ByteMaskDropout(config.dropout)
        self.n_head = config.n_head
        self.attn_dropout = config.attn_dropout
        self.attention = attention  # the kernel (kernels.ATTENTIONS): an execution detail, not in the config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = causal_attention(q, k, v, self.attn_dropout if self.training else 0.0, self.attention)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate=config.gelu)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = ByteMaskDropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, attention: str = "auto"):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, attention)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def decay_groups(params, weight_decay: float, **extra) -> list[dict]:
    """AdamW parameter groups: matrices and embeddings (dim >= 2) decayed, biases and norms not; `extra` (e.g.
    lr_scale) in both groups."""
    params = list(params)
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay, **extra},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, **extra}]


class GPTClassifier(nn.Module):
    def __init__(self, config: ModelConfig, attention: str = "auto"):
        """`attention` picks the kernel (`kernels.ATTENTIONS`); it changes speed and bf16 rounding only."""
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}.")
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=ByteMaskDropout(config.dropout),
                h=nn.ModuleList([Block(config, attention) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.head_dropout = ByteMaskDropout(config.dropout)
        self.head = nn.Linear(config.n_embd, config.n_outputs)
        # Serving only (Classifier sets it): with last-token pooling, in eval mode, the last block runs at the
        # pooled position alone (`last_position_state`). Training and the studies keep the full forward.
        self.last_position_only = False
        self.apply(self._init_weights)
        # GPT-2: scale residual projections by 1/sqrt(2 * n_layer) so the residual stream keeps its variance.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token plus position embeddings, shape (B, T, n_embd), before dropout: what adversarial training
        perturbs (run/adversarial.py)."""
        T = idx.size(1)
        if T > self.config.block_size:
            raise ValueError(f"Input of {T} tokens is longer than block_size {self.config.block_size}.")
        pos = torch.arange(T, device=idx.device)
        return self.transformer.wte(idx) + self.transformer.wpe(pos)

    def hidden_states(self, idx: torch.Tensor, embedded: torch.Tensor | None = None) -> torch.Tensor:
        """Final-LayerNorm hidden states, shape (B, T, n_embd), of `idx` or of given `embedded` inputs."""
        x = self.transformer.drop(self.embed(idx) if embedded is None else embedded)
        for block in self.transformer.h:
            x = block(x)
        return self.transformer.ln_f(x)

    def last_position_state(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The final-LayerNorm hidden state at each row's last real token, shape (B, n_embd), in eval mode, with the
        last block computed at that position only: under last-token pooling nothing else of that block reaches the
        logits. Its keys and values still cover every position up to it, so the result is the full forward's
        `pool(hidden_states(idx), lengths)` to float rounding, for about half the work of a 2-layer model."""
        if self.training:
            raise RuntimeError("last_position_state is for inference: call model.eval() first.")
        x = self.embed(idx)
        *body, last = self.transformer.h
        for block in body:
            x = block(x)
        B, T, C = x.shape
        H, at = last.attn.n_head, lengths - 1
        rows = torch.arange(B, device=x.device)
        h = last.ln_1(x)
        w, b = last.attn.c_attn.weight, last.attn.c_attn.bias
        q = nn.functional.linear(h[rows, at], w[:C], None if b is None else b[:C]).view(B, H, 1, C // H)
        k, v = (t.view(B, T, H, C // H).transpose(1, 2)
                for t in nn.functional.linear(h, w[C:], None if b is None else b[C:]).split(C, dim=2))
        keys = torch.arange(T, device=x.device)[None, :] <= at[:, None]  # what the causal mask lets it see
        y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keys[:, None, None, :])
        x = x[rows, at] + last.attn.c_proj(y.reshape(B, C))
        return self.transformer.ln_f(x + last.mlp(last.ln_2(x)))

    def pool(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """One vector per sequence from its real (non-pad) tokens; padding is on the right."""
        if self.config.pooling == "last":
            return h[torch.arange(h.size(0), device=h.device), lengths - 1]
        mask = (torch.arange(h.size(1), device=h.device)[None, :] < lengths[:, None]).to(h.dtype)
        return (h * mask.unsqueeze(-1)).sum(1) / lengths.to(h.dtype).unsqueeze(-1)

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of shape (B, n_outputs). idx: (B, T) right-padded ids; lengths: real tokens per row."""
        if lengths is None:
            lengths = torch.full((idx.size(0),), idx.size(1), dtype=torch.long, device=idx.device)
        if self.last_position_only and self.config.pooling == "last" and not self.training:
            return self.head(self.last_position_state(idx, lengths))  # head dropout is off in eval mode
        return self.classify(self.hidden_states(idx), lengths)

    def classify(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits from hidden states: pooled, dropout, head."""
        return self.head(self.head_dropout(self.pool(h, lengths)))

    def forward_embedded(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits of inputs given as embeddings (`embed`'s output, perhaps perturbed)."""
        return self.classify(self.hidden_states(None, embedded), lengths)

    # ------------------------------------------------------------------------------------ optimisation

    def configure_optimizers(self, weight_decay: float, learning_rate: float, betas: tuple[float, float],
                             device_type: str, head_lr_scale: float = 1.0,
                             head_weight_decay_scale: float = 1.0, backbone_lr_scale: float = 1.0) -> torch.optim.AdamW:
        """AdamW with decoupled weight decay on matrices (and embeddings) only; biases and norms undecayed.

        Every group carries an `lr_scale` (the loop sets lr = schedule x lr_scale). With a head scale other
        than 1 the head gets groups of its own: its learning rate times `head_lr_scale`, its weight decay
        times `head_weight_decay_scale` (AdamW decays by lr x weight_decay, so both scales multiply it). The rest
        (backbone, and the head unless it has groups of its own) learns at `backbone_lr_scale` times the rate."""
        own_head = (head_lr_scale, head_weight_decay_scale, backbone_lr_scale) != (1, 1, 1)
        head = {id(p) for p in self.head.parameters()} if own_head else set()
        params = [p for p in self.parameters() if p.requires_grad and id(p) not in head]
        groups = decay_groups(params, weight_decay, lr_scale=backbone_lr_scale)
        if head:
            groups += [{"params": [self.head.weight], "lr_scale": head_lr_scale,
                        "weight_decay": weight_decay * head_weight_decay_scale},
                       {"params": [self.head.bias], "weight_decay": 0.0, "lr_scale": head_lr_scale}]
        fused = "fused" in inspect.signature(torch.optim.AdamW).parameters and device_type in ("cuda", "cpu")
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({"fused": True} if fused else {}))

    def paired_ce_head(self) -> "GPTClassifier":
        """Turn this 1-output (BCE) model into a 2-output (CE) model computing exactly the same function.

        CE over logits (a, b) is BCE over b - a, so rows (-w/2, w/2) and biases (-c/2, c/2) give a CE head whose
        logit difference is the BCE head's logit w.h + c. A CE model built this way from the same seed as a
        BCE model shares its backbone and its initial predictions, and (having drawn the same random numbers)
        its dropout masks and batches: what is left between the two is how the optimiser sees the head."""
        if self.config.n_outputs != 1:
            raise ValueError("paired_ce_head starts from a 1-output (BCE) model.")
        w, c = self.head.weight.detach(), self.head.bias.detach()
        rng = torch.get_rng_state()  # nn.Linear draws an init we overwrite: leave the stream as BCE's is
        head = nn.Linear(self.config.n_embd, 2).to(w.device, w.dtype)
        torch.set_rng_state(rng)
        with torch.no_grad():
            head.weight.copy_(torch.cat([-w / 2, w / 2]))
            head.bias.copy_(torch.cat([-c / 2, c / 2]))
        self.head = head
        self.config = replace(self.config, n_outputs=2)
        return self

    # -------------------------------------------------------------------------------- Hugging Face GPT-2

    def load_hf_backbone(self, hf_state_dict: dict[str, torch.Tensor]) -> None:
        """Copy a Hugging Face `GPT2Model` state dict into the backbone (the head is left as initialised)."""
        transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        own = self.state_dict()
        copied = set()
        for key, value in hf_state_dict.items():
            if key.split(".")[-2:] in (["attn", "bias"], ["attn", "masked_bias"]):  # old causal-mask buffers
                continue
            name = "transformer." + key.removeprefix("transformer.")
            if name not in own:
                raise KeyError(f"Hugging Face parameter {key!r} has no counterpart ({name!r}) in this model.")
            value = value.t() if key.endswith(transposed) else value
            if value.shape != own[name].shape:
                raise ValueError(f"{key}: shape {tuple(value.shape)} does not fit {tuple(own[name].shape)}.")
            with torch.no_grad():
                own[name].copy_(value)
            copied.add(name)
        missing = [k for k in own if k.startswith("transformer.") and k not in copied]
        if missing:
            raise KeyError(f"The Hugging Face state dict lacks {missing[:5]}{' ...' if len(missing) > 5 else ''}.")

    @classmethod
    def from_pretrained_gpt2(cls, config: ModelConfig, name: str = "gpt2", attention: str = "auto") -> "GPTClassifier":
        """A classifier whose backbone starts from pretrained GPT-2 weights (needs a network or HF cache)."""
        try:
            from transformers import GPT2Model
        except ImportError as exc:
            raise ImportError("--init gpt2 needs the optional 'transformers' package. Fix: pip install "
                              "-r requirements-bench.txt (or `make setup`).") from exc
        try:
            hf = GPT2Model.from_pretrained(name)
        except Exception as exc:
            raise ConnectionError(
                f"Cannot load pretrained '{name}' weights: {type(exc).__name__}: {str(exc).splitlines()[0]}. "
                "They come from the Hugging Face Hub and need a network (or a local HF cache). "
                "Fix: use --init scratch, which trains from random weights."
            ) from exc
        hc = hf.config
        shape = dict(vocab_size=hc.vocab_size, n_layer=hc.n_layer, n_head=hc.n_head, n_embd=hc.n_embd)
        cfg = ModelConfig(**{**asdict(config), **shape, "gelu": "tanh",
                             "block_size": min(config.block_size, hc.n_positions)})
        model = cls(cfg, attention)
        sd = hf.state_dict()
        sd["wpe.weight"] = sd["wpe.weight"][: cfg.block_size]
        model.load_hf_backbone(sd)
        return model
