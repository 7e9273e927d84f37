"""Registry versions as the proto messages the servicers send (ModelInfo, ModelUpdate)."""

from __future__ import annotations

import json

from nestor_core import nestor_pb2

from cloud_brain.models.registry import ModelVersion

_IDENTITY = ("version", "parent", "task", "sha256")  # the fields ModelInfo and ModelUpdate share


def _fields(model: ModelVersion, names: tuple[str, ...]) -> dict:
    return {name: getattr(model, name) for name in names}


def model_info(model: ModelVersion) -> nestor_pb2.ModelInfo:
    """Registry version -> ModelInfo (no ONNX bytes)."""
    return nestor_pb2.ModelInfo(
        **_fields(model, (*_IDENTITY, "status", "created_unix", "experience_from", "experience_to")),
        metrics_json=json.dumps(model.metrics, sort_keys=True),
    )


def model_update(model: ModelVersion) -> nestor_pb2.ModelUpdate:
    """Registry version -> ModelUpdate pushed to robots."""
    return nestor_pb2.ModelUpdate(**_fields(model, (*_IDENTITY, "onnx", "manifest", "signature")))
