"""nestor_core.lifeline.stop_process: the one signal -> wait -> SIGKILL stop of a child process."""

import signal
import subprocess
import sys
import time

from nestor_core.lifeline import stop_process


def _child(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_child_that_stops_on_the_signal_gives_its_own_exit_code():
    proc = _child(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, lambda *a: sys.exit(3))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    assert stop_process(proc, signal.SIGINT, timeout_s=10) == 3


def test_a_child_that_ignores_the_signal_is_killed_after_the_timeout():
    proc = _child(
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    start = time.monotonic()
    assert stop_process(proc, signal.SIGTERM, timeout_s=0.5) == -signal.SIGKILL
    assert time.monotonic() - start < 10


def test_an_exited_child_is_only_reaped():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(0)"])
    proc.wait()
    assert stop_process(proc) == 0
