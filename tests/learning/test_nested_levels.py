"""L0 unroll == the exported tick, and the L2 meta-learning step lowers its own loss."""

import numpy as np
import torch
from cloud_brain.learning import l0_fast_weights as l0fw
from cloud_brain.learning.l3_reservoir import Window
from cloud_brain.learning.meta_learning import _MetaParams, meta_learn_l0
from cloud_brain.learning.policy_export import export_onnx
from cloud_brain.learning.policy_net import NestedPolicy, NetSpec
from cloud_brain.learning.round_config import ConsolidationConfig
from nestor_core.policy_model import load_model
from nestor_core.policy_runtime import PolicyRuntime, RuntimeConfig

SPEC = NetSpec(
    task="t",
    controlled_joints=("a", "b"),
    passive_joints=(),
    kp=(50.0, 40.0),
    kd=(5.0, 4.0),
    effort_limit=(20.0, 15.0),
    obs_scale=(1.0,) * 8,
    hidden=8,
    key_features=4,
)


def test_unroll_matches_the_robot_runtime():
    net = NestedPolicy(SPEC, seed=2)
    with torch.no_grad():
        net.fast_init.normal_(0.0, 0.5)
    rng = np.random.default_rng(0)
    obs = (0.3 * rng.normal(size=(40, SPEC.obs_dim))).astype(np.float32)
    runtime = PolicyRuntime(load_model(export_onnx(net)), RuntimeConfig(l1_step_scale=0.0))
    robot = np.stack([runtime.step(o).fast_read for o in obs])
    with torch.no_grad():
        reads, _ = l0fw.unroll(net, torch.from_numpy(obs)[None])
    np.testing.assert_allclose(reads[0].numpy(), robot, rtol=1e-4, atol=1e-4)


def test_meta_learning_lowers_the_unrolled_loss_and_stays_in_bounds():
    net = NestedPolicy(SPEC, seed=3)
    rng = np.random.default_rng(1)
    windows = []
    for i in range(8):
        obs = (0.2 * rng.normal(size=(20, SPEC.obs_dim))).astype(np.float32)
        action = (2.0 + rng.normal(size=(20, 2))).astype(np.float32)
        windows.append(
            Window(
                "t",
                "r",
                i,
                0,
                obs,
                action,
                np.zeros((20, 2), np.float32),
                np.zeros(20, np.float32),
                np.ones(20, np.float32),
            )
        )
    config = ConsolidationConfig(meta_window=20, l3_window=20, meta_steps=30, meta_batch=8, meta_lr=0.05)
    report = meta_learn_l0(net, windows, config, seed=0)
    assert report["applied"] and report["loss_after"] < report["loss_before"]
    values = _MetaParams(net, config).values()
    for name, value in values.items():
        np.testing.assert_allclose(getattr(net, name).detach().numpy(), value.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert float(net.eta_max.detach()) <= 1.0 and float(net.beta_max.detach()) <= 0.01
