"""Regenerate the checked-in gRPC stubs from proto/nestor_core/nestor.proto.

Usage: python proto/generate.py [--out DIR]   (default: ros2_ws/src/nestor_core)
"""

import argparse
import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO = "nestor_core/nestor.proto"


def generate(out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "protoc",
            f"-I{ROOT / 'proto'}",
            f"-I{include}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(ROOT / "proto" / PROTO),
        ]
    )
    if rc != 0:
        sys.exit(f"protoc failed with exit code {rc}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "ros2_ws/src/nestor_core")
    generate(parser.parse_args().out)
