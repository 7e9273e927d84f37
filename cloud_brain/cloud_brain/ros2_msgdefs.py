"""ros2msg definitions of the standard messages nestor writes to MCAP, without a ROS install.

The cloud never loads rclpy, so the definitions are kept here in the form rosbag2 stores them:
the message's own text, then each dependency after a line of 80 ``=`` and ``MSG: pkg/Type``.
Comments are left out; ``tests/cloud/test_export_mcap.py`` checks every field against the
``.msg`` files of the installed ROS 2 message packages.
"""

from __future__ import annotations

_SEPARATOR = "=" * 80

# pkg/msg/Type -> the message's own fields (comments dropped).
FIELDS = {
    "builtin_interfaces/msg/Time": "int32 sec\nuint32 nanosec\n",
    "std_msgs/msg/Header": "builtin_interfaces/Time stamp\nstring frame_id\n",
    "sensor_msgs/msg/JointState": (
        "std_msgs/Header header\nstring[] name\nfloat64[] position\nfloat64[] velocity\nfloat64[] effort\n"
    ),
    "std_msgs/msg/MultiArrayDimension": "string label\nuint32 size\nuint32 stride\n",
    "std_msgs/msg/MultiArrayLayout": "MultiArrayDimension[] dim\nuint32 data_offset\n",
    "std_msgs/msg/Float64MultiArray": "MultiArrayLayout layout\nfloat64[] data\n",
    "std_msgs/msg/Float64": "float64 data\n",
    "std_msgs/msg/Int64": "int64 data\n",
    "std_msgs/msg/String": "string data\n",
}

# Dependencies, in the order rosbag2 lists them.
_DEPENDS = {
    "std_msgs/msg/Header": ["builtin_interfaces/msg/Time"],
    "sensor_msgs/msg/JointState": ["std_msgs/msg/Header", "builtin_interfaces/msg/Time"],
    "std_msgs/msg/MultiArrayLayout": ["std_msgs/msg/MultiArrayDimension"],
    "std_msgs/msg/Float64MultiArray": ["std_msgs/msg/MultiArrayLayout", "std_msgs/msg/MultiArrayDimension"],
}


def msgdef(datatype: str) -> str:
    """The full ros2msg schema text of ``pkg/msg/Type`` (its fields, then its dependencies)."""
    if datatype not in FIELDS:
        raise KeyError(f"datatype: no definition for {datatype!r} (have {', '.join(sorted(FIELDS))})")
    parts = [FIELDS[datatype]]
    for dep in _DEPENDS.get(datatype, []):
        pkg, _, name = dep.split("/")
        parts.append(f"{_SEPARATOR}\nMSG: {pkg}/{name}\n{FIELDS[dep]}")
    return "".join(parts)
