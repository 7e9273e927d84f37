"""declare_config: a typed dataclass bound to ROS parameters, errors naming the parameter."""

import dataclasses
import os
import random

import pytest
import rclpy
from nestor_core.policy_runtime import RuntimeConfig
from nestor_robot.params import ConfigError, declare_config, docstring_attributes
from nestor_robot.policy_node import PolicyNodeConfig
from rclpy.context import Context
from rclpy.node import Node

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


@dataclasses.dataclass
class Example:
    """An example config.

    Attributes:
        count: how many,
            over two lines.
        rate_hz, period_s: two fields, one text.
        name: a name.
    """

    count: int = 3
    rate_hz: float = 100.0
    period_s: float = 0.5
    name: str = "x"
    flag: bool = False
    shifts: list[str] = dataclasses.field(default_factory=list)
    gains: list[float] = dataclasses.field(default_factory=lambda: [1.0, 2.0])
    tag: str = dataclasses.field(default="t", metadata={"description": "from metadata"})

    def validate(self):
        if self.count < 0:
            raise ValueError(f"count: must be >= 0, got {self.count}")
        return self


@pytest.fixture
def make_node():
    context = Context()
    rclpy.init(context=context, domain_id=random.randint(1, 100))
    nodes = []

    def make(*overrides: str) -> Node:
        args = ["--ros-args", *[a for o in overrides for a in ("-p", o)]] if overrides else None
        node = Node(f"n{len(nodes)}", context=context, cli_args=args)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown(context=context)


def test_docstring_attributes():
    docs = docstring_attributes(Example)
    assert docs["count"] == "how many, over two lines."
    assert docs["rate_hz"] == docs["period_s"] == "two fields, one text."
    assert "flag" not in docs


def test_defaults_and_descriptions(make_node):
    node = make_node()
    config = declare_config(node, Example)
    assert config == Example()
    assert node.describe_parameter("count").description == "how many, over two lines."
    assert node.describe_parameter("tag").description == "from metadata"
    assert node.get_parameter("gains").value == [1.0, 2.0]


def test_overrides_and_int_for_float(make_node):
    node = make_node("count:=5", "rate_hz:=50", "shifts:=['payload:4.0@20']", "flag:=true", "name:=abc")
    config = declare_config(node, Example)
    assert config.count == 5 and config.rate_hz == 50.0 and isinstance(config.rate_hz, float)
    assert config.shifts == ["payload:4.0@20"] and config.flag is True and config.name == "abc"


def test_prefix(make_node):
    node = make_node("runtime.horizon:=8")
    config = declare_config(node, RuntimeConfig, prefix="runtime.")
    assert config.horizon == 8
    assert node.has_parameter("runtime.l1_period")


def test_wrong_type_names_parameter(make_node):
    with pytest.raises(ConfigError, match="count"):
        declare_config(make_node("count:=many"), Example)
    with pytest.raises(ConfigError, match="rate_hz"):
        declare_config(make_node("rate_hz:=fast"), Example)


def test_validate_error_names_parameter(make_node):
    with pytest.raises(ConfigError, match="parameter count: must be >= 0"):
        declare_config(make_node("count:=-1"), Example)
    with pytest.raises(ConfigError, match="runtime.horizon"):
        declare_config(make_node("runtime.horizon:=1"), RuntimeConfig, prefix="runtime.")


def test_policy_node_config_fields_are_documented():
    docs = docstring_attributes(PolicyNodeConfig)
    missing = [f.name for f in dataclasses.fields(PolicyNodeConfig) if not docs.get(f.name)]
    assert not missing
    docs = docstring_attributes(RuntimeConfig)
    assert all(docs.get(f.name) for f in dataclasses.fields(RuntimeConfig))
