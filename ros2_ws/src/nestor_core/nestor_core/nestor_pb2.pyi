from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ExperienceChunk(_message.Message):
    __slots__ = ("robot_id", "first_seq", "count", "task", "model_version", "obs", "action", "cost", "fast_read", "stamp", "model_versions", "l1_state", "slow_read", "surprise", "dropped_before", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ROBOT_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    OBS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    FAST_READ_FIELD_NUMBER: _ClassVar[int]
    STAMP_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    L1_STATE_FIELD_NUMBER: _ClassVar[int]
    SLOW_READ_FIELD_NUMBER: _ClassVar[int]
    SURPRISE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    robot_id: str
    first_seq: int
    count: int
    task: str
    model_version: int
    obs: Tensor
    action: Tensor
    cost: Tensor
    fast_read: Tensor
    stamp: Tensor
    model_versions: Tensor
    l1_state: Tensor
    slow_read: Tensor
    surprise: Tensor
    dropped_before: int
    tags: _containers.ScalarMap[str, str]
    def __init__(self, robot_id: _Optional[str] = ..., first_seq: _Optional[int] = ..., count: _Optional[int] = ..., task: _Optional[str] = ..., model_version: _Optional[int] = ..., obs: _Optional[_Union[Tensor, _Mapping]] = ..., action: _Optional[_Union[Tensor, _Mapping]] = ..., cost: _Optional[_Union[Tensor, _Mapping]] = ..., fast_read: _Optional[_Union[Tensor, _Mapping]] = ..., stamp: _Optional[_Union[Tensor, _Mapping]] = ..., model_versions: _Optional[_Union[Tensor, _Mapping]] = ..., l1_state: _Optional[_Union[Tensor, _Mapping]] = ..., slow_read: _Optional[_Union[Tensor, _Mapping]] = ..., surprise: _Optional[_Union[Tensor, _Mapping]] = ..., dropped_before: _Optional[int] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class IngestAck(_message.Message):
    __slots__ = ("robot_id", "acked_through_seq", "stored", "duplicates")
    ROBOT_ID_FIELD_NUMBER: _ClassVar[int]
    ACKED_THROUGH_SEQ_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    robot_id: str
    acked_through_seq: int
    stored: int
    duplicates: int
    def __init__(self, robot_id: _Optional[str] = ..., acked_through_seq: _Optional[int] = ..., stored: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("robot_id", "task", "current_version")
    ROBOT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    robot_id: str
    task: str
    current_version: int
    def __init__(self, robot_id: _Optional[str] = ..., task: _Optional[str] = ..., current_version: _Optional[int] = ...) -> None: ...

class ModelUpdate(_message.Message):
    __slots__ = ("version", "parent", "task", "sha256", "onnx", "manifest", "signature")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    ONNX_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    version: int
    parent: int
    task: str
    sha256: str
    onnx: bytes
    manifest: bytes
    signature: bytes
    def __init__(self, version: _Optional[int] = ..., parent: _Optional[int] = ..., task: _Optional[str] = ..., sha256: _Optional[str] = ..., onnx: _Optional[bytes] = ..., manifest: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RobotStatus(_message.Message):
    __slots__ = ("robot_id", "task", "last_contact_unix", "transitions", "last_seq", "model_version", "recent_cost", "dropped")
    ROBOT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    LAST_CONTACT_UNIX_FIELD_NUMBER: _ClassVar[int]
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RECENT_COST_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    robot_id: str
    task: str
    last_contact_unix: float
    transitions: int
    last_seq: int
    model_version: int
    recent_cost: float
    dropped: int
    def __init__(self, robot_id: _Optional[str] = ..., task: _Optional[str] = ..., last_contact_unix: _Optional[float] = ..., transitions: _Optional[int] = ..., last_seq: _Optional[int] = ..., model_version: _Optional[int] = ..., recent_cost: _Optional[float] = ..., dropped: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("version", "parent", "task", "sha256", "status", "created_unix", "metrics_json", "experience_from", "experience_to")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    EXPERIENCE_FROM_FIELD_NUMBER: _ClassVar[int]
    EXPERIENCE_TO_FIELD_NUMBER: _ClassVar[int]
    version: int
    parent: int
    task: str
    sha256: str
    status: str
    created_unix: float
    metrics_json: str
    experience_from: int
    experience_to: int
    def __init__(self, version: _Optional[int] = ..., parent: _Optional[int] = ..., task: _Optional[str] = ..., sha256: _Optional[str] = ..., status: _Optional[str] = ..., created_unix: _Optional[float] = ..., metrics_json: _Optional[str] = ..., experience_from: _Optional[int] = ..., experience_to: _Optional[int] = ...) -> None: ...

class FleetStatus(_message.Message):
    __slots__ = ("robots", "models", "transitions_stored", "consolidation_rounds", "rejected_by_reason")
    class RejectedByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ROBOTS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TRANSITIONS_STORED_FIELD_NUMBER: _ClassVar[int]
    CONSOLIDATION_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    robots: _containers.RepeatedCompositeFieldContainer[RobotStatus]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    transitions_stored: int
    consolidation_rounds: int
    rejected_by_reason: _containers.ScalarMap[str, int]
    def __init__(self, robots: _Optional[_Iterable[_Union[RobotStatus, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., transitions_stored: _Optional[int] = ..., consolidation_rounds: _Optional[int] = ..., rejected_by_reason: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: str
    def __init__(self, task: _Optional[str] = ...) -> None: ...

class ListModelsReply(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class PromoteRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: str
    def __init__(self, task: _Optional[str] = ...) -> None: ...

class ModelReply(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class BadModelReport(_message.Message):
    __slots__ = ("robot_id", "version", "reason")
    ROBOT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    robot_id: str
    version: int
    reason: str
    def __init__(self, robot_id: _Optional[str] = ..., version: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class BadModelReply(_message.Message):
    __slots__ = ("version", "robots_reporting")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROBOTS_REPORTING_FIELD_NUMBER: _ClassVar[int]
    version: int
    robots_reporting: int
    def __init__(self, version: _Optional[int] = ..., robots_reporting: _Optional[int] = ...) -> None: ...
