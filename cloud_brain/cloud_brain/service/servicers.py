"""Thin gRPC servicers: convert messages, call the core, map errors to status codes.

Experience.Ingest is registered with its own handler (`experience_handler`) whose request
deserializer never raises: undecodable bytes become a `Malformed` marker, so the servicer can
reject them with INVALID_ARGUMENT (reason "malformed") instead of gRPC's generic INTERNAL. It
keeps the bytes beside the decoded chunk, so the store keeps them as received.

Every servicer asks an `authz.Authorizer` first (PERMISSION_DENIED when refused); the default
allows everything, which is what the server uses when TLS is off.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping

import grpc
from google.protobuf.message import DecodeError
from nestor_core import nestor_pb2, nestor_pb2_grpc

from cloud_brain.config import RolloutConfig
from cloud_brain.experience.group_commit import GroupCommit
from cloud_brain.experience.ingest import ChunkError, SequenceGapError, validate_chunk
from cloud_brain.experience.store import ExperienceStore
from cloud_brain.models.model_bus import ModelBus
from cloud_brain.models.registry import ModelRegistry, RegistryError
from cloud_brain.models.rollout import Rollout
from cloud_brain.service.authz import ALLOW_ALL, Authorizer, PermissionDenied
from cloud_brain.service.messages import model_info, model_update
from cloud_brain.service.metrics import Metrics
from cloud_brain.tasks import TaskSpec

log = logging.getLogger(__name__)


class Malformed:
    """Stands in for a request whose bytes did not parse as an ExperienceChunk."""

    def __init__(self, error: str):
        self.error = error


def _parse_chunk(data: bytes) -> tuple[nestor_pb2.ExperienceChunk | Malformed, bytes]:
    """(the decoded chunk or a Malformed marker, the bytes as received)."""
    try:
        return nestor_pb2.ExperienceChunk.FromString(data), data
    except DecodeError as err:
        return Malformed(str(err)), data


def _authorize(context, check, *args) -> None:
    """Run an Authorizer check; a refusal aborts the call with PERMISSION_DENIED."""
    try:
        check(context, *args)
    except PermissionDenied as err:
        log.warning("permission denied to %s (%s): %s", context.peer(), err.reason, err)
        context.abort(grpc.StatusCode.PERMISSION_DENIED, str(err))


_REGISTRY_CODES = {"not_found": grpc.StatusCode.NOT_FOUND, "precondition": grpc.StatusCode.FAILED_PRECONDITION}


class ExperienceServicer:
    """Experience.Ingest: one ack per chunk, each after the durable commit that stored it.

    Per stream (while at most READ_AHEAD_STREAMS are open), a reader thread decodes and validates
    the chunks as they arrive (read-ahead, bounded by READ_AHEAD); the stream's thread takes every
    chunk validated so far and hands them to the store's group commit (`experience.group_commit`),
    which stores them, with whatever other streams queued meanwhile, in one transaction. Acks
    follow in order once that COMMIT returned.
    The first bad chunk ends the stream as before: the chunks before it are stored and acked, it
    and those after it are not.
    """

    READ_AHEAD = 64  # chunks a stream's reader validates ahead; 0 = no reader thread (groups form across streams only)
    # A stream opened while more than this many are open gets no reader: groups then form across
    # streams, and the reader's extra thread hop cost ack p50 at 100 streams (issue 16, bench_load).
    READ_AHEAD_STREAMS = 4

    def __init__(
        self,
        store: ExperienceStore,
        tasks: Mapping[str, TaskSpec] | None,
        metrics: Metrics,
        authz: Authorizer = ALLOW_ALL,
        max_chunk_transitions: int = 0,
        group_commit: GroupCommit | None = None,
    ):
        self.store = store
        self.tasks = tasks
        self.metrics = metrics
        self.authz = authz
        self.max_chunk_transitions = max_chunk_transitions
        self.group_commit = group_commit or GroupCommit(store)
        self._open = [0]  # Ingest streams open now (under _open_lock)
        self._open_lock = threading.Lock()

    def _opened(self, context) -> int:
        """Count a new stream until its RPC ends; returns how many are open with it."""

        def closed():
            with self._open_lock:
                self._open[0] -= 1

        with self._open_lock:
            self._open[0] += 1
            n = self._open[0]
        context.add_callback(closed)
        return n

    def _prepare(self, chunk, context):
        """Decode, authorise and validate one chunk (reader thread); returns the batch or raises."""
        if isinstance(chunk, Malformed):
            raise ChunkError("malformed", f"chunk: cannot decode ExperienceChunk: {chunk.error}")
        self.authz.upload(context, chunk.robot_id)
        if self.max_chunk_transitions and chunk.count > self.max_chunk_transitions:
            raise ChunkError(
                "too_large",
                f"count: chunk first_seq={chunk.first_seq} holds {chunk.count} transitions, more than "
                f"max_chunk_transitions={self.max_chunk_transitions}",
            )
        return validate_chunk(chunk, self.tasks)

    def _read_ahead(self, request_iterator, context, out: queue.Queue) -> None:
        """Reader thread: (chunk, received, (batch, bytes as received), error) per request, then None."""

        def put(entry) -> bool:
            while True:
                try:
                    out.put(entry, timeout=0.5)
                    return True
                except queue.Full:
                    if not context.is_active():
                        return False

        try:
            for chunk, data in request_iterator:
                received = time.monotonic()
                try:
                    entry = (chunk, received, (self._prepare(chunk, context), data), None)
                except Exception as err:  # mapped to a status by the stream's thread, like before
                    entry = (chunk, received, None, err)
                if not put(entry) or entry[3] is not None:
                    return  # the stream ends at its first bad chunk: read no further
        except Exception as err:  # the RPC ended (cancelled, client gone): end the stream
            log.debug("ingest stream from %s ended: %s", context.peer(), err)
        put(None)

    def _groups(self, request_iterator, context, ahead: bool) -> Iterator[list]:
        """The stream's chunks as groups of (chunk, received, (batch, bytes), error), each up to its first bad one.

        Not `ahead`: one chunk at a time, read and validated on the calling thread (a group then
        only forms across streams). Otherwise a reader thread reads ahead and a group is every
        chunk it has validated so far.
        """
        if not ahead:
            for chunk, data in request_iterator:
                received = time.monotonic()
                try:
                    entry = (chunk, received, (self._prepare(chunk, context), data), None)
                except Exception as err:  # mapped to a status by Ingest
                    entry = (chunk, received, None, err)
                yield [entry]
            return
        entries: queue.Queue = queue.Queue(maxsize=self.READ_AHEAD)
        threading.Thread(
            target=self._read_ahead, args=(request_iterator, context, entries), name="ingest_read", daemon=True
        ).start()
        while True:
            entry = entries.get()
            if entry is None:
                return
            group = [entry]
            while group[-1][3] is None:  # every chunk validated so far, up to the first bad one
                try:
                    nxt = entries.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    entries.put(None)
                    break
                group.append(nxt)
            yield group

    def Ingest(self, request_iterator, context) -> Iterator[nestor_pb2.IngestAck]:
        key = object()  # this stream, for the group commit
        ahead = bool(self.READ_AHEAD) and self._opened(context) <= self.READ_AHEAD_STREAMS
        for group in self._groups(request_iterator, context, ahead):
            good = [e for e in group if e[3] is None]
            outcomes: list = []
            if good:
                try:
                    outcomes = self.group_commit.append(key, [e[2] for e in good])
                except Exception as err:  # the whole transaction failed: nothing of it stored or acked
                    self._fail(context, good[0][0], err)
            for (chunk, received, _, _), outcome in zip(good, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    self._fail(context, chunk, outcome)
                self.metrics.chunks.labels(task=chunk.task).inc()
                self.metrics.transitions.labels(task=chunk.task).inc(outcome.stored)
                self.metrics.duplicates.inc(outcome.duplicates)
                self.metrics.dropped.inc(outcome.dropped)
                if outcome.stored:
                    self.metrics.robot_model_version.labels(task=chunk.task, robot_id=chunk.robot_id).set(
                        chunk.model_version
                    )
                self.metrics.ack_latency.observe(time.monotonic() - received)
                yield nestor_pb2.IngestAck(
                    robot_id=outcome.robot_id,
                    acked_through_seq=outcome.acked_through,
                    stored=outcome.stored,
                    duplicates=outcome.duplicates,
                )
            if len(good) < len(group):
                self._fail(context, group[-1][0], group[-1][3])

    def _fail(self, context, chunk, err: BaseException) -> None:
        """End the stream with the status of `err` (context.abort raises)."""
        if isinstance(err, PermissionDenied):
            self._reject(context, err.reason, grpc.StatusCode.PERMISSION_DENIED, str(err))
        if isinstance(err, ChunkError):
            self._reject(context, err.reason, grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if isinstance(err, SequenceGapError):
            self._reject(context, err.reason, grpc.StatusCode.OUT_OF_RANGE, str(err))
        if isinstance(err, (OverflowError, sqlite3.IntegrityError, sqlite3.InterfaceError)):
            # A value validation let through that the store cannot hold: still the chunk's fault.
            self._reject(
                context,
                "bad_value",
                grpc.StatusCode.INVALID_ARGUMENT,
                f"first_seq={chunk.first_seq}: a value the store cannot hold: {err}",
            )
        if isinstance(err, sqlite3.OperationalError):
            # Nothing was committed or acknowledged: the robot keeps the chunk and resends it later.
            if getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                self._reject(
                    context,
                    "disk_full",
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"store: disk full ({err}); nothing acknowledged, resend later",
                )
            log.error("store error while ingesting from %s: %s", context.peer(), err)
            self.metrics.reject("store_error")
            context.abort(grpc.StatusCode.UNAVAILABLE, f"store: {err}")
        # A server bug: counted, logged with its traceback, named to the robot.
        log.error(
            "internal error while ingesting chunk first_seq=%s from %s", chunk.first_seq, context.peer(), exc_info=err
        )
        self._reject(
            context,
            "internal_error",
            grpc.StatusCode.INTERNAL,
            f"first_seq={chunk.first_seq}: internal error ({type(err).__name__}); nothing stored",
        )

    def _reject(self, context, reason: str, code: grpc.StatusCode, message: str) -> None:
        self.metrics.reject(reason)
        log.warning("rejected chunk from %s (%s): %s", context.peer(), reason, message)
        context.abort(code, message)


def experience_handler(servicer: ExperienceServicer) -> grpc.GenericRpcHandler:
    """The Experience service handler with a never-raising request deserializer."""
    handlers = {
        "Ingest": grpc.stream_stream_rpc_method_handler(
            servicer.Ingest,
            request_deserializer=_parse_chunk,
            response_serializer=nestor_pb2.IngestAck.SerializeToString,
        )
    }
    return grpc.method_handlers_generic_handler("nestor.v1.Experience", handlers)


class ModelsServicer(nestor_pb2_grpc.ModelsServicer):
    """The Models service.

    Subscribe streams the version meant for the robot and each new one; List/Promote/Rollback;
    ReportBad records a robot's rollback.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        bus: ModelBus,
        tasks: Mapping[str, TaskSpec] | None,
        authz: Authorizer = ALLOW_ALL,
        rollout: Rollout | None = None,
        metrics: Metrics | None = None,
    ):
        self.registry = registry
        self.bus = bus
        self.tasks = tasks
        self.authz = authz
        self.rollout = rollout or Rollout(RolloutConfig(), registry, registry.store, bus)
        self.metrics = metrics

    def Subscribe(self, request, context):
        _authorize(context, self.authz.subscribe, request.robot_id)
        if not request.task or (self.tasks is not None and request.task not in self.tasks):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"task: unknown task {request.task!r}")
        # Wake the bus when the client goes away so this thread is released promptly.
        context.add_callback(self.bus.wake)
        last = request.current_version
        with self.rollout.subscribed(request.task, request.robot_id):
            # The bus says what is active; the rollout says what this robot gets (canary, bad marks).
            for active in self.bus.subscribe(request.task, 0, is_active=context.is_active):
                model = self.rollout.select(request.robot_id, request.task, active)
                if model is None or model.version == last:
                    continue
                last = model.version
                yield model_update(model)

    def ReportBad(self, request, context):
        # A robot reports only for itself (same rule as uploading its experience).
        _authorize(context, self.authz.upload, request.robot_id)
        if not request.robot_id or not request.version:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "robot_id, version: both required")
        try:
            count = self.registry.mark_bad(request.robot_id, request.version, request.reason[:1000])
        except RegistryError as err:
            context.abort(_REGISTRY_CODES[err.code], str(err))
        model = self.registry.get(request.version)
        log.warning(
            "robot %s rolled back version %d of %s: %s", request.robot_id, request.version, model.task, request.reason
        )
        if self.metrics is not None:
            self.metrics.robot_rollbacks.labels(task=model.task).inc()
        return nestor_pb2.BadModelReply(version=request.version, robots_reporting=count)

    def List(self, request, context):
        _authorize(context, self.authz.read)
        return nestor_pb2.ListModelsReply(models=[model_info(m) for m in self.registry.list(request.task or None)])

    def _change(self, context, name: str, change) -> nestor_pb2.ModelReply:
        """An admin's registry change (`change()` returns the version it activated), refusals as statuses."""
        _authorize(context, self.authz.admin, name)
        try:
            return nestor_pb2.ModelReply(model=model_info(change()))
        except RegistryError as err:
            context.abort(_REGISTRY_CODES[err.code], str(err))

    def Promote(self, request, context):
        return self._change(context, "Promote", lambda: self.registry.promote(request.version))

    def Rollback(self, request, context):
        return self._change(context, "Rollback", lambda: self.registry.rollback(request.task))


