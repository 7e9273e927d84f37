"""Fixtures of the fault tests: real cloud processes, real spools, loopback only."""

import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
for path in (HERE, HERE.parent / "cloud"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from faultlib import CloudProcess  # noqa: E402


@pytest.fixture(params=["sqlite", "postgres"])
def cloud(request, tmp_path):
    """A `nestor-cloud serve` process on 127.0.0.1:<free port>; stopped at the end.

    Once per store backend: a SQLite file in tmp_path, then a fresh PostgreSQL database.
    """
    db = str(tmp_path / "cloud" / "nestor.db") if request.param == "sqlite" else request.getfixturevalue("pg_dsn")
    proc = CloudProcess(tmp_path / "cloud", db)
    proc.start()
    yield proc
    proc.stop()
