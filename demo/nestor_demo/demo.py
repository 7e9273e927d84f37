"""`nestor demo`: the whole loop on one machine, as separate processes.

    cloud brain (nestor-cloud serve)  <-- gRPC 127.0.0.1 -->  robot0..N-1, each: sim_bridge,
                                                              [perception], policy, uplink, weight_sync

Timeline: the cloud starts and registers each task's initial model; the robots start, get it
pushed and begin to track; every robot's dynamics shift at `shift_frac` of the run; the cloud
consolidates on a timer and pushes each accepted version; at the end the policies stop, the
uplinks drain their spools, the cloud stops, and the report is written to runs/<id>/ (once it is,
runs/latest points at it). The live figures (`live` in summary.json) are the robots' own
cost around their shift and each swap, from the cloud store; the learning figures come from
seeded closed-loop evaluations in simulation of the models the run produced, each shifted
episode against its paired control (nestor_demo.demo_report).
"""

import dataclasses
import datetime
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from nestor_bringup.cli_common import CliError, check_task, default_config_dir
from nestor_bringup.nodes import RobotSpec, robot_nodes
from nestor_bringup.process_group import ProcessGroup, describe_spools, log_tail, node_env, spool_left
from nestor_bringup.supervisor import StopSignals, Supervisor
from nestor_core.lifeline import die_with_parent, stop_process

from nestor_demo.cloud_process import Cloud, cloud_config, load_cloud_base, make_certs
from nestor_demo.stall_probe import PROBE_FILE as STALL_PROBE_FILE

# Shifts the demo fleet cycles through (robot i gets entry i % len); the time is set per run.
DEMO_SHIFTS = ["payload:4.0", "actuator_gain:0.5", "torque_bias:3.0", "damping:5.0"]


@dataclasses.dataclass
class DemoConfig:
    """What one demo run does.

    Attributes:
        duration_s: seconds the fleet runs (from the moment the robots start).
        robots: fleet size.
        task: task every robot runs.
        seed: base seed (robot i gets seed + i).
        shift_frac: each robot's dynamics shift at this fraction of the run.
        rounds: consolidation rounds aimed for (the cloud consolidates every duration/(rounds+1) s).
        run_dir: output directory; empty = runs/<timestamp>.
        config_dir: bringup config dir.
        cloud_config: base cloud config YAML; the demo derives its own from it. Empty =
            <config_dir>/cloud.yaml (so the demo runs from any directory).
        secure: mutual TLS between robots and cloud, and signed models (a fresh dev PKI under
            <run_dir>/certs); False runs insecure on loopback (the cloud logs it loudly).
        record: robot ids whose topics the bag recorder records; the others run without it,
            so recording.json compares their missed ticks in the same run.
    """

    duration_s: float = 150.0
    robots: int = 2
    task: str = "kuka_track"
    seed: int = 0
    shift_frac: float = 0.4
    rounds: int = 3
    run_dir: str = ""
    config_dir: str = ""
    cloud_config: str = ""
    secure: bool = True
    record: tuple[str, ...] = ()

    def validate(self) -> "DemoConfig":
        if self.duration_s < 30:
            raise CliError(
                f"argument --duration: at least 30 s are needed for a shift and two rounds, got {self.duration_s:g}"
            )
        if not 0.1 <= self.shift_frac <= 0.9:
            raise CliError(f"argument --shift-frac: must be in [0.1, 0.9], got {self.shift_frac}")
        if self.rounds < 1:
            raise CliError(f"argument --rounds: must be >= 1, got {self.rounds}")
        unknown = sorted(set(self.record) - {f"robot{i}" for i in range(self.robots)})
        if unknown:
            raise CliError(f"argument --record: no robot {', '.join(unknown)} in a fleet of {self.robots}")
        return self


def _prepare_run_dir(config: DemoConfig) -> Path:
    run_dir = Path(config.run_dir or os.path.join("runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S")))
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir


