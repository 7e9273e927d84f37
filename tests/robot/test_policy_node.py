"""The policy node for real: its own process, DDS on loopback, a real ONNX model and spool.

Its parameters seen from outside are in test_policy_params.py; its imports in test_robot_sources.py.
"""

import hashlib
import math
import os
import time

import pytest
from policy_driver import Driver, assert_contiguous, finish, read_stats, spool_rows, start_policy
from policy_models import JOINTS
from ros_testlib import random_domain_id


@pytest.mark.parametrize("executor", ["events", "single"])
def test_policy_node_end_to_end(models, tmp_path, executor):
    domain_id = random_domain_id()
    namespace = f"/ptest{os.getpid()}"
    spool = tmp_path / "spool.sqlite"
    stats_file = tmp_path / "run" / "policy_stats.json"
    proc, log = start_policy(models, tmp_path, namespace, domain_id, f"executor:={executor}")
    driver = Driver(namespace, domain_id)
    try:
        driver.wait_connected(30.0, proc)
        driver.run(2.0)
        assert len(driver.commands) > 50, f"only {len(driver.commands)} commands"
        assert all(len(c) == len(JOINTS) for c in driver.commands)
        assert all(math.isfinite(x) for c in driver.commands for x in c)
        assert any(abs(x) > 0 for c in driver.commands for x in c)

        time.sleep(0.3)  # at least one flush period
        assert_contiguous(spool_rows(spool))

        # A verified update is swapped in between two ticks.
        data = models[1].read_bytes()
        driver.announce(
            {"version": 2, "path": str(models[1]), "sha256": hashlib.sha256(data).hexdigest(), "task": "kuka_track"}
        )
        assert driver.run(10.0, until=lambda: read_stats(stats_file).get("swaps") == 1), read_stats(stats_file)
        stats = read_stats(stats_file)
        assert stats["model_version"] == 2
        assert stats["swap_log"][-1]["from_version"] == 1 and stats["swap_log"][-1]["to_version"] == 2

        # A wrong digest is refused and the running model stays.
        driver.announce({"version": 3, "path": str(models[0]), "sha256": "0" * 64, "task": "kuka_track"})
        assert driver.run(10.0, until=lambda: read_stats(stats_file).get("rejected_models") == 1)
        driver.run(0.5)
        stats = read_stats(stats_file)
        assert stats["model_version"] == 2 and stats["swaps"] == 1
        assert stats["reject_log"][-1]["reason"] == "sha256_mismatch"
        assert stats["tick_us"]["p50"] > 0
    finally:
        _, output = finish(driver, proc, log)
    assert proc.returncode == 0, output
    # Everything recorded reached the spool, with contiguous seqs from 1.
    final = read_stats(stats_file)
    rows = spool_rows(spool)
    assert_contiguous(rows)
    assert rows[-1][1] == final["recorder"]["recorded"] == final["ticks"]
    assert final["recorder"]["overflow"] == 0


def _max_abs(commands) -> float:
    return max((abs(x) for c in commands for x in c), default=0.0)


