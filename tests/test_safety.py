"""The first safety layer: finiteness first, every limit enforced, every change reported."""

import numpy as np
import pytest
from vla_runtime.runtime.manifest import SafetyDefaults
from vla_runtime.runtime.robot import Kinematics, rotation_vector, rpy_to_matrix
from vla_runtime.runtime.safety import ActionSafety, SafetyConfigError, SafetyLimits, SafetyStats
from vla_runtime.runtime.types import RobotState


class CartesianKinematics(Kinematics):
    """A toy arm whose six joints are the tool's x, y, z, roll, pitch, yaw: IK is exact."""

    def forward(self, q):
        return np.asarray(q[:3], float).copy(), np.asarray(q[3:], float).copy()

    def inverse(self, q_seed, position, rpy):
        return np.concatenate([position, rpy])


LIMITS = SafetyLimits(
    max_translation_step=0.02,
    max_rotation_step=0.1,
    workspace_min=(0.0, -0.5, 0.05),
    workspace_max=(0.6, 0.5, 0.5),
    gripper_min=0.1,
    gripper_max=0.9,
    joint_min=(-1.0, -1.0, -1.0, -3.0, -1.0, -3.0),
    joint_max=(1.0, 1.0, 1.0, 3.0, 1.0, 3.0),
    joint_max_velocity=(1.0, 1.0, 1.0, 2.0, 2.0, 2.0),
)
DT = 0.1


def state(q=(0.3, 0.0, 0.2, 0.0, 0.0, 0.0), gripper=0.5):
    q = np.asarray(q, float)
    return RobotState(q, q[:3].copy(), q[3:].copy(), gripper, 0.0)


