"""`nestor-cloud`: run the cloud brain and talk to a running one.

    nestor-cloud serve --config config/cloud.yaml [--address A] [--db PATH] [--ready-file F]
    nestor-cloud serve --config config/cloud.yaml --certs certs     (mutual TLS + signed models)
    nestor-cloud health [--address A]                               (exit 0 only when SERVING)
    nestor-cloud status [--address A] [--json]
    nestor-cloud models list [--task T] [--json]
    nestor-cloud models promote VERSION
    nestor-cloud models rollback --task T
    nestor-cloud certs --out certs --robots 2 [--server-host cloud_brain] [--bundles]
    nestor-cloud backup --out FILE [--config C | --db PATH]     (online: the server may be running)
    nestor-cloud restore --from FILE --db PATH [--force]        (verified; the server must be stopped)
    nestor-cloud export --format mcap|parquet --robot R --out F [--config C | --db PATH]
                 [--from-seq N] [--to-seq N] [--since UNIX] [--until UNIX] [--events events.jsonl]

Client commands talk mutual TLS when given --ca, --cert and --key (or NESTOR_TLS_CA,
NESTOR_TLS_CERT, NESTOR_TLS_KEY); promote and rollback need the admin certificate. Without them
the channel is insecure, which only a server in loopback dev mode accepts.

Every client call has a deadline (`--timeout`). An unreachable server (or one that refuses the
TLS handshake) prints one line and exits 2; other RPC errors exit 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys

import grpc
from nestor_core.cli_support import DefaultsParser, distribution_version

from cloud_brain.cli_client import client_call
from cloud_brain.config import ConfigError, load_config

DEFAULT_ADDRESS = os.environ.get("NESTOR_CLOUD_ADDRESS", "127.0.0.1:50051")
EXIT_UNREACHABLE = 2


def package_version() -> str:
    """The installed nestor-cloud-brain distribution's version."""
    return distribution_version("nestor-cloud-brain")


