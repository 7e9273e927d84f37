"""Staged rollout (canary) and per-robot bad versions: the decision rules, then the real gRPC server."""

import math
import queue
import threading

import grpc
import pytest
from cloud_brain.config import ConfigError, RolloutConfig, config_from_dict
from cloud_brain.models.rollout import canary_verdict, choose_canaries
from cloud_brain.service.server import CloudServer
from cloud_testlib import initial_model, make_batch
from nestor_core import nestor_pb2, nestor_pb2_grpc
from nestor_core.experience import to_chunk

DEADLINE = 10.0


# --- decision logic ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fraction, robots, expected",
    [
        (0.0, ["a", "b"], []),
        (0.25, ["r3", "r1", "r0", "r2"], ["r0"]),
        (0.5, ["r3", "r1", "r0", "r2"], ["r0", "r1"]),
        (0.25, ["r0", "r1", "r2", "r3", "r4"], ["r0", "r1"]),  # ceil(1.25) = 2
        (0.01, ["b", "a"], ["a"]),
        (1.0, ["b", "a", "a"], ["a", "b"]),
        (0.5, [], []),
    ],
)
def test_choose_canaries_is_deterministic_lowest_ids(fraction, robots, expected):
    assert choose_canaries(robots, fraction) == expected
    assert len(expected) == (math.ceil(fraction * len(set(robots))) if robots and fraction else 0)


@pytest.mark.parametrize(
    "pre, post, limit, promote, text",
    [
        ({"a": 1.0}, {"a": 1.05}, 0.1, True, "+5.0%"),
        ({"a": 1.0}, {"a": 1.2}, 0.1, False, "+20.0%"),
        ({"a": 1.0, "b": 3.0}, {"a": 0.5, "b": 3.6}, 0.1, True, "+2.5%"),  # pooled: a alone would be -50 %
        ({"a": 2.0}, {"a": 1.0}, 0.0, True, "-50.0%"),
        ({"a": 1.0}, {}, 0.1, False, "no experience"),
        ({}, {"a": 9.0}, 0.1, True, "no pre-swap baseline"),
        ({"a": 0.0}, {"a": 0.0}, 0.0, True, "+0.0%"),
    ],
)
def test_canary_verdict(pre, post, limit, promote, text):
    verdict, why = canary_verdict(pre, post, limit)
    assert verdict is promote
    assert text in why


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("canary_fraction", 1.5, "rollout.canary_fraction"),
        ("canary_transitions", 0, "rollout.canary_transitions"),
        ("max_regression", -0.1, "rollout.max_regression"),
        ("canary_timeout_seconds", 0.0, "rollout.canary_timeout_seconds"),
    ],
)
def test_rollout_config_is_validated(field, value, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"rollout": {field: value}})


def test_rollout_is_off_by_default():
    assert RolloutConfig().canary_fraction == 0.0


# --- the real server --------------------------------------------------------------------------


