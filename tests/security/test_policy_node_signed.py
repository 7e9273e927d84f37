"""The policy node re-verifies the signed manifest in weight_sync's sidecar when it holds the public key.

In-process node on its own rclpy context and a private domain (no messages are exchanged: the
loader's `offer` is called directly, as its thread would).
"""

import hashlib
import json
import os
import random

import pytest
from nestor_robot.weight_sync import WeightSync, WeightSyncConfig
from security_testlib import TASK, signed_update, tampered_bytes, tiny_policy


@pytest.fixture
def context(monkeypatch):
    import rclpy

    domain = 1 + (os.getpid() * 17 + random.randrange(1000)) % 100
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    yield ctx
    rclpy.shutdown(context=ctx)


@pytest.fixture
def models(tmp_path, pki, signing_key):
    """v1 and v3 stored (and signed sidecars written) by a weight_sync holding the key."""
    sync = WeightSync(
        "127.0.0.1:1",
        "robot0",
        TASK,
        str(tmp_path / "models"),
        lambda info: None,
        WeightSyncConfig(public_key_path=str(pki / "model_signing.pub.pem")),
    )
    return {v: sync.handle_update(signed_update(v, tiny_policy(0.1 * v), signing_key)) for v in (1, 3)}


def make_node(context, pki, **params):
    from nestor_robot.policy_node import PolicyNode
    from rclpy.parameter import Parameter

    values = {"robot_id": "robot0", "task": TASK, "public_key_path": str(pki / "model_signing.pub.pem"), **params}
    node = PolicyNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    node.start_alone()  # configure + activate, as `policy_node` alone does
    return node


def test_policy_node_loads_only_signed_models(context, pki, models):
    node = make_node(context, pki, initial_model=models[1]["path"], initial_model_version=1)
    try:
        assert node.model_version == 1
        # A stored file replaced behind weight_sync's back, announced with its new sha256.
        v3 = models[3]
        bad = tampered_bytes(open(v3["path"], "rb").read())
        with open(v3["path"], "wb") as f:
            f.write(bad)
        node.loader.offer(json.dumps(dict(v3, sha256=hashlib.sha256(bad).hexdigest())), node.runtime.model)
        assert node.loader.pending is None and node.model_version == 1
        assert [r["reason"] for r in node.loader.reject_log] == ["manifest_mismatch"]
        # A model with no signed sidecar at all.
        loose = os.path.join(os.path.dirname(v3["path"]), f"{TASK}-v5.onnx")
        data = tiny_policy(0.5)
        with open(loose, "wb") as f:
            f.write(data)
        announcement = {"version": 5, "path": loose, "sha256": hashlib.sha256(data).hexdigest()}
        node.loader.offer(json.dumps(announcement), node.runtime.model)
        assert [r["reason"] for r in node.loader.reject_log] == ["manifest_mismatch", "unsigned"]
        assert node.loader.pending is None and node.model_version == 1
    finally:
        node.teardown()
        node.destroy_node()


def test_policy_node_accepts_a_verified_announcement(context, pki, models):
    node = make_node(context, pki, initial_model=models[1]["path"], initial_model_version=1)
    try:
        node.loader.offer(json.dumps(models[3]), node.runtime.model)
        assert node.loader.pending is not None and node.loader.pending.version == 3 and not node.loader.reject_log
    finally:
        node.teardown()
        node.destroy_node()


def test_unsigned_initial_model_is_a_config_error(context, pki, tmp_path):
    from nestor_core.params import ConfigError

    path = tmp_path / "loose.onnx"
    path.write_bytes(tiny_policy())
    with pytest.raises(ConfigError, match="initial_model.*unsigned"):
        make_node(context, pki, initial_model=str(path))
