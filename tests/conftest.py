"""Repo-wide test defaults: DDS stays on this machine, and each test run gets its own domain.

Individual fixtures may pick their own ROS_DOMAIN_ID; this is the floor under all of them.
"""

import os
import pathlib
import sys

# Shared test helpers (policy_testlib) import from any test folder.
_TESTS = str(pathlib.Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 80))


# --- PostgreSQL (tests/pg_testlib.py): one real server per pytest process, a database per test ----

import subprocess  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server on 127.0.0.1 for this pytest process (started on first use)."""
    import pg_testlib

    dsn = os.environ.get("NESTOR_TEST_PG_DSN")
    if dsn:
        server = pg_testlib.ExternalServer(dsn)
    else:
        try:
            server = pg_testlib.PostgresServer().start()
        except (FileNotFoundError, subprocess.CalledProcessError) as err:
            detail = getattr(err, "stderr", "") or str(err)
            pg_testlib.require_postgres(detail.strip().splitlines()[-1] if detail.strip() else str(err))
    yield server
    server.cleanup()


@pytest.fixture
def pg_dsn(pg_server):
    """DSN of a fresh, empty database on the test server."""
    return pg_server.create_database()


@pytest.fixture(params=["sqlite", "postgres"])
def store_target(request, tmp_path):
    """What ExperienceStore opens, once per backend: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "exp.db")
    return request.getfixturevalue("pg_dsn")
