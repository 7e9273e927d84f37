"""Process wiring: store, registry, bus, scheduler, servicers, health, metrics, signals.

`CloudServer` owns every part and takes the model providers as parameters, so tests inject
fakes and production resolves `config.initial_model` / `config.consolidate` lazily.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import signal
import socket
import threading
from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from nestor_core import nestor_pb2, nestor_pb2_grpc
from nestor_core.atomic_file import write_json_atomic

from cloud_brain.config import CloudConfig, ConfigError, is_loopback_host
from cloud_brain.experience import lease
from cloud_brain.experience.db_lock import DatabaseInUse, DatabaseLock
from cloud_brain.experience.store import ExperienceStore
from cloud_brain.learning.round_worker import resolve
from cloud_brain.learning.scheduler import ConsolidationScheduler
from cloud_brain.models.model_bus import ModelBus
from cloud_brain.models.registry import ModelRegistry, ModelVersion
from cloud_brain.models.rollout import Rollout
from cloud_brain.service.authz import Authorizer
from cloud_brain.service.metrics import Metrics
from cloud_brain.service.servicers import ExperienceServicer, FleetServicer, ModelsServicer, experience_handler
from cloud_brain.tasks import TaskSpec, load_tasks

log = logging.getLogger(__name__)

InitialModelFn = Callable[[str, int], tuple[bytes, dict]]

SERVICE_NAMES = tuple(
    nestor_pb2.DESCRIPTOR.services_by_name[name].full_name for name in ("Experience", "Models", "Fleet")
)


class CloudServer:
    """The cloud slow brain as one object: `start()`, then `stop()`.

    Args:
        config: validated CloudConfig.
        initial_model_fn: (task_file, seed) -> (onnx bytes, io_signature); default resolves
            `config.initial_model` (the lead's cloud_brain.learning.policy_export.initial_model).
        consolidate: `module:function` run in the round's child process; default
            `config.consolidate`. Must be importable by a fresh process.
        tasks: task specs by name; default loads `config.task_files`.
    """

    def __init__(
        self,
        config: CloudConfig,
        initial_model_fn: InitialModelFn | None = None,
        consolidate: str | None = None,
        tasks: dict[str, TaskSpec] | None = None,
    ):
        self.config = config
        self.tasks = tasks if tasks is not None else load_tasks(config.task_files)
        self._initial_model_fn = initial_model_fn
        self.metrics = Metrics()
        self.bus = ModelBus()
        self.store = ExperienceStore(config.store_target(), timeout=config.store.connect_timeout_seconds)
        self.holder = lease.holder_id()
        self.registry = ModelRegistry(
            self.store, on_activate=self._on_activate, export_dir=config.model_dir, signing_key=config.signing_key
        )
        self.rollout = Rollout(config.rollout, self.registry, self.store, self.bus, metrics=self.metrics)
        self.scheduler = ConsolidationScheduler(
            self.store,
            self.registry,
            self.tasks,
            config.schedule,
            consolidate or config.consolidate,
            seed=config.seed,
            metrics=self.metrics,
            on_accepted=self.rollout.accept,
            holder=self.holder,
            lease_seconds=config.store.lease_seconds,
            runner=round_runner(config, consolidate or config.consolidate),
            tensorboard_dir=config.tensorboard_dir,
            round_config=dataclasses.asdict(config.consolidation.round),
        )
        self.health = health.HealthServicer()
        self.server: grpc.Server | None = None
        self.address = ""
        self._metrics_http = None
        self._stopped = threading.Event()
        self._watch: threading.Thread | None = None

    def _on_activate(self, model: ModelVersion) -> None:
        self.metrics.active_version.labels(task=model.task).set(model.version)
        self.bus.publish(model.task, model)

    def ensure_initial_models(self) -> None:
        """Register an initial active version for every task that has none.

        Under a lease, so replicas starting together on one database register one each, not two.
        """
        # Building an initial model may take minutes (identification in simulation): wait that long.
        with lease.waiting_for(
            self.store, "initial-models", self.holder, self.config.store.lease_seconds, timeout=900.0
        ):
            self._ensure_initial_models()

    def _ensure_initial_models(self) -> None:
        for name, spec in self.tasks.items():
            active = self.registry.active(name)
            if active is not None:
                self._on_activate(active)
                continue
            provider = self._initial_model_fn or resolve(self.config.initial_model)
            onnx, io_signature = provider(spec.file, self.config.seed)
            model = self.registry.register(
                name, onnx, io_signature, parent=0, metrics={}, status="active", reason="initial model"
            )
            log.info("registered initial model for %s as version %d", name, model.version)

    def start(self) -> str:
        """Bind, register the initial models, start serving; return the bound address host:port."""
        options = [
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        credentials = server_credentials(self.config)
        # Authorisation needs a client certificate, so it is enforced exactly when TLS is on.
        authz = Authorizer(enforce=credentials is not None)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.config.max_workers), options=options)
        server.add_generic_rpc_handlers(
            (
                experience_handler(
                    ExperienceServicer(
                        self.store,
                        self.tasks,
                        self.metrics,
                        authz,
                        max_chunk_transitions=self.config.max_chunk_transitions,
                    )
                ),
            )
        )
        nestor_pb2_grpc.add_ModelsServicer_to_server(
            ModelsServicer(self.registry, self.bus, self.tasks, authz, rollout=self.rollout, metrics=self.metrics),
            server,
        )
        nestor_pb2_grpc.add_FleetServicer_to_server(
            FleetServicer(self.store, self.registry, self.metrics, authz), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        port = bind(server, self.config.address, credentials)
        self.ensure_initial_models()  # after the bind: a port in use registers nothing
        server.start()
        self.server = server
        self.address = f"{self.config.address.rpartition(':')[0]}:{port}"
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._metrics_http = self.metrics.serve_http(self.config.metrics_port, self.config.metrics_address)
        if self.config.schedule.enabled:
            self.scheduler.start()
        self.rollout.start()
        self._watch = threading.Thread(target=self._watch_registry, name="nestor-registry-watch", daemon=True)
        self._watch.start()
        log.info(
            "cloud brain serving on %s (%s; tasks: %s; manifests %s)",
            self.address,
            "mutual TLS" if credentials is not None else "insecure",
            ", ".join(self.tasks),
            "signed" if self.config.signing_key else "UNSIGNED",
        )
        return self.address

    def watch_registry_once(self) -> int:
        """Publish every active version this replica's bus does not have yet; returns how many.

        Another replica (or `nestor-cloud models promote` through it) may activate a version in
        the shared database; this is how it reaches the robots subscribed here.
        """
        published = 0
        for task in self.tasks:
            active = self.registry.active(task)
            current = self.bus.current(task)
            if active is not None and (current is None or current.version != active.version):
                self._on_activate(active)
                published += 1
        return published

    def _watch_registry(self) -> None:
        while not self._stopped.wait(self.config.store.watch_seconds):
            try:
                self.watch_registry_once()
            except Exception as err:  # noqa: BLE001 - a store hiccup (e.g. PostgreSQL restarting)
                log.warning("registry watch: %s", err)

    def stop(self, grace: float | None = None) -> None:
        """Graceful stop: NOT_SERVING, end Subscribe streams, drain RPCs, stop the scheduler."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.grace_seconds if grace is None else grace
        self.health.enter_graceful_shutdown()
        self.bus.close()
        self.scheduler.stop()
        self.rollout.stop()
        if self.server is not None:
            self.server.stop(grace).wait()
        if self._metrics_http is not None:
            http_server, thread = self._metrics_http
            http_server.shutdown()
            thread.join(5)
        if self._watch is not None:
            self._watch.join(5)
        self.store.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stopped; True when stopped."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> CloudServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def bind(server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Add the listening port; returns the bound port.

    Raises:
        OSError: one line naming the address (gRPC raises RuntimeError or returns 0 on a port in use).
    """
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(f"address: cannot bind {address} (in use, or not an address of this machine)")
    return port


def probe_bind(address: str) -> None:
    """Fail fast, before any file is touched, when `address` cannot be bound (e.g. the port is in use).

    Raises:
        OSError: one line naming the address and the reason.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or int(port) == 0:
        return  # an ephemeral port is always free; a bad address is reported by the real bind
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is no conflict
        try:
            probe.bind((host, int(port)))
        except OSError as err:
            raise OSError(f"address: cannot bind {address}: {err.strerror}") from None


def round_runner(config: CloudConfig, consolidate: str):
    """The scheduler's round runner for `config.consolidation`: None = the local worker."""
    cb = config.consolidation
    if cb.backend != "ray":
        return None
    from cloud_brain.learning.ray_backend import RayRoundRunner

    return RayRoundRunner(consolidate, address=cb.address, num_cpus=cb.num_cpus, parallel_gate=cb.parallel_gate)


def server_credentials(config: CloudConfig) -> grpc.ServerCredentials | None:
    """Mutual-TLS credentials from config.tls, or None for insecure mode (loopback only, loudly).

    Raises:
        ConfigError: insecure mode on a non-loopback address, or an unreadable TLS file.
    """
    tls = config.tls
    if not tls.enabled:
        host = config.address.rpartition(":")[0]
        if not is_loopback_host(host):
            raise ConfigError(
                f"tls: refusing to serve without TLS on non-loopback address {config.address!r}; "
                "set tls.cert, tls.key and tls.client_ca"
            )
        log.warning(
            "INSECURE: serving %s without TLS: no client authentication and no authorisation "
            "(any local process may upload as any robot or promote models); set tls.* in the config",
            config.address,
        )
        return None
    try:
        chain = pathlib.Path(tls.cert).read_bytes()
        key = pathlib.Path(tls.key).read_bytes()
        client_ca = pathlib.Path(tls.client_ca).read_bytes()
    except OSError as err:
        raise ConfigError(f"tls: cannot read {err.filename}: {err.strerror}") from None
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca, require_client_auth=True)


