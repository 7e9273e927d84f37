"""Fixtures of the fault tests: real cloud processes, real spools, loopback only."""

import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
for path in (HERE, HERE.parent / "cloud"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from faultlib import CloudProcess  # noqa: E402


@pytest.fixture
def cloud(tmp_path):
    """A `nestor-cloud serve` process on 127.0.0.1:<free port>, db in tmp_path; stopped at the end."""
    proc = CloudProcess(tmp_path / "cloud", str(tmp_path / "cloud" / "nestor.db"))
    proc.start()
    yield proc
    proc.stop()