class FleetServicer(nestor_pb2_grpc.FleetServicer):
    """Fleet.GetStatus: robots, model versions and counters."""

    def __init__(
        self, store: ExperienceStore, registry: ModelRegistry, metrics: Metrics, authz: Authorizer = ALLOW_ALL
    ):
        self.store = store
        self.registry = registry
        self.metrics = metrics
        self.authz = authz

    def GetStatus(self, request, context):
        _authorize(context, self.authz.read)
        return fleet_status(self.store, self.registry, self.metrics)


def fleet_status(store: ExperienceStore, registry: ModelRegistry, metrics: Metrics) -> nestor_pb2.FleetStatus:
    """Assemble FleetStatus from the store, the registry and the reject counters."""
    robots = [
        nestor_pb2.RobotStatus(
            robot_id=r.robot_id,
            task=r.task,
            last_contact_unix=r.last_contact_unix,
            transitions=r.transitions,
            last_seq=r.last_seq,
            model_version=r.model_version,
            recent_cost=r.recent_cost,
            dropped=r.dropped,
        )
        for r in store.robots()
    ]
    return nestor_pb2.FleetStatus(
        robots=robots,
        models=[model_info(m) for m in registry.list()],
        transitions_stored=store.count_transitions(),
        consolidation_rounds=store.round_count(),
        rejected_by_reason=metrics.rejected_by_reason(),
    )
