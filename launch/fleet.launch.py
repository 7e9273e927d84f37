"""N simulated robots, namespaces robot0..robotN-1 (under namespace:= when given), like `nestor fleet`.

    ros2 launch nestor_bringup fleet.launch.py robots:=3 task:=kuka_track
    ros2 launch nestor_bringup fleet.launch.py robots:=2 shifts:=payload:4.0@20,friction:1.0@30 namespace:=lab

Seeds and shifts per robot come from nestor_bringup.nodes.fleet_specs (the same list as the CLI):
`shifts:=` gives every robot that schedule; empty cycles through the built-in list.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from nestor_bringup.launch_actions import node_actions
from nestor_bringup.launch_args import arguments

from launch import LaunchDescription

KIND = "fleet"


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=d, description=h) for name, (d, h) in arguments(KIND).items()]
        + [OpaqueFunction(function=node_actions, args=[KIND])]
    )
