"""
Training that loses nothing and runs nothing it shouldn't: exact resume, kills mid-save, NaN,
full disk, crafted and corrupt checkpoints, and the bad inputs listed in tests/README.md.
Each test would fail on nanoGPT's behaviour (in-place save, reseeded resume, plain unpickling).
Run: python -m pytest tests/test_safety.py
"""

import os
import pickle
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO, TINY, assert_user_error, run, write_dataset

from babygpt import checkpoint as ck
from model import GPT, GPTConfig


def train(data, out, *args, **kw):
    return run("train.py", f"--dataset={data}", f"--out_dir={out}", *TINY, *args, **kw)


def losses_by_iter(stdout):
    """{iteration: the loss text train.py logged for it}."""
    return {int(i): l for i, l in re.findall(r"^iter (\d+): loss (\S+),", stdout, re.M)}


def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


# -----------------------------------------------------------------------------
# exact resume

def test_resume_is_exact_with_dropout(tmp_path, tiny_data):
    """8 iterations straight == 4, kill, resume, 4 more: same loss at every step, same final weights.
    Dropout makes the RNG state matter: nanoGPT reseeds on resume and so draws other masks."""
    args = ["--max_iters=8", "--eval_interval=4", "--dropout=0.1", "--learning_rate=3e-3"]
    straight = train(tiny_data, tmp_path / "a", *args)
    assert straight.returncode == 0, straight.stderr
    first = train(tiny_data, tmp_path / "b", *args, "--max_iters=4")
    second = train(tiny_data, tmp_path / "b", *args, "--init_from=resume")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    whole, split = losses_by_iter(straight.stdout), {**losses_by_iter(first.stdout), **losses_by_iter(second.stdout)}
    assert sorted(whole) == list(range(8)) and sorted(split) == list(range(8)), f"missing log lines: {whole} {split}"
    assert whole == split, f"losses differ after resume:\nstraight {whole}\nresumed  {split}"
    a, b = ck.load_checkpoint(str(tmp_path / "a")), ck.load_checkpoint(str(tmp_path / "b"))
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), f"final weight {name} differs between straight and resumed runs"
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"]), "the RNG should end in the same state"


def test_rng_states_round_trip_through_a_safe_load(tmp_path):
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    ck.save_checkpoint(str(tmp_path), {"rng": ck.rng_states()})
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    ck.set_rng_states(ck.load_checkpoint(str(tmp_path))["rng"])  # through torch.load(weights_only=True)
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], got[0]), "torch RNG not restored"
    assert expected[1:] == got[1:], f"python/numpy RNG not restored: {expected[1:]} vs {got[1:]}"


# -----------------------------------------------------------------------------
# kills, NaN, full disk: the last good checkpoint survives

