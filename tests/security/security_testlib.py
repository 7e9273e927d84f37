"""Test helpers for the security tests: a tiny valid policy, signed updates, TLS channels.

Importable by subprocesses too (conftest puts this directory on sys.path).
"""

import hashlib
import json
import pathlib

import grpc
from nestor_core import nestor_pb2
from nestor_core.manifest import build_manifest, sign
from nestor_core.tls import identity_files
from policy_testlib import ACT, IO, KEY, OBS, TASK, tiny_policy  # noqa: F401


def signed_update(version: int, onnx_bytes: bytes, key, parent: int = 0, task: str = TASK) -> nestor_pb2.ModelUpdate:
    """A genuine update: manifest over these bytes, signed with `key` (None = unsigned)."""
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    manifest = build_manifest(version, parent, task, digest, IO, {"cost": 1.0}, 1700000000.0)
    return nestor_pb2.ModelUpdate(
        version=version,
        parent=parent,
        task=task,
        sha256=digest,
        onnx=onnx_bytes,
        manifest=manifest,
        signature=sign(manifest, key) if key is not None else b"",
    )


def tampered_bytes(onnx_bytes: bytes) -> bytes:
    """One weight byte flipped: still a loadable model, different sha256."""
    bad = bytearray(onnx_bytes)
    bad[len(bad) // 2] ^= 0x01
    return bytes(bad)


def tampered_update(version: int, onnx_bytes: bytes, key, rewrite_manifest: bool = False) -> nestor_pb2.ModelUpdate:
    """Bytes changed and `sha256` updated to match, but the signature is over the genuine manifest.

    rewrite_manifest=False keeps the genuine manifest (it names the old sha256: manifest_mismatch);
    True rewrites the manifest to the new sha256 too (the signature no longer verifies: bad_signature).
    """
    update = signed_update(version, onnx_bytes, key)
    bad = tampered_bytes(onnx_bytes)
    digest = hashlib.sha256(bad).hexdigest()
    update.onnx = bad
    update.sha256 = digest
    if rewrite_manifest:
        manifest = json.loads(update.manifest)
        manifest["sha256"] = digest
        update.manifest = build_manifest(
            **{
                k: manifest[k]
                for k in ("version", "parent", "task", "sha256", "io_signature", "metrics", "created_unix")
            }
        )
    return update


def pem(pki: pathlib.Path, name: str) -> bytes:
    return (pki / name).read_bytes()


def client_credentials(pki: pathlib.Path, who: str) -> grpc.ChannelCredentials:
    """Mutual-TLS client credentials of `who` (robot0, admin, ...)."""
    return identity_files(pki, who).channel_credentials()


def initial_model(task_file: str, seed: int = 0) -> tuple[bytes, dict]:
    """The security servers' initial models: the tiny valid policy for kuka, fake bytes for arm."""
    import cloud_testlib

    if task_file.endswith("kuka.yaml"):
        return tiny_policy(0.5), IO
    return cloud_testlib.initial_model(task_file, seed)
