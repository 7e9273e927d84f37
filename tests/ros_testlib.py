"""Helpers of the tests that run a robot node as a process and probe it over DDS."""

from __future__ import annotations

import signal
import subprocess

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


def stop_node(proc: subprocess.Popen, context: rclpy.Context | None = None) -> str:
    """Shut the probe's context down, stop the node (SIGINT, 10 s, then SIGKILL) and return its output."""
    if context is not None and context.ok():
        rclpy.shutdown(context=context)
    stop_process(proc, signal.SIGINT, timeout_s=10, kill_timeout_s=5)
    return proc.stdout.read()
