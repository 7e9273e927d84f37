"""The real gRPC server on 127.0.0.1, port 0: ingest acks, rejects, Subscribe, Fleet, health."""

import queue
import sqlite3
import threading

import grpc
import numpy as np
import pytest
from cloud_testlib import make_batch, make_chunk
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nestor_core import nestor_pb2, nestor_pb2_grpc
from nestor_core.experience import to_chunk

DEADLINE = 10.0


@pytest.fixture
def channel(server):
    with grpc.insecure_channel(server.address) as ch:
        yield ch


class Uplink:
    """A bidi Ingest stream driven one chunk at a time: send, then wait for its ack."""

    def __init__(self, channel, raw: bool = False):
        self._requests = queue.Queue()
        if raw:
            call = channel.stream_stream(
                "/nestor.v1.Experience/Ingest",
                request_serializer=lambda b: b,
                response_deserializer=nestor_pb2.IngestAck.FromString,
            )
        else:
            call = nestor_pb2_grpc.ExperienceStub(channel).Ingest
        self.call = call(iter(self._requests.get, None), timeout=DEADLINE)

    def send(self, chunk) -> nestor_pb2.IngestAck:
        self._requests.put(chunk)
        return next(self.call)

    def close(self):
        self._requests.put(None)
        assert list(self.call) == []


def rows(db_path) -> list[tuple]:
    """Stored (robot, first_seq, count), read through a separate connection."""
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT robot_id, first_seq, count FROM chunks ORDER BY id").fetchall()


def test_health_serving(server, channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "nestor.v1.Experience", "nestor.v1.Models", "nestor.v1.Fleet"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=DEADLINE)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_ack_only_after_commit_and_duplicates_store_nothing(server, channel):
    db = server.config.db_path
    up = Uplink(channel)
    ack = up.send(make_chunk(first_seq=1, n=5))
    assert (ack.robot_id, ack.acked_through_seq, ack.stored, ack.duplicates) == ("r1", 5, 5, 0)
    assert rows(db) == [("r1", 1, 5)]  # visible to another connection when the ack arrives
    ack = up.send(make_chunk(first_seq=6, n=3))
    assert ack.acked_through_seq == 8 and rows(db)[-1] == ("r1", 6, 3)
    ack = up.send(make_chunk(first_seq=1, n=5))  # resend after a lost ack
    assert (ack.acked_through_seq, ack.stored, ack.duplicates) == (8, 0, 5)
    ack = up.send(make_chunk(first_seq=7, n=4))  # overlap: 7, 8 old, 9, 10 new
    assert (ack.acked_through_seq, ack.stored, ack.duplicates) == (10, 2, 2)
    up.close()
    assert rows(db) == [("r1", 1, 5), ("r1", 6, 3), ("r1", 9, 2)]


def _nan_chunk():
    batch = make_batch(robot="bad", n=3)
    batch.obs[0, 0] = np.nan
    return to_chunk(batch)


@pytest.mark.parametrize(
    "payload, code, reason, detail",
    [
        (_nan_chunk(), grpc.StatusCode.INVALID_ARGUMENT, "non_finite", "NaN"),
        (make_chunk(robot="bad", n=3, act_dim=4), grpc.StatusCode.INVALID_ARGUMENT, "bad_shape", "width"),
        (b"\xff\xff\xff\xff", grpc.StatusCode.INVALID_ARGUMENT, "malformed", "cannot decode"),
        (make_chunk(robot="", n=3), grpc.StatusCode.INVALID_ARGUMENT, "missing_robot_id", "robot_id"),
        (make_chunk(robot="bad", n=3, task="mars"), grpc.StatusCode.INVALID_ARGUMENT, "unknown_task", "mars"),
        (make_chunk(robot="bad", first_seq=0, n=3), grpc.StatusCode.INVALID_ARGUMENT, "bad_sequence", "first_seq"),
        (make_chunk(robot="bad", first_seq=4, n=3), grpc.StatusCode.OUT_OF_RANGE, "sequence_gap", "expected seq 1"),
    ],
)
def test_bad_chunks_end_their_stream_and_store_nothing(server, channel, payload, code, reason, detail):
    good = Uplink(channel)
    assert good.send(make_chunk(robot="good", first_seq=1, n=2)).stored == 2
    bad = Uplink(channel, raw=True)
    with pytest.raises(grpc.RpcError) as err:
        bad.send(payload if isinstance(payload, bytes) else payload.SerializeToString())
    assert err.value.code() == code
    assert detail in err.value.details()
    # The other robot's stream is unaffected; nothing of the bad chunk was stored.
    assert good.send(make_chunk(robot="good", first_seq=3, n=2)).acked_through_seq == 4
    good.close()
    assert rows(server.config.db_path) == [("good", 1, 2), ("good", 3, 2)]
    status = nestor_pb2_grpc.FleetStub(channel).GetStatus(nestor_pb2.StatusRequest(), timeout=DEADLINE)
    assert dict(status.rejected_by_reason) == {reason: 1}
    assert [r.robot_id for r in status.robots] == ["good"]


def test_reject_mid_stream_keeps_earlier_acks(server, channel):
    up = Uplink(channel)
    assert up.send(make_chunk(first_seq=1, n=3)).acked_through_seq == 3
    with pytest.raises(grpc.RpcError) as err:
        up.send(make_chunk(first_seq=10, n=3))
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "expected seq 4" in err.value.details()
    again = Uplink(channel)  # the robot reconnects and resumes from its ack
    assert again.send(make_chunk(first_seq=4, n=3)).acked_through_seq == 6
    again.close()


