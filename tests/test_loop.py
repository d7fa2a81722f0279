"""The control loop end to end on the simulated robot: every head, both modes, every way to stop."""

import math
import os
import signal
import time

import numpy as np
import pytest
import vla_runtime.runtime.sim  # noqa: F401 - picks MuJoCo's offscreen GL before mujoco is imported

pytest.importorskip("mujoco", reason="needs MuJoCo (pip install vla-runtime[sim])")

from vla_runtime.runtime.loop import ChunkCursor, ControlLoop, LoopConfig  # noqa: E402
from vla_runtime.runtime.manifest import SafetyDefaults  # noqa: E402
from vla_runtime.runtime.robot import Robot  # noqa: E402
from vla_runtime.runtime.robot_description import load_robot_description  # noqa: E402
from vla_runtime.runtime.safety import ActionSafety, SafetyLimits  # noqa: E402
from vla_runtime.runtime.scheduler import Scheduler, SchedulerConfig  # noqa: E402
from vla_runtime.runtime.scripted import EE_DELTA_NAMES, GraspScript, ScriptedGraspPolicy  # noqa: E402
from vla_runtime.runtime.sim.robot import SimCamera, SimRobot  # noqa: E402
from vla_runtime.runtime.sim.world import SimConfig, SimWorld  # noqa: E402
from vla_runtime.runtime.types import ActionChunk, Policy, capture_time  # noqa: E402


