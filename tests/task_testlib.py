"""Helpers of the tests that edit a task file (YAML)."""

from pathlib import Path

import yaml


def edited_task(source: Path, out: Path, edit) -> Path:
    """Write `source`'s YAML, changed in place by `edit(data)`, to `out`; returns `out`."""
    data = yaml.safe_load(Path(source).read_text())
    edit(data)
    out.write_text(yaml.safe_dump(data))
    return out
