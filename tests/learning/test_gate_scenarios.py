"""The gate's scenarios: the task's shifts (targets kept) at eval_shift_s, and each from tick 0."""

import pathlib

from cloud_brain.learning.gate import gate_scenarios, with_from_start
from cloud_brain.learning.round_config import ConsolidationConfig
from nestor_sim.shifts import format_shift, parse_shift
from nestor_sim.task import load_task

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_format_shift_is_the_inverse_of_parse_shift():
    for text in ("payload:2@5#pole", "friction:1.5@0", "actuator_gain:0.5@20#lbr_iiwa_joint_2", "torque_bias:-3@4"):
        assert format_shift(parse_shift(text)) == text
        assert parse_shift(format_shift(parse_shift(text))) == parse_shift(text)


def test_task_shifts_keep_their_target_link():
    crane = load_task(str(REPO / "config" / "tasks" / "crane.yaml"))  # payload 2 kg on the link 'pole'
    got = gate_scenarios(crane, ConsolidationConfig(eval_shift_s=4.0))
    assert got == {"nominal": [], "payload:2": ["payload:2@4#pole"]}


def test_configured_gate_shifts_replace_the_task_file_ones():
    crane = load_task(str(REPO / "config" / "tasks" / "crane.yaml"))
    config = ConsolidationConfig(eval_shift_s=3.0, gate_shifts=("friction:2.0#slider_to_cart", "payload:1.5"))
    assert gate_scenarios(crane, config) == {
        "nominal": [],
        "friction:2": ["friction:2@3#slider_to_cart"],
        "payload:1.5": ["payload:1.5@3"],
    }


def test_each_shifted_scenario_is_also_checked_from_tick_0():
    scenarios = {"nominal": [], "payload:2": ["payload:2@4#pole"], "x": ["friction:1@4", "torque_bias:2@4#j"]}
    got = with_from_start(scenarios)
    assert got == {
        **scenarios,
        "payload:2 from t=0": ["payload:2@0#pole"],
        "x from t=0": ["friction:1@0", "torque_bias:2@0#j"],
    }
    assert "nominal from t=0" not in got
