"""One robot's own nodes (policy, uplink, weight_sync; perception for camera tasks), no sim.

    ros2 launch nestor_bringup robot.launch.py robot_id:=robot0 task:=kuka_track cloud:=127.0.0.1:50051

The node list comes from nestor_bringup.nodes.robot_nodes, like `nestor robot --no-sim`.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from nestor_bringup.nodes import RobotSpec, robot_nodes

from launch import LaunchDescription

ARGUMENTS = {
    "robot_id": ("robot0", "robot id (also its namespace)"),
    "task": ("kuka_track", "task name (config/tasks/<task>.yaml)"),
    "cloud": ("127.0.0.1:50051", "cloud brain host:port"),
    "run_dir": ("runs/latest", "run directory"),
    "initial_model": ("", "local .onnx the policy starts with"),
    "certs_dir": ("", "dir from `nestor-cloud certs`: mutual TLS and signed models (empty = insecure, loopback only)"),
}


def _nodes(context):
    config_dir = os.path.join(get_package_share_directory("nestor_bringup"), "config")
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    spec = RobotSpec(
        robot_id=value["robot_id"],
        task=value["task"],
        cloud_address=value["cloud"],
        run_dir=value["run_dir"],
        initial_model=value["initial_model"],
        certs_dir=value["certs_dir"],
        sim=False,
    )
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
        for n in robot_nodes(spec, config_dir)
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=d, description=h) for name, (d, h) in ARGUMENTS.items()]
        + [OpaqueFunction(function=_nodes)]
    )
