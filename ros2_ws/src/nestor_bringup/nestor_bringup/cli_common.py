"""What every `nestor` subcommand shares: its record, the one-line error, the argument types.

The `nestor` entry point (nestor_bringup.cli) holds the robot's own subcommands and finds the others
through the `nestor.subcommands` entry point group (the demo's, in nestor_demo), so a package that
adds a subcommand depends on the bringup and never the other way round.
"""

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path

ENTRY_POINT_GROUP = "nestor.subcommands"


class CliError(Exception):
    """A bad argument: `nestor: error: <message>`, exit 2."""


@dataclasses.dataclass
class Subcommand:
    """One `nestor <name>` subcommand.

    Attributes:
        name: the word after `nestor`.
        help: one line for `nestor --help`.
        add_arguments: adds the subcommand's options to its parser.
        run: runs it with the parsed args; returns the exit code (raise CliError for a bad argument).
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def default_config_dir() -> str:
    """config/ of the bringup: $NESTOR_CONFIG_DIR, the source tree, or the installed share dir."""
    env = os.environ.get("NESTOR_CONFIG_DIR")
    if env:
        return env
    source = Path(__file__).resolve().parents[1] / "config"  # the symlink to the repo's config/
    if source.is_dir():
        return str(source)
    installed = Path(sys.prefix) / "share" / "nestor_bringup" / "config"
    if installed.is_dir():
        return str(installed)
    try:
        from ament_index_python.packages import get_package_share_directory

        return os.path.join(get_package_share_directory("nestor_bringup"), "config")
    except (ImportError, LookupError):
        return str(source)


def positive_float(name: str) -> Callable[[str], float]:
    """An argparse type: a number > 0 (`name` is what argparse calls it in its error)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
        return value

    parse.__name__ = name
    return parse


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def check_task(task_file: str, shifts: list[str], flag: str) -> None:
    """Load and validate the task file and each shift against it, before any process starts.

    Raises:
        CliError: naming the flag, the file, the field and the problem.
    """
    from nestor_sim.task import load_task, with_shifts

    try:
        task = load_task(task_file)
    except (ValueError, OSError) as err:
        raise CliError(f"argument {flag}: {task_file}: {err}") from None
    for text in shifts:
        try:
            with_shifts(task, [text])
        except ValueError as err:
            raise CliError(f"argument --shift {text!r}: {err}") from None
