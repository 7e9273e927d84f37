"""The import graph of our packages, read statically (ast over the tree, nothing imported).

- No cycle between modules and none between packages. Every import counts, function-level ones
  included: a lazy import still makes one module depend on the other.
- No robot-side package imports the cloud (`cloud_brain`) or the demo: the robot's image has
  neither, and the demo (`nestor_demo`) is the one package allowed to import both sides.
- Each package declares the packages it imports (package.xml `exec_depend`, pyproject
  `dependencies`), so its metadata says the truth.
- Every installable package of the tree is one of PACKAGES, so a new one cannot slip past.
"""

from __future__ import annotations

import ast
import pathlib
import re
import tomllib
import xml.etree.ElementTree as ElementTree

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
# Top-level import name -> the directory of its installable package (package.xml / pyproject.toml).
PACKAGES = {
    "nestor_core": "ros2_ws/src/nestor_core",
    "nestor_robot": "ros2_ws/src/nestor_robot",
    "nestor_bringup": "ros2_ws/src/nestor_bringup",
    "nestor_sim": "sim",
    "cloud_brain": "cloud_brain",
    "nestor_demo": "demo",
}
# What runs on the robot (its image builds ros2_ws/src and sim): none of it may import these.
ROBOT_SIDE = {"nestor_core", "nestor_robot", "nestor_bringup", "nestor_sim"}
NOT_ON_THE_ROBOT = {"cloud_brain", "nestor_demo"}


def modules() -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every module of every package."""
    found = {}
    for package, directory in PACKAGES.items():
        base = REPO / directory
        for path in sorted((base / package).rglob("*.py")):
            found[".".join(path.relative_to(base).with_suffix("").parts).removesuffix(".__init__")] = path
    return found


def imports_of(name: str, path: pathlib.Path, known: dict[str, pathlib.Path]) -> dict[str, int]:
    """The modules of ours that module `name` imports -> the first line importing each."""
    out: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                parts = parts[: len(parts) - node.level + 1]
                module = ".".join(parts + ([module] if module else []))
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, the module mod.
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.setdefault(target, node.lineno)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]] | dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def package_edges(graph: dict[str, dict[str, int]]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {package: set() for package in PACKAGES}
    for module, targets in graph.items():
        for target in targets:
            if target.split(".")[0] != module.split(".")[0]:
                edges[module.split(".")[0]].add(target.split(".")[0])
    return edges


def declared_dependencies(package: str) -> set[str]:
    """The packages of ours that `package` declares it needs, by import name."""
    directory = REPO / PACKAGES[package]
    if (directory / "package.xml").exists():
        root = ElementTree.parse(directory / "package.xml").getroot()
        names = {e.text.strip() for tag in ("exec_depend", "depend") for e in root.iter(tag)}
    else:
        project = tomllib.loads((directory / "pyproject.toml").read_text())["project"]
        names = {re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0] for d in project.get("dependencies", [])}
    by_distribution = {distribution_name(p): p for p in PACKAGES}
    return {by_distribution.get(n.lower().replace("-", "_"), n) for n in names} & set(PACKAGES)


def distribution_name(package: str) -> str:
    """The distribution name of `package` (package.xml name, or pyproject project.name), normalised."""
    directory = REPO / PACKAGES[package]
    if (directory / "package.xml").exists():
        name = ElementTree.parse(directory / "package.xml").getroot().findtext("name")
    else:
        name = tomllib.loads((directory / "pyproject.toml").read_text())["project"]["name"]
    return name.strip().lower().replace("-", "_")


def test_every_package_of_the_tree_is_checked():
    markers = [p for pattern in ("**/package.xml", "**/pyproject.toml") for p in REPO.glob(pattern)]
    skip = {".venv", "runs", "node_modules"}
    dirs = {p.parent.relative_to(REPO).as_posix() for p in markers if not skip & set(p.relative_to(REPO).parts)}
    dirs.discard(".")  # the repo-wide tool configuration
    assert dirs == set(PACKAGES.values()), f"add to PACKAGES: {sorted(dirs - set(PACKAGES.values()))}"


def test_no_cycle_between_modules(graph):
    unexpected = cycles(graph)
    detail = {tuple(c): {m: sorted(t for t in graph[m] if t in c) for m in c} for c in unexpected}
    assert unexpected == [], f"import cycles (module -> the members it imports): {detail}"


def test_no_cycle_between_packages(graph):
    assert cycles(package_edges(graph)) == []


def test_no_robot_side_package_imports_the_cloud(graph):
    offending = sorted(
        f"{modules()[module].relative_to(REPO)}:{line} imports {target}"
        for module, targets in graph.items()
        if module.split(".")[0] in ROBOT_SIDE
        for target, line in targets.items()
        if target.split(".")[0] in NOT_ON_THE_ROBOT
    )
    assert offending == []


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_each_package_declares_the_packages_it_imports(graph, package):
    used = package_edges(graph)[package]
    assert used - declared_dependencies(package) == set(), f"{PACKAGES[package]}: imported but not declared"


def test_the_checks_can_fail(tmp_path):
    # A cycle and a robot module importing the cloud, on a small graph of its own.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    module = tmp_path / "leaky.py"
    module.write_text("def f():\n    from cloud_brain.store import ExperienceStore\n")
    known = {"nestor_robot.leaky": module, "cloud_brain.store": module, "cloud_brain": module}
    assert imports_of("nestor_robot.leaky", module, known) == {"cloud_brain.store": 2}
