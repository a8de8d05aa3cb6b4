"""
bench.py --what=train: times train.py itself and reports consistent figures.
Run: python -m pytest tests/test_bench_train.py
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


@pytest.mark.slow
def test_time_to_loss_times_each_eval_from_process_start(tiny_data):
    """bench.py --what=time_to_loss's runner on a tiny dataset: an eval every EVAL_TOKENS trained tokens,
    times rising from process start, val losses read from the run's log.csv (train.py's output is not read)."""
    import bench
    tiny = [a for a in TINY if not a.startswith(("--eval_iters", "--log_interval"))]
    tokens_per_iter = 4 * 16
    old = bench.EVAL_TOKENS
    bench.EVAL_TOKENS = 5 * tokens_per_iter  # an eval every 5 iterations
    try:
        points = bench.run_to_loss("tiny", None, [*tiny, f"--dataset={tiny_data}", "--max_iters=12"])
    finally:
        bench.EVAL_TOKENS = old
    assert [it for _, it, _ in points] == [0, 5, 10, 12], f"evals every 5 iterations and at the end: {points}"
    seconds = [s for s, _, _ in points]
    assert seconds == sorted(seconds) and seconds[0] > 0, f"times should rise from process start: {seconds}"
    assert points[-1][2] < points[0][2], f"val loss should fall: {points}"
    assert bench.first_below(points, points[1][2]) == points[1][0], "the first eval at or below the target"
    assert bench.first_below(points, 0.0) is None, "a target never reached gives None"


def test_time_to_loss_keeps_the_fastest_time_of_identical_runs():
    """Repeated runs of one recipe must agree on every loss; each eval then keeps its fastest time."""
    import bench
    slow = [(10.0, 0, 8.4), (40.0, 100, 5.0), (70.0, 200, 4.5)]
    fast = [(8.0, 0, 8.4), (45.0, 100, 5.0), (60.0, 200, 4.5)]
    assert bench.fastest([slow, fast]) == [(8.0, 0, 8.4), (40.0, 100, 5.0), (60.0, 200, 4.5)]
    nearly = [(8.0, 0, 8.4), (45.0, 100, 5.0001), (60.0, 200, 4.5)]  # threads may sum in another order
    assert bench.fastest([slow, nearly]) == [(8.0, 0, 8.4), (40.0, 100, 5.0), (60.0, 200, 4.5)]
    with pytest.raises(SystemExit, match="different losses"):
        bench.fastest([slow, [(8.0, 0, 8.4), (45.0, 100, 5.1), (60.0, 200, 4.5)]])


def test_time_to_loss_reads_the_loss_reached_in_the_baselines_time():
    """'Ends lower in the same time': babygpt's last eval at or before the baseline's end."""
    import bench
    points = [(10.0, 0, 8.4), (40.0, 100, 5.0), (70.0, 200, 4.5)]
    assert bench.last_within(points, 69.9) == (40.0, 100, 5.0), "an eval after the deadline does not count"
    assert bench.last_within(points, 70.0) == (70.0, 200, 4.5), "an eval at the deadline counts"
    assert bench.last_within(points, 5.0) is None, "no eval yet gives None"



def test_baselines_are_config_files_train_py_reads():
    """The recipes time_to_loss compares with are config files a user can also train with."""
    import bench
    nanogpt = bench.train_config(["experiments/config/baseline_nanogpt_cpu.py"], [])
    old_demo = bench.train_config(["experiments/config/baseline_old_demo.py"], [])
    assert (nanogpt["n_layer"], nanogpt["batch_size"], nanogpt["compile"]) == (4, 12, False), nanogpt
    assert (old_demo["n_layer"], old_demo["batch_size"], old_demo["compile"]) == (4, 32, True), old_demo
