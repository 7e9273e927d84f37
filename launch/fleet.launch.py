"""N simulated robots, namespaces robot0..robotN-1, like `nestor fleet`.

    ros2 launch nestor_bringup fleet.launch.py robots:=3 task:=kuka_track

Seeds and shifts per robot come from nestor_bringup.nodes.fleet_specs (the same list as the CLI).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from nestor_bringup.nodes import fleet_specs, robot_nodes

from launch import LaunchDescription

ARGUMENTS = {
    "robots": ("2", "number of robots"),
    "task": ("kuka_track", "task name (config/tasks/<task>.yaml)"),
    "cloud": ("127.0.0.1:50051", "cloud brain host:port"),
    "run_dir": ("runs/latest", "run directory"),
    "seed": ("0", "sim seed of robot0 (robot i gets seed + i)"),
    "initial_model": ("", "local .onnx the policies start with"),
    "certs_dir": ("", "dir from `nestor-cloud certs`: mutual TLS and signed models (empty = insecure, loopback only)"),
}


def _nodes(context):
    config_dir = os.path.join(get_package_share_directory("nestor_bringup"), "config")
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    specs = fleet_specs(
        int(value["robots"]),
        value["task"],
        value["run_dir"],
        value["cloud"],
        seed=int(value["seed"]),
        initial_model=value["initial_model"],
    )
    for spec in specs:
        spec.certs_dir = value["certs_dir"]
    return [
        Node(
            package=n.package,
            executable=n.executable,
            name=n.name,
            namespace=n.namespace,
            parameters=[*n.param_files, n.overrides],
            output="screen",
            # Supervision, as in `nestor robot` (nestor_bringup.supervisor): the network side
            # respawns; a control-path node that exits shuts the launch down, loudly.
            respawn=n.respawn,
            respawn_delay=n.respawn_delay,
            respawn_max_retries=n.respawn_max_retries,
            sigterm_timeout=str(n.stop_timeout_s),
            on_exit=None if n.respawn else Shutdown(reason=f"{n.namespace}/{n.name} exited: control path"),
        )
        for spec in specs
        for n in robot_nodes(spec, config_dir)
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=d, description=h) for name, (d, h) in ARGUMENTS.items()]
        + [OpaqueFunction(function=_nodes)]
    )
