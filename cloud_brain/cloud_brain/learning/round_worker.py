"""Where a consolidation round runs: a persistent 'spawn' child of the server (niced, one torch thread).

`RoundWorker` keeps one child that runs `module:function` rounds one after another (and writes
their TensorBoard scalars); `run_in_child` runs one round in a fresh child. Both die with the
server. A failed, timed-out or interrupted round is a `RoundError`.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback

from nestor_core.lifeline import watch_parent

log = logging.getLogger(__name__)


def round_request(
    db_path: str,
    task: str,
    task_file: str,
    parent_version: int,
    parent_onnx: bytes,
    experience: tuple[int, int],
    seed: int,
    config: dict | None = None,
) -> dict:
    """The request a round function takes: consolidate `task` from its parent over the rows in `experience`.

    experience: (from, to) store row ids, from exclusive, to inclusive. config: ConsolidationConfig
    overrides (left out when None).
    """
    request = {
        "db_path": db_path,
        "task": task,
        "task_file": task_file,
        "parent_version": parent_version,
        "parent_onnx": parent_onnx,
        "experience_from": experience[0],
        "experience_to": experience[1],
        "seed": seed,
    }
    if config is not None:
        request["config"] = config
    return request


def resolve(path: str):
    """Import `module:function`."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _lower_priority() -> None:
    """In a round's process: nice 10 and one torch thread, so ingest keeps its CPU."""
    import os

    try:
        os.nice(10)
    except OSError:
        pass
    one_torch_thread()


def one_torch_thread() -> None:
    """One intra-op torch thread in a round's process (no-op without torch)."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _die_with_server() -> None:
    """In a round's process: end with the server, however it ends (kill -9 included).

    Stopping is left to the server: a Ctrl-C in its terminal reaches the whole process group, this
    one too.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    watch_parent(parent.pid if parent is not None else os.getppid())


def _send(conn, message) -> bool:
    """Send to the server; False (and a one-line note) when it is gone."""
    try:
        conn.send(message)
        return True
    except (BrokenPipeError, EOFError, OSError):
        print("consolidation worker: the server is gone; exiting", file=sys.stderr, flush=True)
        return False


def _child(function_path: str, request: dict, conn) -> None:
    """Child process entry: lower priority, one torch thread, run the round, send the result."""
    _die_with_server()
    _lower_priority()
    try:
        result = ("ok", resolve(function_path)(request))
    except BaseException:  # noqa: BLE001 - everything goes back to the parent as text
        result = ("error", traceback.format_exc())
    _send(conn, result)
    conn.close()


# `rounds.error` of a round cut off by a stop or a crash of the server; its experience is re-run.
INTERRUPTED = "interrupted"


class RoundError(RuntimeError):
    """A round that crashed, timed out, was cancelled or returned a malformed result."""


def _worker(function_path: str, requests, results, tensorboard_dir: str = "") -> None:
    """Persistent worker: lower priority, one torch thread, import once, then serve rounds.

    A ``("tensorboard", record)`` message writes a finished round's scalars (no reply).
    """
    _die_with_server()
    _lower_priority()
    function = resolve(function_path)
    if tensorboard_dir:  # imported before "ready", so a round's scalars are written at once
        import torch.utils.tensorboard  # noqa: F401

        from cloud_brain.learning import tensorboard_log
    if not _send(results, ("ready", None)):
        return
    while True:
        try:
            request = requests.recv()
        except (EOFError, OSError):
            return
        if isinstance(request, tuple) and request[:1] == ("tensorboard",):
            try:
                tensorboard_log.write_round(tensorboard_dir, request[1])
            except Exception:  # noqa: BLE001 - logging never fails a round
                traceback.print_exc()
            continue
        try:
            result = ("ok", function(request))
        except BaseException:  # noqa: BLE001 - everything goes back to the parent as text
            result = ("error", traceback.format_exc())
        if not _send(results, result):
            return