def _parser() -> argparse.ArgumentParser:
    parser = DefaultsParser(prog="nestor-cloud", description="nestor cloud slow brain")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=DefaultsParser)

    serve = sub.add_parser("serve", help="run the cloud brain server")
    serve.add_argument("--config", default="config/cloud.yaml", help="CloudConfig YAML")
    serve.add_argument("--address", help="override config address (host:port, port 0 = any free port)")
    serve.add_argument("--db", help="override config db_path")
    serve.add_argument("--metrics-port", type=int, help="override config metrics_port (0 = off)")
    serve.add_argument(
        "--certs",
        help="directory from `nestor-cloud certs` (or a bundles/cloud copy): mutual TLS with server.pem, "
        "server.key and ca.pem, manifests signed with model_signing.pem (overrides tls.* and signing_key)",
    )
    serve.add_argument(
        "--store-dsn",
        help="store on PostgreSQL: a postgresql:// DSN or env:NAME (overrides store.backend/store.dsn); "
        "several replicas may share one",
    )
    serve.add_argument(
        "--ray-address",
        help="consolidate on Ray: 'auto', host:port of a cluster, or '' for a private local one "
        "(overrides consolidation.backend/address)",
    )
    serve.add_argument("--ready-file", help='write {"address": "host:port"} here once serving')
    serve.add_argument("--log-level", default="INFO", help="logging level")

    def client(parent, name: str, summary: str) -> argparse.ArgumentParser:
        """A subcommand that calls the server: its connection options and --json."""
        p = parent.add_parser(name, help=summary)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--address", default=DEFAULT_ADDRESS, help="server host:port (env NESTOR_CLOUD_ADDRESS)")
        p.add_argument("--timeout", type=float, default=5.0, help="deadline of each call, seconds")
        p.add_argument("--ca", default=os.environ.get("NESTOR_TLS_CA", ""), help="CA PEM (env NESTOR_TLS_CA)")
        p.add_argument(
            "--cert", default=os.environ.get("NESTOR_TLS_CERT", ""), help="client cert PEM (env NESTOR_TLS_CERT)"
        )
        p.add_argument(
            "--key", default=os.environ.get("NESTOR_TLS_KEY", ""), help="client key PEM (env NESTOR_TLS_KEY)"
        )
        return p

    health = client(sub, "health", "standard gRPC health check; exit 0 only when SERVING")
    health.add_argument("--service", default="", help='service name ("" = the server as a whole)')
    client(sub, "status", "robots, model versions and counters")

    models = sub.add_parser("models", help="list, promote, roll back model versions")
    msub = models.add_subparsers(dest="models_command", required=True)
    client(msub, "list", "list versions").add_argument("--task", default="", help="only this task")
    client(msub, "promote", "make VERSION its task's active version").add_argument("version", type=int)
    rollback = client(msub, "rollback", "re-activate the parent of the task's active version")
    rollback.add_argument("--task", required=True)

    certs = sub.add_parser("certs", help="write a dev CA, server/robot/admin certs and the model-signing keys")
    certs.add_argument("--out", default="certs", help="output directory (an existing CA and signing key are reused)")
    certs.add_argument("--robots", type=int, default=2, help="robot client certs robot0 .. robot{N-1}")
    certs.add_argument("--robot-prefix", default="robot", help="robot name prefix (robot ids must match)")
    certs.add_argument(
        "--server-host",
        action="append",
        default=[],
        help="extra DNS name or IP the server cert is valid for (repeatable), e.g. cloud_brain",
    )
    certs.add_argument(
        "--bundles",
        action="store_true",
        help="also write bundles/cloud and bundles/<robot>: one directory per consumer",
    )

    backup = sub.add_parser("backup", help="online, consistent copy of the cloud database (server may run)")
    backup.add_argument("--out", required=True, help="backup file to write (must not exist)")
    backup.add_argument("--config", default="config/cloud.yaml", help="CloudConfig YAML naming db_path")
    backup.add_argument("--db", help="database file (overrides the config's db_path)")
    backup.add_argument("--json", action="store_true", help="machine-readable output")
    restore = sub.add_parser("restore", help="verify a backup and install it as the database")
    restore.add_argument("--from", dest="source", required=True, help="backup file")
    restore.add_argument("--db", required=True, help="database file to create (stop the server first)")
    restore.add_argument("--force", action="store_true", help="replace an existing database file")
    restore.add_argument("--json", action="store_true", help="machine-readable output")

    export = sub.add_parser("export", help="one robot's experience as an MCAP file (ROS 2 messages) or Parquet")
    export.add_argument("--format", required=True, choices=["mcap", "parquet"], help="file format")
    export.add_argument("--robot", required=True, help="robot id")
    export.add_argument("--out", required=True, help="file to write (replaced when it exists)")
    export.add_argument("--config", default="config/cloud.yaml", help="CloudConfig YAML: db_path and task_files")
    export.add_argument("--db", help="database file (overrides the config's db_path)")
    export.add_argument("--from-seq", type=int, default=1, help="first seq (inclusive)")
    export.add_argument("--to-seq", type=int, help="last seq (inclusive; default: the newest)")
    export.add_argument("--since", type=float, help="earliest robot-clock stamp, unix seconds (inclusive)")
    export.add_argument("--until", type=float, help="latest robot-clock stamp, unix seconds (inclusive)")
    export.add_argument("--events", help="the robot's events.jsonl (sim shift events) to include")
    export.add_argument("--json", action="store_true", help="machine-readable summary")
    return parser


def _export_command(args) -> int:
    from cloud_brain.experience.export import ExportError, Selection, joint_layout, read_events
    from cloud_brain.experience.export_formats import formats
    from cloud_brain.experience.store import ExperienceStore

    try:
        selection = Selection(args.robot, args.from_seq, args.to_seq, args.since, args.until).validate()
        task_files: list[str] = []
        if os.path.exists(args.config):
            config = load_config(args.config)
            db, task_files = args.db or config.db_path, config.task_files
        elif args.db:
            db = args.db
        else:
            raise ExportError(f"--config: no such file {args.config!r} (or give --db)")
        if not os.path.isfile(db):
            raise ExportError(f"--db: no such file {db!r}")
        store = ExperienceStore(db)
        try:
            record = store.robot(args.robot)
            if record is None:
                raise ExportError(f"--robot: no experience stored for {args.robot!r}")
            first = next(store.read_robot(args.robot))
            from cloud_brain.tasks import load_tasks

            spec = load_tasks(task_files).get(record.task)
            task_file = spec.file if spec is not None else None
            layout = joint_layout(task_file, first.obs.shape[1], first.action.shape[1])
            events = read_events(args.events, args.robot, args.since, args.until)
            summary = formats()[args.format].write(args.out, store, selection, layout, events)
        finally:
            store.close()
    except (ExportError, ConfigError, OSError) as err:
        print(f"nestor-cloud: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(
            f"export: {summary['path']}: {summary['transitions']} transitions of {args.robot} "
            f"(seq {summary['first_seq']}..{summary['last_seq']}, task {summary['task']}) as {args.format}"
        )
    return 0


