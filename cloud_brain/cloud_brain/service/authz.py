"""Authorisation from the client certificate: who may upload, who may administer.

With mutual TLS on, every caller presents a certificate signed by the fleet CA. Its identity is
the certificate's common name; its role comes from a SAN URI `nestor://<role>/<name>` (see
cloud_brain.service.certs), whose name must equal the common name. A certificate without such a URI is a
robot named by its common name.

Rules (one function each, used by the servicers through `Authorizer`):
  * Experience.Ingest: a robot uploads only its own experience (chunk.robot_id == its name);
    anything else is PERMISSION_DENIED, counted as reject reason `forged_robot_id`.
  * Models.Subscribe: any authenticated caller; a robot only under its own robot_id (the cloud
    chooses canary versions and skips versions marked bad by that robot id).
  * Models.List, Fleet.GetStatus: any authenticated caller.
  * Models.Promote, Models.Rollback (and any future delete/backup RPC): role admin only.
  * No RPC publishes a model from a client; models enter the registry only from the cloud's own
    consolidation rounds.

When TLS is off (insecure dev mode, which the server allows only on a loopback address) there is
no certificate, and nothing is enforced: `Authorizer(enforce=False)` allows every call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

ROLE_ROBOT = "robot"
ROLE_ADMIN = "admin"
ROLES = (ROLE_ROBOT, ROLE_ADMIN)
URI_PREFIX = "nestor://"


class PermissionDenied(Exception):
    """The caller may not do this; `reason` is a short metric label."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Identity:
    """An authenticated caller.

    Attributes:
        name: certificate common name: a robot id, or "admin".
        role: "robot" or "admin".
    """

    name: str
    role: str


def _texts(values) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values or ()]


def identity_from_auth_context(auth: Mapping[str, list]) -> Identity | None:
    """The identity in a gRPC auth context (`context.auth_context()`); None without a client cert.

    A `nestor://<role>/<name>` SAN URI whose name differs from the common name, or that names an
    unknown role, gives no identity at all (it is refused rather than guessed).
    """
    names = _texts(auth.get("x509_common_name"))
    if not names or not names[0]:
        return None
    name = names[0]
    uris = [
        u
        for u in _texts(auth.get("peer_uri")) + _texts(auth.get("x509_subject_alternative_name"))
        if u.startswith(URI_PREFIX)
    ]
    if not uris:
        return Identity(name=name, role=ROLE_ROBOT)
    role, _, uri_name = uris[0][len(URI_PREFIX) :].partition("/")
    if role not in ROLES or uri_name != name:
        return None
    return Identity(name=name, role=role)


def check_upload(identity: Identity | None, robot_id: str) -> None:
    """A robot may upload only chunks that carry its own robot id."""
    if identity is None:
        raise PermissionDenied("unauthenticated", "no client certificate identity")
    if identity.role != ROLE_ROBOT or identity.name != robot_id:
        raise PermissionDenied(
            "forged_robot_id", f"robot_id: {identity.role} {identity.name!r} may not upload as {robot_id!r}"
        )


def check_read(identity: Identity | None) -> None:
    """Subscribe to models, list models, read fleet status: any authenticated caller."""
    if identity is None:
        raise PermissionDenied("unauthenticated", "no client certificate identity")


def check_subscribe(identity: Identity | None, robot_id: str) -> None:
    """Any authenticated caller may subscribe; a robot only as itself (an admin may watch as anyone)."""
    check_read(identity)
    if identity.role == ROLE_ROBOT and identity.name != robot_id:
        raise PermissionDenied(
            "forged_robot_id", f"robot_id: robot {identity.name!r} may not subscribe as {robot_id!r}"
        )


def check_admin(identity: Identity | None, operation: str) -> None:
    """Promote, Rollback and other admin operations need the admin role."""
    if identity is None:
        raise PermissionDenied("unauthenticated", "no client certificate identity")
    if identity.role != ROLE_ADMIN:
        raise PermissionDenied("not_admin", f"{operation}: {identity.role} {identity.name!r} is not an admin")


class Authorizer:
    """Applies the rules to a gRPC call context; a no-op when `enforce` is False (TLS off).

    Each method returns None when allowed and raises PermissionDenied otherwise.
    """

    def __init__(self, enforce: bool):
        self.enforce = enforce

    def identity(self, context) -> Identity | None:
        return identity_from_auth_context(context.auth_context())

    def upload(self, context, robot_id: str) -> None:
        if self.enforce:
            check_upload(self.identity(context), robot_id)

    def read(self, context) -> None:
        if self.enforce:
            check_read(self.identity(context))

    def subscribe(self, context, robot_id: str) -> None:
        if self.enforce:
            check_subscribe(self.identity(context), robot_id)

    def admin(self, context, operation: str) -> None:
        if self.enforce:
            check_admin(self.identity(context), operation)


ALLOW_ALL = Authorizer(enforce=False)
