"""
DDP: train.py launched by torchrun as 2 CPU processes (gloo), on a tiny config.
Run: python -m pytest tests/test_ddp.py
"""

import os
import re
import subprocess
import sys

import torch
import pytest
from conftest import REPO, TINY, assert_user_error, run, write_dataset

pytestmark = pytest.mark.slow  # make test-fast leaves this file out

from babygpt import checkpoint as ck
import train


def torchrun(nproc, *args):
    """python -m torch.distributed.run --standalone --nproc_per_node=N train.py ... (what torchrun runs)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           os.path.join(REPO, "train.py"), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8", timeout=600)


def test_two_ranks_stay_in_sync_learn_and_save(tmp_path):
    data, out = str(tmp_path / "ds"), str(tmp_path / "out")
    write_dataset(data)
    proc = torchrun(2, f"--dataset={data}", f"--out_dir={out}", "--max_iters=20", "--eval_interval=10",
                    "--gradient_accumulation_steps=4", *TINY)
    assert proc.returncode == 0, f"2-process training failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    # the weights of rank 1 against rank 0's, compared by all-reduce at the end of the run
    spread = re.findall(r"largest weight difference between ranks (\S+)", proc.stdout)
    assert len(spread) == 1, f"rank 0 alone should report the weight check once:\n{proc.stdout}"
    assert float(spread[0]) == 0.0, f"ranks drifted apart: gradients were not synchronized ({spread[0]})"
    assert proc.stdout.count("iter 5:") == 1, f"only rank 0 should log:\n{proc.stdout}"
    assert "2 x cpu" in proc.stdout, f"the run should say it uses 2 processes:\n{proc.stdout}"
    losses = [float(v) for v in re.findall(r"val loss (\S+)", proc.stdout)]
    assert len(losses) == 3 and losses[-1] < losses[0], f"val loss should fall over 20 steps: {losses}"
    ckpt = ck.load_checkpoint(out)
    assert ckpt["iter_num"] == 20, f"rank 0 should save the last eval, got iter {ckpt['iter_num']}"
    model = ck.model_from_checkpoint(ckpt).eval()
    idx = torch.zeros((1, 4), dtype=torch.long)
    assert torch.isfinite(model(idx)[0]).all(), "the saved DDP model should load and run"


def test_ranks_draw_different_batches():
    """Rank 0 keeps the one-process batches (a 1-GPU run and rank 0 see the same data);
    other ranks draw their own, or DDP would average N copies of one gradient."""
    data = torch.arange(1000).numpy()
    batch = lambda gen: train.get_batch(data, 4, 8, gen, "cpu")[0]
    one_process = torch.Generator().manual_seed(1337 * 1_000_003 + 3)
    assert torch.equal(batch(train.batch_generator(1337, 3, rank=0)), batch(one_process)), \
        "rank 0 should draw the batches of a single-process run"
    assert not torch.equal(batch(train.batch_generator(1337, 3, rank=0)), batch(train.batch_generator(1337, 3, rank=1))), \
        "rank 1 should draw other windows than rank 0"


def test_accumulation_must_divide_over_ranks(tmp_path, tiny_data):
    # torchrun passes the world size in WORLD_SIZE; the refusal comes before any process group starts
    proc = run("train.py", f"--dataset={tiny_data}", f"--out_dir={tmp_path / 'o'}", *TINY,
               "--gradient_accumulation_steps=3", env_extra={"WORLD_SIZE": "2"})
    assert_user_error(proc, "gradient_accumulation_steps (3)", "multiple of 2")
    assert not (tmp_path / "o").exists(), "a refused run should write nothing"


def test_adaptive_head_trains_when_a_batch_has_no_rare_token(tmp_path):
    """With adaptive_head, a batch whose targets are all frequent leaves the rare-token part without a
    gradient; DDP must be told, or its next backward() stops with an error."""
    data, out = str(tmp_path / "ds"), str(tmp_path / "out")
    write_dataset(data, text="ab" * 3000 + "c")  # 'c' is the one rare character, and almost never drawn
    proc = torchrun(2, f"--dataset={data}", f"--out_dir={out}", "--max_iters=6", "--eval_interval=3",
                    "--gradient_accumulation_steps=2", "--adaptive_head=2", *TINY)
    assert proc.returncode == 0, f"2-process training failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "largest weight difference between ranks 0.000e+00" in proc.stdout, proc.stdout
    assert ck.load_checkpoint(out)["model_args"]["adaptive_head"] == 2


def test_a_refusal_under_torchrun_is_one_line_and_one_failure(tmp_path, tiny_data):
    """Every rank meets the same bad setting: rank 0 prints the one line, the others exit quietly, so
    torchrun's report names one failed rank, not one per process."""
    proc = torchrun(2, f"--dataset={tiny_data}", f"--out_dir={tmp_path / 'o'}", *TINY, "--n_embd=33")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, "the refusal should fail the torchrun"
    assert output.count("error: n_embd (33) must be divisible") == 1, f"one line, from rank 0:\n{output}"
    # (a rank still starting when rank 0 fails is stopped by torchrun with SIGTERM, and listed as exit -15)
    failed = re.findall(r"^\s*rank\s*: (\d+).*\n\s*exitcode\s*: 1 ", output, re.M)
    assert failed == ["0"], f"torchrun should report rank 0 alone as failed, reports {failed}:\n{output[-2000:]}"
    assert not (tmp_path / "o").exists(), "a refused run should write nothing"
