"""Copy a store's rows into another store (e.g. a PostgreSQL database into a SQLite file).

The demo on replicas keeps a SQLite snapshot of its PostgreSQL store in the run directory, so the
report and later inspection read the same file as after a default (SQLite) run. Row ids are
kept, so experience ranges (rounds, models) still point at the same chunks. The L3 reservoir is
not copied (it is derived from the chunks).
"""

from __future__ import annotations

from cloud_brain.experience.store import ExperienceStore

TABLES = ("robots", "chunks", "dropped", "models", "rounds", "bad_models", "canaries")


def _columns(store: ExperienceStore, table: str) -> list[str]:
    if store.backend == "postgres":
        return [
            r[0]
            for r in store.query(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = 'public'"
                " ORDER BY ordinal_position",
                (table,),
            )
        ]
    return [r[1] for r in store.query(f"PRAGMA table_info({table})")]


def copy_store(source: str, target: str, page: int = 500) -> dict[str, int]:
    """Copy every row of TABLES from `source` into the empty store `target`; returns rows per table."""
    src, dst = ExperienceStore(source), ExperienceStore(target)
    counts = {}
    try:
        for table in TABLES:
            if dst.query(f"SELECT COUNT(*) FROM {table}")[0][0]:
                raise ValueError(f"target: table {table} is not empty")
            columns = _columns(dst, table)
            names = ", ".join(columns)
            order = columns[0]
            rows = src.query(f"SELECT {names} FROM {table} ORDER BY {order}")
            with dst.transaction() as conn:
                for i in range(0, len(rows), page):
                    for row in rows[i : i + page]:
                        conn.execute(
                            f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})", tuple(row)
                        )
            counts[table] = len(rows)
    finally:
        src.close()
        dst.close()
    return counts
