"""
How a run reports itself: out_dir/log.csv and loss.png, tqdm bars only on a terminal, and
wandb in offline mode (its run file read back). Run: python -m pytest tests/test_progress.py
"""

import csv
import fcntl
import glob
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios

import pytest
from conftest import REPO, TINY, run

import train
from babygpt import schedule


def eval_lines(stdout):
    """{iter: (train loss, val loss)} from train.py's 'step N: train loss X, val loss Y' lines."""
    found = re.findall(r"step (\d+): train loss (\S+), val loss (\S+)", stdout)
    return {int(i): (float(t), float(v)) for i, t, v in found}


def read_csv(out_dir):
    with open(os.path.join(out_dir, "log.csv"), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_log_csv_holds_each_eval(trained_run):
    rows = read_csv(trained_run["out"])
    logged = eval_lines(trained_run["log"])
    assert [int(r["iter"]) for r in rows] == [0, 10, 20], f"one row per eval expected: {rows}"
    for r in rows:
        it = int(r["iter"])
        assert round(float(r["train_loss"]), 4) == logged[it][0], f"train loss at {it}: csv {r} vs log {logged[it]}"
        assert round(float(r["val_loss"]), 4) == logged[it][1], f"val loss at {it}: csv {r} vs log {logged[it]}"
        want_lr = schedule.get_lr(it, train.learning_rate, train.warmup_iters, train.lr_decay_iters, train.min_lr)
        assert float(r["lr"]) == pytest.approx(want_lr, rel=1e-5), f"lr at {it}: {r['lr']} vs {want_lr}"
    times = [float(r["time_s"]) for r in rows]
    assert times == sorted(times) and times[-1] > 0, f"time_s should grow: {times}"


def test_loss_png_is_a_real_plot(trained_run):
    path = os.path.join(trained_run["out"], "loss.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", "loss.png should be a PNG file"
    import matplotlib.image
    img = matplotlib.image.imread(path)  # (H, W, RGBA)
    assert img.shape[0] >= 300 and img.shape[1] >= 500, f"plot too small: {img.shape}"
    colours = {tuple(p) for p in img.reshape(-1, img.shape[2])[::7].round(2).tolist()}
    assert len(colours) > 20, f"an empty canvas, not a plot with axes and two lines ({len(colours)} colours)"


def test_resume_appends_to_the_log(trained_run, tmp_path):
    out = str(tmp_path / "out")
    shutil.copytree(trained_run["out"], out)
    before = read_csv(out)
    proc = run("train.py", f"--dataset={trained_run['data']}", f"--out_dir={out}", "--max_iters=30",
               "--eval_interval=10", "--init_from=resume", *TINY)
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(out)
    # the resumed run evaluates iter 20 again (it starts there): that row is replaced, not doubled
    assert [int(r["iter"]) for r in rows] == [0, 10, 20, 30], f"resume should append: {rows}"
    assert rows[:2] == before[:2], "rows before the checkpoint should be kept as they were"
    assert float(rows[3]["time_s"]) >= float(before[2]["time_s"]), "the clock should continue across a resume"


def run_with_stderr(stderr_tty, script, *args):
    """Run a script with its stderr on a pseudo-terminal, or not on a terminal (conftest.run() captures
    it in a file); returns (stdout, stderr text)."""
    args = [sys.executable, os.path.join(REPO, script), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")
    if not stderr_tty:
        proc = run(script, *args[2:])
        return proc.stdout, proc.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 x 100, as a terminal has
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    stdout = proc.communicate(timeout=300)[0].decode()
    os.close(leader)
    return stdout, b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_progress_bar_only_on_a_terminal(tmp_path, tiny_data):
    args = [f"--dataset={tiny_data}", f"--out_dir={tmp_path / 'o'}", "--max_iters=5", "--eval_interval=5", *TINY]
    out, err = run_with_stderr(True, "train.py", *args)
    assert "train: 100%" in err and "5/5" in err, f"a terminal should show the bar with its count:\n{err}"
    assert "iter 4: loss" in out, f"the nanoGPT log lines stay on stdout:\n{out}"
    out, err = run_with_stderr(False, "train.py", *args)
    assert "it/s" not in err and "%|" not in err, f"no bar when stderr is not a terminal:\n{err}"
    assert "iter 4: loss" in out, f"the log lines stay:\n{out}"
    sample = [f"--out_dir={tmp_path / 'o'}", "--num_samples=2", "--max_new_tokens=5", "--device=cpu"]
    out, err = run_with_stderr(True, "sample.py", *sample)
    assert "characters: 100%" in err and "5/5" in err, f"sample.py should show a bar on a terminal:\n{err}"
    assert out.count("---------------") == 2, f"the samples stay on stdout:\n{out}"


def wandb_records(path):
    """The protobuf records of a .wandb run file: a 7-byte header (':W&B', magic, version), then
    LevelDB-log chunks (crc32, length, type) in 32 KiB blocks; types 1 (FULL) and 4 (LAST) end a record."""
    from wandb.proto import wandb_internal_pb2
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    pos, block, parts = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left for a chunk header: padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def test_wandb_offline_run_holds_config_and_metrics(tmp_path, tiny_data):
    wandb_dir = tmp_path / "wb"
    wandb_dir.mkdir()
    proc = run("train.py", f"--dataset={tiny_data}", f"--out_dir={tmp_path / 'o'}", "--max_iters=20",
               "--eval_interval=10", "--wandb_log=True", "--wandb_run_name=tiny", *TINY,
               env_extra={"WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir)})
    assert proc.returncode == 0, proc.stderr
    files = glob.glob(str(wandb_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1, f"one offline run expected under WANDB_DIR, found {files}"
    history, config = [], {}
    for r in wandb_records(files[0]):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "run":
            config = {i.key: json.loads(i.value_json) for i in r.run.config.update}
            assert r.run.display_name == "tiny", f"run name should be wandb_run_name: {r.run.display_name}"
    assert config.get("batch_size") == 4 and config.get("n_layer") == 2, f"the run's config should be logged: {config}"
    logged = eval_lines(proc.stdout)
    assert [h["iter"] for h in history] == [0, 10, 20], f"one history row per eval: {history}"
    for h in history:
        assert round(h["val/loss"], 4) == logged[h["iter"]][1], f"val loss differs from the log: {h}"
        assert round(h["train/loss"], 4) == logged[h["iter"]][0], f"train loss differs from the log: {h}"
        assert h["lr"] > 0, f"lr should be logged: {h}"
    assert "mfu" in history[-1] and history[-1]["mfu"] > 0, f"mfu should be logged once measured: {history[-1]}"


@pytest.mark.skipif("WANDB_API_KEY" in os.environ, reason="a wandb login is configured here")
def test_wandb_without_login_is_one_line_and_writes_nothing(tmp_path, tiny_data):
    home = str(tmp_path / "home")  # no ~/.netrc or wandb settings: wandb has no login to find
    out = tmp_path / "o"
    proc = run("train.py", f"--dataset={tiny_data}", f"--out_dir={out}", "--max_iters=2", "--wandb_log=True", *TINY,
               env_extra={"WANDB_MODE": "online", "HOME": home, "WANDB_DIR": home, "WANDB_CONFIG_DIR": home})
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert proc.returncode != 0 and len(lines) == 1, f"expected one error line:\n{proc.stderr}"
    assert "wandb login" in lines[0] and "WANDB_MODE=offline" in lines[0], f"the fix should be named: {lines[0]}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists(), "a refused run should write nothing to out_dir"
