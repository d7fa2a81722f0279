"""The MuJoCo tabletop behind the Robot/Camera interfaces: physics, rendering, IK, lifecycle."""

import numpy as np
import pytest
import vla_runtime.runtime.sim  # noqa: F401 - picks MuJoCo's offscreen GL before mujoco is imported

pytest.importorskip("mujoco", reason="needs MuJoCo (pip install vla-runtime[sim])")

from vla_runtime.runtime.robot import matrix_to_rpy, rotation_vector, rpy_to_matrix  # noqa: E402
from vla_runtime.runtime.sim.robot import SimCamera, SimRobot  # noqa: E402
from vla_runtime.runtime.sim.world import HOME_POSITION, SimConfig, SimWorld  # noqa: E402


@pytest.fixture(scope="module")
def world():
    return SimWorld(SimConfig(seed=3))


def test_reset_puts_the_tool_home_and_blocks_on_the_table(world):
    world.reset()
    pos, rot = world.tool_pose()
    np.testing.assert_allclose(pos, HOME_POSITION, atol=2e-3)
    assert rot[2, 2] < -0.99  # pointing down
    for name in ("red_block", "green_block", "blue_block"):
        assert world.body_position(name)[2] == pytest.approx(0.02, abs=1e-3)


def test_block_placement_is_seeded():
    a, b, c = SimWorld(SimConfig(seed=1)), SimWorld(SimConfig(seed=1)), SimWorld(SimConfig(seed=2))
    np.testing.assert_array_equal(a.body_position("red_block"), b.body_position("red_block"))
    assert not np.allclose(a.body_position("red_block"), c.body_position("red_block"))


def test_camera_renders_the_scene_offscreen(world):
    world.reset()
    cam = SimCamera(world, 64, 48)
    try:
        frame = cam.read(now=1.5)
    finally:
        cam.close()
    img = frame.image
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8 and frame.t_capture == 1.5
    red = (img[..., 0] > 150) & (img[..., 1] < 80) & (img[..., 2] < 80)
    assert red.sum() > 0  # the red block is in view
    assert img.std() > 10  # not a blank frame


def test_ik_round_trips_through_forward_kinematics(world):
    world.reset()
    kin = world.kinematics
    q0 = world.data.qpos[world.arm_qpos].copy()
    pos, rpy = kin.forward(q0)
    target_pos = pos + [0.02, -0.03, -0.05]
    target_rpy = matrix_to_rpy(rpy_to_matrix([0.0, 0.0, 0.2]) @ rpy_to_matrix(rpy))
    q = kin.inverse(q0, target_pos, target_rpy)
    got_pos, got_rpy = kin.forward(q)
    np.testing.assert_allclose(got_pos, target_pos, atol=1e-3)
    angle = np.linalg.norm(rotation_vector(rpy_to_matrix(got_rpy) @ rpy_to_matrix(target_rpy).T))
    assert angle < 1e-3
    np.testing.assert_array_equal(world.data.qpos[world.arm_qpos], q0)  # the simulated state was untouched


def test_commands_need_activation_and_are_tracked(world):
    world.reset()
    robot = SimRobot(world)
    state = robot.read_state(0.0)
    with pytest.raises(RuntimeError, match="activate"):
        robot.command(state.joint_positions, 1.0, 0.0, 0.1)
    robot.activate()
    target = state.joint_positions + np.array([0.1, 0.05, 0.0, 0.0, 0.0, 0.0])
    for i in range(10):
        sent_q, sent_g = robot.command(target, 0.0, i * 0.1, 0.1)
    np.testing.assert_array_equal(sent_q, target)
    after = robot.read_state(1.0)
    np.testing.assert_allclose(after.joint_positions, target, atol=0.02)
    assert after.gripper < 0.1  # fingers closed on nothing
    with pytest.raises(ValueError, match="finite"):
        robot.command(np.full(6, np.nan), 0.5, 1.0, 0.1)


def test_hold_and_deactivate_leave_the_arm_where_it_is(world):
    world.reset()
    robot = SimRobot(world)
    robot.activate()
    q = robot.read_state(0.0).joint_positions
    robot.command(q + 0.2, 1.0, 0.0, 0.05)  # moving fast when we stop
    robot.hold(0.05, 0.1)
    robot.deactivate()
    stopped = robot.read_state(0.2).joint_positions
    world.step(0.5)
    np.testing.assert_allclose(robot.read_state(0.7).joint_positions, stopped, atol=0.03)
    assert not robot.active
    with pytest.raises(RuntimeError):
        robot.command(stopped, 1.0, 0.7, 0.1)
