"""The compose checks of what the images hold: schema, builds, the robot and cloud images, pins.

Each check returns the list of problems it finds in a compose dict (see test_compose.py).
"""

from __future__ import annotations

import json
import pathlib
import re
import shlex
import tomllib

import jsonschema
from cloud_brain.config import is_loopback_host
from compose_model import (
    CLOUD,
    REPO,
    ROBOT_PACKAGES,
    SCHEMA_FILE,
    built_services,
    cloud_command,
    dockerfile_of,
    host_port,
    needs_dockerfiles,
    requirement_pins,
    robot_services,
)
from compose_pki import materialized
from dockerfiles import (
    copied_from,
    copy_sources,
    declared_launch_arguments,
    entrypoint_command,
    launch_arguments,
    parse_dockerfile,
    workdir,
)


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


check_robot_images = needs_dockerfiles(check_robot_images)
check_cloud = needs_dockerfiles(check_cloud)
check_pins = needs_dockerfiles(check_pins)
