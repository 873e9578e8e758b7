import pytest
import torch

from nanogpt.core.model import GPTClassifier, ModelConfig


def small(**kw):
    base = dict(vocab_size=1000, block_size=64, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize("n_outputs", [1, 2])
def test_padding_does_not_change_logits(pooling, n_outputs):
    torch.manual_seed(0)
    model = GPTClassifier(small(pooling=pooling, n_outputs=n_outputs)).eval()
    review = torch.randint(0, 1000, (17,))
    outs = []
    for total in (17, 24, 40, 64):
        x = torch.full((1, total), 999)  # pad id: any id works, it is never attended to
        x[0, :17] = review
        outs.append(model(x, torch.tensor([17])))
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], atol=1e-5, rtol=1e-5)
    assert outs[0].shape == (1, n_outputs)


def test_batch_of_mixed_lengths_matches_one_by_one():
    torch.manual_seed(0)
    model = GPTClassifier(small()).eval()
    seqs = [torch.randint(0, 1000, (n,)) for n in (5, 30, 12)]
    x = torch.zeros(3, 30, dtype=torch.long)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = s
    batched = model(x, torch.tensor([5, 30, 12]))
    single = torch.cat([model(s[None]) for s in seqs])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_pooling_differs_and_dropout_is_off_in_eval():
    torch.manual_seed(0)
    x = torch.randint(0, 1000, (2, 20))
    mean = GPTClassifier(small(pooling="mean", dropout=0.5))
    last = GPTClassifier(small(pooling="last", dropout=0.5))
    last.load_state_dict(mean.state_dict())
    mean.eval(), last.eval()
    assert not torch.allclose(mean(x), last(x))
    torch.testing.assert_close(mean(x), mean(x))
    mean.train()
    assert not torch.allclose(mean(x), mean(x))  # dropout active in training


def test_loads_hugging_face_gpt2_backbone():
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    hf_cfg = GPT2Config(vocab_size=1000, n_positions=64, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0)
    hf = GPT2Model(hf_cfg).eval()
    ours = GPTClassifier(small(gelu="tanh")).eval()
    ours.load_hf_backbone(hf.state_dict())
    x = torch.randint(0, 1000, (3, 40))
    with torch.no_grad():
        expected = hf(x).last_hidden_state
        got = ours.hidden_states(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_hf_shape_mismatch_is_clear():
    from transformers import GPT2Config, GPT2Model

    hf = GPT2Model(GPT2Config(vocab_size=1000, n_positions=64, n_embd=64, n_layer=2, n_head=2))
    with pytest.raises(ValueError, match="does not fit"):
        GPTClassifier(small()).load_hf_backbone(hf.state_dict())


def test_pretrained_offline_says_it_cannot(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConnectionError, match="need a network.*--init scratch"):
        GPTClassifier.from_pretrained_gpt2(small(), name="gpt2-this-does-not-exist-offline")


def test_optimizer_decays_matrices_only():
    model = GPTClassifier(small())
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("kw, match", [(dict(n_embd=30, n_head=4), "divisible"), (dict(pooling="max"), "pooling"),
                                       (dict(n_outputs=3), "n_outputs"), (dict(dropout=1.0), "dropout")])
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        small(**kw)


def test_unknown_attention_kernel_is_refused():
    with pytest.raises(ValueError, match="attention must be one of"):
        GPTClassifier(small(), attention="flash")


def test_too_long_input_is_refused():
    with pytest.raises(ValueError, match="longer than block_size"):
        GPTClassifier(small())(torch.zeros(1, 65, dtype=torch.long))


def test_cpu_dropout_rate_scale_and_eval():
    from nanogpt.core.kernels import ByteMaskDropout

    torch.manual_seed(0)
    drop = ByteMaskDropout(0.1)
    x = torch.ones(200, 1000)
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 26 / 256) < 0.003  # p rounded to a multiple of 1/256
    assert abs(y.mean().item() - 1.0) < 0.01  # expectation kept
    values = torch.unique(y).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(256 / 230)
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # seeded by torch's generator: deterministic
    drop.eval()
    assert torch.equal(drop(x), x)
    xg = torch.ones(10, 10, requires_grad=True)
    drop.train()
    out = drop(xg)
    out.sum().backward()
    assert torch.equal(xg.grad, out.detach())  # gradient flows through kept elements only, same scale


