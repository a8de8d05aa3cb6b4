"""
train.py's clean stop on Ctrl-C (SIGINT: what the web page's Stop sends) and best.pt beside ckpt.pt.
Run: python -m pytest tests/test_stop.py
"""

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import REPO, TINY, run, write_dataset

from babygpt import checkpoint as ck
from babygpt import status


def start_training(data, out, *args):
    """train.py in the background, its stdout read line by line (unbuffered) and stderr collected."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), f"--dataset={data}", f"--out_dir={out}",
                             *TINY, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, encoding="utf-8")
    err = []
    proc.err_reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    proc.err_reader.start()
    return proc, err


def finish(proc):
    """Wait for the end; returns the rest of stdout (stderr is then complete in the list)."""
    rest = proc.stdout.read()  # not communicate(): it would race the thread for stderr
    proc.wait(timeout=120)
    proc.err_reader.join(timeout=10)
    return rest


def wait_for(proc, pattern):
    """Read stdout until a line matches; returns the lines read so far."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"train.py ended before printing {pattern!r}:\n{''.join(lines)}")


def test_ctrl_c_saves_where_it_stopped_and_resume_continues(tmp_path, tiny_data):
    out = tmp_path / "out"
    proc, err = start_training(tiny_data, out, "--max_iters=100000", "--eval_interval=100000")
    lines = wait_for(proc, r"^iter 5:")
    proc.send_signal(signal.SIGINT)
    stdout = "".join(lines) + finish(proc)
    assert proc.returncode == 130, f"a Ctrl-C stop should exit 130, got {proc.returncode}:\n{''.join(err)}"
    stopped = re.search(r"stopped at iteration (\d+)", stdout)
    assert stopped, f"train.py should say where it stopped:\n{stdout[-800:]}"
    n = int(stopped.group(1))
    last_logged = max(int(i) for i in re.findall(r"^iter (\d+):", stdout, re.M))
    assert n == last_logged + 1 and n > 5, f"it should finish the current step and stop: iteration {n}, last step {last_logged}"
    ckpt = ck.load_checkpoint(str(out))
    assert ckpt["iter_num"] == n, f"ckpt.pt should be at the stopped iteration {n}, holds {ckpt['iter_num']}"
    assert "Traceback" not in "".join(err), "".join(err)
    st = status.read_status(str(out))
    assert (st["state"], st["iter"], st["exit_status"]) == ("stopped", n, 130), f"status.json should say stopped: {st}"

    resumed = run("train.py", f"--dataset={tiny_data}", f"--out_dir={out}", *TINY, f"--max_iters={n + 3}",
                  "--eval_interval=100000", "--init_from=resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {out} at iteration {n}" in resumed.stdout, resumed.stdout
    steps = [int(i) for i in re.findall(r"^iter (\d+):", resumed.stdout, re.M)]
    assert steps == [n, n + 1, n + 2], f"resume should run the steps after the stop, ran {steps}"


def second_signal(proc, out, when):
    """Send the second Ctrl-C: at once, after a delay (seconds), or once status.json says the save is under way."""
    if when == "during the save":
        for _ in range(2000):  # up to ~20 s
            st = status.read_status(str(out))
            if st and st["state"] == "saving" and st["iter"] > 0:
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"train.py never reported its stop's save: {status.read_status(str(out))}")
    else:
        time.sleep(when)
    proc.send_signal(signal.SIGINT)


