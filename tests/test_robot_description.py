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

[cameras.front]
kind = "v4l2"
device = "/dev/video0"
width = 640
height = 480

[action]
mapping = "joint_position"

[safety]
gripper_max = 0.9
"""


def test_builtin_sim_description():
    desc = load_robot_description("sim")
    assert "sim" in builtin_names()
    assert desc.arm.driver == "sim" and desc.gripper.driver == "sim" and desc.cameras["front"].kind == "sim"
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
    camera = desc.cameras["front"]
    assert camera.options["device"] == "/dev/video0" and camera.options["width"] == 640 and camera.max_age == 0.5
    assert desc.mapping == "joint_position" and desc.safety["gripper_max"] == 0.9


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("[robot]\n", "[robt]\n"), r"unknown section \[robt\]; did you mean 'robot'"),
        (lambda t: t.replace('name = "bench-arm"\n', ""), "missing key 'name'"),
        (lambda t: t.replace("min = -1.0", "min = 2.0"), "min 2.0 must be below max"),
        (lambda t: t.replace("max_velocity = 2.0", "max_velocity = 0"), "max_velocity must be > 0"),
        (lambda t: t.replace("direction = -1", "direction = 3"), "direction must be 1 or -1"),
        (lambda t: t.replace('mapping = "joint_position"', 'mapping = "cartesian"'), "mapping 'cartesian'"),
        (lambda t: t.replace('kind = "v4l2"', "kind = 5"), r"\[cameras.front\] kind: expected a string, got 5"),
        (lambda t: t.replace("[action]", "[action"), "not valid TOML"),
        (lambda t: t.replace("[cameras.front]", "[camera]"), r"unknown section \[camera\]; write one \[cameras.NAME\]"),
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
    text = MINIMAL.split("[[arm.joints]]")[0] + "[cameras.front]\nkind = 'sim'\n"
    with pytest.raises(RobotDescriptionError, match="at least one"):
        parse_robot_description(text, "x.toml")


@pytest.mark.parametrize(
    "robot, override, message",
    [
        ("koch_dynamixel", "arm.joints.wrist_roll.directon=-1",
         r"\[\[arm.joints\]\] #5 \(wrist_roll\) unknown key 'directon'; did you mean 'direction'"),
        ("koch_dynamixel", "arm.baudrate=57600", r"\[arm\] unknown key 'baudrate'; did you mean 'baud'"),
        ("so101_feetech", "gripper.max_torqe=0.4", r"\[gripper\] unknown key 'max_torqe'; did you mean 'max_torque'"),
        ("ur5e_robotiq", "cameras.front.widht=320", r"\[cameras.front\] unknown key 'widht'; did you mean 'width'"),
        ("ur5e_robotiq", "arm.lookahed=0.1", r"\[arm\] unknown key 'lookahed'; did you mean 'lookahead'"),
        ("ur5e_robotiq", "gripper.baudrate=9600", r"\[gripper\] unknown key 'baudrate'; did you mean 'baud'"),
        ("sim", "safety.max_translation_stp=0.01", r"\[safety\] unknown key 'max_translation_stp'; did you mean"),
        ("sim", "sim.sed=3", r"\[sim\] unknown key 'sed'; did you mean 'seed'"),
        ("sim", "action.maping='ee_delta'", r"\[action\] unknown key 'maping'; did you mean 'mapping'"),
        ("koch_dynamixel", "arm.driver=dynamixl", r"arm driver 'dynamixl' is unknown; did you mean 'dynamixel'"),
        ("koch_dynamixel", "cameras.front.kind=v4l", r"camera driver 'v4l' is unknown; did you mean 'v4l2'"),
    ],
)
def test_typos_anywhere_are_refused_with_the_nearest_key(robot, override, message):
    with pytest.raises(RobotDescriptionError, match=message) as info:
        load_robot_description(robot, [override])
    assert "\n" not in str(info.value) and "(with --set)" in str(info.value)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("width = 640", 'width = "640"'),
         r"\[cameras.front\] width: expected an integer, got the string '640'"),
        (lambda t: t.replace("max_velocity = 2.0", 'max_velocity = "fast"'),
         r"\[\[arm.joints\]\] #1 \(shoulder\) max_velocity: expected a number"),
        (lambda t: t.replace("baud = 1000000", "baud = 1e6"), r"\[arm\] baud: expected an integer, got 1000000.0"),
        (lambda t: t.replace("gripper_max = 0.9", "gripper_max = true"),
         r"\[safety\] gripper_max: expected a number, got true"),
        (lambda t: t + "workspace_min = [0.1, 0.2]\n", r"\[safety\] workspace_min: expected a list of 3 numbers"),
        (lambda t: t.replace('port = "/dev/ttyUSB1"', "port = 7"), r"\[gripper\] port: expected a string, got 7"),
    ],
)
def test_every_value_is_type_checked_in_one_line_naming_file_table_and_key(tmp_path, edit, message):
    path = tmp_path / "typed.toml"
    path.write_text(edit(MINIMAL))
    with pytest.raises(RobotDescriptionError, match=message) as info:
        load_robot_description(str(path))
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_every_shipped_robot_file_is_valid_and_names_a_front_camera():
    for name in builtin_names():
        desc = load_robot_description(name)
        assert "front" in desc.cameras, name


def test_a_missing_camera_view_is_refused_in_one_line(tmp_path):
    path = tmp_path / "wrist.toml"
    path.write_text(MINIMAL.replace("[cameras.front]", "[cameras.wrist]"))
    desc = load_robot_description(str(path))
    assert desc.cameras_for(["wrist"])[0].name == "wrist"
    with pytest.raises(RobotDescriptionError, match=r"camera view 'front' but the robot file has \[cameras.wrist\]"):
        desc.cameras_for(["front"])
