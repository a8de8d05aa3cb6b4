"""
Fault injection for tests/test_safety.py: start train.py's main() again and again, SIGKILL it at a
random moment, and report after every kill whether out_dir/ckpt.pt is absent, loads, or is broken.

    python tests/killer.py KILLS SEED -- <train.py arguments, with --out_dir=...>

torch is imported once and each run is a fork() of this process, so 20 kills take seconds instead
of 20 fresh interpreters; the child is still train.py's own main(), killed as the kernel kills it.
Prints one line per kill: 'kill K: absent', 'kill K: loaded iter N' or 'kill K: BROKEN <why>',
then '; T torn saves so far' (temporary files left by kills that landed inside a save).
"""

import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from babygpt import checkpoint  # noqa: E402  (imports torch before any fork)
from babygpt import errors  # noqa: E402
import train  # noqa: E402
from model import GPT, GPTConfig


def start(argv):
    """fork a child running train.py's main(argv), its output thrown away; returns its pid."""
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        sys.argv = ["train.py", *argv]
        try:
            errors.run_main(train.main)
        finally:
            os._exit(0)
    return pid


def saved_since(path, before):
    """Has the file at path been replaced since its os.stat() was `before` (None: it was absent)?"""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    return before is None or (now.st_ino, now.st_mtime_ns) != (before.st_ino, before.st_mtime_ns)


def check(out_dir):
    if not os.path.exists(os.path.join(out_dir, checkpoint.CKPT_NAME)):
        return "absent"
    try:
        ckpt = checkpoint.load_checkpoint(out_dir)
        checkpoint.model_from_checkpoint(ckpt)
        return f"loaded iter {ckpt['iter_num']}"
    except Exception as e:
        return f"BROKEN {type(e).__name__}: {e}"


def warm_up():
    """One tiny step here, so each child starts with torch's kernels already initialised (speed only)."""
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=4, vocab_size=8))
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    idx = train.torch.zeros(1, 4, dtype=train.torch.long)
    model(idx, idx)[1].backward()
    optimizer.step()
    import matplotlib.pyplot  # noqa: F401  loss.png's first draw would otherwise import it in every child


def main():
    kills, seed, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[4:]
    warm_up()
    out_dir = next(a.split("=", 1)[1] for a in argv if a.startswith("--out_dir="))
    rnd = random.Random(seed)
    ckpt_path = os.path.join(out_dir, checkpoint.CKPT_NAME)
    for k in range(kills):
        before = os.stat(ckpt_path) if os.path.exists(ckpt_path) else None
        pid = start([*argv, f"--init_from={'resume' if before else 'scratch'}"])
        # wait until it trains and saves (ckpt.pt replaced): a kill during start-up proves nothing
        while not saved_since(ckpt_path, before) and os.waitpid(pid, os.WNOHANG) == (0, 0):
            time.sleep(0.005)
        time.sleep(rnd.uniform(0, 0.2))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        # a checkpoint save that was cut off leaves its temporary file behind (the rename never happened)
        torn = sum(f.startswith(checkpoint.CKPT_NAME + ".") and f.endswith(".tmp")
                   for f in os.listdir(out_dir)) if os.path.isdir(out_dir) else 0
        print(f"kill {k}: {check(out_dir) if killed else 'ENDED before the kill'}; {torn} torn saves so far",
              flush=True)


if __name__ == "__main__":
    main()
