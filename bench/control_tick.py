"""Figure 1, control tick: PolicyRuntime.step (and the node's tick path without ROS) vs bare session.run.

The three loops run interleaved in blocks, so load from other processes hits all of them alike.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

from bench.common import figure, make_model, pct, section_main

BLOCK = 500


def run(quick: bool, workdir: pathlib.Path) -> dict:
    from nestor_core.policy_model import load_model
    from nestor_core.policy_runtime import PolicyRuntime, RuntimeConfig
    from nestor_robot.recorder import ExperienceRecorder

    onnx_path, _ = make_model(workdir)
    model = load_model(onnx_path.read_bytes(), None, 1)
    ticks = 3000 if quick else 30000
    rng = np.random.default_rng(0)
    # A smooth random walk around zero: the graph's clamps and gates see ordinary values.
    obs_seq = np.cumsum(rng.normal(scale=0.01, size=(ticks, model.obs_dim)), axis=0).astype(np.float32)

    runtime = PolicyRuntime(model, RuntimeConfig())
    path_runtime = PolicyRuntime(model, RuntimeConfig())
    recorder = ExperienceRecorder("bench", model.task, model.obs_dim, model.act_dim, 4096)
    if model.l0_kind == "window":  # the same window length the runtime feeds (horizon - 1)
        k = RuntimeConfig().horizon - 1
        feeds = {
            "obs": obs_seq[:1].copy(),
            "prev_obs": obs_seq[:1].copy(),
            "prev_action": np.zeros((1, model.act_dim), np.float32),
            "window_dist": np.zeros((k, model.act_dim), np.float32),
            "window_action": np.zeros((k, model.act_dim), np.float32),
            "window_age": np.arange(k + 1, 0, -1, dtype=np.float32).reshape(-1, 1) - 1.0,
            "l0_scale": np.ones(1, np.float32),
        }
    else:
        feeds = {
            "obs": obs_seq[:1].copy(),
            "prev_obs": obs_seq[:1].copy(),
            "fast_state": model.fast_init.copy(),
            "l1_state": np.zeros((model.act_dim, model.key_dim), np.float32),
            "l0_scale": np.ones(1, np.float32),
        }
    session = model.session
    bare, step, path = [], [], []
    clock = time.perf_counter
    for _ in range(20):  # warm-up
        session.run(None, feeds)
    for start in range(0, ticks, BLOCK):
        block = obs_seq[start : start + BLOCK]
        for _ in block:
            t0 = clock()
            session.run(None, feeds)
            bare.append(clock() - t0)
        for obs in block:
            t0 = clock()
            runtime.step(obs)
            step.append(clock() - t0)
        for i, obs in enumerate(block):
            t0 = clock()
            out = path_runtime.step(obs)
            recorder.record(obs, out, 0.0, float(i), model.version, path_runtime.l1.state)
            path.append(clock() - t0)
        recorder.drain(1)  # the node's flusher thread does this every 0.1 s, off the tick

    us = 1e6
    b, s, p = (pct(np.asarray(x) * us, (50, 90, 99)) for x in (bare, step, path))

    def against_bare(q: dict, description: str) -> dict:
        return figure(q["p99"], b["p99"], "us", p50=q["p50"], limit_p50=b["p50"], description=description)

    figures = {
        "control_tick_p99_us": against_bare(
            s, "PolicyRuntime.step p99 vs bare onnxruntime session.run p99 (same graph, same feeds)"
        ),
        "policy_tick_path_p99_us": against_bare(
            p, "runtime.step + ExperienceRecorder.record p99 (node tick without ROS) vs bare session.run"
        ),
    }
    return {
        "figures": figures,
        "detail": {
            "ticks": ticks,
            "bare_session_run_us": b,
            "runtime_step_us": s,
            "tick_path_us": p,
            "model_dims": {"obs": model.obs_dim, "act": model.act_dim, "key": model.key_dim},
            "l0_kind": model.l0_kind,
        },
    }


if __name__ == "__main__":
    section_main(run, __doc__)
