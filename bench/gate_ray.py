"""Gate on Ray: one round's closed-loop gate (nominal + shifts), its scenarios as parallel Ray tasks.

The same gate is measured on the local worker (l2_consolidation.evaluate: every scenario in turn,
one PyBullet env, in this process) and on a private local Ray cluster of 1, 2 and 4 workers
(cloud_brain.learning.ray_backend.evaluate_parallel: one task per scenario, each with its own env), in
the same run, at the same niceness (10, as the round worker). Each timing is the second of two
evaluations, so the cluster's worker start-up is not in it (a server keeps its cluster). The
costs must be equal to the local ones (same seed): `same_costs` in the detail.

This process imports torch (l2_consolidation) and never rclpy.
"""

from __future__ import annotations

import pathlib
import time

from bench.common import TASK_FILE, figure, make_model, section_main

SHIFTS = ("payload:2.0", "friction:3.0", "torque_bias:5.0")


def run(quick: bool, workdir: pathlib.Path) -> dict:
    from cloud_brain.learning import ray_backend
    from cloud_brain.learning.gate import evaluate, gate_scenarios
    from cloud_brain.learning.round_config import ConsolidationConfig
    from nestor_sim.task import load_task
    from nestor_sim.tracking_env import TrackingEnv

    ray_backend.round_priority()  # the local worker's niceness; Ray's workers get the same
    onnx_path, _ = make_model(workdir)
    onnx = onnx_path.read_bytes()
    task = load_task(str(TASK_FILE))
    config = ConsolidationConfig(eval_ticks=300 if quick else 1000, gate_shifts=SHIFTS)
    scenarios = gate_scenarios(task, config)
    seed = 1

    def local() -> dict:
        env = TrackingEnv(task)
        try:
            return evaluate(onnx, env, scenarios, config, seed)
        finally:
            env.close()

    local()  # warm-up (imports, first env)
    t0 = time.perf_counter()
    costs_local = local()
    local_s = time.perf_counter() - t0
    detail = {"scenarios": list(scenarios), "eval_ticks": config.eval_ticks, "local_s": local_s, "ray": {}}
    workers_list = (2,) if quick else (1, 2, 4)
    for workers in workers_list:
        ray = ray_backend._ray()
        t0 = time.perf_counter()
        ray_backend.init("", num_cpus=workers)
        init_s = time.perf_counter() - t0
        try:
            ray_backend.evaluate_parallel(onnx, task, scenarios, config.eval_ticks, seed)  # starts the workers
            t0 = time.perf_counter()
            costs = ray_backend.evaluate_parallel(onnx, task, scenarios, config.eval_ticks, seed)
            seconds = time.perf_counter() - t0
        finally:
            ray.shutdown()
        detail["ray"][str(workers)] = {
            "seconds": seconds,
            "speedup": local_s / seconds,
            "init_s": init_s,
            "same_costs": costs == costs_local,
        }
    two = detail["ray"]["2"]
    figures = {
        "gate_local_s": figure(
            local_s,
            None,
            "s",
            scenarios=len(scenarios),
            note="l2_consolidation.evaluate of one candidate, scenarios in turn",
        ),
        "gate_ray_speedup_2_workers": figure(
            two["speedup"],
            None,
            "x",
            target=">= 1.6",
            met=two["speedup"] >= 1.6,
            description=f"local gate seconds / Ray gate seconds with 2 workers ({len(scenarios)} scenarios)",
            same_costs=two["same_costs"],
        ),
    }
    for workers, row in detail["ray"].items():
        figures[f"gate_ray_s_{workers}_workers"] = figure(row["seconds"], local_s, "s", same_costs=row["same_costs"])
    return {"figures": figures, "detail": detail}


if __name__ == "__main__":
    section_main(run, __doc__)
