"""The parameter fields of a node's config dataclass, read with `ast` (importing the sim would load pybullet).

A field `x: Plain = nested(Plain, "a", "b")` (nestor_core.params.nested) stands for the fields a and
b of the plain config Plain, found through the module's `from <package>.<module> import Plain`.
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {
    "nestor_robot": "ros2_ws/src/nestor_robot/nestor_robot",
    "nestor_core": "ros2_ws/src/nestor_core/nestor_core",
    "nestor_sim": "sim/nestor_sim",
}


def _module_path(tree: ast.Module, name: str) -> Path:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and any(a.name == name for a in node.names):
            package, _, module = node.module.partition(".")
            return REPO / PACKAGE_DIRS[package] / (module.replace(".", "/") + ".py")
    raise LookupError(f"no import of {name}")


def dataclass_defaults(path: Path, class_name: str) -> dict:
    """parameter -> literal default ([] for default_factory=list, ... for another factory)."""
    tree = ast.parse(path.read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name)
    out = {}
    for stmt in cls.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        if "ClassVar" in ast.unparse(stmt.annotation):
            continue
        value = stmt.value
        if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "nested":
            plain, *names = value.args
            fields = dataclass_defaults(_module_path(tree, plain.id), plain.id)
            out.update({n.value: fields[n.value] for n in names})
            continue
        try:
            out[stmt.target.id] = ast.literal_eval(value)
        except ValueError:
            out[stmt.target.id] = [] if "default_factory=list" in ast.unparse(value) else ...
    return out
