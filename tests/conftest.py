"""
Shared test helpers: the repo's path, a subprocess runner that calls the scripts exactly as a
user would, and a tiny prepared dataset. Run the suite with: python -m pytest tests
"""

import contextlib
import glob
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import forkrun  # noqa: E402  (tests/forkrun.py)

# one torch thread in the tests' own process too, as run() gives every script: two threads on a
# 2-core machine that also runs a script or a server wait on each other and can run several times slower
torch.set_num_threads(1)

# a model small enough to train in a second or two on a CPU
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=16", "--batch_size=4",
        "--compile=False", "--eval_iters=2", "--log_interval=1", "--dtype=float32", "--device=cpu"]

TEXT = ("满纸荒唐言，一把辛酸泪！都云作者痴，谁解其中味？\n"
        "宝玉听了，忙笑道：“好妹妹，你别恼，我再不说了。”\n"
        "黛玉冷笑道：“我为的是我的心。”\n\n")


def run(script, *args, cwd=REPO, env_extra=None, fresh=False):
    """Run one of the repo's scripts as the README does: `python script args`, its output captured.
    It runs in a fork of a server that imported torch once (tests/forkrun.py: seconds saved a run), with
    env_extra set before the script imports anything the server has not (wandb, transformers, tiktoken);
    fresh=True starts a new python, for the tests that show a command starts on its own."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")
    env.update(env_extra or {})
    args = [os.fspath(a) for a in args]
    if not fresh:
        return forkrun.run(os.path.join(REPO, script), args, cwd, env, timeout=600)
    return subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=600)


def assert_user_error(proc, *words):
    """A refusal as the project promises it: non-zero exit, one line on stderr, no traceback."""
    assert proc.returncode != 0, f"expected a non-zero exit, got 0; stdout: {proc.stdout[-500:]}"
    lines = [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith("note:")]
    assert "Traceback" not in proc.stderr, f"a traceback instead of a message:\n{proc.stderr}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{proc.stderr}"
    for w in words:
        assert w in lines[0], f"the message should mention {w!r}: {lines[0]}"


def write_dataset(folder, text=TEXT * 40, val_fraction=0.1):
    """A char-level dataset in nanoGPT's format, made directly (independent of prepare.py)."""
    os.makedirs(folder, exist_ok=True)
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = int(len(ids) * (1 - val_fraction))
    ids[:n].tofile(os.path.join(folder, "train.bin"))
    ids[n:].tofile(os.path.join(folder, "val.bin"))
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi, "dtype": "uint16"}
    with open(os.path.join(folder, "meta.pkl"), "wb") as f:
        pickle.dump(meta, f)
    return meta


@pytest.fixture
def tiny_data(tmp_path):
    folder = str(tmp_path / "tinyds")
    write_dataset(folder)
    return folder


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny training run shared by every test that only reads its results (tests that change it
    copy it first)."""
    base = tmp_path_factory.mktemp("run")
    data = str(base / "ds")
    write_dataset(data)
    out = str(base / "out")
    proc = run("train.py", f"--dataset={data}", f"--out_dir={out}", "--max_iters=20", "--eval_interval=10", *TINY)
    assert proc.returncode == 0, f"tiny training failed:\n{proc.stderr}"
    return {"data": data, "out": out, "log": proc.stdout}


def free_port():
    """A localhost port nobody listens on (the OS picks it)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def web_page(root, *args):
    """Serve web.py over root (its data/ and out* folders) on a free localhost port, as
    `python web.py --root=... --port=...` does; yields the page's URL. At the end the server is
    stopped, and so is any train.py it started that is still running."""
    import urllib.request
    port = free_port()
    gradio_tmp = f"{root}-gradio"  # uploads land here, not in root, whose tree the tests compare
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8", GRADIO_TEMP_DIR=gradio_tmp)
    log = open(f"{root}-web.log", "w", encoding="utf-8")
    server = subprocess.Popen([sys.executable, os.path.join(REPO, "web.py"), f"--root={root}", f"--port={port}", *args],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    def up():
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return True
        except OSError:
            return False
    try:
        wait_for_server(server, up, log.name, "web.py")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        for job in glob.glob(os.path.join(root, "out*", "web_run.json")):
            with open(job, encoding="utf-8") as f:
                pid = json.load(f)["pid"]
            with contextlib.suppress(OSError):  # only a train.py of this root: a pid can be reused
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if str(root).encode() in f.read():
                        os.kill(pid, signal.SIGKILL)


def wait_for_server(proc, ready, log_path, name, timeout=120):
    """Poll ready() (True once the server answers) until it does; fail with the end of the server's log when
    its process exits or timeout seconds pass first."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None and time.time() < deadline, \
            f"{name} did not start (exit {proc.poll()}):\n{open(log_path, encoding='utf-8').read()[-3000:]}"
        time.sleep(0.3)
