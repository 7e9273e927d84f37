"""declare_config: a typed dataclass bound to ROS parameters, errors naming the parameter."""

import dataclasses
import os
import random
import typing

import pytest
import rclpy
from nestor_core.params import (
    ConfigError,
    declare_config,
    docstring_attributes,
    parameter_fields,
    refuse_undeclared,
)
from nestor_core.policy_runtime import RuntimeConfig
from nestor_robot.perception_node import PerceptionConfig
from nestor_robot.policy_config import RUNTIME_DYNAMIC, RUNTIME_RANGES, PolicyNodeConfig
from nestor_robot.uplink_node import UplinkNodeConfig
from nestor_robot.weight_sync_node import WeightSyncNodeConfig
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter

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

    RANGES: typing.ClassVar[dict] = {"count": (-10, 100), "rate_hz": (0.0, 1e6), "period_s": (0.0, 10.0)}

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
    config = declare_config(node, RuntimeConfig, prefix="runtime.", ranges=RUNTIME_RANGES)
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
        declare_config(make_node("runtime.horizon:=1"), RuntimeConfig, prefix="runtime.", ranges=RUNTIME_RANGES)


def test_policy_node_config_fields_are_documented():
    docs = docstring_attributes(PolicyNodeConfig)
    missing = [f.name for f in dataclasses.fields(PolicyNodeConfig) if not docs.get(f.name)]
    assert not missing
    docs = docstring_attributes(RuntimeConfig)
    assert all(docs.get(f.name) for f in dataclasses.fields(RuntimeConfig))


# ---------------------------------------------------------------------- ranges, read-only, set callback


@dataclasses.dataclass
class Ranged:
    """A config with ranges and one run-time parameter.

    Attributes:
        rate_hz: a rate.
        count: a count.
        scale: changes at run time.
        name: a name.
    """

    rate_hz: float = 100.0
    count: int = 3
    scale: float = 1.0
    name: str = "x"

    RANGES: typing.ClassVar[dict] = {"rate_hz": (1.0, 1000.0), "count": (0, 10), "scale": (0.0, 1.0)}
    DYNAMIC: typing.ClassVar[tuple] = ("scale",)

    def validate(self):
        if self.name == "bad":
            raise ValueError("name: must not be 'bad'")
        return self


def test_ranges_and_read_only_in_descriptors(make_node):
    node = make_node()
    declare_config(node, Ranged)
    rate = node.describe_parameter("rate_hz")
    assert (rate.floating_point_range[0].from_value, rate.floating_point_range[0].to_value) == (1.0, 1000.0)
    assert rate.read_only
    count = node.describe_parameter("count")
    assert (count.integer_range[0].from_value, count.integer_range[0].to_value) == (0, 10)
    assert not node.describe_parameter("scale").read_only


def test_out_of_range_at_start_names_the_parameter(make_node):
    with pytest.raises(ConfigError, match="parameter rate_hz"):
        declare_config(make_node("rate_hz:=0.5"), Ranged)
    with pytest.raises(ConfigError, match="parameter count"):
        declare_config(make_node("count:=11"), Ranged)
    with pytest.raises(ConfigError, match=r"parameter rate_hz: 5000.0 is outside"):
        declare_config(make_node("rate_hz:=5000"), Ranged)  # an int for a float skips rclpy's double range


def test_set_refuses_bad_values_with_a_reason_and_applies_good_ones(make_node):
    node = make_node()
    changed = []
    config = declare_config(node, Ranged, on_change=changed.append)
    results = node.set_parameters(
        [
            Parameter("rate_hz", value=50.0),  # read-only
            Parameter("scale", value=7.0),  # out of range
            Parameter("scale", value="big"),  # wrong type (floats are dynamically typed for `1` -> 1.0)
            Parameter("scale", value=2),  # an int beyond the range
        ]
    )
    assert [r.successful for r in results] == [False] * 4
    assert "read-only" in results[0].reason
    assert "out of range" in results[1].reason
    assert results[2].reason == "parameter scale: expected float, got 'big'"
    assert "outside [0.0, 1.0]" in results[3].reason
    assert node.get_parameter("scale").value == 1.0 and config.scale == 1.0 and not changed
    (ok,) = node.set_parameters([Parameter("scale", value=0.25)])
    assert ok.successful and config.scale == 0.25 and changed == [{"scale": 0.25}]
    (ok,) = node.set_parameters([Parameter("scale", value=0)])
    assert ok.successful and config.scale == 0.0 and isinstance(config.scale, float)


def test_set_runs_validate(make_node):
    @dataclasses.dataclass
    class Named:
        """Attributes:
        name: a name.
        """

        name: str = "x"
        DYNAMIC: typing.ClassVar[tuple] = ("name",)

        def validate(self):
            if self.name == "bad":
                raise ValueError("name: must not be 'bad'")
            return self

    node = make_node()
    config = declare_config(node, Named)
    (result,) = node.set_parameters([Parameter("name", value="bad")])
    assert not result.successful and result.reason == "parameter name: must not be 'bad'"
    assert config.name == "x"


def test_numeric_field_without_range_is_a_programming_error(make_node):
    @dataclasses.dataclass
    class Unranged:
        count: int = 3

    with pytest.raises(TypeError, match="Unranged.count: numeric parameter without a range"):
        declare_config(make_node(), Unranged)


def test_refuse_undeclared_names_the_parameter(make_node):
    node = make_node("rate_hz:=10.0", "scal:=0.5")
    declare_config(node, Ranged)
    with pytest.raises(ConfigError, match=r"parameter scal: node /n0 has no such parameter \(did you mean 'scale'\?\)"):
        refuse_undeclared(node)
    node = make_node("rate_hz:=10.0", "use_sim_time:=false")
    declare_config(node, Ranged)
    refuse_undeclared(node)  # rclpy's own parameters are fine


NODE_CONFIGS = [
    (PolicyNodeConfig, {}, ()),
    (RuntimeConfig, RUNTIME_RANGES, RUNTIME_DYNAMIC),
    (UplinkNodeConfig, {}, ()),
    (WeightSyncNodeConfig, {}, ()),
    (PerceptionConfig, {}, ()),
]


@pytest.mark.parametrize(("cls", "ranges", "dynamic"), NODE_CONFIGS, ids=lambda c: getattr(c, "__name__", ""))
def test_every_node_parameter_has_a_range_and_is_read_only_unless_dynamic(make_node, cls, ranges, dynamic):
    node = make_node()
    declare_config(node, cls, ranges=ranges, dynamic=dynamic)  # a numeric field without range raises
    for name, (_, owner, _) in parameter_fields(cls).items():  # nested plain configs' fields included
        described = node.describe_parameter(name)
        annotation = typing.get_type_hints(owner)[name]
        assert described.read_only == (name not in dynamic), name
        if annotation is float:
            assert described.floating_point_range, name
        elif annotation is int:
            assert described.integer_range, name
