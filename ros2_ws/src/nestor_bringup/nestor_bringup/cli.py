"""`nestor`: start robots as plain OS processes.

    nestor robot --robot-id r0 --task kuka_track [--cloud ADDR] [--shift payload:4@20] [--run-dir D] [--duration S]
    nestor fleet --robots N [--task T] [--cloud ADDR] [--run-dir D] [--duration S] [--seed S]

Subcommands live in SUBCOMMANDS; add one with `register(...)`, or from another package through the
`nestor.subcommands` entry point group (nestor_bringup.cli_common): `nestor demo` comes from
nestor_demo that way, so this package never imports the demo.
"""

import argparse
import datetime
import os
import re
import signal
import sys
import time

from nestor_core.cli_support import DefaultsParser, distribution_version

from nestor_bringup.cli_common import (
    ENTRY_POINT_GROUP,
    CliError,
    Subcommand,
    check_task,
    default_config_dir,
    positive_float,
    positive_int,
)
from nestor_bringup.live_status import LiveStatus
from nestor_bringup.nodes import (
    DEFAULT_FLEET_SHIFTS,
    RESPAWN_DELAY_S,
    RESTART_BUDGET,
    RobotSpec,
    check_params_file,
    fleet_specs,
    robot_nodes,
    task_file_for,
)
from nestor_bringup.process_group import ProcessGroup, describe_spools, spool_left
from nestor_bringup.supervisor import RestartPolicy, StopSignals, Supervisor


def package_version() -> str:
    """The installed nestor_bringup distribution's version."""
    return distribution_version("nestor_bringup")


