"""Model registry: global numbering, sha256 + canonical manifest, promote/rollback, one active."""

import hashlib
import json
import sqlite3

import pytest
from cloud_brain.experience.store_db import connect
from cloud_brain.models.manifest import canonical_json, sign_manifest
from cloud_brain.models.registry import ModelRegistry, RegistryError

IO = {"inputs": {"obs": [1, 3]}, "outputs": {"action": [1, 2]}}


@pytest.fixture
def activated():
    return []


@pytest.fixture
def registry(store_target, tmp_path, activated):
    reg = ModelRegistry(store_target, on_activate=activated.append, export_dir=str(tmp_path / "models"))
    yield reg
    reg.store.close()


def test_versions_are_global_and_carry_hash_and_manifest(registry, tmp_path):
    a = registry.register("arm", b"onnx-a", IO, status="active", now=100.0)
    c = registry.register("crane", b"onnx-c", IO, status="active")
    b = registry.register("arm", b"onnx-b", IO, parent=a.version, metrics={"cost": 1.5}, experience_to=7)
    assert [a.version, c.version, b.version] == [1, 2, 3]
    assert b.sha256 == hashlib.sha256(b"onnx-b").hexdigest()
    assert b.status == "candidate" and b.parent == 1 and b.experience_to == 7
    assert a.manifest == canonical_json(
        {
            "version": 1,
            "parent": 0,
            "task": "arm",
            "sha256": a.sha256,
            "io_signature": IO,
            "metrics": {},
            "created_unix": 100.0,
        }
    )
    assert b" " not in a.manifest and a.signature == b""
    assert json.loads(b.manifest)["metrics"] == {"cost": 1.5}
    assert (tmp_path / "models" / "v3_arm.onnx").read_bytes() == b"onnx-b"
    assert (tmp_path / "models" / "v3_arm.manifest.json").read_bytes() == b.manifest
    assert registry.get(3).onnx == b"onnx-b"
    assert registry.get(99) is None
    assert [m.version for m in registry.list("arm")] == [1, 3]
    assert registry.list()[0].onnx == b""


def test_promote_and_rollback(registry, activated):
    v1 = registry.register("arm", b"1", IO, status="active")
    v2 = registry.register("arm", b"2", IO, parent=v1.version)
    assert registry.active("arm").version == 1
    registry.promote(v2.version)
    assert registry.active("arm").version == 2
    assert registry.get(1).status == "retired"
    back = registry.rollback("arm")
    assert back.version == 1 and back.status == "active"
    assert registry.get(2).status == "retired"
    assert [m.version for m in activated] == [1, 2, 1]
    with pytest.raises(RegistryError) as err:
        registry.rollback("arm")  # version 1 has no parent
    assert err.value.code == "precondition"
    assert registry.active("arm").version == 1


def test_exactly_one_active_per_task(registry, store_target):
    registry.register("arm", b"1", IO, status="active")
    registry.register("arm", b"2", IO, parent=1, status="active")
    registry.register("crane", b"3", IO, status="active")
    conn = connect(store_target)
    rows = conn.execute("SELECT task, COUNT(*) FROM models WHERE status = 'active' GROUP BY task").fetchall()
    conn.close()
    assert sorted(tuple(r) for r in rows) == [("arm", 1), ("crane", 1)]
    with pytest.raises(sqlite3.IntegrityError), registry.store.transaction() as conn:
        conn.execute("UPDATE models SET status = 'active' WHERE version = 1")


def test_errors(registry):
    v1 = registry.register("arm", b"1", IO, status="active")
    bad = registry.register("arm", b"2", IO, parent=v1.version, status="rejected", reason="worse")
    with pytest.raises(RegistryError) as err:
        registry.promote(bad.version)
    assert err.value.code == "precondition"
    with pytest.raises(RegistryError) as err:
        registry.promote(42)
    assert err.value.code == "not_found"
    with pytest.raises(RegistryError) as err:
        registry.rollback("crane")
    assert err.value.code == "not_found"
    with pytest.raises(RegistryError):
        registry.register("crane", b"x", IO, parent=v1.version)  # parent of another task
    assert registry.promote(v1.version).version == 1  # already active: no-op
    with pytest.raises(ValueError, match="status"):
        registry.register("arm", b"x", IO, status="weird")


def test_sign_manifest_hook_is_empty_without_key():
    assert sign_manifest(b"{}") == b""
    # A configured but missing key is an error, never a silently unsigned model (tests/security).
    with pytest.raises(ValueError, match="signing_key"):
        sign_manifest(b"{}", "/some/key")
