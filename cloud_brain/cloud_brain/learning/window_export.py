"""Export a `WindowPolicy` to the robot's "window" ONNX graph, and import it back.

Written op by op with onnx.helper, mirroring `WindowPolicy.forward` (a test compares them); the
ONNX file is the checkpoint (`import_window_onnx` rebuilds the trainable module).
"""

import json

import numpy as np
import onnx
import torch
from nestor_core import policy_io
from onnx import numpy_helper

from cloud_brain.learning.policy_export import _finish_model, _Graph, _np
from cloud_brain.learning.window_policy import C_MAX, G_BOUNDS, MAX_AGE, SANITIZE_OBS, WindowPolicy, WindowSpec

_WEIGHTS = ("u_max", "x_mean", "x_std", "a_std", "wn", "zeta", "prior")
_LAYERS = ("id1", "id2", "id_h", "id_m")


def export_window_onnx(net: WindowPolicy, metadata: dict[str, str] | None = None) -> bytes:
    """Serialise `net` as a window policy graph; returns the ONNX bytes."""
    spec = net.spec
    n, p, m, d = spec.act_dim, len(spec.passive_joints), spec.n_joints, spec.obs_dim
    g = _Graph()
    obs, prev = g.sanitize("obs", SANITIZE_OBS), g.sanitize("prev_obs", SANITIZE_OBS)
    u_max = g.const(_np(net.u_max), "u_max")
    prev_action = g.clamp(g.sanitize("prev_action", SANITIZE_OBS), u_max)
    w_dist, w_act = g.sanitize("window_dist", SANITIZE_OBS), g.sanitize("window_action", SANITIZE_OBS)
    age = g.op("Clip", g.sanitize("window_age", MAX_AGE), g.const(0.0), g.const(MAX_AGE))
    scale = g.op("Clip", g.sanitize("l0_scale", 1.0), g.const(0.0), g.const(1.0))
    weights = {name: g.const(_np(getattr(net, name)), name) for name in _WEIGHTS if name != "u_max"}
    weights["u_max"] = u_max
    layers = {}
    for name in _LAYERS:
        layer = getattr(net, name)
        layers[name] = (g.const(_np(layer.weight).T, f"{name}.weight_t"), g.const(_np(layer.bias), f"{name}.bias"))

    def cols(x: str, lo: int, hi: int) -> str:
        return g.slice_cols(x, lo, hi)

    def joint_state(o: str) -> tuple[str, str]:
        if p == 0:
            return cols(o, 0, n), cols(o, n, 2 * n)
        q = g.op("Concat", cols(o, 0, n), cols(o, 4 * n, 4 * n + p), axis=1)
        qd = g.op("Concat", cols(o, n, 2 * n), cols(o, 4 * n + p, 4 * n + 2 * p), axis=1)
        return q, qd

    def linear(x: str, name: str) -> str:
        w, b = layers[name]
        return g.op("Add", g.op("MatMul", x, w), b)

    def tau(q: str, qd: str, accel: str) -> str:
        x = g.op("Div", g.op("Sub", g.op("Concat", q, qd, axis=1), weights["x_mean"]), weights["x_std"])
        z = g.op("Tanh", linear(g.op("Tanh", linear(x, "id1")), "id2"))
        mass = g.op("Reshape", linear(z, "id_m"), g.const([n, m], dtype=np.int64))
        a = g.op("Transpose", g.op("Div", accel, weights["a_std"]), perm=[1, 0])
        return g.op(
            "Mul", g.op("Add", linear(z, "id_h"), g.op("Transpose", g.op("MatMul", mass, a), perm=[1, 0])), u_max
        )

    rate = g.const(float(spec.control_rate_hz))
    q0, qd0 = joint_state(prev)
    q1, qd1 = joint_state(obs)
    d_new = g.op("Sub", tau(q0, qd0, g.op("Mul", g.op("Sub", qd1, qd0), rate)), prev_action, out="disturbance")
    qr, qdr = cols(obs, 2 * n, 3 * n), cols(obs, 3 * n, 4 * n)
    a_ref = g.op("Mul", g.op("Sub", qdr, cols(prev, 3 * n, 4 * n)), rate)
    wn, zeta = weights["wn"], weights["zeta"]
    kp, kd = g.op("Mul", wn, wn), g.op("Mul", g.op("Mul", g.const(2.0), zeta), wn)
    a_cmd = g.op(
        "Add",
        a_ref,
        g.op(
            "Add", g.op("Mul", kp, g.op("Sub", qr, cols(q1, 0, n))), g.op("Mul", kd, g.op("Sub", qdr, cols(qd1, 0, n)))
        ),
    )
    if p:
        a_cmd = g.op("Concat", a_cmd, g.op("Mul", cols(qd1, n, m), g.const(0.0)), axis=1)
    u_d = g.op("Identity", tau(q1, qd1, a_cmd), out="feedforward")

    # L0: the windowed ridge fit, then the compensation.
    dist = g.op("Div", g.op("Concat", w_dist, d_new, axis=0), u_max)
    act = g.op("Div", g.op("Concat", w_act, prev_action, axis=0), u_max)
    log_rho_c = g.const(_np(torch.nn.functional.logsigmoid(net.rho_logit)), "log_rho")
    log_rho_g = g.const(_np(torch.nn.functional.logsigmoid(net.rho_g_logit)), "log_rho_g")
    w_c, w_g = g.op("Exp", g.op("Mul", age, log_rho_c)), g.op("Exp", g.op("Mul", age, log_rho_g))
    axis0 = g.const([0], dtype=np.int64)

    def total(x: str) -> str:
        return g.op("ReduceSum", x, axis0, keepdims=1)

    lam_c_v, lam_g_v = (float(torch.exp(t.detach()).reshape(())) for t in (net.log_lam_c, net.log_lam_g))
    lam_c, lam_g = g.const(lam_c_v, "lam_c"), g.const(lam_g_v, "lam_g")
    prior = weights["prior"]  # [n, 2]: the meta-learned initial state
    c0 = g.op("Transpose", cols(prior, 0, 1), perm=[1, 0])
    g0 = g.op("Transpose", cols(prior, 1, 2), perm=[1, 0])
    s0 = g.op("Add", total(w_g), g.const(1e-9))
    du = g.op("Sub", act, g.op("Div", total(g.op("Mul", w_g, act)), s0))
    dd = g.op("Sub", dist, g.op("Div", total(g.op("Mul", w_g, dist)), s0))
    wdu = g.op("Mul", w_g, du)
    gg = g.op(
        "Div",
        g.op("Add", total(g.op("Mul", wdu, dd)), g.op("Mul", lam_g, g0)),
        g.op("Add", total(g.op("Mul", wdu, du)), lam_g),
    )
    g_used = g.op("Clip", gg, g.const(G_BOUNDS[0]), g.const(G_BOUNDS[1]))
    resid = g.op("Sub", dist, g.op("Mul", g_used, act))
    c = g.op("Div", g.op("Add", total(g.op("Mul", w_c, resid)), g.op("Mul", lam_c, c0)), g.op("Add", total(w_c), lam_c))

    def comp(ud: str, c_: str, g_: str) -> str:
        c_ = g.op("Clip", c_, g.const(-C_MAX), g.const(C_MAX))
        g_ = g.op("Clip", g_, g.const(G_BOUNDS[0]), g.const(G_BOUNDS[1]))
        target = g.op("Div", g.op("Sub", ud, c_), g.op("Add", g.const(1.0), g_))
        return g.op("Add", ud, g.op("Mul", scale, g.op("Sub", target, ud))), c_, g_

    ud = g.op("Div", u_d, u_max)
    blended, c_clip, g_clip = comp(ud, c, gg)
    raw = g.op("Mul", blended, u_max)
    g.op("Max", g.op("Min", raw, u_max), g.op("Neg", u_max), out="action")
    g.op("Sub", raw, u_d, out="fast_read")
    prior_only, _, _ = comp(ud, c0, g0)
    g.op("Mul", g.op("Sub", prior_only, ud), u_max, out="prior_read")
    g.op(
        "Add",
        g.op("Sub", qdr, cols(obs, n, 2 * n)),
        g.op("Mul", g.const(5.0), g.op("Sub", qr, cols(obs, 0, n))),
        out="surprise",
    )
    g.op("Transpose", g.op("Concat", c_clip, g_clip, axis=0), perm=[1, 0], out="update_dir")

    meta = {
        policy_io.FAST_INIT: json.dumps(np.zeros((n, 2)).tolist()),
        policy_io.L0_KIND: policy_io.WINDOW,
        "nestor.hidden": str(spec.hidden),
        "nestor.rho_logit": json.dumps(_np(net.rho_logit).ravel().tolist()),
        "nestor.rho_g_logit": json.dumps(_np(net.rho_g_logit).ravel().tolist()),
        "nestor.log_lam": json.dumps(
            [float(net.log_lam_c.detach().reshape(())), float(net.log_lam_g.detach().reshape(()))]
        ),
    }
    return _finish_model(
        g,
        "nestor_window_policy",
        policy_io.window_shapes(d, n),
        policy_io.WINDOW_INPUTS,
        policy_io.WINDOW_OUTPUTS,
        spec,
        2,
        net,
        {**meta, **(metadata or {})},
    )


