"""
Training runs started by another program (the web page): train.py as a process of its own, started,
stopped and read back from its out_dir. No gradio here, and no text for people: job_status says a
state and its figures, the page words them.

    job = jobs.start_training(["config/train_chinese_cpu.py", "--out_dir=out-x"], "out-x", repo)
    python -m pytest tests/test_jobs.py

A run's state lives on disk in its out_dir, so a reopened page or a second tab finds it: status.json
and log.csv, which train.py keeps (status.py), and web_run.json, the job this module started (pid and
process start, command, where its part of train.log begins). train.log is train.py's output, for people.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

from babygpt import status
from babygpt.atomic import atomic_write

JOB_FILE = "web_run.json"  # in out_dir: the train.py started here (pid and its start, command, log offset)
LOG_FILE = "train.log"     # in out_dir: train.py's stdout and stderr, appended run after run
_start_lock = threading.Lock()  # two Start clicks at the same moment must not both start a run


class Busy(Exception):
    """A train.py is already at work in that out_dir: its pid, and the command if it is a job of ours."""

    def __init__(self, pid, command):
        super().__init__(f"a run is already going (pid {pid})")
        self.pid, self.command = pid, command


def read_job(run_dir):
    try:
        with open(os.path.join(run_dir, JOB_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_job(run_dir, job):
    data = json.dumps(job, ensure_ascii=False, indent=1).encode("utf-8")
    atomic_write(os.path.join(run_dir, JOB_FILE), lambda f: f.write(data))


def job_alive(job):
    """Is the train.py we started still running (known by pid and process start time)?"""
    return bool(job) and status.run_alive(job["pid"], job.get("process_start"))  # a job before status.json: none


def run_going(job, st):
    """Is a train.py at work in this out_dir: ours (until it has written its end: exiting then is
    not working), or one started at a command line?"""
    if job and st and st["pid"] == job["pid"]:
        return status.is_running(st)
    return job_alive(job) or status.is_running(st)


def start_training(argv, run_dir, repo):
    """Start `python train.py *argv` (repo: the folder holding train.py, where it runs) unless a run is
    going in run_dir (then Busy). It runs in its own session (Ctrl-C at our terminal and a closed page
    leave it running), its output appended to run_dir/train.log; returns the job written to web_run.json.
    The run's state comes from the status.json train.py keeps, never from its output."""
    with _start_lock:
        job, st = read_job(run_dir), status.read_status(run_dir)
        if run_going(job, st):
            raise Busy(st["pid"] if status.is_running(st) else job["pid"], job["command"] if job else "")
        return _spawn(argv, run_dir, repo)


def _spawn(argv, run_dir, repo):
    os.makedirs(run_dir, exist_ok=True)
    command = shlex.join(["python", "train.py", *argv])
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")  # log lines as they come
    with open(os.path.join(run_dir, LOG_FILE), "ab") as log:
        log.write(f"\n$ {command}\n".encode("utf-8"))
        log.flush()
        offset = log.tell()
        proc = subprocess.Popen([sys.executable, os.path.join(repo, "train.py"), *argv], cwd=repo,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    job = {"pid": proc.pid, "process_start": status.process_start(proc.pid), "command": command, "argv": argv,
           "started": time.time(), "log_offset": offset}
    write_job(run_dir, job)
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it when it ends: no zombie left behind
    return job


def stop_training(run_dir):
    """Ctrl-C for our train.py in run_dir: it saves a checkpoint at the current iteration and exits (a second
    one exits at once). Returns its pid, or None when no job of ours is running there."""
    job = read_job(run_dir)
    if not job_alive(job):
        return None
    os.kill(job["pid"], signal.SIGINT)
    return job["pid"]


def log_text(run_dir, job, tail_bytes=1 << 14):
    """The last lines of this job's part of train.log, to show (nothing is read from them)."""
    path = os.path.join(run_dir, LOG_FILE)
    try:
        with open(path, "rb") as f:
            f.seek(max(job.get("log_offset", 0), os.path.getsize(path) - tail_bytes))
            return "\n".join(f.read().decode("utf-8", errors="replace").rstrip().splitlines()[-12:])
    except OSError:
        return ""


def duration(seconds):
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds // 60 % 60} min"
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def job_status(job, st, log=""):
    """(state, figures) of a job: starting, running, finished, stopped, failed, died or no_status, from its
    status.json (st) once that file is this process's. train.py refuses bad settings before it writes
    anything in out_dir: such a run ended without a status of its own, and failed with the last 'error: '
    line of its log (log_text), as train.py wrote it."""
    alive = job_alive(job)
    if not st or st["pid"] != job["pid"]:  # train.py has not written its status yet, or refused to start
        if alive:
            return "starting", {"pid": job["pid"]}
        refusal = [line for line in log.splitlines() if line.startswith("error: ")]
        return ("failed", {"line": refusal[-1]}) if refusal else ("no_status", {})
    state = st["state"]
    if state in status.RUNNING and not alive:
        return "died", {"state": state, "iter": st["iter"]}
    if state == "starting":
        return "starting", {"pid": job["pid"]}
    if state in status.RUNNING:
        return "running", {"pid": job["pid"], "iter": st["iter"], "max_iters": st["max_iters"], "eta_s": st["eta_s"]}
    if state in ("finished", "stopped"):
        return state, {"iter": st["iter"], "error": st["error"]}
    return "failed", {"line": st["error"]}


def latest_job(base):
    """The out* folder under base whose job was started last, running ones first: what a reopened page shows."""
    jobs = [(job_alive(job), job["started"], name) for name in os.listdir(base) if name.startswith("out")
            for job in [read_job(os.path.join(base, name))] if job]
    return max(jobs)[2] if jobs else None
