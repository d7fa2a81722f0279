"""Lifecycle on real ptys and loopback: warm-up before activation, on_stop, read-back, signals in-process.

Every check reads the simulated devices' own registers (torque, watchdog, program state), not
what the driver believes.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from lifecycle_rig import ARM_IDS, JAW_ID, LIMIT, ReachPolicy, StillCamera
from vla_runtime.drivers.robotiq.gripper import RobotiqConfig, open_gripper
from vla_runtime.drivers.robotiq.sim import GripperModel, RobotiqSim
from vla_runtime.drivers.ur.arm import URConfig, open_arm
from vla_runtime.drivers.ur.controller import ArmModel
from vla_runtime.drivers.ur.program import ProgramState
from vla_runtime.drivers.ur.sim import URSim
from vla_runtime.runtime.loop import ControlLoop, LoopConfig
from vla_runtime.runtime.manifest import SafetyDefaults
from vla_runtime.runtime.robot import DriverRobot, StopConfig
from vla_runtime.runtime.safety import ActionSafety, SafetyLimits
from vla_runtime.runtime.scheduler import Scheduler, SchedulerConfig

pytestmark = pytest.mark.timeout(60)


def test_warm_up_slower_than_the_bus_watchdog_runs_before_torque_and_trips_nothing(servo_rig):
    r = servo_rig(watchdog_s=0.1)  # 100 ms device watchdog, 0.4 s first inference
    torque_at_warmup = []
    policy = ReachPolicy(warmup_s=0.4, on_infer=lambda n: n == 0 and torque_at_warmup.append(r.torque()))
    result = r.run(policy, steps=10)
    assert result.stop_reason == "completed" and result.ticks == 10
    assert result.warmup_s >= 0.4
    assert not any(torque_at_warmup[0].values())  # the warm-up ran before anything was energised
    if hasattr(r.sim.servos[1], "watchdog_tripped"):
        assert not any(s.watchdog_tripped for s in r.sim.servos.values())


def test_default_on_stop_holds_torque_on_and_reads_it_back(servo_rig):
    r = servo_rig()
    result = r.run(ReachPolicy(), steps=6)
    assert result.stop_reason == "completed"
    assert all(r.torque().values())  # arm and jaw still energised: a held object stays held
    assert f"torque on at ids {list(ARM_IDS)} (read back)" in result.stopped
    assert f"torque on at ids [{JAW_ID}] (read back)" in result.stopped
    if hasattr(r.sim.servos[1], "watchdog_tripped"):  # disarmed, so the hold outlives the process
        assert all(s.memory[98] == 0 for s in r.sim.servos.values())
    assert r.arm.state.value == "inactive" and r.arm.holding


def test_on_stop_limp_turns_torque_off(servo_rig):
    r = servo_rig()
    result = r.run(ReachPolicy(), steps=4, stop=StopConfig(on_stop="limp"))
    assert not any(r.torque().values())
    assert f"torque off at ids {list(ARM_IDS)} (read back)" in result.stopped


def test_hold_for_a_time_then_release(servo_rig):
    r = servo_rig()
    t0 = time.monotonic()
    result = r.run(ReachPolicy(), steps=3, stop=StopConfig(on_stop="hold", hold_s=0.3))
    assert time.monotonic() - t0 >= 0.3
    assert not any(r.torque().values()) and "torque off" in result.stopped


def test_on_stop_park_walks_to_the_park_pose_and_holds_there(servo_rig):
    r = servo_rig()
    park = (0.3, -0.3, 0.2, 0.0, -0.1)
    result = r.run(ReachPolicy(), steps=3, stop=StopConfig(on_stop="park", park=park, park_timeout_s=5.0))
    assert result.stop_reason == "completed"
    q = r.robot.read_state(time.monotonic()).joint_positions
    np.testing.assert_allclose(q, park, atol=2e-3)
    assert all(r.torque().values())


def test_sigterm_mid_run_takes_the_safe_stop_and_is_reported(servo_rig):
    r = servo_rig()
    before = signal.getsignal(signal.SIGTERM)
    policy = ReachPolicy(on_infer=lambda n: n == 3 and os.kill(os.getpid(), signal.SIGTERM))
    result = r.run(policy, steps=200)
    assert result.stop_reason == "interrupted" and result.signal == "SIGTERM"
    assert 3 <= result.ticks < 200
    assert all(r.torque().values()) and "torque on" in result.stopped
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_during_warm_up_never_activates(servo_rig):
    r = servo_rig()
    policy = ReachPolicy(on_infer=lambda n: n == 0 and os.kill(os.getpid(), signal.SIGHUP))
    result = r.run(policy, steps=50)
    assert result.signal == "SIGHUP" and result.ticks == 0
    assert not any(r.torque().values())


def test_port_gone_is_reported_as_could_not_confirm(servo_rig):
    r = servo_rig()
    policy = ReachPolicy(on_infer=lambda n: n == 3 and r.sim.vanish())
    result = r.run(policy, steps=50)
    assert result.stop_reason.startswith("error")
    assert "could not confirm" in result.stopped and "torque on" not in result.stopped


def test_stop_config_is_validated():
    with pytest.raises(ValueError, match="on_stop = 'drop'"):
        StopConfig(on_stop="drop")
    with pytest.raises(ValueError, match="needs park"):
        StopConfig(on_stop="park")
    with pytest.raises(ValueError, match="outside its limits"):
        StopConfig(on_stop="park", park=(0.0, 3.0)).check_pose((-1.0, -1.0), (1.0, 1.0))
    with pytest.raises(ValueError, match="max_failed_ticks"):
        StopConfig(max_failed_ticks=0)
    cfg = StopConfig.from_safety({"on_stop": "park", "park": [0, 0.5], "hold_s": 2, "max_joint_step": 1})
    assert cfg.park == (0.0, 0.5) and cfg.hold_s == 2.0


# -- UR + Robotiq: a gripper activation slower than the RTDE watchdog --------------------------------
def test_gripper_activation_slower_than_the_rtde_watchdog_does_not_stop_the_program():
    ur = URSim(port=0, script_port=0, model=ArmModel(max_joint_speed=2.0)).start()
    gripper_sim = RobotiqSim(model=GripperModel(activation_s=1.5)).start()  # watchdog window is 0.5 s
    arm = open_arm(URConfig(host="127.0.0.1", port=ur.port, script_port=ur.script_port, start_timeout=2.0))
    gripper = open_gripper(RobotiqConfig(port=gripper_sim.port))
    robot = DriverRobot("ur5e-robotiq", arm, gripper)
    try:
        n = 6
        limits = SafetyLimits.from_sources(SafetyDefaults(), {}, (-6.3,) * n, (6.3,) * n, (1.0,) * n)
        safety = ActionSafety(limits, "joint_position", n + 1, None, n)
        sched = Scheduler(SchedulerConfig(10.0, spin_s=0.0, max_consecutive_misses=1000))
        loop = ControlLoop(LoopConfig(8, 1, False, 3), UrHold(), robot, StillCamera(), safety, sched)
        t0 = time.monotonic()
        result = loop.run("hold")
        assert time.monotonic() - t0 >= 1.5  # the activation really waited for the sweep
        assert result.stop_reason == "completed" and result.ticks == 8
        assert ur.controller.watchdog_stops == 0
        assert arm.program_state is ProgramState.NOT_RUNNING  # stopped by us at the end, not by the watchdog
        assert "control program stopped" in result.stopped and "go-to active" in result.stopped
    finally:
        robot.close()
        gripper_sim.stop()
        ur.stop()


class UrHold(ReachPolicy):
    def infer(self, frame, task, state=None):
        q = np.asarray(state.joint_positions)
        actions = np.concatenate([np.tile(q, (4, 1)), np.full((4, 1), 0.5)], axis=1)
        from vla_runtime.runtime.types import ActionChunk

        return ActionChunk(actions, tuple(f"q{i}" for i in range(6)) + ("gripper",), frame.t_capture)


assert LIMIT > 0.3  # the park pose above is inside the rig's limits
