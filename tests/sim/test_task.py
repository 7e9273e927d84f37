"""Task YAML loading and validation: every error names the file and the field."""

import re

import pytest
import yaml
from nestor_sim.task import ShiftSpec, load_task, parse_shift, with_shifts
from task_testlib import edited_task


def test_both_tasks_load(kuka_yaml, crane_yaml):
    kuka = load_task(kuka_yaml)
    assert (kuka.obs_dim, kuka.act_dim) == (28, 7)
    assert kuka.shifts == (ShiftSpec("payload", 4.0, 20.0),)
    crane = load_task(crane_yaml)
    assert (crane.obs_dim, crane.act_dim) == (6, 1)
    assert crane.passive_joints == ("cart_to_pole",)
    assert crane.urdf.endswith("cartpole.urdf")
    assert crane.episode_variation.reference_offset_s == 10.0  # The default.


def test_xarm6_task_loads(xarm_yaml):
    xarm = load_task(xarm_yaml)
    assert (xarm.obs_dim, xarm.act_dim) == (24, 6)
    assert xarm.urdf.endswith("xarm/xarm6_robot.urdf")
    assert xarm.effort_limit == (50.0, 50.0, 32.0, 32.0, 32.0, 20.0)
    assert xarm.joint_damping is not None and len(xarm.joint_damping) == 6
    assert [s.type for s in xarm.shifts] == ["payload"]


def test_reference_is_sinusoid(crane_yaml):
    spec = load_task(crane_yaml)
    q0, qd0 = spec.reference_at(0.0)
    q_quarter, _ = spec.reference_at(1.0 / (4 * spec.reference[0].frequency_hz))
    assert q0[0] == pytest.approx(0.0)
    assert q_quarter[0] == pytest.approx(spec.reference[0].amplitude)
    assert qd0[0] > 0


def _write(tmp_path, crane_yaml, edit):
    return edited_task(crane_yaml, tmp_path / "crane.yaml", edit)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["shifts"].append({"type": "foo", "magnitude": 1}),
            r"shifts\[1\]\.type: unknown shift 'foo' \(expected one of payload, damping",
        ),
        (lambda d: d.update(kp=[1.0, 2.0]), r"kp: expected 1 values"),
        (lambda d: d.update(effort_limit=[-1.0]), r"effort_limit\[0\]: must be > 0"),
        (lambda d: d.pop("episode_s"), r"episode_s: missing required field"),
        (lambda d: d.update(urdf="nope.urdf"), r"urdf: file 'nope.urdf' not found"),
        (lambda d: d.update(controlled_joints=["slider_to_cart", "slider_to_cart"]), r"controlled_joints: duplicate"),
        (lambda d: d["reference"][0].update(frequency_hz="fast"), r"reference\[0\]\.frequency_hz: expected float"),
        (lambda d: d["camera"].update(width=0), r"camera\.width: must be > 0"),
        (lambda d: d["camera"].update(marker="blue"), r"camera\.marker: expected 'rail' or 'none'"),
        (lambda d: d.update(colour="red"), r"colour: unknown field"),
        (
            lambda d: d["shifts"].append({"type": "friction", "magnitude": 1, "joint": "x"}),
            r"shifts\[1\]\.joint: 'x' is not a controlled joint",
        ),
        (lambda d: d.update(physics_substeps=2.5), r"physics_substeps: expected int"),
        (lambda d: d.update(joint_damping=[-0.1]), r"joint_damping\[0\]: must be >= 0"),
        (lambda d: d.update(episode_variation={"phase": 1.0}), r"episode_variation\.phase: unknown field"),
    ],
)
def test_validation_names_field(tmp_path, crane_yaml, edit, message):
    path = _write(tmp_path, crane_yaml, edit)
    with pytest.raises(ValueError, match="^crane.yaml: " + message):
        load_task(path)


def test_parse_shift():
    assert parse_shift("payload:4.0@20") == ShiftSpec("payload", 4.0, 20.0)
    assert parse_shift("payload:2@5#pole") == ShiftSpec("payload", 2.0, 5.0, link="pole")
    assert parse_shift("friction:1.5") == ShiftSpec("friction", 1.5, 0.0)
    assert parse_shift("torque_bias:-3@1#lbr_iiwa_joint_2").joint == "lbr_iiwa_joint_2"
    with pytest.raises(ValueError, match=re.escape("unknown shift 'foo'")):
        parse_shift("foo:1@2")
    with pytest.raises(ValueError, match="expected 'type:magnitude"):
        parse_shift("payload")


def test_with_shifts(kuka_yaml):
    spec = load_task(kuka_yaml)
    new = with_shifts(spec, ["damping:2@10", {"type": "actuator_gain", "magnitude": 0.5, "at_s": 3}])
    assert [s.type for s in new.shifts] == ["damping", "actuator_gain"]
    assert spec.shifts != new.shifts  # The original is untouched.
    assert with_shifts(spec, []).shifts == ()
    with pytest.raises(ValueError, match=r"shifts\[0\]\.joint: 'elbow' is not a controlled joint"):
        with_shifts(spec, ["friction:1@0#elbow"])


# The shift rows of issue 12: every route (string form, YAML mapping) refuses what makes no physical sense.
BAD_SHIFTS = [
    ("gravity:4@10", r"unknown shift 'gravity' \(expected one of payload, damping"),
    ("payload:4@10#nolink", r"link: 'nolink' is not a link of model.urdf \(lbr_iiwa_link_1"),
    ("payload:-4@10", r"magnitude: must be >= 0 \(a payload adds mass\), got -4"),
    ("actuator_gain:-0.5", r"magnitude: must be > 0 \(an effort multiplier\), got -0.5"),
    ("actuator_gain:0", r"magnitude: must be > 0"),
    ("damping:-1@2", r"magnitude: must be >= 0"),
    ("friction:-1@2", r"magnitude: must be >= 0"),
    ("payload:4@-3", r"at_s: must be >= 0 \(seconds since reset\), got -3"),
    ("friction:2@5#lbr_iiwa_joint_9", r"joint: 'lbr_iiwa_joint_9' is not a controlled joint"),
]


@pytest.mark.parametrize(("text", "message"), BAD_SHIFTS)
def test_bad_shift_strings_are_refused(kuka_yaml, text, message):
    with pytest.raises(ValueError, match=rf"^(shift '{re.escape(text)}': |shifts\[0\]\.).*{message}"):
        with_shifts(load_task(kuka_yaml), [text])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "payload", "magnitude": -4.0, "at_s": 10.0}, r"shifts\[0\]\.magnitude: must be >= 0"),
        ({"type": "actuator_gain", "magnitude": -0.5}, r"shifts\[0\]\.magnitude: must be > 0"),
        ({"type": "payload", "magnitude": 4.0, "link": "nolink"}, r"shifts\[0\]\.link: 'nolink' is not a link"),
    ],
)
def test_bad_shifts_in_the_task_file_are_refused(tmp_path, kuka_yaml, entry, message):
    data = yaml.safe_load(kuka_yaml.read_text())
    data["shifts"] = [entry]
    path = tmp_path / "kuka.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=rf"^kuka.yaml: {message}"):
        load_task(path)


def test_good_shifts_still_parse(kuka_yaml):
    spec = with_shifts(load_task(kuka_yaml), ["payload:4@10#lbr_iiwa_link_7", "torque_bias:-3@1", "actuator_gain:0.5"])
    assert [s.type for s in spec.shifts] == ["payload", "torque_bias", "actuator_gain"]
    assert parse_shift("payload:0@0").magnitude == 0.0
