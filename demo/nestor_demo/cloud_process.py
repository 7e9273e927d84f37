"""The demo's cloud brain: its config derived from the base one, its dev PKI, its child process."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import yaml
from nestor_bringup.cli_common import CliError
from nestor_bringup.process_group import log_tail
from nestor_core import nestor_pb2, nestor_pb2_grpc
from nestor_core.lifeline import die_with_parent, stop_process
from nestor_core.tls import identity_files


def make_certs(run_dir: Path, robots: int, env: dict) -> Path:
    """A fresh dev CA, server/robot/admin certificates and the model-signing key for this run."""
    certs = run_dir / "certs"
    script = Path(sys.executable).parent / "nestor-cloud"
    done = subprocess.run(
        [str(script), "certs", "--out", str(certs), "--robots", str(robots)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"nestor-cloud certs failed:\n{done.stdout}{done.stderr}")
    return certs


def load_cloud_base(path: str, task_file: str) -> dict:
    """The base cloud config, checked as the cloud will check it, before anything is created or started.

    Raises:
        CliError: naming --cloud-config, the file, the field and the problem.
    """
    from cloud_brain.config import ConfigError, config_from_dict, read_yaml_mapping

    try:
        base = read_yaml_mapping(path, "argument --cloud-config")
    except ConfigError as err:
        raise CliError(str(err)) from None
    # The fields the demo sets itself are checked with its own values (TLS comes from the run's PKI).
    probe = {**base, "address": "127.0.0.1:0", "db_path": "probe.db", "task_files": [task_file], "tls": {}}
    probe.pop("signing_key", None)
    try:
        config_from_dict(probe)
    except ConfigError as err:
        raise CliError(f"argument --cloud-config: {path}: {err}") from None
    return base


def cloud_config(base: dict, run_dir: Path, task_file: str, certs: Path | None, *, seed: int, period_s: float) -> Path:
    """The run's own cloud config: loopback, ephemeral port, files under the run, a timed schedule.

    Args:
        base: the base config (`load_cloud_base`).
        run_dir: the demo's run dir; the config, the store and the models go under its cloud/.
        task_file: the one task the cloud serves.
        certs: the run's dev PKI (`make_certs`), or None for an insecure loopback run.
        seed: the cloud's seed.
        period_s: seconds between two consolidation rounds.
    """
    base = dict(base)
    base.update(
        address="127.0.0.1:0",
        db_path=str(run_dir / "cloud" / "nestor.db"),
        model_dir=str(run_dir / "cloud" / "models"),
        task_files=[task_file],
        seed=seed,
        tensorboard_dir=str(run_dir / "tensorboard"),
    )
    if certs is not None:
        base["tls"] = {
            "cert": str(certs / "server.pem"),
            "key": str(certs / "server.key"),
            "client_ca": str(certs / "ca.pem"),
        }
        base["signing_key"] = str(certs / "model_signing.pem")
    base["schedule"] = {
        **(base.get("schedule") or {}),
        "enabled": True,
        "every_transitions": 10**9,
        "every_seconds": period_s,
        "min_transitions": 1000,
        "poll_seconds": 1.0,
        "failure_backoff_seconds": 5.0,
    }
    path = run_dir / "cloud" / "cloud.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


class Cloud:
    """The cloud brain as a child process (its own session, so Ctrl-C reaches only the demo)."""

    def __init__(self, config_path: Path, run_dir: Path, env: dict, certs: Path | None):
        self.certs = certs
        self.ready_file = run_dir / "cloud" / "ready.json"
        self.log_path = run_dir / "cloud" / "cloud.log"
        script = Path(sys.executable).parent / "nestor-cloud"
        argv = [str(script), "serve", "--config", str(config_path), "--ready-file", str(self.ready_file)]
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        self.address = ""

    def wait_ready(self, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"cloud brain exited with {self.popen.returncode}:\n{log_tail(self.log_path)}")
            if self.ready_file.exists():
                self.address = json.loads(self.ready_file.read_text())["address"]
                return self.address
            time.sleep(0.2)
        raise RuntimeError(f"cloud brain not ready after {timeout_s:g} s:\n{log_tail(self.log_path)}")

    def channel(self) -> grpc.Channel:
        """A channel to the cloud, as the admin when TLS is on."""
        if self.certs is None:
            return grpc.insecure_channel(self.address)
        return grpc.secure_channel(self.address, identity_files(self.certs, "admin").channel_credentials())

    def status(self, timeout_s: float = 3.0) -> nestor_pb2.FleetStatus | None:
        try:
            with self.channel() as channel:
                return nestor_pb2_grpc.FleetStub(channel).GetStatus(nestor_pb2.StatusRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return None

    def stop(self, timeout_s: float = 20.0) -> int:
        return stop_process(self.popen, signal.SIGTERM, timeout_s, kill_timeout_s=None)