def ee_filter(limits=LIMITS):
    return ActionSafety(limits, "ee_delta", 7, CartesianKinematics(), 6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actions_hold_the_measured_position(bad):
    s = state()
    desired = np.array([0.01, 0, 0, 0, 0, 0, 0.5])
    desired[2] = bad
    cmd, report = ee_filter().enforce(s, desired, DT)
    assert report.held and report.interventions == ("non_finite",)
    np.testing.assert_array_equal(cmd.joint_targets, s.joint_positions)
    assert cmd.gripper == s.gripper  # gripper stops where it is
    assert np.all(np.isfinite(cmd.action))


def test_wrong_shape_is_rejected_like_nan():
    _, report = ee_filter().enforce(state(), np.zeros(6), DT)
    assert report.held


def test_input_is_never_mutated():
    desired = np.array([0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 2.0])
    before = desired.copy()
    ee_filter().enforce(state(), desired, DT)
    np.testing.assert_array_equal(desired, before)


def test_translation_step_is_clamped_along_its_direction():
    cmd, report = ee_filter().enforce(state(), np.array([0.03, 0.04, 0, 0, 0, 0, 0.5]), DT)
    assert "translation_step" in report.interventions and not report.held
    np.testing.assert_allclose(cmd.action[:3], [0.012, 0.016, 0.0])
    np.testing.assert_allclose(cmd.joint_targets[:3], [0.312, 0.016, 0.2])


def test_rotation_step_is_clamped():
    cmd, report = ee_filter().enforce(state(), np.array([0, 0, 0, 0.0, 0.0, 0.5, 0.5]), DT)
    assert "rotation_step" in report.interventions
    angle = np.linalg.norm(rotation_vector(rpy_to_matrix(cmd.action[3:6])))
    assert angle == pytest.approx(0.1, abs=1e-9)


def test_workspace_box_holds_the_target_inside():
    s = state(q=(0.59, 0.0, 0.06, 0, 0, 0))
    cmd, report = ee_filter().enforce(s, np.array([0.015, 0, -0.015, 0, 0, 0, 0.5]), DT)
    assert "workspace" in report.interventions
    target = s.ee_position + cmd.action[:3]
    assert np.all(target <= np.array(LIMITS.workspace_max) + 1e-12)
    assert np.all(target >= np.array(LIMITS.workspace_min) - 1e-12)


class OffsetKinematics(CartesianKinematics):
    """IK that lands 5 cm off in z (a badly calibrated model): the post-IK check must catch it."""

    def inverse(self, q_seed, position, rpy):
        return np.concatenate([position + [0, 0, -0.05], rpy])


def test_what_will_be_sent_is_checked_against_the_box_after_ik():
    f = ActionSafety(LIMITS, "ee_delta", 7, OffsetKinematics(), 6)
    inside = state(q=(0.3, 0.0, 0.2, 0, 0, 0))
    _, report = f.enforce(inside, np.array([0, 0, 0.01, 0, 0, 0, 0.5]), DT)
    assert not report.held  # 0.2 - 0.05 is still inside
    low = state(q=(0.3, 0.0, 0.07, 0, 0, 0))  # IK would land at z = 0.02, below the box
    cmd, report = f.enforce(low, np.array([0, 0, 0.0, 0, 0, 0, 0.5]), DT)
    assert not report.held and "workspace" in report.interventions
    assert 0.05 - 0.005 <= cmd.joint_targets[2] < 0.07  # a shortened step that stays in the box
    lowest = state(q=(0.3, 0.0, 0.05, 0, 0, 0))  # on the floor of the box: no step stays inside
    cmd, report = f.enforce(lowest, np.array([0, 0, 0.0, 0, 0, 0, 0.5]), DT)
    assert not report.held and report.interventions == ("workspace",)  # clamped to a zero step
    np.testing.assert_array_equal(cmd.joint_targets, lowest.joint_positions)
    outside = state(q=(0.3, 0.0, 0.7, 0, 0, 0))  # started above the box: moving in is allowed
    _, report = f.enforce(outside, np.array([0, 0, -0.01, 0, 0, 0, 0.5]), DT)
    assert not report.held


def test_gripper_range():
    cmd, report = ee_filter().enforce(state(), np.array([0, 0, 0, 0, 0, 0, 1.0]), DT)
    assert report.interventions == ("gripper",) and cmd.gripper == 0.9


def test_joint_position_and_velocity_limits_on_joint_actions():
    f = ActionSafety(LIMITS, "joint_position", 7, None, 6)
    s = state(q=(0.95, 0, 0, 0, 0, 0))
    desired = np.array([1.5, 0.5, 0, 0, 0, 0, 0.5])
    cmd, report = f.enforce(s, desired, DT)
    assert {"joint_position", "joint_velocity"} <= set(report.interventions)
    assert cmd.joint_targets[0] == 1.0  # position limit
    assert cmd.joint_targets[1] == pytest.approx(0.1)  # 1 rad/s * 0.1 s from the measured 0
    np.testing.assert_allclose(cmd.action[:6], cmd.joint_targets)


def test_random_actions_always_come_out_inside_every_limit():
    rng = np.random.default_rng(0)
    f = ee_filter()
    for _ in range(300):
        q = np.concatenate([rng.uniform([0, -0.5, 0.05], [0.6, 0.5, 0.5]), rng.uniform(-0.5, 0.5, 3)])
        s = state(q, gripper=float(rng.uniform(0, 1)))
        desired = rng.normal(0, 0.5, 7) * rng.choice([0.01, 1, 100])
        if rng.random() < 0.1:
            desired[rng.integers(7)] = np.nan
        cmd, report = f.enforce(s, desired, DT)
        assert np.all(np.isfinite(cmd.joint_targets)) and np.isfinite(cmd.gripper)
        assert np.all(cmd.joint_targets >= np.array(LIMITS.joint_min) - 1e-12)
        assert np.all(cmd.joint_targets <= np.array(LIMITS.joint_max) + 1e-12)
        reach = np.array(LIMITS.joint_max_velocity) * DT + 1e-12
        assert np.all(np.abs(cmd.joint_targets - s.joint_positions) <= reach)
        assert np.linalg.norm(cmd.joint_targets[:3] - s.joint_positions[:3]) <= LIMITS.max_translation_step + 1e-9
        if not report.held:
            assert LIMITS.gripper_min <= cmd.gripper <= LIMITS.gripper_max


def test_limits_merge_bundle_defaults_joint_limits_and_overrides():
    limits = SafetyLimits.from_sources(
        SafetyDefaults(), {"max_translation_step": 0.05, "workspace_min": [0, 0, 0.1]}, (-1.0,), (1.0,), (2.0,)
    )
    assert limits.max_translation_step == 0.05
    assert limits.workspace_min == (0, 0, 0.1)
    assert limits.max_rotation_step == SafetyDefaults().max_rotation_step
    assert limits.joint_max_velocity == (2.0,)
    with pytest.raises(SafetyConfigError, match="unknown limit"):
        SafetyLimits.from_sources(SafetyDefaults(), {"max_speed": 1.0})
    with pytest.raises(SafetyConfigError, match="gripper_min"):
        SafetyLimits.from_sources(SafetyDefaults(), {"gripper_min": 0.9, "gripper_max": 0.1})


def test_ee_actions_without_kinematics_are_refused_with_a_fix():
    with pytest.raises(SafetyConfigError, match="joint_position"):
        ActionSafety(LIMITS, "ee_delta", 7, None, 6)


def test_stats_count_every_intervention():
    stats = SafetyStats()
    f = ee_filter()
    for desired in ([np.nan] * 7, [0.5, 0, 0, 0, 0, 0, 1.0], [0, 0, 0, 0, 0, 0, 0.5]):
        stats.add(f.enforce(state(), np.array(desired), DT)[1])
    assert stats.ticks == 3 and stats.held == 1
    assert stats.counts["non_finite"] == 1 and stats.counts["gripper"] == 1
    assert "translation_step" in stats.summary()
    assert stats.to_json()["interventions"]["non_finite"] == 1
