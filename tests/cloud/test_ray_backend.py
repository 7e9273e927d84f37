"""Consolidation on a real local Ray cluster: loopback only, same results as the local worker.

One cluster for the module (its start-up costs seconds); no other test module starts Ray. The
pytest process never imports torch: rounds run in Ray workers and in spawned children.
"""

import os
import pathlib
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
from cloud_brain.experience.store import ExperienceStore

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
TASK_FILE = REPO / "config" / "tasks" / "kuka_track.yaml"


def test_ray_is_not_imported_unless_chosen():
    code = (
        "import sys, cloud_brain.service.server, cloud_brain.learning.scheduler, cloud_brain.learning.ray_backend;"
        " from cloud_brain.config import CloudConfig; from cloud_brain.service.server import round_runner;"
        " assert round_runner(CloudConfig(), 'm:f') is None; print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def ray_cluster():
    from cloud_brain.learning import ray_backend

    # Ray's workers inherit the driver's environment: make cloud_testlib importable there.
    here = str(pathlib.Path(__file__).resolve().parent)
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, str(REPO), previous) if p)
    runner = ray_backend.RayRoundRunner("cloud_testlib:run_round", num_cpus=2)
    runner.start()
    yield runner
    runner.close()
    if previous is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = previous


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, stack = set(), [root]
    while stack:
        pid = stack.pop()
        for child in children.get(pid, []):
            if child not in out:
                out.add(child)
                stack.append(child)
    return out


def _is_loopback(endpoint: str) -> bool:
    host = endpoint.rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1") or host.startswith("::ffff:127.")


def test_every_socket_ray_opens_is_on_loopback(ray_cluster):
    from cloud_brain.learning import ray_backend

    assert ray_backend.ray_map(abs, [-1, -2, 3]) == [1, 2, 3]  # workers started, objects moved
    ray_pids = _descendants(os.getpid())
    assert ray_pids, "no Ray processes under this test"
    listing = subprocess.run(["ss", "-tnpa"], capture_output=True, text=True, check=True).stdout
    seen = []
    for line in listing.splitlines()[1:]:
        pids = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if not pids & ray_pids:
            continue
        fields = line.split()
        local, peer = fields[3], fields[4]
        seen.append((local, peer))
        assert _is_loopback(local), f"Ray socket bound off loopback: {line}"
        assert peer.endswith(":*") or _is_loopback(peer), f"Ray socket to a non-loopback peer: {line}"
    assert len(seen) >= 3, f"expected Ray's sockets (GCS, raylet, workers), saw {seen}"


def test_rounds_run_as_ray_tasks_niced_with_one_torch_thread(ray_cluster, tmp_path):
    from cloud_testlib import make_batch

    db = str(tmp_path / "r.db")
    store = ExperienceStore(db)
    store.append(make_batch(first_seq=1, n=7))
    store.close()
    request = {"db_path": db, "task": "arm", "parent_onnx": b"p", "experience_from": 0, "experience_to": 1}
    result = ray_cluster.run(request, timeout=120)
    assert result["onnx"] == b"p+round" and result["metrics"]["transitions"] == 7
    assert result["metrics"]["pid"] != os.getpid()
    assert result["metrics"]["nice"] >= 10 and result["metrics"]["torch_threads"] == 1


def test_a_failing_round_on_ray_is_a_round_error(ray_cluster):
    from cloud_brain.learning import ray_backend
    from cloud_brain.learning.round_worker import RoundError

    runner = ray_backend.RayRoundRunner("cloud_testlib:crash_round")
    with pytest.raises(RoundError, match="fake consolidation crashed"):
        runner.run({}, timeout=60)
    stop = threading.Event()
    stop.set()
    slow = ray_backend.RayRoundRunner("cloud_testlib:replica_round")
    with pytest.raises(RoundError, match="cancelled"):
        slow.run({"db_path": ":memory:", "task": "arm", "parent_onnx": b"", "experience_to": 0}, 60, stop)


@pytest.fixture(scope="module")
def kuka_store(tmp_path_factory):
    """A store of real kuka_track experience (the robot's runtime on PyBullet) and the initial model."""
    from cloud_brain.learning.evaluation import collect_experience
    from nestor_core.policy_model import load_model
    from nestor_sim.task import load_task
    from nestor_sim.tracking_env import TrackingEnv

    work = tmp_path_factory.mktemp("kuka")
    subprocess.run(
        [sys.executable, "-m", "bench.make_model", "--task-file", str(TASK_FILE), "--out-dir", str(work)],
        check=True,
        cwd=REPO,
        timeout=180,
    )
    onnx = (work / "model.onnx").read_bytes()
    db = str(work / "nestor.db")
    store = ExperienceStore(db)
    env = TrackingEnv(load_task(str(TASK_FILE)))
    try:
        for batch in collect_experience(load_model(onnx, None, 1), env, "k0", seed=0, ticks=2000):
            store.append(batch)
    finally:
        env.close()
    up_to = store.max_row_id("kuka_track")
    store.close()
    return db, onnx, up_to


# Small enough for a test (seconds), with the gate on and more than one scenario.
SMALL_ROUND = {
    "steps": 30,
    "batch_size": 256,
    "meta_steps": 2,
    "meta_batch": 8,
    "meta_seconds": 2.0,
    "eval_ticks": 300,
    "blend_steps": [1.0, 0.5],
    "gate_shifts": ["payload:1.5", "friction:2.0"],
}


def test_a_real_round_on_ray_gives_the_local_workers_result(ray_cluster, kuka_store):
    from cloud_brain.learning import ray_backend
    from cloud_brain.learning.round_worker import round_request, run_in_child

    db, onnx, up_to = kuka_store
    request = round_request(db, "kuka_track", str(TASK_FILE), 1, onnx, (0, up_to), 3, SMALL_ROUND)
    # The L3 reservoir is updated by each round: give each run the same starting database.
    local_db, ray_db = db + ".local", db + ".ray"
    for copy in (local_db, ray_db):
        subprocess.run(["cp", db, copy], check=True)
    local = run_in_child("cloud_brain.learning.consolidation:run_round", {**request, "db_path": local_db}, timeout=600)
    runner = ray_backend.RayRoundRunner("cloud_brain.learning.consolidation:run_round")
    on_ray = runner.run({**request, "db_path": ray_db}, timeout=600)
    assert on_ray["accepted"] == local["accepted"] and on_ray["reason"] == local["reason"]
    gate_local, gate_ray = local["metrics"]["gate"], on_ray["metrics"]["gate"]
    # nominal + two shifts mid-episode + the same two from tick 0
    assert len(gate_local["parent"]) == 5
    assert sum(name.endswith(" from t=0") for name in gate_local["parent"]) == 2
    assert gate_ray["parent"] == gate_local["parent"]
    assert [t["costs"] for t in gate_ray["tried"]] == [t["costs"] for t in gate_local["tried"]]
    assert on_ray["onnx"] == local["onnx"]
    np.testing.assert_equal(on_ray["metrics"]["training"], local["metrics"]["training"])
