"""Bind a typed config dataclass to ROS parameters, at the node's edge: the one binder of every node.

`declare_config(node, SomeConfig)` declares one ROS parameter per dataclass field, with the
field's default and a `ParameterDescriptor(description=..., read_only=..., *_range=...)`, reads the
values back (YAML params files and `-p` overrides apply), builds the dataclass and validates it
once. Every error names the parameter.

After start-up the same rules hold:
  * every numeric field declares its range (`RANGES`, a ClassVar of the dataclass, or the `ranges`
    argument): a FloatingPointRange / IntegerRange in its descriptor, so rclpy itself refuses an
    out-of-range `ros2 param set`; a numeric field without one is a programming error (TypeError);
  * fields named in `DYNAMIC` (or `dynamic`) may change at run time: a set-parameters callback
    checks the type, the range and `validate()` of the changed config, refuses with the reason, and
    on success updates the config in place and calls `on_change`; every other field is read-only;
  * `refuse_undeclared(node)`, called once all configs are declared, refuses a parameter that a
    params file or `-p` sets but the node does not declare (a typo such as `l0_step_scal`).

A plain config nests in a node config as a field `nested(PlainConfig, "a", "b")`: its fields a
and b are parameters of the same names (no prefix), described by PlainConfig's docstring and
ranged by the node config's RANGES; its other fields (credentials, ...) keep their defaults.

Field descriptions come from `dataclasses.field(metadata={"description": ...})` or, failing that,
from the Google-style `Attributes:` section of the dataclass docstring (`a, b: text` documents
both a and b).
"""

import dataclasses
import difflib
import math
import re
import typing
from collections.abc import Callable, Iterable, Mapping

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterException,
    ParameterUninitializedException,
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


def nested(plain_cls, *names: str):
    """A node config field holding a `plain_cls`, whose fields `names` are parameters of the same names."""
    return dataclasses.field(default_factory=plain_cls, metadata={"nested": names})


def parameter_fields(config_cls) -> dict[str, tuple[str | None, type, dataclasses.Field]]:
    """parameter name -> (nesting field or None, owning dataclass, its field) of a node config."""
    out = {}
    for field in dataclasses.fields(config_cls):
        if not field.init:
            continue
        names = field.metadata.get("nested")
        if names is None:
            out[field.name] = (None, config_cls, field)
            continue
        plain_cls = typing.get_type_hints(config_cls)[field.name]
        plain_fields = {f.name: f for f in dataclasses.fields(plain_cls)}
        for name in names:
            out[name] = (field.name, plain_cls, plain_fields[name])
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


# Parameters every rclpy node has without declaring them in a config.
_BUILTIN_PARAMETERS = ("use_sim_time", "start_type_description_service")
_BUILTIN_PREFIXES = ("qos_overrides.",)

INF = math.inf


def _descriptor_range(name: str, elem: type, is_array: bool, bounds) -> dict:
    """FloatingPointRange / IntegerRange keyword of a ParameterDescriptor (numeric scalars only)."""
    if is_array or elem not in (int, float):
        if bounds is not None:
            raise TypeError(f"{name}: a range is declared for a non-numeric field")
        return {}
    if bounds is None:
        raise TypeError(f"{name}: numeric parameter without a range (add it to RANGES)")
    low, high = bounds
    if elem is int:
        big = 2**63 - 1
        low = -big if low == -INF else int(low)
        high = big if high == INF else int(high)
        return {"integer_range": [IntegerRange(from_value=low, to_value=high, step=1)]}
    return {"floating_point_range": [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]}


def _in_range(value, bounds) -> bool:
    return bounds is None or bounds[0] <= value <= bounds[1]


class ConfigBinding:
    """The ROS parameters of one config dataclass, declared on a node; `read()` builds the config.

    A lifecycle node declares its parameters when it is built (so `ros2 param` lists them and a
    params file is checked against them) and reads and validates them in `on_configure`, where a
    refusal leaves the node unconfigured. A plain node does both at once (`declare_config`).

    Attributes:
        config: the config built by the newest `read()`; None before. Accepted run-time changes of
            dynamic fields update it in place.
    """

    def __init__(
        self,
        node: Node,
        config_cls,
        prefix: str,
        bounds_of: dict,
        kinds: dict,
        on_change: Callable[[dict], None] | None,
    ):
        self._node = node
        self._cls = config_cls
        self._prefix = prefix
        self._bounds_of = bounds_of
        self._kinds = kinds  # parameter -> (element type, is_array, was a tuple, nesting field or None)
        self._plain = {parent: owner for parent, owner, _ in parameter_fields(config_cls).values() if parent}
        self._on_change = on_change
        self.config = None
        node.add_on_set_parameters_callback(self._on_set)

    def _value(self, field: str, value, name: str):
        """`value` of parameter `name` (field `field`) coerced to the field's type and range-checked."""
        elem, is_array, _, _ = self._kinds[field]
        value = _coerce(value, elem, is_array, name)
        bounds = self._bounds_of.get(field)
        if not is_array and not _in_range(value, bounds):  # also an int given for a float
            raise ConfigError(f"parameter {name}: {value} is outside [{bounds[0]}, {bounds[1]}]")
        return value

    def _build(self, values: dict, base=None):
        """The config of {field: value}: nested fields go into their plain configs (from `base`'s)."""
        top, inner = {}, {}
        for field, value in values.items():
            parent = self._kinds[field][3]
            (top if parent is None else inner.setdefault(parent, {}))[field] = value
        if base is None:
            plain = {parent: self._plain[parent](**fields) for parent, fields in inner.items()}
            return self._cls(**top, **plain)
        plain = {parent: dataclasses.replace(getattr(base, parent), **fields) for parent, fields in inner.items()}
        return dataclasses.replace(base, **top, **plain)

    def read(self):
        """The config from the parameters' current values, validated once.

        Raises:
            ConfigError: a value of the wrong type or out of range, or one that `validate()`
                refuses; the message names the parameter.
        """
        values = {}
        for field, (_, is_array, as_tuple, _) in self._kinds.items():
            name = self._prefix + field
            try:
                value = self._node.get_parameter(name).value
            except ParameterUninitializedException:  # an empty array, declared by type only
                value = None
            if value is None and is_array:
                value = []
            if value is None:
                raise ConfigError(f"parameter {name}: not set")
            values[field] = self._value(field, value, name)
            if as_tuple:
                values[field] = tuple(values[field])
        config = self._build(values)
        _validate(config, self._prefix)
        self.config = config
        return config

    def _on_set(self, parameters: list[Parameter]) -> SetParametersResult:
        prefix, changes = self._prefix, {}
        for parameter in parameters:
            field = parameter.name[len(prefix) :] if parameter.name.startswith(prefix) else None
            if field not in self._kinds:
                continue  # another config's parameter
            try:
                changes[field] = self._value(field, parameter.value, parameter.name)
            except ConfigError as err:
                return SetParametersResult(successful=False, reason=str(err))
        if not changes or self.config is None:  # not configured yet: read() validates later
            return SetParametersResult(successful=True)
        try:
            _validate(self._build(changes, self.config), prefix)
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        for field, value in changes.items():
            parent = self._kinds[field][3]
            setattr(self.config if parent is None else getattr(self.config, parent), field, value)
        if self._on_change is not None:
            self._on_change(changes)
        return SetParametersResult(successful=True)


