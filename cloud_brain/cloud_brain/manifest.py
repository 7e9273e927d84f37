"""Model manifests: canonical JSON describing a version, and the (future) signing hook."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the same object always gives the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def build_manifest(
    version: int,
    parent: int,
    task: str,
    sha256: str,
    io_signature: dict,
    metrics: dict,
    created_unix: float,
) -> bytes:
    """The canonical manifest of one model version, as robots verify it."""
    return canonical_json(
        {
            "version": version,
            "parent": parent,
            "task": task,
            "sha256": sha256,
            "io_signature": io_signature,
            "metrics": metrics,
            "created_unix": created_unix,
        }
    )


def sign_manifest(manifest_bytes: bytes, key_path: str = "") -> bytes:
    """ed25519 signature of the manifest; b"" while no key is configured.

    Signing arrives with issue 4; until then a configured key is an error rather than a
    silently unsigned model.
    """
    if not key_path:
        return b""
    raise NotImplementedError("signing_key: manifest signing is not implemented yet (issue 4)")
