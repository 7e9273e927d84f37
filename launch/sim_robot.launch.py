"""One simulated robot: the sim bridge plus the robot's nodes, like `nestor robot`.

    ros2 launch nestor_bringup sim_robot.launch.py robot_id:=robot0 task:=kuka_track shifts:=payload:4.0@20
    ros2 launch nestor_bringup sim_robot.launch.py namespace:=lab/robot0 params_file:=my_params.yaml

`shifts` is a comma-separated list; empty keeps the task file's own shifts. The arguments come
from nestor_bringup.launch_args (the same table for the three launch files).
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from nestor_bringup.launch_actions import node_actions
from nestor_bringup.launch_args import arguments

from launch import LaunchDescription

KIND = "sim_robot"


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=d, description=h) for name, (d, h) in arguments(KIND).items()]
        + [OpaqueFunction(function=node_actions, args=[KIND])]
    )
