"""One robot's own nodes (policy, uplink, weight_sync; perception for camera tasks), no sim.

    ros2 launch nestor_bringup robot.launch.py robot_id:=robot0 task:=kuka_track cloud:=127.0.0.1:50051
    ros2 launch nestor_bringup robot.launch.py robot_id:=arm1 namespace:=lab/arm1 params_file:=my_params.yaml

The node list comes from nestor_bringup.nodes.robot_nodes, like `nestor robot --no-sim`; the
arguments from nestor_bringup.launch_args (the same table for the three launch files).
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from nestor_bringup.launch_actions import node_actions
from nestor_bringup.launch_args import arguments

from launch import LaunchDescription

KIND = "robot"


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=d, description=h) for name, (d, h) in arguments(KIND).items()]
        + [OpaqueFunction(function=node_actions, args=[KIND])]
    )
