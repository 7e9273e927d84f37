"""The machine-stall baseline the demo runs next to the fleet (nestor_demo.stall_probe)."""

import json
import signal
import subprocess
import sys
import time

import pytest
from nestor_demo.stall_probe import StallProbe, coinciding


def test_a_gap_over_one_and_a_half_periods_is_a_stall():
    probe = StallProbe(100.0)
    for gap, unix in ((0.010, 1.0), (0.0149, 2.0), (0.0151, 3.0), (0.040, 4.0)):
        probe.observe(gap, unix)
    stats = probe.stats()
    assert stats["ticks"] == 4 and stats["missed_ticks"] == 2
    assert stats["events"] == [{"unix": 3.0, "gap_ms": 15.1}, {"unix": 4.0, "gap_ms": 40.0}]
    assert stats["max_gap_ms"] == 40.0
    with pytest.raises(ValueError, match="rate_hz"):
        StallProbe(0.0)


def test_robot_misses_coincide_only_with_overlapping_stalls():
    stalls = [{"unix": 100.0, "gap_ms": 40.0}]  # the machine stood still over [99.96, 100.0]
    misses = [
        {"unix": 100.01, "gap_ms": 20.0},  # [99.99, 100.01]: overlaps
        {"unix": 99.97, "gap_ms": 16.0},  # inside
        {"unix": 100.5, "gap_ms": 16.0},  # half a second later: the robot's own
        {"unix": 99.90, "gap_ms": 16.0},  # before it
    ]
    assert coinciding(misses, stalls) == 2
    assert coinciding(misses, []) == 0


def test_probe_process_writes_its_stats_and_stops_on_sigterm(tmp_path):
    out = tmp_path / "probe.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nestor_demo.stall_probe", "--rate", "200", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, output
    stats = json.loads(out.read_text())
    assert stats["rate_hz"] == 200.0
    assert stats["ticks"] >= 200  # over a second at 200 Hz
    assert 0 <= stats["missed_ticks"] <= stats["ticks"] and len(stats["events"]) == stats["missed_ticks"]


def test_probe_bad_arguments_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "nestor_demo.stall_probe", "--rate", "-1", "--out", str(tmp_path / "p.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "rate_hz" in result.stderr


def test_steal_is_measured_from_proc_stat(tmp_path):
    from nestor_demo.stall_probe import read_steal_s

    stat = tmp_path / "stat"
    stat.write_text("cpu  754092 49919 106265 1209064 10219 0 5927 20715 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    import os

    assert read_steal_s(str(stat)) == 20715 / os.sysconf("SC_CLK_TCK")
    assert read_steal_s(str(tmp_path / "missing")) is None
    readings = iter([10.0, 10.5])
    probe = StallProbe(100.0, steal_reader=lambda: next(readings))
    stats = probe.stats()
    assert stats["steal_s"] == 0.5 and stats["steal_fraction"] > 0
    real = StallProbe(100.0).stats()  # on Linux the real counter is there
    assert real["steal_s"] is not None and real["steal_s"] >= 0


def test_demo_progress_shows_the_machine_baseline(capsys):
    from nestor_demo.demo import DemoConfig, Progress

    progress = Progress(DemoConfig(duration_s=60))  # stdout is not a tty here: plain lines
    robots = {"robot0": {"model_version": 1, "swaps": 0, "ticks": 100, "missed_ticks": 2}}
    progress.update(10.0, None, robots, {"missed_ticks": 3, "steal_fraction": 0.005})
    line = capsys.readouterr().out
    assert "machine stalls=3 steal=0.50%" in line and "robot0 v1" in line and "missed=2" in line
    progress.update(20.0, None, robots, {})  # within 10 s of the last line: nothing printed
    assert capsys.readouterr().out == ""
