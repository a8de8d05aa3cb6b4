"""
A GPT with GPT-2's architecture and layer names, in one file: nanoGPT's model.py, read side by side with it;
where babygpt differs, a comment starting "babygpt:" says how.

Importing this module runs nothing; train.py and sample.py build a GPT from a GPTConfig. Generation with a
key/value cache, top-p, penalties and streaming is babygpt/engine.py's; the output layer is babygpt/heads.py's.
Layer names follow GPT-2 (wte, wpe, h.N.attn.c_attn, ...) so checkpoints map one to one.
Quick check: python -c "import model; print(model.GPT(model.GPTConfig()))"
"""

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from babygpt.heads import make_head

# transformers' GPT-2 keeps these four layers as Conv1D, whose weight is (in, out): nn.Linear's transposed
# (from_pretrained reads them, hfexport.py writes them)
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


@dataclass
class GPTConfig:
    block_size: int = 256     # longest context the model sees; sets the size of wpe
    vocab_size: int = 4608    # 4,506 characters in the Chinese corpus, padded up to a multiple of 64
    n_layer: int = 6          # number of transformer blocks
    n_head: int = 6           # attention heads per block; n_embd must divide evenly by it
    n_embd: int = 384         # width of the residual stream
    dropout: float = 0.0      # 0 for pretraining big data, ~0.2 for a small corpus we would overfit
    bias: bool = True         # biases in Linear and LayerNorm, as GPT-2; False is a bit faster and as good
    adaptive_head: int = 0    # babygpt: 0 is GPT-2's head, a softmax over the vocabulary tied to wte. N > 0 (opt-in):
                              # an adaptive softmax where only the N most frequent tokens cost a full-width
                              # matmul; faster when a large vocabulary dominates a small model's time
                              # (bench.py --what=train), but nanoGPT and transformers cannot load it


