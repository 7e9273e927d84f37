"""Write the task's initial ONNX model and its io_signature (imports torch: run it as its own process)."""

import argparse
import json
import pathlib

from cloud_brain.policy_export import initial_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task-file", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = pathlib.Path(args.out_dir)
    onnx, io_signature = initial_model(args.task_file, args.seed)
    (out / "model.onnx.tmp").write_bytes(onnx)
    (out / "io_signature.json").write_text(json.dumps(io_signature))
    (out / "model.onnx.tmp").replace(out / "model.onnx")


if __name__ == "__main__":
    main()
