"""L3, the slowest level: a bounded long-term memory of experience, kept for good.

The experience store grows without bound and consolidation reads only its newest rows, so
without L3 the slow weights would drift toward whatever the fleet saw last (catastrophic
forgetting). L3 keeps at most `capacity_transitions` transitions, cut from stored chunks into
windows of `window` consecutive ticks (windows, not single ticks, because L2 unrolls the fast
levels over them). Every L2 round mixes a sample of it into its training data (replay).

Selection is weighted reservoir sampling (Efraimidis & Spirakis, A-Res): each window gets the
key u^(1/w), u ~ U(0, 1), and the reservoir keeps the windows with the largest keys. With all
weights equal this is plain reservoir sampling (a uniform sample of everything ever seen); a
larger weight makes a window proportionally more likely to stay. The weight is

    w = clip(surprise / mean_surprise, w_min, w_max) * (1 + novelty_weight * novelty / mean_novelty)

  * surprise: the window's mean L0 surprise (`ExperienceChunk.surprise`): what the fast memory
    could not yet predict;
  * novelty: distance from the window's features to the nearest window already in the
    reservoir, in a cheap feature space: mean joint positions (where in the workspace), mean
    effort / effort limit (what torque it took there) and mean tracking error. A payload or a
    weaker motor moves the effort feature at the same positions, so rare dynamics are far from
    the common ones and are not crowded out by many windows of the usual dynamics;
  * the means are running means over everything this task ever offered, so weights stay
    comparable across rounds. Keys are drawn once, at insertion (log key = log(u) / w).

Storage: two tables in the experience store's SQLite file (WAL, so the consolidation child can
update them while the server ingests): `l3_reservoir` (one row per window, arrays as an .npz
blob) and `l3_progress` (per task: last store row offered and the running means).
"""

from __future__ import annotations

import dataclasses
import io
import time

import numpy as np
from nestor_core.transaction import immediate_transaction

from cloud_brain.experience import store_db

SCHEMA = """
CREATE TABLE IF NOT EXISTS l3_reservoir (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT NOT NULL,
    robot_id TEXT NOT NULL,
    source_row INTEGER NOT NULL,
    tick_offset INTEGER NOT NULL,
    count INTEGER NOT NULL,
    surprise REAL NOT NULL,
    novelty REAL NOT NULL,
    weight REAL NOT NULL,
    log_key REAL NOT NULL,
    features BLOB NOT NULL,
    data BLOB NOT NULL,
    added_unix REAL NOT NULL,
    UNIQUE (task, source_row, tick_offset)
);
CREATE INDEX IF NOT EXISTS l3_by_key ON l3_reservoir (task, log_key);
CREATE TABLE IF NOT EXISTS l3_progress (
    task TEXT PRIMARY KEY,
    last_row INTEGER NOT NULL DEFAULT 0,
    offered INTEGER NOT NULL DEFAULT 0,
    surprise_sum REAL NOT NULL DEFAULT 0,
    novelty_sum REAL NOT NULL DEFAULT 0,
    novelty_count INTEGER NOT NULL DEFAULT 0
);
"""

_ARRAYS = ("obs", "action", "l1_read", "cost", "surprise")


@dataclasses.dataclass(frozen=True)
class ReservoirConfig:
    """L3 configuration.

    Attributes:
        capacity_transitions: bound on the transitions kept per task (N).
        window: consecutive ticks per reservoir item (the L2 unroll length is at most this).
        novelty_weight: weight of novelty in w (0 = surprise only).
        weight_min, weight_max: clip of the surprise factor of w.
        uniform: ignore surprise and novelty (w = 1): plain reservoir sampling, the ablation.
    """

    capacity_transitions: int = 20_000
    window: int = 50
    novelty_weight: float = 2.0
    weight_min: float = 0.1
    weight_max: float = 10.0
    uniform: bool = False

    def validate(self) -> ReservoirConfig:
        if self.window < 2:
            raise ValueError(f"window: must be >= 2, got {self.window}")
        if self.capacity_transitions < self.window:
            raise ValueError(
                f"capacity_transitions: must be >= window ({self.window}), got {self.capacity_transitions}"
            )
        if self.novelty_weight < 0:
            raise ValueError(f"novelty_weight: must be >= 0, got {self.novelty_weight}")
        if not 0 < self.weight_min <= self.weight_max:
            raise ValueError(f"weight_min/weight_max: need 0 < min <= max, got {self.weight_min}, {self.weight_max}")
        return self


@dataclasses.dataclass
class Window:
    """Consecutive transitions of one robot, as kept by L3.

    Attributes:
        task, robot_id: where it came from.
        source_row, offset: store row of the chunk and first tick inside it (the item's identity).
        obs [T, obs_dim], action [T, act_dim], l1_read [T, act_dim], cost [T], surprise [T].
    """

    task: str
    robot_id: str
    source_row: int
    offset: int
    obs: np.ndarray
    action: np.ndarray
    l1_read: np.ndarray
    cost: np.ndarray
    surprise: np.ndarray

    def __len__(self) -> int:
        return int(self.cost.shape[0])


