"""The policy node's parameters from outside: its parameter services, params files and bad values."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from policy_driver import Driver, finish, read_stats, start_policy
from ros_testlib import random_domain_id, ros_env

BIN = Path(sys.executable).parent


def _call(driver, client, request):
    future = client.call_async(request)
    deadline = time.monotonic() + 10.0
    while not future.done() and time.monotonic() < deadline:
        driver.executor.spin_once(timeout_sec=0.05)
    assert future.done(), "no answer from the parameter service"
    return future.result()


def test_parameter_services_from_a_plain_client(models, tmp_path):
    """`ros2 param set/get` as a plain rclpy client: bad values refused with a reason, l0_step_scale takes effect."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import GetParameters, SetParameters

    domain_id, namespace = random_domain_id(), f"/paramtest{os.getpid()}"
    proc, log = start_policy(models, tmp_path, namespace, domain_id)
    driver = Driver(namespace, domain_id)
    stats_file = tmp_path / "run" / "policy_stats.json"
    double, string = ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_STRING
    integer = ParameterType.PARAMETER_INTEGER

    def param(name, kind, value):
        field = {double: "double_value", string: "string_value", integer: "integer_value"}[kind]
        return Parameter(name=name, value=ParameterValue(type=kind, **{field: value}))

    try:
        driver.wait_connected(30.0, proc)
        setter = driver.node.create_client(SetParameters, f"{namespace}/policy/set_parameters")
        getter = driver.node.create_client(GetParameters, f"{namespace}/policy/get_parameters")
        assert setter.wait_for_service(timeout_sec=10.0) and getter.wait_for_service(timeout_sec=10.0)
        names = ["control_rate_hz", "l0_step_scale", "spool_full_policy", "horizon"]
        before = _call(driver, getter, GetParameters.Request(names=names)).values
        bad = [
            param("control_rate_hz", double, -5.0),
            param("l0_step_scale", double, 7.0),
            param("l0_step_scale", string, "fast"),
            param("spool_full_policy", string, "bogus"),
            param("horizon", integer, -3),
        ]
        results = _call(driver, setter, SetParameters.Request(parameters=bad)).results
        assert [r.successful for r in results] == [False] * 5, results
        assert all(r.reason for r in results)
        assert "read-only" in results[0].reason and "out of range" in results[1].reason
        assert results[2].reason == "parameter l0_step_scale: expected float, got 'fast'"
        after = _call(driver, getter, GetParameters.Request(names=names)).values
        assert after == before  # `get` reports what the node runs with

        # L0 learns while l0_step_scale is 1 ...
        driver.run(1.5)
        norms = []
        assert driver.run(
            5.0,
            until=lambda: (
                norms.append(read_stats(stats_file).get("l0_fast_state_norm")) or len(set(norms) - {None}) >= 2
            ),
        )
        freeze = SetParameters.Request(parameters=[param("l0_step_scale", double, 0.0)])
        (result,) = _call(driver, setter, freeze).results
        assert result.successful, result.reason
        (value,) = _call(driver, getter, GetParameters.Request(names=["l0_step_scale"])).values
        assert value.double_value == 0.0
        # ... and is frozen from the next tick on: the fast state stops changing.
        assert driver.run(5.0, until=lambda: read_stats(stats_file).get("l0_step_scale") == 0.0)
        frozen = read_stats(stats_file)["l0_fast_state_norm"]
        ticks = read_stats(stats_file)["ticks"]
        assert driver.run(5.0, until=lambda: read_stats(stats_file)["ticks"] > ticks + 100)
        assert read_stats(stats_file)["l0_fast_state_norm"] == frozen
    finally:
        code, output = finish(driver, proc, log)
    assert code == 0, output
    assert "parameters changed: {'l0_step_scale': 0.0}" in output


_NODE_NAMES = {
    "policy_node": "policy",
    "uplink_node": "uplink",
    "weight_sync_node": "weight_sync",
    "perception_node": "perception",
    "sim_bridge": "sim_bridge",
}


@pytest.mark.parametrize("executable", sorted(_NODE_NAMES))
def test_unknown_parameter_in_a_params_file_is_refused(tmp_path, executable):
    name = _NODE_NAMES[executable]
    params = tmp_path / "params.yaml"
    params.write_text(f"/**/{name}:\n  ros__parameters:\n    l0_step_scal: 0\n")
    env = ros_env(random_domain_id())
    result = subprocess.run(
        [
            str(BIN / executable),
            "--ros-args",
            "-r",
            f"__node:={name}",
            "--params-file",
            str(params),
            *(["-p", "task_file:=x.yaml"] if name == "sim_bridge" else []),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert lines == [
        f"{executable}: error: parameter l0_step_scal: node /{name} has no such parameter"
        + (" (did you mean 'l0_step_scale'?)" if name == "policy" else "")
    ], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("param", "named"), [("horizon:=1", "horizon"), ("executor:=multi", "executor")])
def test_policy_node_bad_parameter_names_it(tmp_path, param, named):
    env = ros_env(random_domain_id())
    result = subprocess.run(
        [str(BIN / "policy_node"), "--ros-args", "-p", param, "-p", f"run_dir:={tmp_path}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert named in result.stderr
