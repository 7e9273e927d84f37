"""One simulated robot: the sim bridge plus the robot's nodes, like `nestor robot`.

    ros2 launch nestor_bringup sim_robot.launch.py robot_id:=robot0 task:=kuka_track shifts:=payload:4.0@20
    ros2 launch nestor_bringup sim_robot.launch.py namespace:=lab/robot0 params_file:=my_params.yaml

`shifts` is a comma-separated list; empty keeps the task file's own shifts. The arguments come
from nestor_bringup.launch_args (the same table for the three launch files).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from nestor_bringup.launch_args import arguments, specs_from
from nestor_bringup.nodes import robot_nodes

from launch import LaunchDescription

KIND = "sim_robot"


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
