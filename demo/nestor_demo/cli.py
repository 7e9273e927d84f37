"""`nestor demo`: its options, bound to a DemoConfig (the `nestor` entry point finds it as a plugin)."""

import argparse
import contextlib
import sys

from nestor_bringup.cli_common import Subcommand, positive_float, positive_int

from nestor_demo.demo import DemoConfig, run_demo


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=positive_float("duration"), default=150.0, help="seconds the fleet runs")
    parser.add_argument("--robots", type=positive_int, default=2, help="fleet size")
    parser.add_argument("--task", default="kuka_track", help="task every robot runs (config/tasks/<task>.yaml)")
    parser.add_argument("--seed", type=int, default=0, help="base seed")
    parser.add_argument("--shift-frac", type=float, default=0.4, help="shift time as a fraction of the run")
    parser.add_argument("--rounds", type=positive_int, default=3, help="consolidation rounds aimed for")
    parser.add_argument("--run-dir", default="", help="output directory (default runs/<timestamp>)")
    parser.add_argument("--config-dir", default="", help="bringup config dir")
    parser.add_argument(
        "--cloud-config", default="", help="base cloud config (default: cloud.yaml of the bringup config dir)"
    )
    parser.add_argument("--insecure", action="store_true", help="no TLS, unsigned models (loopback only)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the final summary as JSON on stdout (progress goes to stderr)",
    )
    parser.add_argument(
        "--record",
        action="append",
        default=[],
        metavar="ROBOT",
        help="record this robot's topics to MCAP (repeat); the others run without, for the missed-tick comparison",
    )


def _run_demo(args) -> int:
    if args.json:
        out = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            return _run_demo_config(args, out)
    return _run_demo_config(args, None)


def _run_demo_config(args, json_out) -> int:
    return run_demo(
        DemoConfig(
            duration_s=args.duration,
            robots=args.robots,
            task=args.task,
            seed=args.seed,
            shift_frac=args.shift_frac,
            rounds=args.rounds,
            run_dir=args.run_dir,
            config_dir=args.config_dir,
            cloud_config=args.cloud_config,
            secure=not args.insecure,
            record=tuple(args.record),
        ),
        json_out,
    )


# Found by `nestor` through the entry point group nestor.subcommands (demo/pyproject.toml).
SUBCOMMAND = Subcommand("demo", "cloud brain + simulated fleet, end to end, with a report", _demo_arguments, _run_demo)
