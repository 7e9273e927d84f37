"""Prometheus metrics of the cloud brain, on a private registry per server instance."""

from __future__ import annotations

import threading

import prometheus_client as prom


class Metrics:
    """Counters and histograms; `rejected_by_reason()` also feeds FleetStatus.

    Args:
        registry: collector registry; a fresh one by default so several servers (tests) coexist.
    """

    def __init__(self, registry: prom.CollectorRegistry | None = None):
        self.registry = registry or prom.CollectorRegistry()
        r = self.registry
        self.transitions = prom.Counter(
            "nestor_ingested_transitions", "Transitions newly stored.", ["task"], registry=r
        )
        self.chunks = prom.Counter("nestor_ingested_chunks", "Chunks acknowledged.", ["task"], registry=r)
        self.duplicates = prom.Counter(
            "nestor_duplicate_transitions", "Transitions resent and already stored.", registry=r
        )
        self.dropped = prom.Counter("nestor_dropped_transitions", "Transitions robots declared dropped.", registry=r)
        self.rejects = prom.Counter("nestor_rejected_chunks", "Chunks rejected, by reason.", ["reason"], registry=r)
        self.ack_latency = prom.Histogram(
            "nestor_ack_latency_seconds",
            "Chunk receipt to durable ack.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.active_version = prom.Gauge(
            "nestor_active_model_version", "Active model version per task.", ["task"], registry=r
        )
        self.rounds = prom.Counter(
            "nestor_consolidation_rounds", "Consolidation rounds by outcome.", ["task", "outcome"], registry=r
        )
        self.robot_model_version = prom.Gauge(
            "nestor_robot_model_version",
            "Model version of each robot's newest stored transition.",
            ["task", "robot_id"],
            registry=r,
        )
        self.robot_rollbacks = prom.Counter(
            "nestor_robot_rollbacks",
            "Versions robots rolled back and reported bad (Models.ReportBad).",
            ["task"],
            registry=r,
        )
        self.rollouts = prom.Counter(
            "nestor_rollouts", "Staged rollouts by outcome (started, promoted, rejected).", ["outcome"], registry=r
        )
        self._lock = threading.Lock()
        self._rejects: dict[str, int] = {}

    def reject(self, reason: str) -> None:
        """Count one rejected chunk."""
        self.rejects.labels(reason=reason).inc()
        with self._lock:
            self._rejects[reason] = self._rejects.get(reason, 0) + 1

    def rejected_by_reason(self) -> dict[str, int]:
        """Rejects since start, by reason."""
        with self._lock:
            return dict(self._rejects)

    def serve_http(self, port: int, address: str = "127.0.0.1"):
        """Start the /metrics HTTP server when port > 0; returns (server, thread) or None."""
        if port <= 0:
            return None
        return prom.start_http_server(port, addr=address, registry=self.registry)
