"""One simulated robot of the load benchmarks: a paced Ingest stream with a send window (bench_load.run)."""

from __future__ import annotations

import dataclasses
import threading
import time

OBS_DIM, ACT_DIM = 28, 7


def _template(robot_id: str, n: int):
    import numpy as np
    from nestor_core.experience import ExperienceBatch, to_chunk

    rng = np.random.default_rng(abs(hash(robot_id)) % 2**32)
    batch = ExperienceBatch(
        robot_id=robot_id,
        task="kuka_track",
        first_seq=1,
        obs=rng.standard_normal((n, OBS_DIM)).astype(np.float32),
        action=rng.standard_normal((n, ACT_DIM)).astype(np.float32),
        cost=rng.random(n).astype(np.float32),
        fast_read=np.zeros((n, ACT_DIM), np.float32),
        slow_read=np.zeros((n, ACT_DIM), np.float32),
        surprise=np.ones(n, np.float32),
        stamp=np.arange(n, dtype=np.float64) * 0.01,
        model_versions=np.ones(n, np.int64),
        l1_state=np.zeros((ACT_DIM, 8), np.float32),
    )
    return to_chunk(batch)


@dataclasses.dataclass(eq=False)
class Client:
    """One simulated robot: a paced Ingest stream with a send window; reconnects after errors."""

    robot_id: str
    address: str
    creds: object  # grpc.ChannelCredentials
    chunk: int
    period: float
    window: int
    end: float
    cond: threading.Condition = dataclasses.field(default_factory=threading.Condition, init=False)
    in_flight: dict[int, float] = dataclasses.field(default_factory=dict, init=False)
    next_seq: int = dataclasses.field(default=1, init=False)
    acked: int = dataclasses.field(default=0, init=False)
    latencies: list[float] = dataclasses.field(default_factory=list, init=False)
    errors: list[str] = dataclasses.field(default_factory=list, init=False)

    def __post_init__(self):
        self.template = _template(self.robot_id, self.chunk)

    def _requests(self, sent_through: list[int]):
        next_send = time.monotonic()
        while True:
            with self.cond:
                while len(self.in_flight) >= self.window and time.monotonic() < self.end + 30:
                    self.cond.wait(0.1)
                if time.monotonic() >= self.end:
                    # Done sending: wait (bounded) for the last acks, then close the stream.
                    self.cond.wait_for(lambda: not self.in_flight, timeout=30)
                    return
                # Resend anything unacked after a reconnect, then new chunks.
                first = sent_through[0] + 1
                if first >= self.next_seq:
                    first = self.next_seq
                    self.next_seq += self.chunk
                self.in_flight.setdefault(first, time.monotonic())
                sent_through[0] = first + self.chunk - 1
            chunk = self.template.__class__()
            chunk.CopyFrom(self.template)
            chunk.first_seq = first
            yield chunk
            if first + self.chunk == self.next_seq:  # a new chunk: keep the pace
                next_send += self.period
                delay = next_send - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

    def stream(self, channel) -> None:
        """One Ingest stream on `channel`, resending from the last ack; raises grpc.RpcError when it fails."""
        from nestor_core import nestor_pb2_grpc

        with self.cond:
            sent_through = [self.acked]  # resend from the last ack
            self.in_flight.clear()
        call = nestor_pb2_grpc.ExperienceStub(channel).Ingest(
            self._requests(sent_through), timeout=self.end - time.monotonic() + 60
        )
        for ack in call:
            self.on_ack(int(ack.acked_through_seq), time.monotonic())

    def on_ack(self, through: int, now: float) -> None:
        with self.cond:
            for first in [f for f in self.in_flight if f + self.chunk - 1 <= through]:
                self.latencies.append(now - self.in_flight.pop(first))
            self.acked = max(self.acked, through)
            self.cond.notify_all()

    def run(self):
        import grpc

        channel = grpc.secure_channel(self.address, self.creds)
        try:
            while time.monotonic() < self.end:
                try:
                    self.stream(channel)
                    return
                except grpc.RpcError as err:
                    self.errors.append(f"{err.code().name}: {err.details()}")
                    time.sleep(0.2)
        finally:
            channel.close()


def run_clients(clients: list[Client], start_at: float, duration: float) -> list[threading.Thread]:
    """Start every client's thread at `start_at` (a few at a time) and wait for them; returns the threads."""
    time.sleep(max(0.0, start_at - time.monotonic()))
    threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
    for i, t in enumerate(threads):
        t.start()
        if i % 10 == 9:
            time.sleep(0.05)  # stagger the TLS handshakes a little
    for t in threads:
        t.join(duration + 120)
    return threads


def run_and_report(clients: list[Client], start_at: float, duration: float, out, **extra) -> None:
    """`run_clients`, then put one result dict per client on the queue `out`.

    extra: more keys of each result, name -> function of the client.
    """
    threads = run_clients(clients, start_at, duration)
    out.put(
        [
            {
                "robot_id": c.robot_id,
                "acked": c.acked,
                "latencies": c.latencies,
                "errors": c.errors,
                "alive": t.is_alive(),
                **{name: value(c) for name, value in extra.items()},
            }
            for c, t in zip(clients, threads, strict=True)
        ]
    )