def _point_latest(run_dir: Path) -> None:
    """runs/latest -> this run; called only once the run completed (report written)."""
    latest = run_dir.parent / "latest"
    if latest.is_symlink() or not latest.exists():
        tmp = run_dir.parent / f".latest.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run_dir.name)
        os.replace(tmp, latest)  # atomic: a reader sees the old run or the new one


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class Progress:
    """Live table on a terminal; a plain line every 10 s otherwise (CI logs)."""

    def __init__(self, config: DemoConfig):
        self.tty = sys.stdout.isatty()
        self.config = config
        self._last_line = 0.0
        self._live = None
        if self.tty:
            from rich.live import Live

            self._live = Live(refresh_per_second=2)
            self._live.start()

    def update(self, elapsed: float, status, robots: dict, machine: dict | None = None) -> None:
        rows = []
        by_id = {r.robot_id: r for r in status.robots} if status else {}
        for robot_id, stats in robots.items():
            cloud = by_id.get(robot_id)
            rows.append(
                (
                    robot_id,
                    str(stats.get("model_version", "-")),
                    str(stats.get("swaps", 0)),
                    str(stats.get("ticks", 0)),
                    str(stats.get("missed_ticks", 0)),
                    str(cloud.transitions if cloud else 0),
                    f"{cloud.recent_cost:.4f}" if cloud else "-",
                )
            )
        versions = [m.version for m in status.models] if status else []
        stored, rounds = (status.transitions_stored, status.consolidation_rounds) if status else (0, 0)
        head = (
            f"nestor demo  {elapsed:5.0f}/{self.config.duration_s:.0f} s  "
            f"stored={stored}  rounds={rounds}  versions={versions}"
        )
        if machine:  # the stall probe's baseline: this machine's own stalls and hypervisor steal
            steal = machine.get("steal_fraction")
            head += f"  machine stalls={machine.get('missed_ticks', 0)}"
            head += f" steal={100 * steal:.2f}%" if steal is not None else ""
        if self._live is not None:
            from rich.table import Table

            table = Table(title=head)
            for col in ("robot", "model", "swaps", "ticks", "missed", "stored", "recent cost"):
                table.add_column(col)
            for row in rows:
                table.add_row(*row)
            self._live.update(table)
        elif time.monotonic() - self._last_line >= 10.0:
            self._last_line = time.monotonic()
            detail = "; ".join(f"{r[0]} v{r[1]} swaps={r[2]} ticks={r[3]} missed={r[4]} cost={r[6]}" for r in rows)
            print(f"{head} | {detail}", flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()


def run_demo(config: DemoConfig, json_out=None) -> int:
    """Run the fleet, then write the report; returns the exit code.

    With `json_out` (a text stream) the whole final summary goes there as one JSON document.
    """
    config = config.validate()
    config_dir = config.config_dir or default_config_dir()
    task_file = os.path.abspath(os.path.join(config_dir, "tasks", f"{config.task}.yaml"))
    if not os.path.isfile(task_file):
        raise CliError(f"argument --task: no task file {task_file}")
    check_task(task_file, [], "--task")
    if config.run_dir and os.path.exists(config.run_dir):
        raise CliError(f"argument --run-dir: {config.run_dir} already exists (a run never overwrites another)")
    base = load_cloud_base(config.cloud_config or os.path.join(config_dir, "cloud.yaml"), task_file)
    run_dir = _prepare_run_dir(config)
    env = node_env()
    env.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 101)))
    shift_at = round(config.duration_s * config.shift_frac, 1)
    specs = [
        RobotSpec(
            robot_id=f"robot{i}",
            task=config.task,
            task_file=task_file,
            run_dir=str(run_dir),
            seed=config.seed + i,
            shifts=[f"{DEMO_SHIFTS[i % len(DEMO_SHIFTS)]}@{shift_at:g}"],
            record=f"robot{i}" in config.record,
        )
        for i in range(config.robots)
    ]
    print(f"nestor demo: run dir {run_dir} (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, discovery LOCALHOST)", flush=True)
    certs = make_certs(run_dir, config.robots, env) if config.secure else None
    for spec in specs:
        spec.certs_dir = str(certs) if certs else ""
    print(f"transport: {'mutual TLS, signed models (' + str(certs) + ')' if certs else 'INSECURE loopback'}")
    period_s = config.duration_s / (config.rounds + 1)
    config_path = cloud_config(base, run_dir, task_file, certs, seed=config.seed, period_s=period_s)
    cloud = Cloud(config_path, run_dir, env, certs)
    group = ProcessGroup(str(run_dir), env)
    progress = None
    probe = None
    code = 0
    started = time.monotonic()
    signals = StopSignals(group).__enter__()  # SIGTERM and SIGHUP stop the demo as Ctrl-C does
    try:
        # The first run on a machine identifies each task's version-1 model in simulation (about a
        # minute per arm on this 2-core VM, then cached): allow for it.
        address = cloud.wait_ready(timeout_s=900.0)
        print(f"cloud brain serving on {address}; starting {config.robots} robots", flush=True)
        for spec in specs:
            spec.cloud_address = address
            group.start_robot(spec.robot_id, robot_nodes(spec, config_dir))
        probe = _start_stall_probe(run_dir, config_dir, env)
        supervisor = Supervisor(group)  # restarts a dead network-side node; a control-path death fails the run
        started = time.monotonic()
        progress = Progress(config)
        while time.monotonic() - started < config.duration_s:
            if supervisor.poll() or cloud.popen.poll() is not None:
                if cloud.popen.poll() is not None:
                    print(f"nestor demo: error: cloud brain died:\n{log_tail(cloud.log_path)}", file=sys.stderr)
                code = 1
                break
            robots = {s.robot_id: _read_json(Path(s.robot_dir) / "policy_stats.json") for s in specs}
            progress.update(time.monotonic() - started, cloud.status(), robots, _read_json(run_dir / STALL_PROBE_FILE))
            time.sleep(1.0)
    except KeyboardInterrupt:
        code = 130
    finally:
        signals.stopping = True
        if progress is not None:
            progress.close()
        elapsed = time.monotonic() - started
        _stop_fleet(group, specs, probe)
        final_status = cloud.status()
        cloud_code = cloud.stop()
        signals.__exit__()
        print(f"fleet and cloud stopped (cloud exit {cloud_code}); evaluating", flush=True)
    if code not in (0, 130):
        return code
    from nestor_demo.exports import export_robots

    for robot_id, formats in export_robots(run_dir, {s.robot_id: s.robot_dir for s in specs}, env).items():
        print(
            f"export {robot_id}: "
            + "; ".join(r.get("path") or f"{f} failed: {r['error']}" for f, r in formats.items()),
            flush=True,
        )
    if config.record:
        from nestor_demo.recording import summarize

        rec = summarize(run_dir, {s.robot_id: s.robot_dir for s in specs}, set(config.record))
        print(
            "recording: missed ticks per 1000 ticks "
            + ", ".join(
                f"{k} {rec[k]['missed_per_1k_ticks']} ({rec[k]['missed_ticks']}/{rec[k]['ticks']})"
                for k in ("recording", "not_recording")
            ),
            flush=True,
        )
    from nestor_demo.demo_report import write_report

    summary = write_report(run_dir, specs, config, elapsed, final_status, task_file, shift_at)
    print(json.dumps({k: summary[k] for k in _HEADLINE if k in summary}, indent=1), flush=True)
    print(f"report: {run_dir / 'report.md'}", flush=True)
    if code == 0:
        _point_latest(run_dir)
    if json_out is not None:
        print(json.dumps(summary, indent=1, sort_keys=True, default=str), file=json_out, flush=True)
    return code


