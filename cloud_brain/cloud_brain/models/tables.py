"""The models flow's tables: models and bad_models (`registry`), canaries (`rollout`).

DDL only, imported by `cloud_brain.experience.store_schema` (the migrations) without importing the
registry. Written in SQLite's dialect; `store_db.translate_ddl` makes the PostgreSQL one.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    version INTEGER PRIMARY KEY,
    task TEXT NOT NULL,
    parent INTEGER NOT NULL,
    created_unix REAL NOT NULL,
    sha256 TEXT NOT NULL,
    onnx BLOB NOT NULL,
    manifest BLOB NOT NULL,
    signature BLOB NOT NULL,
    io_signature_json TEXT NOT NULL,
    metrics_json TEXT NOT NULL,
    experience_from INTEGER NOT NULL,
    experience_to INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'candidate', 'rejected', 'retired')),
    reason TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS one_active_per_task ON models (task) WHERE status = 'active';
-- Versions a robot rolled back (Models.ReportBad): never offered to that robot again.
CREATE TABLE IF NOT EXISTS bad_models (
    robot_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    reason TEXT NOT NULL,
    reported_unix REAL NOT NULL,
    PRIMARY KEY (robot_id, version)
);
"""

CANARIES = """
-- Running canaries (cloud_brain.models.rollout), one per task: they survive a cloud restart.
CREATE TABLE IF NOT EXISTS canaries (
    task TEXT PRIMARY KEY,
    candidate INTEGER NOT NULL,
    parent INTEGER NOT NULL,
    robots TEXT NOT NULL,
    start_row INTEGER NOT NULL,
    started_unix REAL NOT NULL
);
"""