class LayerNorm(nn.Module):
    """LayerNorm whose bias can be switched off (nn.LayerNorm can only drop it since torch 2.1)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be a multiple of n_head"
        # one matmul makes query, key and value for every head at once
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd

    def forward(self, x, kv_cache=None, layer=0):
        B, T, C = x.size()
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        # babygpt: the generation engine's key/value cache (babygpt/engine.py) stores k, v and hands back every
        # key and value so far; one new query attends to all of them (no mask), a prompt in an empty cache causally
        causal = kv_cache is None or kv_cache.pos == 0
        if kv_cache is not None:
            k, v = kv_cache.append(layer, k, v)  # (B, nh, pos + T, hs)
        # the fused kernel (flash attention on CUDA) never builds the (T, T) matrix in memory (babygpt: always;
        # nanoGPT keeps a slow path for torch < 2.0)
        dropout = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2 used the tanh approximation
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LN transformer block: normalise, then add each sublayer's output to the residual stream."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, kv_cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), kv_cache, layer)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None and config.block_size is not None
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        # babygpt: the output layer is a module of its own (babygpt/heads.py): nanoGPT's lm_head tied to wte, or
        # with adaptive_head > 0 an adaptive softmax; forward and estimate_mfu ask it, never the config
        self.lm_head = make_head(config, self.transformer.wte)
        self.apply(self._init_weights)
        # GPT-2 paper: scale the residual projections by 1/sqrt(2 * n_layer) so the stream's
        # variance does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding=True):
        """Parameter count, without the position embeddings by default as in GPT-2's (the tied wte stays)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx, targets=None, kv_cache=None):
        B, T = idx.size()
        # babygpt: with the engine's KVCache, idx continues the tokens already in it (positions pos..pos+T-1)
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.config.block_size:
            # babygpt: a ValueError, where nanoGPT asserts (python -O would skip an assert)
            raise ValueError(f"sequence of length {start + T} is longer than block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, kv_cache, layer)
        x = self.transformer.ln_f(x)  # (B, T, C)
        # the head returns nanoGPT's (logits, loss): every position's logits and the loss with targets, else
        # only the last position's logits (generation needs no more)
        return self.lm_head(x, targets)

    def crop_block_size(self, block_size):
        """Shrink the context window, e.g. to fine-tune GPT-2 (1024) with a shorter block_size."""
        assert block_size <= self.config.block_size
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        # decay the matrices (matmul weights, embeddings); not biases or LayerNorm gains, which
        # are 1-D and only shift or scale activations
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        # the fused CUDA kernel updates all parameters in one launch instead of one per tensor
        fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        extra = {"fused": True} if fused else {}
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)

    def estimate_mfu(self, tokens_per_iter, dt, peak_flops=312e12):
        """Model FLOPs utilisation: achieved FLOP/s over peak_flops (A100 bf16 by default).
        FLOPs per token from the PaLM paper's appendix B: 6N for the weights, plus attention.
        babygpt: takes the tokens per iteration, where nanoGPT takes fwdbwd_per_iter sequences."""
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        n = self.get_num_params()
        n -= self.lm_head.params_without_flops()  # babygpt: 0 for GPT-2's head; see heads.py
        flops_per_token = 6 * n + 12 * L * H * Q * T
        return flops_per_token * tokens_per_iter / dt / peak_flops

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Extend idx (B, T) by max_new_tokens sampled tokens -> (B, T + max_new_tokens); call model.eval()
        first. babygpt: the scripts generate through babygpt/engine.py (a key/value cache, top-p, penalties,
        per-row seeds, streaming, poem constraints), whose kv_cache=False path gives these same tokens."""
        for _ in range(max_new_tokens):
            # past block_size, the window slides: the model has learned block_size positions only
            idx_cond = idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size:]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :]  # (B, vocab_size)
            if temperature == 0:  # babygpt: 0 means greedy
                idx_next = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k:  # babygpt: 0 is no cut, and a top_k above the vocabulary is clamped
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))  # (B, k)
                    logits[logits < v[:, [-1]]] = -float("Inf")
                probs = F.softmax(logits, dim=-1)
                idx_next = torch.multinomial(probs, num_samples=1)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx

    @classmethod
    def from_pretrained(cls, name_or_path, override_args=None):
        """Load GPT-2 weights with transformers: 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl'
        (downloaded from the Hugging Face hub, then cached), or (babygpt) a local folder holding a model
        saved with GPT2LMHeadModel.save_pretrained (works offline). override_args: only 'dropout'."""
        override_args = override_args or {}
        if set(override_args) - {"dropout"}:
            raise ValueError(f"only dropout can be overridden, got {sorted(override_args)}")
        hf_model = load_hf_gpt2(name_or_path)
        hf = hf_model.config
        config = GPTConfig(n_layer=hf.n_layer, n_head=hf.n_head, n_embd=hf.n_embd, block_size=hf.n_positions,
                           vocab_size=hf.vocab_size, bias=True, dropout=override_args.get("dropout", 0.0))
        model = cls(config)
        model.load_state_dict(state_dict_from_hf(hf_model.state_dict()))
        return model


def load_hf_gpt2(name_or_path):
    """transformers' GPT2LMHeadModel, refused where its layers differ from ours (from_pretrained's loader)."""
    from transformers import GPT2LMHeadModel  # imported here: model.py stays light and pure
    from transformers.utils import logging as hf_logging

    # a "Loading weights" bar for a load that takes a moment is noise on stderr (the hub's
    # download bars are separate and stay)
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        hf_model = GPT2LMHeadModel.from_pretrained(name_or_path)
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
    hf = hf_model.config
    # our LayerNorm has eps 1e-5 and our MLP the tanh GELU; refuse a GPT-2 variant that differs
    if hf.activation_function not in ("gelu_new", "gelu_pytorch_tanh") or hf.layer_norm_epsilon != 1e-5:
        raise ValueError(f"{name_or_path}: activation {hf.activation_function} / layer_norm_epsilon "
                         f"{hf.layer_norm_epsilon} differ from GPT-2's gelu_new / 1e-5")
    return hf_model


def state_dict_from_hf(hf_sd):
    """transformers' GPT-2 state dict -> ours. Same names; but GPT-2 stores its linear layers as
    Conv1D, whose weight is (in, out), while nn.Linear's is (out, in): the CONV1D ones get transposed."""
    sd = {}
    for k, v in hf_sd.items():
        if k.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # the causal-mask buffers of older transformers versions, not weights
        sd[k] = v.t() if k.endswith(CONV1D) else v
    sd.setdefault("lm_head.weight", sd["transformer.wte.weight"])  # tied: may be saved only once
    return sd

