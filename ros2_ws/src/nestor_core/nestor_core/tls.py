"""Mutual-TLS client credentials from PEM files.

The one reader the robot, the cloud CLI, the demo and the benchmarks share.

A client presents its certificate and key and checks the server against the fleet's CA. The files
come in one of two shapes: three paths set one by one (ROS parameters `tls_ca`/`tls_cert`/`tls_key`,
CLI flags `--ca`/`--cert`/`--key`), or the directory `nestor-cloud certs` writes (`ca.pem`,
`<who>.pem`, `<who>.key`). The files are read at once, so a wrong path fails at start-up with the
name of its parameter rather than as an endless reconnect loop.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import grpc


class MtlsFiles(NamedTuple):
    """The PEM bytes of one client identity."""

    ca: bytes
    cert: bytes
    key: bytes

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials that verify the server against `ca` and present `cert`/`key`."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def read_mtls_files(
    ca: str | os.PathLike,
    cert: str | os.PathLike,
    key: str | os.PathLike,
    names: tuple[str, str, str] = ("tls_ca", "tls_cert", "tls_key"),
) -> MtlsFiles | None:
    """The three files' bytes; None when all three paths are empty (an insecure channel).

    Args:
        ca: path of the CA certificate the server is checked against.
        cert: path of the client's certificate (chain).
        key: path of the client's private key.
        names: what the user calls the three (parameter or flag names), for the errors.

    Raises:
        ValueError: naming the field: only some of the three are set, or a file cannot be read.
    """
    paths = dict(zip(names, (os.fspath(ca), os.fspath(cert), os.fspath(key)), strict=True))
    if not any(paths.values()):
        return None
    missing = [name for name, path in paths.items() if not path]
    if missing:
        raise ValueError(f"{', '.join(missing)}: mutual TLS needs {names[0]}, {names[1]} and {names[2]}")
    data = []
    for name, path in paths.items():
        try:
            with open(path, "rb") as f:
                data.append(f.read())
        except OSError as err:
            raise ValueError(f"{name}: cannot read {path}: {err.strerror}") from None
    return MtlsFiles(*data)


def identity_files(certs_dir: str | os.PathLike, who: str) -> MtlsFiles:
    """The files of `who` (robot0, admin, ...) in a directory written by `nestor-cloud certs`."""
    certs = os.fspath(certs_dir)
    files = read_mtls_files(
        os.path.join(certs, "ca.pem"),
        os.path.join(certs, f"{who}.pem"),
        os.path.join(certs, f"{who}.key"),
        names=("ca.pem", f"{who}.pem", f"{who}.key"),
    )
    if files is None:  # unreachable: the three paths are never empty
        raise ValueError(f"{certs}: no identity {who!r}")
    return files
