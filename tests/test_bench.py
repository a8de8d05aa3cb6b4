"""
bench.py: --what=train times train.py itself and reports consistent figures; --what=hf_sample's decode-step
floor is the FLOPs formula, checked against a count by hand.
Run: python -m pytest tests/test_bench.py
"""

import json

import pytest

from conftest import TINY, run

import bench
from model import GPTConfig


@pytest.mark.slow
def test_train_benchmark_json():
    tiny = [a for a in TINY if not a.startswith(("--eval_iters", "--log_interval"))]  # bench sets those
    proc = run("bench.py", "--what=train", "--iters=4", "--vocab_size=64", "--json", *tiny)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    (r,) = result["runs"]
    assert r["tokens_per_iter"] == 4 * 16 * 1, f"batch 4 x block 16 x 1 micro-step expected: {r}"
    assert r["ms_per_iter"] > 0, f"a step takes time: {r}"
    assert abs(r["tokens_per_s"] - r["tokens_per_iter"] / (r["ms_per_iter"] / 1000)) < 1e-6 * r["tokens_per_s"], \
        f"tokens/s should follow from ms/iter: {r}"
    assert 0 < r["mfu_percent"] < 100, f"MFU should be a percentage: {r}"
    assert "--n_layer=2" in result["overrides"], f"train.py settings should pass through: {result}"


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
