"""The benchmark's cases: the cases YAML (tasks, shifts, magnitudes, seeds, protocol, methods) read and checked."""

from __future__ import annotations

import dataclasses
import pathlib

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
METHODS = ("frozen", "l0_delta", "rls", "naive", "full")  # the required five; cases YAML may add variants
FIXED = ("frozen", "l0_delta", "rls")  # no consolidation: the initial model throughout


@dataclasses.dataclass(frozen=True)
class Case:
    """One (task, shift, magnitude) of the YAML; `target` names the link or joint (optional)."""

    task_file: str
    shift: str
    magnitude: float
    target: str | None = None

    def spec(self, at_s: float) -> str:
        suffix = f"#{self.target}" if self.target else ""
        return f"{self.shift}:{self.magnitude:g}@{at_s:g}{suffix}"

    def gate_spec(self) -> str:
        suffix = f"#{self.target}" if self.target else ""
        return f"{self.shift}:{self.magnitude:g}{suffix}"


def load_cases(path: str | pathlib.Path) -> dict:
    """Read and validate a cases YAML; errors name the file and the field."""
    path = pathlib.Path(path)
    data = yaml.safe_load(path.read_text())
    for key in ("seeds", "protocol", "tasks"):
        if key not in data:
            raise ValueError(f"{path.name}: {key}: missing required field")
    cases = []
    for i, task in enumerate(data["tasks"]):
        task_file = str((REPO / task["task_file"]).resolve())
        if not pathlib.Path(task_file).is_file():
            raise ValueError(f"{path.name}: tasks[{i}].task_file: {task['task_file']!r} not found")
        for j, entry in enumerate(task["cases"]):
            if "shift" not in entry or "magnitudes" not in entry:
                raise ValueError(f"{path.name}: tasks[{i}].cases[{j}]: needs 'shift' and 'magnitudes'")
            for magnitude in entry["magnitudes"]:
                cases.append(Case(task_file, entry["shift"], float(magnitude), entry.get("target")))
    data["cases"] = cases
    data.setdefault("methods", {"naive": {"replay_fraction": 0.0, "meta_lr": 0.0, "gate": False}, "full": {}})
    data.setdefault("consolidation", {})
    data.setdefault("workers", 2)
    for name in ("naive", "full"):
        if name not in data["methods"]:
            raise ValueError(f"{path.name}: methods.{name}: required (the benchmark compares it)")
    data["method_names"] = list(FIXED) + list(data["methods"])
    return data
