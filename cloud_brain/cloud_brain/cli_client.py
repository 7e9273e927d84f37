"""The client commands of `nestor-cloud`: health, status and models, over one (mutual TLS) channel.

`cli.main` parses the arguments and maps the RPC errors to exit codes; this module makes the
channel, calls the server and prints the replies (tables, or JSON with --json).
"""

from __future__ import annotations

import json
import time

import grpc
from google.protobuf import json_format
from nestor_core import nestor_pb2, nestor_pb2_grpc
from nestor_core.tls import read_mtls_files


def _channel(args) -> grpc.Channel:
    """Mutual TLS when --ca/--cert/--key are given (all three), else an insecure channel."""
    files = read_mtls_files(args.ca, args.cert, args.key, names=("--ca", "--cert", "--key"))
    if files is None:
        return grpc.insecure_channel(args.address)
    return grpc.secure_channel(args.address, files.channel_credentials())


def _to_json(message) -> dict:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _when(unix: float) -> str:
    if not unix:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix))


def _models_table(models, title: str):
    from rich.table import Table

    table = Table(title=title)
    for column in ("version", "task", "status", "parent", "created", "sha256", "experience rows", "metrics"):
        table.add_column(column)
    for m in models:
        table.add_row(
            str(m.version),
            m.task,
            m.status,
            str(m.parent),
            _when(m.created_unix),
            m.sha256[:12],
            f"({m.experience_from}, {m.experience_to}]",
            m.metrics_json if m.metrics_json != "{}" else "",
        )
    return table


def _print_status(status: nestor_pb2.FleetStatus) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    robots = Table(title="robots")
    for column in ("robot", "task", "last contact", "transitions", "last seq", "dropped", "model", "recent cost"):
        robots.add_column(column)
    for r in status.robots:
        robots.add_row(
            r.robot_id,
            r.task,
            _when(r.last_contact_unix),
            str(r.transitions),
            str(r.last_seq),
            str(r.dropped),
            str(r.model_version),
            f"{r.recent_cost:.4g}",
        )
    console.print(robots)
    console.print(_models_table(status.models, "model versions"))
    rejects = ", ".join(f"{k}={v}" for k, v in sorted(status.rejected_by_reason.items())) or "none"
    console.print(
        f"transitions stored: {status.transitions_stored}   consolidation rounds: {status.consolidation_rounds}"
        f"   rejected chunks: {rejects}"
    )


def _health(channel: grpc.Channel, args) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
    )
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if args.json:
        print(json.dumps({"address": args.address, "service": args.service, "status": status}, sort_keys=True))
    else:
        print(f"{args.address} {args.service or '(server)'}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def client_call(args) -> int:
    """Run a client command (health, status, models ...) over one channel; returns the exit code."""
    with _channel(args) as channel:
        if args.command == "health":
            return _health(channel, args)
        if args.command == "status":
            reply = nestor_pb2_grpc.FleetStub(channel).GetStatus(nestor_pb2.StatusRequest(), timeout=args.timeout)
            if args.json:
                print(json.dumps(_to_json(reply), indent=2, sort_keys=True))
            else:
                _print_status(reply)
            return 0
        stub = nestor_pb2_grpc.ModelsStub(channel)
        if args.models_command == "list":
            reply = stub.List(nestor_pb2.ListModelsRequest(task=args.task), timeout=args.timeout)
            models = list(reply.models)
        elif args.models_command == "promote":
            reply = stub.Promote(nestor_pb2.PromoteRequest(version=args.version), timeout=args.timeout)
            models = [reply.model]
        else:
            reply = stub.Rollback(nestor_pb2.RollbackRequest(task=args.task), timeout=args.timeout)
            models = [reply.model]
        if args.json:
            print(json.dumps(_to_json(reply), indent=2, sort_keys=True))
        else:
            from rich.console import Console

            Console().print(_models_table(models, "model versions" if args.models_command == "list" else "active"))
        return 0
