"""Load and verify a policy model before it may drive a robot.

`load_model` is the only way to obtain a `PolicyModel`; it refuses, with `ModelRejected`, any
model that fails one of these checks, in this order:
  1. sha256 of the bytes matches the expected digest (when given);
  2. `onnx.checker` accepts the graph;
  3. the input/output names and shapes match nestor_core.policy_io for the model's metadata;
  4. a smoke inference (zeros and a random observation) gives finite outputs.
Signature checks of the signed manifest sit in nestor_core.manifest, before this.
"""

import dataclasses
import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort

from nestor_core import policy_io


class ModelRejected(ValueError):
    """A model that must not be swapped in; `reason` is a short metric label."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class PolicyModel:
    """A verified model, ready to run.

    Attributes:
        version: registry version (0 for a local file with no version).
        task: task name from the metadata.
        sha256: hex digest of the ONNX bytes.
        session: the onnxruntime session (one intra-op thread: the tick is tiny).
        obs_dim, act_dim, key_dim: tensor sizes.
        controlled_joints, passive_joints: joint names, in observation order.
        fast_init: [act_dim, key_dim] initial L0 memory, the reset value on a swap.
        l1_step, l1_decay: L1 step size and decay per chunk, as meta-learned in the cloud.
        control_rate_hz: rate the model was made for.
        l0_kind: "window" (fast level = windowed fit over the buffer) or "delta" (the original
            single-step delta rule); see nestor_core.policy_io.
    """

    version: int
    task: str
    sha256: str
    session: ort.InferenceSession
    obs_dim: int
    act_dim: int
    key_dim: int
    controlled_joints: tuple[str, ...]
    passive_joints: tuple[str, ...]
    fast_init: np.ndarray
    l1_step: float
    l1_decay: float
    control_rate_hz: float
    l0_kind: str = policy_io.DELTA


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _session(onnx_bytes: bytes, optimize: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    meta = {p.key: p.value for p in model.metadata_props}
    missing = [key for key in policy_io.METADATA_KEYS if key not in meta]
    if missing:
        raise ModelRejected("bad_metadata", f"missing metadata keys {missing}")
    return meta


def _check_signature(session: ort.InferenceSession, expected: dict[str, tuple], l0_kind: str) -> None:
    inputs, outputs = policy_io.signature(l0_kind)
    for kind, args, names in (
        ("input", session.get_inputs(), inputs),
        ("output", session.get_outputs(), outputs),
    ):
        got = [a.name for a in args]
        if got != list(names):
            raise ModelRejected("bad_signature", f"{kind} names {got}, expected {list(names)}")
        for arg in args:
            if arg.type != "tensor(float)":
                raise ModelRejected("bad_signature", f"{kind} {arg.name}: type {arg.type}, expected tensor(float)")
            if tuple(arg.shape) != expected[arg.name]:
                raise ModelRejected(
                    "bad_signature", f"{kind} {arg.name}: shape {tuple(arg.shape)}, expected {expected[arg.name]}"
                )


def smoke_feeds(
    obs_dim: int, act_dim: int, key_dim: int, seed: int = 0, l0_kind: str = policy_io.DELTA
) -> list[dict[str, np.ndarray]]:
    """Inputs for the smoke inference: all zeros, then random values."""
    rng = np.random.default_rng(seed)
    if l0_kind == policy_io.WINDOW:
        k = 4
        zeros = {
            "obs": np.zeros((1, obs_dim), np.float32),
            "prev_obs": np.zeros((1, obs_dim), np.float32),
            "prev_action": np.zeros((1, act_dim), np.float32),
            "window_dist": np.zeros((k, act_dim), np.float32),
            "window_action": np.zeros((k, act_dim), np.float32),
            "window_age": np.zeros((k + 1, 1), np.float32),
            "l0_scale": np.ones(1, np.float32),
        }
        rand = {name: rng.normal(size=value.shape).astype(np.float32) for name, value in zeros.items()}
        rand["l0_scale"] = np.ones(1, np.float32)
        rand["window_age"] = np.arange(k + 1, 0, -1, dtype=np.float32).reshape(-1, 1)
        return [zeros, rand]
    zeros = {
        "obs": np.zeros((1, obs_dim), np.float32),
        "prev_obs": np.zeros((1, obs_dim), np.float32),
        "fast_state": np.zeros((act_dim, key_dim), np.float32),
        "l1_state": np.zeros((act_dim, key_dim), np.float32),
        "l0_scale": np.ones(1, np.float32),
    }
    rand = {name: rng.normal(size=value.shape).astype(np.float32) for name, value in zeros.items()}
    rand["l0_scale"] = np.ones(1, np.float32)
    return [zeros, rand]


def load_model(
    onnx_bytes: bytes, expected_sha256: str | None = None, version: int = 0, *, optimize: bool = True
) -> PolicyModel:
    """Verify `onnx_bytes` and build a ready-to-run PolicyModel; raises ModelRejected.

    Every check runs either way. `optimize=False` builds the session without graph optimizations
    (about half the build time): for a gate whose session is dropped after the checks (weight
    sync), while the process that runs the model (the policy) builds its optimized session.
    """
    digest = sha256_hex(onnx_bytes)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise ModelRejected("sha256_mismatch", f"sha256 {digest} != expected {expected_sha256}")
    try:
        proto = onnx.load_from_string(onnx_bytes)
        onnx.checker.check_model(proto)
    except Exception as err:  # onnx raises several exception types for bad bytes
        raise ModelRejected("onnx_invalid", f"onnx.checker: {err}".splitlines()[0]) from None
    meta = _metadata(proto)
    try:
        obs_dim, act_dim, key_dim = (int(meta[f"nestor.{k}"]) for k in ("obs_dim", "act_dim", "key_dim"))
        fast_init = np.asarray(json.loads(meta[policy_io.FAST_INIT]), np.float32).reshape(act_dim, key_dim)
        controlled = tuple(json.loads(meta["nestor.controlled_joints"]))
        passive = tuple(json.loads(meta["nestor.passive_joints"]))
        l1_step, l1_decay = float(meta["nestor.l1_step"]), float(meta["nestor.l1_decay"])
        rate = float(meta["nestor.control_rate_hz"])
        l0_kind = meta.get(policy_io.L0_KIND, policy_io.DELTA)
        policy_io.signature(l0_kind)
    except (ValueError, TypeError) as err:
        raise ModelRejected("bad_metadata", str(err)) from None
    if len(controlled) != act_dim or obs_dim != 4 * act_dim + 2 * len(passive):
        raise ModelRejected("bad_metadata", f"joint lists do not match obs_dim={obs_dim}, act_dim={act_dim}")
    if not (np.all(np.isfinite(fast_init)) and np.isfinite([l1_step, l1_decay, rate]).all()):
        raise ModelRejected("bad_metadata", "non-finite fast_init or L1 parameters")
    try:
        session = _session(onnx_bytes, optimize)
    except Exception as err:  # onnxruntime raises its own exception hierarchy
        raise ModelRejected("onnx_invalid", f"onnxruntime: {err}".splitlines()[0]) from None
    if l0_kind == policy_io.WINDOW:
        _check_signature(session, policy_io.window_shapes(obs_dim, act_dim), l0_kind)
    else:
        _check_signature(session, policy_io.shapes(obs_dim, act_dim, key_dim), l0_kind)
    for feeds in smoke_feeds(obs_dim, act_dim, key_dim, l0_kind=l0_kind):
        outputs = session.run(None, feeds)
        if not all(np.all(np.isfinite(o)) for o in outputs):
            raise ModelRejected("non_finite_output", "smoke inference produced NaN or inf")
    return PolicyModel(
        version=version,
        task=meta["nestor.task"],
        sha256=digest,
        session=session,
        obs_dim=obs_dim,
        act_dim=act_dim,
        key_dim=key_dim,
        controlled_joints=controlled,
        passive_joints=passive,
        fast_init=fast_init,
        l1_step=l1_step,
        l1_decay=l1_decay,
        control_rate_hz=rate,
        l0_kind=l0_kind,
    )
