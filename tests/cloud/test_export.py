"""`nestor-cloud export`: MCAP read back with the MCAP ROS 2 decoder, Parquet with the loader.

Every exported value is checked against the store's batches (float32 values widen exactly to
float64, so equality is exact).
"""

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from cloud_brain.experience.dataset import DatasetError, load
from cloud_brain.experience.export_mcap import TOPICS
from cloud_brain.experience.store import ExperienceStore
from mcap_testlib import read_mcap
from nestor_core.experience import ExperienceBatch
from nestor_core.ros2_msgdefs import FIELDS, msgdef

REPO = pathlib.Path(__file__).resolve().parents[2]
CRANE = REPO / "config" / "tasks" / "crane.yaml"
CLI = [sys.executable, "-m", "cloud_brain.cli"]
T0 = 1_780_000_000.0  # robot clock of seq 1


def _batch(first_seq, n, version, rng, dropped_before=0):
    seqs = np.arange(first_seq, first_seq + n)
    return ExperienceBatch(
        robot_id="robot0",
        task="crane",
        first_seq=first_seq,
        obs=rng.normal(size=(n, 6)).astype(np.float32),  # crane: 1 controlled + 1 passive joint
        action=rng.normal(size=(n, 1)).astype(np.float32),
        cost=rng.random(n).astype(np.float32),
        fast_read=rng.normal(size=(n, 1)).astype(np.float32),
        slow_read=rng.normal(size=(n, 1)).astype(np.float32),
        surprise=rng.random(n).astype(np.float32),
        stamp=T0 + (seqs - 1) * 0.01,
        model_versions=np.full(n, version, np.int64),
        dropped_before=dropped_before,
    )


@pytest.fixture
def exported(tmp_path):
    """A store with 3 chunks of robot0 (versions 1, 1, 2; seqs 41..50 declared dropped) and one of robot1."""
    rng = np.random.default_rng(7)
    db = tmp_path / "cloud.db"
    store = ExperienceStore(db)
    batches = [_batch(1, 25, 1, rng), _batch(26, 15, 1, rng), _batch(51, 30, 2, rng, dropped_before=10)]
    for b in batches:
        store.append(b)
    other = _batch(1, 5, 1, rng)
    other.robot_id = "robot1"
    store.append(other)
    store.close()
    config = tmp_path / "cloud.yaml"
    config.write_text(yaml.safe_dump({"db_path": str(db), "task_files": [str(CRANE)]}))
    events = tmp_path / "events.jsonl"
    shift = {
        "robot_id": "robot0",
        "type": "payload",
        "magnitude": 2.0,
        "at_s": 0.3,
        "link": "pole",
        "t": 0.3,
        "tick": 30,
        "stamp": T0 + 0.295,
    }
    events.write_text(json.dumps(shift) + "\n" + json.dumps({**shift, "robot_id": "robot1"}) + "\n")
    return {"config": config, "db": db, "batches": batches, "events": events, "shift": shift, "tmp": tmp_path}


def _export(*args):
    proc = subprocess.run([*CLI, "export", *map(str, args)], capture_output=True, text=True, timeout=120)
    return proc


def _export_robot0(fmt, out, config, *args):
    """`nestor-cloud export --format FMT --robot robot0 --out OUT --config CONFIG ARGS...`."""
    return _export("--format", fmt, "--robot", "robot0", "--out", out, "--config", config, *args)


def _rows(batches, first, last):
    """seq -> (batch, row) of the stored transitions in [first, last]."""
    out = {}
    for b in batches:
        for i in range(len(b)):
            if first <= b.first_seq + i <= last:
                out[b.first_seq + i] = (b, i)
    return out