def _backup_command(args) -> int:
    from cloud_brain.experience import backup

    try:
        if args.command == "backup":
            if args.db:
                db = args.db
            else:
                config = load_config(args.config)
                if config.store.backend != "sqlite":
                    raise ConfigError(
                        f"store.backend: {config.store.backend}: back up that database with its own "
                        "tools (pg_dump, pg_basebackup); `nestor-cloud backup` copies SQLite files"
                    )
                db = config.db_path
            report = backup.backup(db, args.out)
        else:
            report = backup.restore(args.source, args.db, force=args.force)
    except (backup.BackupError, ConfigError, OSError) as err:
        print(f"nestor-cloud: {err}", file=sys.stderr)
        return 1
    summary = {
        "path": report.path,
        "integrity": report.integrity,
        "counts": report.counts,
        "transitions": report.transitions,
        "robots": report.robots,
        "ok": report.ok,
    }
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        rows = ", ".join(f"{k}={v}" for k, v in report.counts.items())
        print(
            f"{args.command}: {report.path} verified (integrity {report.integrity}; {rows}; "
            f"{report.transitions} transitions of {report.robots} robots, seqs contiguous)"
        )
    return 0


def scale_overrides(store_dsn: str | None, ray_address: str | None) -> dict:
    """Config overrides of `serve --store-dsn` and `--ray-address` (merged into store/consolidation)."""
    out = {}
    if store_dsn is not None:
        out["store"] = {"backend": "postgres", "dsn": store_dsn}
    if ray_address is not None:
        out["consolidation"] = {"backend": "ray", "address": ray_address}
    return out


def certs_overrides(certs_dir: str | None) -> dict:
    """Config overrides of `serve --certs DIR`: the TLS files and the signing key of that directory."""
    if not certs_dir:
        return {}
    path = lambda name: os.path.join(certs_dir, name)  # noqa: E731
    return {
        "tls": {"cert": path("server.pem"), "key": path("server.key"), "client_ca": path("ca.pem")},
        "signing_key": path("model_signing.pem"),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of `nestor-cloud`; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            config = load_config(
                args.config,
                address=args.address,
                db_path=args.db,
                metrics_port=args.metrics_port,
                **certs_overrides(args.certs),
                **scale_overrides(args.store_dsn, args.ray_address),
            )
        except ConfigError as err:
            print(f"nestor-cloud: {err}", file=sys.stderr)
            return 2
        from cloud_brain.experience.store_db import SchemaError, StoreUnavailable
        from cloud_brain.service.server import serve

        try:
            return serve(config, ready_file=args.ready_file)
        except (ConfigError, OSError, StoreUnavailable, SchemaError) as err:
            print(f"nestor-cloud: {err}", file=sys.stderr)
            return 2
        except sqlite3.DatabaseError as err:
            print(f"nestor-cloud: db: {config.db_path}: {err}", file=sys.stderr)
            return 2
    if args.command in ("backup", "restore"):
        return _backup_command(args)
    if args.command == "export":
        return _export_command(args)
    if args.command == "certs":
        from cloud_brain.service.certs import generate

        try:
            written = generate(
                args.out,
                robots=args.robots,
                robot_prefix=args.robot_prefix,
                server_hosts=tuple(args.server_host),
                bundles=args.bundles,
            )
        except (OSError, ValueError) as err:
            print(f"nestor-cloud: {err}", file=sys.stderr)
            return 2
        print(
            f"certs in {args.out}: wrote {', '.join(written['written'])}"
            + (f"; reused {', '.join(written['reused'])}" if written["reused"] else "")
        )
        return 0
    try:
        return client_call(args)
    except ValueError as err:
        print(f"nestor-cloud: {err}", file=sys.stderr)
        return 2
    except grpc.RpcError as err:
        code = err.code()
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            print(f"nestor-cloud: cannot reach cloud brain at {args.address} ({code.name})", file=sys.stderr)
            return EXIT_UNREACHABLE
        print(f"nestor-cloud: {code.name}: {err.details()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
