"""The supervisor (nestor_bringup.supervisor) on real processes that crash at once.

The venv's python refuses `--ros-args` with exit code 2. Checked: backoff, restart budget,
control-path deaths, supervision.json.
"""

import io
import json
import time

from nestor_bringup.nodes import NodeSpec
from nestor_bringup.process_group import ProcessGroup
from nestor_bringup.supervisor import RestartPolicy, Supervisor


def _crasher(name: str, respawn: bool, delay: float = 0.05, budget: int = 3) -> NodeSpec:
    return NodeSpec(
        package="none",
        executable="python",
        name=name,
        namespace="",
        param_files=[],
        overrides={},
        respawn=respawn,
        respawn_delay=delay,
        respawn_max_retries=budget,
    )


def test_restart_delay_doubles_up_to_the_cap():
    policy = RestartPolicy(max_delay_s=5.0)
    assert [policy.delay(1.0, n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_crashing_network_node_is_restarted_until_its_budget_is_spent(tmp_path):
    group = ProcessGroup(str(tmp_path))
    group.start_robot("a", [_crasher("uplink", respawn=True)])
    out = io.StringIO()
    supervisor = Supervisor(group, RestartPolicy(max_delay_s=0.2, stable_s=60.0), out=out)
    deadline = time.monotonic() + 60
    failures = []
    while not failures:
        assert time.monotonic() < deadline, out.getvalue()
        failures = supervisor.poll()
        time.sleep(0.02)
    [failure] = failures
    assert failure.robot_id == "a" and "restart budget spent (3 restarts" in failure.reason
    [proc] = group.processes
    assert proc.restarts == 3
    text = out.getvalue()
    # Each crash in a row doubles the delay (0.05, 0.1, 0.2), capped at max_delay_s.
    delays = [line.split("restart in ")[1] for line in text.splitlines() if "restart in " in line]
    assert delays == ["0.05 s", "0.1 s", "0.2 s"], text
    assert "exited with code 2" in text and "stopping robot a" in text
    status = json.loads((tmp_path / "robots" / "a" / "supervision.json").read_text())
    assert status["stopped"] is True and status["restarts"] == 3 and status["down"] == ["uplink"]
    assert supervisor.alive_robots() == []
    # The log holds every start, each restart marked.
    log = (tmp_path / "robots" / "a" / "uplink.log").read_text()
    assert [line.split(":")[0] for line in log.splitlines() if line.startswith("# restart")] == [
        "# restart 1",
        "# restart 2",
        "# restart 3",
    ]


def test_a_control_path_death_stops_only_its_robot(tmp_path):
    group = ProcessGroup(str(tmp_path))
    group.start_robot("b", [_crasher("policy", respawn=False)])
    group.start_robot("c", [_crasher("weight_sync", respawn=True, delay=30.0)])
    out = io.StringIO()
    supervisor = Supervisor(group, out=out)
    deadline = time.monotonic() + 30
    failed = []
    while not (failed and "c/weight_sync (python) exited with code 2" in out.getvalue()):
        assert time.monotonic() < deadline, out.getvalue()
        failed += supervisor.poll()
        time.sleep(0.02)
    assert [f.robot_id for f in failed] == ["b"]
    assert "b/policy (python) exited with code 2: it is on the control path" in failed[0].reason
    # Robot c's node waits for its (long) restart delay; its robot is not stopped.
    assert supervisor.alive_robots() == ["c"]
    c = json.loads((tmp_path / "robots" / "c" / "supervision.json").read_text())
    assert c["stopped"] is False and c["nodes"]["weight_sync"]["restart_pending"] is True
    group.stop()
