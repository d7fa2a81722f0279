"""Robot descriptions: the built-in sim, files by path, and one clear line for every mistake."""

import pytest
from vla_runtime.runtime.robot_description import (
    RobotDescriptionError,
    builtin_names,
    load_robot_description,
    parse_robot_description,
)

MINIMAL = """
[robot]
name = "bench-arm"

[arm]
driver = "dynamixel"
port = "/dev/ttyUSB0"
baud = 1000000

[[arm.joints]]
name = "shoulder"
id = 1
offset = 0.1
direction = -1
min = -1.0
max = 1.0
max_velocity = 2.0

[gripper]
driver = "robotiq"
port = "/dev/ttyUSB1"

[camera]
kind = "v4l2"
device = "/dev/video0"
width = 640
height = 480

[action]
mapping = "joint_position"

[safety]
max_translation_step = 0.01
"""


def test_builtin_sim_description():
    desc = load_robot_description("sim")
    assert "sim" in builtin_names()
    assert desc.arm.driver == "sim" and desc.gripper.driver == "sim" and desc.camera.kind == "sim"
    assert len(desc.arm.joints) == 6 and desc.mapping == "ee_delta"
    assert all(lo < hi for lo, hi in zip(desc.joint_min, desc.joint_max, strict=True))
    assert desc.safety["max_translation_step"] > 0


def test_a_file_by_path_keeps_driver_keys(tmp_path):
    path = tmp_path / "arm.toml"
    path.write_text(MINIMAL)
    desc = load_robot_description(str(path))
    assert desc.name == "bench-arm" and desc.source == str(path)
    assert desc.arm.options["port"] == "/dev/ttyUSB0" and desc.arm.options["baud"] == 1000000
    joint = desc.arm.joints[0]
    assert (joint.offset, joint.direction, joint.max_velocity) == (0.1, -1, 2.0)
    assert desc.gripper.options["port"] == "/dev/ttyUSB1"
    assert desc.camera.options["device"] == "/dev/video0" and desc.camera.width == 640
    assert desc.mapping == "joint_position" and desc.safety["max_translation_step"] == 0.01


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("[robot]\n", "[robt]\n"), "unknown section"),
        (lambda t: t.replace('name = "bench-arm"\n', ""), "missing key 'name'"),
        (lambda t: t.replace("min = -1.0", "min = 2.0"), "min 2.0 must be below max"),
        (lambda t: t.replace("max_velocity = 2.0", "max_velocity = 0"), "max_velocity must be > 0"),
        (lambda t: t.replace("direction = -1", "direction = 3"), "direction must be 1 or -1"),
        (lambda t: t.replace('mapping = "joint_position"', 'mapping = "cartesian"'), "mapping 'cartesian'"),
        (lambda t: t.replace('kind = "v4l2"', "kind = 5"), "kind must be a str"),
        (lambda t: t.replace("[action]", "[action"), "not valid TOML"),
        (lambda t: t.replace('[camera]\nkind = "v4l2"', "[cam]"), "unknown section"),
    ],
)
def test_mistakes_get_one_line_naming_the_file(tmp_path, edit, message):
    path = tmp_path / "bad.toml"
    path.write_text(edit(MINIMAL))
    with pytest.raises(RobotDescriptionError, match=message) as info:
        load_robot_description(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_unknown_names_and_missing_files():
    with pytest.raises(RobotDescriptionError, match="use a built-in name"):
        load_robot_description("no-such-robot")
    with pytest.raises(RobotDescriptionError, match="not found"):
        load_robot_description("/nonexistent/robot.toml")


def test_missing_joints_are_refused():
    text = MINIMAL.split("[[arm.joints]]")[0] + "[camera]\nkind = 'sim'\n"
    with pytest.raises(RobotDescriptionError, match="at least one"):
        parse_robot_description(text, "x.toml")
