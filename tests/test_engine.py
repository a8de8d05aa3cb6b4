"""
babygpt/engine.py, generation over token ids: the KV cache against the uncached reference, per-sample random
streams, top_k / top_p / repetition penalty.
Run: python -m pytest tests/test_engine.py
"""

import pytest
import torch

from babygpt.engine import (KVCache, exponentials, generate, multinomial_rows, next_logits, nucleus_filter,
                            penalize_repeats, row_generators, sample_next, sample_top_k)
from model import GPT, GPTConfig

CFG = dict(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(**CFG)).eval()


@pytest.fixture
def sharp_model():
    """Weights large enough that attention, not just the last token, decides the next one:
    at GPT-2's init scale a wrong cache could still give the same greedy tokens."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(**CFG)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.5)
    return m


def streams(n, seed=1337, device="cpu"):
    return [torch.Generator(device=device).manual_seed(seed + i) for i in range(n)]


def test_cached_logits_match_full_forward(model):
    idx = torch.randint(0, 50, (3, 16))
    cache = KVCache(model.config, 3)
    with torch.no_grad():
        logits, _ = model(idx[:, :5], kv_cache=cache)  # the prompt, encoded once
        got = [logits[:, -1]]
        for t in range(5, 16):
            got.append(model(idx[:, t:t + 1], kv_cache=cache)[0][:, -1])  # one token per step
        for i, t in enumerate(range(5, 17)):
            want = model(idx[:, :t])[0][:, -1]  # the whole context re-run
            assert torch.allclose(got[i], want, atol=1e-4), \
                f"cached logits after {t} tokens differ by {(got[i] - want).abs().max():.2e}"


def test_the_cache_moves_on_once_per_forward_and_takes_a_prompt_only_when_empty(model):
    cache = KVCache(model.config, 1)
    with torch.no_grad():
        model(torch.zeros((1, 3), dtype=torch.long), kv_cache=cache)
        assert cache.pos == 3, f"a 3-token prompt through every layer should leave pos 3, not {cache.pos}"
        with pytest.raises(ValueError, match="only when it is empty"):
            model(torch.zeros((1, 2), dtype=torch.long), kv_cache=cache)  # no causal mask past the prompt


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_cached_and_uncached_generate_the_same_tokens(sharp_model, device):
    model = sharp_model.to(device)
    idx = torch.randint(0, 50, (2, 4)).to(device)
    new = 12  # 4 + 12 = block_size: no window sliding, so both paths must agree exactly
    greedy = [generate(model, idx, new, temperature=0, kv_cache=c) for c in (True, False)]
    assert torch.equal(*greedy), "greedy decoding differs between cached and uncached generation"
    top1 = [generate(model, idx, new, top_k=1, kv_cache=c, generators=streams(2, device=device)) for c in (True, False)]
    assert torch.equal(*top1), "top_k=1 decoding differs between cached and uncached generation"
    sampled = [generate(model, idx, new, temperature=1.5, top_k=None, kv_cache=c, generators=streams(2, device=device))
               for c in (True, False)]
    assert torch.equal(*sampled), "sampling with the same seed differs between cached and uncached"


def test_model_generate_is_the_engine_s_uncached_reference(model):
    """model.py keeps nanoGPT's plain generate; the engine without its cache must give the same tokens."""
    idx = torch.randint(0, 50, (2, 5))
    for temperature, top_k in ((0, None), (1.0, None), (1.5, 3), (0.8, 1000)):
        torch.manual_seed(7)
        plain = model.generate(idx, 30, temperature, top_k)  # 35 > block_size 16: the window slides
        torch.manual_seed(7)
        ours = generate(model, idx, 30, temperature, top_k, kv_cache=False)
        assert torch.equal(plain, ours), \
            f"GPT.generate and the engine differ at temperature {temperature}, top_k {top_k}"


