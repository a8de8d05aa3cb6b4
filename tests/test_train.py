"""
train.py: the LR schedule, batches, loss estimate, checkpoints, resume and always-save.
Run: python -m pytest tests/test_train.py
"""

import os

import numpy as np
import pytest
import torch
from conftest import TINY, assert_user_error, run

from babygpt import checkpoint as ck
import train
from babygpt import schedule
from model import GPT, GPTConfig


def test_lr_schedule():
    lr = lambda it: schedule.get_lr(it, 1e-3, 100, 2000, 1e-4)
    assert lr(0) > 0, "the first step should already learn"
    assert all(lr(i) < lr(i + 1) for i in range(99)), "warmup should rise"
    assert abs(lr(100) - 1e-3) < 1e-9, "the peak is learning_rate, right after warmup"
    assert all(lr(i) >= lr(i + 1) for i in range(100, 2000)), "cosine decay should not rise"
    assert abs(lr(2000) - 1e-4) < 1e-12 and lr(5000) == 1e-4, "after lr_decay_iters it stays at min_lr"
    assert abs(lr(1050) - (1e-4 + 0.5 * (1e-3 - 1e-4))) < 1e-9, "halfway the cosine is at the midpoint"


def test_get_batch_shifts_and_is_reproducible():
    data = np.arange(1000, dtype=np.uint16)
    x, y = train.get_batch(data, 4, 8, train.batch_generator(1, 5), "cpu")
    assert x.shape == (4, 8) and x.dtype == torch.int64
    assert torch.equal(y, x + 1), "targets are the inputs shifted by one token"
    x2, _ = train.get_batch(data, 4, 8, train.batch_generator(1, 5), "cpu")
    x3, _ = train.get_batch(data, 4, 8, train.batch_generator(1, 6), "cpu")
    assert torch.equal(x, x2), "the same seed and iteration should give the same batch"
    assert not torch.equal(x, x3), "another iteration should give another batch"


def test_checkpoint_round_trip_gives_same_logits(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=20, n_layer=1, n_head=2, n_embd=16)).eval()
    state = {"_orig_mod." + k: v for k, v in model.state_dict().items()}  # as a compiled model saves it
    ck.save_checkpoint(str(tmp_path), {"model": state, "model_args": dict(model.config.__dict__),
                                       "iter_num": 3, "best_val_loss": 1.5, "config": {}})
    loaded = ck.model_from_checkpoint(ck.load_checkpoint(str(tmp_path))).eval()
    idx = torch.randint(0, 20, (2, 8))
    assert torch.equal(model(idx, idx)[0], loaded(idx, idx)[0]), "the loaded model should give the same logits"


def test_training_learns_and_saves(trained_run):
    log = trained_run["log"]
    losses = [float(l.split("val loss ")[1]) for l in log.splitlines() if l.startswith("step ")]
    assert len(losses) == 3, f"expected evals at steps 0, 10, 20:\n{log}"
    assert losses[-1] < losses[0], f"val loss should fall in 20 steps: {losses}"
    ckpt = ck.load_checkpoint(trained_run["out"])
    assert {"model", "optimizer", "model_args", "iter_num", "best_val_loss", "config"} <= ckpt.keys()
    assert ckpt["iter_num"] == 20, f"the last eval should be saved, got iter {ckpt['iter_num']}"
    assert os.path.isfile(os.path.join(trained_run["out"], "meta.pkl")), "the vocabulary should be kept with the run"


@pytest.mark.parametrize("always", [True, False])
def test_always_save_even_without_improvement(tmp_path, tiny_data, always):
    out = str(tmp_path / "out")
    base = [f"--dataset={tiny_data}", f"--out_dir={out}", "--eval_interval=5", *TINY]
    assert run("train.py", *base, "--max_iters=5").returncode == 0
    ckpt = ck.load_checkpoint(out)
    ckpt["best_val_loss"] = 0.0  # no real loss can beat this: every later eval is "no improvement"
    ck.save_checkpoint(out, ckpt)
    proc = run("train.py", *base, "--max_iters=10", "--init_from=resume", f"--always_save_checkpoint={always}")
    assert proc.returncode == 0, proc.stderr
    saved_iter = ck.load_checkpoint(out)["iter_num"]
    assert saved_iter == (10 if always else 5), f"always_save_checkpoint={always}: checkpoint from iter {saved_iter}"


def test_resume_continues_from_the_checkpoint(trained_run, tmp_path):
    import shutil
    out = str(tmp_path / "out")
    shutil.copytree(trained_run["out"], out)
    proc = run("train.py", f"--dataset={trained_run['data']}", f"--out_dir={out}", "--max_iters=25",
               "--eval_interval=5", "--init_from=resume", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "resuming from" in proc.stdout and "iter 20:" in proc.stdout and "iter 19:" not in proc.stdout, proc.stdout
    assert ck.load_checkpoint(out)["iter_num"] == 25


def test_resume_with_another_shape_says_what_differs(trained_run):
    proc = run("train.py", f"--dataset={trained_run['data']}", f"--out_dir={trained_run['out']}",
               "--init_from=resume", *TINY, "--n_layer=3")
    assert_user_error(proc, "n_layer 3 asked for", "model has 2")


@pytest.mark.parametrize("args, words", [
    (["--dataset=/no/such/dataset"], ["python data/chinese/prepare.py --input=your.txt --out_dir=/no/such/dataset"]),
    (["--dataset=openwebtext"], ["run python data/openwebtext/prepare.py first"]),  # a corpus with its own script
    (["--n_embd=30", "--n_head=4"], ["divisible"]),
    (["--batch_size=0"], ["batch_size must be at least 1"]),
    (["--block_size=5000"], ["block_size"]),
    (["--init_from=resume"], ["no checkpoint"]),
])
def test_bad_training_settings(tmp_path, tiny_data, args, words):
    proc = run("train.py", f"--dataset={tiny_data}", f"--out_dir={tmp_path / 'o'}", *TINY, *args)
    assert_user_error(proc, *words)
    assert not os.path.exists(tmp_path / "o" / "ckpt.pt"), "a refused run should write no checkpoint"


def test_restricted_meta_unpickler_refuses_code(tmp_path):
    import pickle
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps({"vocab_size": 1, "itos": {}, "stoi": {}, "x": Evil()}))
    with pytest.raises(ck.UserError, match="not plain data"):
        ck.load_meta(str(path))
    assert not marker.exists(), "unpickling meta.pkl must not run code"
