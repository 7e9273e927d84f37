"""Prometheus /metrics of the robot nodes (policy, uplink), on 127.0.0.1 only.

Each node owns a private registry and refreshes its gauges from its stats snapshot in a background
thread (never on the control tick). `serve(0)` serves nothing.
"""

from __future__ import annotations

import prometheus_client as prom

ADDRESS = "127.0.0.1"


class _NodeMetrics:
    def __init__(self):
        self.registry = prom.CollectorRegistry()

    def _gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> prom.Gauge:
        return prom.Gauge(name, doc, list(labels), registry=self.registry)

    def serve(self, port: int):
        """Start the /metrics HTTP server on 127.0.0.1:port when port > 0; returns (server, thread) or None."""
        if port <= 0:
            return None
        return prom.start_http_server(port, addr=ADDRESS, registry=self.registry)


class PolicyMetrics(_NodeMetrics):
    """Gauges of the policy node, set from `PolicyNode.stats()`."""

    def __init__(self):
        super().__init__()
        self.model_version = self._gauge("nestor_robot_model_version", "Model version in use (0 = none).")
        self.swaps = self._gauge("nestor_robot_swaps", "Model swaps since start.")
        self.rollbacks = self._gauge("nestor_robot_rollbacks", "Automatic rollbacks since start.")
        self.missed_ticks = self._gauge("nestor_robot_missed_ticks", "Ticks later than 1.5 periods since start.")
        self.ticks = self._gauge("nestor_robot_ticks", "Control ticks since start.")
        self.spool_depth = self._gauge("nestor_robot_spool_depth_transitions", "Unacked transitions in the spool.")
        self.tick_p99 = self._gauge("nestor_robot_tick_p99_seconds", "99th percentile of the tick compute time.")

    def update(self, stats: dict) -> None:
        self.model_version.set(stats.get("model_version") or 0)
        self.swaps.set(stats.get("swaps", 0))
        self.rollbacks.set(stats.get("rollbacks", 0))
        self.missed_ticks.set(stats.get("missed_ticks", 0))
        self.ticks.set(stats.get("ticks", 0))
        self.spool_depth.set(stats.get("spool_depth", 0))
        p99 = (stats.get("tick_us") or {}).get("p99")
        if p99 is not None:
            self.tick_p99.set(p99 * 1e-6)


class UplinkMetrics(_NodeMetrics):
    """Gauges of the uplink node, set from the spool's and the Uplink's stats."""

    def __init__(self):
        super().__init__()
        self.spool_depth = self._gauge("nestor_robot_spool_depth_transitions", "Unacked transitions in the spool.")
        self.acked_seq = self._gauge("nestor_robot_acked_seq", "Highest seq the cloud acknowledged.")
        self.dropped = self._gauge("nestor_robot_dropped_transitions", "Transitions dropped by the spool.")
        self.ack_latency = self._gauge(
            "nestor_robot_ack_latency_seconds", "Chunk send-to-ack latency over recent acks.", ("quantile",)
        )
        self.connected = self._gauge("nestor_robot_uplink_connected", "1 while an Ingest stream is acknowledged.")
        self.reconnects = self._gauge("nestor_robot_uplink_reconnects", "Ingest streams reopened since start.")

    def update(self, spool: dict, link: dict, latencies: list[float]) -> None:
        self.spool_depth.set(spool.get("depth_transitions", 0))
        self.acked_seq.set(spool.get("acked_through", 0))
        self.dropped.set(spool.get("dropped", 0))
        self.connected.set(1 if link.get("connected") else 0)
        self.reconnects.set(link.get("reconnects", 0))
        if latencies:
            ordered = sorted(latencies)
            for q in (0.5, 0.99):
                self.ack_latency.labels(quantile=str(q)).set(ordered[min(len(ordered) - 1, int(q * len(ordered)))])