def test_past_block_size_the_cache_keeps_the_recent_half(model):
    bs = model.config.block_size
    idx = torch.randint(0, 50, (2, bs))
    with torch.no_grad():
        _, cache = next_logits(model, idx, None, True)
        assert cache.pos == bs, f"a full-window prompt should fill the cache, pos is {cache.pos}"
        idx = torch.cat([idx, torch.randint(0, 50, (2, 1))], dim=1)  # one more token: past the window
        logits, cache = next_logits(model, idx, cache, True)
        want = model(idx[:, -(bs // 2):])[0][:, -1]
    assert cache.pos == bs // 2, f"a full cache should restart from the last half window, pos is {cache.pos}"
    assert torch.allclose(logits, want, atol=1e-4), "after a refill the logits should be those of the last half window"
    out = generate(model, idx[:, :3], 3 * bs, temperature=1.0, generators=streams(2))
    assert out.shape == (2, 3 + 3 * bs), f"generation past block_size should keep going, got {tuple(out.shape)}"


def test_each_sample_has_its_own_random_stream(model):
    idx = torch.zeros((3, 1), dtype=torch.long)
    batch = generate(model, idx, 12, temperature=1.5, generators=streams(3))
    again = generate(model, idx, 12, temperature=1.5, generators=streams(3))
    assert torch.equal(batch, again), "the same seeds should give the same samples"
    assert not torch.equal(batch[0], batch[1]), "two samples of one batch should differ"
    alone = generate(model, idx[:1], 12, temperature=1.5, generators=[torch.Generator().manual_seed(1337 + 1)])
    assert torch.equal(batch[1], alone[0]), "sample 1 should depend on its own seed, not on the batch around it"


def test_batched_row_draws_are_torch_multinomial_s_draws():
    # the engine draws one token per row without calling torch.multinomial; the stream must be the same
    torch.manual_seed(0)
    for B, V in ((1, 7), (5, 4506), (10, 9000)):
        probs = torch.softmax(torch.randn(B, V) * 3, dim=-1)
        probs[0, : V // 2] = 0  # a cut (top-k, top-p, a poem's mask) leaves zeros
        ours, ref = row_generators(range(B)), row_generators(range(B))
        for step in range(4):
            want = torch.stack([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, ref)])  # (B, 1)
            got = multinomial_rows(probs, ours)
            assert torch.equal(got, want), f"B={B} V={V} step {step}: {got.tolist()} != torch's {want.tolist()}"


def test_exponentials_are_exponential_s_own_numbers():
    # the engine draws exponential_'s numbers its own way (64-bit draws, turned into exponentials where needed)
    like = torch.zeros(8, 50_000)
    ours, ref = row_generators(range(8)), row_generators(range(8))
    for step in range(5):
        want = torch.empty_like(like)
        for row, g in zip(want, ref):
            row.exponential_(1, generator=g)
        if step % 2:  # only some entries, as the top-k draw asks: the stream still moves on by the whole row
            at = torch.randint(0, like.size(1), (8, 200))
            got, want = exponentials(ours, like, at=at), want.gather(1, at)
        else:
            got = exponentials(ours, like)
        mismatched = (got != want).sum().item()
        assert mismatched == 0, f"step {step}: {mismatched} numbers differ from exponential_'s ({got[0, :3]} vs {want[0, :3]})"


def test_top_k_is_the_sorted_top_k_cut():
    logits = torch.randn(6, 4506) * 2
    want = logits.masked_fill(logits < torch.topk(logits, 200).values[:, [-1]], float("-inf"))
    torch.manual_seed(1)
    a = sample_next(logits, 1.0, top_k=200)
    torch.manual_seed(1)
    b = torch.multinomial(torch.softmax(want, dim=-1), 1)
    assert torch.equal(a, b), "top_k should keep exactly the k best tokens, as a sorted topk's k-th value does"


def masked_top_k_draw(logits, k, generators):
    """The top-k draw written the long way: every logit below the k-th largest at -inf, a softmax over the whole
    vocabulary, one exponential race per row (torch.multinomial's draw, tests above)."""
    kth = torch.topk(logits, k).values[:, [-1]]  # (B, 1)
    return multinomial_rows(torch.softmax(logits.masked_fill(logits < kth, float("-inf")), dim=-1), generators)


def test_top_k_on_the_candidates_draws_the_masked_path_s_tokens():
    torch.manual_seed(0)
    ours, ref = row_generators(range(6)), row_generators(range(6))
    for step in range(200):  # flat and peaked rows, as sampled text gives
        logits = torch.randn(6, 4506) * (0.5 + step % 7)
        got, want = sample_top_k(logits, 200, ours), masked_top_k_draw(logits, 200, ref)
        assert torch.equal(got, want), f"step {step}: candidates drew {got.tolist()}, the masked path {want.tolist()}"
    # the rows' streams moved on alike: the next draws agree too
    logits = torch.randn(6, 4506)
    assert torch.equal(sample_next(logits, 0.7, 200, None, ours), sample_next(logits, 0.7, 200, None, ref)), \
        "after the candidate draws each row's generator should stand where the masked path leaves it"


def test_top_k_with_ties_or_a_constraint_takes_the_masked_path():
    logits = torch.randn(2, 100)
    logits[1, :30] = 5.0  # 30 tokens tie for the top: a top_k of 10 keeps all of them on the masked path
    assert sample_top_k(logits, 10, row_generators(range(2))) is None, "ties at the k-th value should be declined"
    logits = torch.randn(2, 100)
    logits[0, 5:] = float("-inf")  # a poem's mask left 5 tokens, fewer than top_k
    assert sample_top_k(logits, 10, row_generators(range(2))) is None, "fewer allowed tokens than k should be declined"
    generators = row_generators(range(2))
    for _ in range(20):  # sample_next then draws from the masked path: never a forbidden token
        pick = sample_next(logits, 1.0, 10, None, generators)
        assert pick[0].item() < 5, f"a token the mask forbids was drawn: {pick[0].item()}"


def test_top_k_above_vocabulary_is_clamped(model):
    out = generate(model, torch.zeros((1, 1), dtype=torch.long), 5, top_k=10_000, generators=streams(1))
    assert out.shape == (1, 6), "top_k larger than the vocabulary should sample, not fail"


def test_top_k_limits_choices_and_is_clamped():
    logits = torch.tensor([[5.0, 4.0, 3.0, -1.0, -2.0]])
    torch.manual_seed(0)
    picks = {sample_next(logits, 1.0, top_k=2).item() for _ in range(300)}
    assert picks == {0, 1}, f"top_k=2 should sample only the two best tokens, saw {picks}"
    picks = {sample_next(logits, 2.0, top_k=1000).item() for _ in range(500)}
    assert len(picks) >= 3, f"a top_k above the vocabulary should keep all tokens, saw {picks}"


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    logits = torch.tensor([[0.15, 0.5, 0.05, 0.3]]).log()
    kept = lambda p: set(torch.isfinite(nucleus_filter(logits, p))[0].nonzero().flatten().tolist())
    assert kept(0.8) == {1, 3}, f"0.5 + 0.3 reach 0.8: those two should stay, got {kept(0.8)}"
    assert kept(0.81) == {0, 1, 3}, f"0.81 needs the third likeliest too, got {kept(0.81)}"
    assert kept(0.01) == {1}, f"the best token always stays, got {kept(0.01)}"
    torch.manual_seed(0)
    picks = {sample_next(logits, 1.0, top_p=0.8).item() for _ in range(300)}
    assert picks == {1, 3}, f"sampling with top_p=0.8 should pick only tokens 1 and 3, saw {picks}"


def test_repetition_penalty_lowers_seen_tokens():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    out = penalize_repeats(logits, torch.tensor([[0, 1, 0]]), 2.0)
    assert torch.allclose(out, torch.tensor([[1.0, -2.0, 0.5]])), f"positive halved, negative doubled: {out}"
    assert penalize_repeats(logits, torch.tensor([[0]]), 1.0) is logits, "1.0 should change nothing"


def test_repetition_penalty_breaks_a_greedy_loop(model):
    idx = torch.zeros((1, 1), dtype=torch.long)
    plain = generate(model, idx, 15, temperature=0)
    penalized = generate(model, idx, 15, temperature=0, repetition_penalty=100.0)
    assert len(set(penalized[0].tolist())) == 16, \
        f"a strong penalty within one window should never repeat a token: {penalized[0].tolist()}"
    assert len(set(plain[0].tolist())) < 16, "the untrained model should repeat without a penalty (test premise)"
