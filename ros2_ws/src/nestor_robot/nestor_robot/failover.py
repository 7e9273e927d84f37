"""Several cloud replicas behind one parameter: `cloud_address` may list them, and streams fail over.

`cloud_address: "10.0.0.5:50051,10.0.0.6:50051"` names every `nestor-cloud serve` replica of one
cloud (they share one PostgreSQL store). A stream that ends on a dead or unreachable replica
moves to the next address at once; only after every address failed in a row without progress
does the caller back off. Moving mid-stream loses and duplicates nothing: the spool resends
from its acked seq and the shared store keeps each (robot, seq) once.
"""

from __future__ import annotations

from collections.abc import Sequence


def parse_addresses(value: str | Sequence[str], field: str = "cloud_address") -> list[str]:
    """host:port entries from a comma-separated string (or a list); raises ValueError naming `field`."""
    items = value.split(",") if isinstance(value, str) else list(value)
    addresses = [item.strip() for item in items if item.strip()]
    if not addresses:
        raise ValueError(f"{field}: expected host:port[,host:port...], got {value!r}")
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"{field}: expected host:port, got {address!r}")
    if len(set(addresses)) != len(addresses):
        raise ValueError(f"{field}: address listed twice in {value!r}")
    return addresses


class Failover:
    """The address to use now, and the rule for moving on.

    Args:
        addresses: a `cloud_address` value (see parse_addresses).
    """

    def __init__(self, addresses: str | Sequence[str]):
        self.addresses = parse_addresses(addresses)
        self.index = 0
        self.failovers = 0
        self._failed_in_row = 0

    @property
    def current(self) -> str:
        return self.addresses[self.index]

    def progressed(self) -> None:
        """The current address works (an ack, an update): a later failure starts a new cycle."""
        self._failed_in_row = 0

    def failed(self) -> bool:
        """The current address failed: move to the next one.

        Returns:
            True when every address has failed since the last progress (the caller backs off),
            False when there is another address to try right away.
        """
        self._failed_in_row += 1
        if len(self.addresses) > 1:
            self.index = (self.index + 1) % len(self.addresses)
            self.failovers += 1
        if self._failed_in_row >= len(self.addresses):
            self._failed_in_row = 0
            return True
        return False
