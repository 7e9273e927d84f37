"""Experience uplink: stream the spool to the cloud's Experience.Ingest, exactly once end to end.

The robot may send a chunk more than once (after a reconnect every unacked chunk is resent); the
cloud de-duplicates by (robot, seq) and acks only after a durable commit, and only an ack deletes a
chunk from the spool. So every transition is either stored once by the cloud or announced to it as
dropped.

Plain client logic, no rclpy: `uplink_node` wraps it in a ROS node.
"""

import collections
import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable

import grpc
from nestor_core import nestor_pb2, nestor_pb2_grpc
from nestor_core.validation import at_least, positive, require

from nestor_robot.channel import Backoff, open_channel
from nestor_robot.failover import Failover
from nestor_robot.spool import Spool

log = logging.getLogger(__name__)

# A servicer that refuses a chunk with INVALID_ARGUMENT may name it in the details, e.g.
# "first_seq=42: obs: contains NaN"; otherwise the oldest unacked chunk in flight is the culprit
# (the cloud handles and acks chunks in order).
_FIRST_SEQ_RE = re.compile(r"first_seq[=: ]+(\d+)")

# Refused for good: the chunk is quarantined at once.
NON_RETRYABLE = frozenset({grpc.StatusCode.INVALID_ARGUMENT})
# A server-side failure (a bug, an unexpected exception): retried, but the same chunk ending
# `poison_after` streams in a row this way is quarantined, so one chunk never blocks the queue forever.
SUSPECT = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS})


@dataclasses.dataclass
class UplinkConfig:
    """How the uplink talks to the cloud.

    Attributes:
        window: most chunks sent and not yet acknowledged.
        backoff_min_s: first reconnect delay after an error.
        backoff_max_s: cap of the exponentially growing reconnect delay (full jitter below it).
        stream_deadline_s: deadline of one Ingest stream; it is reopened when it expires.
        ack_timeout_s: a stream whose oldest in-flight chunk waits longer than this for its ack is
            cancelled and reopened (a hung cloud is not waited on for a whole stream deadline).
        poll_period_s: how often an idle stream looks for new chunks in the spool.
        max_latency_samples: ack latency samples kept for stats.
        poison_after: a chunk that ends this many streams in a row with UNKNOWN, INTERNAL or
            DATA_LOSS is quarantined (and its gap announced) instead of being resent forever.
        channel_credentials: returns credentials for a TLS channel; None means an insecure channel
            (loopback only).
        channel_options: extra gRPC channel options.
    """

    window: int = 8
    backoff_min_s: float = 0.1
    backoff_max_s: float = 10.0
    stream_deadline_s: float = 300.0
    ack_timeout_s: float = 30.0
    poll_period_s: float = 0.05
    max_latency_samples: int = 1000
    poison_after: int = 3
    channel_credentials: Callable[[], grpc.ChannelCredentials] | None = None
    channel_options: tuple = ()

    def validate(self) -> "UplinkConfig":
        at_least(self, 1, "window", "poison_after")
        low, high = self.backoff_min_s, self.backoff_max_s
        require(0 < low <= high, "backoff_min_s/backoff_max_s", f"need 0 < min <= max, got {low}, {high}")
        positive(self, "stream_deadline_s", "ack_timeout_s", "poll_period_s")
        return self


class _Stream:
    """State of one Ingest stream: chunks in flight, shared by the request and response threads."""

    def __init__(self):
        self.cond = threading.Condition()
        self.in_flight: collections.OrderedDict[int, tuple[nestor_pb2.ExperienceChunk, float]] = (
            collections.OrderedDict()
        )
        self.sent_through = 0  # last seq handed to gRPC on this stream
        self.closed = False
        self.stalled = False
        self.call = None


