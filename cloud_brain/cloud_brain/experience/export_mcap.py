"""MCAP export of one robot's experience as ROS 2 messages (``ros2 bag info``, Foxglove).

Each transition becomes one message per channel, with ``log_time`` = ``publish_time`` = the
transition's robot-clock stamp (ns) and the MCAP ``sequence`` = its seq. Topics carry the robot's
namespace, as the live topics do:

=================================  ============================  =====================================
topic (under ``/<robot_id>/``)     type                          content
=================================  ============================  =====================================
``joint_states``                   sensor_msgs/msg/JointState    observed q, qd of controlled then
                                                                 passive joints (effort left empty)
``target``                         sensor_msgs/msg/JointState    reference q_ref, qd_ref
``effort_controller/commands``     std_msgs/msg/Float64MultiArray  the effort sent (after clipping)
``cost``                           std_msgs/msg/Float64          task cost of the tick
``nestor/fast_read``               std_msgs/msg/Float64MultiArray  L0 fast-memory part of the action
``nestor/l1_read``                 std_msgs/msg/Float64MultiArray  L1 memory part of the action
``nestor/surprise``                std_msgs/msg/Float64MultiArray  norm of the L0 prediction error (1 value)
``nestor/model_version``           std_msgs/msg/Int64            model version, at the first
                                                                 transition and at every change
``sim/events``                     std_msgs/msg/String           the sim's shift events (JSON), as live
=================================  ============================  =====================================

The file also holds a ``nestor`` metadata record (robot, task, seq range, dropped ranges). It is
written to ``<out>.part`` and renamed when complete, so a failed export leaves no partial file.
"""

from __future__ import annotations

import json
import time

from mcap_ros2.writer import Writer
from nestor_core.ros2_msgdefs import msgdef

from cloud_brain.experience.export import ExportError, JointLayout, Selection, replacing, select, summary
from cloud_brain.experience.store import ExperienceStore

JOINT_STATE = "sensor_msgs/msg/JointState"
ARRAY = "std_msgs/msg/Float64MultiArray"
TOPICS = {
    "joint_states": JOINT_STATE,
    "target": JOINT_STATE,
    "effort_controller/commands": ARRAY,
    "cost": "std_msgs/msg/Float64",
    "nestor/fast_read": ARRAY,
    "nestor/l1_read": ARRAY,
    "nestor/surprise": ARRAY,
    "nestor/model_version": "std_msgs/msg/Int64",
    "sim/events": "std_msgs/msg/String",
}
_EMPTY_LAYOUT = {"dim": [], "data_offset": 0}


def _header(ns: int) -> dict:
    return {"stamp": {"sec": ns // 1_000_000_000, "nanosec": ns % 1_000_000_000}, "frame_id": ""}


def _array(values) -> dict:
    return {"layout": _EMPTY_LAYOUT, "data": [float(v) for v in values]}


def write(
    path: str, store: ExperienceStore, selection: Selection, layout: JointLayout, events: list[dict] = ()
) -> dict:
    """Writes the selection to an MCAP file at ``path``; returns a summary (messages per topic).

    Raises:
        ExportError: nothing stored in the selection, or the observation width does not fit
            ``layout``.
    """
    counts = {topic: 0 for topic in TOPICS}
    first = last = None
    task = ""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        writer = Writer(f)
        schemas = {t: writer.register_msgdef(t, msgdef(t)) for t in set(TOPICS.values())}
        prefix = f"/{selection.robot_id}/"

        def put(topic: str, message: dict, ns: int, seq: int = 0) -> None:
            writer.write_message(
                prefix + topic,
                schemas[TOPICS[topic]],
                message,
                log_time=ns,
                publish_time=ns,
                sequence=seq & 0xFFFFFFFF,
            )
            counts[topic] += 1

        pending = list(events)
        version = None
        names = list(layout.controlled) + list(layout.passive)
        for batch, rows in select(store, selection):
            if batch.obs.shape[1] != layout.obs_dim:
                raise ExportError(
                    f"obs: width {batch.obs.shape[1]} of seq {batch.first_seq}, "
                    f"expected {layout.obs_dim} for the task's joints"
                )
            task = batch.task
            blocks = layout.split(batch.obs)
            for i in rows:
                seq = batch.first_seq + int(i)
                ns = round(float(batch.stamp[i]) * 1e9)
                while pending and pending[0]["stamp"] <= batch.stamp[i]:
                    event = pending.pop(0)
                    put("sim/events", {"data": json.dumps(event, sort_keys=True)}, round(event["stamp"] * 1e9))
                if int(batch.model_versions[i]) != version:
                    version = int(batch.model_versions[i])
                    put("nestor/model_version", {"data": version}, ns, seq)
                header = _header(ns)
                put(
                    "joint_states",
                    {
                        "header": header,
                        "name": names,
                        "position": [*map(float, blocks["q_c"][i]), *map(float, blocks["q_p"][i])],
                        "velocity": [*map(float, blocks["qd_c"][i]), *map(float, blocks["qd_p"][i])],
                        "effort": [],
                    },
                    ns,
                    seq,
                )
                put(
                    "target",
                    {
                        "header": header,
                        "name": list(layout.controlled),
                        "position": [float(v) for v in blocks["q_ref"][i]],
                        "velocity": [float(v) for v in blocks["qd_ref"][i]],
                        "effort": [],
                    },
                    ns,
                    seq,
                )
                put("effort_controller/commands", _array(batch.action[i]), ns, seq)
                put("cost", {"data": float(batch.cost[i])}, ns, seq)
                put("nestor/fast_read", _array(batch.fast_read[i]), ns, seq)
                put("nestor/l1_read", _array(batch.slow_read[i]), ns, seq)
                put("nestor/surprise", _array([batch.surprise[i]]), ns, seq)
                first = seq if first is None else first
                last = seq
        if first is None:
            raise ExportError(f"robot: no stored transition of {selection.robot_id!r} in the selection")
        for event in pending:  # events after the last transition of the range
            put("sim/events", {"data": json.dumps(event, sort_keys=True)}, round(event["stamp"] * 1e9))
        dropped = [(s, c) for s, c in store.dropped_ranges(selection.robot_id) if s <= last and s + c > first]
        writer.add_metadata(
            "nestor",
            {
                "robot_id": selection.robot_id,
                "task": task,
                "first_seq": str(first),
                "last_seq": str(last),
                "dropped_ranges": json.dumps(dropped),
                "exported_unix": f"{time.time():.3f}",
            },
        )
        writer.finish()
    return {**summary(path, "mcap", selection, task, first, last, counts["cost"]), "messages": counts}
