"""Helpers of the fault tests: a real `nestor-cloud serve` process, a spool writer, store checks.

Everything talks 127.0.0.1 only; every loop has a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import yaml

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
CLOUD_TESTS = REPO / "tests" / "cloud"
if str(CLOUD_TESTS) not in sys.path:
    sys.path.insert(0, str(CLOUD_TESTS))

from cloud_brain.experience import store_db  # noqa: E402
from cloud_testlib import ACT_DIM, OBS_DIM, make_batch  # noqa: E402
from nestor_core import nestor_pb2  # noqa: E402
from nestor_core.experience import from_chunk  # noqa: E402

BIN = pathlib.Path(sys.executable).parent
# Popen options of a child process under test: output into its log, no stdin, its own session (a
# signal to the test's process group does not reach it; the test signals it alone).
DETACHED = {"stderr": subprocess.STDOUT, "stdin": subprocess.DEVNULL, "start_new_session": True}
TASK = "arm"


def wait_for(predicate, timeout: float, what: str, period: float = 0.1):
    """Poll `predicate` until truthy (returned) or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(period)


def write_task(directory: pathlib.Path) -> str:
    path = directory / "arm.yaml"
    path.write_text(f"name: {TASK}\nobs_dim: {OBS_DIM}\nact_dim: {ACT_DIM}\n")
    return str(path)


class CloudProcess:
    """`nestor-cloud serve` as a child process in its own session; kill -9 and restart on the same port/db.

    Args:
        workdir: holds the config, ready file and log.
        db_path: SQLite file of the cloud, or a PostgreSQL DSN (then `store.backend: postgres`).
        extra: more CloudConfig fields (tls, max_chunk_transitions, ...).
    """

    def __init__(self, workdir: pathlib.Path, db_path: str, extra: dict | None = None):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_path = str(db_path)
        self.config = {
            "address": "127.0.0.1:0",
            "db_path": self.db_path,
            "model_dir": "",
            "task_files": [write_task(self.workdir)],
            "max_workers": 256,
            "grace_seconds": 1.0,
            "initial_model": "cloud_testlib:initial_model",
            "consolidate": "cloud_testlib:run_round",
            "schedule": {"enabled": False},
            **(extra or {}),
        }
        if self.db_path.startswith("postgresql://"):
            self.config["store"] = {"backend": "postgres", "dsn": self.db_path, **self.config.get("store", {})}
        self.address = ""
        self.popen: subprocess.Popen | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def start(self, timeout: float = 30.0) -> str:
        """Start (on the port of the previous start, if any) and wait until it serves."""
        config = dict(self.config)
        if self.address:
            config["address"] = self.address
        config_path = self.workdir / "cloud.yaml"
        config_path.write_text(yaml.safe_dump(config))
        ready = self.workdir / "ready.json"
        ready.unlink(missing_ok=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(CLOUD_TESTS), os.environ.get("PYTHONPATH", "")]))
        self.starts += 1
        log = open(self.workdir / f"cloud-{self.starts}.log", "wb")  # noqa: SIM115 - owned by the child
        argv = [str(BIN / "nestor-cloud"), "serve", "--config", str(config_path), "--ready-file", str(ready)]
        argv += ["--log-level", "WARNING"]
        self.popen = subprocess.Popen(argv, stdout=log, env=env, cwd=REPO, **DETACHED)
        log.close()

        def up():
            if self.popen.poll() is not None:
                raise AssertionError(f"cloud exited with {self.popen.returncode}:\n{self.log_tail()}")
            return ready.exists() and json.loads(ready.read_text())["address"]

        self.address = wait_for(up, timeout, "the cloud to serve")
        return self.address

    def kill9(self) -> None:
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / f"cloud-{self.starts}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class SpoolWriter:
    """Appends `chunk`-transition batches to a spool every `period_s` from a thread (the policy node's role).

    Stops by itself after `max_transitions`, or when `stop()` is called.
    """

    def __init__(self, spool, robot_id: str, chunk: int = 10, period_s: float = 0.02, max_transitions: int = 10**6):
        self.spool = spool
        self.robot_id = robot_id
        self.chunk = chunk
        self.period_s = period_s
        self.max_transitions = max_transitions
        self.appended = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"writer-{robot_id}", daemon=True)

    def start(self) -> SpoolWriter:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set() and self.appended < self.max_transitions:
            n = min(self.chunk, self.max_transitions - self.appended)
            try:
                result = self.spool.append(make_batch(robot=self.robot_id, first_seq=self.spool.next_seq(), n=n))
            except Exception as err:  # a busy spool: retry on the next period, report at the end
                self.errors.append(f"{type(err).__name__}: {err}")
                self._stop.wait(self.period_s)
                continue
            assert result.stored and not result.dropped, result
            self.appended += n
            self._stop.wait(self.period_s)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        return self.appended


@contextlib.contextmanager
def streaming(spool, address: str, config, period_s: float):
    """Robot r1's uplink of `spool` to `address` in a thread, fed by a SpoolWriter of 10-transition chunks.

    Yields (uplink, writer); on exit the writer stops, then the uplink (joined within 10 s).
    """
    from nestor_robot.uplink import Uplink

    uplink = Uplink(spool, address, config)
    stop = threading.Event()
    thread = threading.Thread(target=uplink.run, args=(stop,), daemon=True)
    writer = SpoolWriter(spool, "r1", chunk=10, period_s=period_s).start()
    thread.start()
    try:
        yield uplink, writer
    finally:
        writer.stop()
        stop.set()
        thread.join(10)


def stored_chunks(db_path: str, robot_id: str) -> list[tuple[int, int, bytes]]:
    """(first_seq, count, blob) of a robot's stored chunks, through a separate connection."""
    if db_path.startswith("postgresql://"):
        conn = store_db.connect(db_path)
    else:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(
            "SELECT first_seq, count, chunk FROM chunks WHERE robot_id = ? ORDER BY first_seq", (robot_id,)
        ).fetchall()
    finally:
        conn.close()


def assert_exactly_once(db_path: str, robot_id: str, uploaded: int) -> None:
    """Assert uploaded == stored.

    Seqs 1..uploaded are each stored once, contiguous, no drops; every chunk parses and holds the
    seqs it claims (make_batch writes the seq into obs[:, 0]).
    """
    from cloud_brain.experience.store import ExperienceStore

    store = ExperienceStore(db_path)
    try:
        ranges = store.stored_seqs(robot_id)
        dropped = store.dropped_ranges(robot_id)
        record = store.robot(robot_id)
    finally:
        store.close()
    assert dropped == [], f"{robot_id}: dropped ranges {dropped}"
    expected = 1
    for first, count in ranges:
        assert first == expected, f"{robot_id}: chunk at seq {first}, expected {expected} (gap or duplicate)"
        expected += count
    assert expected - 1 == uploaded, f"{robot_id}: stored 1..{expected - 1}, uploaded {uploaded}"
    assert record is not None and record.last_seq == uploaded and record.transitions == uploaded
    for first, count, blob in stored_chunks(db_path, robot_id):
        batch = from_chunk(nestor_pb2.ExperienceChunk.FromString(blob), OBS_DIM, ACT_DIM)
        assert (batch.first_seq, len(batch)) == (first, count)
        assert batch.obs[:, 0].tolist() == list(range(first, first + count)), f"{robot_id}: corrupt chunk at {first}"


def drained(spool) -> bool:
    stats = spool.stats()
    return stats["depth_transitions"] == 0 and stats["acked_through"] == stats["next_seq"] - 1
