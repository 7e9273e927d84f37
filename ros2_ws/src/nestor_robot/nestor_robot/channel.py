"""The robot's gRPC channels to the cloud: how one is opened, its mTLS credentials, the reconnect backoff.

Shared by the uplink (Experience.Ingest) and weight_sync (Models.Subscribe), which each own their
channel in their streaming thread.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import grpc
from nestor_core.tls import read_mtls_files


def open_channel(target: str, credentials: Callable[[], grpc.ChannelCredentials] | None, options=()) -> grpc.Channel:
    """An insecure channel, or a secure one when a credentials hook is given."""
    options = [
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.max_receive_message_length", 256 * 1024 * 1024),
        *options,
    ]
    if credentials is not None:
        return grpc.secure_channel(target, credentials(), options=options)
    return grpc.insecure_channel(target, options=options)


def tls_credentials(ca: str, cert: str, key: str, prefix: str = "tls_") -> Callable[[], grpc.ChannelCredentials] | None:
    """A `channel_credentials` hook for mutual TLS from PEM files; None when all three are empty.

    The files are read now, so a wrong path fails at start-up with the parameter's name rather
    than as an endless reconnect loop.

    Raises:
        ValueError: only some of the three are set, or a file cannot be read.
    """
    files = read_mtls_files(ca, cert, key, names=(f"{prefix}ca", f"{prefix}cert", f"{prefix}key"))
    if files is None:
        return None
    return files.channel_credentials


@dataclasses.dataclass
class TlsFiles:
    """The robot's mutual-TLS files, nested in the uplink and weight_sync node configs.

    Attributes:
        tls_ca: PEM CA that signed the cloud's server cert; with tls_cert and tls_key turns on mutual TLS.
        tls_cert: PEM client certificate of this robot (its CN must equal robot_id to upload).
        tls_key: PEM private key of tls_cert. All three empty = insecure channel (loopback dev only).
    """

    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    def apply(self, plain_config):
        """`plain_config` (UplinkConfig, WeightSyncConfig) with these credentials, validated."""
        credentials = tls_credentials(self.tls_ca, self.tls_cert, self.tls_key)
        return dataclasses.replace(plain_config, channel_credentials=credentials).validate()


class Backoff:
    """Exponential backoff with full jitter: delay n is uniform in [min, min(max, min * 2**n)]."""

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None):
        self.minimum = minimum
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.Random()

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self) -> float:
        cap = min(self.maximum, self.minimum * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return self._rng.uniform(self.minimum, cap)