def windows_of_batch(task: str, row: int, batch, window: int) -> list[Window]:
    """Cut one stored ExperienceBatch into full windows (a short tail is left out)."""
    out = []
    for start in range(0, len(batch) - window + 1, window):
        stop = start + window
        out.append(
            Window(
                task,
                batch.robot_id,
                row,
                start,
                batch.obs[start:stop],
                batch.action[start:stop],
                batch.slow_read[start:stop],
                batch.cost[start:stop],
                batch.surprise[start:stop],
            )
        )
    return out


def features(win: Window, effort_limit: np.ndarray | None = None) -> np.ndarray:
    """Cheap dynamics fingerprint: mean q, mean effort / limit, 5 x mean tracking error."""
    n = win.action.shape[1]
    limit = np.ones(n) if effort_limit is None else np.asarray(effort_limit, np.float64)
    q, q_ref = win.obs[:, :n], win.obs[:, 2 * n : 3 * n]
    return np.concatenate([q.mean(0), win.action.mean(0) / limit, 5.0 * (q_ref - q).mean(0)]).astype(np.float64)


def _pack(win: Window) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{name: getattr(win, name) for name in _ARRAYS})
    return buf.getvalue()


def _unpack(task: str, robot_id: str, row: int, offset: int, blob: bytes) -> Window:
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        return Window(task, robot_id, row, offset, **{name: data[name] for name in _ARRAYS})


