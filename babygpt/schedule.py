"""
How long a run is and how fast it learns: tokens per iteration, passes over the text turned into steps,
and the learning rate at each step (linear warmup, cosine decay). Used by train.py and the benchmarks.
"""

import math


def get_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    """Linear warmup to learning_rate, then cosine decay to min_lr at lr_decay_iters, then flat.
    Warmup counts from it+1 so the very first step already learns (nanoGPT's is 0 at it=0)."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it >= lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return min_lr + coeff * (learning_rate - min_lr)


def lr_at(cfg, iter_num):
    """The learning rate of iteration iter_num under cfg's schedule."""
    if not cfg["decay_lr"]:
        return cfg["learning_rate"]
    return get_lr(iter_num, cfg["learning_rate"], cfg["warmup_iters"], cfg["lr_decay_iters"], cfg["min_lr"])


def tokens_per_iter(cfg):
    return cfg["gradient_accumulation_steps"] * cfg["batch_size"] * cfg["block_size"]


def steps_for_passes(cfg, n_train):
    """The optimizer steps that make cfg['passes'] passes over n_train training tokens (at least one)."""
    return max(1, round(cfg["passes"] * n_train / tokens_per_iter(cfg)))
