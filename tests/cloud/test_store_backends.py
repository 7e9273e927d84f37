"""What the PostgreSQL backend adds: config, schema versions, errors, concurrent replicas, leases.

Every test runs against a real server (tests/pg_testlib.py); those marked with `store_target`
run on both backends.
"""

import socket
import subprocess
import sys
import threading

import pytest
from cloud_brain.config import ConfigError, config_from_dict
from cloud_brain.experience import lease, store_db, store_schema
from cloud_brain.experience.store import ExperienceStore
from cloud_brain.models.registry import ModelRegistry
from cloud_testlib import make_batch


def test_schema_is_versioned_and_a_newer_database_is_refused(store_target):
    store = ExperienceStore(store_target)
    assert store.schema_version == store_schema.LATEST[store.backend]
    with store.transaction() as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (store.schema_version + 1,))
    store.close()
    with pytest.raises(store_db.SchemaError, match=r"schema version \d+, newer than this nestor's \d+"):
        ExperienceStore(store_target)


def test_a_sqlite_file_made_before_versioning_is_adopted(tmp_path):
    import sqlite3

    from cloud_brain.experience.store_schema import VERSION_1 as SCHEMA

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.execute(
        "INSERT INTO robots (robot_id, task, last_seq, first_contact_unix, last_contact_unix)"
        " VALUES ('r1', 'arm', 5, 0, 0)"
    )
    conn.commit()
    conn.close()
    store = ExperienceStore(path)
    assert store.schema_version == store_schema.LATEST["sqlite"]
    assert store.robot("r1").last_seq == 5
    store.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_one_clear_line(tmp_path, task_files):
    dsn = f"postgresql://nestor:secret@127.0.0.1:{_closed_port()}/nestor"
    with pytest.raises(store_db.StoreUnavailable, match="cannot reach PostgreSQL") as err:
        ExperienceStore(dsn, timeout=2)
    assert "secret" not in str(err.value)
    config = tmp_path / "cloud.yaml"
    config.write_text(
        f"address: 127.0.0.1:0\nmodel_dir: ''\ntask_files: {task_files}\nschedule: {{enabled: false}}\n"
        f"initial_model: cloud_testlib:initial_model\nstore: {{backend: postgres, dsn: 'env:NESTOR_T_DSN',"
        " connect_timeout_seconds: 2}\n"
    )
    env = {"NESTOR_T_DSN": dsn, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "cloud_brain.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach PostgreSQL at postgresql://nestor:***@127.0.0.1" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "store,message",
    [
        ({"backend": "mysql"}, "store.backend: must be one of sqlite, postgres"),
        ({"backend": "postgres"}, "store.dsn: must be set"),
        ({"backend": "postgres", "dsn": "env:NESTOR_UNSET_DSN_VAR"}, "store.dsn: environment variable NESTOR_UNSET"),
        ({"backend": "postgres", "dsn": "mysql://x"}, "store.dsn: expected postgresql://"),
        ({"lease_seconds": 0}, "store.lease_seconds: must be > 0"),
    ],
)
def test_store_config_errors_name_the_field(store, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        config_from_dict({"store": store})


def test_dsn_from_the_environment(monkeypatch):
    monkeypatch.setenv("NESTOR_T_DSN", "postgresql://u@127.0.0.1:1/db")
    config = config_from_dict({"store": {"backend": "postgres", "dsn": "env:NESTOR_T_DSN"}})
    assert config.store_target() == "postgresql://u@127.0.0.1:1/db"


def test_two_replicas_appending_the_same_robot_store_each_seq_once(pg_dsn):
    """Two stores (two replicas' connections) get the same robot's chunks, overlapping and resent."""
    stores = [ExperienceStore(pg_dsn), ExperienceStore(pg_dsn)]
    n, chunks = 10, 60
    errors = []

    def send(store, order):
        for i in order:
            try:
                store.append(make_batch(first_seq=1 + i * n, n=n))
            except Exception as err:  # noqa: BLE001 - a gap is expected when this one runs ahead
                errors.append(type(err).__name__)

    # Both replicas walk the whole stream; whoever comes second sees duplicates, none is stored twice.
    for _ in range(3):
        threads = [threading.Thread(target=send, args=(s, range(chunks))) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    ranges = stores[0].stored_seqs("r1")
    expected = 1
    for first, count in ranges:
        assert first == expected
        expected += count
    assert expected - 1 == n * chunks
    assert stores[1].robot("r1").transitions == n * chunks
    assert set(errors) <= {"SequenceGapError"}
    for s in stores:
        s.close()


def test_row_ids_are_in_commit_order_across_replicas(pg_dsn):
    """The consolidation cursor reads rows (from, to]: a row committed later never gets a lower id."""
    stores = [ExperienceStore(pg_dsn) for _ in range(2)]
    seen_max = []

    def writer(store, robot):
        for i in range(40):
            store.append(make_batch(robot=robot, first_seq=1 + i * 5, n=5))
            seen_max.append(store.max_row_id())

    threads = [threading.Thread(target=writer, args=(s, f"r{k}")) for k, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = [row[0] for row in stores[0].query("SELECT id FROM chunks ORDER BY id")]
    assert ids == list(range(1, 81))  # no holes: no transaction rolled back after taking an id
    for s in stores:
        s.close()


def test_store_reconnects_after_a_server_restart(pg_server, pg_dsn):
    if not hasattr(pg_server, "restart"):
        pytest.skip("external server: not restarted by tests")
    store = ExperienceStore(pg_dsn, timeout=5)
    store.append(make_batch(first_seq=1, n=5))
    pg_server.restart("immediate")
    # The first statement on the dead connection says UNAVAILABLE (ingest: the robot resends)...
    with pytest.raises(store_db.StoreUnavailable):
        store.append(make_batch(first_seq=6, n=5))
    # ...and the next one reconnects; nothing committed was lost, nothing half-done was kept.
    assert store.append(make_batch(first_seq=6, n=5)).stored == 5
    assert store.stored_seqs("r1") == [(1, 5), (6, 5)]
    store.close()


def test_lease_one_holder_at_a_time_and_taken_over_after_expiry(store_target):
    a, b = ExperienceStore(store_target), ExperienceStore(store_target)
    assert lease.try_acquire(a, "round:arm", "A", ttl=30, now=1000)
    assert not lease.try_acquire(b, "round:arm", "B", ttl=30, now=1010)
    assert lease.try_acquire(a, "round:arm", "A", ttl=30, now=1020)  # renewal
    assert lease.holder_of(b, "round:arm", now=1040) == "A"
    assert lease.try_acquire(b, "round:arm", "B", ttl=30, now=1051)  # A stopped renewing: expired
    assert lease.holder_of(a, "round:arm", now=1052) == "B"
    lease.release(a, "round:arm", "A")  # not A's any more: no effect
    assert lease.holder_of(a, "round:arm", now=1052) == "B"
    lease.release(b, "round:arm", "B")
    assert lease.holder_of(a, "round:arm") is None
    a.close()
    b.close()


def test_registry_rows_are_shared_by_replicas(pg_dsn):
    """A version registered through one replica's store is what another replica reads as active."""
    one, two = ModelRegistry(pg_dsn), ModelRegistry(pg_dsn)
    v1 = one.register("arm", b"onnx-1", {"inputs": {}}, status="active")
    v2 = two.register("arm", b"onnx-2", {"inputs": {}}, parent=v1.version, status="active")
    assert one.active("arm").version == v2.version == 2 and one.active("arm").onnx == b"onnx-2"
    assert [m.version for m in one.list("arm")] == [1, 2]
    one.store.close()
    two.store.close()


def test_a_postgres_store_copies_into_a_sqlite_file(pg_dsn, tmp_path):
    from cloud_brain.experience.store_copy import copy_store

    source = ExperienceStore(pg_dsn)
    source.append(make_batch(first_seq=1, n=5))
    source.append(make_batch(first_seq=9, n=2, dropped_before=3))
    registry = ModelRegistry(source)
    registry.register("arm", b"onnx", {"inputs": {}}, status="active")
    source.record_round("arm", 0.0, 1, 0, 2, version=1, accepted=True, reason="r")
    source.close()
    counts = copy_store(pg_dsn, str(tmp_path / "copy.db"))
    assert counts["chunks"] == 2 and counts["models"] == 1 and counts["rounds"] == 1
    copy = ExperienceStore(tmp_path / "copy.db")
    assert copy.stored_seqs("r1") == [(1, 5), (9, 2)] and copy.dropped_ranges("r1") == [(6, 3)]
    assert [b.obs[:, 0].tolist() for b in copy.read_batches("arm")] == [[1, 2, 3, 4, 5], [9, 10]]
    assert ModelRegistry(copy).active("arm").onnx == b"onnx"
    copy.close()


def test_read_robot_trims_to_the_seq_range_on_both_backends(store_target, monkeypatch):
    """The exports' read path: a robot's batches by seq, trimmed to [first_seq, last_seq], paged."""
    from cloud_brain.experience import store as store_module

    monkeypatch.setattr(store_module, "_READ_PAGE", 2)  # several pages from a few chunks
    store = ExperienceStore(store_target)
    try:
        for i in range(5):
            store.append(make_batch(first_seq=1 + 10 * i, n=10))
        store.append(make_batch(robot="r2", first_seq=1, n=10))

        def seqs(*args):
            return [int(s) for batch in store.read_robot("r1", *args) for s in batch.obs[:, 0]]

        assert seqs() == list(range(1, 51))
        assert seqs(15, 32) == list(range(15, 33))
        assert seqs(41) == list(range(41, 51))
        assert seqs(51) == [] and seqs(60, 70) == []
        batches = list(store.read_robot("r1", 15, 32))
        assert [(b.first_seq, len(b)) for b in batches] == [(15, 6), (21, 10), (31, 2)]
        assert all(b.robot_id == "r1" for b in batches)
    finally:
        store.close()
