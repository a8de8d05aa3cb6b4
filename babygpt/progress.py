"""
How a run shows its progress: tqdm bars on a terminal, and the loss history of train.py's evals
in out_dir/log.csv with its plot out_dir/loss.png, and RunReport, which keeps them (and status.json) for
train.py. Imported by train.py and sample.py; runs nothing.

    python -c "from babygpt import progress; progress.plot_losses('out-chinese')"   # redraw loss.png
"""

import csv
import io
import os
import statistics
import sys
import time

from tqdm import tqdm

from babygpt.atomic import atomic_write, explained_write

LOG_NAME = "log.csv"
PLOT_NAME = "loss.png"
LOG_COLUMNS = ("iter", "train_loss", "val_loss", "lr", "time_s")


def progress_bar(total, initial=0, desc=""):
    """A tqdm bar with ETA on stderr over steps initial..total-1 (iterate it, or call .update()),
    shown only when stderr is a terminal: in a log file or a pipe it would be noise, and the
    log lines already say where the run is."""
    return tqdm(range(initial, total), total=total, initial=initial, desc=desc, file=sys.stderr,
                dynamic_ncols=True, disable=not sys.stderr.isatty())


def say(text):
    """print(), but above any progress bar instead of through it (a plain print when there is none)."""
    tqdm.write(str(text), file=sys.stdout)


def read_log(out_dir):
    """The rows of out_dir/log.csv as dicts of floats (iter as int); [] if there is none."""
    path = os.path.join(out_dir, LOG_NAME)
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    for row in rows:
        row["iter"] = int(row["iter"])
    return rows


def start_log(out_dir, resume_iter=None):
    """A fresh log.csv for a run from scratch. On resume keep the rows before resume_iter: later
    ones came from evals the checkpoint does not hold, and the resumed run logs those steps again.
    Returns the time_s of the last kept row, so a resumed run's clock continues."""
    path = os.path.join(out_dir, LOG_NAME)
    kept = []
    if resume_iter is not None and os.path.isfile(path):
        with open(path, newline="", encoding="utf-8") as f:
            kept = [row for row in list(csv.reader(f))[1:] if int(row[0]) < resume_iter]  # rows as written
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([LOG_COLUMNS, *kept])
    atomic_write(path, lambda f: f.write(buf.getvalue().encode("utf-8")))
    return float(kept[-1][LOG_COLUMNS.index("time_s")]) if kept else 0.0


PLOT_EVERY_S = 10  # a redraw costs ~0.1 s: with eval_interval=1 it would slow training down
_last_plot = {}    # out_dir -> time of its last redraw


def log_eval(out_dir, iter_num, train_loss, val_loss, lr, time_s, final=False):
    """Append one eval to log.csv and redraw loss.png from the whole log: at the final eval, and
    otherwise at most every PLOT_EVERY_S seconds. A failed write (disk full) is a UserError."""
    path = os.path.join(out_dir, LOG_NAME)
    with explained_write(path), open(path, "a", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerow(
            [iter_num, f"{train_loss:.6f}", f"{val_loss:.6f}", f"{lr:.6e}", f"{time_s:.2f}"])
    now = time.monotonic()
    if final or now - _last_plot.get(out_dir, -PLOT_EVERY_S) >= PLOT_EVERY_S:
        with explained_write(os.path.join(out_dir, PLOT_NAME)):
            plot_losses(out_dir)
        _last_plot[out_dir] = now


def plot_losses(out_dir):
    """Draw train and val loss against iteration into out_dir/loss.png."""
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed, works on servers and in CI
    import matplotlib.pyplot as plt

    rows = read_log(out_dir)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for key, label in (("train_loss", "train"), ("val_loss", "val")):
        ax.plot([r["iter"] for r in rows], [r[key] for r in rows], marker="o", markersize=3, label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(f"{os.path.basename(os.path.abspath(out_dir))}: loss at each eval")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write(os.path.join(out_dir, PLOT_NAME), lambda f: f.write(buf.getvalue()))


class RunReport:
    """What a training run tells people and the programs that watch it: log lines and the bar (rank 0 only),
    log.csv, status.json (babygpt.status), Weights & Biases, and the running MFU and recent step times
    behind the speed and the ETA. train.py makes one and calls it; it decides nothing about training."""

    def __init__(self, master, status=None):
        self.master, self.status, self.wandb_run = master, status, None
        self.bar, self.clock, self.mfu, self.step_times = None, 0.0, -1.0, []

    def log(self, text):
        if self.master:
            say(text)

    def begin(self, out_dir, max_iters, iter_num, resumed):
        """log.csv (a resume keeps the rows before iter_num and continues their clock) and the bar."""
        self.clock = start_log(out_dir, iter_num if resumed else None) - time.time()
        self.bar = progress_bar(max_iters, initial=iter_num, desc="train")

    def state(self, state, iter_num, **fields):
        """What status.json says the run is doing."""
        if self.status is not None:
            self.status.update(state, iter=iter_num, **fields)

    def evaluated(self, out_dir, iter_num, losses, lr, final):
        """One eval into log.csv, loss.png and wandb."""
        log_eval(out_dir, iter_num, losses["train"], losses["val"], lr, self.clock + time.time(), final=final)
        if self.wandb_run is not None:
            mfu_pct = {"mfu": self.mfu * 100} if self.mfu >= 0 else {}  # none measured yet
            self.wandb_run.log({"iter": iter_num, "train/loss": losses["train"], "val/loss": losses["val"],
                                "lr": lr, **mfu_pct}, step=iter_num)

    def stepped(self, iter_num, dt, mfu=None):
        """After each step: its time (the ETA follows the median of the recent ones, so an eval or a save
        inside one step does not skew it), the running MFU, the bar."""
        self.step_times = (self.step_times + [dt])[-11:]
        if mfu is not None:
            self.mfu = mfu if self.mfu < 0 else 0.9 * self.mfu + 0.1 * mfu
        if self.bar is not None:
            self.bar.update(1)

    def progress(self, iter_num, tokens_per_iter):
        if self.status is not None:
            self.status.progress(iter_num, statistics.median(self.step_times), tokens_per_iter)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
