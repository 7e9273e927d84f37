"""The uplink against a real gRPC server on 127.0.0.1 (an in-memory test double of the cloud)."""

import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest
import ros_testlib
from nestor_core import nestor_pb2, nestor_pb2_grpc
from nestor_core.experience import ChunkError, ExperienceBatch, from_chunk
from nestor_robot.channel import Backoff
from nestor_robot.spool import Spool
from nestor_robot.uplink import Uplink, UplinkConfig
from ros_testlib import spin_until, start_node, stop_node

ROBOT = "robot_u"


def make_batch(first_seq: int, n: int, obs_dim: int = 4, act_dim: int = 2) -> ExperienceBatch:
    """n transitions whose obs[:, 0] is their seq, so the cloud can check what arrived."""
    seqs = np.arange(first_seq, first_seq + n)
    zeros = np.zeros((n, act_dim), np.float32)
    return ExperienceBatch(
        robot_id=ROBOT,
        task="kuka_track",
        first_seq=first_seq,
        obs=np.repeat(seqs[:, None], obs_dim, axis=1).astype(np.float32),
        action=zeros,
        cost=np.ones(n, np.float32),
        fast_read=zeros,
        slow_read=zeros,
        surprise=np.zeros(n, np.float32),
        stamp=seqs * 0.01,
        model_versions=np.ones(n, np.int64),
    )


def append_n(spool: Spool, chunks: int, size: int) -> None:
    for _ in range(chunks):
        spool.append(make_batch(spool.next_seq(), size))


class SequenceGap(Exception):
    """A chunk that starts after an unannounced gap."""


