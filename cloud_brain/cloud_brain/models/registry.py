"""The model registry: every model version, in the store's SQLite file.

Versions are numbered globally 1, 2, 3, ... Each has a task, a parent (0 for an initial model),
its ONNX bytes and sha256, a canonical manifest (plus signature), metrics, the experience row
range it was trained on, and a status: active, candidate, rejected or retired. Exactly one
version per task is active (a partial unique index enforces it).

Every activation (register as active, promote, rollback) commits first and then calls
`on_activate(version)`, which the server wires to the model bus.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from collections.abc import Callable

from cloud_brain.experience.store import ExperienceStore
from cloud_brain.models.manifest import build_manifest, sha256_hex, sign_manifest

STATUSES = ("active", "candidate", "rejected", "retired")


class RegistryError(Exception):
    """A registry operation that cannot be done; `code` is "not_found" or "precondition"."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """One registered model version.

    Attributes:
        version: global version number (>= 1).
        task: task lineage.
        parent: version it was trained from; 0 for an initial model.
        created_unix: registration time.
        sha256: hex sha256 of `onnx`.
        onnx: serialised ONNX model (b"" when listed without bytes).
        manifest: canonical JSON manifest bytes.
        signature: ed25519 signature of the manifest; b"" when signing is off.
        io_signature: input/output names, shapes and dtypes of the model.
        metrics: evaluation metrics of the round that produced it.
        experience_from: store row range used to train it: rows (experience_from, experience_to].
        experience_to: see experience_from.
        status: "active", "candidate", "rejected" or "retired".
        reason: why a round accepted or rejected it.
    """

    version: int
    task: str
    parent: int
    created_unix: float
    sha256: str
    onnx: bytes
    manifest: bytes
    signature: bytes
    io_signature: dict
    metrics: dict
    experience_from: int
    experience_to: int
    status: str
    reason: str = ""


_COLUMNS = (
    "version, task, parent, created_unix, sha256, {onnx}, manifest, signature, io_signature_json, metrics_json,"
    " experience_from, experience_to, status, reason"
)


def _row_to_version(row: tuple) -> ModelVersion:
    values = list(row)
    values[5] = bytes(values[5] or b"")
    values[6] = bytes(values[6])
    values[7] = bytes(values[7])
    values[8] = json.loads(values[8])
    values[9] = json.loads(values[9])
    return ModelVersion(*values)


class ModelRegistry:
    """Model versions and their lifecycle.

    Args:
        store: the ExperienceStore (or its path or DSN) whose database holds the models table.
        on_activate: called with the newly active version after each activation commits.
        export_dir: when set, every registered version is also written there as
            `v<N>_<task>.onnx` and `v<N>_<task>.manifest.json`.
        signing_key: ed25519 key path for manifests; empty = unsigned.
    """

    def __init__(
        self,
        store: ExperienceStore | str | pathlib.Path,
        on_activate: Callable[[ModelVersion], None] | None = None,
        export_dir: str = "",
        signing_key: str = "",
    ):
        self.store = store if isinstance(store, ExperienceStore) else ExperienceStore(store)
        self.on_activate = on_activate
        self.export_dir = export_dir
        self.signing_key = signing_key

    # --- reads --------------------------------------------------------------------------------

    def _select(self, where: str, params: tuple, with_onnx: bool = True) -> list[ModelVersion]:
        columns = _COLUMNS.format(onnx="onnx" if with_onnx else "NULL")
        rows = self.store.query(f"SELECT {columns} FROM models {where}", params)
        return [_row_to_version(row) for row in rows]

    def get(self, version: int) -> ModelVersion | None:
        """One version with its ONNX bytes, or None."""
        found = self._select("WHERE version = ?", (version,))
        return found[0] if found else None

    def active(self, task: str) -> ModelVersion | None:
        """The task's active version with its ONNX bytes, or None."""
        found = self._select("WHERE task = ? AND status = 'active'", (task,))
        return found[0] if found else None

    def list(self, task: str | None = None, with_onnx: bool = False) -> list[ModelVersion]:
        """Versions (of `task` when given, else all) by version number, ONNX bytes omitted by default."""
        if task:
            return self._select("WHERE task = ? ORDER BY version", (task,), with_onnx)
        return self._select("ORDER BY version", (), with_onnx)

    def last_experience_row(self, task: str) -> int:
        """Largest experience_to among the task's versions: where the next round starts."""
        row = self.store.query("SELECT MAX(experience_to) FROM models WHERE task = ?", (task,))
        return int(row[0][0] or 0)

    # --- writes -------------------------------------------------------------------------------

    def register(
        self,
        task: str,
        onnx: bytes,
        io_signature: dict,
        parent: int = 0,
        metrics: dict | None = None,
        experience_from: int = 0,
        experience_to: int = 0,
        status: str = "candidate",
        reason: str = "",
        now: float | None = None,
    ) -> ModelVersion:
        """Add a version (numbered max + 1) and return it; status "active" also activates it."""
        if status not in STATUSES:
            raise ValueError(f"status: must be one of {STATUSES}, got {status!r}")
        if not task:
            raise ValueError("task: empty")
        metrics = dict(metrics or {})
        created = time.time() if now is None else now
        digest = sha256_hex(onnx)
        with self.store.transaction() as conn:
            if parent:
                row = conn.execute("SELECT task FROM models WHERE version = ?", (parent,)).fetchone()
                if row is None or row[0] != task:
                    raise RegistryError("not_found", f"parent: version {parent} of task {task!r} does not exist")
            version = conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM models").fetchone()[0]
            manifest = build_manifest(version, parent, task, digest, io_signature, metrics, created)
            signature = sign_manifest(manifest, self.signing_key)
            if status == "active":
                conn.execute("UPDATE models SET status = 'retired' WHERE task = ? AND status = 'active'", (task,))
            conn.execute(
                f"INSERT INTO models ({_COLUMNS.format(onnx='onnx')}) VALUES ({', '.join('?' * 14)})",
                (
                    version,
                    task,
                    parent,
                    created,
                    digest,
                    onnx,
                    manifest,
                    signature,
                    json.dumps(io_signature, sort_keys=True),
                    json.dumps(metrics, sort_keys=True),
                    experience_from,
                    experience_to,
                    status,
                    reason,
                ),
            )
        model = self.get(version)
        self._export(model)
        if status == "active":
            self._activated(model)
        return model

    def promote(self, version: int) -> ModelVersion:
        """Make `version` its task's active version, retiring the previous one.

        Promoting the active version is a no-op. Rejected versions cannot be promoted.
        """
        with self.store.transaction() as conn:
            row = conn.execute("SELECT task, status FROM models WHERE version = ?", (version,)).fetchone()
            if row is None:
                raise RegistryError("not_found", f"version: {version} does not exist")
            task, status = row
            if status == "active":
                return self.get(version)
            if status == "rejected":
                raise RegistryError("precondition", f"version: {version} was rejected by evaluation; not promoted")
            _make_active(conn, task, version)
        return self._activated(self.get(version))

    def rollback(self, task: str) -> ModelVersion:
        """Re-activate the parent of the task's active version, retiring the current one."""
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT version, parent FROM models WHERE task = ? AND status = 'active'", (task,)
            ).fetchone()
            if row is None:
                raise RegistryError("not_found", f"task: {task!r} has no active version")
            current, parent = row
            if not parent:
                raise RegistryError("precondition", f"task: active version {current} of {task!r} has no parent")
            _make_active(conn, task, parent)  # retires `current`, the task's one active version
        return self._activated(self.get(parent))

    def reject(self, version: int, reason: str) -> ModelVersion:
        """Mark a candidate version rejected (a failed canary); the active version is untouched."""
        with self.store.transaction() as conn:
            row = conn.execute("SELECT status FROM models WHERE version = ?", (version,)).fetchone()
            if row is None:
                raise RegistryError("not_found", f"version: {version} does not exist")
            if row[0] == "active":
                raise RegistryError("precondition", f"version: {version} is active; roll it back instead")
            conn.execute("UPDATE models SET status = 'rejected', reason = ? WHERE version = ?", (reason, version))
        return self.get(version)

    # --- per-robot bad marks (Models.ReportBad) -----------------------------------------------

    def mark_bad(self, robot_id: str, version: int, reason: str, now: float | None = None) -> int:
        """Record that `robot_id` rolled `version` back; returns how many robots reported it bad.

        Raises:
            RegistryError: not_found when the version does not exist.
        """
        now = time.time() if now is None else now
        with self.store.transaction() as conn:
            if conn.execute("SELECT 1 FROM models WHERE version = ?", (version,)).fetchone() is None:
                raise RegistryError("not_found", f"version: {version} does not exist")
            conn.execute(
                "INSERT OR IGNORE INTO bad_models (robot_id, version, reason, reported_unix) VALUES (?, ?, ?, ?)",
                (robot_id, version, reason, now),
            )
            return int(conn.execute("SELECT COUNT(*) FROM bad_models WHERE version = ?", (version,)).fetchone()[0])

    def bad_versions(self, robot_id: str) -> set[int]:
        """Versions `robot_id` reported bad."""
        return {int(r[0]) for r in self.store.query("SELECT version FROM bad_models WHERE robot_id = ?", (robot_id,))}

    def _activated(self, model: ModelVersion) -> ModelVersion:
        """Tell `on_activate` that `model` became active; returns it."""
        if self.on_activate is not None:
            self.on_activate(model)
        return model

    def _export(self, model: ModelVersion) -> None:
        if not self.export_dir:
            return
        directory = pathlib.Path(self.export_dir)
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"v{model.version}_{model.task}"
        (directory / f"{stem}.onnx").write_bytes(model.onnx)
        (directory / f"{stem}.manifest.json").write_bytes(model.manifest)


def _make_active(conn, task: str, version: int) -> None:
    """Inside a write transaction: retire the task's active version and make `version` active."""
    conn.execute("UPDATE models SET status = 'retired' WHERE task = ? AND status = 'active'", (task,))
    conn.execute("UPDATE models SET status = 'active' WHERE version = ?", (version,))