_HEADLINE = (
    "transitions_uploaded",
    "transitions_stored",
    "model_versions_pushed",
    "swaps",
    "missed_ticks",
    "recovery_ticks_fast",
    "recovery_ticks_frozen",
    "recovery_ticks_fast_old_censored",
    "recovery_ticks_frozen_old_censored",
    "cost_initial_model",
    "cost_consolidated_model",
    "cost_initial_model_deployed",
    "cost_consolidated_model_deployed",
    "live",
)


def _start_stall_probe(run_dir: Path, config_dir: str, env: dict) -> subprocess.Popen:
    """The same-run machine baseline (nestor_demo.stall_probe) at the policy's rate and priority."""
    with open(os.path.join(config_dir, "robot", "policy.yaml")) as f:
        params = (yaml.safe_load(f) or {}).get("/**/policy", {}).get("ros__parameters", {})
    argv = [
        sys.executable,
        "-m",
        "nestor_demo.stall_probe",
        "--out",
        str(run_dir / STALL_PROBE_FILE),
        "--rate",
        str(float(params.get("control_rate_hz", 100.0))),
        "--priority",
        str(int(params.get("sched_priority", 0))),
    ]
    log = open(run_dir / "stall_probe.log", "w")
    with log:
        return subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )


def _stop_fleet(group: ProcessGroup, specs: list[RobotSpec], probe: subprocess.Popen | None = None) -> None:
    """Stop control first (the policy flushes to its spool), then the rest.

    Each uplink drains its spool to the cloud (up to its drain_timeout_s) before it exits.
    """
    # The policy first (it flushes its recorder), then the sim: a sim stopped first would leave
    # the still-running policy without joint states, a gap it would rightly count as missed.
    group.stop_nodes({"policy"})
    if probe is not None:  # the baseline covers the same window as the control loops
        stop_process(probe, signal.SIGTERM, timeout_s=10)
    group.stop()
    left = spool_left(str(group.run_dir), [s.robot_id for s in specs])
    stream = sys.stderr if any(left.values()) else sys.stdout
    print(f"nestor demo: {describe_spools(left)}", file=stream, flush=True)
