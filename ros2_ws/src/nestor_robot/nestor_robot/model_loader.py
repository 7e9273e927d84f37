"""The policy's model loader: which announced model may run next, verified off the tick thread.

``offer(raw, running)`` takes one ``model_update`` message (nestor_core.announcements) on the
loader thread and applies the rules, in this order:

1. an announcement that does not decode is refused (``bad_announcement``);
2. one for another task is ignored;
3. a version this robot rolled back (``mark_bad``) is ignored, for good;
4. a version not newer than the newest seen is ignored, unless it is a ``downgrade`` (the cloud
   took a version back: rejected canary, admin rollback);
5. the file is read and verified: the signed manifest in its sidecar when a public key is held
   (``verify_stored``), then ``load_model``, which re-checks the announced sha256; the model's task
   and, against the running model, its observation and action sizes. A failure is refused with
   its reason (``unreadable``, ``sha256_mismatch``, ``unsigned``, ``dims_mismatch``, ...).

A verified model waits in the pending slot (``pending``; the newest replaces an older one) until
the tick thread ``take()``s it between two ticks. Refusals are counted (``rejected``) and the
newest 20 kept in ``reject_log``. No ROS here: tested without DDS (tests/robot/test_model_loader.py).
"""

from __future__ import annotations

import logging
import threading
import time

from nestor_core.announcements import AnnouncementError, ModelAnnouncement
from nestor_core.manifest import ManifestRejected, verify_stored
from nestor_core.policy_model import ModelRejected, PolicyModel, load_model

REJECT_LOG_LEN = 20


class ModelLoader:
    """Which announced model the policy adopts, verified, and when.

    Args:
    task: this robot's task; a model of another task is refused.
    public_key: the model signer's ed25519 public key (nestor_core.manifest.load_public_key);
        None = signatures are not checked.
    log: where decisions are logged (the node's logger; `logging` by default).
    """

    def __init__(self, task: str, public_key=None, log=None):
        self.task = task
        self.public_key = public_key
        self.log = log or logging.getLogger(__name__)
        self.pending: PolicyModel | None = None  # read without the lock on the tick (a plain attribute)
        self.newest_seen = -1  # newest version announced or running: older ones are ignored
        self.bad_versions: set[int] = set()
        self.rejected = 0
        self.reject_log: list[dict] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ verification

    def verify(self, path: str, data: bytes, sha256: str | None, version: int | None) -> PolicyModel:
        """The model of these bytes, verified (signature when a key is held, digest, task).

        Raises:
            ModelRejected, ManifestRejected: with the reason.
        """
        if self.public_key is not None:
            verify_stored(path, data, self.public_key, version=version)
        model = load_model(data, sha256, version or 0)
        if model.task != self.task:
            raise ModelRejected("task_mismatch", f"model task {model.task!r}, robot task {self.task!r}")
        return model

    def load_initial(self, path: str, version: int) -> PolicyModel:
        """The local model the node starts with (version 0 = the manifest's version is not checked).

        Raises:
            OSError: unreadable file; ModelRejected, ManifestRejected: with the reason.
        """
        with open(path, "rb") as f:
            data = f.read()
        model = self.verify(path, data, None, version or None)
        self.adopted(model.version)
        return model

    # ------------------------------------------------------------------ announcements

    def offer(self, raw: str, running: PolicyModel | None) -> PolicyModel | None:
        """Apply the rules to one announcement (loader thread); the model now pending, or None."""
        keeping = running.version if running is not None else None
        try:
            update = ModelAnnouncement.decode(raw)
        except AnnouncementError as err:
            self.reject(None, "bad_announcement", f"{raw[:200]!r}: {err}", keeping)
            return None
        version = update.version
        if update.task and update.task != self.task:
            self.log.debug(f"model_update for task {update.task!r} ignored")
            return None
        if version in self.bad_versions:
            self.log.info(f"model_update version {version} was rolled back here: ignored")
            return None
        if version <= self.newest_seen and not update.downgrade:
            self.log.debug(f"model_update version {version} not newer than {self.newest_seen}: ignored")
            return None
        try:
            with open(update.path, "rb") as f:
                data = f.read()
            model = self.verify(update.path, data, update.sha256, version)
            if running is not None and (model.obs_dim, model.act_dim) != (running.obs_dim, running.act_dim):
                raise ModelRejected(
                    "dims_mismatch",
                    f"obs/act {model.obs_dim}/{model.act_dim}, running {running.obs_dim}/{running.act_dim}",
                )
        except OSError as err:
            self.reject(version, "unreadable", f"{update.path}: {err}", keeping)
            return None
        except (ModelRejected, ManifestRejected) as err:
            self.reject(version, err.reason, str(err), keeping)
            return None
        with self._lock:
            self.pending = model
            self.newest_seen = max(self.newest_seen, version)
        self.log.info(f"model version {version} verified, swapping in on the next tick")
        return model

    def take(self) -> PolicyModel | None:
        """The pending model, emptying the slot (tick thread)."""
        with self._lock:
            model, self.pending = self.pending, None
        return model

    def adopted(self, version: int) -> None:
        """A model of `version` runs now: older announcements are ignored."""
        self.newest_seen = max(self.newest_seen, version)

    def mark_bad(self, version: int) -> None:
        """`version` was rolled back here: never adopted again."""
        self.bad_versions.add(version)

    def reject(self, version: int | None, reason: str, message: str, keeping: int | None) -> None:
        self.rejected += 1
        self.reject_log = [
            *self.reject_log[-(REJECT_LOG_LEN - 1) :],
            {"version": version, "reason": reason, "wall_time": time.time()},
        ]
        self.log.error(f"model {version} refused ({reason}): {message}; keeping version {keeping}")
