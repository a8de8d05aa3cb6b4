"""
bench.py --what=train: times train.py itself and reports consistent figures.
Run: python -m pytest tests/test_bench.py
"""

import json

import pytest

from conftest import TINY, run


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
