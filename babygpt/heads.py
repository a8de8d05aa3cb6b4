"""
The GPT's output layer (lm_head), chosen in one place, make_head: GPT-2's softmax over the whole vocabulary,
tied to the token embedding (nanoGPT's lm_head), or the opt-in adaptive softmax (GPTConfig.adaptive_head N > 0).
Each head takes the final hidden states x (B, T, C) and targets (or None) and returns nanoGPT's (logits, loss);
the rest of babygpt asks the head, never the config, what differs:
- skips_parameters: some parameters may get no gradient from a batch (DDP must then look for them);
- order_by_frequency(data): learn the token order from the training ids (train.py, a run from scratch);
- params_without_flops(): parameters counted in GPT.get_num_params that cost no matmul per token (MFU).
Importing it runs nothing; model.py builds the head.

    python train.py config/train_chinese_cpu.py      # adaptive_head = 1024
    python -m pytest tests/test_heads.py
"""

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F


def make_head(config, wte):
    """The lm_head config asks for; GPT-2's is tied to the embedding wte."""
    if config.adaptive_head:
        return AdaptiveHead(config)
    head = TiedHead(config.n_embd, config.vocab_size, bias=False)
    # weight tying (Press & Wolf 2017): the input embedding doubles as the output projection
    wte.weight = head.weight
    return head


class TiedHead(nn.Linear):
    """GPT-2's head: a linear layer to the vocabulary's logits, its weight wte's; the state dict key is
    nanoGPT's lm_head.weight."""
    skips_parameters = False

    def forward(self, x, targets=None):
        if targets is not None:
            logits = super().forward(x)  # (B, T, vocab_size)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        else:
            # generation needs only the last position's logits: skip the (T, vocab) matmul for the rest
            logits = super().forward(x[:, [-1], :])  # (B, 1, vocab_size)
            loss = None
        return logits, loss

    def order_by_frequency(self, data):
        """A full softmax has no token order to learn."""

    def params_without_flops(self):
        return 0  # the weight is wte's too: counted once, as this matmul


class AdaptiveHead(nn.AdaptiveLogSoftmaxWithLoss):
    """Grave et al. 2017: the head scores the N most frequent tokens plus one entry for "the rest"; the rest get
    a 4x narrower projection, computed only for the targets that fall there, so a step costs less when a large
    vocabulary dominates a small model's time (docs/experiments.md). Untied: nanoGPT and transformers cannot
    load it. Its classes must be ordered by frequency, so a token id goes through the buffer `rank` (id ->
    frequency rank), which order_by_frequency fills from the training data; the identity is correct, only slower.
    Training returns no logits (never forming the (B, T, vocab) matrix is the point); generation returns
    log-probabilities in token order, which the engine treats as logits (softmax of log p is p itself, and
    temperature, top-k and top-p act alike)."""
    skips_parameters = True  # the rare-token tail gets no gradient from a batch without rare targets

    def __init__(self, config):
        super().__init__(config.n_embd, config.vocab_size, cutoffs=[config.adaptive_head], div_value=4.0)
        self.register_buffer("rank", torch.arange(config.vocab_size))

    def forward(self, x, targets=None):
        if targets is not None:
            keep = targets.reshape(-1) != -1  # cross_entropy's ignore_index=-1
            out = super().forward(x.reshape(-1, x.size(-1))[keep], self.rank[targets.reshape(-1)[keep]])
            return None, out.loss
        logprobs = self.log_prob(x[:, -1, :])  # (B, vocab_size), column r = the token of rank r
        return logprobs[:, self.rank].unsqueeze(1), None  # (B, 1, vocab_size), column t = token t

    def order_by_frequency(self, data):
        self.rank.copy_(frequency_rank(data, self.n_classes))

    def params_without_flops(self):
        # untied, wte (vocab_size x n_embd) is a lookup, not a matmul; the tail runs for rare tokens only
        return self.n_classes * self.in_features + sum(p.numel() for p in self.tail.parameters())


def frequency_rank(data, vocab_size, chunk=1 << 24):
    """Token id -> its rank by count in data (0: the most frequent), the order AdaptiveHead's
    classes need. Counted in chunks, so a large memmapped train.bin is never loaded whole."""
    counts = sum(np.bincount(data[i:i + chunk], minlength=vocab_size) for i in range(0, len(data), chunk))
    rank = np.empty(vocab_size, dtype=np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(vocab_size)  # ties: the lower id first
    return torch.from_numpy(rank)