def window_io_signature(spec: WindowSpec) -> dict:
    shapes = policy_io.window_shapes(spec.obs_dim, spec.act_dim)
    return {
        "inputs": {name: list(shapes[name]) for name in policy_io.WINDOW_INPUTS},
        "outputs": {name: list(shapes[name]) for name in policy_io.WINDOW_OUTPUTS},
    }


def is_window_onnx(onnx_bytes: bytes) -> bool:
    model = onnx.load_from_string(onnx_bytes)
    return any(p.key == policy_io.L0_KIND and p.value == policy_io.WINDOW for p in model.metadata_props)


def import_window_onnx(onnx_bytes: bytes) -> WindowPolicy:
    """Rebuild the trainable WindowPolicy from an exported window graph."""
    model = onnx.load_from_string(onnx_bytes)
    meta = {p.key: p.value for p in model.metadata_props}
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    spec = WindowSpec(
        task=meta["nestor.task"],
        controlled_joints=tuple(json.loads(meta["nestor.controlled_joints"])),
        passive_joints=tuple(json.loads(meta["nestor.passive_joints"])),
        effort_limit=tuple(weights["u_max"].ravel().tolist()),
        control_rate_hz=float(meta["nestor.control_rate_hz"]),
        wn=float(weights["wn"].ravel()[0]),
        zeta=float(weights["zeta"].ravel()[0]),
        hidden=int(meta["nestor.hidden"]),
    )
    net = WindowPolicy(spec)
    with torch.no_grad():
        for name in _WEIGHTS:
            getattr(net, name).copy_(torch.tensor(weights[name]).reshape(getattr(net, name).shape))
        for name in _LAYERS:
            layer = getattr(net, name)
            layer.weight.copy_(torch.tensor(weights[f"{name}.weight_t"].T))
            layer.bias.copy_(torch.tensor(weights[f"{name}.bias"]).reshape(layer.bias.shape))
        net.rho_logit.copy_(torch.tensor(json.loads(meta["nestor.rho_logit"])).reshape(net.rho_logit.shape))
        net.rho_g_logit.copy_(torch.tensor(json.loads(meta["nestor.rho_g_logit"])).reshape(net.rho_g_logit.shape))
        lam_c, lam_g = json.loads(meta["nestor.log_lam"])
        net.log_lam_c.fill_(lam_c)
        net.log_lam_g.fill_(lam_g)
    net.l1_step, net.l1_decay = float(meta["nestor.l1_step"]), float(meta["nestor.l1_decay"])
    return net