@pytest.mark.parametrize("B,T", [(5, 1), (7, 33), (3, 64)])
def test_chunked_attention_matches_sdpa_forward_and_backward(monkeypatch, B, T):
    """The bf16 CPU training path against fp32 SDPA: outputs and all three gradients, chunks of 2 rows."""
    import torch.nn.functional as F

    from nanogpt.core import kernels
    monkeypatch.setattr(kernels, "ATTENTION_CHUNK_ELEMENTS", 2 * 2 * T * T)  # 2 batch rows per chunk
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, 2, T, 16) for _ in range(3))
    grad = torch.randn(B, 2, T, 16)

    def run(fn, dtype):
        leaves = [t.to(dtype).requires_grad_() for t in (q, k, v)]
        out = fn(*leaves)
        out.backward(grad.to(dtype))
        return [out.float()] + [t.grad.float() for t in leaves]

    assert kernels.use_chunked_attention(q.bfloat16())
    assert not kernels.use_chunked_attention(q)  # fp32 keeps SDPA
    ours = run(kernels.chunked_causal_attention, torch.bfloat16)
    ref = run(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), torch.float32)
    for name, a, b in zip(("out", "dq", "dk", "dv"), ours, ref):
        err = (a - b).abs().max().item()
        assert err < 0.05 * max(1.0, b.abs().max().item()), (name, err)


@pytest.mark.parametrize("attention", ["auto", "sdpa"])
def test_bf16_forward_keeps_padding_invariance(monkeypatch, attention):
    """Under bf16 autocast, with either attention path, real tokens still never see pads."""
    from nanogpt.core import kernels
    calls = []
    real = kernels.chunked_causal_attention
    monkeypatch.setattr(kernels, "chunked_causal_attention", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    model = GPTClassifier(small(n_outputs=1, pooling="last"), attention).eval()
    review = torch.randint(0, 1000, (17,))
    outs = []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for total in (17, 40, 64):
            x = torch.full((1, total), 999)
            x[0, :17] = review
            outs.append(model(x, torch.tensor([17])).float())
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], atol=2e-2, rtol=2e-2)
    assert bool(calls) == (attention == "auto")  # "auto" took the chunked path on CPU, "sdpa" did not


@pytest.mark.parametrize("n_layer", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_the_last_block_at_the_pooled_token_alone_is_the_full_forward(n_layer, bias):
    """Serving's shortcut (last-token pooling, eval mode): the last block computed at each row's last real token
    only gives the full forward's logits, for rows of every length, the padding after them unseen."""
    torch.manual_seed(0)
    model = GPTClassifier(small(pooling="last", n_layer=n_layer, bias=bias, n_outputs=2, dropout=0.1)).eval()
    x = torch.randint(0, 1000, (6, 64))
    lengths = torch.tensor([1, 5, 17, 63, 64, 40])
    seen = []
    model.transformer.h[-1].mlp.c_fc.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    full = model(x, lengths)
    model.last_position_only = True
    fast = model(x, lengths)
    torch.testing.assert_close(fast, full, atol=1e-6, rtol=1e-5)
    assert seen == [(6, 64, 32), (6, 32)]  # the full forward ran the MLP at every position, the shortcut at one
    x[1, 5:] = 7  # what follows a row's last token changes nothing
    torch.testing.assert_close(model(x, lengths)[1], fast[1], atol=1e-6, rtol=1e-5)
    model.train()  # training (dropout, gradients everywhere) keeps the full forward
    torch.manual_seed(1)
    trained = model(x, lengths)
    model.last_position_only = False
    torch.manual_seed(1)
    torch.testing.assert_close(trained, model(x, lengths))
    with pytest.raises(RuntimeError, match="for inference"):
        model.last_position_state(x, lengths)


def test_mean_pooling_keeps_the_full_forward():
    torch.manual_seed(0)
    model = GPTClassifier(small(pooling="mean")).eval()
    x, lengths = torch.randint(0, 1000, (3, 20)), torch.tensor([3, 20, 11])
    full = model(x, lengths)
    model.last_position_only = True
    assert torch.equal(model(x, lengths), full)