class MemoryCloud:
    """Durable-enough store for the test: survives server restarts, de-duplicates by (robot, seq)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.stored: dict[int, int] = {}  # seq -> obs[0] (the seq the robot wrote into the row)
        self.arrivals = 0  # transitions received, duplicates included
        self.last = 0  # highest seq stored or announced as dropped
        self.dropped = 0

    def ingest(self, chunk: nestor_pb2.ExperienceChunk) -> nestor_pb2.IngestAck:
        batch = from_chunk(chunk)  # raises ChunkError for a chunk that can never be accepted
        with self.lock:
            self.arrivals += len(batch)
            gap = batch.first_seq - (self.last + 1)
            if gap > 0:
                if gap > batch.dropped_before:
                    # As the real cloud does (cloud_brain.experience.store.SequenceGapError): OUT_OF_RANGE,
                    # the uplink reconnects and resends from its last acknowledged seq.
                    raise SequenceGap(f"expected seq {self.last + 1}, got {batch.first_seq}")
                self.dropped += gap
            new = 0
            for seq, value in zip(range(batch.first_seq, batch.last_seq + 1), batch.obs[:, 0], strict=True):
                if seq not in self.stored:
                    self.stored[seq] = int(value)
                    new += 1
            self.last = max(self.last, batch.last_seq)
            return nestor_pb2.IngestAck(
                robot_id=chunk.robot_id, acked_through_seq=self.last, stored=new, duplicates=len(batch) - new
            )


class ExperienceServicer(nestor_pb2_grpc.ExperienceServicer):
    def __init__(self, cloud: MemoryCloud, ack_delay_s: float = 0.0, never_ack: bool = False, crash_on_seq=None):
        self.cloud = cloud
        self.ack_delay_s = ack_delay_s
        self.never_ack = never_ack
        self.crash_on_seq = crash_on_seq  # a server bug on this chunk: an uncaught exception, so UNKNOWN
        self.crashes = 0
        self.streams = 0

    def Ingest(self, request_iterator, context):
        self.streams += 1
        for chunk in request_iterator:
            if self.never_ack:
                continue
            time.sleep(self.ack_delay_s)
            if chunk.first_seq == self.crash_on_seq:
                self.crashes += 1
                raise RuntimeError("server bug")
            try:
                ack = self.cloud.ingest(chunk)
            except ChunkError as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{err.reason}: {err}")
            except SequenceGap as err:
                context.abort(grpc.StatusCode.OUT_OF_RANGE, f"sequence_gap: {err}")
            yield ack


def start_server(servicer, port: int = 0) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    nestor_pb2_grpc.add_ExperienceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    assert bound, f"could not bind 127.0.0.1:{port}"
    server.start()
    return server, bound


def wait_for(predicate, timeout: float = 20.0, period: float = 0.01) -> bool:
    return ros_testlib.wait_for(predicate, timeout, period)


class Running:
    """An Uplink on its own thread, stopped (and checked to stop promptly) on exit."""

    def __init__(self, uplink: Uplink):
        self.uplink = uplink
        self.stop = threading.Event()
        self.thread = threading.Thread(target=uplink.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Uplink:
        self.thread.start()
        return self.uplink

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(5.0)
        assert not self.thread.is_alive(), "uplink did not stop within 5 s"


FAST = UplinkConfig(window=4, backoff_min_s=0.02, backoff_max_s=0.2, poll_period_s=0.01, ack_timeout_s=5.0)


@pytest.fixture
def spool(tmp_path):
    with Spool(tmp_path / "spool.sqlite", ROBOT) as s:
        yield s


def test_everything_arrives_once_and_acks_drain_the_spool(spool):
    cloud = MemoryCloud()
    server, port = start_server(ExperienceServicer(cloud))
    try:
        append_n(spool, 20, 5)
        with Running(Uplink(spool, f"127.0.0.1:{port}", FAST)) as uplink:
            append_n(spool, 20, 5)  # appended while streaming
            assert wait_for(lambda: spool.acked_through() == 200)
            stats = uplink.stats()
        assert sorted(cloud.stored) == list(range(1, 201))
        assert all(seq == value for seq, value in cloud.stored.items())
        assert spool.stats()["depth_chunks"] == 0
        assert stats["acked"] == 200 and stats["sent"] >= 200
        assert stats["ack_latency_samples"] == 40 and stats["ack_latency_p50_s"] >= 0
    finally:
        server.stop(0)


@pytest.mark.slow
def test_server_restart_mid_stream_loses_and_duplicates_nothing(spool):
    cloud = MemoryCloud()
    servicer = ExperienceServicer(cloud, ack_delay_s=0.005)
    server, port = start_server(servicer)
    total = 400
    append_n(spool, 40, 5)
    with Running(Uplink(spool, f"127.0.0.1:{port}", FAST)) as uplink:
        writer = threading.Thread(target=append_n, args=(spool, 40, 5))
        writer.start()
        assert wait_for(lambda: len(cloud.stored) >= 60)
        server.stop(0)  # the cloud dies with chunks in flight
        writer.join(10)
        time.sleep(0.3)
        assert wait_for(lambda: uplink.stats()["errors"] >= 1, timeout=5)
        partial = len(cloud.stored)
        assert partial < total
        server, _ = start_server(servicer, port)  # same port, same durable store
        try:
            assert wait_for(lambda: spool.acked_through() == total)
            stats = uplink.stats()
        finally:
            server.stop(0)
    assert sorted(cloud.stored) == list(range(1, total + 1))  # each seq stored exactly once
    assert all(seq == value for seq, value in cloud.stored.items())
    assert cloud.dropped == 0
    assert stats["reconnects"] >= 1 and stats["last_error"].startswith("UNAVAILABLE")
    assert spool.stats()["depth_chunks"] == 0


def test_cloud_starting_late_is_retried_with_backoff(spool):
    append_n(spool, 3, 5)
    cloud = MemoryCloud()
    probe, port = start_server(ExperienceServicer(cloud))
    probe.stop(0)  # reserve a free port, then leave it closed
    with Running(Uplink(spool, f"127.0.0.1:{port}", FAST)) as uplink:
        assert wait_for(lambda: uplink.stats()["reconnects"] >= 2, timeout=10)
        server, _ = start_server(ExperienceServicer(cloud), port)
        try:
            assert wait_for(lambda: spool.acked_through() == 15)
        finally:
            server.stop(0)
    assert sorted(cloud.stored) == list(range(1, 16))


def _drain(spool, servicer, acked_through: int) -> dict:
    """Run an Uplink against `servicer` until the spool is acked through `acked_through`; its stats."""
    server, port = start_server(servicer)
    try:
        with Running(Uplink(spool, f"127.0.0.1:{port}", FAST)) as uplink:
            assert wait_for(lambda: spool.acked_through() == acked_through)
            return uplink.stats()
    finally:
        server.stop(0)


def test_refused_chunk_is_quarantined_and_the_gap_announced(spool):
    append_n(spool, 2, 5)  # 1-10
    poisoned = make_batch(11, 5)
    poisoned.obs[2, 1] = np.nan  # the cloud refuses it for good
    spool.append(poisoned)
    append_n(spool, 2, 5)  # 16-25
    cloud = MemoryCloud()
    stats = _drain(spool, ExperienceServicer(cloud), 25)
    assert sorted(cloud.stored) == list(range(1, 11)) + list(range(16, 26))
    assert cloud.dropped == 5
    assert stats["rejected_chunks"] == 1 and stats["rejected"] == 5
    assert spool.stats()["quarantined"] == 5 and spool.stats()["dropped"] == 5


def test_chunk_that_keeps_failing_on_the_server_is_quarantined_not_resent_forever(spool):
    append_n(spool, 3, 5)  # 1-15; the server fails on 6-10 every time (UNKNOWN)
    cloud = MemoryCloud()
    servicer = ExperienceServicer(cloud, crash_on_seq=6)
    stats = _drain(spool, servicer, 15)
    assert servicer.crashes == FAST.poison_after == 3
    assert sorted(cloud.stored) == list(range(1, 6)) + list(range(11, 16))
    assert cloud.dropped == 5  # the gap was announced, not hidden
    assert stats["rejected_chunks"] == 1 and spool.stats()["quarantined"] == 5


def test_silent_cloud_times_out_and_reconnects(spool):
    append_n(spool, 2, 5)
    cloud = MemoryCloud()
    servicer = ExperienceServicer(cloud, never_ack=True)
    server, port = start_server(servicer)
    config = UplinkConfig(window=2, backoff_min_s=0.02, backoff_max_s=0.05, poll_period_s=0.01, ack_timeout_s=0.3)
    try:
        with Running(Uplink(spool, f"127.0.0.1:{port}", config)) as uplink:
            assert wait_for(lambda: servicer.streams >= 2, timeout=10)
            servicer.never_ack = False
            assert wait_for(lambda: spool.acked_through() == 10)
            stats = uplink.stats()
    finally:
        server.stop(0)
    assert stats["reconnects"] >= 1 and stats["errors"] >= 1
    assert sorted(cloud.stored) == list(range(1, 11))


def test_short_stream_deadline_reopens_streams(spool):
    cloud = MemoryCloud()
    servicer = ExperienceServicer(cloud)
    server, port = start_server(servicer)
    config = UplinkConfig(window=2, backoff_min_s=0.02, backoff_max_s=0.05, poll_period_s=0.01, stream_deadline_s=0.3)
    try:
        with Running(Uplink(spool, f"127.0.0.1:{port}", config)):
            append_n(spool, 2, 5)
            assert wait_for(lambda: servicer.streams >= 3, timeout=10)
            append_n(spool, 2, 5)
            assert wait_for(lambda: spool.acked_through() == 20)
    finally:
        server.stop(0)
    assert sorted(cloud.stored) == list(range(1, 21))


def test_backoff_grows_with_jitter_and_is_capped():
    backoff = Backoff(0.1, 1.0)
    delays = [backoff.next_delay() for _ in range(10)]
    assert all(0.1 <= d <= 1.0 for d in delays)
    assert max(delays[5:]) > 0.2  # grew beyond the minimum
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="window"):
        UplinkConfig(window=0).validate()
    with pytest.raises(ValueError, match="backoff"):
        UplinkConfig(backoff_min_s=2, backoff_max_s=1).validate()


@pytest.mark.slow
def test_uplink_node_streams_spool_and_reports_status_on_dds(tmp_path, monkeypatch):
    import os
    import random

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from nestor_core import qos
    from rclpy.executors import SingleThreadedExecutor

    domain = 1 + (os.getpid() * 13 + random.randrange(1000)) % 100
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    path = tmp_path / "spool.sqlite"
    with Spool(path, ROBOT) as spool:
        append_n(spool, 6, 5)
    cloud = MemoryCloud()
    server, port = start_server(ExperienceServicer(cloud))
    proc = start_node(
        "uplink_node", robot_id=ROBOT, spool_path=path, cloud_address=f"127.0.0.1:{port}", status_period_s=0.2
    )
    context = rclpy.Context()
    acked = []
    try:
        rclpy.init(context=context, domain_id=domain)
        node = rclpy.create_node("uplink_probe", context=context)

        def on_status(msg: DiagnosticArray) -> None:
            values = {kv.key: kv.value for kv in msg.status[0].values}
            acked.append(int(values["spool.acked_through"]))

        node.create_subscription(DiagnosticArray, "uplink/status", on_status, qos.STATUS_QOS)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        spin_until(executor, lambda: bool(acked) and acked[-1] >= 30, proc)
        node.destroy_node()
        executor.shutdown()
    finally:
        output = stop_node(proc, context)
        server.stop(0)
    assert acked and acked[-1] == 30, f"status never showed acked_through=30 ({acked}); node output:\n{output}"
    assert sorted(cloud.stored) == list(range(1, 31))
    assert proc.returncode == 0, output
