"""Weight sync: receive model versions from the cloud, verify them, store them atomically, announce them.

A version is announced only after it passed every check and was written durably as
`<model_dir>/<task>-v<version>.onnx` with a `.json` sidecar that marks the file complete (and holds
the signed manifest, so the policy node can re-verify it). The checks, in order:
  0. when `public_key_path` is set: the update carries an ed25519 signature that verifies over its
     manifest, and that manifest names the received bytes' sha256, the update's version and task
     (nestor_core.manifest.verify; reasons unsigned, bad_signature, bad_manifest, manifest_mismatch);
  1. sha256 of the bytes and the manifest's sha256;
  2. onnx.checker, the policy input/output signature and a finite smoke inference, via
     `nestor_core.policy_model.load_model` (on a session built without graph optimizations: it is
     dropped after the checks; the policy node builds, and checks, the optimized one it runs).
Any failure keeps the current model, and is logged and counted by reason.

Plain client logic, no rclpy: `weight_sync_node` wraps it in a ROS node.
"""

import dataclasses
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable

import grpc
from nestor_core import nestor_pb2, nestor_pb2_grpc
from nestor_core.manifest import load_public_key, sidecar_fields, verify, verify_stored
from nestor_core.policy_model import load_model

from nestor_robot.channel import Backoff, open_channel
from nestor_robot.failover import Failover
from nestor_robot.model_store import local_models, model_path, read_bad, store_model, write_bad

log = logging.getLogger(__name__)


@dataclasses.dataclass
class WeightSyncConfig:
    """How weight sync talks to the cloud.

    Attributes:
        backoff_min_s: first reconnect delay after an error.
        backoff_max_s: cap of the exponentially growing reconnect delay (full jitter below it).
        stream_deadline_s: deadline of one Subscribe stream; when it expires the robot re-subscribes
            at once with its current version.
        max_model_bytes: largest ONNX model accepted (also the channel's receive limit, plus slack).
        channel_credentials: returns credentials for a TLS channel; None means insecure (loopback).
        channel_options: extra gRPC channel options.
        public_key_path: PEM ed25519 public key of the fleet's model signer; when set every update
            must carry a valid signature over a manifest matching it, checked before anything else.
            Empty = signatures are not required (dev only).
    """

    backoff_min_s: float = 0.2
    backoff_max_s: float = 30.0
    stream_deadline_s: float = 600.0
    max_model_bytes: int = 128 * 1024 * 1024
    channel_credentials: Callable[[], grpc.ChannelCredentials] | None = None
    channel_options: tuple = ()
    public_key_path: str = ""

    def validate(self) -> "WeightSyncConfig":
        if not 0 < self.backoff_min_s <= self.backoff_max_s:
            raise ValueError(
                f"backoff_min_s/backoff_max_s: need 0 < min <= max, got {self.backoff_min_s}, {self.backoff_max_s}"
            )
        if self.stream_deadline_s <= 0:
            raise ValueError(f"stream_deadline_s: must be > 0, got {self.stream_deadline_s}")
        if self.max_model_bytes < 1:
            raise ValueError(f"max_model_bytes: must be >= 1, got {self.max_model_bytes}")
        return self


