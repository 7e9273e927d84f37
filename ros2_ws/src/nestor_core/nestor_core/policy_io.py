"""The input/output signature of every nestor policy graph (the ONNX contract).

One control tick is one `session.run`. The graph holds the L0 fast-weight update, so the robot
feeds back `fast_state_out` as the next tick's `fast_state`.

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
