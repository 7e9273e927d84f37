"""The consolidation schedule: when to run a round (the process that runs it: `round_worker`).

`round_due` is the rule. `ConsolidationScheduler` is the background thread that applies it per
task and, for a due task, runs ONE round: it builds the request, calls the consolidation
function in a 'spawn' child process (niced, one torch thread, so ingest keeps its CPU),
registers the result as a new version whose parent is the active one, and activates it when
the round accepted it (which pushes it to subscribers through the registry's on_activate).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping

from cloud_brain.config import ScheduleConfig
from cloud_brain.experience import lease
from cloud_brain.experience.store import ExperienceStore
from cloud_brain.learning.round_worker import INTERRUPTED, RoundError, RoundWorker, resolve, round_request
from cloud_brain.models.registry import ModelRegistry, ModelVersion
from cloud_brain.tasks import TaskSpec

log = logging.getLogger(__name__)


def round_due(new_transitions: int, seconds_since_last: float, schedule: ScheduleConfig) -> bool:
    """A round is due on enough new transitions, or on enough time with a minimum of new ones."""
    if new_transitions >= schedule.every_transitions:
        return True
    return new_transitions >= schedule.min_transitions and seconds_since_last >= schedule.every_seconds


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
        seed = self.seed + self.store.round_count(task, include_failed=True) + 1
        request = round_request(
            self.db_path, task, spec.file, parent.version, parent.onnx, (start, end), seed, self.round_config
        )
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

    def _log_round(
        self,
        task: str,
        parent: int,
        version: int,
        accepted: bool,
        start: int,
        end: int,
        metrics: dict,
        reason: str = "",
        error: str = "",
    ) -> None:
        if self.in_process:
            return  # the scalars are written by the worker process, which holds torch
        from cloud_brain.learning.tensorboard_log import round_record

        number = self.store.round_count(task, include_failed=True)
        log_round = getattr(self._worker, "log_round", None)  # the Ray runner writes none
        if log_round is None:
            return
        log_round(
            round_record(task, number, parent, version, accepted, start, end, metrics, reason=reason, error=error)
        )

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
                f"{INTERRUPTED}: the cloud stopped during the round", except_tasks=running_elsewhere
            )
            if interrupted:
                log.warning(
                    "%d consolidation round(s) were cut off by a crash of the cloud (%s); recorded as "
                    "interrupted, their experience is consolidated again",
                    len(interrupted),
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
