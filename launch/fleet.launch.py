"""N simulated robots, namespaces robot0..robotN-1 (under namespace:= when given), like `nestor fleet`.

    ros2 launch nestor_bringup fleet.launch.py robots:=3 task:=kuka_track
    ros2 launch nestor_bringup fleet.launch.py robots:=2 shifts:=payload:4.0@20,friction:1.0@30 namespace:=lab

Seeds and shifts per robot come from nestor_bringup.nodes.fleet_specs (the same list as the CLI):
`shifts:=` gives every robot that schedule; empty cycles through the built-in list.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from nestor_bringup.launch_args import arguments, specs_from
from nestor_bringup.nodes import robot_nodes

from launch import LaunchDescription

KIND = "fleet"


def _nodes(context):
    config_dir = os.path.join(get_package_share_directory("nestor_bringup"), "config")
    values = {name: LaunchConfiguration(name).perform(context) for name in arguments(KIND)}
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
        for spec in specs_from(KIND, values)
        for n in robot_nodes(spec, config_dir)
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=d, description=h) for name, (d, h) in arguments(KIND).items()]
        + [OpaqueFunction(function=_nodes)]
    )
