"""The consolidation schedule: when to run a round, and running one in a child process.

`round_due` is the rule. `ConsolidationScheduler` is the background thread that applies it per
task and, for a due task, runs ONE round: it builds the request, calls the consolidation
function in a 'spawn' child process (niced, one torch thread, so ingest keeps its CPU),
registers the result as a new version whose parent is the active one, and activates it when
the round accepted it (which pushes it to subscribers through the registry's on_activate).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping

from nestor_core.lifeline import watch_parent

from cloud_brain.config import ScheduleConfig, TaskSpec
from cloud_brain.experience import lease
from cloud_brain.experience.store import ExperienceStore
from cloud_brain.models.registry import ModelRegistry, ModelVersion

log = logging.getLogger(__name__)


def round_due(new_transitions: int, seconds_since_last: float, schedule: ScheduleConfig) -> bool:
    """A round is due on enough new transitions, or on enough time with a minimum of new ones."""
    if new_transitions >= schedule.every_transitions:
        return True
    return new_transitions >= schedule.min_transitions and seconds_since_last >= schedule.every_seconds


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
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _die_with_server() -> None:
    """In a round's process: end with the server, however it ends (kill -9 included), and leave
    stopping to it (a Ctrl-C in its terminal reaches the whole process group, this one too)."""
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
            target=_worker, args=(self.function_path, req_recv, res_send, self.tensorboard_dir), daemon=True,
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
    process = ctx.Process(target=_child, args=(function_path, request, child_conn), daemon=True,
                          name="nestor-consolidation")
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


@dataclasses.dataclass
class _TaskClock:
    last_round_monotonic: float
    not_before_monotonic: float = 0.0


class ConsolidationScheduler:
    """Background thread deciding and running consolidation rounds.

    Args:
        store: experience store (also records rounds).
        registry: model registry (its on_activate publishes new versions).
        tasks: task specs by name.
        schedule: the schedule config.
        consolidate: `module:function` path run in the child process.
        seed: base seed; a task's round k gets seed + k.
        db_path: path the child opens the store with (defaults to store.path).
        in_process: run the function in this process (tests of the bookkeeping only).
        metrics: optional Metrics for round counters.
        on_accepted: accepted version -> what happened to it (staged rollout); None promotes it.
        holder: this replica's lease holder id (cloud_brain.experience.lease); a task's round runs only while
            its lease `round:<task>` is held, so of several replicas on one database exactly one
            runs it, and another takes over `lease_seconds` after the holder died.
        lease_seconds: the round lease's time to live (renewed every third of it).
        runner: what runs a round out of process (start/run/close): default the local
            RoundWorker; cloud_brain.learning.ray_backend.RayRoundRunner for Ray.
        tensorboard_dir: where the local worker writes each round's TensorBoard scalars
            (``cloud_brain.learning.tensorboard_log``); empty = none. Not written in_process or on Ray.
        round_config: the round's hyper-parameters (cloud.yaml `consolidation:`, a ConsolidationConfig
            as a dict), sent as the request's "config"; None = the worker's defaults.
    """

    def __init__(
        self,
        store: ExperienceStore,
        registry: ModelRegistry,
        tasks: Mapping[str, TaskSpec],
        schedule: ScheduleConfig,
        consolidate: str,
        seed: int = 0,
        db_path: str | None = None,
        in_process: bool = False,
        metrics=None,
        on_accepted=None,
        holder: str | None = None,
        lease_seconds: float = 30.0,
        runner=None,
        tensorboard_dir: str = "",
        round_config: dict | None = None,
    ):
        self.store = store
        self.registry = registry
        self.tasks = dict(tasks)
        self.schedule = schedule
        self.consolidate = consolidate
        self.seed = seed
        self.round_config = dict(round_config) if round_config else None
        self.db_path = db_path or store.path
        self.in_process = in_process
        self.metrics = metrics
        # Accepted version -> what happened to it (staged rollout); None = promote it at once.
        self.on_accepted = on_accepted
        self.holder = holder or lease.holder_id()
        self.lease_seconds = lease_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker = runner if runner is not None else RoundWorker(consolidate, tensorboard_dir)
        now = time.monotonic()
        self._clocks = {name: _TaskClock(now) for name in self.tasks}

    # --- decisions ----------------------------------------------------------------------------

    def next_range(self, task: str) -> tuple[int, int]:
        """Store rows (from, to] the next round of `task` would use."""
        start = max(self.registry.last_experience_row(task), self.store.last_round_row(task))
        end = self.store.max_row_id(task)
        if self.schedule.max_rows_per_round and end > start:
            rows = self.store.query(
                "SELECT id FROM chunks WHERE task = ? AND id > ? ORDER BY id LIMIT 1 OFFSET ?",
                (task, start, self.schedule.max_rows_per_round - 1),
            )
            if rows:
                end = min(end, rows[0][0])
        return start, end

    def due(self, task: str, now: float | None = None) -> bool:
        """Whether `task` should get a round now."""
        now = time.monotonic() if now is None else now
        clock = self._clocks[task]
        if now < clock.not_before_monotonic or self.registry.active(task) is None:
            return False
        start, end = self.next_range(task)
        new = self.store.count_transitions(task, after_row=start, up_to_row=end)
        return round_due(new, now - clock.last_round_monotonic, self.schedule)

    # --- one round ----------------------------------------------------------------------------

    def run_round(self, task: str, held: lease.Held | None = None) -> ModelVersion | None:
        """Run one round of `task` now; returns the registered version (None when it failed).

        held: the round's lease; if it was lost meanwhile, the result is dropped (another replica
        owns the round now).
        """
        spec = self.tasks[task]
        parent = self.registry.active(task)
        if parent is None:
            raise RoundError(f"task {task!r} has no active version to consolidate from")
        start, end = self.next_range(task)
        request = {
            "db_path": self.db_path,
            "task": task,
            "task_file": spec.file,
            "parent_version": parent.version,
            "parent_onnx": parent.onnx,
            "experience_from": start,
            "experience_to": end,
            "seed": self.seed + self.store.round_count(task, include_failed=True) + 1,
        }
        if self.round_config is not None:
            request["config"] = self.round_config
        started = time.time()
        clock = self._clocks.setdefault(task, _TaskClock(time.monotonic()))
        round_id = self.store.start_round(task, started, parent.version, start, end)
        try:
            if self.in_process:
                result = resolve(self.consolidate)(request)
            else:
                result = self._worker.run(request, self.schedule.round_timeout_seconds, self._stop)
            onnx = result["onnx"]
            if not isinstance(onnx, bytes) or not onnx:
                raise RoundError("result: 'onnx' must be non-empty bytes")
            accepted = bool(result["accepted"])
            reason = str(result.get("reason", ""))
            metrics = dict(result.get("metrics") or {})
        except (RoundError, KeyError, TypeError, ValueError) as err:
            if self._stop.is_set():  # cut off by a stop of the server: the next start re-runs it
                log.warning("consolidation round for %s interrupted by the server's stop; it will be re-run", task)
                self.store.finish_round(round_id, error=f"{INTERRUPTED}: server stopping")
                return None
            log.error("consolidation round for %s failed: %s", task, err)
            if held is not None and held.lost.is_set():
                self.store.finish_round(round_id, error="lease lost to another replica")
                return None
            self.store.finish_round(round_id, error=str(err) or repr(err))
            self._log_round(task, parent.version, 0, False, start, end, {}, error=str(err) or repr(err))
            clock.not_before_monotonic = time.monotonic() + self.schedule.failure_backoff_seconds
            if self.metrics is not None:
                self.metrics.rounds.labels(task=task, outcome="failed").inc()
            return None
        if held is not None and held.lost.is_set():
            log.error("round for %s: lease lost to another replica; result dropped", task)
            self.store.finish_round(round_id, error="lease lost to another replica")
            return None
        model = self.registry.register(
            task,
            onnx,
            result.get("io_signature") or parent.io_signature,
            parent=parent.version,
            metrics=metrics,
            experience_from=start,
            experience_to=end,
            status="candidate" if accepted else "rejected",
            reason=reason,
        )
        if accepted:
            model = self.on_accepted(model) if self.on_accepted else self.registry.promote(model.version)
        self.store.finish_round(round_id, model.version, accepted, reason)
        self._log_round(task, parent.version, model.version, accepted, start, end, metrics, reason=reason)
        clock.last_round_monotonic = time.monotonic()
        if self.metrics is not None:
            self.metrics.rounds.labels(task=task, outcome="accepted" if accepted else "rejected").inc()
        log.info("round for %s: version %d %s (%s)", task, model.version, model.status, reason)
        return model

    def _log_round(self, task: str, parent: int, version: int, accepted: bool, start: int, end: int,
                   metrics: dict, reason: str = "", error: str = "") -> None:
        if self.in_process:
            return  # the scalars are written by the worker process, which holds torch
        from cloud_brain.learning.tensorboard_log import round_record

        number = self.store.round_count(task, include_failed=True)
        log_round = getattr(self._worker, "log_round", None)  # the Ray runner writes none
        if log_round is None:
            return
        log_round(round_record(task, number, parent, version, accepted, start, end, metrics,
                               reason=reason, error=error))

    # --- thread -------------------------------------------------------------------------------

    def poll_once(self) -> list[ModelVersion | None]:
        """Run a round for every task that is due now and whose lease this replica gets (sequentially)."""
        results = []
        for task in self.tasks:
            if self._stop.is_set():
                break
            if not self.due(task):
                continue
            with lease.holding(self.store, f"round:{task}", self.holder, self.lease_seconds) as held:
                # Re-check under the lease: another replica may have just finished this round.
                if held is None or not self.due(task):
                    continue
                results.append(self.run_round(task, held))
        return results

    def _loop(self) -> None:
        while not self._stop.wait(self.schedule.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - keep scheduling; the error is logged
                log.exception("consolidation scheduler poll failed")

    def start(self) -> None:
        """Record rounds a crash cut off as interrupted, then start the background thread."""
        if self._thread is None:
            # A round another replica holds the lease of is running, not cut off.
            running_elsewhere = [t for t in self.tasks if lease.holder_of(self.store, f"round:{t}") is not None]
            interrupted = self.store.interrupt_running_rounds(
                f"{INTERRUPTED}: the cloud stopped during the round", except_tasks=running_elsewhere)
            if interrupted:
                log.warning(
                    "%d consolidation round(s) were cut off by a crash of the cloud (%s); recorded as "
                    "interrupted, their experience is consolidated again", len(interrupted),
                    ", ".join(f"{task} from row {first}" for task, first in interrupted),
                )
            if not self.in_process and self.schedule.enabled:
                try:
                    self._worker.start()  # pay for importing torch now, before robots connect
                except RoundError as err:
                    log.error("consolidation worker: %s (will retry at the first round)", err)
            self._thread = threading.Thread(target=self._loop, name="nestor-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread, cancelling a running round; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._worker.close()
