"""The compose checks of how the services fit together: the robot fleet, mutual TLS, the scale profile.

Each check returns the list of problems it finds in a compose dict (see test_compose.py).
"""

from __future__ import annotations

import contextlib
import pathlib
import re

from cloud_brain.config import is_loopback_host
from compose_model import (
    CLOUD,
    REPO,
    SCALE,
    cloud_command,
    cloud_services,
    host_port,
    needs_dockerfiles,
    robot_services,
)
from compose_pki import CERTS, materialized, mount_of, service_argv
from dockerfiles import launch_arguments


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


check_robot_fleet = needs_dockerfiles(check_robot_fleet)
