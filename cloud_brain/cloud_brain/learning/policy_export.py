"""Export a `NestedPolicy` to the ONNX graph the robot runs (see nestor_core.policy_io).

The graph is written op by op with onnx.helper from the module's weights, so it needs no
exporter package and matches `NestedPolicy.forward` exactly (a test compares them).
"""

import json

import numpy as np
import onnx
import torch
from nestor_core import policy_io
from onnx import TensorProto, helper, numpy_helper

from cloud_brain.learning.policy_net import SANITIZE_OBS, L0Defaults, NestedPolicy, NetSpec

OPSET = 17


class _Graph:
    """Tiny helper: named constants and nodes with generated output names."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def const(self, value, name: str | None = None, dtype=np.float32) -> str:
        self._n += 1
        name = name or f"c{self._n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        self._n += 1
        out = out or f"t{self._n}_{op_type.lower()}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def slice_cols(self, x: str, start: int, stop: int) -> str:
        return self.op(
            "Slice",
            x,
            self.const([start], dtype=np.int64),
            self.const([stop], dtype=np.int64),
            self.const([1], dtype=np.int64),
        )

    def sanitize(self, x: str, bound: float) -> str:
        clean = self.op("Where", self.op("IsNaN", x), self.const(0.0), x)
        return self.op("Clip", clean, self.const(-bound), self.const(bound))

    def clamp(self, x: str, bound_name: str) -> str:
        return self.op("Max", self.op("Min", x, bound_name), self.op("Neg", bound_name))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def export_onnx(net: NestedPolicy, metadata: dict[str, str] | None = None) -> bytes:
    """Serialise `net` as the nestor policy graph; returns the ONNX bytes."""
    spec = net.spec
    n, d, kdim = spec.act_dim, spec.obs_dim, spec.key_dim
    m_max = float(net.m_max)
    g = _Graph()
    g.const(m_max, "m_max")  # recorded for import_onnx; the Clip nodes use their own copies.
    obs = g.sanitize("obs", SANITIZE_OBS)
    prev = g.sanitize("prev_obs", SANITIZE_OBS)
    fast = g.sanitize("fast_state", m_max)
    l1 = g.sanitize("l1_state", m_max)
    scale = g.op("Clip", g.sanitize("l0_scale", 1.0), g.const(0.0), g.const(1.0))

    obs_scale = g.const(_np(net.obs_scale), "obs_scale")
    wk, bk, kb = g.const(_np(net.wk), "wk"), g.const(_np(net.bk), "bk"), g.const(_np(net.key_bias), "key_bias")

    def key(x: str) -> str:
        feats = g.op("Tanh", g.op("Add", g.op("MatMul", g.op("Mul", x, obs_scale), wk), bk))
        k = g.op("Concat", feats, kb, axis=1)
        sq = g.op("ReduceSum", g.op("Mul", k, k), g.const([1], dtype=np.int64), keepdims=1)
        return g.op("Div", k, g.op("Sqrt", g.op("Add", sq, g.const(1e-6))))

    q, qd = g.slice_cols(obs, 0, n), g.slice_cols(obs, n, 2 * n)
    qr, qdr = g.slice_cols(obs, 2 * n, 3 * n), g.slice_cols(obs, 3 * n, 4 * n)
    err, derr = g.op("Sub", qr, q), g.op("Sub", qdr, qd)
    prior = g.op("Add", g.op("Mul", g.const(_np(net.kp), "kp"), err), g.op("Mul", g.const(_np(net.kd), "kd"), derr))

    # L2 slow weights: the residual MLP.
    h = g.op("Mul", obs, obs_scale)
    linears = [m for m in net.mlp if isinstance(m, torch.nn.Linear)]
    for i, layer in enumerate(linears):
        h = g.op(
            "Add",
            g.op("MatMul", h, g.const(_np(layer.weight).T, f"mlp{i}.weight_t")),
            g.const(_np(layer.bias), f"mlp{i}.bias"),
        )
        if i < len(linears) - 1:
            h = g.op("Tanh", h)
    slow = h

    # L0: surprise, gates, delta-rule update, read.
    k_prev, k = key(prev), key(obs)
    s = g.op("Add", derr, g.op("Mul", g.const(_np(net.lam), "lam"), err))
    e_max = g.const(_np(net.e_max), "e_max")
    e = g.clamp(g.op("Mul", g.const(_np(net.gain), "gain"), s), e_max)
    snorm = g.op(
        "Sqrt",
        g.op("Add", g.op("ReduceSum", g.op("Mul", s, s), g.const([1], dtype=np.int64), keepdims=1), g.const(1e-12)),
    )
    gate, decay = g.const(_np(net.gate), "gate"), g.const(_np(net.decay), "decay")
    gate_a, gate_b = g.slice_cols(gate, 0, 1), g.slice_cols(gate, 1, 2)
    decay_a, decay_b = g.slice_cols(decay, 0, 1), g.slice_cols(decay, 1, 2)
    eta = g.op(
        "Mul",
        g.op("Mul", scale, g.const(_np(net.eta_max), "eta_max")),
        g.op("Sigmoid", g.op("Add", g.op("Mul", snorm, gate_a), gate_b)),
    )
    beta = g.op(
        "Mul",
        g.op("Mul", scale, g.const(_np(net.beta_max), "beta_max")),
        g.op("Sigmoid", g.op("Add", g.op("Mul", snorm, decay_a), decay_b)),
    )
    update_dir = g.op("MatMul", g.op("Transpose", e, perm=[1, 0]), k_prev, out="update_dir")
    kept = g.op("Mul", g.op("Sub", g.const(1.0), beta), fast)
    fast_out = g.op(
        "Clip", g.op("Add", kept, g.op("Mul", eta, update_dir)), g.const(-m_max), g.const(m_max), out="fast_state_out"
    )
    fast_read = g.op("MatMul", k, g.op("Transpose", fast_out, perm=[1, 0]), out="fast_read")
    l1_read = g.op("MatMul", k, g.op("Transpose", l1, perm=[1, 0]), out="l1_read")
    raw = g.op("Add", g.op("Add", g.op("Add", prior, slow), fast_read), l1_read)
    u_max = g.const(_np(net.u_max), "u_max")
    g.op("Max", g.op("Min", raw, u_max), g.op("Neg", u_max), out="action")
    g.op("Identity", e, out="surprise")
    g.op("Identity", k, out="key")

    meta = {policy_io.FAST_INIT: json.dumps(_np(net.fast_init).tolist())}
    return _finish_model(
        g,
        "nestor_policy",
        policy_io.shapes(d, n, kdim),
        policy_io.INPUTS,
        policy_io.OUTPUTS,
        spec,
        kdim,
        net,
        {**meta, **(metadata or {})},
    )


def _finish_model(g: _Graph, name: str, shapes: dict, inputs, outputs, spec, key_dim: int, net, meta: dict) -> bytes:
    """The checked, serialised ONNX model of graph `g`.

    It has typed inputs and outputs (`shapes`), the opset, and the metadata every nestor graph
    carries (task, dims, joints, rate, L1 step/decay) then `meta`.
    """

    def value_info(n: str):
        return helper.make_tensor_value_info(n, TensorProto.FLOAT, list(shapes[n]))

    graph = helper.make_graph(
        g.nodes, name, [value_info(n) for n in inputs], [value_info(n) for n in outputs], initializer=g.inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="nestor")
    model.ir_version = 8
    common = {
        "nestor.task": spec.task,
        "nestor.obs_dim": str(spec.obs_dim),
        "nestor.act_dim": str(spec.act_dim),
        "nestor.key_dim": str(key_dim),
        "nestor.controlled_joints": json.dumps(list(spec.controlled_joints)),
        "nestor.passive_joints": json.dumps(list(spec.passive_joints)),
        "nestor.control_rate_hz": str(spec.control_rate_hz),
        "nestor.l1_step": str(net.l1_step),
        "nestor.l1_decay": str(net.l1_decay),
    }
    helper.set_model_props(model, {**common, **meta})
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def io_signature(spec: NetSpec) -> dict:
    """The input/output names and shapes, as recorded in the manifest."""
    shapes = policy_io.shapes(spec.obs_dim, spec.act_dim, spec.key_dim)
    return {
        "inputs": {name: list(shapes[name]) for name in policy_io.INPUTS},
        "outputs": {name: list(shapes[name]) for name in policy_io.OUTPUTS},
    }


def net_spec_for_task(task) -> NetSpec:
    """Build the NetSpec of a nestor_sim TaskSpec (obs scale from the reference and limits)."""
    n = len(task.controlled_joints)
    pos_scale = [1.0] * n
    vel_scale = [0.5] * n
    passive = len(task.passive_joints)
    obs_scale = pos_scale + vel_scale + pos_scale + vel_scale + [1.0] * passive + [0.5] * passive
    return NetSpec(
        task=task.name,
        controlled_joints=tuple(task.controlled_joints),
        passive_joints=tuple(task.passive_joints),
        kp=tuple(float(x) for x in task.kp),
        kd=tuple(float(x) for x in task.kd),
        effort_limit=tuple(float(x) for x in task.effort_limit),
        obs_scale=tuple(obs_scale),
        control_rate_hz=float(task.control_rate_hz),
    )


def initial_net(task_file: str, seed: int = 0, l0: L0Defaults = L0Defaults()) -> NestedPolicy:
    """The version-1 policy of a task: PD prior, zero residual, default L0 parameters."""
    from nestor_sim.task import load_task  # the task YAML is the single source of truth.

    torch.manual_seed(seed)
    return NestedPolicy(net_spec_for_task(load_task(task_file)), l0, seed=seed)


def initial_model(task_file: str, seed: int = 0) -> tuple[bytes, dict]:
    """ONNX bytes and IO signature of a task's initial model."""
    net = initial_net(task_file, seed)
    return export_onnx(net), io_signature(net.spec)


