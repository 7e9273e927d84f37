"""The README's "Repository layout" table matches the tree.

- Every path the table lists exists (`runs/` may be absent: it is git-ignored output).
- Every top-level directory of the repository and every installable package directory (one with a
  package.xml or a pyproject.toml) has a row.
- Every module a row names (`store.py`, ...) exists below that row's path.
"""

from __future__ import annotations

import pathlib
import re
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SECTION = "## Repository layout"
GENERATED_OUTPUT = {"runs/"}  # listed, git-ignored, made by the first run


def layout_rows() -> list[tuple[list[str], str]]:
    """(paths of the first column, text of the second) for each row of the table."""
    text = (REPO / "README.md").read_text()
    assert SECTION in text, f"README.md has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or cells[0] in ("path", "") or set(cells[0]) <= {"-"}:
            continue
        paths = [t for t in re.findall(r"`([^`]+)`", cells[0]) if "/" in t or "." in t]
        rows.append((paths, cells[1]))
    assert rows, "the layout table is empty"
    return rows


def tracked_top_level_dirs() -> set[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return {f"{p.split('/')[0]}/" for p in out.splitlines() if "/" in p}


def package_dirs() -> set[str]:
    markers = [p for pattern in ("**/package.xml", "**/pyproject.toml") for p in REPO.glob(pattern)]
    skip = {".venv", "runs", "node_modules"}
    dirs = {f"{p.parent.relative_to(REPO).as_posix()}/" for p in markers if not skip & set(p.relative_to(REPO).parts)}
    return dirs - {"./"}


def listed_paths() -> set[str]:
    return {path for paths, _ in layout_rows() for path in paths}


def test_every_listed_path_exists():
    missing = sorted(p for p in listed_paths() if not (REPO / p).exists() and p not in GENERATED_OUTPUT)
    assert missing == [], f"README layout lists paths that are not in the tree: {missing}"


def test_every_top_level_directory_and_package_is_listed():
    listed = listed_paths()
    # A top-level directory counts as listed with any path below it (`.ci/run`, `ros2_ws/src/...`);
    # a package directory needs its own row.
    top = {d for d in tracked_top_level_dirs() if not any(p.startswith(d) for p in listed)}
    unlisted = sorted(top | (package_dirs() - listed))
    assert unlisted == [], f"add a row to the README layout table for: {unlisted}"


def test_every_module_a_row_names_exists_below_its_path():
    problems = []
    for paths, text in layout_rows():
        roots = [REPO / p for p in paths if p.endswith("/") and (REPO / p).is_dir()]
        for name in re.findall(r"`([A-Za-z0-9_]+\.py)`", text):
            if roots and not any(next(root.rglob(name), None) for root in roots):
                problems.append(f"{name} (row {', '.join(paths)})")
    assert problems == [], f"README layout names modules that are not there: {problems}"
