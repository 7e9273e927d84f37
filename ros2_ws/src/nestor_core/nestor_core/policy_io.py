"""The input/output signatures of nestor policy graphs (the ONNX contract).

One control tick is one `session.run`. Two kinds of graph exist, named by the metadata key
`nestor.l0_kind` (missing = "delta"):

* "window" (the default model since issue 10): the fast level is a windowed least-squares fit over
  the short-horizon buffer, inside the graph. See WINDOW_INPUTS below and
  `cloud_brain.learning.window_policy` for the equations.
* "delta" (the original graph, kept as the `l0_delta` baseline): the L0 memory is a fast-weight
  matrix updated by one delta-rule step per tick; the robot feeds back `fast_state_out` as the
  next tick's `fast_state`. Its signature:

    inputs                                   outputs
    obs        [1, obs_dim]  float32         action          [1, act_dim]       effort command
    prev_obs   [1, obs_dim]  float32         fast_state_out  [act_dim, key_dim] L0 memory after update
    fast_state [act_dim, key_dim] float32    fast_read       [1, act_dim]       L0 contribution
    l1_state   [act_dim, key_dim] float32    l1_read         [1, act_dim]       L1 contribution
    l0_scale   [1]           float32         surprise        [1, act_dim]       L0 prediction error
                                             update_dir      [act_dim, key_dim] surprise x previous key
                                                                                (L1 accumulates it)
                                             key             [1, key_dim]       unit key of obs (the
                                                                                runtime's bumpless swap)

Metadata (model.metadata_props, all strings): the keys in METADATA_KEYS.
"""

INPUTS = ("obs", "prev_obs", "fast_state", "l1_state", "l0_scale")
OUTPUTS = ("action", "fast_state_out", "fast_read", "l1_read", "surprise", "update_dir", "key")
# Metadata key holding the meta-learned initial L0 memory (JSON [act_dim][key_dim]): the
# value the robot resets its fast state to when it swaps this model in.
FAST_INIT = "nestor.fast_init"

METADATA_KEYS = (
    "nestor.task",
    "nestor.obs_dim",
    "nestor.act_dim",
    "nestor.key_dim",
    "nestor.controlled_joints",  # JSON list
    "nestor.passive_joints",  # JSON list
    "nestor.control_rate_hz",
    "nestor.l1_step",  # meta-learned L1 step size (robot config scales it)
    "nestor.l1_decay",
    FAST_INIT,
)


def shapes(obs_dim: int, act_dim: int, key_dim: int) -> dict[str, tuple[int, ...]]:
    """Expected shape of every input and output name."""
    return {
        "obs": (1, obs_dim),
        "prev_obs": (1, obs_dim),
        "fast_state": (act_dim, key_dim),
        "l1_state": (act_dim, key_dim),
        "l0_scale": (1,),
        "action": (1, act_dim),
        "fast_state_out": (act_dim, key_dim),
        "fast_read": (1, act_dim),
        "l1_read": (1, act_dim),
        "surprise": (1, act_dim),
        "update_dir": (act_dim, key_dim),
        "key": (1, key_dim),
    }


# --- "window" graphs -------------------------------------------------------------------------------
# K = horizon - 1 buffered transitions (older than the newest one, which the graph measures itself
# from prev_obs -> obs). The robot keeps the window; the graph is stateless. Window graphs have no
# L1 input: L1 was measured to earn nothing on top of the window fit and was removed (issue 10);
# the robot still averages update_dir per chunk and reports it (the gate's lived scenarios).
#
#    inputs                                     outputs
#    obs           [1, obs_dim]                 action       [1, act_dim]  effort command
#    prev_obs      [1, obs_dim]                 fast_read    [1, act_dim]  L0 compensation (action - feedforward)
#    prev_action   [1, act_dim]                 prior_read   [1, act_dim]  compensation of the fit's prior alone
#    window_dist   [K, act_dim]   disturbances  surprise     [1, act_dim]  tracking error (qd_ref-qd) + 5 (q_ref-q)
#    window_action [K, act_dim]   their actions update_dir   [act_dim, 2]  this tick's fit (c, g) per joint (reported)
#    window_age    [K + 1, 1]     ticks; >= 1e4 disturbance  [1, act_dim]  measured disturbance of prev -> obs
#                                 = empty slot  feedforward  [1, act_dim]  inverse-dynamics command, no L0
#    l0_scale      [1]            0 freezes L0
WINDOW = "window"
DELTA = "delta"
L0_KIND = "nestor.l0_kind"
WINDOW_INPUTS = ("obs", "prev_obs", "prev_action", "window_dist", "window_action", "window_age", "l0_scale")
WINDOW_OUTPUTS = ("action", "fast_read", "prior_read", "surprise", "update_dir", "disturbance", "feedforward")
EMPTY_AGE = 1.0e4  # an age that weighs a window slot to exactly 0


def window_shapes(obs_dim: int, act_dim: int) -> dict[str, tuple]:
    """Expected shape of every input and output of a window graph ("K" is the window length)."""
    return {
        "obs": (1, obs_dim),
        "prev_obs": (1, obs_dim),
        "prev_action": (1, act_dim),
        "window_dist": ("K", act_dim),
        "window_action": ("K", act_dim),
        "window_age": ("K1", 1),
        "l0_scale": (1,),
        "action": (1, act_dim),
        "fast_read": (1, act_dim),
        "prior_read": (1, act_dim),
        "surprise": (1, act_dim),
        "update_dir": (act_dim, 2),
        "disturbance": (1, act_dim),
        "feedforward": (1, act_dim),
    }


def signature(kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input names, output names) of a graph kind."""
    if kind == WINDOW:
        return WINDOW_INPUTS, WINDOW_OUTPUTS
    if kind == DELTA:
        return INPUTS, OUTPUTS
    raise ValueError(f"{L0_KIND}: unknown graph kind {kind!r} (expected {DELTA!r} or {WINDOW!r})")
