"""
Files replaced whole or not at all: a temporary file beside the target, then a rename. What every script
writes through (checkpoints, meta.pkl, status.json, log.csv, samples), and the one line a failed write
becomes. No torch here: status.json's and log.csv's writers import this alone.
"""

import contextlib
import itertools
import os

from babygpt.errors import UserError, first_line

_writing = set()  # temporary files being written now: remove_partial_files() deletes them on a hard quit


def atomic_write(path, write, fsync=True):
    """write(f) into a temporary file beside path, fsync it, then rename it over path.
    A crash or a full disk mid-save leaves the old file whole (os.replace is atomic on one filesystem).
    fsync=False still never shows a reader half a file; only a power loss can then lose the new one.
    The temporary name is registered before the file exists, so a second Ctrl-C arriving at any moment
    can delete it (remove_partial_files) and leave no half-written file behind."""
    tmp = f"{os.path.abspath(path)}.{os.getpid()}.{next(_serial)}.tmp"
    _writing.add(tmp)
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    finally:
        _writing.discard(tmp)


_serial = itertools.count()


def remove_partial_files():
    """Delete the temporary files of writes under way (for a process about to quit without finishing them)."""
    for tmp in list(_writing):
        with contextlib.suppress(OSError):
            os.remove(tmp)


@contextlib.contextmanager
def explained_write(path, fix="free disk space or choose another --out_dir"):
    """Turn a failed write of path (disk full, no permission) into a one-line UserError."""
    try:
        yield
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
        if isinstance(e.__cause__ or e.__context__, KeyboardInterrupt) or "KeyboardInterrupt" in str(e):
            raise KeyboardInterrupt from None  # a second Ctrl-C inside torch.save's writer: quit, not a disk error
        raise UserError(f"could not write {path} ({first_line(e, 160)}); {fix} "
                        "(the previous file, if any, is unchanged)") from None


def write_explained(path, write):
    """atomic_write, its failure one line (explained_write)."""
    with explained_write(path):
        atomic_write(path, write)
