"""The robot-side bag: raw messages to MCAP off the tick path, read back with the MCAP ROS 2 decoder."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from mcap_testlib import read_mcap

NESTOR = Path(sys.executable).parent / "nestor"


def _read(path):
    return read_mcap(path)[0]


def test_bag_writes_serialized_messages_that_decode_back(tmp_path):
    from nestor_robot.bag import Bag
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64

    bag = Bag(str(tmp_path / "b.mcap"), capacity=1000)
    states = bag.add_topic("/r/joint_states", "sensor_msgs/msg/JointState")
    cost = bag.add_topic("/r/cost", "std_msgs/msg/Float64")
    assert bag.add_topic("/r/cost", "std_msgs/msg/Float64") == cost
    for i in range(50):
        msg = JointState(name=["a", "b"], position=[float(i), -float(i)], velocity=[0.5, 0.25])
        msg.header.stamp.sec = i
        assert bag.put(states, serialize_message(msg), log_time_ns=1_000 + i)
        assert bag.put(cost, serialize_message(Float64(data=i / 10)), log_time_ns=1_000 + i)
    stats = bag.close()
    assert bag.close() == stats  # safe twice
    assert (stats["written"], stats["dropped"]) == (100, 0)
    assert not bag.put(cost, b"late")  # closed: refused and counted
    topics = _read(tmp_path / "b.mcap")
    js = topics["/r/joint_states"]
    assert [m.sequence for _, m, _ in js] == list(range(1, 51))
    assert [(d.header.stamp.sec, list(d.position), list(d.name)) for _, _, d in js] == [
        (i, [float(i), -float(i)], ["a", "b"]) for i in range(50)
    ]
    assert [m.log_time for _, m, _ in topics["/r/cost"]] == [1_000 + i for i in range(50)]
    assert [d.data for _, _, d in topics["/r/cost"]] == [i / 10 for i in range(50)]


def test_full_queue_drops_and_counts(tmp_path):
    from nestor_robot.bag import Bag

    bag = Bag(str(tmp_path / "b.mcap"), capacity=5)
    channel = bag.add_topic("/r/cost", "std_msgs/msg/Float64")
    payload = b"\x00\x01\x00\x00" + b"\x00" * 8  # CDR header + float64 0.0
    with bag._lock:  # the writer thread cannot write meanwhile
        accepted = sum(bag.put(channel, payload) for _ in range(20))
    stats = bag.close()
    assert accepted <= 6 and stats["dropped"] == 20 - accepted
    assert stats["written"] == accepted == len(_read(tmp_path / "b.mcap")["/r/cost"])
    with pytest.raises(ValueError, match="capacity: must be >= 1"):
        Bag(str(tmp_path / "c.mcap"), capacity=0)


@pytest.mark.slow
@pytest.mark.skipif(not (Path(sys.executable).parent / "sim_bridge").exists(), reason="nestor_sim not installed")
def test_record_option_bags_the_robots_topics(tmp_path):
    from policy_models import export_models

    model = export_models(tmp_path, count=1)[0]
    env = dict(
        os.environ,
        ROS_DOMAIN_ID=str(random.Random(os.getpid() ^ 0xBA6).randint(1, 100)),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
    )
    run_dir = tmp_path / "run"
    argv = [str(NESTOR), "robot", "--robot-id", "rec0", "--record", "--duration", "20", "--run-dir", str(run_dir)]
    argv += ["--initial-model", str(model), "--cloud", "127.0.0.1:9", "--shift", "payload:2.0@1"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    robot_dir = run_dir / "robots" / "rec0"
    bag = robot_dir / "recording.mcap"
    stats = json.loads((robot_dir / "recording.mcap.json").read_text())
    topics = _read(bag)
    assert stats["written"] == sum(len(v) for v in topics.values())
    types = {topic: {name for name, _, _ in msgs} for topic, msgs in topics.items()}
    assert types["/rec0/joint_states"] == {"sensor_msgs/msg/JointState"}
    assert types["/rec0/effort_controller/commands"] == {"std_msgs/msg/Float64MultiArray"}
    assert types["/rec0/cost"] == {"std_msgs/msg/Float64"}
    assert types["/rec0/policy/status"] == {"diagnostic_msgs/msg/DiagnosticArray"}
    ticks = json.loads((robot_dir / "policy_stats.json").read_text())["ticks"]
    commands = len(topics["/rec0/effort_controller/commands"])
    assert ticks > 100 and 0.5 * ticks <= commands <= ticks, (commands, ticks)
    _, _, js = topics["/rec0/joint_states"][-1]
    assert len(js.name) == 7 and len(js.position) == 7
    [(_, _, event)] = topics["/rec0/sim/events"]
    assert json.loads(event.data)["type"] == "payload"
    stamps = [m.log_time for _, m, _ in topics["/rec0/joint_states"]]
    assert stamps == sorted(stamps)


def test_a_respawned_recorder_keeps_the_bag_before_it(tmp_path):
    from nestor_robot.bag_recorder_node import free_path

    path = str(tmp_path / "recording.mcap")
    assert free_path(path) == path
    (tmp_path / "recording.mcap").write_bytes(b"first")
    assert free_path(path) == str(tmp_path / "recording.1.mcap")
    (tmp_path / "recording.1.mcap").write_bytes(b"second")
    assert free_path(path) == str(tmp_path / "recording.2.mcap")
