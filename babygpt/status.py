"""
out_dir/status.json: where a training run is, for any program that watches one (the web page, bench.py,
the tests, your own scripts). train.py writes it; nothing needs to read train.py's printed lines.

    python -m babygpt.status out-chinese     # state, iteration, losses, speed and ETA of the run in out-chinese/

The file (version 1) is one JSON object, replaced atomically, so a reader never sees half of it:
    version       1; a reader should refuse a version it does not know
    state         starting | training | evaluating | saving | finished | stopped | failed
    error         the one-line error train.py printed (state failed), else null
    iter          the iteration the run is at; max_iters: where it ends
    train_loss    the last logged training loss (every log_interval); val_loss: the last eval's
    tokens_per_s  recent training speed; eta_s: seconds left at that speed (null until measured)
    pid           train.py's process id; process_start: when that process started (clock ticks since
                  boot, Linux), so a pid reused by another program is not mistaken for the run
    exit_status   null while running; 0 finished, 130 stopped (Ctrl-C), 1 failed
    updated       unix time of this write
It describes the latest train.py that started training in that out_dir: a run refused at the start (a bad
setting, no dataset, another shape) writes nothing, so a finished run's record stays as it was. A run that died without writing its end (SIGKILL, power loss, a disk too full to write
this file) still says starting/training/...: tell it by its pid and process_start (is_running, run_alive).
log.csv beside it has every eval's losses.
"""

import json
import os
import sys
import time

from babygpt.atomic import atomic_write

STATUS_NAME = "status.json"
VERSION = 1
ENDED = {"finished": 0, "stopped": 130, "failed": 1}  # final states and their exit status
RUNNING = ("starting", "training", "evaluating", "saving")


def process_start(pid):
    """When process pid started (clock ticks since boot) on Linux; None elsewhere or when it is gone.
    With the pid it names one process: a later process that gets the same pid has another start."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # field 22; the name in field 2 may hold spaces, so count from after its closing ')'
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def run_alive(pid, started):
    """Is the process that wrote a status still running? pid and process_start as the file has them."""
    if started is not None:
        return process_start(pid) == started
    try:  # not Linux: the pid alone
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(out_dir):
    """out_dir/status.json as a dict, or None when there is none (or it is not this version's)."""
    try:
        with open(os.path.join(out_dir, STATUS_NAME), encoding="utf-8") as f:
            status = json.load(f)
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) and status.get("version") == VERSION else None


def is_running(status):
    """True while the run that wrote this status is alive and has not written its end."""
    return bool(status) and status["state"] in RUNNING and run_alive(status["pid"], status["process_start"])


class RunStatus:
    """train.py's writer of out_dir/status.json. Every change of state is written at once; progress
    within 'training' at most every `every` seconds, since each write is a file replace."""

    def __init__(self, out_dir, max_iters, every=1.0):
        self.path, self.every, self.last_write = os.path.join(out_dir, STATUS_NAME), every, 0.0
        pid = os.getpid()
        self.fields = {"version": VERSION, "state": "starting", "error": None, "iter": 0, "max_iters": max_iters,
                       "train_loss": None, "val_loss": None, "tokens_per_s": None, "eta_s": None, "pid": pid,
                       "process_start": process_start(pid), "exit_status": None, "updated": None}
        self.started = False

    def start(self):
        """The first write ('starting'), once the run has passed its checks; nothing is written before."""
        self.started = True
        self.write()

    def write(self):
        """Replace the file (once started)."""
        if not self.started:
            return
        self.fields["updated"] = time.time()
        data = json.dumps(self.fields, ensure_ascii=False, indent=1).encode("utf-8")
        try:  # no fsync: a status a crash loses is rewritten by the next run; fsync would cost every step
            atomic_write(self.path, lambda f: f.write(data), fsync=False)
        except OSError:  # a full disk must not end the run, nor hide the error it ends with: the file stays
            pass         # as it was, and once the process is gone, a watcher tells the run died (run_alive)
        self.last_write = time.monotonic()

    def update(self, state=None, **fields):
        """Set fields (and the state); write now if the state changed, else when `every` has passed."""
        changed = state is not None and state != self.fields["state"]
        self.fields.update(fields, **({"state": state} if state else {}))
        if changed or time.monotonic() - self.last_write >= self.every:
            self.write()

    def progress(self, iter_num, seconds_per_iter, tokens_per_iter):
        """After each training step: where the run is, its speed and ETA from the recent time per iteration."""
        left = max(0, self.fields["max_iters"] - iter_num)
        self.update("training", iter=iter_num, tokens_per_s=tokens_per_iter / seconds_per_iter,
                    eta_s=left * seconds_per_iter)

    def end(self, state, error=None):
        """The final write: finished, stopped or failed, with its exit status."""
        self.fields.update(state=state, error=error, exit_status=ENDED[state], eta_s=0.0 if state == "finished" else None)
        self.write()


def summary(out_dir, st):
    """status.json as a few lines for a person (python -m babygpt.status OUT_DIR)."""
    state = st["state"] if st["state"] not in RUNNING or is_running(st) else f"died while {st['state']}"
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    lines = [f"{out_dir}: {state}" + (f" ({st['error']})" if st["error"] else ""),
             f"iteration   {st['iter']:,} of {st['max_iters']:,}",
             f"train loss  {fmt(st['train_loss'], '.4f')}    val loss {fmt(st['val_loss'], '.4f')}",
             f"speed       {fmt(st['tokens_per_s'], ',.0f')} tokens/s    ETA {fmt(st['eta_s'], '.0f')} s"]
    if st["exit_status"] is not None:
        lines.append(f"exit status {st['exit_status']}")
    return "\n".join(lines)


def main(argv):
    if len(argv) != 1 or argv[0].startswith("-"):
        sys.exit("usage: python -m babygpt.status OUT_DIR   (the folder of a run, e.g. out-chinese)")
    st = read_status(argv[0])
    if st is None:
        sys.exit(f"error: no status.json in {argv[0]}; train.py writes it once a run starts there")
    print(summary(argv[0], st))


if __name__ == "__main__":
    main(sys.argv[1:])
