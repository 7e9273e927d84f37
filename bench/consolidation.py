"""Figure 6, consolidation: train_slow_weights samples/s and the wall time of one run_round.

Experience is generated with cloud_brain.learning.evaluation.collect_experience (the robot's runtime on a
real TrackingEnv, no ROS) into a real ExperienceStore. Limit of the training figure: a bare torch
loop (same MLP shape, Adam, same steps, batch and tensors) measured in the same run. The round has
no bare equivalent; its limit is left null and its parts are reported in the detail.
This process imports torch and never rclpy.
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
import time

from bench.common import TASK_FILE, figure, make_model, section_main

EPISODE_TICKS = 4000


def run(quick: bool, workdir: pathlib.Path) -> dict:
    import torch
    from cloud_brain.experience.store import ExperienceStore
    from cloud_brain.learning.consolidation import run_round
    from cloud_brain.learning.evaluation import collect_experience
    from cloud_brain.learning.memories import sample_memories
    from cloud_brain.learning.policy_export import import_onnx
    from cloud_brain.learning.round_config import ConsolidationConfig
    from cloud_brain.learning.round_worker import round_request
    from cloud_brain.learning.slow_weights import train_slow_weights
    from nestor_core.policy_model import load_model
    from nestor_sim.task import load_task
    from nestor_sim.tracking_env import TrackingEnv

    torch.set_num_threads(1)  # as in the scheduler's round child
    onnx_path, _ = make_model(workdir, "delta")  # the slow-MLP training loop this section times
    onnx = onnx_path.read_bytes()
    total = 10_000 if quick else 100_000
    db = workdir / "consolidation" / "nestor.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    store = ExperienceStore(db)
    model = load_model(onnx, None, 1)
    env = TrackingEnv(load_task(str(TASK_FILE)))
    t0 = time.perf_counter()
    seq, episode = 1, 0
    try:
        while seq <= total:
            ticks = min(EPISODE_TICKS, total - seq + 1)
            for batch in collect_experience(model, env, "bench0", seed=episode, ticks=ticks, first_seq=seq):
                store.append(batch)
            seq += ticks
            episode += 1
    finally:
        env.close()
    collect_s = time.perf_counter() - t0
    up_to = store.max_row_id("kuka_track")
    store.close()

    config = ConsolidationConfig()
    overrides = {"eval_ticks": 500} if quick else {}
    detail: dict = {
        "transitions": total,
        "collect_seconds": collect_s,
        "store_rows": up_to,
        "config": {**config.__dict__, **overrides},
    }

    # Training alone, on the memories the round would sample.
    parent = import_onnx(onnx)
    store = ExperienceStore(db)
    t0 = time.perf_counter()
    memories = sample_memories(store, parent, "kuka_track", up_to, config.max_transitions)
    detail["sample_memories_seconds"] = time.perf_counter() - t0
    store.close()
    # Warm-up of both loops first: torch's first steps pay one-off allocation and dispatch costs.
    train_slow_weights(copy.deepcopy(parent), memories, dataclasses.replace(config, steps=20), seed=0)
    t0 = time.perf_counter()
    training = train_slow_weights(parent, memories, config, seed=0)
    train_s = time.perf_counter() - t0
    samples = config.steps * min(config.batch_size, len(memories.obs))

    # Bare torch: same MLP shape, same optimiser, same batches, nothing else.
    layers = [m for m in parent.mlp if isinstance(m, torch.nn.Linear)]
    sizes = [layers[0].in_features] + [m.out_features for m in layers]
    mlp = torch.nn.Sequential(
        torch.nn.Linear(sizes[0], sizes[1]),
        torch.nn.Tanh(),
        torch.nn.Linear(sizes[1], sizes[2]),
        torch.nn.Tanh(),
        torch.nn.Linear(sizes[2], sizes[3]),
    )
    obs, target = torch.from_numpy(memories.obs), torch.from_numpy(memories.target)
    optimiser = torch.optim.Adam(mlp.parameters(), lr=config.learning_rate)
    gen = torch.Generator().manual_seed(0)

    def bare(steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            idx = torch.randint(0, len(obs), (min(config.batch_size, len(obs)),), generator=gen)
            loss = ((mlp(obs[idx]) - target[idx]) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            float(loss.detach())
        return time.perf_counter() - t0

    bare(20)
    bare_s = bare(config.steps)
    detail["training"] = {**training, "seconds": train_s, "bare_seconds": bare_s, "mlp_sizes": sizes}

    request = round_request(str(db), "kuka_track", str(TASK_FILE), 1, onnx, (0, up_to), 1, overrides)
    t0 = time.perf_counter()
    result = run_round(request)
    round_s = time.perf_counter() - t0
    detail["round"] = {
        "seconds": round_s,
        "accepted": result.get("accepted"),
        "reason": result.get("reason"),
        "metrics": {k: v for k, v in (result.get("metrics") or {}).items() if k != "gate"},
        "gate": (result.get("metrics") or {}).get("gate"),
    }
    return {
        "figures": {
            "consolidation_train_samples_per_s": figure(
                samples / train_s,
                samples / bare_s,
                "samples/s",
                description="train_slow_weights vs bare torch MLP+Adam loop, same batches, 1 torch thread",
            ),
            "consolidation_round_s": figure(
                round_s,
                None,
                "s",
                transitions=total,
                note=f"run_round wall time on {total} stored transitions (uses the newest "
                f"{config.max_transitions}); no bare equivalent, limit null"
                + ("; --quick: eval_ticks 500" if quick else ""),
            ),
        },
        "detail": detail,
    }


if __name__ == "__main__":
    section_main(run, __doc__)
