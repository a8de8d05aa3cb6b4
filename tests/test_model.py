"""
model.py: GPT-2 layout, shapes, causality, tying, its plain generate (the engine's tests: test_engine.py).
Run: python -m pytest tests/test_model.py
"""

import math

import pytest
import torch

from model import GPT, GPTConfig

CFG = dict(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(**CFG)).eval()


def test_gpt2_layer_names_and_tying(model):
    names = set(model.state_dict())
    for name in ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.1.ln_1.weight",
                 "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_proj.weight",
                 "transformer.h.0.ln_2.bias", "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_proj.weight",
                 "transformer.ln_f.weight", "lm_head.weight"]:
        assert name in names, f"missing GPT-2 parameter name {name}"
    assert model.lm_head.weight is model.transformer.wte.weight, "wte and lm_head should be one tensor"


def test_shapes_and_initial_loss(model):
    idx = torch.randint(0, 50, (3, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 16, 50), f"training logits should be (B, T, vocab), got {tuple(logits.shape)}"
    assert abs(loss.item() - math.log(50)) < 0.5, f"an untrained model should be near ln(vocab), got {loss.item()}"
    logits, loss = model(idx)
    assert logits.shape == (3, 1, 50) and loss is None, "inference returns only the last position's logits"


def test_attention_is_causal(model):
    idx = torch.randint(0, 50, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % 50
    a, _ = model(idx, idx)
    b, _ = model(changed, changed)
    assert torch.allclose(a[0, :10], b[0, :10]), "a later token changed the logits of earlier positions"
    assert not torch.allclose(a[0, 10:], b[0, 10:]), "changing a token should change its own logits"


def test_too_long_sequence_is_refused(model):
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_crop_block_size(model):
    model.crop_block_size(8)
    assert model.transformer.wpe.weight.shape == (8, 32), "wpe should keep 8 positions"
    model(torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(ValueError):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_generate_shape_and_greedy(model):
    idx = torch.randint(0, 50, (2, 5))
    out = model.generate(idx, 30, temperature=0)  # runs past block_size 16: the window slides
    assert out.shape == (2, 35), f"generate should append 30 tokens, got {tuple(out.shape)}"
    assert torch.equal(out[:, :5], idx), "the prompt must be kept"
    torch.manual_seed(1)
    top1 = model.generate(idx, 30, temperature=1.0, top_k=1)
    assert torch.equal(out, top1), "top_k=1 sampling should equal greedy decoding"


def test_optimizer_groups_decay_only_matrices(model):
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]), "only matrices should be decayed"
    assert all(p.dim() < 2 for p in no_decay["params"]), "biases and norms should not be decayed"
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters()), "every parameter should be in one group"


def test_estimate_mfu_scales_with_speed(model):
    slow, fast = model.estimate_mfu(1000, 2.0), model.estimate_mfu(1000, 1.0)
    assert slow > 0 and abs(fast / slow - 2.0) < 1e-9, "twice the speed should be twice the MFU"
