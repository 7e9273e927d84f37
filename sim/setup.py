from setuptools import find_packages, setup

package_name = "nestor_sim"

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
    description="nestor simulation: PyBullet tracking tasks with dynamics shifts, and the sim bridge.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "sim_bridge = nestor_sim.bridge_node:main",
        ],
        # The gymnasium plugin group (gymnasium < 1.0 loaded it by itself; 1.x needs `import nestor_sim`).
        "gymnasium.envs": ["nestor = nestor_sim.register:register_envs"],
    },
)
