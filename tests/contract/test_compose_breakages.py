"""Every compose check can fail: each one run on a deliberately broken copy of docker-compose.yml."""

from __future__ import annotations

import copy

import pytest
from compose_image_checks import check_builds, check_cloud, check_robot_images, check_schema
from compose_model import CLOUD, load_compose
from compose_service_checks import check_robot_fleet, check_scale_profile, check_tls


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
_CLOUD_COMMAND = "services/cloud_brain/command"


def _robot(n: int, cloud: str) -> tuple:
    """(path, value, check) of robot<n>'s command dialing `cloud` with its certificates."""
    return (
        f"services/robot{n}/command",
        [f"robot_id:=robot{n}", f"cloud:={cloud}", "certs_dir:=/certs"],
        check_robot_fleet,
    )


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
    ("missing config", _CLOUD_COMMAND, ["serve", "--config", "/app/config/nope.yaml"], check_cloud, "--config"),
    ("bad cli flag", _CLOUD_COMMAND, ["serve", "--confg", "/app/config/cloud.yaml"], check_cloud, "rejected"),
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
    ("replica robot wrong port", *_robot(2, "cloud_replica_a:50051,cloud_replica_b:50052"), "listens on port"),
    ("default robot dials a profile service", *_robot(0, "cloud_brain:50051,cloud_replica_a:50051"), "needs it"),
]


@pytest.mark.parametrize(
    ("path", "value", "check", "expected"), [b[1:] for b in BREAKAGES], ids=[b[0] for b in BREAKAGES]
)
def test_broken_compose_is_caught(path, value, check, expected):
    compose = copy.deepcopy(load_compose())
    _set(compose, path, value)
    problems = check(compose)
    assert any(expected in p for p in problems), problems
