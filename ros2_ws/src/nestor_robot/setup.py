"""nestor_robot: one console script per node; the metadata and ament data files are in setup.cfg."""

from setuptools import setup

setup(
    entry_points={
        "console_scripts": [
            "policy_node = nestor_robot.policy_node:main",
            "uplink_node = nestor_robot.uplink_node:main",
            "weight_sync_node = nestor_robot.weight_sync_node:main",
            "perception_node = nestor_robot.perception_node:main",
            "bag_recorder = nestor_robot.bag_recorder_node:main",
        ],
    },
)
