"""Signed model manifests: canonical JSON describing one model version, and its ed25519 signature.

The cloud builds the manifest of every registered version and, when a signing key is configured,
signs it (`sign`). A robot that holds the public key accepts a model only when `verify` passes:
the signature covers the exact manifest bytes, and the manifest's sha256 and version are those of
the update. This check comes before any other (sha256, onnx.checker, io signature, smoke inference
in nestor_core.policy_model.load_model).

Robot-safe: standard library and `cryptography` only.

Manifest keys (canonical JSON: sorted keys, no spaces, UTF-8):
    version: registry version (>= 1).
    parent: version it was trained from; 0 for an initial model.
    task: task lineage, e.g. "kuka_track".
    sha256: hex sha256 of the ONNX bytes.
    io_signature: input/output names, shapes and dtypes of the model.
    metrics: evaluation metrics of the round that produced it.
    created_unix: registration time, seconds.
"""

import base64
import hashlib
import json
import os
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MANIFEST_KEYS = ("created_unix", "io_signature", "metrics", "parent", "sha256", "task", "version")
REASONS = ("unsigned", "bad_signature", "bad_manifest", "manifest_mismatch")


class ManifestRejected(ValueError):
    """A manifest that must not be trusted; `reason` is one of REASONS (a short metric label)."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


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


def sign(manifest_bytes: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """ed25519 signature (64 bytes) of the exact manifest bytes."""
    return private_key.sign(bytes(manifest_bytes))


def verify(
    manifest_bytes: bytes,
    signature: bytes,
    public_key: Ed25519PublicKey,
    *,
    sha256: str | None = None,
    version: int | None = None,
    task: str | None = None,
) -> dict:
    """Check the signature, then that the manifest describes this update; returns the manifest.

    Args:
        manifest_bytes: the manifest exactly as received.
        signature: its ed25519 signature.
        public_key: the fleet's model-signing public key.
        sha256: hex sha256 of the model bytes actually received; checked when given.
        version: version of the update; checked when given.
        task: task of the update; checked when given.

    Raises:
        ManifestRejected: reason "unsigned" (no manifest or no signature), "bad_signature" (the
            signature does not verify), "bad_manifest" (signed but not a JSON object) or
            "manifest_mismatch" (its sha256, version or task differ from the update's).
    """
    if not manifest_bytes or not signature:
        raise ManifestRejected("unsigned", "update carries no signed manifest")
    try:
        public_key.verify(bytes(signature), bytes(manifest_bytes))
    except InvalidSignature:
        raise ManifestRejected("bad_signature", "manifest signature does not verify with the public key") from None
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError as err:
        raise ManifestRejected("bad_manifest", f"manifest is not JSON: {err}") from None
    if not isinstance(manifest, dict):
        raise ManifestRejected("bad_manifest", "manifest is not a JSON object")
    for key, want in (("sha256", sha256), ("version", version), ("task", task)):
        if want is None:
            continue
        got = manifest.get(key)
        if key == "sha256":
            got, want = str(got).lower(), want.lower()
        if got != want:
            raise ManifestRejected("manifest_mismatch", f"manifest {key}={manifest.get(key)!r}, update has {want!r}")
    return manifest


# ---------------------------------------------------------------- keys (PEM files)


def _load_key(path: str, load, key_type: type, what: str):
    """A PEM key of `key_type` read with `load(data)`; ValueError names the path."""
    try:
        with open(path, "rb") as f:
            key = load(f.read())
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: cannot load ed25519 {what} key: {err}") from None
    if not isinstance(key, key_type):
        raise ValueError(f"{path}: not an ed25519 {what} key ({type(key).__name__})")
    return key


def load_private_key(path: str) -> Ed25519PrivateKey:
    """An unencrypted PEM ed25519 private key; ValueError names the path."""
    return _load_key(
        path, lambda data: serialization.load_pem_private_key(data, password=None), Ed25519PrivateKey, "private"
    )


def load_public_key(path: str) -> Ed25519PublicKey:
    """A PEM ed25519 public key; ValueError names the path."""
    return _load_key(path, serialization.load_pem_public_key, Ed25519PublicKey, "public")


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# ---------------------------------------------------------------- sidecars of stored models


def sidecar_path(model_path: str) -> str:
    """`<dir>/<name>.onnx` -> `<dir>/<name>.json`: the JSON that marks a stored model complete."""
    root, _ = os.path.splitext(model_path)
    return root + ".json"


def sidecar_fields(manifest_bytes: bytes, signature: bytes) -> dict:
    """The manifest and signature as sidecar JSON fields (text; the signature base64)."""
    if not manifest_bytes:
        return {}
    return {
        "manifest": bytes(manifest_bytes).decode("utf-8"),
        "signature": base64.b64encode(bytes(signature)).decode("ascii"),
    }


def verify_stored(model_path: str, onnx_bytes: bytes, public_key: Ed25519PublicKey, version: int | None = None) -> dict:
    """Re-verify a stored model against the signed manifest in its sidecar; returns the manifest.

    Raises:
        ManifestRejected: "unsigned" when the sidecar is missing or holds no signed manifest,
            else as `verify` (the manifest must name these bytes' sha256, and `version` when given).
    """
    try:
        with open(sidecar_path(model_path), "rb") as f:
            sidecar = json.load(f)
        manifest = str(sidecar.get("manifest", "")).encode("utf-8")
        signature = base64.b64decode(str(sidecar.get("signature", "")), validate=True)
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise ManifestRejected("unsigned", f"no readable signed sidecar for {model_path}: {err}") from None
    return verify(manifest, signature, public_key, sha256=sha256_hex(onnx_bytes), version=version)
