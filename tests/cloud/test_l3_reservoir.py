"""L3 reservoir: bounded, prioritised by surprise and novelty, persistent, fed from the store."""

import numpy as np
import pytest
from cloud_brain.experience.store import ExperienceStore
from cloud_brain.learning.l3_reservoir import L3Reservoir, ReservoirConfig, Window
from nestor_core.experience import ExperienceBatch

T, N = 10, 2  # ticks per window, joints


def window(row: int, effort: float, surprise: float, rng) -> Window:
    obs = np.zeros((T, 4 * N), np.float32)
    obs[:, :N] = rng.normal(0.0, 0.01, size=(T, N))
    return Window(
        "t",
        "r",
        row,
        0,
        obs,
        np.full((T, N), effort, np.float32),
        np.zeros((T, N), np.float32),
        np.ones(T, np.float32),
        np.full(T, surprise, np.float32),
    )


def offer(config: ReservoirConfig, path, rare_every: int = 100, total: int = 1000, seed: int = 0) -> int:
    """Offer `total` common windows with a rare one every `rare_every`; return rare ones kept."""
    rng = np.random.default_rng(seed)
    res = L3Reservoir(str(path), config, seed=seed)
    try:
        for start in range(0, total, 50):
            batch = []
            for row in range(start, start + 50):
                rare = row % rare_every == rare_every - 1
                batch.append(window(row, 5.0 if rare else 1.0, 3.0 if rare else 1.0, rng))
            res.add("t", batch)
            assert res.size("t")[1] <= config.capacity_transitions
        kept = res.windows("t")
        assert len(kept) == config.capacity_transitions // T
        return sum(1 for w in kept if w.action[0, 0] == 5.0)
    finally:
        res.close()


def test_rare_dynamics_are_not_crowded_out(tmp_path):
    """6 rare windows (other effort, 3x surprise) among 600: a uniform reservoir of 20 keeps 0.2."""
    prioritised, uniform = [], []
    for seed in range(3):
        config = ReservoirConfig(capacity_transitions=20 * T, window=T)
        prioritised.append(offer(config, tmp_path / f"p{seed}.db", total=600, seed=seed))
        config = ReservoirConfig(capacity_transitions=20 * T, window=T, uniform=True)
        uniform.append(offer(config, tmp_path / f"u{seed}.db", total=600, seed=seed))
    assert min(prioritised) >= 1, prioritised
    assert sum(prioritised) >= 3 * max(1, sum(uniform)), (prioritised, uniform)


def test_same_offers_same_seed_same_reservoir(tmp_path):
    config = ReservoirConfig(capacity_transitions=10 * T, window=T)
    assert offer(config, tmp_path / "a.db", total=300) == offer(config, tmp_path / "b.db", total=300)


def test_update_reads_new_store_rows_once_and_round_trips(store_target):
    path = store_target
    store = ExperienceStore(path)
    rng = np.random.default_rng(0)
    for i in range(3):
        n = 25
        store.append(
            ExperienceBatch(
                robot_id="r1",
                task="t",
                first_seq=1 + i * n,
                obs=rng.normal(size=(n, 4 * N)).astype(np.float32),
                action=rng.normal(size=(n, N)).astype(np.float32),
                cost=rng.random(n).astype(np.float32),
                fast_read=np.zeros((n, N), np.float32),
                slow_read=rng.normal(size=(n, N)).astype(np.float32),
                surprise=rng.random(n).astype(np.float32),
                stamp=np.arange(n, dtype=np.float64),
                model_versions=np.ones(n, np.int64),
            )
        )
    res = L3Reservoir(path, ReservoirConfig(capacity_transitions=1000, window=T))
    try:
        stats = res.update(store, "t")
        assert stats["inserted"] == 3 * 2 and stats["rows_to"] == store.max_row_id("t")  # 25 ticks -> 2 windows
        assert res.update(store, "t")["offered"] == 0
        first = [b for b in store.read_batches("t")][0]
        kept = {(w.source_row, w.offset): w for w in res.windows("t")}
        w = kept[(1, T)]
        np.testing.assert_array_equal(w.obs, first.obs[T : 2 * T])
        np.testing.assert_array_equal(w.l1_read, first.slow_read[T : 2 * T])
        assert len(res.windows("t", limit=4, seed=1)) == 4
        assert res.stats("t")["items"] == 6 and isinstance(res.stats("t")["mean_surprise"], float)
    finally:
        res.close()
        store.close()


@pytest.mark.parametrize("field,value", [("window", 1), ("capacity_transitions", 3), ("novelty_weight", -1.0)])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ReservoirConfig(**{field: value}).validate()
