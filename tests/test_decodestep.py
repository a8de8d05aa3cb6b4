"""
babygpt/decodestep.py, the one-token step on a CPU: the same logits as the model's own forward with the cache, for
both weight layouts and with or without biases; the same tokens through the engine; the model's forward where the
step does not apply; laid-out weights rebuilt when the model's weights change.
Run: python -m pytest tests/test_decodestep.py
"""

import os

import pytest
import torch

from babygpt import decodestep
from babygpt.decodestep import DecodeStep, decode_step
from babygpt.engine import KVCache, generate, next_logits, row_generators, sample_next
from model import GPT, GPTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = dict(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=32, dropout=0.0)


def sharp(bias=True, seed=0, **cfg):
    """Weights large enough that attention decides the next token, not just the last one (GPT-2's init scale
    would let a wrong cache still give the same tokens)."""
    torch.manual_seed(seed)
    m = GPT(GPTConfig(**dict(CFG, bias=bias, **cfg))).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.5)
    return m


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows", [1, 3])  # one row: the transposed layout; more: oneDNN's packed one where torch has it
def test_step_logits_are_the_model_s_forward_with_the_cache(bias, rows):
    model = sharp(bias)
    step = decode_step(model, rows)
    assert isinstance(step, DecodeStep), "a float32 GPT on the CPU should get the laid-out step"
    idx = torch.randint(0, 50, (rows, 16))
    ours, theirs = KVCache(model.config, rows), KVCache(model.config, rows)
    with torch.inference_mode():
        model(idx[:, :4], kv_cache=ours)
        model(idx[:, :4], kv_cache=theirs)
        for t in range(4, 16):
            got = step(idx[:, t], ours)  # (rows, vocab)
            want = model(idx[:, t:t + 1], kv_cache=theirs)[0][:, -1]  # (rows, vocab)
            assert torch.allclose(got, want, atol=1e-4), \
                f"position {t}: the step's logits differ from the model's by {(got - want).abs().max():.2e}"
            assert ours.pos == theirs.pos == t + 1, f"the step should move the cache on by one, pos {ours.pos}"
        want_full = model(idx)[0][:, -1]  # the whole context re-run, no cache
        assert torch.allclose(got, want_full, atol=1e-4), "the step's last logits should match an uncached forward"
        with pytest.raises(ValueError, match="longer than block_size"):
            step(idx[:, 0], ours)  # the cache is full: the engine refills it, a direct call is refused


def test_layout_follows_the_batch():
    assert decodestep.layout(1) == "transposed", "one row should use the transposed weight"
    assert decodestep.layout(10) == ("packed" if decodestep.onednn_works() else "transposed"), \
        "several rows should use oneDNN's packed weight where torch has oneDNN"


def steps_by_hand(model, rows, n, step):
    """The engine's cached loop written out, with step as the one-token forward (None: the model's own)."""
    idx, cache, gens = torch.zeros((rows, 1), dtype=torch.long), None, row_generators(range(rows))
    with torch.inference_mode():
        for _ in range(n):
            logits, cache = next_logits(model, idx, cache, True, step)
            idx = torch.cat((idx, sample_next(logits, 0.8, 20, None, gens)), dim=1)
    return idx


@pytest.mark.parametrize("rows", [1, 4])
def test_the_step_samples_the_tokens_the_model_s_forward_samples(rows):
    model = sharp()
    n = 3 * model.config.block_size  # past the context: two refills of the cache
    want = steps_by_hand(model, rows, n, None)
    got = steps_by_hand(model, rows, n, decode_step(model, rows))
    assert torch.equal(got, want), f"the laid-out step changed the sampled tokens: {got[0].tolist()} vs {want[0].tolist()}"


@pytest.mark.slow
def test_the_shipped_model_samples_the_same_text_with_the_step():
    import sample
    model = sample.load_model("resume", os.path.join(ROOT, "pretrained", "hlm"), "cpu", warn=lambda line: None)[0]
    model.eval()
    for rows in (1, 5):
        want = steps_by_hand(model, rows, 150, None)
        got = steps_by_hand(model, rows, 150, decode_step(model, rows))
        assert torch.equal(got, want), f"{rows} rows: pretrained/hlm's samples changed with the laid-out step"


def test_the_model_s_forward_runs_where_the_step_does_not_apply():
    cases = {"training mode": sharp().train(),
             "the adaptive head": sharp(adaptive_head=16),
             "float64 weights": sharp().double()}
    for what, model in cases.items():
        step = decode_step(model, 2)
        assert step is None, f"{what}: the laid-out step should not stand in for the model"
    torch.manual_seed(0)
    big = GPT(GPTConfig(block_size=8, vocab_size=50304, n_layer=1, n_head=1, n_embd=1280)).eval()  # GPT-2's wte
    assert sum(p.numel() for p in big.parameters()) > decodestep.MAX_PARAMS
    assert decode_step(big, 1) is None, "a model above MAX_PARAMS should not be copied"
    model = sharp()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert decode_step(model, 2) is None, "under autocast the model's forward should run"
    assert isinstance(decode_step(model, 2), DecodeStep), "outside autocast the same model should get the step"
    # the fallback is a working step: the adaptive head's log-probabilities, one token at a time (within the
    # context: past it the cache keeps half a window where the reference slides)
    model = cases["the adaptive head"].eval()
    out = generate(model, torch.zeros((2, 1), dtype=torch.long), 12, generators=row_generators(range(2)))
    ref = generate(model, torch.zeros((2, 1), dtype=torch.long), 12, generators=row_generators(range(2)),
                   kv_cache=False)
    assert torch.equal(out, ref), "the model's own cached forward should give the uncached reference's tokens"


def test_changed_weights_are_laid_out_again():
    model = sharp()
    first = decode_step(model, 1)
    assert decode_step(model, 1) is first, "the same model and layout should reuse its laid-out weights"
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.mul_(-1.0)  # an in-place update, as an optimizer step makes
    second = decode_step(model, 1)
    assert second is not first, "a changed weight should be laid out again"
    idx = torch.randint(0, 50, (1, 6))
    ours, theirs = KVCache(model.config, 1), KVCache(model.config, 1)
    with torch.inference_mode():
        model(idx[:, :5], kv_cache=ours)
        model(idx[:, :5], kv_cache=theirs)
        got, want = second(idx[:, 5], ours), model(idx[:, 5:], kv_cache=theirs)[0][:, -1]
    assert torch.allclose(got, want, atol=1e-4), "the step after a weight change should use the new weights"