def test_mcap_export_every_value_matches_the_store(exported):
    out = exported["tmp"] / "robot0.mcap"
    proc = _export_robot0("mcap", out, exported["config"], "--events", exported["events"], "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    rows = _rows(exported["batches"], 1, 80)
    assert (summary["first_seq"], summary["last_seq"], summary["transitions"]) == (1, 80, len(rows)) == (1, 80, 70)

    by_topic, metadata = read_mcap(out)
    assert set(by_topic) == {f"/robot0/{t}" for t in TOPICS}
    for topic, datatype in TOPICS.items():
        assert {name for name, _, _ in by_topic[f"/robot0/{topic}"]} == {datatype}
    for topic in (
        "joint_states",
        "target",
        "effort_controller/commands",
        "cost",
        "nestor/fast_read",
        "nestor/l1_read",
        "nestor/surprise",
    ):
        assert [m.sequence for _, m, _ in by_topic[f"/robot0/{topic}"]] == sorted(rows), topic
    for _, message, js in by_topic["/robot0/joint_states"]:
        batch, i = rows[message.sequence]
        ns = round(batch.stamp[i] * 1e9)
        assert message.log_time == message.publish_time == ns
        assert (js.header.stamp.sec, js.header.stamp.nanosec) == divmod(ns, 1_000_000_000)
        assert list(js.name) == ["slider_to_cart", "cart_to_pole"]
        obs = batch.obs[i].astype(np.float64)
        assert list(js.position) == [obs[0], obs[4]] and list(js.velocity) == [obs[1], obs[5]]
    checks = {
        "target": lambda m, b, i: list(m.position) == [b.obs[i, 2]] and list(m.velocity) == [b.obs[i, 3]],
        "effort_controller/commands": lambda m, b, i: list(m.data) == b.action[i].tolist(),
        "cost": lambda m, b, i: m.data == float(b.cost[i]),
        "nestor/fast_read": lambda m, b, i: list(m.data) == b.fast_read[i].tolist(),
        "nestor/l1_read": lambda m, b, i: list(m.data) == b.slow_read[i].tolist(),
        "nestor/surprise": lambda m, b, i: list(m.data) == [float(b.surprise[i])],
    }
    for topic, check in checks.items():
        for _, message, decoded in by_topic[f"/robot0/{topic}"]:
            batch, i = rows[message.sequence]
            assert check(decoded, batch, i), (topic, message.sequence)
    versions = [(m.sequence, d.data) for _, m, d in by_topic["/robot0/nestor/model_version"]]
    assert versions == [(1, 1), (51, 2)]
    ((_, event_message, event),) = by_topic["/robot0/sim/events"]
    assert json.loads(event.data) == exported["shift"]  # robot1's event is not in robot0's file
    assert event_message.log_time == round(exported["shift"]["stamp"] * 1e9)
    nestor = metadata["nestor"]
    assert (nestor["robot_id"], nestor["task"], nestor["first_seq"], nestor["last_seq"]) == (
        "robot0",
        "crane",
        "1",
        "80",
    )
    assert json.loads(nestor["dropped_ranges"]) == [[41, 10]]


def test_mcap_seq_and_time_ranges(exported):
    out = exported["tmp"] / "range.mcap"
    assert _export_robot0("mcap", out, exported["config"], "--from-seq", 20, "--to-seq", 60).returncode == 0
    by_topic, _ = read_mcap(out)
    assert [m.sequence for _, m, _ in by_topic["/robot0/cost"]] == [*range(20, 41), *range(51, 61)]
    assert [(m.sequence, d.data) for _, m, d in by_topic["/robot0/nestor/model_version"]] == [(20, 1), (51, 2)]
    # stamps of seqs 31..55 (inclusive), through the robot clock.
    since, until = T0 + 30 * 0.01 - 1e-6, T0 + 54 * 0.01 + 1e-6
    assert (
        _export_robot0(
            "mcap", out, exported["tmp"] / "none.yaml", "--db", exported["db"], "--since", since, "--until", until
        ).returncode
        == 0
    )
    by_topic, _ = read_mcap(out)
    assert [m.sequence for _, m, _ in by_topic["/robot0/cost"]] == [*range(31, 41), *range(51, 56)]
    # Without the task file the joints get generic names.
    assert list(by_topic["/robot0/joint_states"][0][2].name) == ["joint_0", "passive_0"]


def test_parquet_round_trip(exported):
    out = exported["tmp"] / "robot0.parquet"
    proc = _export_robot0("parquet", out, exported["config"], "--events", exported["events"], "--to-seq", 70)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"60 transitions of robot0 \(seq 1\.\.70", proc.stdout)
    data = load(out)
    rows = _rows(exported["batches"], 1, 70)
    assert data.seq.tolist() == sorted(rows)
    for k, seq in enumerate(data.seq):
        batch, i = rows[seq]
        np.testing.assert_array_equal(data.obs[k], batch.obs[i])
        np.testing.assert_array_equal(data.action[k], batch.action[i])
        np.testing.assert_array_equal(data.fast_read[k], batch.fast_read[i])
        np.testing.assert_array_equal(data.l1_read[k], batch.slow_read[i])
        assert (data.cost[k], data.surprise[k], data.stamp[k], data.model_version[k]) == (
            batch.cost[i],
            batch.surprise[i],
            batch.stamp[i],
            batch.model_versions[i],
        )
    assert data.obs.dtype == np.float32 and data.obs.shape == (60, 6)
    assert data.meta["controlled_joints"] == ["slider_to_cart"] and data.meta["passive_joints"] == ["cart_to_pole"]
    np.testing.assert_array_equal(data.block("q_p")[:, 0], data.obs[:, 4])
    assert data.meta["dropped_ranges"] == [[41, 10]] and data.meta["shift_events"] == [exported["shift"]]
    assert set(data[3]) >= {"obs", "action", "cost"}


