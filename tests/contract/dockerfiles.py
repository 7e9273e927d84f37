"""Just enough Dockerfile and launch-file parsing for the compose contract tests.

No Docker engine runs where the tests do, so the images are checked statically: the instructions of
each Dockerfile, and the launch arguments a launch file declares (read with `ast`, because `launch`
and `launch_ros` are not installed in the venv).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import pathlib
import re
import shlex


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: upper-case keyword and its raw argument text (continuations joined)."""

    keyword: str
    value: str

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form ENTRYPOINT/CMD/SHELL, or None for the shell form."""
        text = self.value.strip()
        if not text.startswith("["):
            return None
        parsed = json.loads(text)
        if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
            raise ValueError(f"{self.keyword}: exec form must be a JSON array of strings, got {text!r}")
        return parsed


def parse_dockerfile(path: pathlib.Path) -> list[Instruction]:
    """Instructions of a Dockerfile, in order; comments and blank lines dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if not full:
            continue
        keyword, _, value = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip()))
    if pending:
        raise ValueError(f"{path}: file ends inside a line continuation")
    return instructions


def last(instructions: list[Instruction], keyword: str) -> Instruction | None:
    """The instruction that wins for single-valued keywords such as ENTRYPOINT, CMD, WORKDIR."""
    found = [i for i in instructions if i.keyword == keyword]
    return found[-1] if found else None


def copy_sources(instructions: list[Instruction]) -> list[str]:
    """Build-context sources of every COPY/ADD without --from (those copy from other stages)."""
    sources = []
    for ins in instructions:
        if ins.keyword not in ("COPY", "ADD"):
            continue
        words = ins.exec_form() or shlex.split(ins.value)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        sources += words[:-1]
    return sources


def entrypoint_command(instructions: list[Instruction]) -> list[str]:
    r"""The command the container's ENTRYPOINT ends up exec-ing, as argv.

    An entrypoint of the form `bash -c "source X && exec CMD ... \"$@\"" NAME` is unwrapped to CMD...,
    which is how an image runs a command inside a sourced ROS workspace.
    """
    ins = last(instructions, "ENTRYPOINT")
    if ins is None:
        return []
    argv = ins.exec_form()
    if argv is None:
        raise ValueError("ENTRYPOINT must use the exec form so signals reach the process")
    if len(argv) >= 3 and argv[0].endswith("bash") and argv[1] == "-c":
        script = argv[2]
        match = re.search(r"(?:^|&&|;)\s*exec\s+(.+)$", script)
        if match is None:
            raise ValueError(f"ENTRYPOINT script does not exec its command: {script!r}")
        words = shlex.split(match.group(1))
        return [w for w in words if w != "$@"]
    return argv


def declared_launch_arguments(path: pathlib.Path) -> set[str]:
    """Names of the launch arguments a Python launch file declares.

    Understands `DeclareLaunchArgument("name", ...)` and the table form
    `[DeclareLaunchArgument(name, ...) for name, ... in TABLE.items()]` where TABLE is a module-level
    dict (or list/tuple) literal with string keys, or `arguments(KIND)` of nestor_bringup.launch_args
    with KIND a module-level string (the shared table, plain data, read from the code itself).
    """
    tree = ast.parse(path.read_text())
    tables: dict[str, list[str]] = {}
    constants: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                constants[node.targets[0].id] = value.value
            if isinstance(value, ast.Dict):
                keys = value.keys
            elif isinstance(value, (ast.List, ast.Tuple)):
                keys = value.elts
            else:
                continue
            names = [k.value for k in keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            tables[node.targets[0].id] = names

    def is_declare(call: ast.AST) -> bool:
        if not isinstance(call, ast.Call):
            return False
        func = call.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return name == "DeclareLaunchArgument"

    def first_arg(call: ast.Call) -> ast.AST | None:
        if call.args:
            return call.args[0]
        return next((k.value for k in call.keywords if k.arg == "name"), None)

    declared: set[str] = set()
    for node in ast.walk(tree):
        if is_declare(node):
            arg = first_arg(node)
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                declared.add(arg.value)
        if isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp)) and is_declare(node.elt):
            arg = first_arg(node.elt)
            if not isinstance(arg, ast.Name):
                continue
            for gen in node.generators:
                target_names = [n.id for n in ast.walk(gen.target) if isinstance(n, ast.Name)]
                if not target_names or target_names[0] != arg.id:
                    continue  # the declared name must be the first loop variable (the table key)
                source = gen.iter
                if isinstance(source, ast.Call) and isinstance(source.func, ast.Attribute):
                    source = source.func.value  # TABLE.items() / TABLE.keys()
                if isinstance(source, ast.Name) and source.id in tables:
                    declared.update(tables[source.id])
                if (
                    isinstance(source, ast.Call)
                    and getattr(source.func, "id", "") == "arguments"
                    and len(source.args) == 1
                ):
                    kind = source.args[0]
                    kind = constants.get(kind.id) if isinstance(kind, ast.Name) else getattr(kind, "value", None)
                    if isinstance(kind, str):
                        from nestor_bringup.launch_args import arguments

                        declared.update(arguments(kind))
    return declared


def launch_arguments(argv: list[str]) -> dict[str, str]:
    """`name:=value` words of a `ros2 launch` command line; raises on any other word."""
    out = {}
    for word in argv:
        name, sep, value = word.partition(":=")
        if not sep or not name:
            raise ValueError(f"not a launch argument (name:=value): {word!r}")
        out[name] = value
    return out


def copied_from(instructions: list[Instruction], container_path: str) -> str | None:
    """The build-context path a file at `container_path` in the image was COPY'd from, if any.

    Tracks WORKDIR so relative COPY destinations resolve as Docker resolves them; the last matching
    COPY wins, as later layers shadow earlier ones.
    """
    workdir = "/"
    found = None
    for ins in instructions:
        if ins.keyword == "WORKDIR":
            workdir = str(pathlib.PurePosixPath(workdir, ins.value))
        if ins.keyword != "COPY":
            continue
        words = ins.exec_form() or shlex.split(ins.value)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        if len(words) != 2:
            continue  # several sources into one directory: not needed here
        src, dest = words
        dest_path = pathlib.PurePosixPath(workdir, dest)
        target = pathlib.PurePosixPath(container_path)
        if target == dest_path:
            found = src
        elif dest_path in target.parents:
            found = str(pathlib.PurePosixPath(src, target.relative_to(dest_path)))
    return found


def workdir(instructions: list[Instruction]) -> str:
    """The image's final working directory."""
    current = "/"
    for ins in instructions:
        if ins.keyword == "WORKDIR":
            current = str(pathlib.PurePosixPath(current, ins.value))
    return current
