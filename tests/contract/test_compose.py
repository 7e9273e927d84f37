"""docker-compose.yml and the two Dockerfiles, checked against the Compose schema and the repo.

No Docker engine runs here, so nothing is built: the file is validated against the official Compose
specification JSON schema, and every command, path, launch argument and port it names is checked
against the repository.

Schema provenance: tests/data/compose-spec.json is `check_jsonschema/builtin_schemas/vendor/compose-spec.json`
from the PyPI package check-jsonschema 0.39.0 (wheel check_jsonschema-0.39.0-py3-none-any.whl, obtained with
`pip download check-jsonschema==0.39.0 --no-deps`), which vendors compose-spec/compose-spec
`schema/compose-spec.json` (branch master; JSON Schema draft 2020-12; Apache-2.0). It is newer than
`compose/config/compose_spec.json` of docker-compose 1.29.2 (draft-07). To update it, replace the file and
SCHEMA_SHA256 together.

The semantic checks are functions that return a list of problems; each one is run on the real file
(no problems) and on a deliberately broken copy (the expected problem), so every check can fail.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import pathlib
import re
import shlex
import subprocess
import sys
import tomllib
from concurrent import futures

import grpc
import jsonschema
import pytest
import yaml
from cloud_brain.config import is_loopback_host
from compose_pki import CERTS, materialized, mount_of, service_argv
from dockerfiles import (
    copied_from,
    copy_sources,
    declared_launch_arguments,
    entrypoint_command,
    launch_arguments,
    parse_dockerfile,
    workdir,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

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


# --- checks: each returns the list of problems it finds ------------------------------------------


def check_schema(compose: dict) -> list[str]:
    schema = json.loads(SCHEMA_FILE.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    problems = [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(compose)
    ]
    if "version" in compose:
        problems.append("version: obsolete in the Compose specification, remove it")
    return problems


def check_builds(compose: dict) -> list[str]:
    problems = []
    for name, service in compose["services"].items():
        if "build" not in service:
            image = str(service.get("image", ""))
            repo, _, tag = image.rpartition(":")
            if not repo or not tag or tag == "latest" or "/" in tag:
                problems.append(f"{name}: no build section and no pinned image (name:tag), got {image!r}")
            continue
        context = REPO / service["build"].get("context", ".")
        dockerfile = dockerfile_of(service)
        if not dockerfile.is_file():
            problems.append(f"{name}: dockerfile {dockerfile.relative_to(REPO)} does not exist")
            continue
        for source in copy_sources(parse_dockerfile(dockerfile)):
            if not (context / source).exists():
                problems.append(f"{name}: COPY source {source} missing from the build context")
    return problems


def check_robot_images(compose: dict) -> list[str]:
    """FROM ros:kilted, colcon build of the real packages, `ros2 launch` of a real launch file."""
    problems = []
    for name, service in robot_services(compose).items():
        instructions = parse_dockerfile(dockerfile_of(service))
        base = next(i.value for i in instructions if i.keyword == "FROM")
        if not base.startswith("ros:kilted"):
            problems.append(f"{name}: FROM {base}, expected ros:kilted-*")
        runs = " ".join(i.value for i in instructions if i.keyword == "RUN")
        colcon = re.search(r"colcon build --base-paths ((?:[\w./-]+ )+)--symlink-install", runs)
        if colcon is None:
            problems.append(f"{name}: no `colcon build --base-paths ... --symlink-install`")
        else:
            found = {
                re.search(r"<name>(.+?)</name>", p.read_text()).group(1)
                for base_path in colcon.group(1).split()
                for p in (REPO / base_path).glob("*/package.xml")
            }
            found |= {
                re.search(r"<name>(.+?)</name>", (REPO / b / "package.xml").read_text()).group(1)
                for b in colcon.group(1).split()
                if (REPO / b / "package.xml").is_file()
            }
            if missing := ROBOT_PACKAGES - found:
                problems.append(f"{name}: colcon base paths miss packages {sorted(missing)}")
        argv = entrypoint_command(instructions)
        if argv[:3] != ["ros2", "launch", "nestor_bringup"] or len(argv) != 4:
            problems.append(f"{name}: ENTRYPOINT runs {argv}, expected ros2 launch nestor_bringup <file>")
            continue
        launch_file = REPO / "launch" / argv[3]
        if not launch_file.is_file():
            problems.append(f"{name}: launch file launch/{argv[3]} does not exist")
            continue
        declared = declared_launch_arguments(launch_file)
        cmd = [i for i in instructions if i.keyword == "CMD"]
        for source, words in (("CMD", cmd[-1].exec_form() if cmd else []), ("command", service.get("command", []))):
            try:
                args = launch_arguments(words)
            except ValueError as err:
                problems.append(f"{name}: {source}: {err}")
                continue
            if undeclared := sorted(set(args) - declared):
                problems.append(f"{name}: {source}: {undeclared} not declared by launch/{argv[3]}")
    return problems


def check_robot_fleet(compose: dict) -> list[str]:
    """Ids, DDS isolation, start order and the cloud address of every robot service."""
    problems = []
    robots = robot_services(compose)
    if len(robots) < 2:
        problems.append(f"expected at least robot0 and robot1, got {sorted(robots)}")
    clouds = cloud_services(compose)
    binds = {}
    for cloud in clouds:
        argv = cloud_command(compose, cloud)
        binds[cloud] = host_port(argv[argv.index("--address") + 1])
    cloud_host, port = binds.get(CLOUD, ("", 0))
    domains: dict[str, str] = {}
    for name, service in robots.items():
        if not re.fullmatch(r"robot\d+", name):
            problems.append(f"{name}: robot services are named robot<N>")
        args = launch_arguments(service.get("command", []))
        if args.get("robot_id") != name:
            problems.append(f"{name}: robot_id:={args.get('robot_id')}, expected the service name")
        targets = [host_port(a) for a in args.get("cloud", ":0").split(",")]
        host, cloud_port = targets[0]
        for target_host, target_port in targets:
            listens = binds.get(target_host, (cloud_host, port))[1]
            if target_port != listens:
                problems.append(f"{name}: cloud:={args.get('cloud')}, but the cloud listens on port {listens}")
        robot_profiles = set(service.get("profiles", []))
        for target_host, _ in targets[1:] if len(targets) > 1 else []:
            if target_host not in clouds:
                problems.append(f"{name}: cloud:= lists {target_host}, which is no nestor-cloud serve service")
        for target_host, _ in targets:
            needed = set(compose["services"].get(target_host, {}).get("profiles", []))
            if needed - robot_profiles:
                problems.append(
                    f"{name}: runs without profile {sorted(needed)} but dials {target_host}, which needs it"
                )
        # A loopback-bound cloud is reachable only from its own network namespace; a robot in its own
        # namespace reaches the cloud by service name, which needs the cloud on a non-loopback address.
        shares_netns = service.get("network_mode") == f"service:{CLOUD}"
        if shares_netns and not is_loopback_host(host):
            problems.append(f"{name}: shares {CLOUD}'s network namespace, so cloud:= must be 127.0.0.1, got {host}")
        if not shares_netns and len(targets) == 1 and (host != CLOUD or is_loopback_host(cloud_host)):
            problems.append(
                f"{name}: in its own network namespace it needs cloud:={CLOUD}:<port> and a cloud not bound to "
                f"loopback (cloud:={args.get('cloud')}, cloud binds {cloud_host})"
            )
        env = service.get("environment", {})
        if not isinstance(env, dict):
            env = dict(e.split("=", 1) for e in env)
        if env.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
            problems.append(f"{name}: ROS_AUTOMATIC_DISCOVERY_RANGE must be LOCALHOST")
        domain = str(env.get("ROS_DOMAIN_ID", ""))
        if not domain.isdigit() or not 0 <= int(domain) <= 101:
            problems.append(f"{name}: ROS_DOMAIN_ID {domain!r} is not in 0..101")
        elif domain in domains.values():
            others = sorted(k for k, v in domains.items() if v == domain)
            problems.append(f"{name}: ROS_DOMAIN_ID {domain} also used by {others}")
        domains[name] = domain
        depends = service.get("depends_on", {})
        for target_host in dict.fromkeys(h for h, _ in targets if h in clouds or h == CLOUD):
            if not isinstance(depends, dict) or depends.get(target_host, {}).get("condition") != "service_healthy":
                problems.append(f"{name}: must depend on {target_host} with condition service_healthy")
    return problems


def check_cloud(compose: dict) -> list[str]:
    """`nestor-cloud serve` with a loadable config shipped in the image, state on a volume."""
    from cloud_brain.cli import _parser, certs_overrides
    from cloud_brain.config import ConfigError, load_config

    problems = []
    service = compose["services"][CLOUD]
    instructions = parse_dockerfile(dockerfile_of(service))
    base = next(i.value for i in instructions if i.keyword == "FROM")
    if base != "python:3.11-slim":
        problems.append(f"{CLOUD}: FROM {base}, expected python:3.11-slim")
    argv = cloud_command(compose)
    scripts = tomllib.loads((REPO / "cloud_brain/pyproject.toml").read_text())["project"]["scripts"]
    if not argv or argv[0] not in scripts:
        problems.append(f"{CLOUD}: runs {argv[:1]}, not a console script of cloud_brain ({sorted(scripts)})")
        return problems
    try:
        args = _parser().parse_args(argv[1:])
    except SystemExit:
        return [f"{CLOUD}: `{shlex.join(argv)}` is rejected by the nestor-cloud CLI"]
    if args.command != "serve":
        return [f"{CLOUD}: runs `{argv[0]} {args.command}`, expected serve"]
    cwd = pathlib.PurePosixPath(workdir(instructions))
    config_src = copied_from(instructions, str(cwd / args.config))
    if config_src is None or not (REPO / config_src).is_file():
        return [f"{CLOUD}: --config {args.config} is not a repo file copied into the image"]
    if pathlib.PurePosixPath(config_src).parts[0] != "config":
        problems.append(f"{CLOUD}: --config comes from {config_src}, expected the repo's config/")
    try:
        if args.certs:
            # The TLS files it names must be what the certs service really writes into that mount.
            with materialized(compose) as volumes:
                certs_dir = volumes.host_path(CLOUD, args.certs)
                config = load_config(
                    REPO / config_src, address=args.address, db_path=args.db, **certs_overrides(str(certs_dir))
                )
        else:
            config = load_config(REPO / config_src, address=args.address, db_path=args.db)
    except ConfigError as err:
        return problems + [f"{CLOUD}: {err}"]
    except ValueError as err:
        return problems + [f"{CLOUD}: --certs {args.certs}: {err}"]
    # Relative paths resolve against WORKDIR in the container, as against the repo root here.
    for task_file in config.task_files:
        src = copied_from(instructions, str(cwd / task_file))
        if src is None or not (REPO / src).is_file():
            problems.append(f"{CLOUD}: task file {task_file} is not in the image")
    mounts = [str(v).split(":")[1] if isinstance(v, str) else v["target"] for v in service.get("volumes", [])]
    for field in ("db_path", "model_dir"):
        path = cwd / getattr(config, field)
        if not any(pathlib.PurePosixPath(m) in path.parents for m in mounts):
            problems.append(f"{CLOUD}: {field} {path} is not on a volume ({mounts})")
    port = host_port(config.address)[1]
    if f"127.0.0.1:{port}" not in " ".join(service.get("healthcheck", {}).get("test", [])):
        problems.append(f"{CLOUD}: healthcheck does not probe 127.0.0.1:{port}")
    published = [str(p).rsplit(":", 1)[-1] for p in service.get("ports", [])]
    if published and str(port) not in published:
        problems.append(f"{CLOUD}: published container ports {published} miss the listen port {port}")
    if published and is_loopback_host(host_port(config.address)[0]):
        problems.append(f"{CLOUD}: publishes {published}, but a server bound to loopback is unreachable through them")
    # The image's own default command must start too (docker run without arguments).
    cmd = [i for i in instructions if i.keyword == "CMD"]
    default = cmd[-1].exec_form() if cmd else []
    try:
        d = _parser().parse_args(default)
        d_src = copied_from(instructions, str(cwd / d.config))
        load_config(REPO / (d_src or "missing"), address=d.address, db_path=d.db)
    except SystemExit:
        problems.append(f"{CLOUD}: image CMD {default} is rejected by the nestor-cloud CLI")
    except ConfigError as err:
        problems.append(f"{CLOUD}: image CMD {default}: {err}")
    return problems


def check_pins(compose: dict) -> list[str]:
    """Versions the Dockerfiles install come from requirements.txt."""
    problems = []
    pins = requirement_pins()
    for name, service in built_services(compose).items():
        text = " ".join(i.value for i in parse_dockerfile(dockerfile_of(service)) if i.keyword == "RUN")
        for pkg, version in re.findall(r"\b([A-Za-z][\w.-]*)==([\w.+-]+)", text):
            if pkg.lower() in pins and pins[pkg.lower()] != version and pkg.lower() not in ("setuptools", "wheel"):
                problems.append(f"{name}: installs {pkg}=={version}, requirements.txt pins {pins[pkg.lower()]}")
            if pkg.lower() == "torch" and pkg.lower() not in pins:
                problems.append(f"{name}: installs torch, which requirements.txt does not pin")
        # `grep -E '^(a|b)=='` selections must name packages requirements.txt pins, or pip silently skips them.
        for group in re.findall(r"\^\(([\w|.-]+)\)==", text):
            if missing := [p for p in group.split("|") if p.lower() not in pins]:
                problems.append(f"{name}: selects {missing} from requirements.txt, which does not pin them")
    return problems


def check_tls(compose: dict) -> list[str]:
    """Mutual TLS end to end: one certs run, each container mounting only its own bundle, read-only."""
    from cloud_brain.cli import _parser

    problems = []
    services = compose["services"]
    if CERTS not in services:
        return [f"no {CERTS} service writes the PKI"]
    certs_args = _parser().parse_args(service_argv(compose, CERTS)[1:])
    if certs_args.command != "certs":
        return [f"{CERTS}: runs `nestor-cloud {certs_args.command}`, expected certs"]
    for cloud in cloud_services(compose) or [CLOUD]:
        if cloud not in certs_args.server_host:
            problems.append(f"{CERTS}: the server certificate must name {cloud} (--server-host {cloud})")
    if not certs_args.bundles:
        problems.append(f"{CERTS}: without --bundles every container would mount every private key")
    issued = {f"{certs_args.robot_prefix}{k}" for k in range(certs_args.robots)}
    if missing := sorted(set(robot_services(compose)) - issued):
        problems.append(f"{CERTS}: --robots {certs_args.robots} issues no certificate for {missing}")
    with contextlib.ExitStack() as stack:
        try:  # one run of the certs command serves every bundle check below
            volumes = stack.enter_context(materialized(compose))
        except ValueError as err:
            volumes = None
            problems.append(str(err))
        _check_tls_mounts(compose, certs_args, volumes, problems)
    return problems


def _check_tls_mounts(compose: dict, certs_args, volumes, problems: list[str]) -> None:
    """check_tls, per container: mount, subpath, read_only, and what the certs run put there."""
    from cloud_brain.cli import _parser

    services = compose["services"]

    def check_bundle(name: str, path: str, bundle: str, files: tuple[str, ...]) -> None:
        mount = mount_of(services[name], path)
        if mount is None:
            problems.append(f"{name}: {path} is not mounted")
            return
        if mount["subpath"] != bundle or pathlib.PurePosixPath(mount["target"]) != pathlib.PurePosixPath(path):
            got = mount["subpath"] or "(whole volume)"
            problems.append(f"{name}: {path} must be the volume subpath {bundle}, got {got}")
        if not mount["read_only"]:
            problems.append(f"{name}: the certificate mount {path} must be read_only")
        certs_mount = mount_of(services[CERTS], certs_args.out)
        if certs_mount is None or certs_mount["source"] != mount["source"]:
            problems.append(f"{name}: {path} comes from volume {mount['source']!r}, not the one {CERTS} writes")
            return
        if volumes is None:
            return
        try:
            host = volumes.host_path(name, path)
        except ValueError as err:
            problems.append(f"{name}: {err}")
            return
        if absent := [f for f in files if not (host / f).is_file()]:
            problems.append(f"{name}: {path} lacks {absent} after the {CERTS} service ran")
        if (host / "ca.key").exists():
            problems.append(f"{name}: {path} holds the CA key")

    for cloud in cloud_services(compose) or [CLOUD]:
        cloud_args = _parser().parse_args(service_argv(compose, cloud)[1:])
        if not cloud_args.certs:
            problems.append(f"{cloud}: serve without --certs (mutual TLS)")
        else:
            cloud_files = ("server.pem", "server.key", "ca.pem", "model_signing.pem")
            check_bundle(cloud, cloud_args.certs, "bundles/cloud", cloud_files)
    depends = services[CLOUD].get("depends_on", {})
    if not isinstance(depends, dict) or depends.get(CERTS, {}).get("condition") != "service_completed_successfully":
        problems.append(f"{CLOUD}: must depend on {CERTS} with condition service_completed_successfully")
    for name, service in robot_services(compose).items():
        certs_dir = launch_arguments(service.get("command", [])).get("certs_dir", "")
        if not certs_dir:
            problems.append(f"{name}: no certs_dir:= launch argument (robot would dial insecurely)")
            continue
        robot_files = ("ca.pem", f"{name}.pem", f"{name}.key", "model_signing.pub.pem")
        check_bundle(name, certs_dir, f"bundles/{name}", robot_files)


def _needs_dockerfiles(check):
    """Checks that read the Dockerfiles report a missing one (check_builds names it) instead of crashing."""

    def wrapped(compose: dict) -> list[str]:
        missing = [n for n, svc in built_services(compose).items() if not dockerfile_of(svc).is_file()]
        if missing:
            return [f"{check.__name__}: services {missing} have no Dockerfile"]
        return check(compose)

    wrapped.__name__ = check.__name__
    return wrapped


check_robot_images = _needs_dockerfiles(check_robot_images)
check_robot_fleet = _needs_dockerfiles(check_robot_fleet)
check_cloud = _needs_dockerfiles(check_cloud)
check_pins = _needs_dockerfiles(check_pins)


def check_scale_profile(compose: dict) -> list[str]:
    """Profile scale: PostgreSQL, replicas of cloud_brain on it with rounds on the Ray head."""
    from cloud_brain.cli import _parser, scale_overrides
    from cloud_brain.config import ConfigError, load_config

    services = compose["services"]
    problems = []
    scale = {n for n, s in services.items() if SCALE in s.get("profiles", [])}
    for name in ("postgres", "ray_head"):
        if name not in scale:
            problems.append(f"{name}: missing from profile {SCALE}")
    replicas = sorted(n for n in cloud_services(compose) if n != CLOUD)
    if len(replicas) < 2:
        problems.append(f"profile {SCALE}: expected two cloud replicas, got {replicas}")
    if problems:
        return problems
    pg = services["postgres"]
    pg_env = pg.get("environment", {})
    if mount_of(pg, "/var/lib/postgresql/data") is None:
        problems.append("postgres: /var/lib/postgresql/data is not on a volume")
    if "pg_isready" not in " ".join(pg.get("healthcheck", {}).get("test", [])):
        problems.append("postgres: healthcheck does not run pg_isready")
    head = services["ray_head"]
    head_argv = [*head.get("entrypoint", []), *head.get("command", [])]
    if head_argv[:3] != ["ray", "start", "--head"] or "--block" not in head_argv:
        problems.append(f"ray_head: runs {head_argv[:3]}, expected ray start --head --block")
    if head_argv[head_argv.index("--include-dashboard") + 1 if "--include-dashboard" in head_argv else 0] != "false":
        problems.append("ray_head: the dashboard must be off (--include-dashboard false)")
    if "--disable-usage-stats" not in head_argv or head.get("environment", {}).get("RAY_USAGE_STATS_ENABLED") != "0":
        problems.append("ray_head: usage reporting must be off (--disable-usage-stats, RAY_USAGE_STATS_ENABLED=0)")
    client_port = (
        head_argv[head_argv.index("--ray-client-server-port") + 1]
        if "--ray-client-server-port" in head_argv
        else "10001"
    )
    for name in replicas:
        svc = services[name]
        if svc.get("image") != services[CLOUD].get("image"):
            problems.append(f"{name}: image {svc.get('image')}, expected {CLOUD}'s")
        if SCALE not in svc.get("profiles", []):
            problems.append(f"{name}: not in profile {SCALE}")
        args = _parser().parse_args(cloud_command(compose, name)[1:])
        env = svc.get("environment", {})
        dsn = args.store_dsn or ""
        if dsn.startswith("env:"):
            dsn = env.get(dsn[4:], "")
        expected_dsn = (
            f"postgresql://{pg_env.get('POSTGRES_USER')}:{pg_env.get('POSTGRES_PASSWORD')}@postgres:5432/"
            f"{pg_env.get('POSTGRES_DB')}"
        )
        if dsn != expected_dsn:
            problems.append(f"{name}: store DSN {dsn!r} is not the postgres service's database")
        if args.ray_address != f"ray://ray_head:{client_port}":
            problems.append(f"{name}: --ray-address {args.ray_address!r}, expected ray://ray_head:{client_port}")
        for dep in ("postgres", "ray_head", CERTS):
            condition = svc.get("depends_on", {}).get(dep, {}).get("condition")
            wanted = "service_completed_successfully" if dep == CERTS else "service_healthy"
            if condition != wanted:
                problems.append(f"{name}: must depend on {dep} with condition {wanted}")
        try:
            # TLS comes from --certs (check_tls checks that bundle); here: the store and Ray overrides.
            config = load_config(
                REPO / "config/cloud.yaml",
                address=f"127.0.0.1:{host_port(args.address)[1]}",
                **{
                    k: {**v, "dsn": "postgresql://u@h:1/d"} if k == "store" else v
                    for k, v in scale_overrides(args.store_dsn, args.ray_address).items()
                },
            )
        except ConfigError as err:
            problems.append(f"{name}: {err}")
            continue
        if (config.store.backend, config.consolidation.backend) != ("postgres", "ray"):
            problems.append(f"{name}: store {config.store.backend}, consolidation {config.consolidation.backend}")
    return problems


CHECKS = [
    check_schema,
    check_builds,
    check_robot_images,
    check_robot_fleet,
    check_cloud,
    check_pins,
    check_tls,
    check_scale_profile,
]


# --- the real files ------------------------------------------------------------------------------


def test_schema_is_the_vendored_one():
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert schema["title"] == "Compose Specification"


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_compose_file(check):
    assert check(load_compose()) == []


def test_robots_share_the_x_robot_extension():
    source = COMPOSE_FILE.read_text()
    compose = load_compose()
    assert "x-robot" in compose
    for name in robot_services(compose):
        # The service body starts by merging the extension, so nothing is copied by hand.
        assert re.search(rf"^  {name}:\n    <<: \*robot$", source, re.M), name


# --- every check can fail ------------------------------------------------------------------------


def _set(compose: dict, path: str, value) -> None:
    *parents, leaf = path.split("/")
    node = compose
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    leaf = int(leaf) if isinstance(node, list) else leaf
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value


_DELETE = object()
BREAKAGES = [
    ("version key", "version", "3.9", check_schema, "version"),
    ("unknown service key", "services/robot0/dependson", ["cloud_brain"], check_schema, "dependson"),
    ("bad condition", "services/robot0/depends_on/cloud_brain/condition", "healthy", check_schema, "condition"),
    ("missing dockerfile", "services/robot1/build/dockerfile", "docker/nope.Dockerfile", check_builds, "nope"),
    (
        "undeclared arg",
        "services/robot0/command",
        ["robot_id:=robot0", "cloud_address:=127.0.0.1:50051"],
        check_robot_images,
        "cloud_address",
    ),
    (
        "wrong robot id",
        "services/robot1/command",
        ["robot_id:=robot0", "cloud:=127.0.0.1:50051"],
        check_robot_fleet,
        "robot_id",
    ),
    (
        "wrong cloud port",
        "services/robot1/command",
        ["robot_id:=robot1", "cloud:=127.0.0.1:50052"],
        check_robot_fleet,
        "listens on port",
    ),
    (
        "loopback cloud from own netns",
        "services/robot1/command",
        ["robot_id:=robot1", "cloud:=127.0.0.1:50051", "certs_dir:=/certs"],
        check_robot_fleet,
        "own network",
    ),
    (
        "shared netns, cloud by name",
        "services/robot0/network_mode",
        "service:cloud_brain",
        check_robot_fleet,
        "must be 127.0.0.1",
    ),
    (
        "insecure on 0.0.0.0",
        "services/cloud_brain/command",
        ["serve", "--config", "/app/config/cloud.yaml", "--address", "0.0.0.0:50051"],
        check_cloud,
        "tls",
    ),
    (
        "cloud without --certs",
        "services/cloud_brain/command",
        ["serve", "--config", "/app/config/cloud.yaml", "--address", "127.0.0.1:50051"],
        check_tls,
        "--certs",
    ),
    (
        "robot without certs_dir",
        "services/robot0/command",
        ["robot_id:=robot0", "cloud:=cloud_brain:50051"],
        check_tls,
        "certs_dir",
    ),
    (
        "robot mounts another's bundle",
        "services/robot1/volumes/1/volume/subpath",
        "bundles/robot0",
        check_tls,
        "bundles/robot1",
    ),
    ("whole PKI mounted", "services/robot1/volumes/1/volume", _DELETE, check_tls, "whole volume"),
    ("writable cert mount", "services/robot0/volumes/1/read_only", False, check_tls, "read_only"),
    (
        "server cert without service name",
        "services/certs/command",
        ["certs", "--out", "/pki", "--robots", "2", "--bundles"],
        check_tls,
        "--server-host",
    ),
    (
        "too few robot certs",
        "services/certs/command",
        ["certs", "--out", "/pki", "--robots", "1", "--server-host", "cloud_brain", "--bundles"],
        check_tls,
        "robot1",
    ),
    (
        "no bundles",
        "services/certs/command",
        ["certs", "--out", "/pki", "--robots", "2", "--server-host", "cloud_brain"],
        check_tls,
        "--bundles",
    ),
    ("cloud before certs", "services/cloud_brain/depends_on", _DELETE, check_tls, "service_completed_successfully"),
    (
        "cloud certs dir wrong",
        "services/cloud_brain/command",
        ["serve", "--config", "/app/config/cloud.yaml", "--address", "0.0.0.0:50051", "--certs", "/app/certs"],
        check_tls,
        "not mounted",
    ),
    ("publish wrong port", "services/cloud_brain/ports", ["50052:50052"], check_cloud, "miss the listen port"),
    ("shared domain", "services/robot1/environment/ROS_DOMAIN_ID", "11", check_robot_fleet, "also used"),
    ("no health gate", "services/robot0/depends_on", [CLOUD], check_robot_fleet, "service_healthy"),
    (
        "missing config",
        "services/cloud_brain/command",
        ["serve", "--config", "/app/config/nope.yaml"],
        check_cloud,
        "--config",
    ),
    (
        "bad cli flag",
        "services/cloud_brain/command",
        ["serve", "--confg", "/app/config/cloud.yaml"],
        check_cloud,
        "rejected",
    ),
    ("no data volume", "services/cloud_brain/volumes/0", _DELETE, check_cloud, "db_path"),
    ("bad address", "services/cloud_brain/command", ["serve", "--address", "0.0.0.0"], check_cloud, "address"),
    ("upstream image unpinned", "services/postgres/image", "postgres:latest", check_builds, "pinned image"),
    (
        "replica on the wrong database",
        "services/cloud_replica_b/environment/NESTOR_STORE_DSN",
        "postgresql://nestor:x@elsewhere:5432/nestor",
        check_scale_profile,
        "not the postgres service",
    ),
    (
        "replica without ray",
        "services/cloud_replica_a/command",
        [
            "serve",
            "--config",
            "/app/config/cloud.yaml",
            "--address",
            "0.0.0.0:50051",
            "--certs",
            "/certs",
            "--store-dsn",
            "env:NESTOR_STORE_DSN",
        ],
        check_scale_profile,
        "--ray-address",
    ),
    (
        "ray dashboard on",
        "services/ray_head/command",
        ["start", "--head", "--block", "--disable-usage-stats"],
        check_scale_profile,
        "dashboard",
    ),
    (
        "replica before postgres",
        "services/cloud_replica_a/depends_on/postgres",
        _DELETE,
        check_scale_profile,
        "depend on postgres",
    ),
    (
        "replica cert missing",
        "services/certs/command",
        [
            "certs",
            "--out",
            "/pki",
            "--robots",
            "4",
            "--server-host",
            "cloud_brain",
            "--server-host",
            "cloud_replica_a",
            "--bundles",
        ],
        check_tls,
        "cloud_replica_b",
    ),
    (
        "replica robot wrong port",
        "services/robot2/command",
        ["robot_id:=robot2", "cloud:=cloud_replica_a:50051,cloud_replica_b:50052", "certs_dir:=/certs"],
        check_robot_fleet,
        "listens on port",
    ),
    (
        "default robot dials a profile service",
        "services/robot0/command",
        ["robot_id:=robot0", "cloud:=cloud_brain:50051,cloud_replica_a:50051", "certs_dir:=/certs"],
        check_robot_fleet,
        "needs it",
    ),
]


@pytest.mark.parametrize(
    ("path", "value", "check", "expected"), [b[1:] for b in BREAKAGES], ids=[b[0] for b in BREAKAGES]
)
def test_broken_compose_is_caught(path, value, check, expected):
    compose = copy.deepcopy(load_compose())
    _set(compose, path, value)
    problems = check(compose)
    assert any(expected in p for p in problems), problems


def test_broken_dockerfiles_are_caught(tmp_path):
    compose = load_compose()
    robot = parse_dockerfile(dockerfile_of(compose["services"]["robot0"]))
    assert entrypoint_command(robot) == ["ros2", "launch", "nestor_bringup", "sim_robot.launch.py"]
    text = dockerfile_of(compose["services"]["robot0"]).read_text()
    for n, (old, new, expected) in enumerate(
        [
            ("FROM ros:kilted-ros-base", "FROM ros:jazzy-ros-base", "FROM"),
            ("sim_robot.launch.py", "sim_robot_x.launch.py", "does not exist"),
            ("--base-paths ros2_ws/src sim", "--base-paths ros2_ws/src", "nestor_sim"),
            ("onnxruntime|onnx|", "onnxruntime|onnx|onnxruntimeX|", "onnxruntimeX"),
        ]
    ):
        broken = tmp_path / f"robot-{n}.Dockerfile"
        broken.write_text(text.replace(old, new))
        mutated = copy.deepcopy(compose)
        for svc in robot_services(mutated).values():
            svc["build"]["dockerfile"] = str(broken)  # absolute: REPO / "." / abs == abs
        problems = check_robot_images(mutated) + check_pins(mutated)
        assert any(expected in p for p in problems), (old, problems)


# --- the healthcheck and the robots really speak mutual TLS with what the certs service wrote ------


def _health_server(volumes, servicer):
    """A gRPC health server with the cloud's bundle: server cert, client certs required."""
    compose = volumes.compose
    from cloud_brain.cli import _parser

    certs_dir = volumes.host_path(CLOUD, _parser().parse_args(service_argv(compose, CLOUD)[1:]).certs)
    credentials = grpc.ssl_server_credentials(
        [((certs_dir / "server.key").read_bytes(), (certs_dir / "server.pem").read_bytes())],
        root_certificates=(certs_dir / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


def test_healthcheck_probe():
    """The compose healthcheck, run as the container would (its env, its files), against real mTLS."""
    compose = load_compose()
    service = compose["services"][CLOUD]
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "nestor-cloud", test
    port = cloud_listen_port(compose)
    with materialized(compose) as volumes:
        env = {k: str(v) for k, v in service["environment"].items()}
        for key in ("NESTOR_TLS_CA", "NESTOR_TLS_CERT", "NESTOR_TLS_KEY"):
            env[key] = str(volumes.host_path(CLOUD, env[key]))
        servicer = health.HealthServicer()
        server, bound = _health_server(volumes, servicer)
        argv = [str(pathlib.Path(sys.executable).parent / "nestor-cloud")] + [
            w.replace(f"127.0.0.1:{port}", f"127.0.0.1:{bound}") for w in test[2:]
        ]

        def run(extra_env=None) -> int:
            full_env = {"PATH": "/usr/bin:/bin", **env, **(extra_env or {})}
            return subprocess.run(argv, env=full_env, capture_output=True, timeout=60).returncode

        try:
            assert f"127.0.0.1:{bound}" in argv
            servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            assert run() == 0
            servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            assert run() == 1
            servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            # Without the admin certificate the TLS handshake fails: unhealthy, not healthy.
            assert run({"NESTOR_TLS_CERT": "", "NESTOR_TLS_KEY": "", "NESTOR_TLS_CA": ""}) != 0
        finally:
            server.stop(0)
        assert run() == 2  # nothing listening


def test_robot_reaches_the_cloud_by_service_name():
    """robot0's bundle verifies the server as `cloud_brain` (the name it dials); another name fails."""
    compose = load_compose()
    with materialized(compose) as volumes:
        servicer = health.HealthServicer()
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        server, port = _health_server(volumes, servicer)
        try:
            host, _ = host_port(launch_arguments(compose["services"]["robot0"]["command"])["cloud"])
            assert host == CLOUD
            robot = volumes.host_path("robot0", "/certs")
            credentials = grpc.ssl_channel_credentials(
                (robot / "ca.pem").read_bytes(),
                (robot / "robot0.key").read_bytes(),
                (robot / "robot0.pem").read_bytes(),
            )

            def check(name: str):
                options = [("grpc.ssl_target_name_override", name)]
                with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
                    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)

            assert check(host).status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as err:
                check("not_the_cloud")
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            server.stop(0)
