"""Versioned schema migrations of the store, per backend.

A database records its version in `schema_version`. Opening a store applies every migration
above that version, in order, inside one write transaction (on PostgreSQL under the writers'
advisory lock, so two replicas starting together migrate once). A database whose version is
newer than this code's is refused with `SchemaError`: older code must not write to it.

A SQLite file made before versioning has the version-1 tables and no `schema_version`; its
version-1 migration is `CREATE TABLE IF NOT EXISTS`, so it is adopted as it is.

To change the schema, append a migration to BOTH lists (same version number, each backend's
DDL) and never edit a released one.
"""

from __future__ import annotations

from cloud_brain.experience import lease, rounds, store_db, tables
from cloud_brain.learning import l3_reservoir
from cloud_brain.models import tables as model_tables

# The tables of version 1, as a database made before versioning has them (SQLite dialect). Each
# flow owns its tables' DDL (experience.tables, rounds, models.tables, lease, learning.l3_reservoir).
VERSION_1 = ";\n".join(
    ddl.strip().rstrip(";") for ddl in (tables.SCHEMA, rounds.SCHEMA, model_tables.SCHEMA, model_tables.CANARIES)
)


def _statements(ddl: str) -> list[str]:
    return [s.strip() for s in ddl.split(";") if s.strip()]


def _v1_postgres() -> list[str]:
    # The L3 reservoir opens its own connection on the same database; its tables are made here
    # so concurrent replicas never race on CREATE TABLE.
    return store_db.translate_ddl(VERSION_1 + ";\n" + l3_reservoir.SCHEMA)


MIGRATIONS = {
    "sqlite": [
        (1, lambda: _statements(VERSION_1)),
        (2, lambda: _statements(lease.SCHEMA)),
    ],
    "postgres": [
        (1, _v1_postgres),
        (2, lambda: store_db.translate_ddl(lease.SCHEMA)),
    ],
}

LATEST = {backend: steps[-1][0] for backend, steps in MIGRATIONS.items()}


def current_version(conn) -> int:
    """The schema version recorded in the database; 0 when it has none."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0) if row else 0


def migrate(store) -> int:
    """Bring `store`'s database to the latest version; returns it.

    Raises:
        store_db.SchemaError: the database is newer than this code.
    """
    latest = LATEST[store.backend]
    with store.transaction() as conn:
        version = current_version(conn)
        if version > latest:
            raise store_db.SchemaError(
                f"store: database {store_db.redact(store.path)} has schema version {version}, newer than this "
                f"nestor's {latest}; upgrade nestor (or point store at another database)"
            )
        for number, statements in MIGRATIONS[store.backend]:
            if number <= version:
                continue
            for statement in statements():
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
            version = number
    return version