class L3Reservoir:
    """The bounded, prioritised long-term memory of every task, in one SQLite file.

    Args:
        path: SQLite file (normally the experience store's).
        config: capacity, window and weighting.
        seed: seeds the reservoir keys (the same offers in the same order give the same set).
    """

    def __init__(self, path: str, config: ReservoirConfig = ReservoirConfig(), seed: int = 0, timeout: float = 30.0):
        self.config = config.validate()
        self.path = str(path)
        self._conn = store_db.connect(self.path, timeout=timeout)  # a SQLite file or a PostgreSQL DSN
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(SCHEMA)
        self._seed = int(seed)

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- writes -------------------------------------------------------------------------------

    def read_round(self, store, task: str, after_row: int, up_to_row: int) -> list[tuple[int, object]]:
        """The (row, batch) pairs a round and this reservoir's `update` need, read from the store once.

        That is every row of `task` in (min(after_row, last offered row), up_to_row]; the round
        keeps those after `after_row`, `update(..., rows=)` those after its last offered row.
        """
        return list(store.read_rows(task, min(after_row, self.last_row(task)), up_to_row))

    def round_inputs(self, store, task: str, after_row: int, up_to_row: int, replay: bool, effort_limit=None):
        """Step 1 of a round, the store's rows read once.

        Returns (the new (row, batch) pairs after `after_row`, the replay windows (drawn before the
        new rows are offered; none without `replay`), the update's stats, the reservoir's stats).
        """
        rows = self.read_round(store, task, after_row, up_to_row)
        replay_windows = self.windows(task) if replay else []
        update = self.update(store, task, up_to_row, effort_limit, rows=rows)
        return [(row, batch) for row, batch in rows if row > after_row], replay_windows, update, self.stats(task)

    def update(self, store, task: str, up_to_row: int | None = None, effort_limit=None, rows=None) -> dict:
        """Offer every stored chunk of `task` after the last offered row (up to `up_to_row`).

        rows: (row, batch) pairs already read (`read_round`), covering every row after the last
        offered one up to `up_to_row`; the store is then not read again.
        """
        last = self.last_row(task)
        offered, newest = [], last
        if rows is None:
            rows = store.read_rows(task, last, up_to_row)
        for row, batch in rows:
            if row <= last:
                continue
            offered.extend(windows_of_batch(task, row, batch, self.config.window))
            newest = row
        stats = self.add(task, offered, effort_limit)
        self._conn.execute("UPDATE l3_progress SET last_row = ? WHERE task = ?", (newest, task))
        return {**stats, "rows_from": last, "rows_to": newest}

    def add(self, task: str, windows: list[Window], effort_limit=None) -> dict:
        """Offer windows to the reservoir; keeps the largest keys within capacity. Returns stats."""
        cfg = self.config
        with immediate_transaction(self._conn):
            self._conn.execute("INSERT OR IGNORE INTO l3_progress (task) VALUES (?)", (task,))
            offered, s_sum, n_sum, n_count = self._conn.execute(
                "SELECT offered, surprise_sum, novelty_sum, novelty_count FROM l3_progress WHERE task = ?", (task,)
            ).fetchone()
            kept = [
                np.frombuffer(b, np.float64)
                for (b,) in self._conn.execute("SELECT features FROM l3_reservoir WHERE task = ?", (task,))
            ]
            bank = np.stack(kept) if kept else np.zeros((0, 0))
            inserted = 0
            for win in windows:
                feat = features(win, effort_limit)
                surprise = float(np.mean(win.surprise))
                offered += 1
                s_sum += surprise
                novelty = float(np.min(np.linalg.norm(bank - feat, axis=1))) if len(bank) else 0.0
                if len(bank):
                    n_sum += novelty
                    n_count += 1
                if cfg.uniform:
                    weight = 1.0
                else:
                    s_rel = surprise / max(s_sum / offered, 1e-12)
                    n_rel = novelty / max(n_sum / n_count, 1e-12) if n_count else 0.0
                    weight = float(np.clip(s_rel, cfg.weight_min, cfg.weight_max)) * (1.0 + cfg.novelty_weight * n_rel)
                rng = np.random.default_rng([self._seed, win.source_row, win.offset])
                log_key = float(np.log(max(rng.random(), 1e-300)) / weight)
                cursor = self._conn.execute(
                    "INSERT OR IGNORE INTO l3_reservoir (task, robot_id, source_row, tick_offset, count, surprise,"
                    " novelty, weight, log_key, features, data, added_unix)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        task,
                        win.robot_id,
                        win.source_row,
                        win.offset,
                        len(win),
                        surprise,
                        novelty,
                        weight,
                        log_key,
                        feat.tobytes(),
                        _pack(win),
                        time.time(),
                    ),
                )
                if cursor.rowcount:
                    inserted += 1
                    bank = feat[None] if not len(bank) else np.vstack([bank, feat])
            evicted = self._evict(task)
            self._conn.execute(
                "UPDATE l3_progress SET offered = ?, surprise_sum = ?, novelty_sum = ?, novelty_count = ?"
                " WHERE task = ?",
                (offered, s_sum, n_sum, n_count, task),
            )
        items, transitions = self.size(task)
        return {
            "offered": len(windows),
            "inserted": inserted,
            "evicted": evicted,
            "items": items,
            "transitions": transitions,
        }

    def _evict(self, task: str) -> int:
        """Drop the smallest keys until the task's transitions fit the capacity."""
        rows = self._conn.execute(
            "SELECT id, count FROM l3_reservoir WHERE task = ? ORDER BY log_key DESC", (task,)
        ).fetchall()
        total, drop = 0, []
        for row_id, count in rows:
            total += count
            if total > self.config.capacity_transitions:
                drop.append((row_id,))
        self._conn.executemany("DELETE FROM l3_reservoir WHERE id = ?", drop)
        return len(drop)

    # --- reads --------------------------------------------------------------------------------

    def last_row(self, task: str) -> int:
        row = self._conn.execute("SELECT last_row FROM l3_progress WHERE task = ?", (task,)).fetchone()
        return int(row[0]) if row else 0

    def size(self, task: str) -> tuple[int, int]:
        """(items, transitions) kept for `task`."""
        row = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(count), 0) FROM l3_reservoir WHERE task = ?", (task,)
        ).fetchone()
        return int(row[0]), int(row[1])

    def windows(self, task: str, limit: int | None = None, seed: int | None = None) -> list[Window]:
        """Kept windows of `task`; with `limit`, a uniform sample of that many (seeded).

        Uniform is right here: the priorities already decided what is kept.
        """
        rows = self._conn.execute(
            "SELECT id, robot_id, source_row, tick_offset FROM l3_reservoir WHERE task = ? ORDER BY id", (task,)
        ).fetchall()
        if limit is not None and limit < len(rows):
            pick = np.random.default_rng(seed).choice(len(rows), size=limit, replace=False)
            rows = [rows[i] for i in sorted(pick)]
        out = []
        for row_id, robot_id, source_row, offset in rows:
            (blob,) = self._conn.execute("SELECT data FROM l3_reservoir WHERE id = ?", (row_id,)).fetchone()
            out.append(_unpack(task, robot_id, source_row, offset, blob))
        return out

    def stats(self, task: str) -> dict:
        """Size and priority statistics (for round metrics)."""
        items, transitions = self.size(task)
        row = self._conn.execute(
            "SELECT AVG(surprise), AVG(novelty), AVG(weight), MIN(source_row), MAX(source_row)"
            " FROM l3_reservoir WHERE task = ?",
            (task,),
        ).fetchone()
        return {
            "items": items,
            "transitions": transitions,
            "mean_surprise": row[0],
            "mean_novelty": row[1],
            "mean_weight": row[2],
            "oldest_row": row[3],
            "newest_row": row[4],
        }


def read_round_inputs(request: dict, replay: bool, effort_limit, store_cls, reservoir_cls, reservoir_config) -> tuple:
    """`L3Reservoir.round_inputs` of a round request, on connections of its own (closed before returning).

    store_cls, reservoir_cls: ExperienceStore and L3Reservoir (or stand-ins), each opened on
    ``request["db_path"]``; the reservoir's seed is ``request["l3_seed"]`` (default 0).
    """
    after_row, up_to_row = int(request.get("experience_from", 0)), int(request["experience_to"])
    store = store_cls(request["db_path"])
    reservoir = reservoir_cls(request["db_path"], reservoir_config, seed=int(request.get("l3_seed", 0)))
    try:
        return reservoir.round_inputs(store, request["task"], after_row, up_to_row, replay, effort_limit)
    finally:
        reservoir.close()
        store.close()
