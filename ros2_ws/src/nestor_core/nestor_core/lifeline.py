"""A child process that dies with its parent (Linux): the parent-death signal and a parent watch.

`die_with_parent(sig)` is a `preexec_fn` for `subprocess.Popen`: between fork and exec it asks
the kernel (prctl PR_SET_PDEATHSIG) to send `sig` to the child when its parent exits, however it
exits (kill -9 included). The setting survives exec. The kernel tracks the parent *thread* that
forked, so start children from a thread that lives as long as the parent (the main thread).

`watch_parent(pid)` is for a child that cannot use a preexec_fn (a multiprocessing 'spawn'
worker, started from any thread): a daemon thread that ends the process with os._exit as soon
as its parent is no longer `pid` (reparented after a crash).

`stop_process(popen)` ends a child the one way every caller does: a signal (SIGINT by default, so a
ROS node or the cloud stops cleanly), a bounded wait, then SIGKILL.
"""

import ctypes
import os
import signal
import subprocess
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


def stop_process(
    popen: subprocess.Popen, sig: int = signal.SIGINT, timeout_s: float = 10.0, kill_timeout_s: float | None = 10.0
) -> int | None:
    """Send `sig` to a running child, wait up to `timeout_s` for it to exit, else SIGKILL it and wait.

    Args:
        popen: the child; one that has exited already is only reaped.
        sig: the stop signal (SIGINT: ROS nodes and `nestor` stop cleanly on it; SIGTERM for servers).
        timeout_s: how long it gets to exit by itself.
        kill_timeout_s: how long to wait after SIGKILL (None: as long as it takes).

    Returns:
        Its exit code: negative for the signal that ended it (-9 when it had to be killed), None
        if it survived even SIGKILL for `kill_timeout_s`.
    """
    if popen.poll() is None:
        popen.send_signal(sig)
        try:
            popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            popen.kill()
            try:
                popen.wait(timeout=kill_timeout_s)
            except subprocess.TimeoutExpired:
                pass
    return popen.returncode
