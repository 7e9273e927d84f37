"""Signed manifests: canonical JSON, ed25519 sign/verify and its reasons, cloud-side signing, config."""

import base64
import hashlib
import json

import pytest
from cloud_brain.config import CloudConfig, ConfigError, TlsConfig, is_loopback_host
from cloud_brain.models.manifest import sign_manifest
from cloud_brain.models.registry import ModelRegistry
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nestor_core import manifest as m
from security_testlib import IO, TASK, signed_update, tiny_policy

DIGEST = "ab" * 32


def _manifest(**overrides) -> bytes:
    values = dict(
        version=3, parent=2, task=TASK, sha256=DIGEST, io_signature=IO, metrics={"cost": 0.5}, created_unix=1700000000.5
    )
    values.update(overrides)
    return m.build_manifest(**values)


def test_manifest_is_canonical_json_with_every_field():
    data = _manifest()
    assert b" " not in data
    parsed = json.loads(data)
    assert tuple(parsed) == m.MANIFEST_KEYS == tuple(sorted(m.MANIFEST_KEYS))
    assert m.canonical_json(parsed) == data
    assert parsed["sha256"] == DIGEST and parsed["version"] == 3 and parsed["parent"] == 2


def test_sign_then_verify_returns_the_manifest(signing_key, public_key):
    data = _manifest()
    signature = m.sign(data, signing_key)
    assert len(signature) == 64
    got = m.verify(data, signature, public_key, sha256=DIGEST.upper(), version=3, task=TASK)
    assert got == json.loads(data)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d, s: (d, b""), "unsigned"),
        (lambda d, s: (b"", s), "unsigned"),
        (lambda d, s: (d.replace(b'"version":3', b'"version":4'), s), "bad_signature"),
        (lambda d, s: (d, s[:-1] + bytes([s[-1] ^ 1])), "bad_signature"),
        (lambda d, s: (d, Ed25519PrivateKey.generate().sign(d)), "bad_signature"),
    ],
)
def test_verify_refuses(signing_key, public_key, mutate, reason):
    data = _manifest()
    manifest, signature = mutate(data, m.sign(data, signing_key))
    with pytest.raises(m.ManifestRejected) as err:
        m.verify(manifest, signature, public_key, sha256=DIGEST, version=3)
    assert err.value.reason == reason


@pytest.mark.parametrize("expect", [{"sha256": "cd" * 32}, {"version": 4}, {"task": "crane"}])
def test_verify_refuses_a_manifest_of_another_update(signing_key, public_key, expect):
    data = _manifest()
    with pytest.raises(m.ManifestRejected) as err:
        m.verify(data, m.sign(data, signing_key), public_key, **expect)
    assert err.value.reason == "manifest_mismatch"


def test_signed_non_json_is_bad_manifest(signing_key, public_key):
    with pytest.raises(m.ManifestRejected) as err:
        m.verify(b"not json", m.sign(b"not json", signing_key), public_key)
    assert err.value.reason == "bad_manifest"


def test_key_loading_names_the_file(tmp_path, pki):
    with pytest.raises(ValueError, match="nope.pem"):
        m.load_public_key(str(tmp_path / "nope.pem"))
    with pytest.raises(ValueError, match="not an ed25519"):
        m.load_private_key(str(pki / "robot0.key"))  # an ECDSA TLS key


def test_cloud_signs_with_the_configured_key_and_the_registry_stores_it(tmp_path, pki, public_key):
    key_path = str(pki / "model_signing.pem")
    assert m.verify(b"{}", sign_manifest(b"{}", key_path), public_key) == {}
    with pytest.raises(ValueError, match="signing_key"):
        sign_manifest(b"{}", str(tmp_path / "missing.pem"))
    registry = ModelRegistry(tmp_path / "db.sqlite", signing_key=key_path)
    onnx = tiny_policy()
    v1 = registry.register(TASK, onnx, IO, status="active")
    v2 = registry.register(TASK, onnx + b"", IO, parent=1)
    for model in (v1, v2, registry.get(2)):
        got = m.verify(
            model.manifest,
            model.signature,
            public_key,
            sha256=hashlib.sha256(onnx).hexdigest(),
            version=model.version,
            task=TASK,
        )
        assert got["parent"] == model.parent and got["io_signature"] == IO
    unsigned = ModelRegistry(tmp_path / "db2.sqlite").register(TASK, onnx, IO)
    assert unsigned.signature == b"" and unsigned.manifest


