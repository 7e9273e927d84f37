"""The launch files' arguments, in one table, and how their values become RobotSpecs.

``robot.launch.py``, ``sim_robot.launch.py`` and ``fleet.launch.py`` declare ``arguments(kind)``
and call ``specs_from(kind, values)``; the ``nestor robot`` / ``nestor fleet`` options mean the
same. Plain data, no launch import (the tests read it here, where launch is not installed).
"""

from __future__ import annotations

from nestor_bringup.nodes import RobotSpec, check_params_file, fleet_specs

KINDS = ("robot", "sim_robot", "fleet")

_COMMON = {
    "task": ("kuka_track", "task name (config/tasks/<task>.yaml)"),
    "cloud": ("127.0.0.1:50051", "cloud brain host:port"),
    "run_dir": ("runs/latest", "run directory"),
    "initial_model": ("", "local .onnx the policy starts with"),
    "certs_dir": ("", "dir from `nestor-cloud certs`: mutual TLS and signed models (empty = insecure, loopback only)"),
    "params_file": ("", "your own ROS params YAML, applied over the per-node defaults (ids and paths still win)"),
    "record": ("false", "true = record each robot's topics to <run_dir>/robots/<id>/recording.mcap"),
}
_ONE = {
    "robot_id": ("robot0", "robot id"),
    "namespace": ("", "ROS namespace of the robot's nodes (empty = the robot id)"),
}
_SIM = {
    "seed": ("0", "sim seed"),
    "shifts": ("", "comma-separated shifts, e.g. payload:4.0@20 (empty keeps the task file's)"),
}
_FLEET = {
    "robots": ("2", "number of robots"),
    "namespace": ("", "namespace prefix: robot i runs in <namespace>/robot<i> (empty = robot<i>)"),
    "seed": ("0", "sim seed of robot0 (robot i gets seed + i)"),
    "shifts": ("", "comma-separated shifts for every robot (empty cycles through the built-in list)"),
}


def arguments(kind: str) -> dict[str, tuple[str, str]]:
    """name -> (default, description) of a launch file's arguments."""
    if kind == "robot":
        return {**_ONE, **_COMMON}
    if kind == "sim_robot":
        return {**_ONE, **_SIM, **_COMMON}
    if kind == "fleet":
        return {**_FLEET, **_COMMON}
    raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")


def _int(values: dict, name: str, minimum: int) -> int:
    try:
        number = int(values[name])
    except ValueError:
        raise ValueError(f"{name}: expected an integer, got {values[name]!r}") from None
    if number < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {number}")
    return number


def specs_from(kind: str, values: dict[str, str]) -> list[RobotSpec]:
    """The robots a launch file starts, from its argument values (strings, as launch gives them).

    Raises:
        ValueError: naming the argument and the problem.
    """
    values = {**{k: d for k, (d, _) in arguments(kind).items()}, **values}
    params = [values["params_file"]] if values["params_file"] else []
    for path in params:
        problem = check_params_file(path)
        if problem:
            raise ValueError(f"params_file: {problem}")
    shifts = [s.strip() for s in values.get("shifts", "").split(",") if s.strip()]
    record = values["record"].strip().lower()
    if record not in ("true", "false"):
        raise ValueError(f"record: expected true or false, got {values['record']!r}")
    if kind == "fleet":
        specs = fleet_specs(
            _int(values, "robots", 1),
            values["task"],
            values["run_dir"],
            values["cloud"],
            seed=_int(values, "seed", 0),
            initial_model=values["initial_model"],
            shifts=[shifts] if shifts else None,
            namespace=values["namespace"],
            params_files=params,
        )
    else:
        specs = [
            RobotSpec(
                robot_id=values["robot_id"],
                task=values["task"],
                cloud_address=values["cloud"],
                run_dir=values["run_dir"],
                initial_model=values["initial_model"],
                namespace=values["namespace"],
                sim=kind == "sim_robot",
                params_files=params,
                **({"seed": _int(values, "seed", 0), "shifts": shifts} if kind == "sim_robot" else {}),
            )
        ]
    for spec in specs:
        spec.certs_dir = values["certs_dir"]
        spec.record = record == "true"
    return specs