@pytest.mark.slow
def test_sigkill_at_random_moments_never_leaves_a_broken_checkpoint(tmp_path, tiny_data):
    """Kill train.py 20 times at random moments of a run that saves every iteration, so many kills
    land inside a save (tests/killer.py). After each kill ckpt.pt is absent or loads; each restart
    resumes from it, and a last real train.py process resumes to the end."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "killer.py"), "20", "5", "--",
                           f"--dataset={tiny_data}", f"--out_dir={out}", *TINY, "--eval_interval=1",
                           "--eval_iters=1", "--max_iters=100000"],
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"),
                          capture_output=True, text=True, timeout=300)
    report = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(report) == 20, f"the killer did not finish:\n{proc.stdout}\n{proc.stderr}"
    assert not [l for l in report if "BROKEN" in l or "ENDED" in l], "\n".join(report)
    assert sum("loaded" in l for l in report) >= 15, f"too few kills found a checkpoint:\n{proc.stdout}"
    torn = int(report[-1].split("; ")[1].split()[0])
    assert torn >= 1, f"no kill landed inside a save, so the test proved little:\n{proc.stdout}"
    last = ck.load_checkpoint(str(out))["iter_num"]
    proc = train(tiny_data, out, "--init_from=resume", f"--max_iters={last + 2}", "--eval_interval=1")
    assert proc.returncode == 0 and f"resuming from {out} at iteration {last}" in proc.stdout, proc.stdout + proc.stderr


@pytest.fixture
def saved_run(tmp_path, tiny_data):
    """A run with a checkpoint at iteration 5, and the checkpoint's bytes."""
    out = tmp_path / "out"
    proc = train(tiny_data, out, "--max_iters=5", "--eval_interval=5")
    assert proc.returncode == 0, proc.stderr
    return tiny_data, out, file_bytes(out / "ckpt.pt")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(saved_run):
    """A learning rate of 1e30 makes the weights overflow float32 within two steps: a real divergence."""
    data, out, before = saved_run
    proc = train(data, out, "--init_from=resume", "--max_iters=50", "--eval_interval=2", "--learning_rate=1e30")
    assert_user_error(proc, "nan", "at iteration", "lower --learning_rate")
    assert "saved checkpoint" not in proc.stdout.split("iter 5:")[1], f"a diverged model was saved:\n{proc.stdout}"
    after = ck.load_checkpoint(str(out))
    assert after["iter_num"] == 5, f"the checkpoint moved on to iteration {after['iter_num']}"
    assert all(torch.isfinite(t).all() for t in after["model"].values()), "the kept checkpoint holds NaN weights"


# as conftest.run(): two torch threads on a busy 2-core machine can run ten times slower than one
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1")


def _limit_file_size():
    # a file may grow to 20 kB, then write() fails with EFBIG as on a full disk (SIGXFSZ ignored so
    # the process sees the error instead of dying of the signal)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_full_disk_is_one_line_and_the_old_checkpoint_survives(saved_run):
    data, out, before = saved_run
    proc = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), f"--dataset={data}", f"--out_dir={out}",
                           *TINY, "--init_from=resume", "--max_iters=10", "--eval_interval=5"], cwd=REPO,
                          env=ONE_THREAD, capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=300)
    assert_user_error(proc, "could not write", "free disk space")
    assert file_bytes(out / "ckpt.pt") == before, "the previous checkpoint was changed by a failed save"
    assert [f for f in os.listdir(out) if f.endswith(".tmp")] == [], "a failed save left its temporary file"


def test_full_disk_while_writing_samples_keeps_the_old_file(saved_run, tmp_path):
    _, out, _ = saved_run
    samples = tmp_path / "samples.txt"
    samples.write_text("the samples of an earlier run\n", encoding="utf-8")
    # 40 x 250 characters, most of them 3-byte UTF-8, is ~27 kB: past the 20 kB limit (in 250 steps, not 1,000)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "sample.py"), f"--out_dir={out}", "--device=cpu",
                           "--num_samples=40", "--max_new_tokens=250", f"--out_file={samples}"], cwd=REPO,
                          env=ONE_THREAD, capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=300)
    assert_user_error(proc, "could not write", "--out_file")
    assert samples.read_text(encoding="utf-8") == "the samples of an earlier run\n", "the old samples file was changed"
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == [], "a failed write left its temporary file"


def test_out_dir_that_cannot_be_a_folder(tmp_path, tiny_data):
    blocker = tmp_path / "taken"
    blocker.write_text("a file where out_dir should go")
    assert_user_error(train(tiny_data, blocker, "--max_iters=2"), "cannot create out_dir", "another --out_dir")
    assert blocker.read_text() == "a file where out_dir should go", "the file in the way was changed"


# -----------------------------------------------------------------------------
# checkpoints that must not run, and nanoGPT's that must load

class _MakesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))  # unpickling this calls open(path, 'w')