class UpdateRejected(Exception):
    """A model update that failed verification; `reason` is a short metric label."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _gate_model(onnx_bytes: bytes, expected_sha256: str | None = None, version: int = 0):
    """Every load_model check, on a session built without graph optimizations.

    Weight sync drops the session after the checks; the policy node builds (and checks) the
    optimized session it runs.
    """
    return load_model(onnx_bytes, expected_sha256, version, optimize=False)


class WeightSync:
    """Subscribes to the task's model versions and announces each verified one.

    Args:
        target: cloud address, e.g. "127.0.0.1:50051", or several replicas' addresses separated
            by commas (nestor_robot.failover): a subscription that dies moves to the next one.
        robot_id: this robot.
        task: model lineage to follow.
        model_dir: where verified models are kept (created if missing).
        on_model: called with {"version", "path", "sha256", "task", "parent"} for every verified
            model, from the sync thread; it must not block for long.
        config: transport settings.
        loader: verifies ONNX bytes, signature `load_model(onnx_bytes, expected_sha256, version)`,
            raising on any failure; defaults to `nestor_core.policy_model.load_model` (optimize=False).
    """

    def __init__(
        self,
        target: str,
        robot_id: str,
        task: str,
        model_dir: str,
        on_model: Callable[[dict], None],
        config: WeightSyncConfig | None = None,
        loader: Callable | None = None,
    ):
        if not robot_id:
            raise ValueError("robot_id: must not be empty")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", task or ""):
            raise ValueError(f"task: must be a plain name ([A-Za-z0-9_.-]+), got {task!r}")
        self.target = target
        self.failover = Failover(target)
        self.robot_id = robot_id
        self.task = task
        self.model_dir = str(model_dir)
        self.on_model = on_model
        self.config = (config or WeightSyncConfig()).validate()
        self.loader = loader or _gate_model
        self.public_key = None
        if self.config.public_key_path:
            try:
                self.public_key = load_public_key(self.config.public_key_path)
            except ValueError as err:
                raise ValueError(f"public_key_path: {err}") from None
        else:
            log.warning("weight_sync: public_key_path is empty: model signatures are NOT verified")
        os.makedirs(self.model_dir, exist_ok=True)
        self.bad_versions: set[int] = read_bad(self.model_dir)
        self._lock = threading.Lock()
        self._call = None
        self.current: dict | None = None
        self._stats = {
            "updates": 0,
            "accepted": 0,
            "unchanged": 0,
            "rejected": 0,
            "rejected_by_reason": {},
            "reconnects": 0,
            "bad_reports": 0,
            "bad_report_errors": 0,
            "last_error": "",
            "connected": False,
        }

    # ---------------------------------------------------------------- public

    def load_local(self) -> dict | None:
        """Adopt the newest complete, verified local model (announcing it); None when there is none."""
        for info in local_models(self.model_dir, self.task):
            if info["version"] in self.bad_versions:
                continue
            try:
                with open(info["path"], "rb") as f:
                    data = f.read()
                if self.public_key is not None:
                    verify_stored(info["path"], data, self.public_key, version=info["version"])
                self.loader(data, expected_sha256=info["sha256"], version=info["version"])
            except Exception as err:  # a damaged local file is skipped, never used
                log.error("weight_sync: local model %s failed verification: %s", info["path"], err)
                continue
            self.current = info
            self._announce(info)
            return info
        return None

    def current_version(self) -> int:
        return int(self.current["version"]) if self.current else 0

    def run(self, stop_event: threading.Event) -> None:
        """Subscribe until stop_event is set, re-subscribing after errors and expired deadlines."""
        backoff = Backoff(self.config.backoff_min_s, self.config.backoff_max_s)
        watcher = threading.Thread(target=self._cancel_on_stop, args=(stop_event,), daemon=True)
        watcher.start()
        while not stop_event.is_set():
            channel = open_channel(
                self.failover.current,
                self.config.channel_credentials,
                [
                    ("grpc.max_receive_message_length", self.config.max_model_bytes + (1 << 20)),
                    *self.config.channel_options,
                ],
            )
            try:
                error = self._subscribe_once(channel, stop_event)
            except Exception as err:  # never let one bad update or a local error end the sync thread
                log.exception("weight_sync: subscription failed")
                with self._lock:
                    self._stats["last_error"] = f"{type(err).__name__}: {err}"
                error = err
            finally:
                channel.close()
            if stop_event.is_set():
                break
            with self._lock:
                self._stats["reconnects"] += 1
            if isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                backoff.reset()
                continue  # the stream reached its deadline: re-subscribe now
            if error is None:
                backoff.reset()  # the cloud closed the stream cleanly: re-subscribe soon
                stop_event.wait(self.config.backoff_min_s)
                continue
            if not self.failover.failed():
                log.warning("weight_sync: failing over to %s", self.failover.current)
                continue  # another replica to try right away
            stop_event.wait(backoff.next_delay())

    def handle_update(self, update: nestor_pb2.ModelUpdate) -> dict | None:
        """Verify, store and announce one update; returns the announced info, None if not announced."""
        with self._lock:
            self._stats["updates"] += 1
        try:
            info = self._verify_and_store(update)
        except Exception as err:  # every failure keeps the old model; the reason is counted
            reason = getattr(err, "reason", None) or type(err).__name__
            log.error("weight_sync: rejected %s v%d (%s): %s", update.task, update.version, reason, err)
            with self._lock:
                self._stats["rejected"] += 1
                by_reason = self._stats["rejected_by_reason"]
                by_reason[reason] = by_reason.get(reason, 0) + 1
            return None
        if info is None:
            with self._lock:
                self._stats["unchanged"] += 1
            return None
        previous = self.current_version()
        if previous and info["version"] < previous:
            info["downgrade"] = True  # the cloud took a version back: the policy must accept an older one
        self.current = info
        with self._lock:
            self._stats["accepted"] += 1
        log.info("weight_sync: model %s v%d verified and stored at %s", info["task"], info["version"], info["path"])
        self._announce(info)
        return info

    def _announce(self, info: dict) -> None:
        try:
            self.on_model(dict(info))
        except Exception:  # a failing subscriber must not stop the sync; the model stays stored
            log.exception("weight_sync: on_model callback failed for v%d", info["version"])

    def stats(self) -> dict:
        with self._lock:
            out = dict(self._stats)
            out["rejected_by_reason"] = dict(out["rejected_by_reason"])
        out["current_version"] = self.current_version()
        return out

    # ---------------------------------------------------------------- internals

    def _subscribe_once(self, channel: grpc.Channel, stop_event: threading.Event) -> grpc.RpcError | None:
        stub = nestor_pb2_grpc.ModelsStub(channel)
        request = nestor_pb2.SubscribeRequest(
            robot_id=self.robot_id, task=self.task, current_version=self.current_version()
        )
        try:
            call = stub.Subscribe(request, timeout=self.config.stream_deadline_s)
            with self._lock:
                self._call = call
            if stop_event.is_set():
                call.cancel()
            for update in call:
                with self._lock:
                    self._stats["connected"] = True
                self.failover.progressed()
                self.handle_update(update)
            return None
        except grpc.RpcError as err:
            if not stop_event.is_set() and err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                text = f"{err.code().name}: {err.details()}"
                log.warning("weight_sync: stream ended: %s", text)
                with self._lock:
                    self._stats["last_error"] = text
            return err
        finally:
            with self._lock:
                self._call = None
                self._stats["connected"] = False

    def _verify_and_store(self, update: nestor_pb2.ModelUpdate) -> dict | None:
        version = int(update.version)
        signed = None
        if self.public_key is not None:
            # First, before any other check: is this a version the fleet's signer published?
            signed = verify(
                update.manifest,
                update.signature,
                self.public_key,
                sha256=hashlib.sha256(update.onnx).hexdigest(),
                version=version,
                task=update.task,
            )
        if version in self.bad_versions:
            raise UpdateRejected("marked_bad", f"v{version} was rolled back on this robot")
        if update.task != self.task:
            raise UpdateRejected("wrong_task", f"task {update.task!r}, subscribed to {self.task!r}")
        if version < 1:
            raise UpdateRejected("bad_version", f"version must be >= 1, got {version}")
        if len(update.onnx) > self.config.max_model_bytes:
            raise UpdateRejected("too_large", f"{len(update.onnx)} bytes > max_model_bytes")
        digest = hashlib.sha256(update.onnx).hexdigest()
        if digest != update.sha256.lower():
            raise UpdateRejected("sha256_mismatch", f"onnx sha256 {digest} != announced {update.sha256}")
        if update.manifest and signed is None:
            try:
                manifest = json.loads(update.manifest)
            except ValueError as err:
                raise UpdateRejected("bad_manifest", f"manifest is not JSON: {err}") from None
            for key, want in (("sha256", digest), ("version", version)):
                if isinstance(manifest, dict) and key in manifest and manifest[key] != want:
                    raise UpdateRejected("manifest_mismatch", f"manifest {key}={manifest[key]!r}, update has {want!r}")
        current = self.current
        if current is not None and int(current["version"]) == version:
            if current["sha256"] != digest:
                raise UpdateRejected("version_conflict", f"v{version} already held with sha256 {current['sha256']}")
            return None
        model = self.loader(bytes(update.onnx), expected_sha256=digest, version=version)
        model_task = getattr(model, "task", self.task)
        if model_task != self.task:
            raise UpdateRejected("wrong_task", f"model metadata task {model_task!r}, subscribed to {self.task!r}")
        path = model_path(self.model_dir, self.task, version)
        info = {"version": version, "path": path, "sha256": digest, "task": self.task, "parent": int(update.parent)}
        # The sidecar becomes visible last: a model file without one is incomplete and ignored.
        sidecar = dict(info, path=os.path.basename(path), **sidecar_fields(update.manifest, update.signature))
        store_model(path, bytes(update.onnx), json.dumps(sidecar, sort_keys=True).encode())
        return info

    # ---------------------------------------------------------------- rollbacks

    def mark_bad(self, version: int) -> None:
        """Never adopt `version` again, across restarts (<model_dir>/bad_versions.json)."""
        self.bad_versions.add(int(version))
        write_bad(self.model_dir, self.bad_versions)

    def report_bad(self, version: int, reason: str, attempts: int = 5, timeout_s: float = 5.0) -> bool:
        """Mark `version` bad locally and tell the cloud (Models.ReportBad), retrying a few times.

        Blocks up to about attempts * (timeout_s + backoff); call it off any control thread.
        """
        self.mark_bad(version)
        backoff = Backoff(self.config.backoff_min_s, min(self.config.backoff_max_s, 5.0))
        request = nestor_pb2.BadModelReport(robot_id=self.robot_id, version=int(version), reason=reason[:1000])
        for attempt in range(attempts):
            # Each attempt on the next replica (with one address: the same one again).
            address = self.failover.addresses[attempt % len(self.failover.addresses)]
            channel = open_channel(address, self.config.channel_credentials, self.config.channel_options)
            try:
                nestor_pb2_grpc.ModelsStub(channel).ReportBad(request, timeout=timeout_s)
                with self._lock:
                    self._stats["bad_reports"] += 1
                log.warning("weight_sync: reported v%d bad to the cloud: %s", version, reason)
                return True
            except grpc.RpcError as err:
                log.error(
                    "weight_sync: ReportBad v%d failed (%s: %s), attempt %d/%d",
                    version,
                    err.code().name,
                    err.details(),
                    attempt + 1,
                    attempts,
                )
                if err.code() in (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.PERMISSION_DENIED,
                ):
                    break
            finally:
                channel.close()
            time.sleep(backoff.next_delay())
        with self._lock:
            self._stats["bad_report_errors"] += 1
        return False

    def _cancel_on_stop(self, stop_event: threading.Event) -> None:
        stop_event.wait()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()
