from setuptools import find_packages, setup

package_name = "nestor_robot"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="nestor developers",
    maintainer_email="nestor@example.com",
    description="nestor robot-side ROS 2 nodes.",
    license="Apache-2.0",
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