def test_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "iter_num": 1, "x": _MakesAFile(str(marker))}, tmp_path / "ckpt.pt")
    with pytest.raises(ck.UserError, match="refused to load"):
        ck.load_checkpoint(str(tmp_path))
    assert_user_error(run("sample.py", f"--out_dir={tmp_path}", "--device=cpu"), "refused to load")
    assert not marker.exists(), "loading ckpt.pt ran code from it"
    torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert marker.exists(), "sanity: the crafted file should create the marker when loaded unsafely"


def test_crafted_meta_pkl_is_refused_by_sample_py(trained_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(trained_run["out"], out)
    marker = tmp_path / "pwned"
    (out / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 1, "itos": {}, "stoi": {}, "x": _MakesAFile(str(marker))}))
    assert_user_error(run("sample.py", f"--out_dir={out}", "--device=cpu"), "not plain data")
    assert not marker.exists(), "loading meta.pkl ran code from it"


def test_nanogpt_checkpoint_loads_and_resumes(tmp_path, tiny_data):
    """A ckpt.pt saved the way nanoGPT's train.py saves it: compiled-model key prefixes, a tensor
    best_val_loss, its config dict, no RNG or scaler state."""
    meta = ck.load_meta(os.path.join(tiny_data, "meta.pkl"))
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, bias=False, vocab_size=meta["vocab_size"], dropout=0.0)
    model = GPT(GPTConfig(**args))
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    out = tmp_path / "out"
    out.mkdir()
    torch.save({"model": {"_orig_mod." + k: v for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(), "model_args": args, "iter_num": 3,
                "best_val_loss": torch.tensor(3.9), "config": {"dataset": tiny_data, "batch_size": 4}},
               out / "ckpt.pt")
    loaded = ck.model_from_checkpoint(ck.load_checkpoint(str(out)))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), f"{name} changed in the round trip"
    proc = train(tiny_data, out, "--init_from=resume", "--max_iters=5", "--eval_interval=5")
    assert proc.returncode == 0 and "resuming from" in proc.stdout, proc.stderr


# -----------------------------------------------------------------------------
# bad inputs not covered elsewhere (the full table is tests/README.md)

