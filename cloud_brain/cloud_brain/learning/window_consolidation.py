"""L2 for window policies: one consolidation round, read top to bottom.

  1. sample memories: the fleet's new transitions (every robot, whatever its dynamics), L3 replay
     of old and rare dynamics, and a fresh draw of simulated transitions of the robot model (the
     coverage the version-1 model was identified on), then offer the new rows to L3;
  2. train the slow weights: the inverse-dynamics regression (`window_model.fit_inverse_dynamics`)
     on new data mixed with replay, so the model explains what the fleet lived without forgetting
     what it explained before;
  3. meta-learn the fast level (rho, lam_c, lam_g, the prior c0/g0): through the closed-form ridge
     fit, on recorded windows, the objective is the adapted prediction of the next tick's
     disturbance (what the compensation will have to cancel), over every condition in the data;
  4. gate, closed loop in simulation: parent vs candidate on nominal and every gate scenario,
     taking the largest non-regressing step toward the trained weights;
  5. export the candidate ("window" ONNX graph).

The ID target does not depend on the policy that recorded the data (it is the plant's physics),
so transitions of every model version are usable as they are.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from cloud_brain.learning.gate import evaluate, gate_map_of, with_from_start
from cloud_brain.learning.l3_reservoir import read_round_inputs
from cloud_brain.learning.window_export import export_window_onnx, import_window_onnx, window_io_signature
from cloud_brain.learning.window_model import SysIdConfig, fit_inverse_dynamics, simulate_transitions
from cloud_brain.learning.window_policy import C_MAX, G_BOUNDS, ridge_fit


def transitions_of(sequences: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """{prev_obs, obs, action} of consecutive ticks inside each (obs [T, d], action [T, n]) run."""
    prev, nxt, act = [], [], []
    for obs, action in sequences:
        if len(obs) >= 2:
            prev.append(obs[:-1])
            nxt.append(obs[1:])
            act.append(action[:-1])
    if not prev:
        return {
            "prev_obs": np.zeros((0, 0), np.float32),
            "obs": np.zeros((0, 0), np.float32),
            "action": np.zeros((0, 0), np.float32),
        }
    return {"prev_obs": np.concatenate(prev), "obs": np.concatenate(nxt), "action": np.concatenate(act)}


def _mix(*parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    parts = [p for p in parts if len(p["action"])]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("prev_obs", "obs", "action")} if parts else parts


def meta_learn_window(net, sequences, window: int, steps: int, lr: float, seconds: float, seed: int) -> dict:
    """Fit rho_c, rho_g, lam_c, lam_g and the prior to predict each tick's disturbance from its window.

    For tick t of a recorded run the fast level fits (c, g) on the `window` transitions before it
    (ages 1..window; at run time age 0 is the newest transition, here the one just before t) and
    predicts d~_t = c + g u~_t. Loss: mean squared error in effort limits, c and g clamped as in
    the graph. Updates `net` only if the loss went down.
    """
    started = time.monotonic()
    limit = net.u_max
    dists, acts = [], []
    with torch.no_grad():
        for obs, action in sequences:
            if len(obs) < window + 2:
                continue
            o, a = torch.from_numpy(obs), torch.from_numpy(action)
            d = net.disturbance(o[:-1], o[1:], a[:-1]) / limit  # [T-1, n], transition i -> i+1
            dists.append(d)
            acts.append(a[:-1] / limit)
    if not dists or lr <= 0 or steps <= 0:
        return {"steps": 0, "windows": 0}
    # Every (window, target) pair: windows [B, W, n] of the transitions before each target.
    win_d = torch.cat([d.unfold(0, window + 1, 1).permute(0, 2, 1) for d in dists])  # [B, W+1, n]
    win_u = torch.cat([u.unfold(0, window + 1, 1).permute(0, 2, 1) for u in acts])
    gen = torch.Generator().manual_seed(seed)
    if len(win_d) > 4096:
        keep = torch.randperm(len(win_d), generator=gen)[:4096]
        win_d, win_u = win_d[keep], win_u[keep]
    past_d, past_u, target_d, target_u = win_d[:, :-1], win_u[:, :-1], win_d[:, -1], win_u[:, -1]
    age = torch.arange(window, 0, -1, dtype=torch.float32).reshape(1, -1, 1) - 1.0  # newest = age 0
    age = age.expand(len(past_d), -1, -1)
    params = [net.rho_logit, net.rho_g_logit, net.log_lam_c, net.log_lam_g, net.prior]
    saved = [p.detach().clone() for p in params]
    optimiser = torch.optim.Adam(params, lr=lr)

    def loss_of() -> torch.Tensor:
        lam_c, lam_g = net.lams()
        prior = net.prior.unsqueeze(0).expand(len(past_d), -1, -1)
        c, g = ridge_fit(past_d, past_u, age, prior, net.log_rho(), net.log_rho_g(), lam_c, lam_g)
        pred = c.clamp(-C_MAX, C_MAX) + g.clamp(*G_BOUNDS) * target_u
        return ((pred - target_d) ** 2).mean()

    with torch.no_grad():
        before = float(loss_of())
    done = 0
    for _ in range(steps):
        if time.monotonic() - started > seconds:
            break
        loss = loss_of()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            net.log_lam_c.clamp_(math.log(1e-5), math.log(10.0))
            net.log_lam_g.clamp_(math.log(1e-5), math.log(1e3))
            net.rho_logit.clamp_(-3.0, 5.0)  # rho in [0.05, 0.993]
            net.rho_g_logit.clamp_(-3.0, 6.0)
            net.prior.clamp_(-0.2, 0.2)
        done += 1
    with torch.no_grad():
        after = float(loss_of())
        if not (math.isfinite(after) and after < before):
            for p, v in zip(params, saved, strict=True):
                p.copy_(v)
            after = before
        rho = torch.sigmoid(net.rho_logit).reshape(-1).tolist()
        rho_g = torch.sigmoid(net.rho_g_logit).reshape(-1).tolist()
        lam_c, lam_g = (float(x.reshape(())) for x in net.lams())
    return {
        "steps": done,
        "windows": len(past_d),
        "loss_before": before,
        "loss_after": after,
        "rho": rho,
        "rho_g": rho_g,
        "lam_c": lam_c,
        "lam_g": lam_g,
        "seconds": time.monotonic() - started,
    }


def blend_part(parent, trained, alpha: float, part: str, blend):
    """The blend() of one level.

    `part` is "all", "slow" (the inverse dynamics, id* parameters) or "fast" (the fast level's
    meta-parameters).
    """
    out = blend(parent, trained, alpha)
    if part == "all":
        return out
    with torch.no_grad():
        for (name, p_out), p_par in zip(out.named_parameters(), parent.parameters(), strict=True):
            if name.startswith("id") != (part == "slow"):
                p_out.copy_(p_par)
    if part == "slow":
        out.l1_step = parent.l1_step
    return out


def lived_scenarios(batches, act_dim: int, eval_shift_s: float, min_gain_change: float = 0.1) -> dict:
    """Gate scenarios for the conditions the robots reported with their experience.

    A window robot reports the running average of its fits (c, g) per joint (the graph's
    `update_dir`, averaged per chunk by the runtime; not fed back into control), uploaded with
    every chunk in the batch's `l1_state` field. A robot whose mean 1 + g differs from 1 by at
    least `min_gain_change` lived an actuator-gain change of that size: the gate checks it
    (rounded to 0.05, one per value).
    Payloads and biases are position-dependent in (c, g) and are not inferred here.
    """
    latest = {}
    for batch in batches:
        state = np.asarray(batch.l1_state, np.float32).reshape(-1)
        if state.size == 2 * act_dim and np.all(np.isfinite(state)):
            latest[batch.robot_id] = state.reshape(act_dim, 2)
    out = {}
    for state in latest.values():
        gain = 1.0 + float(np.mean(state[:, 1]))
        if abs(gain - 1.0) >= min_gain_change:
            gain = round(round(gain / 0.05) * 0.05, 2)
            out[f"actuator_gain:{gain:g} (lived)"] = [f"actuator_gain:{gain:g}@{eval_shift_s:g}"]
    return out


def run_window_round(
    request: dict, config, task, store_cls, reservoir_cls, reservoir_config, gate_scenarios, blend
) -> dict:
    """One round for a window parent; the same request/response contract as l2 run_round."""
    from nestor_sim.tracking_env import TrackingEnv

    started = time.time()
    seed = int(request.get("seed", 0))
    parent = import_window_onnx(request["parent_onnx"])
    new_rows, replay_windows, l3_update, l3_stats = read_round_inputs(
        request, config.replay_fraction > 0, task.effort_limit, store_cls, reservoir_cls, reservoir_config
    )
    new_batches = [batch for _, batch in new_rows]
    new_runs = [(b.obs, b.action) for b in new_batches][-max(1, config.max_transitions // 100) :]
    replay_runs = [(w.obs, w.action) for w in replay_windows]
    new = transitions_of(new_runs)
    if len(new["action"]) < config.batch_size:
        return {
            "onnx": request["parent_onnx"],
            "accepted": False,
            "reason": f"only {len(new['action'])} usable transitions (< batch {config.batch_size})",
            "metrics": {"samples": len(new["action"]), "l3": {**l3_stats, "update": l3_update}},
        }
    env = TrackingEnv(task)
    try:
        model_samples = simulate_transitions(env, SysIdConfig(samples=4000), seed + 7919)
        trained = import_window_onnx(request["parent_onnx"])
        replay = _mix(transitions_of(replay_runs), model_samples)
        fraction = config.replay_fraction if config.replay_fraction > 0 else 0.0
        if config.id_learning_rate <= 0:
            training = {"steps": 0}
        else:
            training = fit_inverse_dynamics(
                trained,
                new,
                config.steps,
                config.id_learning_rate,
                config.batch_size,
                seed,
                replay=replay if fraction else None,
                replay_fraction=fraction,
            )
        meta = meta_learn_window(
            trained,
            new_runs + replay_runs,
            min(config.meta_window, 32),
            config.meta_steps,
            config.meta_lr,
            config.meta_seconds,
            seed,
        )
        if config.gate:
            scenarios = with_from_start(
                {**gate_scenarios(task, config), **lived_scenarios(new_batches, task.act_dim, config.eval_shift_s)}
            )
            report = {"scenarios": {k: list(v) for k, v in scenarios.items()}, "tried": []}
            gate_map = gate_map_of(request)

            def costs(onnx_bytes: bytes) -> dict:
                return evaluate(onnx_bytes, env, scenarios, config, seed, gate_map)

            baseline = costs(request["parent_onnx"])
            report["parent"] = baseline
            candidate_onnx = None
            # Each level's update is also tried on its own: the slow weights (inverse dynamics)
            # alone, then the fast level's meta-parameters alone, so one that hurts does not block
            # the other.
            tries = [(a, "all") for a in config.blend_steps] + [(0.25, "slow"), (0.05, "slow"), (1.0, "fast")]
            for alpha, part in tries:
                onnx_bytes = export_window_onnx(blend_part(parent, trained, alpha, part, blend))
                got = costs(onnx_bytes)
                regressed = [k for k, c in got.items() if not c <= baseline[k] * (1.0 + config.gate_tolerance)]
                report["tried"].append({"alpha": alpha, "part": part, "costs": got, "regressed": regressed})
                if not regressed:
                    report["accepted_alpha"] = alpha
                    report["accepted_part"] = part
                    candidate_onnx = onnx_bytes
                    break
        else:
            candidate_onnx, report = export_window_onnx(trained), {"skipped": True, "accepted_alpha": 1.0, "parent": {}}
    finally:
        env.close()
    accepted = candidate_onnx is not None
    if accepted:
        reason = (
            f"no regression on {', '.join(report['parent']) or 'nothing (gate off)'} "
            f"(step {report['accepted_alpha']:g}, {report.get('accepted_part', 'all')})"
        )
    else:
        candidate_onnx = export_window_onnx(trained)
        worst = report["tried"][-1]["regressed"] if report["tried"] else []
        reason = f"regressed on {', '.join(worst)} at every step {list(config.blend_steps)} of every level"
    return {
        "onnx": candidate_onnx,
        "accepted": accepted,
        "reason": reason,
        "metrics": {
            "training": training,
            "meta": {"window": meta},
            "gate": report,
            "l3": {**l3_stats, "update": l3_update, "replay_windows": len(replay_windows)},
            "round_seconds": time.time() - started,
            "seed": seed,
            "kind": "window",
        },
        "io_signature": window_io_signature(trained.spec),
    }
