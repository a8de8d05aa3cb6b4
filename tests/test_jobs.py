"""
babygpt/jobs.py on its own, without the page: real train.py processes on a tiny dataset, started, refused,
stopped and read back from their out_dir (web_run.json, train.log, status.json).
Run: OMP_NUM_THREADS=1 python -m pytest tests/test_jobs.py
"""

import os
import time

import pytest
from conftest import REPO, TINY

from babygpt import checkpoint
from babygpt import jobs
from babygpt import status


def wait_for_end(run_dir, job, timeout=120):
    """Poll as the page does until the job is neither starting nor running; returns its (state, figures)."""
    deadline = time.time() + timeout
    while True:
        state = jobs.job_status(job, status.read_status(run_dir), jobs.log_text(run_dir, job))
        if state[0] not in ("starting", "running"):
            return state
        assert time.time() < deadline, f"still {state} after {timeout} s:\n{jobs.log_text(run_dir, job)}"
        time.sleep(0.2)


def wait_for_exit(job, timeout=30):
    """train.py writes its end to status.json just before its process exits."""
    deadline = time.time() + timeout
    while jobs.job_alive(job) and time.time() < deadline:
        time.sleep(0.1)


def test_a_job_runs_to_its_end_and_is_read_back(tmp_path, tiny_data):
    base = tmp_path / "root"
    run_dir = str(base / "out-a")
    argv = [f"--dataset={tiny_data}", f"--out_dir={run_dir}", *TINY, "--max_iters=6", "--eval_interval=3"]
    job = jobs.start_training(argv, run_dir, REPO)
    assert job["command"].startswith("python train.py --dataset=") and job["argv"] == argv, job
    assert jobs.read_job(run_dir) == job, "web_run.json should hold the job just started"
    assert wait_for_end(run_dir, job) == ("finished", {"iter": 6, "error": None}), "the tiny run should finish"
    wait_for_exit(job)
    assert not jobs.job_alive(job), "a finished job is not alive"
    with open(os.path.join(run_dir, jobs.LOG_FILE), encoding="utf-8") as f:
        assert f.read().startswith(f"\n$ {job['command']}\n"), "train.log should open with the command it runs"
    assert "saved checkpoint" in jobs.log_text(run_dir, job), "the log tail should be train.py's output"
    assert checkpoint.load_checkpoint(run_dir)["iter_num"] == 6, "the run's checkpoint should be at its end"
    assert jobs.latest_job(str(base)) == "out-a", "the only job under base is the latest"


def test_a_refused_setting_is_failed_with_train_py_s_line(tmp_path, tiny_data):
    """train.py refuses before it writes anything in out_dir: no status.json, so the log's 'error: ' line."""
    run_dir = str(tmp_path / "out-bad")
    job = jobs.start_training([f"--dataset={tiny_data}", f"--out_dir={run_dir}", *TINY, "--n_embd=33"], run_dir, REPO)
    state, figures = wait_for_end(run_dir, job)
    assert state == "failed" and figures["line"].startswith("error: "), f"train.py's one line: {state} {figures}"
    assert "must be divisible" in figures["line"], f"the line should say what is wrong: {figures['line']}"
    assert sorted(os.listdir(run_dir)) == [jobs.LOG_FILE, jobs.JOB_FILE], \
        f"a refused run leaves only the job and its log: {os.listdir(run_dir)}"


def test_one_run_at_a_time_and_stop_saves_it(tmp_path, tiny_data):
    run_dir = str(tmp_path / "out-long")
    argv = [f"--dataset={tiny_data}", f"--out_dir={run_dir}", *TINY, "--max_iters=100000", "--eval_interval=20"]
    job = jobs.start_training(argv, run_dir, REPO)
    deadline = time.time() + 120
    while not (status.read_status(run_dir) or {}).get("iter", 0) > 20:  # past its first save
        log = jobs.log_text(run_dir, job)
        assert jobs.job_alive(job) and time.time() < deadline, f"the long run should go on:\n{log}"
        time.sleep(0.2)
    state, figures = jobs.job_status(job, status.read_status(run_dir))
    assert state == "running" and figures["max_iters"] == 100000, f"a live run is running: {state} {figures}"
    with pytest.raises(jobs.Busy) as busy:
        jobs.start_training(argv, run_dir, REPO)
    assert (busy.value.pid, busy.value.command) == (job["pid"], job["command"]), "a second start names the first"
    assert jobs.stop_training(run_dir) == job["pid"], "stop should send Ctrl-C to our train.py"
    state, figures = wait_for_end(run_dir, job)
    assert state == "stopped", f"Ctrl-C should stop the run: {state} {figures}"
    assert checkpoint.load_checkpoint(run_dir)["iter_num"] == figures["iter"], "stopped: saved where it stopped"
    wait_for_exit(job)
    assert jobs.stop_training(run_dir) is None, "nothing of ours runs there any more"


def test_a_killed_job_is_died_and_durations_read_well(tmp_path):
    """A status.json that says training, from a process that is gone, is a run that died."""
    st = {"pid": 2 ** 22 + 7, "process_start": None, "state": "training", "iter": 12}
    job = {"pid": st["pid"], "process_start": None}
    assert jobs.job_status(job, st) == ("died", {"state": "training", "iter": 12}), jobs.job_status(job, st)
    assert jobs.job_status(job, None) == ("no_status", {}), "no status and no error line: ended without a word"
    assert [jobs.duration(s) for s in (5, 65, 3725)] == ["5 s", "1 min 5 s", "1 h 2 min"], "how the ETA reads"
    assert jobs.latest_job(str(tmp_path)) is None, "no job under an empty folder"
