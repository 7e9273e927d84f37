"""Runs docker-compose.yml's `certs` service for real (on the host) and maps container paths to it.

The compose contract tests use this to check that the PKI the `certs` service writes is exactly what
the cloud (`serve --certs`) and each robot (`certs_dir:=`) mount and read.
"""

from __future__ import annotations

import contextlib
import pathlib
import shlex
import tempfile

CERTS = "certs"


@contextlib.contextmanager
def materialized(compose: dict):
    """Run the certs service's command with its volumes on a temporary host directory.

    Yields a `Volumes` whose `host_path(service, container_path)` resolves any path under a named-volume
    mount of any service to where that file is on the host.
    """
    from cloud_brain import cli

    with tempfile.TemporaryDirectory(prefix="nestor-pki-") as tmp:
        volumes = Volumes(compose, pathlib.Path(tmp))
        argv = list(service_argv(compose, CERTS))
        if argv[:2] != ["nestor-cloud", "certs"]:
            raise ValueError(f"{CERTS}: runs {argv[:2]}, expected nestor-cloud certs")
        args = cli._parser().parse_args(argv[1:])
        argv[argv.index("--out") + 1] = str(volumes.host_path(CERTS, args.out))
        code = cli.main(argv[1:])
        if code != 0:
            raise ValueError(f"{CERTS}: `{shlex.join(argv)}` exited {code}")
        yield volumes


def service_argv(compose: dict, name: str) -> list[str]:
    """The argv of a service whose image has the `nestor-cloud` ENTRYPOINT (cloud_brain, certs)."""
    command = compose["services"][name].get("command", [])
    if isinstance(command, str):
        command = shlex.split(command)
    return ["nestor-cloud", *command]


def mounts(service: dict) -> list[dict]:
    """Volume mounts of a service as dicts: source, target, subpath, read_only (short and long syntax)."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            out.append(
                {
                    "source": parts[0],
                    "target": parts[1],
                    "subpath": "",
                    "read_only": len(parts) > 2 and "ro" in parts[2].split(","),
                }
            )
        else:
            out.append(
                {
                    "source": v.get("source", ""),
                    "target": v["target"],
                    "subpath": v.get("volume", {}).get("subpath", ""),
                    "read_only": bool(v.get("read_only")),
                }
            )
    return out


def mount_of(service: dict, container_path: str) -> dict | None:
    """The mount `container_path` lies on (the deepest one), or None."""
    path = pathlib.PurePosixPath(container_path)
    found = None
    for m in mounts(service):
        target = pathlib.PurePosixPath(m["target"])
        if path == target or target in path.parents:
            if found is None or len(target.parts) > len(pathlib.PurePosixPath(found["target"]).parts):
                found = m
    return found


class Volumes:
    """Named volumes of a compose file as directories under one host root."""

    def __init__(self, compose: dict, root: pathlib.Path):
        self.compose = compose
        self.root = root

    def host_path(self, service: str, container_path: str) -> pathlib.Path:
        m = mount_of(self.compose["services"][service], container_path)
        if m is None or m["source"] not in self.compose.get("volumes", {}):
            raise ValueError(f"{service}: {container_path} is not on a named volume")
        rel = pathlib.PurePosixPath(container_path).relative_to(m["target"])
        return self.root / m["source"] / m["subpath"] / rel
