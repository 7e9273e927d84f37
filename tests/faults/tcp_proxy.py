"""A loopback TCP proxy that can cut the network on command (fault tests only).

    proxy = TcpProxy("127.0.0.1:50051")   # listens on 127.0.0.1:<free port>, see proxy.address
    proxy.partition("refuse")              # close every connection, refuse (RST) new ones
    proxy.partition("blackhole")           # keep connections open but forward nothing
    proxy.heal()                           # forward again
    proxy.close()

Threads: one acceptor, two pumps per connection. Every loop wakes at least every 0.2 s and ends
when the proxy closes, so nothing outlives the test. Only 127.0.0.1 is ever bound or dialled.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading

MODES = ("pass", "refuse", "blackhole")
_TICK = 0.2


def _loopback(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(f"address: loopback only, got {address!r}")
    return "127.0.0.1", int(port)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), like a peer that vanished."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to `upstream` until told to cut.

    Args:
        upstream: host:port of the real server (loopback).
        port: port to listen on; 0 = any free port.
    """

    def __init__(self, upstream: str, port: int = 0):
        self.upstream = _loopback(upstream)
        self._lock = threading.Lock()
        self._mode = "pass"
        self._closed = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self.connections = 0
        self.refused = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        self._listener.settimeout(_TICK)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads = [threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)]
        self._threads[0].start()

    @property
    def mode(self) -> str:
        return self._mode

    def partition(self, mode: str = "refuse") -> None:
        """Cut the link: "refuse" resets every connection and new ones; "blackhole" forwards nothing."""
        if mode not in MODES[1:]:
            raise ValueError(f"mode: {mode!r} is not one of {MODES[1:]}")
        with self._lock:
            self._mode = mode
            pairs = list(self._pairs) if mode == "refuse" else []
            if mode == "refuse":
                self._pairs.clear()
        for a, b in pairs:
            _reset(a)
            _reset(b)

    def heal(self) -> None:
        """Forward again. Connections black-holed meanwhile are reset (their streams are corrupt)."""
        with self._lock:
            pairs = list(self._pairs) if self._mode == "blackhole" else []
            if pairs:
                self._pairs.clear()
            self._mode = "pass"
        for a, b in pairs:
            _reset(a)
            _reset(b)

    def close(self) -> None:
        """Stop everything; safe to call twice."""
        self._closed.set()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            _reset(a)
            _reset(b)
        try:
            self._listener.close()
        except OSError:
            pass
        for thread in list(self._threads):
            thread.join(timeout=2.0)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._mode == "refuse":
                self.refused += 1
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=2.0)
            except OSError:
                _reset(client)
                continue
            for sock in (client, server):
                sock.settimeout(None)  # recv waits in select (bounded); sendall may block on backpressure
            with self._lock:
                self._pairs.append((client, server))
                self.connections += 1
            for src, dst in ((client, server), (server, client)):
                thread = threading.Thread(target=self._pump, args=(src, dst, (client, server)), daemon=True)
                thread.start()
                self._threads.append(thread)
            self._threads = [t for t in self._threads if t.is_alive()]

    def _pump(self, src: socket.socket, dst: socket.socket, pair) -> None:
        while not self._closed.is_set():
            try:
                readable, _, _ = select.select([src], [], [], _TICK)
                if not readable:
                    continue
                data = src.recv(65536)
            except (OSError, ValueError):
                break
            if not data:
                break
            if self._mode == "blackhole":
                continue  # swallowed: the peer waits for bytes that never come
            try:
                dst.sendall(data)
            except OSError:
                break
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
