"""Consolidation on Ray: the round as a Ray task, the gate's scenarios as Ray tasks in parallel.

Chosen by `consolidation.backend: ray` (CloudConfig.consolidation); the local worker
(cloud_brain.learning.round_worker.RoundWorker) stays the default, and this module imports `ray` only when a
runner starts. With `address` empty the server starts a private local cluster (`ray.init` on this
machine, `num_cpus` CPUs); `auto` joins the cluster of `ray start --head` on this machine, and
`host:port` (or `ray://host:port`) a remote one.

Loopback: a local cluster is bound to 127.0.0.1, with the dashboard and usage reporting off
(`RAY_USAGE_STATS_ENABLED=0`, and `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, without which Ray 2.60
replaces 127.0.0.1 by the machine's address).

What runs where: the round task runs the same `module:function` the local worker runs, in a Ray
worker process with the round's priority rules (nice 10, one torch thread). Inside it, the gate
evaluates its scenarios through `ray_map` (request key `gate_map`), one Ray task per scenario,
each in its own process with its own PyBullet client; the costs come back in scenario order, so
a round gives the same result for the same seed as on the local worker.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
GATE_MAP = "cloud_brain.learning.ray_backend:evaluate_parallel"

_remote = {}

ROUND_NICENESS = 10


def round_priority() -> None:
    """In a Ray worker: niceness at least ROUND_NICENESS and one torch thread, like the local round worker.

    The niceness is absolute: workers are reused, and a cluster started from a niced process is
    niced already.
    """
    try:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if current < ROUND_NICENESS:
            os.nice(ROUND_NICENESS - current)
    except OSError:
        pass
    from cloud_brain.learning.round_worker import one_torch_thread

    one_torch_thread()


def _ray():
    for key, value in _RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    return ray


def init(address: str = "", num_cpus: int | None = None) -> bool:
    """Connect to (or start) the cluster once per process; True when this call started it."""
    ray = _ray()
    if ray.is_initialized():
        return False
    if address:
        # An existing cluster (`ray start --head`, or ray:// through Ray Client) has its own settings.
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(
            num_cpus=num_cpus,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    return True


def _tasks():
    """The remote functions, defined on first use (so importing this module never imports ray)."""
    if not _remote:
        ray = _ray()

        @ray.remote(num_cpus=1, max_retries=0)
        def round_task(function_path: str, request: dict) -> dict:
            from cloud_brain.learning.round_worker import resolve

            round_priority()
            return resolve(function_path)(request)

        @ray.remote(num_cpus=1, max_retries=1)
        def apply_task(fn: Callable, item):
            round_priority()
            return fn(item)

        _remote["round"] = round_task
        _remote["apply"] = apply_task
    return _remote


def ray_map(fn: Callable, items: Iterable) -> list:
    """[fn(item) for item in items], each call a Ray task (in parallel), results in item order.

    `fn` travels by cloudpickle: it must hold what it needs (bytes, specs), not open handles.
    """
    ray = _ray()
    if not ray.is_initialized():
        init("auto")
    refs = [_tasks()["apply"].remote(fn, item) for item in items]
    return ray.get(refs)


def scenario_cost(onnx_bytes: bytes, task, ticks: int, seed: int, shifts: list[str]) -> float:
    """One gate scenario, as l2_consolidation.evaluate computes it: mean cost of the seeded episode.

    Builds its own model and environment (its own PyBullet client), so it runs in any process.
    """
    import numpy as np
    from nestor_core.policy_model import load_model
    from nestor_sim.tracking_env import TrackingEnv

    from cloud_brain.learning.evaluation import rollout

    env = TrackingEnv(task)
    try:
        return float(np.mean(rollout(load_model(onnx_bytes), env, shifts, seed, ticks).cost))
    finally:
        env.close()


def evaluate_parallel(
    onnx_bytes: bytes, task, scenarios: dict, ticks: int, seed: int, map_fn: Callable = ray_map
) -> dict:
    """Mean cost per gate scenario, every scenario a task of `map_fn` (default: one Ray task each)."""
    fn = functools.partial(scenario_cost, onnx_bytes, task, ticks, seed)
    return dict(zip(scenarios, map_fn(fn, list(scenarios.values())), strict=True))


@dataclasses.dataclass(eq=False)
class RayRoundRunner:
    """Runs rounds as Ray tasks; the scheduler's drop-in for RoundWorker (start/run/close).

    Attributes:
        function_path: `module:function` of the round (config.consolidate).
        address: "" = a private local cluster; "auto" or a cluster address otherwise.
        num_cpus: CPUs of a private local cluster (workers that run tasks at once).
        parallel_gate: evaluate the gate's scenarios as parallel Ray tasks.
    """

    function_path: str
    address: str = ""
    num_cpus: int | None = None
    parallel_gate: bool = True
    _started: bool = dataclasses.field(default=False, init=False)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, init=False)

    def start(self, timeout: float = 120.0) -> None:
        with self._lock:
            if not _ray().is_initialized():
                self._started = init(self.address, self.num_cpus)

    def run(self, request: dict, timeout: float, stop: threading.Event | None = None) -> dict:
        from cloud_brain.learning.round_worker import RoundError as SchedulerRoundError

        self.start()
        ray = _ray()
        request = dict(request)
        if self.parallel_gate:
            request["gate_map"] = GATE_MAP
        ref = _tasks()["round"].remote(self.function_path, request)
        deadline = time.monotonic() + timeout
        while True:
            ready, _ = ray.wait([ref], timeout=0.2)
            if ready:
                break
            if stop is not None and stop.is_set():
                ray.cancel(ref, force=True)
                raise SchedulerRoundError("cancelled: server stopping")
            if time.monotonic() > deadline:
                ray.cancel(ref, force=True)
                raise SchedulerRoundError(f"timed out after {timeout:.0f} s")
        try:
            return ray.get(ref)
        except Exception as err:  # noqa: BLE001 - a task error carries the remote traceback as text
            raise SchedulerRoundError(f"round raised on Ray:\n{err}") from None

    def close(self) -> None:
        """Shut down the private cluster this runner started; safe to call twice."""
        with self._lock:
            if self._started:
                _ray().shutdown()
                self._started = False
