"""
out_dir/status.json, the contract between train.py and whatever watches a run (the web page, bench.py,
your scripts): its states, its figures, its end, and a run that died without writing its end.
Run: python -m pytest tests/test_status.py
"""

import os
import signal
import subprocess
import sys
import time

from conftest import REPO, TINY, run

from babygpt import jobs
from babygpt import status
from babygpt.progress import read_log


def quiet_train(data, out, *args):
    """train.py with its output thrown away: whatever reads the run must do without its printed lines."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), f"--dataset={data}", f"--out_dir={out}",
                             *TINY, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def watch(proc, out, until=lambda st: False, timeout=120):
    """Poll status.json while proc runs (or until `until(status)`); returns the states seen, in order."""
    seen, deadline = [], time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        st = status.read_status(out)
        if st and (not seen or seen[-1]["state"] != st["state"]):
            seen.append(st)
        if st and until(st):
            break
        time.sleep(0.01)
    assert time.time() < deadline, f"train.py still running after {timeout} s: {seen[-1:]}"
    return seen


def test_status_follows_a_run_to_its_end_without_its_output(tmp_path, tiny_data):
    out = str(tmp_path / "out")
    proc = quiet_train(tiny_data, out, "--max_iters=40", "--eval_interval=20")
    seen = watch(proc, out)
    assert proc.wait(timeout=60) == 0, "the tiny run should finish"
    st = status.read_status(out)
    assert "training" in [s["state"] for s in seen], f"a poll during the run should see it training: {seen}"
    assert (st["state"], st["exit_status"], st["error"]) == ("finished", 0, None), f"the end: {st}"
    assert (st["iter"], st["max_iters"], st["pid"]) == (40, 40, proc.pid), f"where and who: {st}"
    last_eval = read_log(out)[-1]
    assert abs(st["val_loss"] - last_eval["val_loss"]) < 1e-5, f"val_loss should be the last eval's: {st} {last_eval}"
    assert st["tokens_per_s"] > 0 and st["train_loss"] > 0 and st["eta_s"] == 0.0, f"speed and loss: {st}"
    assert not status.is_running(st), "a finished run is not running"
    # the page reads the same file: it knows the run finished although train.py printed nothing anywhere
    job = {"pid": proc.pid, "process_start": seen[0]["process_start"]}
    assert jobs.job_status(job, st) == ("finished", {"iter": 40, "error": None}), jobs.job_status(job, st)


def test_a_refused_setting_writes_no_status_and_the_page_shows_its_line(tmp_path, tiny_data):
    """A refusal writes nothing, in an existing out_dir (the page makes it first) or a new one (not even made);
    the page shows train.py's one line from the log as failed."""
    out = tmp_path / "out"
    out.mkdir()
    proc = run("train.py", f"--dataset={tiny_data}", f"--out_dir={out}", *TINY, "--n_embd=33")
    assert proc.returncode == 1 and "must be divisible" in proc.stderr, f"a refusal should exit 1:\n{proc.stderr}"
    assert os.listdir(out) == [], f"a refused run should write nothing in out_dir: {os.listdir(out)}"
    job = {"pid": 2 ** 22 + 7, "process_start": None}  # a pid no process has: the job has ended
    line = jobs.job_status(job, None, log=proc.stdout + proc.stderr)
    assert line == ("failed", {"line": proc.stderr.strip().splitlines()[-1]}), f"the page's state: {line!r}"
    fresh = tmp_path / "fresh"
    run("train.py", f"--dataset={tiny_data}", f"--out_dir={fresh}", *TINY, "--n_embd=33")
    assert not fresh.exists(), "a refused run in a new out_dir should leave nothing behind"


def test_a_killed_run_is_told_by_its_pid_and_start_time(tmp_path, tiny_data):
    """SIGKILL leaves status.json saying 'training'; the process behind it is gone, so it is not running,
    and the page says the run died. A live pid with another start time (a reused pid) is not the run."""
    out = str(tmp_path / "out")
    proc = quiet_train(tiny_data, out, "--max_iters=100000", "--eval_interval=100000")
    seen = watch(proc, out, until=lambda st: st["state"] == "training" and st["iter"] >= 3)
    st = seen[-1]
    assert status.is_running(st), f"a live run should count as running: {st}"
    assert not status.run_alive(st["pid"], st["process_start"] - 1), "another start time is another process"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    st = status.read_status(out)
    assert st["state"] == "training" and st["exit_status"] is None, f"a killed run writes nothing more: {st}"
    assert not status.is_running(st), "its process is gone: not running"
    state, figures = jobs.job_status({"pid": st["pid"], "process_start": st["process_start"]}, st)
    assert (state, figures["iter"]) == ("died", st["iter"]), f"the page should say it died: {state} {figures}"


def test_status_py_prints_a_run_for_a_person(tmp_path, tiny_data):
    out = str(tmp_path / "out")
    assert run("train.py", f"--dataset={tiny_data}", f"--out_dir={out}", *TINY, "--max_iters=6").returncode == 0
    status_py = lambda folder: subprocess.run([sys.executable, "-m", "babygpt.status", folder], cwd=REPO,  # noqa: E731
                                              capture_output=True, text=True, encoding="utf-8", timeout=60)
    proc = status_py(out)
    st = status.read_status(out)
    assert proc.returncode == 0, proc.stderr
    assert f"{out}: finished" in proc.stdout, f"the state first:\n{proc.stdout}"
    assert "iteration   6 of 6" in proc.stdout and f"{st['val_loss']:.4f}" in proc.stdout, proc.stdout
    empty = status_py(str(tmp_path))
    assert empty.returncode == 1 and "no status.json" in empty.stderr and "Traceback" not in empty.stderr, empty.stderr


def test_training_over_a_run_says_it_replaces_it_and_eval_only_writes_nothing(tmp_path, tiny_data):
    out = tmp_path / "out"
    first = run("train.py", f"--dataset={tiny_data}", f"--out_dir={out}", *TINY, "--max_iters=2")
    assert first.returncode == 0 and "holds an earlier run" not in first.stderr, first.stderr
    again = run("train.py", f"--dataset={tiny_data}", f"--out_dir={out}", *TINY, "--max_iters=2")
    assert "note:" in again.stderr and "holds an earlier run" in again.stderr, f"say it replaces:\n{again.stderr}"
    fresh = tmp_path / "eval"
    proc = run("train.py", f"--dataset={tiny_data}", f"--out_dir={fresh}", *TINY, "--eval_only=True")
    assert proc.returncode == 0 and "val loss" in proc.stdout, proc.stderr
    assert not fresh.exists(), f"eval_only should write nothing, left {os.listdir(fresh)}"
