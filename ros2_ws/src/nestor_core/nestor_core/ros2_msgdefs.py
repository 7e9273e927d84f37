"""ros2msg definitions of the standard messages nestor writes to MCAP, without a ROS install.

The cloud's export (which never loads ROS) and the robot's bag recorder share them. They are
kept here in the form rosbag2 stores them:
the message's own text, then each dependency after a line of 80 ``=`` and ``MSG: pkg/Type``.
Comments are left out; ``tests/cloud/test_export_mcap.py`` checks every field against the
``.msg`` files of the installed ROS 2 message packages. Constants (``byte OK=0``) are left out
too: they are not part of the wire format.
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
    "sensor_msgs/msg/Image": (
        "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\nuint8 is_bigendian\nuint32 step\n"
        "uint8[] data\n"
    ),
    "diagnostic_msgs/msg/KeyValue": "string key\nstring value\n",
    "diagnostic_msgs/msg/DiagnosticStatus": (
        "byte level\nstring name\nstring message\nstring hardware_id\nKeyValue[] values\n"
    ),
    "diagnostic_msgs/msg/DiagnosticArray": "std_msgs/Header header\nDiagnosticStatus[] status\n",
}

# Dependencies, in the order rosbag2 lists them.
_DEPENDS = {
    "std_msgs/msg/Header": ["builtin_interfaces/msg/Time"],
    "sensor_msgs/msg/JointState": ["std_msgs/msg/Header", "builtin_interfaces/msg/Time"],
    "std_msgs/msg/MultiArrayLayout": ["std_msgs/msg/MultiArrayDimension"],
    "std_msgs/msg/Float64MultiArray": ["std_msgs/msg/MultiArrayLayout", "std_msgs/msg/MultiArrayDimension"],
    "sensor_msgs/msg/Image": ["std_msgs/msg/Header", "builtin_interfaces/msg/Time"],
    "diagnostic_msgs/msg/DiagnosticStatus": ["diagnostic_msgs/msg/KeyValue"],
    "diagnostic_msgs/msg/DiagnosticArray": [
        "std_msgs/msg/Header",
        "builtin_interfaces/msg/Time",
        "diagnostic_msgs/msg/DiagnosticStatus",
        "diagnostic_msgs/msg/KeyValue",
    ],
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