def test_bad_arguments_are_one_line_errors(exported):
    base = ["--format", "mcap", "--out", exported["tmp"] / "x.mcap", "--config", exported["config"]]
    for args, message in [
        (["--robot", "nobody"], "--robot: no experience stored for 'nobody'"),
        (["--robot", "robot0", "--from-seq", 0], "from_seq: must be >= 1"),
        (["--robot", "robot0", "--from-seq", 9, "--to-seq", 3], "to_seq: 3 is before from_seq 9"),
        (["--robot", "robot0", "--from-seq", 41, "--to-seq", 50], "robot: no stored transition"),
        (["--robot", "robot0", "--events", exported["tmp"] / "missing.jsonl"], "events: cannot read"),
    ]:
        proc = _export(*base, *args)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (exported["tmp"] / "x.mcap").exists() and not (exported["tmp"] / "x.mcap.part").exists()
    garbage = exported["tmp"] / "garbage.parquet"
    garbage.write_bytes(b"PAR1")
    with pytest.raises(Exception):  # noqa: B017  (pyarrow's own error for a broken file)
        load(garbage)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"seq": [1]}), exported["tmp"] / "plain.parquet")
    with pytest.raises(DatasetError, match="no 'nestor' schema metadata"):
        load(exported["tmp"] / "plain.parquet")


def _msg_fields(text: str) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    out = []
    for line in filter(None, lines):
        kind, name, *rest = line.split()
        if "=" in name or (rest and rest[0].startswith("=")):
            continue  # constants
        out.append(f"{kind} {name}")
    return out


@pytest.mark.parametrize("datatype", sorted(FIELDS))
def test_embedded_msgdefs_match_the_installed_ros_packages(datatype):
    pkg, _, name = datatype.split("/")
    share = pathlib.Path(sys.prefix) / "share" / pkg / "msg" / f"{name}.msg"
    assert share.is_file(), f"ROS 2 message package {pkg} not installed"
    assert _msg_fields(FIELDS[datatype]) == _msg_fields(share.read_text())
    assert msgdef(datatype).startswith(FIELDS[datatype])
