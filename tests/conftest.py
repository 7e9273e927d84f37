"""Repo-wide test defaults: DDS stays on this machine, and each test run gets its own domain.

Individual fixtures may pick their own ROS_DOMAIN_ID; this is the floor under all of them.
"""

import os

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 80))
