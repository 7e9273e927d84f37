"""Staged rollout: a version accepted by consolidation reaches a few canary robots first.

Which version a robot is offered (Models.Subscribe asks `Rollout.select`):
  * a canary robot of a running canary: the candidate;
  * everyone else: the task's active version;
  * never a version the robot reported bad (Models.ReportBad), whatever the above says.

The decision compares, per canary robot, the mean cost of the transitions the candidate produced
(chunk.model_versions tells which version produced each transition) with the mean cost of the same
robot's last transitions under the previous version. `canary_verdict` is the pure rule; `Rollout`
holds the state, chooses the canaries and polls the store from its own thread. With
`canary_fraction` 0 it only filters bad versions and promotes accepted versions at once.

A running canary is recorded in the store (table `canaries`), so a cloud restart resumes it: same
candidate, same canary robots, same baseline row and the time it has already run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np
from nestor_core import nestor_pb2
from nestor_core.tensors import from_tensor

from cloud_brain.config import RolloutConfig
from cloud_brain.experience.store import ExperienceStore
from cloud_brain.models.model_bus import ModelBus
from cloud_brain.models.registry import ModelRegistry, ModelVersion

log = logging.getLogger(__name__)


def choose_canaries(robots: list[str], fraction: float) -> list[str]:
    """The deterministic canary set: the ceil(fraction * len) lowest robot ids (none when fraction is 0)."""
    if fraction <= 0 or not robots:
        return []
    ordered = sorted(set(robots))
    return ordered[: max(1, math.ceil(fraction * len(ordered) - 1e-9))]


def canary_verdict(pre: dict[str, float], post: dict[str, float], max_regression: float) -> tuple[bool, str]:
    """(promote?, why) from per-robot mean costs before (`pre`) and after (`post`) the swap.

    Lower cost is better. Robots without post-swap experience are left out; no post-swap
    experience at all rejects. The regression is pooled over the robots that have both:
    (mean post - mean pre) / max(|mean pre|, 1e-9).
    """
    robots = sorted(r for r in post if r in pre)
    if not post:
        return False, "no experience from the canaries under the new version"
    if not robots:
        return True, f"no pre-swap baseline; post-swap mean cost {np.mean(list(post.values())):.4g}"
    before = float(np.mean([pre[r] for r in robots]))
    after = float(np.mean([post[r] for r in robots]))
    regression = (after - before) / max(abs(before), 1e-9)
    text = (
        f"canaries {','.join(robots)}: mean cost {after:.4g} vs {before:.4g} before "
        f"({regression:+.1%}, limit +{max_regression:.1%})"
    )
    return regression <= max_regression, text


def version_costs(
    store: ExperienceStore,
    robot_id: str,
    version: int,
    after_row: int = 0,
    up_to_row: int | None = None,
    newest: int | None = None,
) -> np.ndarray:
    """Costs of the transitions `version` produced for `robot_id` in store rows (after_row, up_to_row].

    newest: keep only the last this many (reads newest rows first and stops early).
    """
    upper = up_to_row if up_to_row is not None else 2**62
    rows = store.query(
        "SELECT chunk FROM chunks WHERE robot_id = ? AND id > ? AND id <= ? ORDER BY id DESC",
        (robot_id, after_row, upper),
    )
    parts, total = [], 0
    for (blob,) in rows:
        chunk = nestor_pb2.ExperienceChunk.FromString(blob)
        versions, costs = from_tensor(chunk.model_versions, "model_versions"), from_tensor(chunk.cost, "cost")
        picked = costs[versions == version]
        if picked.size:
            parts.append(picked)
            total += picked.size
        if newest is not None and total >= newest:
            break
    if not parts:
        return np.zeros(0, np.float32)
    costs = np.concatenate(parts[::-1])
    return costs[-newest:] if newest is not None else costs


@dataclasses.dataclass
class Canary:
    """A running canary of one task."""

    candidate: ModelVersion
    parent: int
    robots: list[str]
    start_row: int
    started: float
    started_unix: float = 0.0


class Rollout:
    """Per-robot version choice, bad-version filter and the canary life cycle.

    Args:
        config: the rollout settings.
        registry: model registry (promote, reject, bad marks).
        store: experience store (canary costs).
        bus: model bus; touched when a canary set changes so Subscribe streams re-select.
        metrics: optional cloud_brain.service.metrics.Metrics (rollout outcomes, canary gauge).
    """

    def __init__(
        self,
        config: RolloutConfig,
        registry: ModelRegistry,
        store: ExperienceStore,
        bus: ModelBus,
        metrics=None,
        clock=time.monotonic,
    ):
        self.config = config
        self.registry = registry
        self.store = store
        self.bus = bus
        self.metrics = metrics
        self.clock = clock
        self._lock = threading.Lock()
        self._subscribers: dict[str, Counter] = {}
        self._canaries: dict[str, Canary] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._resume()

    def _resume(self) -> None:
        """Reload the canaries a previous process left running; drop records of decided ones."""
        for saved in self.saved_canaries():
            model = self.registry.get(saved["candidate"])
            if model is None or model.status != "candidate":
                self.clear_canary(saved["task"], saved["candidate"])
                continue
            ran = max(0.0, time.time() - saved["started_unix"])
            self._canaries[saved["task"]] = Canary(
                model, saved["parent"], saved["robots"], saved["start_row"], self.clock() - ran, saved["started_unix"]
            )
            log.info(
                "rollout: resumed canary of version %d (%s) on %s, running %.0f s",
                model.version,
                saved["task"],
                ", ".join(saved["robots"]),
                ran,
            )

    # --- the canaries table (cloud_brain.models.tables.CANARIES): running canaries survive a restart ---

    def save_canary(
        self, task: str, candidate: int, parent: int, robots: list[str], start_row: int, started_unix: float
    ) -> None:
        """Record the task's running canary (replacing any earlier one), durably."""
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO canaries (task, candidate, parent, robots, start_row, started_unix) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (task) DO UPDATE SET candidate = excluded.candidate, "
                "parent = excluded.parent, robots = excluded.robots, start_row = excluded.start_row, "
                "started_unix = excluded.started_unix",
                (task, candidate, parent, json.dumps(sorted(robots)), start_row, started_unix),
            )

    def clear_canary(self, task: str, candidate: int) -> None:
        """Forget the task's canary if it is still `candidate` (decided or superseded)."""
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM canaries WHERE task = ? AND candidate = ?", (task, candidate))

    def saved_canaries(self) -> list[dict]:
        """The canaries recorded by save_canary and not cleared: task, candidate, parent, robots, ..."""
        rows = self.store.query(
            "SELECT task, candidate, parent, robots, start_row, started_unix FROM canaries ORDER BY task", ()
        )
        return [
            {
                "task": t,
                "candidate": int(c),
                "parent": int(p),
                "robots": json.loads(r),
                "start_row": int(row),
                "started_unix": float(u),
            }
            for t, c, p, r, row, u in rows
        ]

    @property
    def enabled(self) -> bool:
        return self.config.canary_fraction > 0

    # --- subscribers --------------------------------------------------------------------------

    @contextlib.contextmanager
    def subscribed(self, task: str, robot_id: str) -> Iterator[None]:
        """Count `robot_id` as a connected subscriber of `task` while the block runs."""
        with self._lock:
            self._subscribers.setdefault(task, Counter())[robot_id] += 1
        try:
            yield
        finally:
            with self._lock:
                counter = self._subscribers[task]
                counter[robot_id] -= 1
                if counter[robot_id] <= 0:
                    del counter[robot_id]

    def connected(self, task: str) -> list[str]:
        with self._lock:
            return sorted(self._subscribers.get(task, ()))

    def canary(self, task: str) -> Canary | None:
        with self._lock:
            return self._canaries.get(task)

    def select(self, robot_id: str, task: str, active: ModelVersion) -> ModelVersion | None:
        """The version to offer `robot_id` when `active` is the task's active one (None = nothing)."""
        model = active
        with self._lock:
            canary = self._canaries.get(task)
        if canary is not None and robot_id in canary.robots:
            model = canary.candidate
        if robot_id and model.version in self.registry.bad_versions(robot_id):
            return None
        return model

    # --- life cycle ---------------------------------------------------------------------------

    def accept(self, candidate: ModelVersion) -> ModelVersion:
        """A consolidation round accepted `candidate`: canary it, or promote it when rollout is off."""
        if not self.enabled:
            return self.registry.promote(candidate.version)
        task = candidate.task
        robots = choose_canaries(self.connected(task), self.config.canary_fraction)
        if not robots:
            log.info("rollout: no robot subscribed to %s; version %d promoted directly", task, candidate.version)
            return self.registry.promote(candidate.version)
        canary = Canary(candidate, candidate.parent, robots, self.store.max_row_id(), self.clock(), time.time())
        # Durable before any robot is offered the candidate: a restart resumes this canary.
        self.save_canary(task, candidate.version, canary.parent, robots, canary.start_row, canary.started_unix)
        with self._lock:
            previous = self._canaries.get(task)
            self._canaries[task] = canary
        if previous is not None:
            self._reject(previous, f"superseded by version {candidate.version}")
        log.info("rollout: version %d of %s goes to canaries %s first", candidate.version, task, ", ".join(robots))
        self._count("started")
        self.bus.touch(task)
        return candidate

    def poll(self) -> list[tuple[ModelVersion, bool, str]]:
        """Decide every canary that is ready; returns (candidate, promoted, why) per decision."""
        with self._lock:
            canaries = list(self._canaries.values())
        decided = []
        for canary in canaries:
            post = {
                r: version_costs(self.store, r, canary.candidate.version, after_row=canary.start_row)
                for r in canary.robots
            }
            ready = all(c.size >= self.config.canary_transitions for c in post.values())
            if not ready and self.clock() - canary.started < self.config.canary_timeout_seconds:
                continue
            pre = {
                r: version_costs(
                    self.store, r, canary.parent, up_to_row=canary.start_row, newest=self.config.baseline_transitions
                )
                for r in canary.robots
            }
            promote, why = canary_verdict(
                {r: float(c.mean()) for r, c in pre.items() if c.size},
                {r: float(c.mean()) for r, c in post.items() if c.size},
                self.config.max_regression,
            )
            if not ready:
                why += f" (timeout after {self.config.canary_timeout_seconds:g}s)"
            with self._lock:
                if self._canaries.get(canary.candidate.task) is not canary:
                    continue
                del self._canaries[canary.candidate.task]
            if promote:
                log.info("rollout: promoting version %d: %s", canary.candidate.version, why)
                self.registry.promote(canary.candidate.version)
                self.clear_canary(canary.candidate.task, canary.candidate.version)
                self._count("promoted")
            else:
                self._reject(canary, why)
            decided.append((canary.candidate, promote, why))
        return decided

    def _reject(self, canary: Canary, why: str) -> None:
        log.warning(
            "rollout: version %d rejected, canaries get version %d back: %s",
            canary.candidate.version,
            canary.parent,
            why,
        )
        self.registry.reject(canary.candidate.version, f"canary: {why}")
        self.clear_canary(canary.candidate.task, canary.candidate.version)
        self._count("rejected")
        self.bus.touch(canary.candidate.task)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.rollouts.labels(outcome=outcome).inc()

    # --- thread -------------------------------------------------------------------------------

    def start(self) -> None:
        """Poll canaries in a background thread (only when rollout is on)."""
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="rollout", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.config.poll_seconds):
            try:
                self.poll()
            except Exception:  # a failed check must not end canary supervision
                log.exception("rollout: canary check failed")
