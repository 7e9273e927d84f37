"""nestor_bringup: the launch files and config/ YAML go to share/ (metadata in setup.cfg)."""

import os
from glob import glob

from setuptools import setup

package_name = "nestor_bringup"
here = os.path.dirname(os.path.abspath(__file__))


def config_files() -> list[tuple[str, list[str]]]:
    """config/**/*.yaml (through the config symlink), grouped by directory under share/."""
    by_dir: dict[str, list[str]] = {}
    for path in sorted(glob("config/**/*.yaml", recursive=True, root_dir=here)):
        by_dir.setdefault(os.path.join("share", package_name, os.path.dirname(path)), []).append(path)
    return sorted(by_dir.items())


setup(
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", sorted(glob("launch/*.launch.py", root_dir=here))),
        *config_files(),
    ],
    entry_points={"console_scripts": ["nestor = nestor_bringup.cli:main"]},
)
