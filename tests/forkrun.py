"""
`python script.py args` for the tests without a new interpreter importing torch each time (about 2.5 s
of CPU a run: most of the suite's time when every run paid it). A server process, started on first use,
imports torch and the project's modules once; each run is a fork of it that sets argv, sys.path, the
working folder, the environment, stdin and stdout/stderr as a fresh `python script.py` has them, runs the
script as __main__ (runpy: its `if __name__ == "__main__":` block runs), and exits as the interpreter does:
sys.exit's status, or a traceback and 1. tests/killer.py forks train.py's main() the same way.
The environment is set before the script imports anything the server has not (wandb, transformers,
tiktoken), so variables those read at import still count; torch's (OMP_NUM_THREADS) are the server's.
Not a test: tests/conftest.py's run() calls run() here; tests that must show a command starts on its own
use a real python.
Run the suite: python -m pytest tests   (the server alone: python tests/forkrun.py REPO, requests on stdin)
"""

import atexit
import io
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import threading
import traceback

_server = None  # (Popen, buffer of bytes read from its replies)


def _exit_code(code):
    """The status the interpreter exits with after sys.exit(code); a text code is printed first."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _become(script, args, cwd, env, out_path, err_path):
    """In the fork: be `python script args` with stdout and stderr in those files, and never return."""
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for fd, path in ((1, out_path), (2, err_path)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    encoding = env.get("PYTHONIOENCODING", "utf-8")
    sys.stdin = sys.__stdin__ = open(0, encoding=encoding, closefd=False)
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding=encoding)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding=encoding,
                                                   errors="backslashreplace", line_buffering=True)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [script, *args]
    sys.path[:] = [os.path.dirname(os.path.abspath(script)), *sys.path[1:]]
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = _exit_code(e.code)
    except BaseException:  # as the interpreter does: the traceback, then status 1
        traceback.print_exc()
        code = 1
    threading._shutdown()  # the interpreter's exit: wait for non-daemon threads, then atexit, then flush
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve(repo):
    """The server: import once, then for each request line fork a run and reply its pid, then its status."""
    sys.path.insert(0, repo)  # the top-level modules as `python REPO/train.py` finds them
    import matplotlib
    matplotlib.use("Agg")  # what progress.py picks before it draws loss.png
    import matplotlib.pyplot  # noqa: F401
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401  torch.optim imports it at the first optimizer: 2 s of every train.py run
    import tqdm  # noqa: F401
    for name in ("babygpt.charlevel", "babygpt.checkpoint", "babygpt.copycheck", "babygpt.poetry",
                 "babygpt.progress", "babygpt.runtime", "babygpt.status", "configurator", "model"):
        __import__(name)
    del sys.path[0]
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed here must not mix with the replies
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            replies.close()
            _become(**request)
        print(pid, file=replies)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), file=replies)


def _reply(timeout=None):
    """The server's next reply line as an int; None if none came within timeout seconds."""
    proc, buf = _server
    while b"\n" not in buf:
        if not select.select([proc.stdout], [], [], timeout)[0]:
            return None
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            raise RuntimeError("the tests' fork server (tests/forkrun.py) died; see the output above")
        buf += chunk
    line, buf[:] = bytes(buf).split(b"\n", 1)
    return int(line)


def _stop():
    proc = _server[0]
    proc.stdin.close()
    proc.wait(timeout=30)


def run(script, args, cwd, env, timeout):
    """Like subprocess.run([python, script, *args], cwd=cwd, env=env, capture_output=True, text=True,
    timeout=timeout); env should hold OMP_NUM_THREADS, which torch reads once, when the server imports it."""
    global _server
    if _server is None:
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        _server = (subprocess.Popen([sys.executable, os.path.abspath(__file__), repo], env=env,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE), bytearray())
        atexit.register(_stop)
    import tempfile
    with tempfile.TemporaryDirectory(prefix="forkrun-") as tmp:
        out_path, err_path = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        request = dict(script=script, args=list(args), cwd=str(cwd), env=env, out_path=out_path, err_path=err_path)
        _server[0].stdin.write((json.dumps(request) + "\n").encode())
        _server[0].stdin.flush()
        pid = _reply()
        code = _reply(timeout)
        if code is None:
            os.kill(pid, signal.SIGKILL)
            _reply()
            raise subprocess.TimeoutExpired([script, *args], timeout)
        encoding = env.get("PYTHONIOENCODING", "utf-8")
        with open(out_path, encoding=encoding, errors="replace") as f:
            stdout = f.read()
        with open(err_path, encoding=encoding, errors="replace") as f:
            stderr = f.read()
    return subprocess.CompletedProcess([sys.executable, script, *args], code, stdout, stderr)


if __name__ == "__main__":
    serve(sys.argv[1])
