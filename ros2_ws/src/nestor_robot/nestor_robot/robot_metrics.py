"""Prometheus /metrics of the robot nodes (policy, uplink), on 127.0.0.1 only.

Each node owns a private registry and refreshes its gauges from its stats snapshot in a background
thread (never on the control tick). `serve(0)` serves nothing.
"""

from __future__ import annotations

import prometheus_client as prom

ADDRESS = "127.0.0.1"


class _NodeMetrics:
    """A private registry with one gauge `nestor_robot_<name>` per GAUGES entry (name -> help)."""

    GAUGES: dict[str, str] = {}

    def __init__(self):
        self.registry = prom.CollectorRegistry()
        self.gauges = {name: self._gauge(f"nestor_robot_{name}", doc) for name, doc in self.GAUGES.items()}

    def _gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> prom.Gauge:
        return prom.Gauge(name, doc, list(labels), registry=self.registry)

    def _set(self, source: dict, **keys: str) -> None:
        """Set each gauge (by name) to its key of `source`; missing or None is 0."""
        for name, key in keys.items():
            self.gauges[name].set(source.get(key) or 0)

    def serve(self, port: int):
        """Start the /metrics HTTP server on 127.0.0.1:port when port > 0; returns (server, thread) or None."""
        if port <= 0:
            return None
        return prom.start_http_server(port, addr=ADDRESS, registry=self.registry)


def stop_serving(served) -> None:
    """Stop the /metrics server that `serve()` returned (None: nothing to stop)."""
    if served is not None:
        served[0].shutdown()
        served[0].server_close()


_SPOOL_DEPTH = "Unacked transitions in the spool."


class PolicyMetrics(_NodeMetrics):
    """Gauges of the policy node, set from `PolicyNode.stats()`."""

    GAUGES = {
        "model_version": "Model version in use (0 = none).",
        "swaps": "Model swaps since start.",
        "rollbacks": "Automatic rollbacks since start.",
        "missed_ticks": "Ticks later than 1.5 periods since start.",
        "ticks": "Control ticks since start.",
        "spool_depth_transitions": _SPOOL_DEPTH,
        "tick_p99_seconds": "99th percentile of the tick compute time.",
    }

    def update(self, stats: dict) -> None:
        names = ("model_version", "swaps", "rollbacks", "missed_ticks", "ticks")
        self._set(stats, spool_depth_transitions="spool_depth", **{name: name for name in names})
        p99 = (stats.get("tick_us") or {}).get("p99")
        if p99 is not None:
            self.gauges["tick_p99_seconds"].set(p99 * 1e-6)


class UplinkMetrics(_NodeMetrics):
    """Gauges of the uplink node, set from the spool's and the Uplink's stats."""

    GAUGES = {
        "spool_depth_transitions": _SPOOL_DEPTH,
        "acked_seq": "Highest seq the cloud acknowledged.",
        "dropped_transitions": "Transitions dropped by the spool.",
        "uplink_connected": "1 while an Ingest stream is acknowledged.",
        "uplink_reconnects": "Ingest streams reopened since start.",
    }

    def __init__(self):
        super().__init__()
        self.ack_latency = self._gauge(
            "nestor_robot_ack_latency_seconds", "Chunk send-to-ack latency over recent acks.", ("quantile",)
        )

    def update(self, spool: dict, link: dict, latencies: list[float]) -> None:
        self._set(spool, spool_depth_transitions="depth_transitions", acked_seq="acked_through")
        self._set(spool, dropped_transitions="dropped")
        self._set(link, uplink_reconnects="reconnects")
        self.gauges["uplink_connected"].set(1 if link.get("connected") else 0)
        if latencies:
            ordered = sorted(latencies)
            for q in (0.5, 0.99):
                self.ack_latency.labels(quantile=str(q)).set(ordered[min(len(ordered) - 1, int(q * len(ordered)))])