class FastClock:
    """Real time plus whatever the scheduler slept: pacing logic runs unchanged, without waiting."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.perf_counter() + self.offset

    def sleep(self, seconds: float) -> None:
        self.offset += max(seconds, 0.0)


class RecordingRobot(Robot):
    """Wraps a robot and logs (measured state, joints sent, gripper sent) for every command."""

    def __init__(self, inner: Robot):
        self.inner, self.name = inner, inner.name
        self.log, self._state = [], None

    @property
    def joint_names(self):
        return self.inner.joint_names

    @property
    def kinematics(self):
        return self.inner.kinematics

    def activate(self):
        self.inner.activate()

    def read_state(self, now):
        self._state = self.inner.read_state(now)
        return self._state

    def command(self, joint_targets, gripper, now, period):
        q, g = self.inner.command(joint_targets, gripper, now, period)
        self.log.append((self._state, q, g))
        return q, g

    def hold(self, now, period):
        self.inner.hold(now, period)

    def deactivate(self):
        self.inner.deactivate()


class Rig:
    def __init__(self, defaults=None, seed=0):
        defaults = defaults or SafetyDefaults()
        desc = load_robot_description("sim")
        self.world = SimWorld(SimConfig(seed=seed))
        self.sim = SimRobot(self.world)
        self.robot = RecordingRobot(self.sim)
        self.camera = SimCamera(self.world, 64, 64)
        self.limits = SafetyLimits.from_sources(
            defaults, desc.safety, desc.joint_min, desc.joint_max, desc.joint_max_velocity
        )
        self.safety = ActionSafety(self.limits, "ee_delta", 7, self.sim.kinematics, 6)

    def run(self, policy, steps, replan=1, asynchronous=False, rate=10.0, fast=True, max_misses=1000):
        clock = FastClock() if fast else None
        kwargs = dict(clock=clock, sleep=clock.sleep) if fast else {}
        self.scheduler = Scheduler(SchedulerConfig(rate, spin_s=0.0, max_consecutive_misses=max_misses), **kwargs)
        config = LoopConfig(steps, replan, asynchronous, self.limits.max_consecutive_rejects)
        loop = ControlLoop(config, policy, self.robot, self.camera, self.safety, self.scheduler)
        try:
            return loop.run("pick up the red block")
        finally:
            for camera in self.camera.values() if isinstance(self.camera, dict) else (self.camera,):
                camera.close()

    def assert_commands_inside_limits(self, dt):
        lim = self.limits
        assert self.robot.log, "no command reached the robot"
        for state, q, g in self.robot.log:
            assert np.all(np.isfinite(q)) and math.isfinite(g)
            assert np.all(q >= np.array(lim.joint_min) - 1e-9) and np.all(q <= np.array(lim.joint_max) + 1e-9)
            step = np.abs(q - state.joint_positions)
            assert np.all(step <= np.array(lim.joint_max_velocity) * dt + 1e-9)
            assert lim.gripper_min <= g <= lim.gripper_max
            pos, _ = self.sim.kinematics.forward(q)
            assert np.all(pos >= np.array(lim.workspace_min) - 0.01)  # 1 cm: IK residual + joint clamps
            assert np.all(pos <= np.array(lim.workspace_max) + 0.01)
            assert np.linalg.norm(pos - state.ee_position) <= lim.max_translation_step + 0.01


@pytest.mark.parametrize("head", ["parallel", "tokens", "flow"])
def test_each_head_runs_in_the_loop_and_only_safe_commands_reach_the_robot(head, tiny_bundle):
    from vla_runtime.runtime.policy import load_policy

    policy = load_policy(tiny_bundle(head), backend="cpu")
    m = policy.manifest
    rig = Rig(defaults=m.safety)
    steps, replan = 12, m.control.replan_every
    try:
        result = rig.run(policy, steps, replan=replan, rate=m.control.rate_hz)
    finally:
        policy.close()
    assert result.stop_reason == "completed", result.stop_reason
    assert result.ticks == steps and len(rig.robot.log) == steps
    planned, last = 0, 0  # replan rule over the slots actually run (a slow host may skip some)
    for k in rig.scheduler.profiler.slots:
        if k - last >= replan:
            planned, last = planned + 1, k
    assert result.inferences == 1 + planned  # warm-up, then every K slots
    assert result.starved_ticks == 0
    rig.assert_commands_inside_limits(1.0 / m.control.rate_hz)
    assert not rig.sim.active  # deactivated at the end


def test_async_inference_keeps_commanding_from_the_chunk(tiny_bundle):
    from vla_runtime.runtime.policy import load_policy

    policy = load_policy(tiny_bundle("parallel"), backend="cpu")
    rig = Rig(defaults=policy.manifest.safety)
    try:
        result = rig.run(policy, 12, replan=2, asynchronous=True)
    finally:
        policy.close()
    assert result.stop_reason == "completed" and len(rig.robot.log) == 12
    assert result.inferences >= 2
    rig.assert_commands_inside_limits(0.1)


def test_scripted_policy_picks_up_the_red_block():
    rig = Rig(seed=1)
    start = rig.world.body_position("red_block")
    policy = ScriptedGraspPolicy(lambda: rig.world.body_position("red_block"))
    result = rig.run(policy, 70, replan=2)
    assert result.stop_reason == "completed"
    assert policy.phase == "lift"
    assert rig.world.body_position("red_block")[2] - start[2] > 0.08
    rig.assert_commands_inside_limits(0.1)


class SlowPolicy(Policy):
    """Scripted actions after a real delay, to exercise overruns and the async worker."""

    def __init__(self, delay, horizon=4):
        self.delay, self.horizon, self.calls = delay, horizon, 0

    def infer(self, frame, task, state=None):
        self.calls += 1
        time.sleep(self.delay)
        actions = np.zeros((self.horizon, 7))
        actions[:, 0], actions[:, 6] = 0.005, 1.0
        return ActionChunk(actions, EE_DELTA_NAMES, frame.t_capture)


def test_async_mode_survives_inference_slower_than_a_period():
    rig = Rig()
    result = rig.run(SlowPolicy(0.12), 12, replan=1, asynchronous=True, rate=20.0, fast=False)
    assert result.ticks == 12 and len(rig.robot.log) == 12  # one command every tick regardless
    assert result.inferences < 12  # the worker could not keep up with every tick ...
    assert result.stale_steps_dropped > 0  # ... so steps whose slot had passed were dropped, not replayed
    rig.assert_commands_inside_limits(0.05)


def test_sync_overruns_are_counted_and_stop_the_robot_safely():
    rig = Rig()
    result = rig.run(SlowPolicy(0.12), 20, replan=1, rate=20.0, fast=False, max_misses=2)
    assert result.stop_reason == "deadline misses"
    assert rig.scheduler.misses >= 2 and rig.scheduler.skipped_slots >= 2
    assert result.ticks < 20 and not rig.sim.active


class NaNPolicy(Policy):
    def infer(self, frame, task, state=None):
        return ActionChunk(np.full((2, 7), np.nan), EE_DELTA_NAMES, frame.t_capture)


def test_nan_actions_hold_position_then_safe_stop():
    rig = Rig()
    result = rig.run(NaNPolicy(), 20)
    assert result.stop_reason == "safety rejects"
    assert result.ticks == rig.limits.max_consecutive_rejects
    assert result.safety.counts["non_finite"] == result.ticks
    for state, q, g in rig.robot.log:
        np.testing.assert_array_equal(q, state.joint_positions)  # held where it was
        assert g == pytest.approx(state.gripper)
    assert not rig.sim.active


class FailingPolicy(Policy):
    def __init__(self, fail_on, exc):
        self.calls, self.fail_on, self.exc = 0, fail_on, exc

    def infer(self, frame, task, state=None):
        self.calls += 1
        if self.calls == self.fail_on:
            raise self.exc
        return ActionChunk(np.tile([0.0, 0, 0, 0, 0, 0, 1.0], (2, 1)), EE_DELTA_NAMES, frame.t_capture)


@pytest.mark.parametrize(
    "exc, reason",
    [(RuntimeError("graph exploded"), "error: RuntimeError: graph exploded"), (KeyboardInterrupt(), "interrupted")],
)
def test_errors_and_ctrl_c_inside_inference_end_in_the_safe_state(exc, reason):
    rig = Rig()
    result = rig.run(FailingPolicy(3, exc), 20)
    assert result.stop_reason == reason
    assert result.ticks == 2  # warm-up covers tick 0, tick 1 infers, tick 2 fails while inferring
    assert not rig.sim.active


class FaultingRobot(RecordingRobot):
    """A servo that faults on the third command, and whose hold fails too (the bus is gone)."""

    deactivated = False

    def command(self, joint_targets, gripper, now, period):
        if len(self.log) == 2:
            raise OSError("servo 3: overload error")
        return super().command(joint_targets, gripper, now, period)

    def hold(self, now, period):
        raise OSError("port lost")

    def deactivate(self):
        self.deactivated = True
        super().deactivate()


def test_a_servo_fault_mid_episode_still_ends_deactivated():
    rig = Rig()
    rig.robot = FaultingRobot(rig.sim)
    result = rig.run(FailingPolicy(99, None), 10)
    assert result.stop_reason == "error: OSError: servo 3: overload error"
    assert result.ticks == 2 and rig.robot.deactivated and not rig.sim.active


class SigintPolicy(FailingPolicy):
    def infer(self, frame, task, state=None):
        if self.calls == 2:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in the terminal delivers
        return super().infer(frame, task, state)


def test_ctrl_c_finishes_the_tick_then_stops_safely_and_restores_the_handler():
    before = signal.getsignal(signal.SIGINT)
    rig = Rig()
    result = rig.run(SigintPolicy(99, None), 30)
    assert result.stop_reason == "interrupted"
    assert result.ticks < 30 and len(rig.robot.log) == result.ticks  # the interrupted tick still completed
    assert not rig.sim.active
    assert signal.getsignal(signal.SIGINT) is before


class FrozenCamera(SimCamera):
    """A camera that freezes after its first frame and keeps handing that one out (a known V4L2 failure)."""

    first = None

    def read(self, now):
        self.first = self.first or super().read(now)
        return self.first


def test_a_frozen_camera_is_not_inferred_on_and_the_robot_holds():
    rig = Rig()
    rig.camera.close()
    rig.camera = FrozenCamera(rig.world, 32, 32)
    policy = FailingPolicy(99, None)
    result = rig.run(policy, 12, replan=1)  # at 10 Hz the frame is older than 0.5 s from tick 5 on
    assert result.stop_reason == "completed"
    assert result.stale_frames >= 1  # replans on the frozen frame were refused
    assert policy.calls < 12 and result.starved_ticks >= 1  # chunks ran out: the robot held
    state, q, _ = rig.robot.log[-1]
    np.testing.assert_array_equal(q, state.joint_positions)


class ViewsPolicy(Policy):
    """Keeps what each inference was handed; opens the gripper in place."""

    def __init__(self):
        self.seen = []

    def infer(self, frame, task, state=None):
        self.seen.append(frame)
        return ActionChunk(np.tile([0.0, 0, 0, 0, 0, 0, 1.0], (2, 1)), EE_DELTA_NAMES, capture_time(frame))


def test_every_view_reaches_the_policy_and_one_frozen_view_holds_the_robot():
    rig = Rig()
    rig.camera.close()
    rig.camera = {"front": SimCamera(rig.world, 32, 32, "front"), "wrist": FrozenCamera(rig.world, 32, 32, "wrist")}
    policy = ViewsPolicy()
    result = rig.run(policy, 12, replan=1)  # the wrist frame is older than 0.5 s from tick 5 on
    first = policy.seen[0]
    assert list(first) == ["front", "wrist"] and first["front"].image.shape == (32, 32, 3)
    assert not np.array_equal(first["front"].image, first["wrist"].image)  # two cameras, two pictures
    assert result.stop_reason == "completed" and result.stale_frames >= 1  # a fresh front view is not enough
    assert len(policy.seen) < 12 and result.starved_ticks >= 1


def test_chunk_cursor_aligns_steps_to_slots():
    chunk = ActionChunk(np.arange(4 * 7, dtype=float).reshape(4, 7), EE_DELTA_NAMES, 0.0)
    cursor = ChunkCursor()
    assert cursor.action_at(0) is None
    assert cursor.set(chunk, start_slot=10, now_slot=12) == 2  # two steps went stale in flight
    np.testing.assert_array_equal(cursor.action_at(12), chunk.actions[2])
    assert cursor.action_at(14) is None  # exhausted: the loop holds
    assert cursor.action_at(9) is None


def test_loop_config_validation():
    with pytest.raises(ValueError):
        LoopConfig(steps=0)
    with pytest.raises(ValueError):
        LoopConfig(steps=5, replan_every=0)
    assert GraspScript().horizon >= 1