def test_nan_joint_state_never_drives_an_actuator(models, tmp_path):
    """A NaN position (a plain rclpy driver): last good command held, then zero; status ERROR; no learning."""
    domain_id, namespace = random_domain_id(), f"/nantest{os.getpid()}"
    hold = 5
    proc, log = start_policy(models, tmp_path, namespace, domain_id, f"input_hold_ticks:={hold}")
    driver = Driver(namespace, domain_id)
    stats_file = tmp_path / "run" / "policy_stats.json"
    try:
        driver.wait_connected(30.0, proc)
        driver.run(2.0)
        good = driver.commands_between(time.monotonic() - 1.0, time.monotonic())
        assert len(good) > 50 and _max_abs(good) > 0
        before = read_stats(stats_file)

        bad_from = time.monotonic()
        driver.nan_joint = JOINTS[3]
        driver.run(1.5)
        bad_to = time.monotonic()
        during = driver.commands_between(bad_from, bad_to)
        assert len(during) > 50, len(during)
        # No command while the NaN lasts exceeds the last good command in magnitude ...
        assert _max_abs(during) <= _max_abs(good) + 1e-9, (during[:10], _max_abs(good))
        # ... and once the hold is over (5 ticks = 50 ms; 0.3 s leaves room for delivery) it is zero effort.
        late = driver.commands_between(bad_from + 0.3, bad_to)
        assert late and all(x == 0.0 for c in late for x in c), late[:5]
        errors = [s for t, s in driver.statuses if bad_from < t <= bad_to + 0.3 and s.level == b"\x02"]
        assert errors, [(s.level, s.message) for _, s in driver.statuses[-5:]]
        assert "non_finite" in errors[-1].message and JOINTS[3] in errors[-1].message
        values = {kv.key: kv.value for kv in errors[-1].values}
        assert int(values["bad_input_ticks"]) > 0

        driver.nan_joint = None
        good_from = time.monotonic()
        driver.run(1.5)
        after = driver.commands_between(good_from + 0.2, time.monotonic())
        assert len(after) > 50
        # Back within the range the commands had before, within a few ticks (0.2 s of delivery slack).
        assert 0 < _max_abs(after) <= 1.5 * _max_abs(good), (_max_abs(after), _max_abs(good))
        assert driver.run(5.0, until=lambda: read_stats(stats_file).get("bad_input_streak") == 0)
        # OK again once a whole status period passed without bad input (the stats refresh once per flush).
        assert driver.run(5.0, until=lambda: any(s.level == b"\x00" for t, s in driver.statuses if t > good_from)), [
            (s.level, s.message) for _, s in driver.statuses[-3:]
        ]
    finally:
        code, output = finish(driver, proc, log)
    assert code == 0, output
    assert "non_finite: joint_states.position[lbr_iiwa_joint_4] is nan" in output
    final = read_stats(stats_file)
    assert final["bad_input_ticks"] > 100 and final["bad_input_longest_streak"] > hold
    assert final["ticks"] > before["ticks"]
    # The bad ticks were neither stepped (L0/L1) nor recorded: every recorded transition is a good tick.
    rows = spool_rows(tmp_path / "spool.sqlite")
    assert_contiguous(rows)
    assert rows[-1][1] == final["recorder"]["recorded"] == final["ticks"]


_MALFORMED = {
    "joint_states: joint 'lbr_iiwa_joint_7' missing": lambda n, p, v: (n[1:], p[1:], v[1:]),
    "joint_states: 8 names but 8 positions, 3 velocities": lambda n, p, v: (n, p, v[:3]),
    "joint_states: joint 'lbr_iiwa_joint_1' missing": lambda n, p, v: ([], [], []),
}


def test_malformed_joint_states_raise_the_status(models, tmp_path):
    """Missing joint, short velocity array, empty message: safe command, counted, status names the reason."""
    domain_id, namespace = random_domain_id(), f"/badtest{os.getpid()}"
    proc, log = start_policy(models, tmp_path, namespace, domain_id)
    driver = Driver(namespace, domain_id)
    stats_file = tmp_path / "run" / "policy_stats.json"
    seen = {}
    try:
        driver.wait_connected(30.0, proc)
        driver.run(1.0)
        for reason, corrupt in _MALFORMED.items():
            driver.corrupt = corrupt
            start = time.monotonic()
            assert driver.run(
                6.0,
                until=lambda r=reason, t=start: any(
                    r in s.message and s.level in (b"\x01", b"\x02") for u, s in driver.statuses if u > t
                ),
            ), [(s.level, s.message) for _, s in driver.statuses[-3:]]
            driver.run(0.5)
            late = driver.commands_between(start + 0.3, time.monotonic())
            assert late and all(x == 0.0 for c in late for x in c)  # past the hold: zero effort
            seen[reason] = read_stats(stats_file).get("bad_input_ticks", 0)
        driver.corrupt = None
        driver.run(1.0)
    finally:
        code, output = finish(driver, proc, log)
    assert code == 0, output
    counts = list(seen.values())
    assert counts == sorted(counts) and counts[0] > 0, seen
    final = read_stats(stats_file)
    assert final["bad_inputs"] >= final["bad_input_ticks"] > counts[-1] - 1
