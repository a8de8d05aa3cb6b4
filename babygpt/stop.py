"""
Ctrl-C during training: the first asks for a clean stop (finish the step, save, exit 130), the second quits
at once without saving. Used by train.py.
"""

import contextlib
import os
import signal
import sys

from babygpt.atomic import remove_partial_files


class StopRequest:
    """Ctrl-C (SIGINT, also what the web page's Stop sends) asks for a clean stop: the loop finishes
    its step, saves ckpt.pt and exits. A second Ctrl-C quits at once, whatever the process is doing:
    a save under way is abandoned (its temporary file deleted, the previous ckpt.pt kept) and nothing
    else runs. Raising KeyboardInterrupt instead would land at a random spot (inside torch.save, a
    tqdm write) and could be swallowed there or print a traceback.
    Not under DDP: the ranks would stop at different steps and wait for each other forever."""

    def __init__(self, install, status=None):
        self.requested, self.status = False, status
        if install:
            # Python runs the handler once for all the signals that came before it got to it, so two quick
            # Ctrl-Cs could count as one; its C handler also writes a byte per signal to the wakeup fd: count those
            self.signals, wakeup = os.pipe()
            os.set_blocking(self.signals, False)
            os.set_blocking(wakeup, False)
            signal.set_wakeup_fd(wakeup, warn_on_full_buffer=False)
            signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        try:
            count = os.read(self.signals, 1024).count(bytes([signal.SIGINT]))
        except BlockingIOError:
            count = 1
        if self.requested or count > 1:
            self._quit()
        self.requested = True
        # os.write, not print: the signal may arrive while the main thread is inside a print to stderr
        os.write(2, b"stopping after this step; Ctrl-C again to quit without saving\n")

    def _quit(self):
        remove_partial_files()
        if self.status is not None:
            self.status.end("stopped", error="interrupted before saving")
        os.write(2, b"interrupted\n")
        with contextlib.suppress(Exception):
            sys.stdout.flush()  # the log lines printed so far
        os._exit(130)
