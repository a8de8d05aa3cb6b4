"""
The generation engine: token ids in, token ids out, over a model.py GPT. It knows nothing of text; sample.py
turns text into ids and back (and serve.py, web.py, bench.py and hfexport.py's cards sample through sample.py).
It holds what a plain nanoGPT `generate` lacks: a key/value cache (with a refill past the context), streaming,
top-k/top-p, the repetition penalty, one random stream per row, and decode-time constraints (a poem's form).
nanochat keeps its engine.py apart from its model the same way. On a CPU the one-token steps run decodestep.py's
forward, the model's arithmetic with its weights laid out for them.

    python sample.py --out_dir=out-chinese --stream=True --top_p=0.9 --repetition_penalty=1.2
    python -m pytest tests/test_engine.py
"""

import torch
from torch.nn import functional as F

from babygpt.decodestep import decode_step


class KVCache:
    """Keys and values of every token fed so far, one buffer per layer, room for block_size tokens.
    Generation then feeds one new token per step instead of re-running the whole context.
    GPT.forward(idx, kv_cache=cache) threads it through the blocks to CausalSelfAttention."""

    def __init__(self, config, batch_size):
        nh, hs = config.n_head, config.n_embd // config.n_head
        # position-major: the keys so far are one run of memory, which a CPU reads from main memory far faster
        # than B x nh short runs (a quarter of a step at 10 rows; docs/benchmarks.md)
        self.shape = (config.block_size, batch_size, nh, hs)  # (block_size, B, nh, hs)
        self.k = [None] * config.n_layer
        self.v = [None] * config.n_layer
        self.pos = 0  # tokens already stored: the position of the next token
        self.size = config.block_size

    def append(self, layer, k, v):
        """Store k, v (B, nh, T, hs) at pos; return all keys and values so far (B, nh, pos + T, hs), as views
        of the stored runs (.permute(2, 0, 1, 3) gives the runs back, (pos + T, B, nh, hs), contiguous).
        The last layer's call moves pos on by T (as nanochat's KVCache does)."""
        if self.pos > 0 and k.size(2) > 1:  # attention masks a query causally only in an empty cache
            raise ValueError("a KVCache takes several tokens only when it is empty")
        if self.k[layer] is None:  # allocated on first use, in the dtype autocast gives k and v
            self.k[layer] = k.new_empty(self.shape)
            self.v[layer] = v.new_empty(self.shape)
        end = self.pos + k.size(2)
        self.k[layer][self.pos:end] = k.permute(2, 0, 1, 3)  # (T, B, nh, hs)
        self.v[layer][self.pos:end] = v.permute(2, 0, 1, 3)
        if layer == len(self.k) - 1:
            self.pos = end
        return self.k[layer][:end].permute(1, 2, 0, 3), self.v[layer][:end].permute(1, 2, 0, 3)


def row_generators(seeds, device="cpu"):
    """One torch.Generator per row, seeded: row i's samples then depend on seeds[i] only, not on the batch."""
    return [torch.Generator(device=device).manual_seed(s) for s in seeds]


@torch.no_grad()
def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, **options):
    """Extend idx (B, T) by max_new_tokens sampled tokens -> (B, T + max_new_tokens).
    temperature 0 means greedy. options: those of generate_tokens. Call model.eval() first."""
    new = list(generate_tokens(model, idx, max_new_tokens, temperature, top_k, **options))
    return torch.cat([idx, *new], dim=1)


@torch.inference_mode()  # no autograd bookkeeping at all (no_grad still tracks versions and views)
def generate_tokens(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                    repetition_penalty=1.0, generators=None, kv_cache=True, constraint=None):
    """Yield the new tokens (B, 1) one step at a time, for streaming.
    generators: one torch.Generator per row, so each sample has its own random stream
    (None: torch's global one). kv_cache=False re-runs the whole window every step (the
    exact reference); with the cache, see next_logits for what happens past block_size.
    constraint (e.g. poetry.PoemConstraint): constraint.mask(logits) -> logits with the tokens it
    forbids at -inf, applied first, so no penalty, temperature or top-k/top-p cut can bring one back;
    constraint.advance(idx_next) after each step; generation ends early once constraint.done (B,) is all True."""
    cache, step = None, decode_step(model, idx.size(0))
    for _ in range(max_new_tokens):
        logits, cache = next_logits(model, idx, cache, kv_cache, step)  # (B, vocab_size)
        if constraint is not None:
            logits = constraint.mask(logits)
        logits = penalize_repeats(logits, idx[:, -model.config.block_size:], repetition_penalty)
        idx_next = sample_next(logits, temperature, top_k, top_p, generators)  # (B, 1)
        idx = torch.cat((idx, idx_next), dim=1)
        if constraint is not None:
            constraint.advance(idx_next)
        yield idx_next
        if constraint is not None and constraint.done.all():
            return


