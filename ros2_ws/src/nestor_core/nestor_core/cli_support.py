"""What the two command lines (`nestor`, `nestor-cloud`) share: their parser class and --version."""

import argparse


def distribution_version(name: str) -> str:
    """The installed version of distribution `name`, for --version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown (not installed)"


class DefaultsParser(argparse.ArgumentParser):
    """An argument parser whose --help shows every option's default (subparsers included)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)