def _subscribe(channel, task, current=0):
    updates = queue.Queue()
    call = nestor_pb2_grpc.ModelsStub(channel).Subscribe(
        nestor_pb2.SubscribeRequest(robot_id="r1", task=task, current_version=current), timeout=30
    )

    def pump():
        try:
            for update in call:
                updates.put(update)
            updates.put("end")
        except grpc.RpcError as err:
            updates.put(err)

    threading.Thread(target=pump, daemon=True).start()
    return call, updates


def test_subscribe_gets_active_then_each_new_version(server, channel):
    active = server.registry.active("arm")
    call, updates = _subscribe(channel, "arm")
    first = updates.get(timeout=DEADLINE)
    assert (first.version, first.task, first.onnx) == (active.version, "arm", active.onnx)
    assert first.sha256 == active.sha256 and first.manifest == active.manifest
    # Registered as a candidate: not pushed. Promoted over gRPC: pushed.
    child = server.registry.register("arm", b"better", {}, parent=active.version)
    with pytest.raises(queue.Empty):
        updates.get(timeout=0.3)
    stub = nestor_pb2_grpc.ModelsStub(channel)
    reply = stub.Promote(nestor_pb2.PromoteRequest(version=child.version), timeout=DEADLINE)
    assert reply.model.status == "active"
    second = updates.get(timeout=DEADLINE)
    assert (second.version, second.parent, second.onnx) == (child.version, active.version, b"better")
    reply = stub.Rollback(nestor_pb2.RollbackRequest(task="arm"), timeout=DEADLINE)
    assert reply.model.version == active.version
    assert updates.get(timeout=DEADLINE).version == active.version
    call.cancel()


def test_subscribe_skips_the_version_the_robot_has(server, channel):
    active = server.registry.active("crane")
    call, updates = _subscribe(channel, "crane", current=active.version)
    with pytest.raises(queue.Empty):
        updates.get(timeout=0.3)
    child = server.registry.register("crane", b"c2", {}, parent=active.version)
    server.registry.promote(child.version)
    assert updates.get(timeout=DEADLINE).version == child.version
    call.cancel()


def test_subscribe_unknown_task_is_invalid(server, channel):
    call, updates = _subscribe(channel, "mars")
    err = updates.get(timeout=DEADLINE)
    assert isinstance(err, grpc.RpcError) and err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_subscribe_ends_cleanly_on_server_stop(cloud_config):
    from cloud_brain.service.server import CloudServer
    from cloud_testlib import initial_model

    srv = CloudServer(cloud_config, initial_model_fn=initial_model)
    srv.start()
    with grpc.insecure_channel(srv.address) as ch:
        _, updates = _subscribe(ch, "arm")
        assert updates.get(timeout=DEADLINE).version >= 1
        srv.stop(2.0)
        assert updates.get(timeout=DEADLINE) == "end"


def test_fleet_status_and_models_list(server, channel):
    up = Uplink(channel)
    up.send(make_chunk(robot="r1", first_seq=1, n=4, version=1))
    up.send(make_chunk(robot="r1", first_seq=7, n=2, dropped_before=2, version=1))
    up.close()
    status = nestor_pb2_grpc.FleetStub(channel).GetStatus(nestor_pb2.StatusRequest(), timeout=DEADLINE)
    assert status.transitions_stored == 6
    assert status.consolidation_rounds == 0
    (robot,) = status.robots
    assert (robot.robot_id, robot.task, robot.transitions, robot.last_seq, robot.dropped) == ("r1", "arm", 6, 8, 2)
    assert robot.model_version == 1 and robot.last_contact_unix > 0
    assert sorted((m.task, m.status) for m in status.models) == [("arm", "active"), ("crane", "active")]
    models = nestor_pb2_grpc.ModelsStub(channel)
    listed = models.List(nestor_pb2.ListModelsRequest(task="crane"), timeout=DEADLINE)
    assert [m.task for m in listed.models] == ["crane"]
    with pytest.raises(grpc.RpcError) as err:
        models.Promote(nestor_pb2.PromoteRequest(version=99), timeout=DEADLINE)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        models.Rollback(nestor_pb2.RollbackRequest(task="arm"), timeout=DEADLINE)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_restart_keeps_models_and_sequence_state(cloud_config):
    from cloud_brain.service.server import CloudServer
    from cloud_testlib import initial_model

    with CloudServer(cloud_config, initial_model_fn=initial_model) as srv:
        versions = {m.task: m.version for m in srv.registry.list()}
        with grpc.insecure_channel(srv.address) as ch:
            Uplink(ch).send(make_chunk(first_seq=1, n=3))
    with CloudServer(cloud_config, initial_model_fn=initial_model) as srv:
        assert {m.task: m.version for m in srv.registry.list()} == versions  # no second initial model
        with grpc.insecure_channel(srv.address) as ch:
            assert Uplink(ch).send(make_chunk(first_seq=1, n=3)).duplicates == 3


def test_many_concurrent_streams(server, channel):
    """64 robots stream at once through the thread pool; every chunk is acked and stored once."""
    errors = []

    def robot(i):
        try:
            up = Uplink(channel)
            for k in range(3):
                assert up.send(make_chunk(robot=f"r{i}", first_seq=1 + 4 * k, n=4)).acked_through_seq == 4 * k + 4
            up.close()
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=robot, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(rows(server.config.db_path)) == 64 * 3
