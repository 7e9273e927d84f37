"""Helpers of the tests that run a robot node as a process and probe it over DDS."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import rclpy
from nestor_core.lifeline import stop_process


class Recorder:
    """The `on_model` callback of a WeightSync: keeps every announced model's info."""

    def __init__(self):
        self.models: list[dict] = []

    def __call__(self, info: dict) -> None:
        self.models.append(info)

    @property
    def versions(self) -> list[int]:
        return [m["version"] for m in self.models]


def model_update_probe(context: rclpy.Context, domain_id: int, received: list):
    """A probe node in `domain_id` that appends every decoded MODEL_UPDATE to `received`; (node, executor)."""
    import json

    from nestor_core import qos, topics
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node("weight_sync_probe", context=context)
    node.create_subscription(String, topics.MODEL_UPDATE, lambda m: received.append(json.loads(m.data)), qos.EVENT_QOS)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    return node, executor


def wait_for(predicate, timeout: float = 20.0, period: float = 0.02) -> bool:
    """Poll `predicate` every `period` until true or `timeout`; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()


def stop_node(proc: subprocess.Popen, context: rclpy.Context | None = None) -> str:
    """Shut the probe's context down, stop the node (SIGINT, 10 s, then SIGKILL) and return its output."""
    if context is not None and context.ok():
        rclpy.shutdown(context=context)
    stop_process(proc, signal.SIGINT, timeout_s=10, kill_timeout_s=5)
    return proc.stdout.read()


def start_node(executable: str, **params) -> subprocess.Popen:
    """Run the venv's console script `executable` with ROS parameters `params` (output captured as text)."""
    argv = [str(Path(sys.executable).parent / executable), "--ros-args"]
    for name, value in params.items():
        argv += ["-p", f"{name}:={value}"]
    return subprocess.Popen(argv, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def spin_until(executor, done: Callable[[], bool], proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Spin the probe's executor until `done()`, the timeout, or the node process exits."""
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline and proc.poll() is None:
        executor.spin_once(timeout_sec=0.1)


def stop_policy(proc: subprocess.Popen, log) -> int | None:
    """Stop a policy node (SIGINT, 15 s for its flush, then SIGKILL), close its log file; its exit code."""
    try:
        return stop_process(proc, signal.SIGINT, timeout_s=15)
    finally:
        log.close()


def random_domain_id() -> int:
    """A DDS domain in 1..100 that differs from run to run (tests of one machine stay apart)."""
    return random.Random(os.getpid() ^ time.time_ns()).randint(1, 100)


def ros_env(domain_id: int) -> dict[str, str]:
    """This process's environment with DDS on loopback in `domain_id`."""
    return dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain_id))


def policy_argv(namespace: str, model, *params: str) -> list[str]:
    """The venv's policy_node in `namespace` as robot r1 on kuka_track from `model`, plus `params` (name:=value)."""
    argv = [str(Path(sys.executable).parent / "policy_node"), "--ros-args", "-r", f"__ns:={namespace}"]
    for param in ("robot_id:=r1", "task:=kuka_track", f"initial_model:={model}", *params):
        argv += ["-p", param]
    return argv


def launch_policy(argv: list[str], log_path: Path, domain_id: int):
    """Start `argv` in `domain_id` with its output in `log_path`; returns (process, open log for stop_policy)."""
    log = open(log_path, "w")  # noqa: SIM115 - closed by stop_policy
    return subprocess.Popen(argv, env=ros_env(domain_id), stdout=log, stderr=subprocess.STDOUT), log
