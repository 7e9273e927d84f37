"""docker-compose.yml as the contract tests read it: its services, the commands they run, their Dockerfiles."""

from __future__ import annotations

import pathlib
import shlex

import yaml
from compose_pki import CERTS
from dockerfiles import entrypoint_command, parse_dockerfile

REPO = pathlib.Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SCHEMA_FILE = REPO / "tests/data/compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
CLOUD = "cloud_brain"
ROBOT_PACKAGES = {"nestor_core", "nestor_robot", "nestor_bringup", "nestor_sim"}


def load_compose() -> dict:
    # PyYAML resolves the `<<: *robot` merge keys the way Compose does.
    return yaml.safe_load(COMPOSE_FILE.read_text())


SCALE = "scale"  # the profile of PostgreSQL, the cloud replicas and the Ray head


def robot_services(compose: dict) -> dict[str, dict]:
    """Services of the robot image (the x-robot extension's), whatever their Dockerfile path."""
    image = compose.get("x-robot", {}).get("image", "nestor-robot:dev")
    return {name: svc for name, svc in compose["services"].items() if svc.get("image") == image}


def built_services(compose: dict) -> dict[str, dict]:
    """Services built from a Dockerfile of the repo (the others run a pinned upstream image)."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def cloud_services(compose: dict) -> dict[str, dict]:
    """Services that run `nestor-cloud serve`: cloud_brain and the replicas of the scale profile."""
    out = {}
    for name, svc in built_services(compose).items():
        if name == CERTS or "entrypoint" in svc or name in robot_services(compose):
            continue
        command = svc.get("command") or []
        if command and command[0] == "serve":
            out[name] = svc
    return out


def dockerfile_of(service: dict) -> pathlib.Path:
    build = service["build"]
    return REPO / build.get("context", ".") / build.get("dockerfile", "Dockerfile")


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and not name.startswith("#"):
            pins[name.lower()] = version
    return pins


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def cloud_command(compose: dict, name: str = CLOUD) -> list[str]:
    """argv a cloud container runs: ENTRYPOINT + (compose command, else CMD)."""
    service = compose["services"][name]
    instructions = parse_dockerfile(dockerfile_of(service))
    command = service.get("command")
    if command is None:
        cmd = [i for i in instructions if i.keyword == "CMD"]
        command = cmd[-1].exec_form() if cmd else []
    elif isinstance(command, str):
        command = shlex.split(command)
    return entrypoint_command(instructions) + list(command)


def cloud_listen_port(compose: dict, name: str = CLOUD) -> int:
    argv = cloud_command(compose, name)
    return host_port(argv[argv.index("--address") + 1])[1]


def needs_dockerfiles(check):
    """Checks that read the Dockerfiles report a missing one (check_builds names it) instead of crashing."""

    def wrapped(compose: dict) -> list[str]:
        missing = [n for n, svc in built_services(compose).items() if not dockerfile_of(svc).is_file()]
        if missing:
            return [f"{check.__name__}: services {missing} have no Dockerfile"]
        return check(compose)

    wrapped.__name__ = check.__name__
    return wrapped
