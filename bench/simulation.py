"""Figure 5, simulation: TrackingEnv.step steps/s vs bare PyBullet doing the same physics and reads.

Bare = the module-level pybullet API on its own DIRECT client: per control tick, `physics_substeps`
times (TORQUE_CONTROL command + stepSimulation), then one getJointStates of the movable joints.
Both get the same torque sequence (a PD hold of the initial pose, computed outside the timing),
so both follow the same trajectory. Blocks alternate to share the machine's noise, and each side
is timed in this thread's CPU time (time.thread_time): on the shared 2-core VM, time spent waiting
for a core is not the code's cost (the wall-clock ratio is kept in the detail).
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

from bench.common import TASK_FILE, figure, section_main

BLOCK = 100


def _bare_client(task):
    import pybullet as p

    cid = p.connect(p.DIRECT)
    p.setTimeStep(task.dt / task.physics_substeps, physicsClientId=cid)
    p.setGravity(0.0, 0.0, -9.81, physicsClientId=cid)
    body = p.loadURDF(
        task.urdf,
        task.base_position,
        useFixedBase=task.use_fixed_base,
        flags=p.URDF_USE_INERTIA_FROM_FILE if task.inertia_from_urdf else 0,
        physicsClientId=cid,
    )
    names, movable = {}, []
    for j in range(p.getNumJoints(body, physicsClientId=cid)):
        info = p.getJointInfo(body, j, physicsClientId=cid)
        names[info[1].decode()] = j
        if info[2] != p.JOINT_FIXED:
            movable.append(j)
    controlled = [names[n] for n in task.controlled_joints]
    for name, j in names.items():
        if j in movable:
            p.resetJointState(body, j, task.initial_positions.get(name, 0.0), 0.0, physicsClientId=cid)
    p.setJointMotorControlArray(body, movable, p.VELOCITY_CONTROL, forces=[0.0] * len(movable), physicsClientId=cid)
    return p, cid, body, controlled, movable


def run(quick: bool, workdir: pathlib.Path) -> dict:
    from nestor_sim.task import load_task, with_shifts
    from nestor_sim.tracking_env import TrackingEnv

    task = with_shifts(load_task(str(TASK_FILE)), [])  # no shifts: both sides run the same plant
    steps = 3000 if quick else 20000
    env = TrackingEnv(task)
    obs, _ = env.reset(seed=0)
    p, cid, body, controlled, movable = _bare_client(task)
    n = task.act_dim
    kp, kd = np.asarray(task.kp), np.asarray(task.kd)
    q0 = np.array([task.initial_positions.get(j, 0.0) for j in task.controlled_joints])
    limit = np.asarray(task.effort_limit)
    substeps = task.physics_substeps
    clock, wall = time.thread_time, time.perf_counter
    env_time = bare_time = env_wall = bare_wall = 0.0
    u_env = np.zeros(n)
    u_bare = np.zeros(n)
    max_diff = 0.0
    try:
        for start in range(0, steps, BLOCK):
            count = min(BLOCK, steps - start)
            for _ in range(count):
                t0, w0 = clock(), wall()
                obs, _, terminated, truncated, _ = env.step(u_env)
                env_time += clock() - t0
                env_wall += wall() - w0
                if truncated or terminated:
                    obs, _ = env.reset(seed=0)
                u_env = np.clip(kp * (q0 - obs[:n]) - kd * obs[n : 2 * n], -limit, limit)
            for _ in range(count):
                t0, w0 = clock(), wall()
                forces = u_bare.tolist()
                for _ in range(substeps):
                    p.setJointMotorControlArray(body, controlled, p.TORQUE_CONTROL, forces=forces, physicsClientId=cid)
                    p.stepSimulation(physicsClientId=cid)
                states = p.getJointStates(body, movable, physicsClientId=cid)
                bare_time += clock() - t0
                bare_wall += wall() - w0
                q = np.array([s[0] for s in states])
                qd = np.array([s[1] for s in states])
                u_bare = np.clip(kp * (q0 - q) - kd * qd, -limit, limit)
            max_diff = max(max_diff, float(np.max(np.abs(u_env - u_bare))))
    finally:
        env.close()
        p.disconnect(physicsClientId=cid)
    env_rate, bare_rate = steps / env_time, steps / bare_time
    return {
        "figures": {
            "sim_steps_per_s": figure(
                env_rate,
                bare_rate,
                "steps/s",
                target="ratio >= 0.9",
                met=env_rate / bare_rate >= 0.9,
                description=f"TrackingEnv.step ({substeps} substeps) vs bare pybullet, same URDF/reads; "
                "steps per CPU second of the thread",
            ),
        },
        "detail": {
            "steps": steps,
            "substeps": substeps,
            "env_us_per_step": 1e6 * env_time / steps,
            "bare_us_per_step": 1e6 * bare_time / steps,
            "clock": "time.thread_time (CPU time of the stepping thread)",
            "wall_env_us_per_step": 1e6 * env_wall / steps,
            "wall_bare_us_per_step": 1e6 * bare_wall / steps,
            "wall_ratio": bare_wall / env_wall,
            "max_torque_divergence_at_block_end": max_diff,
        },
    }


if __name__ == "__main__":
    section_main(run, __doc__)
