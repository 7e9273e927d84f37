"""The spool's tables and the counters it keeps in `meta` (nestor_robot.spool owns the file)."""

import secrets
import sqlite3

VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    first_seq INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    data BLOB NOT NULL
);
-- Transitions that will never be sent, announced by the chunk starting at before_seq.
CREATE TABLE IF NOT EXISTS gaps (before_seq INTEGER PRIMARY KEY, dropped INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    first_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at_unix REAL NOT NULL,
    data BLOB
);
"""

# Counters kept in `meta`, all in transitions unless named *_chunks.
COUNTERS = ("next_seq", "acked_through", "appended", "appended_chunks", "evicted", "rejected", "quarantined")


def create(db: sqlite3.Connection, robot_id: str) -> None:
    """Create the tables and the `meta` defaults of a new spool; a no-op on an existing one.

    Runs inside the caller's write transaction. `spool_id` tells this spool from an earlier one at the
    same path (the recorder ring checks it).
    """
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    defaults = {"schema": VERSION, "robot_id": robot_id, "next_seq": 1, "spool_id": secrets.randbits(62) + 1}
    defaults.update({name: 0 for name in COUNTERS if name != "next_seq"})
    for key, value in defaults.items():
        db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (key, str(value)))