class Subscriber:
    def __init__(self, channel, robot_id, current):
        self.updates = queue.Queue()
        self.call = nestor_pb2_grpc.ModelsStub(channel).Subscribe(
            nestor_pb2.SubscribeRequest(robot_id=robot_id, task="arm", current_version=current), timeout=60
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        try:
            for update in self.call:
                self.updates.put(update.version)
        except grpc.RpcError:
            pass

    def next(self, timeout=DEADLINE):
        return self.updates.get(timeout=timeout)

    def nothing(self, wait=0.5) -> bool:
        try:
            self.updates.get(timeout=wait)
        except queue.Empty:
            return True
        return False


def ingest(channel, robot_id, first_seq, n, version, cost):
    batch = make_batch(robot=robot_id, first_seq=first_seq, n=n, version=version)
    batch.cost[:] = cost
    acks = list(nestor_pb2_grpc.ExperienceStub(channel).Ingest(iter([to_chunk(batch)]), timeout=DEADLINE))
    assert acks[-1].acked_through_seq == first_seq + n - 1


@pytest.fixture
def canary_server(cloud_config):
    cloud_config.rollout = RolloutConfig(
        canary_fraction=0.25,
        canary_transitions=30,
        canary_timeout_seconds=30.0,
        max_regression=0.2,
        baseline_transitions=50,
        poll_seconds=0.1,
    )
    srv = CloudServer(cloud_config.validate(), initial_model_fn=initial_model)
    srv.start()
    yield srv
    srv.stop(0.5)


def _wait_connected(server, n):
    for _ in range(100):
        if len(server.rollout.connected("arm")) == n:
            return
        threading.Event().wait(0.05)
    raise AssertionError(server.rollout.connected("arm"))


@pytest.mark.parametrize("post_cost, promoted", [(1.1, True), (3.0, False)])
def test_four_subscribers_canary_then_promote_or_reject(canary_server, post_cost, promoted):
    server = canary_server
    parent = server.registry.active("arm")
    robots = ["r0", "r1", "r2", "r3"]
    with grpc.insecure_channel(server.address) as channel:
        for i, robot in enumerate(robots):
            ingest(channel, robot, 1, 60, parent.version, 1.0 + 0.01 * i)  # pre-swap costs under the parent
        subs = {r: Subscriber(channel, r, parent.version) for r in robots}
        _wait_connected(server, 4)
        candidate = server.registry.register(
            "arm", b"fake-onnx:candidate", parent.io_signature, parent=parent.version, status="candidate"
        )
        assert server.rollout.accept(candidate).status == "candidate"  # what the scheduler does on accept
        assert server.registry.active("arm").version == parent.version
        # ceil(0.25 * 4) = 1 canary: the lowest id.
        assert subs["r0"].next() == candidate.version
        assert all(subs[r].nothing() for r in robots[1:])
        ingest(channel, "r0", 61, 40, candidate.version, post_cost)
        if promoted:
            for robot in robots[1:]:
                assert subs[robot].next() == candidate.version
            assert server.registry.active("arm").version == candidate.version
            assert subs["r0"].nothing()
        else:
            assert subs["r0"].next() == parent.version  # the canary gets the previous version back
            assert all(subs[r].nothing() for r in robots[1:])
            assert server.registry.get(candidate.version).status == "rejected"
            assert "canary" in server.registry.get(candidate.version).reason
            assert server.registry.active("arm").version == parent.version
        for sub in subs.values():
            sub.call.cancel()
    outcome = "promoted" if promoted else "rejected"
    assert server.metrics.registry.get_sample_value("nestor_rollouts_total", {"outcome": outcome}) == 1


def test_report_bad_marks_a_version_for_that_robot_only(server):
    first = server.registry.active("arm")
    second = server.registry.register(
        "arm", b"fake-onnx:second", first.io_signature, parent=first.version, status="active"
    )
    with grpc.insecure_channel(server.address) as channel:
        stub = nestor_pb2_grpc.ModelsStub(channel)
        reply = stub.ReportBad(
            nestor_pb2.BadModelReport(robot_id="r2", version=second.version, reason="worse"), timeout=DEADLINE
        )
        assert (reply.version, reply.robots_reporting) == (second.version, 1)
        assert server.registry.bad_versions("r2") == {second.version}
        bad_robot = Subscriber(channel, "r2", first.version)
        other = Subscriber(channel, "r3", first.version)
        assert other.next() == second.version
        assert bad_robot.nothing(1.0)  # never offered again to r2
        with pytest.raises(grpc.RpcError) as err:
            stub.ReportBad(nestor_pb2.BadModelReport(robot_id="r2", version=999, reason="x"), timeout=DEADLINE)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            stub.ReportBad(nestor_pb2.BadModelReport(robot_id="", version=second.version), timeout=DEADLINE)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad_robot.call.cancel()
        other.call.cancel()
    assert server.metrics.registry.get_sample_value("nestor_robot_rollbacks_total", {"task": "arm"}) == 1


def test_cloud_metrics_endpoint_serves_the_fleet_figures(cloud_config):
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        cloud_config.metrics_port = s.getsockname()[1]
    server = CloudServer(cloud_config, initial_model_fn=initial_model)
    server.start()
    try:
        active = server.registry.active("arm")
        with grpc.insecure_channel(server.address) as channel:
            ingest(channel, "r1", 1, 5, active.version, 1.0)
            with pytest.raises(grpc.RpcError):
                ingest(channel, "r1", 50, 5, active.version, 1.0)  # a gap: rejected
            nestor_pb2_grpc.ModelsStub(channel).ReportBad(
                nestor_pb2.BadModelReport(robot_id="r1", version=active.version, reason="worse"), timeout=DEADLINE
            )
        text = urllib.request.urlopen(f"http://127.0.0.1:{cloud_config.metrics_port}/metrics", timeout=5).read()
        text = text.decode()
    finally:
        server.stop(0.5)
    for sample in (
        'nestor_ingested_transitions_total{task="arm"} 5.0',
        'nestor_rejected_chunks_total{reason="sequence_gap"} 1.0',
        "nestor_ack_latency_seconds_count 1.0",
        f'nestor_active_model_version{{task="arm"}} {float(active.version)}',
        f'nestor_robot_model_version{{robot_id="r1",task="arm"}} {float(active.version)}',
        'nestor_robot_rollbacks_total{task="arm"} 1.0',
    ):
        assert sample in text, sample


def test_a_running_canary_survives_a_cloud_restart(canary_server, cloud_config):
    """Stop the server mid-canary; a new server on the same database resumes and decides it."""
    server = canary_server
    parent = server.registry.active("arm")
    robots = ["r0", "r1", "r2", "r3"]
    with grpc.insecure_channel(server.address) as channel:
        for i, robot in enumerate(robots):
            ingest(channel, robot, 1, 60, parent.version, 1.0 + 0.01 * i)
        subs = {r: Subscriber(channel, r, parent.version) for r in robots}
        _wait_connected(server, 4)
        candidate = server.registry.register(
            "arm", b"fake-onnx:candidate", parent.io_signature, parent=parent.version, status="candidate"
        )
        server.rollout.accept(candidate)
        assert subs["r0"].next() == candidate.version
        start_row = server.rollout.canary("arm").start_row
        for sub in subs.values():
            sub.call.cancel()
    server.stop(0.5)

    cloud_config.address = "127.0.0.1:0"
    restarted = CloudServer(cloud_config.validate(), initial_model_fn=initial_model)
    restarted.start()
    try:
        canary = restarted.rollout.canary("arm")
        assert canary is not None and canary.candidate.version == candidate.version
        assert (canary.robots, canary.parent, canary.start_row) == (["r0"], parent.version, start_row)
        with grpc.insecure_channel(restarted.address) as channel:
            r0, r1 = Subscriber(channel, "r0", parent.version), Subscriber(channel, "r1", parent.version)
            assert r0.next() == candidate.version  # still the canary after the restart
            assert r1.nothing()
            ingest(channel, "r0", 61, 40, candidate.version, 1.1)  # no regression: promote
            assert r1.next() == candidate.version
            r0.call.cancel()
            r1.call.cancel()
        assert restarted.registry.active("arm").version == candidate.version
        assert restarted.rollout.saved_canaries() == []  # decided: no record left to resume
    finally:
        restarted.stop(0.5)
