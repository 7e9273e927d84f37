"""The log of consolidation rounds (the `rounds` table): one row a round, written as it starts and ends.

`RoundLog` is part of `ExperienceStore` (its transaction and query), kept here by concept: the
scheduler records rounds in the store's database, so a restarted server (or another replica)
sees which round was running and from which row the next one starts.
"""

from __future__ import annotations

import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT NOT NULL,
    started_unix REAL NOT NULL,
    finished_unix REAL NOT NULL,
    parent_version INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    accepted INTEGER NOT NULL DEFAULT 0,
    experience_from INTEGER NOT NULL,
    experience_to INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT ''
);
"""

# `rounds.error` while a round runs; a server that starts and finds it knows its predecessor crashed.
ROUND_RUNNING = "running"


class RoundLog:
    """The store's round methods; needs `transaction()` and `query()` (ExperienceStore has them)."""

    def record_round(
        self,
        task: str,
        started_unix: float,
        parent_version: int,
        experience_from: int,
        experience_to: int,
        version: int = 0,
        accepted: bool = False,
        reason: str = "",
        error: str = "",
    ) -> int:
        """Record a finished (or failed) consolidation round; returns its id."""
        with self.transaction() as conn:
            (row_id,) = conn.execute(
                "INSERT INTO rounds (task, started_unix, finished_unix, parent_version, version, accepted,"
                " experience_from, experience_to, reason, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    task,
                    started_unix,
                    time.time(),
                    parent_version,
                    version,
                    int(accepted),
                    experience_from,
                    experience_to,
                    reason,
                    error,
                ),
            ).fetchall()[0]
            return int(row_id)

    def start_round(
        self, task: str, started_unix: float, parent_version: int, experience_from: int, experience_to: int
    ) -> int:
        """Record a round as running (error = ROUND_RUNNING) before it starts; returns its id."""
        with self.transaction() as conn:
            (row_id,) = conn.execute(
                "INSERT INTO rounds (task, started_unix, finished_unix, parent_version, experience_from,"
                " experience_to, error) VALUES (?, ?, 0, ?, ?, ?, ?) RETURNING id",
                (task, started_unix, parent_version, experience_from, experience_to, ROUND_RUNNING),
            ).fetchall()[0]
            return int(row_id)

    def finish_round(
        self, round_id: int, version: int = 0, accepted: bool = False, reason: str = "", error: str = ""
    ) -> None:
        """Record how a started round ended (error empty = it produced `version`)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE rounds SET finished_unix = ?, version = ?, accepted = ?, reason = ?, error = ? WHERE id = ?",
                (time.time(), version, int(accepted), reason, error, round_id),
            )

    def interrupt_running_rounds(self, error: str, except_tasks=()) -> list[tuple[str, int]]:
        """Mark rounds still recorded as running (their server died) with `error`; returns (task, from).

        except_tasks: tasks whose round another live replica is running now (it holds their lease).
        """
        skip = sorted(set(except_tasks))
        guard = f" AND task NOT IN ({', '.join('?' * len(skip))})" if skip else ""
        with self.transaction() as conn:
            rows = conn.execute(
                f"SELECT task, experience_from FROM rounds WHERE error = ?{guard} ORDER BY id", (ROUND_RUNNING, *skip)
            ).fetchall()
            conn.execute(
                f"UPDATE rounds SET error = ?, finished_unix = ? WHERE error = ?{guard}",
                (error, time.time(), ROUND_RUNNING, *skip),
            )
        return [(task, int(first)) for task, first in rows]

    def round_count(self, task: str | None = None, include_failed: bool = False) -> int:
        """Consolidation rounds recorded (of `task` when given); failed ones only on request."""
        sql, params = "SELECT COUNT(*) FROM rounds WHERE 1 = 1", []
        if task is not None:
            sql += " AND task = ?"
            params.append(task)
        if not include_failed:
            sql += " AND error = ''"
        return int(self.query(sql, tuple(params))[0][0])

    def last_round_row(self, task: str) -> int:
        """experience_to of the task's last recorded round (successful or not); 0 when none."""
        row = self.query("SELECT MAX(experience_to) FROM rounds WHERE task = ? AND error = ''", (task,))
        return int(row[0][0] or 0)