def next_logits(model, idx, cache, use_cache, step=None):
    """Logits for the token after idx (B, T), and the cache to use next time. step(idx (B,), cache): the one-token
    forward decodestep.decode_step gives (None: the model's own).
    The model has learned positions 0..block_size-1 only. Uncached, the window slides by one
    token every step. Cached, positions cannot shift without recomputing every key, so when
    the cache is full the most recent half of the window is encoded again into a fresh cache:
    one long step every block_size/2 tokens, and the model then sees between half and a whole
    window of context instead of always a whole one."""
    bs = model.config.block_size
    if not use_cache:
        return model(idx[:, -bs:])[0][:, -1, :], None
    if cache is None or cache.pos == cache.size:
        keep = bs if cache is None else max(1, bs // 2)
        cache = KVCache(model.config, idx.size(0))
        return model(idx[:, -keep:], kv_cache=cache)[0][:, -1, :], cache
    if step is None:
        return model(idx[:, -1:], kv_cache=cache)[0][:, -1, :], cache
    return step(idx[:, -1], cache), cache


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generators=None):
    """Pick one token per row of logits (B, vocab_size) -> (B, 1).
    top_k above the vocabulary is clamped; top_p keeps the smallest set of tokens whose
    probability adds up to top_p (nucleus sampling, Holtzman et al. 2019)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k and top_k < logits.size(-1) and (top_p is None or top_p >= 1.0) and generators is not None:
        picked = sample_top_k(logits, top_k, generators)
        if picked is not None:
            return picked
    if top_k:
        k = min(top_k, logits.size(-1))  # a top_k above the vocabulary means "no cut"
        # the k-th largest is the smallest of the top k: unsorted, topk does less work
        kth = torch.topk(logits, k, sorted=False).values.amin(dim=-1, keepdim=True)  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        logits = nucleus_filter(logits, top_p)
    probs = F.softmax(logits, dim=-1)
    if generators is None:
        return torch.multinomial(probs, num_samples=1)
    return multinomial_rows(probs, generators)


def sample_top_k(logits, k, generators):
    """sample_next's top-k draw (B, 1) with each row's generator, the softmax, division and argmax done on the k
    candidates only, not the whole vocabulary: the same tokens, as the exponential race (multinomial_rows)
    between the candidates is the same race. Each row still draws one exponential per vocabulary entry, so its
    random stream stays where the full path leaves it. None where a row has ties at the k-th value (or fewer
    than k tokens a constraint allows): the masked path keeps all of those, topk only k."""
    values, candidates = torch.topk(logits, k, sorted=False)  # (B, k)
    kth = values.amin(dim=-1, keepdim=True)  # (B, 1)
    if bool(((logits >= kth).sum(dim=-1) > k).any()):
        return None
    probs = F.softmax(values, dim=-1)  # (B, k): the full softmax's nonzero entries
    q = exponentials(generators, logits, at=candidates)  # (B, k)
    pick = torch.argmax(probs / q, dim=-1, keepdim=True)  # (B, 1) index among the candidates
    return candidates.gather(1, pick)  # (B, 1) token ids


def multinomial_rows(probs, generators):
    """One draw per row of probs (B, vocab) from that row's own generator -> (B, 1): sample i is the same
    whatever the batch. torch.multinomial(p, 1, generator=g) draws q ~ Exp(1) per token with g and returns
    argmax(p / q) (the exponential race, aten's Distributions.cpp); done so here, the draws stay row by row
    (same random stream, same tokens) but the division and argmax run once over the batch, and the per-row
    call's checks, allocations and syncs are gone (tests/test_engine.py compares it with torch.multinomial)."""
    return torch.argmax(probs / exponentials(generators, probs), dim=-1, keepdim=True)  # (B, 1)


LOW_53 = (1 << 53) - 1  # a double's mantissa: the bits of a 64-bit draw a uniform double keeps


def exponentials(generators, like, at=None):
    """Each row's exponential_(1) draw over a row of like (B, vocab), with that row's generator: (B, vocab), or
    only the entries at the indices at (B, k): (B, k). Each generator moves on by vocab draws either way.
    On the CPU, exponential_ takes one 64-bit number per entry from the generator, keeps its low 53 bits as a
    uniform double u in [0, 1) and returns -log(1 - u) in double, rounded to float; done so here, the numbers are
    drawn in one call per row and only the entries needed are turned into exponentials, ~3x less time at
    top_k 200 (tests/test_engine.py holds the numbers to exponential_'s own)."""
    if like.device.type != "cpu" or like.dtype != torch.float32:  # elsewhere: exponential_ itself
        q = torch.empty_like(like)
        for row, g in zip(q, generators):
            row.exponential_(1, generator=g)
        return q if at is None else q.gather(1, at)
    bits = torch.empty(like.shape, dtype=torch.int64)  # (B, vocab)
    for row, g in zip(bits, generators):
        row.random_(generator=g)  # 64-bit draws, one per entry, as exponential_ takes them
    if at is not None:
        bits = bits.gather(1, at)  # (B, k)
    u = (bits & LOW_53).double().mul_(2.0 ** -53)  # uniform in [0, 1)
    return torch.log1p(u.neg_()).neg_().float()  # -log(1 - u)


def nucleus_filter(logits, top_p):
    """Mask (B, vocab) logits outside the top_p nucleus to -inf; the best token always stays."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, vocab)
    cum = F.softmax(sorted_logits, dim=-1).cumsum(dim=-1)  # (B, vocab)
    # drop a token when the ones before it already reach top_p
    drop_sorted = (cum - F.softmax(sorted_logits, dim=-1)) >= top_p
    drop = drop_sorted.scatter(1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def penalize_repeats(logits, context, penalty):
    """CTRL's repetition penalty (Keskar et al. 2019): the logit of every token already in context
    (B, T) is divided by penalty if positive, multiplied if negative. 1.0 is off."""
    if penalty == 1.0:
        return logits
    seen = torch.gather(logits, 1, context)  # (B, T)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, context, seen)
