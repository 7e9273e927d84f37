"""``TrackingEnv``: effort-controlled tracking of a moving joint reference, with dynamics shifts.

One ``step(action)`` is one control tick (1 / control_rate_hz) made of ``physics_substeps``
physics steps. The action is the effort of the controlled joints, clipped to ``effort_limit``.
Observation layout: see ``nestor_sim.task`` (obs = q_c, qd_c, q_ref, qd_ref, q_p, qd_p).

Cost of a tick (reward = -cost), evaluated after the tick::

    cost = w_pos * ||q_ref - q_c||^2 + w_vel * ||qd_ref - qd_c||^2
         + w_effort * ||u / effort_limit||^2

with u the clipped commanded effort and the reference taken at the new time.

Episodes vary with the seed (``task.episode_variation``): ``reset(seed=...)`` draws a reference
time offset and a small initial-pose perturbation from ``np_random``; ``reference``,
``observation``, ``cost`` and the camera marker all use the episode's offset. Dynamics are
deterministic: one seed gives the same episode twice, bit for bit, whatever ran before.

The ROS bridge drives the same object through ``apply_effort`` / ``advance`` / ``joint_state``,
so there is one physics code path.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import pybullet
from pybullet_utils.bullet_client import BulletClient

from nestor_sim.camera import Camera
from nestor_sim.reference_table import ReferenceTable
from nestor_sim.shift_schedule import ShiftSchedule
from nestor_sim.shifts import Plant
from nestor_sim.task import TaskSpec, load_task, with_shifts


def _gather(indices, size: int = -1) -> Callable[[tuple[float, ...]], tuple[float, ...]]:
    """A function picking ``indices`` out of a tuple of ``size`` (operator.itemgetter, also for one index)."""
    indices = [int(i) for i in indices]
    if indices == list(range(size)):
        return tuple  # every entry in order: the tuple itself
    if len(indices) == 1:
        i = indices[0]
        return lambda values: (values[i],)
    return operator.itemgetter(*indices)


class TrackingEnv(gym.Env):
    """Gymnasium env built from a ``TaskSpec``; owns its own physics client.

    Args:
        task: A TaskSpec or the path of a task YAML file.
        render_mode: None, "rgb_array" (``render`` returns the camera image) or "human"
            (a PyBullet GUI window).
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 30}

    def __init__(self, task: TaskSpec | str | os.PathLike, render_mode: str | None = None):
        self.task = task if isinstance(task, TaskSpec) else load_task(task)
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode: unknown {render_mode!r}")
        self.render_mode = render_mode
        spec = self.task
        mode = pybullet.GUI if render_mode == "human" else pybullet.DIRECT
        self._p = BulletClient(connection_mode=mode)
        self._p.setTimeStep(spec.dt / spec.physics_substeps)
        self._p.setGravity(0.0, 0.0, -9.81)
        self.body = self._p.loadURDF(
            spec.urdf,
            spec.base_position,
            useFixedBase=spec.use_fixed_base,
            flags=self._p.URDF_USE_INERTIA_FROM_FILE if spec.inertia_from_urdf else 0,
        )

        joint_index, link_index, movable = {}, {}, []
        for j in range(self._p.getNumJoints(self.body)):
            info = self._p.getJointInfo(self.body, j)
            joint_index[info[1].decode()] = j
            link_index[info[12].decode()] = j
            if info[2] != self._p.JOINT_FIXED:
                movable.append(j)
        for field in ("controlled_joints", "passive_joints"):
            for name in getattr(spec, field):
                if name not in joint_index or joint_index[name] not in movable:
                    raise ValueError(
                        f"{spec.name}: {field}: {name!r} is not a movable joint of "
                        f"{os.path.basename(spec.urdf)} (has {sorted(joint_index)})"
                    )
        for shift in spec.shifts:
            if shift.link is not None and shift.link not in link_index:
                raise ValueError(f"{spec.name}: shifts: unknown link {shift.link!r}")

        self._movable = movable
        controlled = [joint_index[n] for n in spec.controlled_joints]
        passive = [joint_index[n] for n in spec.passive_joints]
        # Positions of our joints inside the one getJointStates(movable) read per tick.
        self._c_slot = np.array([movable.index(j) for j in controlled], dtype=int)
        self._p_slot = np.array([movable.index(j) for j in passive], dtype=int)
        self._names = list(spec.controlled_joints) + list(spec.passive_joints)
        self._initial = {j: spec.initial_positions.get(n, 0.0) for n, j in joint_index.items() if j in movable}
        self._controlled = controlled
        n = spec.n_controlled
        if spec.joint_damping is not None:
            for joint, value in zip(controlled, spec.joint_damping, strict=True):
                self._p.changeDynamics(self.body, joint, jointDamping=value)
            damping = np.array(spec.joint_damping, dtype=np.float64)
        else:  # getJointInfo reports the URDF's damping (not later changeDynamics calls).
            damping = np.array([self._p.getJointInfo(self.body, j)[6] for j in controlled])
        self.plant = Plant(
            client=self._p,
            body=self.body,
            controlled=controlled,
            joint_index=joint_index,
            link_index=link_index,
            effort_gain=np.ones(n),
            torque_bias=np.zeros(n),
            friction=np.zeros(n),
            damping=damping,
            joint_scale=np.asarray(spec.effort_limit, float) / max(spec.effort_limit),
        )
        # Torque control needs the default velocity motors off; passive joints stay free too.
        self._p.setJointMotorControlArray(self.body, movable, self._p.VELOCITY_CONTROL, forces=[0.0] * len(movable))

        self.effort_limit = np.asarray(spec.effort_limit, dtype=np.float64)
        self.action_space = gym.spaces.Box(-self.effort_limit.astype(np.float32), self.effort_limit.astype(np.float32))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(spec.obs_dim,), dtype=np.float32)

        self._camera: Camera | None = None
        self._shifts = ShiftSchedule(self.plant)
        self.tick = 0
        self._ref_tick = -1
        self._ref = (np.zeros(n), np.zeros(n))
        self._ref_table = ReferenceTable(spec)
        self.reference_offset_s = 0.0
        self.initial_perturbation = np.zeros(n)
        self._cid = self._p._client
        self._u_list = [0.0] * n
        # The per-tick path (step, advance, cost, observation) works on Python floats: with a
        # handful of joints one numpy call costs more than the whole list operation. Built once:
        # the clip bounds and the gathers from this tick's one getJointStates read
        # (state = q of the movable joints, then their qd) to the observation and the cost.
        m = len(movable)
        self._state: tuple[float, ...] = (0.0,) * (2 * m)
        self._limit_list = self.effort_limit.tolist()
        self._neg_limit_list = (-self.effort_limit).tolist()
        self._obs_get = _gather(
            [*self._c_slot, *(m + self._c_slot), *range(2 * m, 2 * m + 2 * n), *self._p_slot, *(m + self._p_slot)],
            2 * m + 2 * n,
        )
        # Observation from state + [q_ref..., qd_ref...]: q_c, qd_c, q_ref, qd_ref (the cost's operands) first.
        self._obs_q, self._obs_qd, self._obs_qd_ref = slice(0, n), slice(n, 2 * n), slice(3 * n, 4 * n)
        self._weights = self.task.cost.w_pos, self.task.cost.w_vel, self.task.cost.w_effort
        self._zeros32 = np.zeros(spec.obs_dim, dtype=np.float32)
        self._actuation: tuple[int, list[float], list[float]] = (-1, [], [])  # plant.revision, gain, bias
        self._substeps = range(spec.physics_substeps)
        self._episode_ticks = spec.episode_ticks
        self._reset_state(spec.shifts)

    # ----------------------------------------------------------------- Gymnasium API

    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None):
        """Starts a new episode: nominal dynamics, a varied initial state, the shift schedule re-armed.

        Every shift still active is undone and every shiftable dynamics property is set back to
        its nominal value exactly. Then the episode's reference offset and initial-pose
        perturbation are drawn from ``np_random`` (see ``task.EpisodeVariation``).

        Args:
            seed: Seeds ``np_random``: one seed gives the same episode every time; None
                continues the generator (a different episode).
            options: {"shifts": [...]} replaces the task's schedule for this episode (ShiftSpecs,
                ``"payload:4.0@20"`` strings or YAML-style mappings; [] = no shifts).
        """
        super().reset(seed=seed)
        schedule = self.task.shifts
        if options and "shifts" in options:
            schedule = with_shifts(self.task, options["shifts"]).shifts
        variation = self.task.episode_variation
        offset = float(self.np_random.uniform(0.0, variation.reference_offset_s))
        width = variation.initial_pose_rad
        perturbation = self.np_random.uniform(-width, width, self.task.act_dim)
        events = self._reset_state(schedule, offset, perturbation)
        info = self._info(events)
        info["reference_offset_s"] = self.reference_offset_s
        return self.observation(), info

    def step(self, action):
        """Applies ``action`` (efforts) for one control tick."""
        self._set_effort(action)
        events = self.advance()
        cost, obs_values = self._cost_and_obs()
        obs = np.array(obs_values, dtype=np.float32)
        # obs . 0 is NaN exactly when obs holds an inf or a NaN: np.isfinite(obs).all() at a third of the cost.
        terminated = not (math.isfinite(cost) and math.isfinite(obs.dot(self._zeros32)))
        truncated = self.tick >= self._episode_ticks
        return obs, -cost, terminated, truncated, self._info(events, cost)

    def render(self):
        """Returns the camera image in "rgb_array" mode (the GUI draws itself in "human")."""
        if self.render_mode == "rgb_array":
            return self.render_camera()
        return None

    def close(self) -> None:
        """Disconnects the physics client; safe to call twice."""
        if self._p is not None:
            self._p.disconnect()
            self._p = None

    # ------------------------------------------------------ methods the ROS bridge reuses

    @property
    def t(self) -> float:
        """Simulated time since reset (s)."""
        return self.tick * self.task.dt

    @property
    def joint_names(self) -> list[str]:
        """Controlled then passive joint names (the JointState order)."""
        return list(self._names)

    def apply_effort(self, u) -> np.ndarray:
        """Sets the effort for the next tick, clipped to ``effort_limit``; returns the clipped u.

        Raises:
            ValueError: if ``u`` does not have ``act_dim`` entries.
        """
        self._set_effort(u)
        return self._u

    @property
    def _u(self) -> np.ndarray:
        """The clipped effort of this tick, as a new array."""
        return np.array(self._u_list)

    def _set_effort(self, u) -> None:
        """apply_effort without building the returned array (step's path)."""
        values = u.tolist() if isinstance(u, np.ndarray) and u.ndim == 1 else None
        if values is None or (values and not isinstance(values[0], float)):
            values = np.asarray(u, dtype=np.float64).reshape(-1).tolist()
        if len(values) != self.task.act_dim:
            raise ValueError(f"effort: expected {self.task.act_dim} values, got {len(values)}")
        # Clipped to the limits (+-inf -> the limit), NaN -> 0.
        self._u_list = [
            0.0 if v != v else (hi if v > hi else (lo if v < lo else v))
            for v, lo, hi in zip(values, self._neg_limit_list, self._limit_list, strict=True)
        ]

    def advance(self) -> list[dict[str, Any]]:
        """Runs one control tick with the current effort; returns the shifts applied this tick."""
        plant, cid = self.plant, self._cid
        # The torque is constant within a tick. The raw pybullet functions with the client id
        # skip BulletClient's per-call attribute lookup (most of a substep's Python time).
        if self._actuation[0] != plant.revision:  # a shift changed gain or bias: list them again
            self._actuation = plant.revision, plant.effort_gain.tolist(), plant.torque_bias.tolist()
        _, gain, bias = self._actuation
        torque = [g * u + b for g, u, b in zip(gain, self._u_list, bias, strict=True)]
        set_motors, step = pybullet.setJointMotorControlArray, pybullet.stepSimulation
        for _ in self._substeps:
            # External torques are cleared by every stepSimulation, so set them each substep.
            set_motors(self.body, plant.controlled, pybullet.TORQUE_CONTROL, forces=torque, physicsClientId=cid)
            step(physicsClientId=cid)
        self.tick += 1
        self._read_state()
        return self._apply_due_shifts() if self._shifts.pending else []

    def observation(self) -> np.ndarray:
        """Returns obs = concat(q_c, qd_c, q_ref, qd_ref, q_p, qd_p) as float32."""
        return np.array(self._obs_get((*self._state, *self._reference_row())), dtype=np.float32)

    def joint_state(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Returns (names, position, velocity, effort) of controlled then passive joints.

        The effort is the motor effort actually produced (clipped command times the actuator
        gain); passive joints report 0. Disturbances (torque_bias) are not part of it.
        """
        idx = np.concatenate([self._c_slot, self._p_slot])
        effort = np.concatenate([self.plant.effort_gain * self._u, np.zeros(len(self._p_slot))])
        return self.joint_names, self._q[idx], self._qd[idx], effort

    def reference(self, t: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Returns (q_ref, qd_ref) of the controlled joints at episode time ``t`` (default: now).

        The episode's reference is the task's, ``reference_offset_s`` later.
        """
        if t is not None:
            return self.task.reference_at(self.reference_offset_s + t)
        if self._ref_tick != self.tick:
            row, n = self._reference_row(), self.task.n_controlled
            self._ref = (np.array(row[:n]), np.array(row[n:]))
            self._ref_tick = self.tick
        return self._ref

    def _reference_row(self) -> list[float]:
        """[q_ref..., qd_ref...] at the current tick: a row of the episode's ``ReferenceTable``."""
        return self._ref_table.row(self.tick)

    def _cost_and_obs(self) -> tuple[float, tuple[float, ...]]:
        """(cost, observation values) of the current state, on Python floats (see __init__)."""
        ref = self._ref_table.row(self.tick)
        obs = self._obs_get((*self._state, *ref))
        sub, mul = operator.sub, operator.mul
        d = list(map(sub, ref, obs[self._obs_q]))  # q_ref - q_c (map stops after the n of q_c)
        pos = sum(map(mul, d, d))
        d = list(map(sub, obs[self._obs_qd_ref], obs[self._obs_qd]))
        vel = sum(map(mul, d, d))
        w_pos, w_vel, w_effort = self._weights
        if not w_effort:  # u is clipped, so the effort term is finite: weighted by 0, it adds +0.0
            return w_pos * pos + w_vel * vel, obs
        d = list(map(operator.truediv, self._u_list, self._limit_list))
        return w_pos * pos + w_vel * vel + w_effort * sum(map(mul, d, d)), obs

    def cost(self) -> float:
        """Tracking cost of the current state and last effort (see the module docstring)."""
        return self._cost_and_obs()[0]

    def gravity_torque(self) -> np.ndarray:
        """Effort that holds the controlled joints against gravity now (see ``Plant.gravity_torque``)."""
        return self.plant.gravity_torque(self._q.tolist())[self._c_slot]

    def render_camera(self, marker_x: float | None = None) -> np.ndarray:
        """Renders the task camera as an (H, W, 3) uint8 RGB image.

        Args:
            marker_x: Where to put the target marker (m); default: the reference of the first
                controlled joint now.
        """
        if self._camera is None:
            self._camera = Camera(self._p, self.task.camera)
        if marker_x is None:
            marker_x = float(self.reference()[0][0])
        return self._camera.render(marker_x=marker_x)

    def active_shifts(self) -> list[dict[str, Any]]:
        """The shifts in effect, as dicts (rebuilt only when a shift is applied or undone)."""
        return self._shifts.active_dicts()

    # -------------------------------------------------------------------- internals

    def _reset_state(self, schedule, offset: float = 0.0, perturbation=None) -> list[dict[str, Any]]:
        self.plant.restore_nominal()
        self._shifts.reset(schedule)
        self.reference_offset_s = offset
        self._ref_table.reset(offset)
        self.initial_perturbation = np.zeros(self.task.act_dim) if perturbation is None else perturbation
        # The controlled joints start where the reference moved to by the offset, perturbed.
        shift = self.task.reference_at(offset)[0] - self.task.reference_at(0.0)[0] + self.initial_perturbation
        start = dict(self._initial)
        for i, joint in enumerate(self._controlled):
            start[joint] += shift[i]
        for joint, position in start.items():
            self._p.resetJointState(self.body, joint, position, 0.0)
        self.tick = 0
        self._ref_tick = -1
        self._u_list = [0.0] * self.task.act_dim
        self._read_state()
        return self._apply_due_shifts()

    def _read_state(self) -> None:
        states = pybullet.getJointStates(self.body, self._movable, physicsClientId=self._cid)
        q, qd, *_ = zip(*states, strict=True)
        self._state = q + qd

    @property
    def _q(self) -> np.ndarray:
        """Positions of the movable joints (this tick's read), as a new array."""
        return np.array(self._state[: len(self._movable)])

    @property
    def _qd(self) -> np.ndarray:
        """Velocities of the movable joints (this tick's read), as a new array."""
        return np.array(self._state[len(self._movable) :])

    def _apply_due_shifts(self) -> list[dict[str, Any]]:
        return self._shifts.apply_due(self.t, self.tick)

    def _info(self, events, cost: float | None = None) -> dict[str, Any]:
        return {
            "cost": self.cost() if cost is None else cost,
            "t": self.t,
            "tick": self.tick,
            "shifts_active": self.active_shifts(),
            "shift_events": events,
        }
