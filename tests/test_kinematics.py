"""The numpy kinematics against MuJoCo on the shipped arm models, and its IK contract."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import vla_runtime.runtime.sim  # noqa: F401 - MuJoCo's offscreen GL platform, before any test imports MuJoCo
from vla_runtime.runtime.kinematics import ChainKinematics, IKConfig, Unreachable
from vla_runtime.runtime.kinematics_files import KinematicModelError, chain_from_urdf, load_chain, resolve_model
from vla_runtime.runtime.robot import rotation_vector, rpy_to_matrix
from vla_runtime.runtime.robot_description import load_robot_description

ROBOTS = ("koch_dynamixel", "so101_feetech", "ur5e_robotiq")


def shipped(robot: str) -> tuple[Path, tuple[str, ...], str]:
    desc = load_robot_description(robot)
    return Path(desc.arm.kinematics), tuple(j.name for j in desc.arm.joints), desc.arm.ee_link


def kinematics(robot: str, **config) -> ChainKinematics:
    path, joints, ee = shipped(robot)
    return ChainKinematics(load_chain(path, joints, ee), IKConfig(**config))


def samples(kin: ChainKinematics, n: int, seed: int = 0) -> np.ndarray:
    lo, hi = np.maximum(kin.lower, -np.pi), np.minimum(kin.upper, np.pi)
    return np.random.default_rng(seed).uniform(lo, hi, (n, len(lo)))


@pytest.mark.parametrize("robot", ROBOTS)
def test_forward_kinematics_and_jacobian_agree_with_mujoco_on_the_same_urdf(robot):
    mujoco = pytest.importorskip("mujoco", reason="MuJoCo is the reference the numpy chain is checked against")
    path, joints, ee = shipped(robot)
    kin = kinematics(robot)
    spec = mujoco.MjSpec.from_file(str(path))
    spec.compiler.fusestatic = False  # keep the end-effector link as its own body
    spec.compiler.boundmass, spec.compiler.boundinertia = 1e-3, 1e-6  # the model has no inertias
    model = spec.compile()
    data = mujoco.MjData(model)
    assert tuple(model.joint(i).name for i in range(model.njnt)) == joints
    body = model.body(ee).id
    jac_p, jac_r = np.zeros((3, model.nv)), np.zeros((3, model.nv))
    for q in samples(kin, 100):
        data.qpos[:] = q
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)
        mujoco.mj_jacBody(model, data, jac_p, jac_r, body)
        pos, rot = kin.pose(q)
        np.testing.assert_allclose(pos, data.xpos[body], atol=1e-9)  # metres: far below 1e-6
        np.testing.assert_allclose(rot, data.xmat[body].reshape(3, 3), atol=1e-9)
        np.testing.assert_allclose(kin.jacobian(q), np.vstack([jac_p, jac_r]), atol=1e-9)


@pytest.mark.parametrize("robot", ROBOTS)
def test_ik_round_trips_small_steps_from_the_current_joints(robot):
    kin = kinematics(robot)
    rng = np.random.default_rng(1)
    solved = 0
    for q in samples(kin, 40, seed=2):
        pos, rpy = kin.forward(q)
        target = pos + rng.uniform(-0.01, 0.01, 3)  # a centimetre step, as a policy asks per tick
        try:
            q_new = kin.inverse(q, target, rpy)
        except Unreachable:
            continue  # a sample at the edge of reach or at a limit
        solved += 1
        reached, _ = kin.forward(q_new)
        assert np.linalg.norm(reached - target) < 5e-3
        assert np.all(q_new >= kin.lower) and np.all(q_new <= kin.upper)
        assert np.abs(q_new - q).max() < 1.0  # warm start: no flip to another branch (about pi)
    assert solved >= 30


def test_six_joint_ik_meets_position_and_orientation():
    kin = kinematics("ur5e_robotiq")
    q = np.array([0.3, -1.4, 1.5, -1.7, -1.5, 0.2])
    pos, rpy = kin.forward(q)
    target_rpy = np.array(rpy) + np.array([0.05, -0.04, 0.03])
    q_new = kin.inverse(q, pos + np.array([0.01, -0.02, 0.015]), target_rpy)
    reached, reached_rpy = kin.forward(q_new)
    np.testing.assert_allclose(reached, pos + np.array([0.01, -0.02, 0.015]), atol=1e-3)
    residual = rpy_to_matrix(reached_rpy) @ rpy_to_matrix(target_rpy).T
    assert np.linalg.norm(rotation_vector(residual)) < 5e-3


def test_ik_never_leaves_the_joint_limits_and_says_when_a_limit_blocks_the_target():
    path, joints, ee = shipped("so101_feetech")
    chain = load_chain(path, joints, ee)
    q = np.array([0.0, 0.3, -0.2, 0.4, 0.0])
    pos, rpy = ChainKinematics(chain).forward(q)
    target = pos + np.array([0.0, 0.04, 0.0])  # sideways: mostly shoulder_pan
    narrow = ChainKinematics(chain.with_limits([-0.05, -1.7, -1.6, -1.6, -2.7], [0.05, 1.7, 1.6, 1.6, 2.7]))
    with pytest.raises(Unreachable, match="mm from the target"):
        narrow.inverse(q, target, rpy)
    lenient = ChainKinematics(narrow.chain, IKConfig(reach_tolerance=1.0))  # best effort, to look at the joints
    q_new = lenient.inverse(q, target, rpy)
    assert -0.05 <= q_new[0] <= 0.05 and np.all(q_new >= narrow.lower) and np.all(q_new <= narrow.upper)


@pytest.mark.parametrize("robot", ROBOTS)
def test_a_target_beyond_reach_is_unreachable(robot):
    kin = kinematics(robot)
    q = samples(kin, 1, seed=3)[0]
    pos, rpy = kin.forward(q)
    with pytest.raises(Unreachable):
        kin.inverse(q, pos / np.linalg.norm(pos) * 2.0, rpy)  # two metres out: no arm here reaches that


def test_mjcf_and_urdf_give_the_same_chain(tmp_path):
    mujoco = pytest.importorskip("mujoco", reason="MJCF files are read through MuJoCo")
    from vla_runtime.runtime.kinematics_mjcf import chain_from_mujoco

    path, joints, ee = shipped("koch_dynamixel")
    spec = mujoco.MjSpec.from_file(str(path))
    spec.compiler.fusestatic = False
    spec.compiler.boundmass, spec.compiler.boundinertia = 1e-3, 1e-6
    from_urdf = ChainKinematics(load_chain(path, joints, ee))
    from_mjcf = ChainKinematics(chain_from_mujoco(spec.compile(), joints, body=ee))
    for q in samples(from_urdf, 20):
        np.testing.assert_allclose(from_mjcf.pose(q)[0], from_urdf.pose(q)[0], atol=1e-12)


def test_the_sim_uses_the_same_solver_on_its_mujoco_chain():
    pytest.importorskip("mujoco", reason="the simulated tabletop runs on MuJoCo")
    from vla_runtime.runtime.sim.world import SimWorld

    world = SimWorld()
    assert isinstance(world.kinematics, ChainKinematics)
    q = world.data.qpos[world.arm_qpos].copy()
    pos, rot = world.kinematics.pose(q)
    site_pos, site_rot = world.tool_pose()
    np.testing.assert_allclose(pos, site_pos, atol=1e-12)
    np.testing.assert_allclose(rot, site_rot, atol=1e-12)


def test_model_files_resolve_next_to_the_robot_file_then_among_packaged_models(tmp_path):
    packaged = resolve_model("so101.urdf", tmp_path)
    assert packaged == Path(str(resources.files("vla_runtime.drivers").joinpath("robots", "so101.urdf")))
    (tmp_path / "so101.urdf").write_text(packaged.read_text())
    assert resolve_model("so101.urdf", tmp_path) == tmp_path / "so101.urdf"
    with pytest.raises(KinematicModelError, match="not found"):
        resolve_model("no-such-arm.urdf", tmp_path)


@pytest.mark.parametrize(
    "joints, message",
    [
        (("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_roll", "wrist_flex"), "joint 4 .* is 'wrist_flex'"),
        (("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex"), "5 movable joints"),
    ],
)
def test_model_joints_must_be_the_robot_files_in_order(joints, message):
    path, _, ee = shipped("so101_feetech")
    with pytest.raises(KinematicModelError, match=message):
        chain_from_urdf(path.read_text(), joints, ee, str(path))


@pytest.mark.parametrize(
    "text, message",
    [
        ("<robot", "not valid XML"),
        ("<mujoco/>", "a URDF file has <robot>"),
        ('<robot><link name="a"/></robot>', "no link named 'tip'"),
        ('<robot><link name="a"/><link name="tip"/><joint name="j" type="revolute"><parent link="a"/>'
         '<child link="tip"/></joint></robot>', "needs <limit"),
        ('<robot><link name="a"/><link name="tip"/><joint name="j" type="continuous"><parent link="a"/>'
         '<child link="tip"/><origin xyz="0 0"/></joint></robot>', "not 3 finite numbers"),
    ],
)
def test_malformed_urdf_is_one_clear_error(text, message):
    with pytest.raises(KinematicModelError, match=message):
        chain_from_urdf(text, ("j",), "tip", "arm.urdf")
