"""Repo-wide test defaults: DDS stays on this machine, and each test run gets its own domain.

Individual fixtures may pick their own ROS_DOMAIN_ID; this is the floor under all of them.
"""

import os
import pathlib
import sys

# Shared test helpers (policy_testlib) import from any test folder.
_TESTS = str(pathlib.Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 80))
