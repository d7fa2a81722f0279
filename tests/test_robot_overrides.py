"""`--set dotted.key=value` overrides: TOML literals, strings, joints by name, applied before validation."""

import pytest
from vla_runtime.runtime.robot_description import RobotDescriptionError, load_robot_description
from vla_runtime.runtime.robot_overrides import OverrideError, apply_overrides, parse_value


def test_values_are_toml_literals_where_possible_else_strings():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("[0.1, 0.2, 0.3]") == [0.1, 0.2, 0.3]
    assert parse_value('"/dev/ttyUSB1"') == parse_value("/dev/ttyUSB1") == "/dev/ttyUSB1"
    assert parse_value('{kind = "video", path = "a.mp4"}') == {"kind": "video", "path": "a.mp4"}


def test_overrides_reach_driver_keys_joints_and_cameras_without_touching_the_input():
    doc = {"arm": {"port": "/dev/ttyUSB0", "joints": [{"name": "a"}, {"name": "b"}]}}
    out = apply_overrides(doc, ["arm.port=/dev/pts/3", "arm.joints.b.direction=-1", "arm.joints.1.offset=0.1",
                                "cameras.base.device=/dev/video2"])
    assert out["arm"]["port"] == "/dev/pts/3" and out["cameras"]["base"]["device"] == "/dev/video2"
    assert out["arm"]["joints"] == [{"name": "a", "offset": 0.1}, {"name": "b", "direction": -1}]
    assert doc["arm"]["port"] == "/dev/ttyUSB0" and "cameras" not in doc


@pytest.mark.parametrize("item", ["arm.port", "=3", "arm..port=3", "arm.port.x=1", "arm.joints.nope.id=3"])
def test_malformed_overrides_are_one_line(item):
    with pytest.raises(OverrideError, match="--set"):
        apply_overrides({"arm": {"port": "p", "joints": [{"name": "a"}]}}, [item])


def test_a_shipped_file_serves_another_bench_through_set():
    desc = load_robot_description(
        "koch_dynamixel", ["arm.port=/dev/pts/3", "gripper.port=/dev/pts/3", "cameras.front.device=/dev/video2",
                           "arm.joints.wrist_roll.direction=1", "cameras.front.max_age=0.25"]
    )
    assert desc.arm.options["port"] == desc.gripper.options["port"] == "/dev/pts/3"
    assert desc.cameras["front"].options["device"] == "/dev/video2" and desc.cameras["front"].max_age == 0.25
    assert desc.arm.joints[4].direction == 1


def test_switching_a_camera_kind_drops_only_the_old_kind_keys():
    desc = load_robot_description("so101_feetech", ["cameras.front.kind=video", "cameras.front.path=clip.mp4"])
    front = desc.cameras["front"]
    assert front.kind == "video" and front.options["path"] == "clip.mp4"
    assert "device" not in front.options and "fourcc" not in front.options  # v4l2-only keys
    assert front.options["width"] == 640  # a key both kinds declare stays
    with pytest.raises(RobotDescriptionError, match="missing key 'path'"):
        load_robot_description("so101_feetech", ["cameras.front.kind=video"])
    with pytest.raises(RobotDescriptionError, match="unknown key 'pth'; did you mean 'path'"):
        load_robot_description("so101_feetech", ["cameras.front.kind=video", "cameras.front.pth=clip.mp4"])


def test_overrides_work_from_the_command_line(capsys):
    from vla_runtime.runtime.cli import main

    rc = main(["--policy", "scripted", "--steps", "1", "--set", "arm.prot=/dev/pts/3"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown key 'prot'" in err and len(err.strip().splitlines()) == 1
