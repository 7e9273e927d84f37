"""A child process that dies with its parent (Linux): the parent-death signal and a parent watch.

`die_with_parent(sig)` is a `preexec_fn` for `subprocess.Popen`: between fork and exec it asks
the kernel (prctl PR_SET_PDEATHSIG) to send `sig` to the child when its parent exits, however it
exits (kill -9 included). The setting survives exec. The kernel tracks the parent *thread* that
forked, so start children from a thread that lives as long as the parent (the main thread).

`watch_parent(pid)` is for a child that cannot use a preexec_fn (a multiprocessing 'spawn'
worker, started from any thread): a daemon thread that ends the process with os._exit as soon
as its parent is no longer `pid` (reparented after a crash).
"""

import ctypes
import os
import signal
import threading
import time

PR_SET_PDEATHSIG = 1

try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
    _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    _prctl.restype = ctypes.c_int
except (AttributeError, OSError):  # not Linux: the parent watch still works
    _prctl = None


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send `sig` to this process when its parent exits; False when unsupported."""
    if _prctl is None:
        return False
    return _prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def die_with_parent(sig: int = signal.SIGTERM):
    """A Popen `preexec_fn`: the child gets `sig` when the parent exits (see the module docstring)."""
    parent = os.getpid()

    def preexec() -> None:
        set_parent_death_signal(sig)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def watch_parent(pid: int, period_s: float = 0.5, exit_code: int = 0) -> threading.Thread:
    """Start a daemon thread that calls os._exit(exit_code) once this process's parent is not `pid`."""
    def watch() -> None:
        while True:
            if os.getppid() != pid:
                os._exit(exit_code)
            time.sleep(period_s)

    if os.getppid() != pid:
        os._exit(exit_code)
    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread
