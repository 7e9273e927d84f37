"""CloudConfig: the one typed configuration of the cloud slow brain, loaded from YAML.

`config/cloud.yaml` holds the defaults. The CLI loads it and overrides single fields from flags.
Validation happens once, in `CloudConfig.validate`, and every error names the field.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import yaml
from nestor_core.validation import at_least, positive, tcp_port

from cloud_brain.learning.round_config import ConsolidationConfig
from cloud_brain.tls_config import TlsConfig, is_loopback_host

__all__ = [
    "CloudConfig",
    "ConfigError",
    "ConsolidationBackendConfig",
    "RolloutConfig",
    "ScheduleConfig",
    "StoreConfig",
    "TlsConfig",
    "config_from_dict",
    "is_loopback_host",
    "load_config",
    "read_yaml_mapping",
]


class ConfigError(ValueError):
    """An invalid configuration value; the message starts with the field name."""


@dataclasses.dataclass
class ScheduleConfig:
    """When the scheduler starts a consolidation round for a task.

    A round starts when the transitions stored for the task since the last round reach
    `every_transitions`, or when at least `min_transitions` are new and `every_seconds` have
    passed since the last round (or since the server started).
    """

    enabled: bool = True
    """Run the consolidation scheduler at all. Off: the server only ingests and distributes."""
    every_transitions: int = 20000
    """Start a round as soon as this many new transitions are stored for the task."""
    every_seconds: float = 600.0
    """Start a round after this many seconds if at least `min_transitions` are new."""
    min_transitions: int = 2000
    """Never start a time-triggered round with fewer new transitions than this."""
    poll_seconds: float = 1.0
    """How often the scheduler thread checks whether a round is due."""
    round_timeout_seconds: float = 1800.0
    """A round's child process is killed (round recorded as failed) after this many seconds."""
    failure_backoff_seconds: float = 60.0
    """After a failed round, wait this long before trying the task again."""
    max_rows_per_round: int = 0
    """Upper bound on experience chunks (store rows) handed to one round; 0 = no bound."""


@dataclasses.dataclass
class RolloutConfig:
    """Staged rollout of versions accepted by consolidation rounds (cloud_brain.models.rollout).

    With `canary_fraction` > 0 an accepted version first goes to ceil(fraction * fleet) canary
    robots (the lowest robot ids among the task's connected subscribers). It is promoted to
    everyone once every canary has `canary_transitions` transitions produced by it and their mean
    cost has not regressed by more than `max_regression` against the same robots' costs under the
    previous version; otherwise it is marked rejected and the canaries get the previous version
    back. 0 = off: accepted versions are activated for the whole fleet at once.
    """

    canary_fraction: float = 0.0
    """Share of the task's connected robots that run a new version first, in [0, 1]; 0 = off."""
    canary_transitions: int = 500
    """Transitions each canary must produce with the new version before the decision."""
    canary_timeout_seconds: float = 300.0
    """Decide after this long even without enough experience (no experience at all = reject)."""
    max_regression: float = 0.1
    """Largest accepted relative cost increase: (post - pre) / |pre| <= max_regression."""
    baseline_transitions: int = 2000
    """Pre-swap baseline: each canary's last this many transitions under the previous version."""
    poll_seconds: float = 1.0
    """How often a running canary is checked."""


STORE_BACKENDS = ("sqlite", "postgres")


@dataclasses.dataclass
class StoreConfig:
    """Where the experience store and the model registry live (cloud_brain.experience.store, store_db).

    `sqlite` (the default) is the embedded file `db_path`: one server process. `postgres` is a
    PostgreSQL database that several `nestor-cloud serve` replicas share: each robot may connect
    to any of them, new versions reach the robots of every replica (registry watch), and a lease
    in the database lets exactly one replica run a task's consolidation round.
    """

    backend: str = "sqlite"
    """`sqlite` (file `db_path`) or `postgres` (server `dsn`)."""
    dsn: str = ""
    """PostgreSQL DSN `postgresql://user[:password]@host:port/dbname`, or `env:NAME` to read it from
    environment variable NAME (keeps the password out of the YAML). Used with backend postgres."""
    connect_timeout_seconds: float = 10.0
    """How long to wait for the database server when connecting, and for another writer's lock."""
    watch_seconds: float = 0.5
    """How often a replica looks for versions activated by another replica (registry watch)."""
    lease_seconds: float = 30.0
    """Round lease: a replica that dies mid-round is replaced by another after this long."""


CONSOLIDATION_BACKENDS = ("local", "ray")


@dataclasses.dataclass
class ConsolidationBackendConfig:
    """The `consolidation:` section: where rounds run, and (the same mapping) one round's hyper-parameters.

    `local` (default): one persistent child process of the server, niced. `ray`: each round is a
    Ray task, and the gate evaluates its scenarios as parallel Ray tasks; `ray` is imported only
    with this backend (cloud_brain.learning.scheduler, cloud_brain.learning.ray_backend). Every
    other key of the section is a field of `round` (cloud_brain.learning.round_config).
    """

    backend: str = "local"
    """`local` (child process) or `ray`."""
    address: str = ""
    """Ray cluster: "" = start a private local cluster bound to 127.0.0.1 with `num_cpus` CPUs;
    `auto` = the cluster of `ray start --head` on this machine; or `host:port` / `ray://host:port`."""
    num_cpus: int = 2
    """CPUs of the private local cluster (how many gate scenarios run at once)."""
    parallel_gate: bool = True
    """On Ray, evaluate the gate's scenarios as parallel tasks (False: inside the round's task)."""
    round: ConsolidationConfig = dataclasses.field(default_factory=ConsolidationConfig, metadata={"flat": True})
    """The hyper-parameters of one round, sent with every round request; written flat in the section."""


@dataclasses.dataclass
class CloudConfig:
    """Configuration of the `nestor-cloud serve` process."""

    address: str = "127.0.0.1:50051"
    """host:port the gRPC server binds. Port 0 picks a free port (see `--ready-file`)."""
    db_path: str = "runs/cloud/nestor.db"
    """SQLite file (WAL mode) holding robots, experience chunks, dropped ranges and models."""
    model_dir: str = "runs/cloud/models"
    """Directory where every registered version is also exported as `v<N>_<task>.onnx` plus
    `.manifest.json`, for inspection. Empty string = no export."""
    task_files: list[str] = dataclasses.field(
        default_factory=lambda: ["config/tasks/kuka_track.yaml", "config/tasks/crane.yaml"]
    )
    """Task YAML files; each defines a task name and its obs/act dimensions. Chunks for any
    other task are rejected with reason `unknown_task`."""
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    """Consolidation schedule (see ScheduleConfig)."""
    seed: int = 0
    """Seed for the initial models; round k of a task uses seed + k."""
    max_workers: int = 1024
    """gRPC thread pool size. Every open stream (Ingest, Subscribe) holds one thread, so a fleet
    of N robots needs at least 2N + a few for unary calls; must be >= 256."""
    grace_seconds: float = 5.0
    """On SIGTERM/SIGINT, in-flight RPCs get this long to finish before being cancelled."""
    max_message_bytes: int = 64 * 1024 * 1024
    """Largest gRPC message accepted or sent (chunks and ONNX models)."""
    max_chunk_transitions: int = 16384
    """Largest chunk (transitions) Ingest accepts; a larger one is refused with INVALID_ARGUMENT
    (reason `too_large`), so the robot quarantines it instead of resending it forever."""
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)
    """Staged (canary) rollout of new versions (see RolloutConfig); off by default."""
    metrics_port: int = 0
    """Prometheus /metrics HTTP port; 0 = off."""
    metrics_address: str = "127.0.0.1"
    """Address the Prometheus HTTP server binds."""
    initial_model: str = "cloud_brain.learning.window_model:initial_model"
    """`module:function` returning (onnx bytes, io_signature) for a task file and seed; used at
    start for every task that has no active version yet."""
    consolidate: str = "cloud_brain.learning.consolidation:run_round"
    """`module:function` run in the consolidation child process: run_round(request) -> result."""
    signing_key: str = ""
    """Path of the PEM ed25519 private key that signs every manifest (e.g. certs/model_signing.pem);
    empty = unsigned, and robots that hold a public key then refuse the models."""
    tls: TlsConfig = dataclasses.field(default_factory=TlsConfig)
    """Mutual TLS (see TlsConfig); off by default, which is allowed on loopback addresses only."""
    store: StoreConfig = dataclasses.field(default_factory=StoreConfig)
    """Store backend (see StoreConfig): the SQLite file `db_path` by default, or PostgreSQL."""
    consolidation: ConsolidationBackendConfig = dataclasses.field(default_factory=ConsolidationBackendConfig)
    """Where rounds run (see ConsolidationBackendConfig): a local child process, or Ray."""

    tensorboard_dir: str = ""
    """Directory of the TensorBoard event files of the consolidation rounds (one run per task:
    losses, meta-parameters, gate cost per scenario and version, accepted); empty = none."""

    def store_target(self) -> str:
        """What ExperienceStore opens: `db_path`, or the PostgreSQL DSN (env: resolved)."""
        if self.store.backend == "postgres":
            from cloud_brain.experience.store_db import dsn_from_env

            try:
                return dsn_from_env(self.store.dsn)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        return self.db_path

    def validate(self) -> CloudConfig:
        """Check every field; raises ConfigError naming the first bad one. Returns self."""
        host, sep, port = self.address.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"address: expected host:port, got {self.address!r}")
        if not self.db_path:
            raise ConfigError("db_path: must not be empty")
        st = self.store
        if st.backend not in STORE_BACKENDS:
            raise ConfigError(f"store.backend: must be one of {', '.join(STORE_BACKENDS)}, got {st.backend!r}")
        if st.backend == "postgres":
            if not st.dsn:
                raise ConfigError("store.dsn: must be set with store.backend postgres (or env:NAME)")
            dsn = self.store_target()
            if not dsn.startswith(("postgresql://", "postgres://")):
                raise ConfigError("store.dsn: expected postgresql://user@host:port/dbname")
        cb = self.consolidation
        if cb.backend not in CONSOLIDATION_BACKENDS:
            raise ConfigError(
                f"consolidation.backend: must be one of {', '.join(CONSOLIDATION_BACKENDS)}, got {cb.backend!r}"
            )
        if cb.num_cpus < 1:
            raise ConfigError(f"consolidation.num_cpus: must be >= 1, got {cb.num_cpus}")
        if cb.address and cb.address != "auto" and ":" not in cb.address:
            raise ConfigError(f"consolidation.address: expected '', 'auto' or host:port, got {cb.address!r}")
        try:
            cb.round.validate()
        except ValueError as err:
            raise ConfigError(f"consolidation.{err}") from None
        for name in ("connect_timeout_seconds", "watch_seconds", "lease_seconds"):
            if not getattr(st, name) > 0:
                raise ConfigError(f"store.{name}: must be > 0, got {getattr(st, name)}")
        if not isinstance(self.task_files, list) or not all(isinstance(p, str) and p for p in self.task_files):
            raise ConfigError(f"task_files: expected a list of paths, got {self.task_files!r}")
        if self.max_workers < 256:
            raise ConfigError(f"max_workers: must be >= 256 to hold a fleet's streams, got {self.max_workers}")
        if self.grace_seconds < 0:
            raise ConfigError(f"grace_seconds: must be >= 0, got {self.grace_seconds}")
        if self.max_message_bytes < 1024:
            raise ConfigError(f"max_message_bytes: must be >= 1024, got {self.max_message_bytes}")
        if self.max_chunk_transitions < 1:
            raise ConfigError(f"max_chunk_transitions: must be >= 1, got {self.max_chunk_transitions}")
        r = self.rollout
        if not 0.0 <= r.canary_fraction <= 1.0:
            raise ConfigError(f"rollout.canary_fraction: must be in [0, 1], got {r.canary_fraction}")
        at_least(r, 1, "canary_transitions", "baseline_transitions", prefix="rollout.", error=ConfigError)
        positive(r, "canary_timeout_seconds", "poll_seconds", prefix="rollout.", error=ConfigError)
        at_least(r, 0, "max_regression", prefix="rollout.", error=ConfigError)
        tcp_port(self, "metrics_port", error=ConfigError)
        for name in ("initial_model", "consolidate"):
            value = getattr(self, name)
            if value.count(":") != 1 or not all(value.split(":")):
                raise ConfigError(f"{name}: expected 'module:function', got {value!r}")
        if self.signing_key:
            from nestor_core.manifest import load_private_key

            try:
                load_private_key(self.signing_key)
            except ValueError as err:
                raise ConfigError(f"signing_key: {err}") from None
        tls = self.tls
        if tls.enabled:
            for name in ("cert", "key", "client_ca"):
                path = getattr(tls, name)
                if not path:
                    raise ConfigError(f"tls.{name}: must be set when any tls field is set (mutual TLS)")
                if not os.path.isfile(path):
                    raise ConfigError(f"tls.{name}: no such file {path!r}")
        elif not is_loopback_host(host):
            raise ConfigError(
                f"tls: refusing to serve without TLS on non-loopback address {self.address!r}; set tls.cert, "
                "tls.key and tls.client_ca (see `nestor-cloud certs`) or bind 127.0.0.1"
            )
        s = self.schedule
        for name, low, strict in (
            ("every_transitions", 1, False),
            ("every_seconds", 0, True),
            ("min_transitions", 1, False),
            ("poll_seconds", 0, True),
            ("round_timeout_seconds", 0, True),
            ("failure_backoff_seconds", 0, False),
            ("max_rows_per_round", 0, False),
        ):
            value = getattr(s, name)  # in this order: the first bad field is named
            if value < low or (strict and value == low):
                raise ConfigError(f"schedule.{name}: must be {'>' if strict else '>='} {low}, got {value}")
        return self


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Instantiate a config dataclass from a mapping, checking names and basic types."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    values, known = dict(values), {name for name, f in fields.items() if not f.metadata.get("flat")}
    for flat in (f for f in fields.values() if f.metadata.get("flat")):
        # A flat field's own fields are written beside the section's (consolidation: steps: ...).
        own = {f.name for f in dataclasses.fields(flat.default_factory())}
        known |= own
        kwargs[flat.name] = _build(flat.default_factory, {k: values.pop(k) for k in list(values) if k in own}, prefix)
    for key, value in values.items():
        if key not in known or fields[key].metadata.get("flat"):
            raise ConfigError(f"{prefix}{key}: unknown field (known: {', '.join(sorted(known))})")
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value or {}, f"{prefix}{key}.")
            continue
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, list):
            ok = isinstance(value, list)
        elif isinstance(default, tuple) or (default is None and str(fields[key].type).startswith("tuple")):
            # YAML writes a list: of numbers (a tuple default) or of names (a None default: may stay None)
            numbers = isinstance(default, tuple)
            ok = (default is None and value is None) or (
                isinstance(value, list)
                and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) if numbers else isinstance(v, str)
                    for v in value
                )
            )
            if not ok:
                kind = "a list of numbers" if numbers else "a list of strings or null"
                raise ConfigError(f"{prefix}{key}: expected {kind}, got {value!r}")
            value = tuple(float(v) if numbers else v for v in value) if value is not None else None
        else:
            ok = isinstance(value, str)
        if not ok:
            raise ConfigError(f"{prefix}{key}: expected {type(default).__name__}, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> CloudConfig:
    """Build and validate a CloudConfig from a mapping (YAML layout: fields at top level)."""
    return _build(CloudConfig, values or {}, "").validate()


def read_yaml_mapping(path: str | pathlib.Path, field: str) -> dict:
    """A YAML file that must hold a mapping; ConfigErrors start with `field` (config, task_files)."""
    try:
        values = yaml.safe_load(pathlib.Path(path).read_text()) or {}
    except OSError as err:
        raise ConfigError(f"{field}: cannot read {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{field}: {path} is not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{field}: {path} must hold a mapping")
    return values


def load_config(path: str | pathlib.Path, **overrides: Any) -> CloudConfig:
    """Load a YAML file; non-None keyword overrides (e.g. from CLI flags) replace fields.

    Relative `db_path`, `model_dir` and `task_files` stay relative to the working directory,
    like every other path the CLI takes.
    """
    values = dict(read_yaml_mapping(path, "config"))
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            value = {**values[key], **value}  # a section override keeps the file's other fields
        values[key] = value
    return config_from_dict(values)
