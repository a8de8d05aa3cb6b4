"""
train.py as a process, run the way a user runs it, for the tools that measure it (bench.py, experiments/):
to its end, or with each eval timed from process start. What they read back comes from the run's files
(status.json, log.csv), never from its printed lines. Importing it runs nothing.
"""

import os
import subprocess
import sys
import tempfile
import time

from babygpt.progress import read_log

TRAIN_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train.py")


def run_train(argv, out_dir, nproc=1, env=None):
    """python train.py argv --out_dir=out_dir to its end (under torchrun with nproc > 1), its printed lines
    dropped; a failure exits with the command and train.py's last lines."""
    launch = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = [*launch, TRAIN_PY, *argv, f"--out_dir={out_dir}"]
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                          env=env)
    if done.returncode != 0:
        sys.exit(f"error: train.py failed ({' '.join(cmd[len(launch):])}):\n{done.stderr[-2000:]}")


def timed_train(label, argv, out_dir, env=None):
    """python train.py argv --out_dir=out_dir from process start to its end; returns
    [(seconds since start, iteration, val loss)] per eval, each timed when its row appears in log.csv."""
    cmd = [sys.executable, TRAIN_PY, *argv, f"--out_dir={out_dir}"]
    print(f"{label}: {' '.join(cmd[1:])}", flush=True)
    points, start = [], time.time()

    def new_evals():  # polled every 50 ms
        return [(time.time() - start, row["iter"], row["val_loss"]) for row in read_log(out_dir)[len(points):]]
    with tempfile.TemporaryFile("w+", encoding="utf-8") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        while proc.poll() is None:
            points += new_evals()
            time.sleep(0.05)
        points += new_evals()
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"error: train.py failed ({' '.join(cmd[1:])}):\n{err.read()[-2000:]}")
    return points


def parse_with_train_settings(parser, argv=None):
    """parser's own options, with every other --key=value kept for train.py as args.overrides (--batch_size=16);
    anything else is refused as argparse refuses it."""
    args, args.overrides = parser.parse_known_args(argv)
    unknown = [o for o in args.overrides if not o.startswith("--")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args
