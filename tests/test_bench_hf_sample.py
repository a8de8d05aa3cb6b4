"""
bench.py --what=hf_sample's decode-step floor: the FLOPs formula against a count by hand.
Run: python -m pytest tests/test_bench_hf_sample.py
"""

import bench
from model import GPTConfig


def test_decode_step_flops_match_a_hand_count():
    # 1 layer, 1 head, C=2, vocabulary 3; a step of 1 row with 4 cached tokens. Each matmul (m, k) @ (k, n)
    # costs 2 m k n: c_attn (1,2)@(2,6) 24, attn c_proj (1,2)@(2,2) 8, c_fc (1,2)@(2,8) 32, mlp c_proj
    # (1,8)@(8,2) 32; attention q.k (1,2)@(2,4) 16, att@v (1,4)@(4,2) 16; head (1,2)@(2,3) 12
    config = GPTConfig(n_layer=1, n_head=1, n_embd=2, vocab_size=3, block_size=8)
    by_hand = 24 + 8 + 32 + 32 + 16 + 16 + 12
    assert bench.decode_step_flops(config, 1, 4) == by_hand, f"one row should cost {by_hand} FLOPs"
    assert bench.decode_step_flops(config, 10, 4) == 10 * by_hand, "ten rows should cost ten times one row"
    shipped = GPTConfig(n_layer=6, n_head=4, n_embd=192, vocab_size=4506, block_size=128)
    weights = 6 * 12 * 192 * 192 + 4506 * 192  # every matmul weight once, 2 FLOPs each, plus attention
    assert bench.decode_step_flops(shipped, 1, 0) == 2 * weights, "with no context only the weights should count"


def test_matmul_speed_is_a_positive_rate():
    config = GPTConfig(n_layer=1, n_head=1, n_embd=8, vocab_size=16, block_size=8)
    speed = bench.matmul_flops_per_s(config, 2, repeat=2)
    assert speed > 0, f"a matmul should take time and do work, got {speed} FLOP/s"
