"""nestor_sim: the sim bridge and the gymnasium plugin; the metadata and ament data files are in setup.cfg."""

from setuptools import setup

setup(
    entry_points={
        "console_scripts": ["sim_bridge = nestor_sim.bridge_node:main"],
        # The gymnasium plugin group (gymnasium < 1.0 loaded it by itself; 1.x needs `import nestor_sim`).
        "gymnasium.envs": ["nestor = nestor_sim.register:register_envs"],
    },
)