class RoundWorker:
    """One long-lived child process that runs consolidation rounds.

    Importing torch and the learner takes seconds of CPU and a burst of disk reads; paying it once
    at server start, before any robot connects, keeps it away from the fleet's control loops and
    shortens every round. A round that times out or crashes kills the worker; the next round
    starts a fresh one.
    """

    def __init__(self, function_path: str, tensorboard_dir: str = ""):
        self.function_path = function_path
        self.tensorboard_dir = tensorboard_dir
        self._process = None
        self._requests = None
        self._results = None

    def start(self, timeout: float = 120.0) -> None:
        if self._process is not None and self._process.is_alive():
            return
        ctx = multiprocessing.get_context("spawn")
        req_recv, req_send = ctx.Pipe(duplex=False)
        res_recv, res_send = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_worker,
            args=(self.function_path, req_recv, res_send, self.tensorboard_dir),
            daemon=True,
            name="nestor-consolidation",
        )
        self._process.start()
        req_recv.close()
        res_send.close()
        self._requests, self._results = req_send, res_recv
        if not self._results.poll(timeout):
            self.close()
            raise RoundError(f"consolidation worker not ready after {timeout:.0f} s")
        try:
            self._results.recv()
        except EOFError:
            code = self._process.exitcode
            self.close()
            raise RoundError(f"consolidation worker exited with code {code} while starting") from None

    def run(self, request: dict, timeout: float, stop: threading.Event | None = None) -> dict:
        self.start()
        self._requests.send(request)
        deadline = time.monotonic() + timeout
        try:
            while not self._results.poll(0.2):
                if stop is not None and stop.is_set():
                    raise RoundError("cancelled: server stopping")
                if time.monotonic() > deadline:
                    raise RoundError(f"timed out after {timeout:.0f} s")
                if not self._process.is_alive() and not self._results.poll(0):
                    raise RoundError(f"worker exited with code {self._process.exitcode} without a result")
            status, payload = self._results.recv()
        except (RoundError, EOFError, OSError) as err:
            self.close()
            if isinstance(err, RoundError):
                raise
            raise RoundError(f"worker exited without a result: {err}") from None
        if status != "ok":
            raise RoundError(f"round raised:\n{payload}")
        return payload

    def log_round(self, record: dict) -> bool:
        """Has the running worker write a round's TensorBoard scalars; False when it cannot now."""
        if not self.tensorboard_dir or self._process is None or not self._process.is_alive():
            return False
        try:
            self._requests.send(("tensorboard", record))
        except (OSError, ValueError, AttributeError):
            return False
        return True

    def close(self) -> None:
        """Stop the worker; safe to call twice."""
        for conn in (self._requests, self._results):
            if conn is not None:
                conn.close()
        self._requests = self._results = None
        if self._process is not None:
            # The worker finishes what it received (a round's scalars) and exits on EOF.
            self._process.join(5.0 if self.tensorboard_dir else 1.0)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(5.0)
            self._process = None


def run_in_child(function_path: str, request: dict, timeout: float, stop: threading.Event | None = None) -> dict:
    """Run `module:function`(request) in a fresh spawn-context process and return its result."""
    ctx = multiprocessing.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_child, args=(function_path, request, child_conn), daemon=True, name="nestor-consolidation"
    )
    process.start()
    child_conn.close()
    deadline = time.monotonic() + timeout
    try:
        while not parent_conn.poll(0.2):
            if stop is not None and stop.is_set():
                raise RoundError("cancelled: server stopping")
            if time.monotonic() > deadline:
                raise RoundError(f"timed out after {timeout:.0f} s")
            if not process.is_alive() and not parent_conn.poll(0):
                raise RoundError(f"child exited with code {process.exitcode} without a result")
        try:
            status, payload = parent_conn.recv()
        except EOFError:
            raise RoundError(f"child exited with code {process.exitcode} without a result") from None
        if status != "ok":
            raise RoundError(f"round raised:\n{payload}")
        return payload
    finally:
        parent_conn.close()
        if process.is_alive():
            process.join(2.0)
        if process.is_alive():
            process.terminate()
            process.join(5.0)