def declare_parameters(
    node: Node,
    config_cls,
    prefix: str = "",
    *,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    dynamic: Iterable[str] | None = None,
    on_change: Callable[[dict], None] | None = None,
) -> ConfigBinding:
    """Declare every field of `config_cls` as a parameter `<prefix><field>`; `.read()` gives the config.

    Args:
        node: the node that owns the parameters.
        config_cls: a dataclass whose fields all have defaults of type bool, int, float, str or a
            list of one of these, or are `nested(...)` plain configs.
        prefix: parameter name prefix, e.g. "runtime." (include the separator).
        ranges: field -> (low, high), inclusive; added to `config_cls.RANGES`. math.inf is allowed.
        dynamic: fields that may change at run time; added to `config_cls.DYNAMIC`. The others
            are declared read-only.
        on_change: called with {field: new value} after an accepted run-time change, on the
            executor's thread (between two callbacks of the node).

    Raises:
        ConfigError: a value rclpy refuses at declaration (wrong type, out of range); the message
            names the parameter.
    """
    bounds_of = {**getattr(config_cls, "RANGES", {}), **(ranges or {})}
    dynamic_fields = set(getattr(config_cls, "DYNAMIC", ())) | set(dynamic or ())
    docs = {config_cls: docstring_attributes(config_cls)}
    kinds = {}
    for field_name, (parent, owner, field) in parameter_fields(config_cls).items():
        name = prefix + field_name
        ptype, elem, is_array = _ros_type(typing.get_type_hints(owner)[field_name], field_name)
        default = _default(field)
        kinds[field_name] = (elem, is_array, isinstance(default, tuple), parent)
        if is_array:
            default = list(default)
        owner_docs = docs.setdefault(owner, docstring_attributes(owner))
        description = field.metadata.get("description") or owner_docs.get(field_name, "")
        bounds = bounds_of.get(field_name)
        # A double parameter accepts an integer override (YAML `1`); read() coerces it.
        descriptor = ParameterDescriptor(
            name=name,
            type=ptype,
            description=description,
            dynamic_typing=elem is float,
            read_only=field_name not in dynamic_fields,
            **_descriptor_range(f"{owner.__name__}.{field_name}", elem, is_array, bounds),
        )
        # rclpy cannot infer an array type from [], so an empty default is declared by type only.
        initial = Parameter.Type(ptype) if is_array and not default else default
        try:
            node.declare_parameter(name, initial, descriptor)
        except (InvalidParameterTypeException, InvalidParameterValueException, ParameterException) as err:
            raise ConfigError(f"parameter {name}: {err}") from None
    return ConfigBinding(node, config_cls, prefix, bounds_of, kinds, on_change)


def declare_config(node: Node, config_cls, prefix: str = "", **options):
    """Declare the parameters of `config_cls` and return the config read from them.

    The binder of plain nodes: `declare_parameters` (the same arguments) then `ConfigBinding.read`.

    Raises:
        ConfigError: a value of the wrong type or out of range, or one that `config_cls.validate()`
            refuses; the message names the parameter.
    """
    return declare_parameters(node, config_cls, prefix, **options).read()


def _validate(config, prefix: str) -> None:
    validate = getattr(config, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as err:
            # validate() messages start with the field name; prefix it into the parameter name.
            raise ConfigError(f"parameter {prefix}{err}") from None


def refuse_undeclared(node: Node) -> None:
    """Raise ConfigError naming the first parameter given to `node` (params file, -p) that it never declared.

    rclpy ignores such a parameter silently: a typo in a params file would switch nothing off.
    """
    declared = set(node._parameters)  # noqa: SLF001 (rclpy has no public list of declared names)
    overrides = node._parameter_overrides  # noqa: SLF001 (nor of the overrides it was given)
    for name in sorted(overrides):
        if name in declared or name in _BUILTIN_PARAMETERS or name.startswith(_BUILTIN_PREFIXES):
            continue
        close = difflib.get_close_matches(name, sorted(declared), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"parameter {name}: node {node.get_fully_qualified_name()} has no such parameter{hint}")
