"""The `tls:` section of cloud.yaml and the loopback rule it goes with (a part of `cloud_brain.config`).

Kept apart from the other sections because it is the server's exposure: whether the server may run
without mutual TLS depends only on these paths and on whether its address is a loopback one.
"""

from __future__ import annotations

import dataclasses
import ipaddress


@dataclasses.dataclass
class TlsConfig:
    """Mutual TLS of the gRPC server. All three paths set = TLS on; all empty = insecure.

    With TLS on every client must present a certificate signed by `client_ca`, and the servicers
    authorise by it (cloud_brain.service.authz). Insecure mode is refused unless `address` is a loopback
    address, and even there it logs an INSECURE warning at startup; it enforces no authorisation.
    `nestor-cloud certs --out certs` writes a development set of these files.
    """

    cert: str = ""
    """PEM certificate chain of the server (e.g. certs/server.pem)."""
    key: str = ""
    """PEM private key of the server certificate (e.g. certs/server.key)."""
    client_ca: str = ""
    """PEM CA bundle that signs client certificates (e.g. certs/ca.pem); client auth is required."""

    @property
    def enabled(self) -> bool:
        return bool(self.cert or self.key or self.client_ca)


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback IP literals (127.0.0.0/8, ::1); any other name is not."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
