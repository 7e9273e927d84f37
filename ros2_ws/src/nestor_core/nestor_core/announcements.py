"""The two messages robot processes pass each other as std_msgs/String JSON, typed, one codec each.

* ``ModelAnnouncement`` on ``topics.MODEL_UPDATE``: weight_sync announces a verified model; the
  policy's model loader decodes it.
* ``RollbackReport`` on ``topics.POLICY_ROLLBACK``: the policy reports a model it rolled back;
  weight_sync decodes it and forwards it to the cloud.

``encode`` writes JSON with sorted keys; ``decode`` refuses a message it cannot use with
``AnnouncementError`` (a ValueError) naming the field, and ignores keys it does not know (a newer
sender may add some). Standard library only.
"""

from __future__ import annotations

import dataclasses
import json


class AnnouncementError(ValueError):
    """A message that cannot be decoded; the text names the field."""


def _object(raw: str | bytes, what: str) -> dict:
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise AnnouncementError(f"{what}: not JSON: {err}") from None
    if not isinstance(data, dict):
        raise AnnouncementError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def _field(data: dict, name: str, kind, what: str, default=dataclasses.MISSING):
    if name not in data:
        if default is dataclasses.MISSING:
            raise AnnouncementError(f"{what}: {name}: missing")
        return default
    try:
        return kind(data[name])
    except (TypeError, ValueError) as err:
        raise AnnouncementError(f"{what}: {name}: {err}") from None


@dataclasses.dataclass(frozen=True)
class ModelAnnouncement:
    """A verified model stored on the robot (weight_sync -> policy).

    Attributes:
        version: the model's version in its lineage.
        path: the stored .onnx file (its signed .json sidecar sits next to it).
        sha256: hex digest of the file's bytes; the policy re-checks it when it loads the file.
        task: the model's task; a policy of another task ignores it. Empty = not said.
        parent: the version it was trained from (0 = none).
        downgrade: the cloud took a version back (rejected canary, admin rollback): the policy
            adopts it although it is not newer than what it has seen.
    """

    version: int
    path: str
    sha256: str
    task: str = ""
    parent: int = 0
    downgrade: bool = False

    def encode(self) -> str:
        data = dataclasses.asdict(self)
        if not self.downgrade:
            del data["downgrade"]  # the key appears only on a downgrade, as it always did
        return json.dumps(data, sort_keys=True)

    @classmethod
    def decode(cls, raw: str | bytes) -> ModelAnnouncement:
        """Raises AnnouncementError naming the field."""
        data = _object(raw, "model_update")
        return cls(
            version=_field(data, "version", int, "model_update"),
            path=_field(data, "path", str, "model_update"),
            sha256=_field(data, "sha256", str, "model_update"),
            task=_field(data, "task", lambda v: "" if v is None else str(v), "model_update", ""),
            parent=_field(data, "parent", lambda v: int(v or 0), "model_update", 0),
            downgrade=_field(data, "downgrade", bool, "model_update", False),
        )

    @classmethod
    def from_info(cls, info: dict) -> ModelAnnouncement:
        """From weight_sync's dict of a stored model ({"version", "path", "sha256", "task", "parent", ...})."""
        return cls.decode(json.dumps(info))


@dataclasses.dataclass(frozen=True)
class RollbackReport:
    """A model the policy rolled back (policy -> weight_sync -> the cloud's Models.ReportBad).

    Attributes:
        robot_id: the robot.
        task: its task.
        version: the version rolled back (never adopted again on this robot).
        reverted_to: the version running again.
        reason: why, e.g. "post-swap cost 0.31 > 1.2 x pre-swap 0.22".
        pre_cost: moving-average cost before the swap.
        post_cost: moving-average cost after it.
        window_ticks: ticks of each moving average.
        tick: the runtime tick of the rollback.
        wall_time: unix time of the rollback.
    """

    robot_id: str
    task: str
    version: int
    reverted_to: int
    reason: str = ""
    pre_cost: float = 0.0
    post_cost: float = 0.0
    window_ticks: int = 0
    tick: int = 0
    wall_time: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def encode(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def decode(cls, raw: str | bytes) -> RollbackReport:
        """Raises AnnouncementError naming the field (only `version` is required)."""
        data = _object(raw, "policy/rollback")
        what = "policy/rollback"
        return cls(
            robot_id=_field(data, "robot_id", str, what, ""),
            task=_field(data, "task", str, what, ""),
            version=_field(data, "version", int, what),
            reverted_to=_field(data, "reverted_to", int, what, 0),
            reason=_field(data, "reason", str, what, ""),
            pre_cost=_field(data, "pre_cost", float, what, 0.0),
            post_cost=_field(data, "post_cost", float, what, 0.0),
            window_ticks=_field(data, "window_ticks", int, what, 0),
            tick=_field(data, "tick", int, what, 0),
            wall_time=_field(data, "wall_time", float, what, 0.0),
        )
