"""Model manifests on the cloud side: canonical JSON (nestor_core.manifest) and signing with a key file.

The manifest format and the signature scheme live in the robot-safe nestor_core.manifest, so the
cloud signs exactly what robots verify.
"""

from __future__ import annotations

import functools
import os

from nestor_core.manifest import build_manifest, canonical_json, load_private_key, sha256_hex, sign

__all__ = ["build_manifest", "canonical_json", "sha256_hex", "sign_manifest"]


@functools.lru_cache(maxsize=4)
def _private_key(path: str, mtime_ns: int):
    return load_private_key(path)


def sign_manifest(manifest_bytes: bytes, key_path: str = "") -> bytes:
    """ed25519 signature of the manifest with the PEM key at `key_path`; b"" when no key is configured.

    Raises:
        ValueError: the key file is missing or is not an ed25519 private key (never silently unsigned).
    """
    if not key_path:
        return b""
    try:
        mtime = os.stat(key_path).st_mtime_ns
    except OSError as err:
        raise ValueError(f"signing_key: cannot read {key_path}: {err.strerror}") from None
    return sign(manifest_bytes, _private_key(key_path, mtime))
