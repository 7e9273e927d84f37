"""Reading a task YAML mapping field by field, with errors that name the file and the field path.

``Fields(source, data).get("episode_s", float, check=positive)`` returns the typed value or raises
``ValueError("crane.yaml: episode_s: must be > 0, got -1.0")``; ``sub`` descends into a nested
mapping or list entry, so the path grows as ``shifts[1].type``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


class Fields:
    """Reads one YAML mapping, with errors that carry the file and the field path."""

    def __init__(self, source: str, data: Any, where: str = ""):
        self.source, self.where = source, where
        if not isinstance(data, Mapping):
            self.fail("", f"expected a mapping, got {type(data).__name__}")
        self.data = data

    def fail(self, key: str, problem: str) -> None:
        field = f"{self.where}.{key}" if self.where and key else (self.where or key)
        raise ValueError(f"{self.source}: {field}: {problem}")

    def get(self, key: str, kind: type, default: Any = ..., check=None) -> Any:
        if key not in self.data:
            if default is ...:
                self.fail(key, "missing required field")
            return default
        value = self.data[key]
        try:
            if kind is bool:
                if not isinstance(value, bool):
                    raise TypeError
            elif kind is str:
                if not isinstance(value, str):
                    raise TypeError
            elif kind is int:
                if isinstance(value, bool) or int(value) != value:
                    raise TypeError
                value = int(value)
            else:
                if isinstance(value, bool):
                    raise TypeError
                value = kind(value)
        except (TypeError, ValueError):
            self.fail(key, f"expected {kind.__name__}, got {value!r}")
        if kind is float and not math.isfinite(value):
            self.fail(key, f"must be finite, got {value!r}")
        if check is not None:
            problem = check(value)
            if problem:
                self.fail(key, problem)
        return value

    def floats(self, key: str, length: int | None, default: Any = ..., positive=False) -> tuple:
        if key not in self.data and default is not ...:
            return default
        raw = self.get(key, list)
        if length is not None and len(raw) != length:
            self.fail(key, f"expected {length} values (one per controlled joint), got {len(raw)}")
        items = Fields(self.source, dict(enumerate(raw)), self.where)
        values = tuple(items.get(i, float) for i in range(len(raw)))
        for i, v in enumerate(values):
            if positive and v <= 0:
                self.fail(f"{key}[{i}]", f"must be > 0, got {v}")
        return values

    def names(self, key: str, default: Any = ...) -> tuple[str, ...]:
        if key not in self.data and default is not ...:
            return default
        raw = self.get(key, list)
        for i, v in enumerate(raw):
            if not isinstance(v, str) or not v:
                self.fail(f"{key}[{i}]", f"expected a joint name, got {v!r}")
        if len(set(raw)) != len(raw):
            self.fail(key, "duplicate joint names")
        return tuple(raw)

    def sub(self, key: str, index: int | None = None) -> Fields:
        value = self.data.get(key, {}) if index is None else self.data[key][index]
        path = key if index is None else f"{key}[{index}]"
        return Fields(self.source, value if value is not None else {}, join(self.where, path))

    def reject_unknown(self, known: Iterable[str]) -> None:
        for key in self.data:
            if key not in known:
                self.fail(str(key), f"unknown field (expected one of {', '.join(known)})")


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def positive(v: float) -> str | None:
    return None if v > 0 else f"must be > 0, got {v}"
