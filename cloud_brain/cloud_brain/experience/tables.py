"""The experience flow's tables: robots, chunks, dropped (the store; `rounds` owns its own).

DDL only, imported by `store_schema` (the migrations) without importing the store. Written in SQLite's
dialect; `store_db.translate_ddl` makes the PostgreSQL one.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS robots (
    robot_id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    transitions INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    model_version INTEGER NOT NULL DEFAULT 0,
    recent_cost REAL NOT NULL DEFAULT 0,
    first_contact_unix REAL NOT NULL,
    last_contact_unix REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    robot_id TEXT NOT NULL,
    task TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    model_version INTEGER NOT NULL,
    mean_cost REAL NOT NULL,
    received_unix REAL NOT NULL,
    chunk BLOB NOT NULL,
    UNIQUE (robot_id, first_seq)
);
CREATE INDEX IF NOT EXISTS chunks_by_task ON chunks (task, id);
CREATE TABLE IF NOT EXISTS dropped (
    robot_id TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    received_unix REAL NOT NULL,
    PRIMARY KEY (robot_id, first_seq)
);
"""
