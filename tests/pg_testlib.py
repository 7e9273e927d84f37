"""PostgreSQL for the tests: one throw-away server (cloud_brain.experience.pg_local) per pytest process.

The server binaries come from the Debian package `postgresql` (`.ci/run` and `make test` install
it when missing). `NESTOR_TEST_PG_DSN` points the tests at an existing server instead (each test
still gets its own database; it is never restarted).

Without binaries (and no DSN) the tests that need PostgreSQL skip, except when CI=true: there
they fail, so a CI run never passes without having run them.
"""

from __future__ import annotations

import os
import uuid

import pytest
from cloud_brain.experience.pg_local import PostgresServer, admin

__all__ = ["ExternalServer", "PostgresServer", "require_postgres"]


def require_postgres(reason: str) -> None:
    """Fail under CI=true, skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL needed but unavailable: {reason}")
    pytest.skip(f"PostgreSQL unavailable: {reason}")


class ExternalServer:
    """An existing server named by NESTOR_TEST_PG_DSN (databases made per test, never restarted)."""

    def __init__(self, dsn: str):
        self.base = dsn

    def create_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        admin(self.base, f"CREATE DATABASE {name}")
        return self.base.rsplit("/", 1)[0] + "/" + name

    def cleanup(self) -> None:
        pass