class _Parser(DefaultsParser):
    """One-line errors (exit 2) and the defaults shown in --help, for every subcommand."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


SUBCOMMANDS: dict[str, Subcommand] = {}


def register(name: str, help: str, add_arguments, run) -> None:
    """Adds `nestor <name>` (a later registration of the same name replaces the earlier one)."""
    SUBCOMMANDS[name] = Subcommand(name, help, add_arguments, run)


def load_plugins() -> None:
    """Registers the subcommands other installed packages declare (entry point group nestor.subcommands).

    Each entry point names a `Subcommand`. One that does not load is left out with a one-line
    warning, so a broken optional package never takes `nestor robot` down with it.
    """
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name in SUBCOMMANDS:
            continue
        try:
            command = point.load()
        except Exception as err:  # any failure to import an optional package
            print(f"nestor: warning: subcommand {point.name} unavailable: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        SUBCOMMANDS[command.name] = command


# ---------------------------------------------------------------------- shared helpers


def _shift(text: str) -> str:
    """Grammar, type and physical sense of one shift (its target is checked against the task later)."""
    from nestor_sim.shifts import parse_shift

    try:
        parse_shift(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text.strip()


def _robot_id(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", text):
        raise argparse.ArgumentTypeError(f"{text!r}: letters, digits and _ only, starting with a letter")
    return text


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="kuka_track", help="task name (config/tasks/<task>.yaml)")
    parser.add_argument("--task-file", default="", help="task YAML (overrides --task's file)")
    parser.add_argument("--cloud", default="127.0.0.1:50051", help="cloud brain host:port")
    parser.add_argument("--run-dir", default="", help="run directory (default runs/<timestamp>)")
    parser.add_argument(
        "--duration", type=positive_float("duration"), default=None, help="seconds after the nodes are up, then stop"
    )
    parser.add_argument("--seed", type=int, default=0, help="sim seed (robot i of a fleet gets seed + i)")
    parser.add_argument("--initial-model", default="", help="local .onnx the policies start with")
    parser.add_argument("--no-sim", action="store_true", help="robot nodes only (hardware or external sim)")
    parser.add_argument("--config-dir", default="", help="bringup config dir (default: the package's)")
    parser.add_argument(
        "--certs", default="", help="dir from `nestor-cloud certs`: mutual TLS and signed models (default insecure)"
    )
    parser.add_argument(
        "--respawn-delay",
        type=positive_float("respawn-delay"),
        default=None,
        help=f"first restart delay of a dead network-side node, x2 per crash in a row (default {RESPAWN_DELAY_S:g} s)",
    )
    parser.add_argument(
        "--restart-budget",
        type=int,
        default=None,
        help=f"restarts of one node within 10 min before its robot is stopped (default {RESTART_BUDGET})",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="record each robot's topics to <run_dir>/robots/<id>/recording.mcap (bag_recorder, own process)",
    )
    parser.add_argument(
        "--params-file",
        action="append",
        default=[],
        help="your own ROS params YAML over the per-node defaults (repeat; ids and paths still win)",
    )


def _restart_policy(args) -> RestartPolicy:
    if args.restart_budget is not None and args.restart_budget < 0:
        raise CliError(f"argument --restart-budget: must be >= 0, got {args.restart_budget}")
    return RestartPolicy(delay_s=args.respawn_delay, budget=args.restart_budget)


def _resolve_common(args, shifts: list[str]) -> tuple[str, str]:
    config_dir = args.config_dir or default_config_dir()
    if not os.path.isdir(os.path.join(config_dir, "robot")):
        raise CliError(f"argument --config-dir: {config_dir!r} has no robot/ defaults")
    probe = RobotSpec(robot_id="probe", task=args.task, task_file=args.task_file)
    which = "--task-file" if args.task_file else "--task"
    if not os.path.isfile(task_file_for(probe, config_dir)):
        raise CliError(f"argument {which}: no task file {task_file_for(probe, config_dir)}")
    check_task(task_file_for(probe, config_dir), shifts, which)
    if args.initial_model and not os.path.isfile(args.initial_model):
        raise CliError(f"argument --initial-model: no such file {args.initial_model!r}")
    for path in args.params_file:
        problem = check_params_file(path)
        if problem:
            raise CliError(f"argument --params-file: {problem}")
    run_dir = args.run_dir or os.path.join("runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    return config_dir, os.path.abspath(run_dir)


def run_robots(
    specs: list[RobotSpec], config_dir: str, run_dir: str, duration: float | None, restart: RestartPolicy | None = None
) -> int:
    """Start every robot's nodes and supervise them until the run ends; returns the exit code.

    The lifecycle nodes are configured and activated (ProcessGroup) and supervised
    (nestor_bringup.supervisor) until a signal (SIGINT, SIGTERM, SIGHUP), `duration` seconds after
    they are all active, or the last robot is stopped. The exit code is 0, or 1 when a robot was
    stopped because a node died.
    """
    group = ProcessGroup(run_dir)
    supervisor = None
    with StopSignals(group) as signals:
        try:
            for spec in specs:
                nodes = robot_nodes(spec, config_dir)
                group.start_robot(spec.robot_id, nodes)
                print(f"robot {spec.robot_id} (/{spec.ns}): {', '.join(n.name for n in nodes)}", flush=True)
            supervisor = Supervisor(group, restart)
            print(f"run dir {run_dir}; Ctrl-C to stop", flush=True)
            live = LiveStatus({spec.robot_id: spec.robot_dir for spec in specs})
            # `duration` counts from when every lifecycle node is configured and active (or refused):
            # under load, starting the node processes alone can take several seconds.
            end, up = None, False
            while (end is None or time.monotonic() < end) and (supervisor.alive_robots() or supervisor.stopping()):
                supervisor.poll()
                live.update()
                if not up and not group.starting():
                    up = True
                    print("lifecycle nodes brought up (configure, activate)", flush=True)
                    end = None if duration is None else time.monotonic() + duration
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            signals.stopping = True
            why = signal.Signals(signals.received).name if signals.received is not None else "stopping"
            print(
                f"nestor: {why}: stopping the control nodes, then the uplinks drain their spools "
                "(a second Ctrl-C stops at once)",
                flush=True,
            )
            codes = group.stop()
            failed = set(supervisor.failed) if supervisor is not None else set()
            bad = {k: v for k, v in codes.items() if v not in (0, -2, 130) and k.split("/")[0] not in failed}
            if bad:
                print(f"nestor: nodes exited with errors at stop: {bad}", file=sys.stderr)
            print(
                f"stopped; {describe_spools(spool_left(run_dir, group.robots()))}; logs in {run_dir}/robots/",
                flush=True,
            )
    return 1 if supervisor is not None and supervisor.failed else 0


# ---------------------------------------------------------------------- nestor robot


def _robot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot-id", required=True, type=_robot_id, help="robot id (also its namespace)")
    parser.add_argument("--namespace", default="", help="ROS namespace (default: the robot id)")
    parser.add_argument("--shift", action="append", type=_shift, default=[], help="e.g. payload:4@20 (repeat)")
    parser.add_argument("--camera", choices=("auto", "on", "off"), default="auto", help="target from the camera")
    _common_arguments(parser)


def _certs(args) -> str:
    if args.certs and not os.path.isfile(os.path.join(args.certs, "ca.pem")):
        raise CliError(f"argument --certs: {args.certs!r} has no ca.pem (make it with `nestor-cloud certs`)")
    return os.path.abspath(args.certs) if args.certs else ""


def _run_robot(args) -> int:
    config_dir, run_dir = _resolve_common(args, list(args.shift))
    spec = RobotSpec(
        robot_id=args.robot_id,
        task=args.task,
        task_file=args.task_file,
        namespace=args.namespace,
        cloud_address=args.cloud,
        run_dir=run_dir,
        seed=args.seed,
        shifts=list(args.shift),
        camera={"auto": None, "on": True, "off": False}[args.camera],
        initial_model=args.initial_model,
        sim=not args.no_sim,
        certs_dir=_certs(args),
        params_files=list(args.params_file),
        record=args.record,
    )
    return run_robots([spec], config_dir, run_dir, args.duration, _restart_policy(args))


# ---------------------------------------------------------------------- nestor fleet


def _fleet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robots", type=positive_int, default=2, help="number of robots")
    parser.add_argument("--namespace", default="", help="namespace prefix: robot i runs in <namespace>/robot<i>")
    parser.add_argument(
        "--shift",
        action="append",
        type=_shift,
        default=[],
        help="give every robot this shift (repeat); default cycles through a built-in list",
    )
    _common_arguments(parser)


def _run_fleet(args) -> int:
    shifts = list(args.shift) or sorted({s for schedule in DEFAULT_FLEET_SHIFTS for s in schedule})
    config_dir, run_dir = _resolve_common(args, shifts)
    specs = fleet_specs(
        args.robots,
        args.task,
        run_dir,
        args.cloud,
        args.seed,
        args.task_file,
        args.initial_model,
        not args.no_sim,
        [list(args.shift)] if args.shift else None,
        namespace=args.namespace,
        params_files=list(args.params_file),
        record=args.record,
    )
    for spec in specs:
        spec.certs_dir = _certs(args)
    return run_robots(specs, config_dir, run_dir, args.duration, _restart_policy(args))


register("robot", "start one robot's nodes", _robot_arguments, _run_robot)
register("fleet", "start N robots (robot0..N-1)", _fleet_arguments, _run_fleet)

# ---------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    load_plugins()
    parser = _Parser(prog="nestor", description="nestor bring-up")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for command in SUBCOMMANDS.values():
        command.add_arguments(sub.add_parser(command.name, help=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return SUBCOMMANDS[args.command].run(args)
    except CliError as err:
        print(f"nestor: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