class Uplink:
    """Sends the spool's unacked chunks over a bidi Ingest stream until stopped.

    Args:
        spool: the robot's spool (reads `pending`, writes `ack` and `quarantine`).
        target: cloud address, e.g. "127.0.0.1:50051", or several replicas' addresses separated
            by commas (nestor_robot.failover): a stream that dies moves to the next one at once.
        config: transport settings.
    """

    def __init__(self, spool: Spool, target: str, config: UplinkConfig | None = None):
        self.spool = spool
        self.target = target
        self.failover = Failover(target)
        self.config = (config or UplinkConfig()).validate()
        self._lock = threading.Lock()
        self._stream: _Stream | None = None
        self._suspect: tuple[int, int] | None = None  # (first_seq, streams it ended in a row)
        self._last_logged = ""  # the last stream error logged at warning level
        self._latency = collections.deque(maxlen=self.config.max_latency_samples)
        self._stats = {
            "sent_chunks": 0,
            "sent": 0,
            "acked": 0,
            "acks": 0,
            "reconnects": 0,
            "streams": 0,
            "rejected_chunks": 0,
            "rejected": 0,
            "errors": 0,
            "last_error": "",
            "connected": False,
            "target": self.failover.current,
            "failovers": 0,
        }

    # ---------------------------------------------------------------- public

    def run(self, stop_event: threading.Event) -> None:
        """Stream until stop_event is set; every error is retried after a backoff."""
        backoff = Backoff(self.config.backoff_min_s, self.config.backoff_max_s)
        watcher = threading.Thread(target=self._cancel_on_stop, args=(stop_event,), daemon=True)
        watcher.start()
        channel = None
        try:
            while not stop_event.is_set():
                if channel is None:
                    channel = open_channel(
                        self.failover.current, self.config.channel_credentials, self.config.channel_options
                    )
                progressed, error = self._run_stream(channel, stop_event)
                if stop_event.is_set():
                    break
                if progressed:
                    backoff.reset()
                    self.failover.progressed()
                if error is not None and error.code() in NON_RETRYABLE:
                    self._quarantine_refused(error)
                    backoff.reset()
                elif error is not None and error.code() in SUSPECT:
                    self._count_suspect(error)
                else:
                    self._suspect = None
                self._bump("reconnects")
                if error is not None and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and progressed:
                    continue  # a stream that simply reached its deadline is reopened at once
                stalled = self._stream is not None and self._stream.stalled
                if stalled or (
                    error is not None and error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN)
                ):
                    # A dead server may leave the channel in a bad state; start fresh, on the next
                    # replica when there are several (at once, until every one failed in a row).
                    channel.close()
                    channel = None
                    all_failed = self.failover.failed()
                    with self._lock:
                        self._stats["target"] = self.failover.current
                        self._stats["failovers"] = self.failover.failovers
                    if not all_failed:
                        log.warning("uplink: failing over to %s", self.failover.current)
                        continue
                delay = backoff.next_delay()
                log.debug("uplink: reconnecting in %.2fs", delay)
                stop_event.wait(delay)
        finally:
            with self._lock:
                self._stats["connected"] = False
            if channel is not None:
                channel.close()

    def stats(self) -> dict:
        """Snapshot: sent/acked (transitions), *_chunks, reconnects, last_error, ack latency."""
        with self._lock:
            out = dict(self._stats)
            samples = sorted(self._latency)
            out["in_flight"] = len(self._stream.in_flight) if self._stream is not None else 0
        out["ack_latency_samples"] = len(samples)
        out["ack_latency_p50_s"] = samples[len(samples) // 2] if samples else None
        out["ack_latency_max_s"] = samples[-1] if samples else None
        return out

    def ack_latencies(self) -> list[float]:
        """Recent ack latencies (seconds from send to ack), oldest first."""
        with self._lock:
            return list(self._latency)

    # ---------------------------------------------------------------- one stream

    def _run_stream(self, channel: grpc.Channel, stop_event: threading.Event) -> tuple[bool, grpc.RpcError | None]:
        """One Ingest stream; returns (any ack received, the error that ended it)."""
        stream = _Stream()
        stub = nestor_pb2_grpc.ExperienceStub(channel)
        progressed = False
        with self._lock:
            self._stream = stream
            self._stats["streams"] += 1
        try:
            call = stub.Ingest(self._requests(stream, stop_event), timeout=self.config.stream_deadline_s)
            with stream.cond:
                stream.call = call
            if stop_event.is_set():
                call.cancel()
            for ack in call:
                self._on_ack(stream, ack)
                if not progressed and self._last_logged:
                    log.info("uplink: streaming again to %s", self.target)
                    self._last_logged = ""
                progressed = True
                with self._lock:
                    self._stats["connected"] = True
            return progressed, None
        except grpc.RpcError as err:
            if not stop_event.is_set():
                self._record_error(err, stream)
            return progressed, err
        except Exception as err:  # e.g. sqlite busy in spool.ack: end this stream, retry after a backoff
            log.exception("uplink: stream failed")
            with self._lock:
                self._stats["errors"] += 1
                self._stats["last_error"] = f"{type(err).__name__}: {err}"
            if stream.call is not None:
                stream.call.cancel()
            return progressed, None
        finally:
            with stream.cond:
                stream.closed = True
                stream.cond.notify_all()
            with self._lock:
                self._stats["connected"] = False

    def _requests(self, stream: _Stream, stop_event: threading.Event):
        """The request iterator: unacked chunks in seq order, at most `window` in flight."""
        cfg = self.config
        while not stop_event.is_set():
            with stream.cond:
                if stream.closed:
                    return
                stalled = bool(stream.in_flight) and (
                    time.monotonic() - next(iter(stream.in_flight.values()))[1] > cfg.ack_timeout_s
                )
                call = stream.call
                room = cfg.window - len(stream.in_flight)
                after = stream.sent_through
            if stalled and call is not None:
                stream.stalled = True
                log.warning("uplink: no ack for %.1fs, reopening the stream", cfg.ack_timeout_s)
                call.cancel()
                return
            with stream.cond:
                if room <= 0:
                    stream.cond.wait(cfg.poll_period_s)
                    continue
            try:
                chunks = self.spool.pending(room, after_seq=after)
            except Exception as err:  # a busy or failing spool must not kill the stream: retry
                log.error("uplink: spool read failed: %s", err)
                with self._lock:
                    self._stats["last_error"] = f"spool: {type(err).__name__}: {err}"
                stop_event.wait(cfg.poll_period_s * 10)
                continue
            if not chunks:
                with stream.cond:
                    stream.cond.wait(cfg.poll_period_s)
                continue
            for chunk in chunks:
                with stream.cond:
                    if stream.closed:
                        return
                    last = chunk.first_seq + chunk.count - 1
                    stream.in_flight[chunk.first_seq] = (chunk, time.monotonic())
                    stream.sent_through = last
                with self._lock:
                    self._stats["sent_chunks"] += 1
                    self._stats["sent"] += chunk.count
                yield chunk

    def _on_ack(self, stream: _Stream, ack: nestor_pb2.IngestAck) -> None:
        through = int(ack.acked_through_seq)
        self.spool.ack(through)
        now = time.monotonic()
        done = []
        with stream.cond:
            for first_seq, (chunk, sent_at) in list(stream.in_flight.items()):
                if first_seq + chunk.count - 1 > through:
                    break
                del stream.in_flight[first_seq]
                done.append((chunk.count, now - sent_at))
            stream.cond.notify_all()
        with self._lock:
            self._stats["acks"] += 1
            for count, latency in done:
                self._stats["acked"] += count
                self._latency.append(latency)

    # ---------------------------------------------------------------- errors

    def _culprit(self, err: grpc.RpcError) -> int | None:
        """first_seq of the chunk an error is about: named in its details, else the oldest in flight."""
        stream = self._stream
        match = _FIRST_SEQ_RE.search(err.details() or "")
        if match:
            return int(match.group(1))
        if stream is not None and stream.in_flight:
            return next(iter(stream.in_flight))
        return None

    def _count_suspect(self, err: grpc.RpcError) -> None:
        first_seq = self._culprit(err)
        if first_seq is None:
            return
        times = self._suspect[1] + 1 if self._suspect and self._suspect[0] == first_seq else 1
        self._suspect = (first_seq, times)
        if times >= self.config.poison_after:
            self._suspect = None
            log.error(
                "uplink: chunk first_seq=%d ended %d streams in a row with %s: quarantined as poison",
                first_seq,
                times,
                err.code().name,
            )
            self._quarantine_refused(err, f"{err.code().name.lower()} x{times}")

    def _quarantine_refused(self, err: grpc.RpcError, why: str = "invalid_argument") -> None:
        """The cloud refused a chunk for good: take it out of the queue so the rest can flow."""
        details = err.details() or ""
        first_seq = self._culprit(err)
        if first_seq is None:
            log.error("uplink: %s with no chunk in flight: %s", err.code().name, details)
            return
        count = self.spool.quarantine(first_seq, reason=f"{why}: {details}"[:500])
        if count:
            log.error(
                "uplink: cloud refused chunk first_seq=%d (%d transitions), quarantined: %s", first_seq, count, details
            )
            with self._lock:
                self._stats["rejected_chunks"] += 1
                self._stats["rejected"] += count

    def _record_error(self, err: grpc.RpcError, stream: _Stream) -> None:
        code = err.code()
        text = f"{code.name if code else 'UNKNOWN'}: {err.details()}"
        if code == grpc.StatusCode.CANCELLED and stream.stalled:
            text = f"ACK_TIMEOUT: no ack within {self.config.ack_timeout_s}s"
        # The same error on every retry (a cloud that is down) is logged once, then at debug level.
        repeated = text == self._last_logged
        self._last_logged = text
        (log.debug if repeated else log.warning)(
            "uplink: stream ended: %s%s", text, "" if repeated else " (retrying; repeats are not logged)"
        )
        with self._lock:
            self._stats["errors"] += 1
            self._stats["last_error"] = text

    def _cancel_on_stop(self, stop_event: threading.Event) -> None:
        stop_event.wait()
        with self._lock:
            stream = self._stream
        if stream is not None:
            with stream.cond:
                call = stream.call
                stream.cond.notify_all()
            if call is not None:
                call.cancel()

    def _bump(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1
