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

The semantic checks are functions that return a list of problems (compose_image_checks.py,
compose_service_checks.py); each one is run on the real file (no problems) here and on a deliberately
broken copy (the expected problem) in test_compose_breakages.py, so every check can fail. The
healthcheck and the robots' mutual TLS run for real in test_compose_tls.py.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re

import jsonschema
import pytest
from compose_image_checks import check_builds, check_cloud, check_pins, check_robot_images, check_schema
from compose_model import COMPOSE_FILE, SCHEMA_FILE, SCHEMA_SHA256, dockerfile_of, load_compose, robot_services
from compose_service_checks import check_robot_fleet, check_scale_profile, check_tls
from dockerfiles import entrypoint_command, parse_dockerfile

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