def write_ready_file(path: str, address: str) -> None:
    """Atomically write {"address": ...} so a waiting process never reads a partial file."""
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(target, {"address": address})


def serve(
    config: CloudConfig,
    ready_file: str | None = None,
    initial_model_fn: InitialModelFn | None = None,
    consolidate: str | None = None,
) -> int:
    """Run the server until SIGTERM/SIGINT, then stop gracefully. Returns the exit code."""
    stop_requested = threading.Event()

    def _request_stop(signum, frame):
        log.info("signal %d: stopping", signum)
        stop_requested.set()

    # The order matters to an operator: a port in use or a database another server holds is
    # refused before the database is created or an initial model registered.
    probe_bind(config.address)
    lock = None
    if config.store.backend == "sqlite":  # replicas share a PostgreSQL store on purpose
        try:
            lock = DatabaseLock(config.db_path)
        except DatabaseInUse as err:
            raise ConfigError(str(err)) from None
    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    server = None
    try:
        server = CloudServer(config, initial_model_fn=initial_model_fn, consolidate=consolidate)
        address = server.start()
        if ready_file:
            write_ready_file(ready_file, address)
        while not stop_requested.wait(0.5):
            pass
    finally:
        if server is not None:
            server.stop()
        if lock is not None:
            lock.release()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
