"""The README's parameter tables match the config dataclasses and the shipped YAML defaults.

Each `**`<node>`** (`<file>: <Class>` [plus `<file>: <Class>`])` heading of the README's
Parameters section is followed by a table whose rows must name exactly the dataclasses' fields.
A row's default column gives the value of `config/robot/<node>.yaml` (or the dataclass default
when the YAML leaves the field out), and in brackets the dataclass default where it differs.
The dataclasses are read with `ast` (tests/config_fields.py; importing the sim would load pybullet).
"""

import re
from pathlib import Path

import pytest
import yaml
from config_fields import dataclass_defaults

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
SOURCES = {
    "nestor_robot/": "ros2_ws/src/nestor_robot/nestor_robot/",
    "nestor_core/": "ros2_ws/src/nestor_core/nestor_core/",
    "nestor_sim/": "sim/nestor_sim/",
}
NODES = ["sim_bridge", "perception", "policy", "uplink", "weight_sync"]


def _section(node: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """([(source path, class)], [(name cell, default cell)]) of a node's README table."""
    heading = re.search(rf"^\*\*`{node}`\*\* \((.*?)\)", README, re.M)
    assert heading, f"README: no **`{node}`** parameter heading"
    classes = []
    for path, cls in re.findall(r"`([\w/]+\.py): (\w+)`", heading.group(1)):
        prefix = next(p for p in SOURCES if path.startswith(p))
        classes.append((REPO / (SOURCES[prefix] + path[len(prefix) :]), cls))
    rest = README[heading.end() :]
    table = re.search(r"^\| name \| default \| description \|\n\|---\|---\|---\|\n((?:\|.*\n)+)", rest, re.M)
    rows = [[cell.strip() for cell in line.strip().strip("|").split(" | ")] for line in table.group(1).splitlines()]
    return classes, [(row[0], row[1]) for row in rows]


def _value(text: str):
    return yaml.safe_load(text.strip().strip("`"))


@pytest.mark.parametrize("node", NODES)
def test_readme_parameter_table_matches_the_dataclasses_and_yaml(node):
    classes, rows = _section(node)
    defaults = {}
    for path, cls in classes:
        defaults.update(dataclass_defaults(path, cls))
    doc = yaml.safe_load((REPO / "config" / "robot" / f"{node}.yaml").read_text())
    shipped = doc[f"/**/{node}"]["ros__parameters"]
    documented = {}
    for names, default in rows:
        for name in re.findall(r"`(\w+)`", names):
            documented[name] = default
    assert sorted(documented) == sorted(defaults), (
        f"README {node} table: missing {sorted(set(defaults) - set(documented))}, "
        f"extra {sorted(set(documented) - set(defaults))}"
    )
    for name, cell in documented.items():
        cell = cell.replace("(not in YAML)", "").strip()
        bracket = re.search(r"\[(.*)\]\s*$", cell)
        main = cell[: bracket.start()] if bracket else cell
        dataclass_default = defaults[name]
        if dataclass_default is ...:
            continue
        expected = shipped.get(name, dataclass_default)
        assert _value(main) == expected, f"README {node}.{name}: default {main!r}, YAML/dataclass {expected!r}"
        if bracket:
            assert _value(bracket.group(1)) == dataclass_default != expected, f"README {node}.{name}: {cell!r}"
        else:
            assert expected == dataclass_default, (
                f"README {node}.{name}: YAML {expected!r} but dataclass {dataclass_default!r}: add [..]"
            )