@pytest.mark.parametrize("spoil, words", [
    ("truncate", ["corrupt or truncated"]),
    ("garbage", ["corrupt or truncated"]),
])
def test_corrupt_checkpoint(saved_run, spoil, words):
    data, out, before = saved_run
    bad = before[: len(before) // 2] if spoil == "truncate" else b"not a checkpoint at all" * 10
    (out / "ckpt.pt").write_bytes(bad)
    assert_user_error(train(data, out, "--init_from=resume", "--max_iters=8"), *words)
    assert_user_error(run("sample.py", f"--out_dir={out}", "--device=cpu"), *words)
    assert file_bytes(out / "ckpt.pt") == bad, "a refused resume should leave ckpt.pt as it was"


def test_resume_with_another_vocabulary_says_what_differs(saved_run, tmp_path):
    data, out, before = saved_run
    other = str(tmp_path / "other")
    write_dataset(other, text="abcdefgh" * 200)
    assert_user_error(train(other, out, "--init_from=resume", "--max_iters=8"), "vocab_size 50 in the checkpoint vs 8")
    assert file_bytes(out / "ckpt.pt") == before, "a refused resume changed ckpt.pt"


@pytest.mark.parametrize("spoil, words", [
    ("ids_past_vocab", ["token id", "different prepare runs"]),
    ("half_token", ["whole uint16 tokens"]),
])
def test_dataset_whose_meta_does_not_match_its_bins(tmp_path, spoil, words):
    data = tmp_path / "ds"
    write_dataset(str(data))
    with open(data / "val.bin", "ab") as f:
        f.write(b"\xff\xff" if spoil == "ids_past_vocab" else b"\x01")
    assert_user_error(train(str(data), tmp_path / "out", "--max_iters=2"), *words)
    assert not (tmp_path / "out").exists(), "a refused run should create nothing"


@pytest.mark.parametrize("args, words", [
    (["--dropout=1.5"], ["dropout must be in [0, 1)"]),
    (["--learning_rate=0"], ["learning_rate must be > 0"]),
    (["--max_iters=-1"], ["max_iters must be 0 or more"]),
    (["--init_from=gpt3"], ["init_from must be"]),
    (["--dtype=float8"], ["unknown dtype"]),
    (["--device=tpu"], ["unknown device"]),
    pytest.param(["--device=cuda"], ["no CUDA GPU"],
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_more_bad_training_settings(tmp_path, tiny_data, args, words):
    assert_user_error(train(tiny_data, tmp_path / "o", *args), *words)
    assert not os.path.exists(tmp_path / "o"), "a refused run should create nothing"


@pytest.mark.parametrize("args, words", [
    (["--start=@@"], ["no character of the prompt is in the model's vocabulary"]),
    (["--start="], ["prompt is empty"]),
    (["--num_samples=0"], ["at least 1"]),
])
def test_more_bad_sampling_settings(trained_run, args, words):
    assert_user_error(run("sample.py", f"--out_dir={trained_run['out']}", "--device=cpu", *args), *words)


def test_debug_env_shows_the_traceback(tmp_path, tiny_data):
    proc = train(tiny_data, tmp_path / "o", "--batch_size=0", env_extra={"BABYGPT_DEBUG": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr, f"BABYGPT_DEBUG=1 should show the traceback:\n{proc.stderr}"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run that finished (ckpt.pt, best.pt, meta.pkl, log.csv, loss.png, status.json), and its dataset."""
    root = tmp_path_factory.mktemp("finished")
    data, out = str(root / "data"), str(root / "out")
    write_dataset(data)
    proc = train(data, out, "--max_iters=4", "--eval_interval=2")
    assert proc.returncode == 0, proc.stderr
    write_dataset(str(root / "other"), text="春眠不觉晓，处处闻啼鸟。" * 80)  # another vocabulary
    return data, out, str(root / "other")


def tree_bytes(folder):
    """{file name: its bytes} for every file in folder."""
    return {name: file_bytes(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}


@pytest.mark.parametrize("args, words", [
    (["--batch_size=abc"], "batch_size must be int"),
    (["--batch_szie=3"], "did you mean 'batch_size'"),
    (["--dataset=nosuchdata"], "is not prepared"),
    (["--n_embd=33"], "must be divisible"),
    (["--batch_size=0"], "batch_size must be at least 1"),
    (["--block_size=5000"], "lower --block_size"),
    (["--dropout=1.5"], "dropout must be in [0, 1)"),
    (["--learning_rate=0"], "learning_rate must be > 0"),
    (["--max_iters=-1"], "max_iters must be 0 or more"),
    (["--init_from=gpt3"], "init_from must be"),
    (["--dtype=float8"], "unknown dtype"),
    (["--device=tpu"], "unknown device"),
    (["--passes=2", "--max_iters=5"], "add --passes=0"),
    (["--decay_to_start=True"], "decay_to_start"),
    (["--init_from=resume", "--n_layer=3"], "drop --n_layer"),
    (["--init_from=resume", "--dataset=OTHER"], "vocab_size"),
    (["--init_from=OUT", "--n_layer=3"], "drop --n_layer"),
    (["--init_from=OUT", "--dataset=OTHER"], "--vocab_from="),
])
def test_every_refusal_leaves_a_finished_run_as_it_was(finished_run, args, words):
    """Each refusal, run into the folder of a finished run, answers with one line and leaves every file
    there byte for byte as it was: status.json still says finished."""
    data, out, other = finished_run
    before = tree_bytes(out)
    args = [a.replace("OTHER", other).replace("OUT", out) for a in args]
    proc = run("train.py", f"--dataset={data}", *TINY, f"--out_dir={out}", *args)
    assert_user_error(proc, words)
    after = tree_bytes(out)
    changed = sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))
    assert not changed, f"{' '.join(args)} changed {changed} in the finished run's folder"
