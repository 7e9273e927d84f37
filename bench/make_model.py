"""Write the task's initial ONNX model and its io_signature (imports torch: run it as its own process).

The model is the cloud's default version 1 (`cloud_brain.learning.window_model.initial_model`, a window graph);
`--kind delta` writes the original delta-rule graph.
"""

import argparse
import json
import pathlib

from cloud_brain.learning import policy_export, window_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task-file", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kind", choices=("window", "delta"), default="window")
    args = parser.parse_args()
    out = pathlib.Path(args.out_dir)
    make = window_model.initial_model if args.kind == "window" else policy_export.initial_model
    onnx, io_signature = make(args.task_file, args.seed)
    (out / "model.onnx.tmp").write_bytes(onnx)
    (out / "io_signature.json").write_text(json.dumps(io_signature))
    (out / "model.onnx.tmp").replace(out / "model.onnx")


if __name__ == "__main__":
    main()
