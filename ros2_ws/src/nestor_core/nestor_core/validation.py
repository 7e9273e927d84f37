"""Config validation, one rule a line: each refusal is `<field>: <problem>, got <value>`.

`validate()` methods of the project's config dataclasses raise these (ValueError by default, or
the `error` class given, e.g. cloud_brain's ConfigError); the ROS binder (nestor_core.params)
prefixes the message with `parameter `. Standard library only.
"""


def require(ok: bool, field: str, problem: str, error: type[Exception] = ValueError) -> None:
    """Raise `error("<field>: <problem>")` unless `ok`."""
    if not ok:
        raise error(f"{field}: {problem}")


def non_empty(config, *names: str, error: type[Exception] = ValueError) -> None:
    """Each named field of `config` is truthy (a non-empty string or sequence)."""
    for name in names:
        require(bool(getattr(config, name)), name, "must not be empty", error)


def positive(config, *names: str, prefix: str = "", error: type[Exception] = ValueError) -> None:
    """Each named field is > 0 (NaN is refused too)."""
    for name in names:
        value = getattr(config, name)
        require(value > 0, prefix + name, f"must be > 0, got {value}", error)


def at_least(config, low, *names: str, prefix: str = "", error: type[Exception] = ValueError) -> None:
    """Each named field is >= `low`."""
    for name in names:
        value = getattr(config, name)
        require(not value < low, prefix + name, f"must be >= {low}, got {value}", error)


def tcp_port(config, name: str = "metrics_port", error: type[Exception] = ValueError) -> None:
    """A TCP port field: 0..65535 (0 = off)."""
    value = getattr(config, name)
    require(0 <= value <= 65535, name, f"must be in 0..65535, got {value}", error)