def test_verify_stored_reads_the_sidecar(tmp_path, signing_key, public_key):
    data = tiny_policy()
    update = signed_update(5, data, signing_key)
    path = tmp_path / f"{TASK}-v5.onnx"
    path.write_bytes(data)
    with pytest.raises(m.ManifestRejected) as err:
        m.verify_stored(str(path), data, public_key)
    assert err.value.reason == "unsigned"  # no sidecar
    sidecar = {"version": 5, "sha256": update.sha256, **m.sidecar_fields(update.manifest, update.signature)}
    (tmp_path / f"{TASK}-v5.json").write_text(json.dumps(sidecar))
    assert m.verify_stored(str(path), data, public_key, version=5)["version"] == 5
    with pytest.raises(m.ManifestRejected) as err:
        m.verify_stored(str(path), data + b"x", public_key)
    assert err.value.reason == "manifest_mismatch"
    sidecar["signature"] = base64.b64encode(b"\0" * 64).decode()
    (tmp_path / f"{TASK}-v5.json").write_text(json.dumps(sidecar))
    with pytest.raises(m.ManifestRejected) as err:
        m.verify_stored(str(path), data, public_key)
    assert err.value.reason == "bad_signature"


# ------------------------------------------------------------------ config


def test_loopback_hosts():
    assert all(map(is_loopback_host, ["127.0.0.1", "127.3.2.1", "localhost", "::1", "[::1]"]))
    assert not any(map(is_loopback_host, ["0.0.0.0", "10.0.0.1", "example.com", "[::]", ""]))


def test_config_refuses_insecure_on_a_non_loopback_address(tmp_path):
    with pytest.raises(ConfigError, match="^tls: refusing"):
        CloudConfig(address="0.0.0.0:50051").validate()
    CloudConfig(address="localhost:0").validate()


def test_config_names_bad_tls_and_key_fields(tmp_path, pki):
    with pytest.raises(ConfigError, match="^tls.client_ca: must be set"):
        CloudConfig(tls=TlsConfig(cert=str(pki / "server.pem"), key=str(pki / "server.key"))).validate()
    with pytest.raises(ConfigError, match="^tls.cert: no such file"):
        tls = TlsConfig(cert="nope.pem", key=str(pki / "server.key"), client_ca=str(pki / "ca.pem"))
        CloudConfig(tls=tls).validate()
    with pytest.raises(ConfigError, match="^signing_key:"):
        CloudConfig(signing_key=str(pki / "model_signing.pub.pem")).validate()
    tls = TlsConfig(cert=str(pki / "server.pem"), key=str(pki / "server.key"), client_ca=str(pki / "ca.pem"))
    CloudConfig(address="0.0.0.0:0", tls=tls, signing_key=str(pki / "model_signing.pem")).validate()


def test_cloud_yaml_loads_tls_section(tmp_path, pki):
    from cloud_brain.config import load_config

    path = tmp_path / "cloud.yaml"
    path.write_text(
        f"address: '0.0.0.0:0'\ntls:\n  cert: {pki / 'server.pem'}\n  key: {pki / 'server.key'}\n"
        f"  client_ca: {pki / 'ca.pem'}\n"
    )
    assert load_config(path).tls.enabled
    path.write_text("tls:\n  certificate: x\n")
    with pytest.raises(ConfigError, match="^tls.certificate: unknown field"):
        load_config(path)
