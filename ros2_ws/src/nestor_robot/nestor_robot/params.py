"""Bind a typed config dataclass to ROS parameters, at the node's edge.

`declare_config(node, SomeConfig)` declares one ROS parameter per dataclass field, with the
field's default and a `ParameterDescriptor(description=...)`, reads the values back (YAML params
files and `-p` overrides apply), builds the dataclass and validates it once. Every error names the
parameter.

Field descriptions come from `dataclasses.field(metadata={"description": ...})` or, failing that,
from the Google-style `Attributes:` section of the dataclass docstring (`a, b: text` documents
both a and b).
"""

import dataclasses
import re
import typing

from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterException,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

_SCALAR_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}
_ARRAY_TYPES = {
    bool: ParameterType.PARAMETER_BOOL_ARRAY,
    int: ParameterType.PARAMETER_INTEGER_ARRAY,
    float: ParameterType.PARAMETER_DOUBLE_ARRAY,
    str: ParameterType.PARAMETER_STRING_ARRAY,
}


class ConfigError(ValueError):
    """A parameter value that the config refuses; the message names the parameter."""


def docstring_attributes(cls) -> dict[str, str]:
    """Field descriptions from the `Attributes:` section of a Google-style class docstring."""
    doc = cls.__doc__ or ""
    lines = doc.expandtabs().splitlines()
    out: dict[str, str] = {}
    in_section = False
    section_indent = 0
    current: list[str] = []
    names: list[str] = []

    def flush() -> None:
        text = " ".join(part.strip() for part in current).strip()
        for name in names:
            out[name] = text

    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not in_section:
            if stripped == "Attributes:":
                in_section, section_indent = True, indent
            continue
        if stripped and indent <= section_indent:
            break  # next section (or the end of the docstring body)
        if not stripped:
            continue
        match = re.match(r"^([A-Za-z_][\w]*(?:\s*,\s*[A-Za-z_][\w]*)*)\s*(?:\([^)]*\))?\s*:\s*(.*)$", stripped)
        if match and indent <= section_indent + 4:
            flush()
            names = [n.strip() for n in match.group(1).split(",")]
            current = [match.group(2)]
        else:
            current.append(stripped)
    if in_section:
        flush()
    return out


def _ros_type(annotation, name: str) -> tuple[int, type, bool]:
    """(ParameterType, element python type, is_array) for a field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        elem = args[0] if args else str
        if elem in _ARRAY_TYPES:
            return _ARRAY_TYPES[elem], elem, True
    elif annotation in _SCALAR_TYPES:
        return _SCALAR_TYPES[annotation], annotation, False
    raise TypeError(f"{name}: field type {annotation!r} has no ROS parameter type")


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise TypeError(f"{field.name}: a config field needs a default to become a ROS parameter")


def _coerce(value, elem: type, is_array: bool, name: str):
    """Accept an int where a float is expected (YAML `1` for 1.0); refuse anything else."""

    def one(v):
        if elem is float and isinstance(v, int) and not isinstance(v, bool):
            return float(v)
        if (elem is not bool and isinstance(v, bool)) or not isinstance(v, elem):
            raise ConfigError(f"parameter {name}: expected {elem.__name__}, got {v!r}")
        return v

    if is_array:
        return [one(v) for v in (value or [])]
    return one(value)


def declare_config(node: Node, config_cls, prefix: str = ""):
    """Declare every field of `config_cls` as a parameter `<prefix><field>`; return the config.

    Args:
        node: the node that owns the parameters.
        config_cls: a dataclass whose fields all have defaults of type bool, int, float, str or a
            list of one of these.
        prefix: parameter name prefix, e.g. "runtime." (include the separator).

    Raises:
        ConfigError: a value of the wrong type, or one that `config_cls.validate()` refuses; the
            message names the parameter.
    """
    hints = typing.get_type_hints(config_cls)
    docs = docstring_attributes(config_cls)
    values = {}
    for field in dataclasses.fields(config_cls):
        if not field.init:
            continue
        name = prefix + field.name
        ptype, elem, is_array = _ros_type(hints[field.name], field.name)
        default = _default(field)
        as_tuple = isinstance(default, tuple)
        if is_array:
            default = list(default)
        description = field.metadata.get("description") or docs.get(field.name, "")
        # A double parameter accepts an integer override (YAML `1`); we coerce it below.
        descriptor = ParameterDescriptor(name=name, type=ptype, description=description, dynamic_typing=elem is float)
        # rclpy cannot infer an array type from [], so an empty default is declared by type only.
        initial = Parameter.Type(ptype) if is_array and not default else default
        try:
            param = node.declare_parameter(name, initial, descriptor)
        except (InvalidParameterTypeException, InvalidParameterValueException, ParameterException) as err:
            raise ConfigError(f"parameter {name}: {err}") from None
        value = param.value
        if value is None and is_array:
            value = []
        if value is None:
            raise ConfigError(f"parameter {name}: not set")
        values[field.name] = _coerce(value, elem, is_array, name)
        if as_tuple:
            values[field.name] = tuple(values[field.name])
    config = config_cls(**values)
    validate = getattr(config, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as err:
            # validate() messages start with the field name; prefix it into the parameter name.
            raise ConfigError(f"parameter {prefix}{err}") from None
    return config