def import_onnx(onnx_bytes: bytes) -> NestedPolicy:
    """Rebuild the trainable NestedPolicy from an exported graph (the ONNX file is the checkpoint)."""
    model = onnx.load_from_string(onnx_bytes)
    meta = {p.key: p.value for p in model.metadata_props}
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    mlp_layers = sorted({int(k[3:].split(".")[0]) for k in weights if k.startswith("mlp")})
    spec = NetSpec(
        task=meta["nestor.task"],
        controlled_joints=tuple(json.loads(meta["nestor.controlled_joints"])),
        passive_joints=tuple(json.loads(meta["nestor.passive_joints"])),
        kp=tuple(weights["kp"].ravel().tolist()),
        kd=tuple(weights["kd"].ravel().tolist()),
        effort_limit=tuple(weights["u_max"].ravel().tolist()),
        obs_scale=tuple(weights["obs_scale"].ravel().tolist()),
        control_rate_hz=float(meta["nestor.control_rate_hz"]),
        hidden=int(weights["mlp0.bias"].shape[-1]),
        key_features=int(weights["wk"].shape[1]),
    )
    net = NestedPolicy(spec)
    net.e_max.copy_(torch.tensor(weights["e_max"]))
    net.m_max.copy_(torch.tensor(weights["m_max"]))
    net.l1_step = float(meta["nestor.l1_step"])
    net.l1_decay = float(meta["nestor.l1_decay"])
    linears = [m for m in net.mlp if isinstance(m, torch.nn.Linear)]
    if len(linears) != len(mlp_layers):
        raise ValueError(f"import_onnx: graph has {len(mlp_layers)} MLP layers, expected {len(linears)}")
    with torch.no_grad():
        for i, layer in enumerate(linears):
            layer.weight.copy_(torch.tensor(weights[f"mlp{i}.weight_t"].T))
            layer.bias.copy_(torch.tensor(weights[f"mlp{i}.bias"]).reshape(layer.bias.shape))
        for name in ("wk", "bk", "lam", "gain", "eta_max", "gate", "beta_max", "decay"):
            getattr(net, name).copy_(torch.tensor(weights[name]))
        net.key_bias.copy_(torch.tensor(weights["key_bias"]))
        fast_init = np.asarray(json.loads(meta[policy_io.FAST_INIT]), np.float32)
        net.fast_init.copy_(torch.tensor(fast_init).reshape(net.fast_init.shape))
    return net
