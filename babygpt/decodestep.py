"""
The decode step on a CPU: model.py's GPT forward for one new token per row, the context already in the engine's
KVCache, written for a small model where the time goes to kernels and calls rather than arithmetic.
engine.generate_tokens uses it wherever it applies (a GPT with GPT-2's head, in float32 on the CPU, not compiled);
elsewhere the model's own forward runs.

Why a second forward pass (docs/benchmarks.md has the profile): at one token per row, F.linear's kernel for an
(N, C) weight is about 2x slower than a product with the weight stored the other way round, and oneDNN's weights
prepacked for the batch beat both from two rows up; the model's forward also spends a quarter of a step on module
calls, transposes and copies. This step lays the weights out once, then runs ~12 operations per layer.
It computes what GPT.forward(idx[:, -1:], kv_cache=cache) computes, to float rounding (tests/test_decodestep.py).

    python bench.py --what=hf_sample --threads=1
    python -m pytest tests/test_decodestep.py
"""

import functools
import weakref

import torch
from torch.nn import functional as F

from babygpt.heads import TiedHead

PACKED_ROWS = 16  # the batch size oneDNN packs for: from 2 to 32 rows as fast as packing for the exact size
MAX_PARAMS = 64_000_000  # each layout is a copy of the weights: above this (GPT-2 itself) the model's forward runs


@functools.cache
def onednn_works():
    """Whether this torch runs oneDNN's prepacked linear (what torch.compile's CPU backend uses for frozen
    weights): tried once on a tiny product, since some builds and CPUs lack it."""
    try:
        w = torch.ops.mkldnn._reorder_linear_weight(torch.ones(2, 2), PACKED_ROWS)
        y = torch.ops.mkldnn._linear_pointwise(torch.ones(1, 2), w, None, "none", [], "")
        return bool(torch.equal(y, torch.full((1, 2), 2.0)))
    except (AttributeError, RuntimeError):
        return False


def applies(model):
    """Whether this step can stand in for model's forward: a model.py GPT with GPT-2's tied head, float32 on the
    CPU, in eval mode, not compiled (torch.compile wraps it), no autocast asking for another dtype, and small
    enough that a second copy of its weights costs little memory."""
    from model import GPT  # the package imports no script at import time
    params = list(model.parameters())
    return (type(model) is GPT and isinstance(model.lm_head, TiedHead) and not model.training
            and all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params)
            and sum(p.numel() for p in params) <= MAX_PARAMS and not torch.is_autocast_enabled("cpu"))


def layout(batch_size):
    """How to lay the weights out for batch_size rows: one row is a matrix-vector product, fastest with the
    weight transposed; from two rows oneDNN's packing wins (bench.py --what=hf_sample measures both)."""
    return "packed" if batch_size > 1 and onednn_works() else "transposed"


class Linear:
    """x (B, in) -> x W^T + b (B, out) for a weight W (out, in), laid out as layout() says; gelu=True applies
    GPT-2's tanh GELU to the result (oneDNN does it inside the product, one pass fewer over the output)."""

    def __init__(self, weight, bias, kind, gelu=False):
        self.bias, self.gelu = bias, gelu
        if kind == "packed":
            self.packed, self.wt = torch.ops.mkldnn._reorder_linear_weight(weight, PACKED_ROWS), None
        else:
            self.wt = weight.t().contiguous()  # (in, out): x @ wt reads it row by row

    def __call__(self, x):
        if self.wt is None:
            if self.gelu:
                return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "gelu", [], "tanh")
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        y = torch.mm(x, self.wt) if self.bias is None else torch.addmm(self.bias, x, self.wt)
        return F.gelu(y, approximate="tanh") if self.gelu else y


class DecodeStep:
    """A GPT's weights laid out (kind: layout()'s) for one-token steps; step(idx, cache) -> logits (B, vocab)."""

    def __init__(self, model, kind):
        t, cfg = model.transformer, model.config
        self.wte, self.wpe = t.wte.weight, t.wpe.weight
        self.nh, self.hs = cfg.n_head, cfg.n_embd // cfg.n_head
        self.blocks = [(b.ln_1, Linear(b.attn.c_attn.weight, b.attn.c_attn.bias, kind),
                        Linear(b.attn.c_proj.weight, b.attn.c_proj.bias, kind),
                        b.ln_2, Linear(b.mlp.c_fc.weight, b.mlp.c_fc.bias, kind, gelu=True),
                        Linear(b.mlp.c_proj.weight, b.mlp.c_proj.bias, kind)) for b in t.h]
        self.ln_f = t.ln_f
        self.head = Linear(model.lm_head.weight, None, kind)  # the tied head: wte's weight, no bias
        self.attend = one_query_attention if kind == "packed" else F.scaled_dot_product_attention

    def __call__(self, idx, cache):
        """The logits (B, vocab) after idx (B,), the newest token of each row; cache holds the ones before it."""
        B, nh, hs = idx.size(0), self.nh, self.hs
        if cache.pos >= cache.size:
            raise ValueError(f"sequence of length {cache.pos + 1} is longer than block_size {cache.size}")
        x = self.wte[idx] + self.wpe[cache.pos]  # (B, C)
        for layer, (ln_1, c_attn, c_proj, ln_2, c_fc, mlp_proj) in enumerate(self.blocks):
            q, k, v = c_attn(ln_1(x)).view(B, 3, nh, 1, hs).unbind(1)  # 3 x (B, nh, 1, hs)
            k, v = cache.append(layer, k, v)  # (B, nh, P, hs), P = pos + 1
            y = self.attend(q, k, v)  # (B, nh, 1, hs) or (B, nh, hs)
            x = x + c_proj(y.reshape(B, nh * hs))  # (B, C)
            x = x + mlp_proj(c_fc(ln_2(x)))  # (B, C); c_fc applies the GELU
        return self.head(self.ln_f(x))  # (B, vocab)


def one_query_attention(q, k, v):
    """Softmax attention of one query per row and head, q (B, nh, 1, hs), over the cache's keys and values
    k, v (B, nh, P, hs) -> (B, nh, hs). Written as products and sums over the cache's position-major runs
    (B x nh x P x hs in memory order) instead of the fused kernel's pass per row and head: from two rows on, the
    keys are read as one stream (one row: the fused kernel is as fast, with fewer calls)."""
    k, v = k.permute(2, 0, 1, 3), v.permute(2, 0, 1, 3)  # (P, B, nh, hs), contiguous
    scores = (k * (q[:, :, 0] * q.size(-1) ** -0.5)).sum(dim=-1)  # (P, B, nh)
    weights = torch.softmax(scores, dim=0)  # (P, B, nh)
    return (weights.unsqueeze(-1) * v).sum(dim=0)  # (B, nh, hs)


# a model's laid-out weights, by layout: built once per model (serve.py samples many batches; each layout is a
# copy of the weights); rebuilt when a parameter changes (its version counter moves on every in-place update)
_built = weakref.WeakKeyDictionary()


def decode_step(model, batch_size):
    """The one-token step for model at batch_size rows, called as step(idx (B,), cache) -> logits (B, vocab): a
    DecodeStep where it applies, else None (engine.next_logits then runs the model's own forward)."""
    if not applies(model):
        return None
    versions = tuple((p.data_ptr(), p._version) for p in model.parameters())
    steps = _built.get(model)
    if steps is None or steps[0] != versions:
        steps = _built[model] = (versions, {})
    kind = layout(batch_size)
    if kind not in steps[1]:
        steps[1][kind] = DecodeStep(model, kind)
    return steps[1][kind]