@pytest.mark.slow
@pytest.mark.parametrize("when", [0.01, 0.05, 0.3, 1.0, "during the save"])
def test_second_ctrl_c_quits_at_once_without_saving(tmp_path, tiny_data, when):
    """Whenever the second Ctrl-C lands (in the step the first one let finish, or inside the save), the run
    quits with 130, prints no traceback and leaves no half-written file; a ckpt.pt is on disk only if the
    stop's save had finished first. Within the step (well under its ~1 s) it never saves."""
    out = tmp_path / "out"
    # a model slow enough (~1 s a step) that the early signals land inside the step the first one let finish:
    # the first comes a little after a step began, not at its end, where the stop's save would start at once
    proc, err = start_training(tiny_data, out, "--max_iters=100000", "--eval_interval=100000",
                               "--n_embd=384", "--n_head=4", "--block_size=128", "--batch_size=32")
    wait_for(proc, r"^iter 1:")
    time.sleep(0.15)
    proc.send_signal(signal.SIGINT)
    second_signal(proc, out, when)
    stdout, stderr = finish(proc), "".join(err)
    assert proc.returncode == 130, f"expected exit 130, got {proc.returncode}:\n{stderr[-1500:]}"
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")], f"a half-written file is left: {os.listdir(out)}"
    saved = "stopped at iteration" in stdout
    if when in (0.01, 0.05):
        assert not saved, f"a second Ctrl-C inside the step should not wait for a save:\n{stdout[-500:]}"
    if saved:
        assert ck.load_checkpoint(str(out))["iter_num"] > 1, "the stop's save should be a whole checkpoint"
    else:
        assert "interrupted" in stderr, f"the quit should say so:\n{stderr[-500:]}"
        if os.path.exists(out / "ckpt.pt"):  # the save finished just before the signal was handled
            ck.load_checkpoint(str(out))
    st = status.read_status(str(out))
    assert st["state"] == "stopped" and st["exit_status"] == 130, f"status.json should say stopped: {st}"


def test_best_pt_keeps_the_lowest_val_loss_of_an_overfitting_run(tmp_path):
    """A tiny corpus and a big learning rate overfit: val loss rises after its low point. best.pt keeps
    that low point, ckpt.pt the latest weights."""
    data = str(tmp_path / "ds")
    rng = random.Random(0)
    text = "".join(chr(0x4e00 + rng.randrange(60)) for _ in range(3000))  # random: nothing to learn but the text
    write_dataset(data, text=text, val_fraction=0.2)
    out = tmp_path / "out"
    proc = run("train.py", f"--dataset={data}", f"--out_dir={out}", *TINY, "--n_embd=64", "--max_iters=300",
               "--eval_interval=20", "--learning_rate=1e-2", "--decay_lr=False", "--eval_iters=20")
    assert proc.returncode == 0, proc.stderr
    vals = {int(i): float(v) for i, v in re.findall(r"^step (\d+): .*val loss (\S+)", proc.stdout, re.M)}
    best_iter = min((i for i in vals if i > 0), key=vals.get)
    assert best_iter < 300 and vals[300] > vals[best_iter], f"the run should overfit: {vals}"
    best = torch.load(out / "best.pt", weights_only=True)
    latest = ck.load_checkpoint(str(out))
    assert "optimizer" not in best, "best.pt is for sampling: no optimizer state"
    assert best["iter_num"] == best_iter, f"best.pt should be from iteration {best_iter}, is from {best['iter_num']}"
    assert abs(best["best_val_loss"] - vals[best_iter]) < 1e-3, f"{best['best_val_loss']} vs {vals[best_iter]}"
    assert latest["iter_num"] == 300, "ckpt.pt stays the latest save"
    model = ck.model_from_checkpoint(best)
    assert model.config.n_embd == 64, "best.pt should load as a model"


def test_best_pt_is_written_from_the_first_eval_when_val_never_improves(tmp_path):
    """Random text: a fresh model's near-uniform guess is already the best there is, so val never beats
    step 0. best.pt then holds step 0's weights (with meta.pkl beside it), and sampling it works."""
    data = str(tmp_path / "ds")
    rng = random.Random(1)
    write_dataset(data, text="".join(chr(0x4e00 + rng.randrange(60)) for _ in range(3000)), val_fraction=0.2)
    out = tmp_path / "out"
    proc = run("train.py", f"--dataset={data}", f"--out_dir={out}", *TINY, "--max_iters=60", "--eval_interval=20",
               "--learning_rate=1e-2", "--decay_lr=False", "--eval_iters=20")
    assert proc.returncode == 0, proc.stderr
    vals = {int(i): float(v) for i, v in re.findall(r"^step (\d+): .*val loss (\S+)", proc.stdout, re.M)}
    assert min(vals, key=vals.get) == 0, f"this run's val loss should never beat step 0: {vals}"
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["iter_num"] == 0, f"best.pt should hold step 0's weights, holds iteration {best['iter_num']}"
    sampled = run("sample.py", f"--out_dir={out}", "--ckpt=best.pt", "--num_samples=1", "--max_new_tokens=5",
                  "--device=cpu", f"--start={chr(0x4e00)}")
    assert sampled.returncode == 0, f"the README's --ckpt=best.pt should work:\n{sampled.stderr}"
