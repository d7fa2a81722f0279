"""Transient bus faults are absorbed inside the tick; only a run of failed ticks stops the robot.

Corrupt, dropped, duplicated and late replies are injected by the simulator on a real pty; the
production bus, arm and loop must finish the episode, read the right values, and let nothing but
their own error types escape.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pytest
from lifecycle_rig import ARM_IDS, JAW_ID, ReachPolicy, ServoRig
from vla_runtime.drivers.base import DriverError
from vla_runtime.drivers.simdevice import FaultConfig, add_fault_arguments, fault_config_from_args
from vla_runtime.runtime.robot import StopConfig

pytestmark = pytest.mark.timeout(90)
IDS = (*ARM_IDS, JAW_ID)


def test_duplicated_replies_are_dropped_not_mistaken_for_another_servo(servo_rig):
    r = servo_rig(faults=FaultConfig(duplicate_rate=1.0, seed=1), timeout=0.05)  # 12 frames per read on a loaded host
    for _ in range(5):
        positions, _ = r.bus.read_state(IDS)  # was "KeyError: 6": two replies from id 1 filled the count
        assert positions.tolist() == [round(r.sim.servos[i].actual) for i in IDS]
    assert r.sim.faults.duplicated > 0 and r.bus.link.stats.duplicates > 0


def test_late_replies_never_answer_the_wrong_request(servo_rig):
    r = servo_rig(faults=FaultConfig(late_rate=0.1, late_ms=30.0, seed=2), timeout=0.02, retries=3)
    ok = 0
    for k in range(30):
        try:
            if k % 3 == 0:
                r.bus.ping(1 + k % 6)  # a ping, a torque read and a state read interleave on one bus
            elif k % 3 == 1:
                assert r.bus.torque_enabled(IDS) == [False] * len(IDS)
            else:
                positions, _ = r.bus.read_state(IDS)
                assert positions.tolist() == [round(r.sim.servos[i].actual) for i in IDS]
            ok += 1
        except DriverError:
            pass  # the driver's own error type, within the retry budget; anything else fails the test
    assert r.sim.faults.held_back > 0 and ok >= 24  # a 6-servo read is all on time 53 % of attempts


@pytest.mark.parametrize("faults", [FaultConfig(bad_crc_rate=0.05, seed=4), FaultConfig(drop_rate=0.05, seed=5)])
def test_an_episode_with_five_percent_bad_replies_completes(servo_rig, faults):
    r = servo_rig(faults=faults)
    result = r.run(ReachPolicy(), steps=40, rate=25.0)
    assert result.stop_reason == "completed" and result.ticks == 40
    assert r.sim.faults.corrupted + r.sim.faults.dropped > 0  # the faults really happened
    assert r.bus.link.stats.retries > 0


def test_a_dead_bus_stops_after_the_configured_failed_ticks_and_says_it_could_not_confirm(servo_rig):
    r = servo_rig()

    def go_silent(n):
        if n == 3:
            r.sim.faults.config = FaultConfig(drop_rate=1.0)  # every reply lost from now on

    result = r.run(ReachPolicy(on_infer=go_silent), steps=100, stop=StopConfig(max_failed_ticks=4))
    assert result.stop_reason == "bus errors: 4 failed ticks in a row"
    assert result.failed_ticks == 4 and result.ticks < 20
    assert "could not confirm" in result.stopped


def test_isolated_failed_ticks_are_counted_and_the_episode_goes_on(servo_rig):
    r = servo_rig(retries=0)  # no retries: a lost reply fails the whole tick

    def flaky(n):
        if n == 1:  # from the first tick on, after a clean activation
            r.sim.faults.config = FaultConfig(drop_rate=0.08, seed=7)

    result = r.run(ReachPolicy(on_infer=flaky), steps=40, rate=25.0, stop=StopConfig(max_failed_ticks=10))
    assert result.stop_reason == "completed" and result.ticks == 40
    assert result.failed_ticks > 0
    assert all(r.torque().values())  # nothing latched a fault: the default hold still holds


def test_new_fault_flags_parse_and_validate():
    parser = argparse.ArgumentParser()
    add_fault_arguments(parser)
    args = parser.parse_args(["--duplicate-rate", "0.1", "--late-rate", "0.2", "--late-ms", "40"])
    config = fault_config_from_args(args)
    assert (config.duplicate_rate, config.late_rate, config.late_ms) == (0.1, 0.2, 40.0) and config.any
    with pytest.raises(ValueError, match="--late-rate must be within 0..1"):
        FaultConfig(late_rate=2.0)
    with pytest.raises(ValueError, match="--late-ms"):
        FaultConfig(late_ms=-1.0)


def test_a_late_reply_is_held_back_without_stalling_the_device():
    r = ServoRig("dynamixel", faults=FaultConfig(late_rate=1.0, late_ms=60.0), timeout=0.02, retries=0)
    try:
        t0 = time.monotonic()
        with pytest.raises(DriverError):
            r.bus.ping(1)  # the reply comes 60 ms later: past this exchange's 20 ms
        assert time.monotonic() - t0 < 0.2
        time.sleep(0.1)  # it lands now, unasked; the next exchange flushes it and is not fooled
        r.sim.faults.config = FaultConfig()
        assert r.bus.torque_enabled(IDS) == [False] * len(IDS)
        np.testing.assert_array_equal(r.bus.read_state(IDS)[0], [round(r.sim.servos[i].actual) for i in IDS])
    finally:
        r.close()


def test_robotiq_and_rtde_links_shrug_off_duplicated_and_late_replies():
    from vla_runtime.drivers.robotiq.gripper import RobotiqConfig, open_gripper
    from vla_runtime.drivers.robotiq.sim import GripperModel, RobotiqSim
    from vla_runtime.drivers.ur.arm import URConfig, open_arm
    from vla_runtime.drivers.ur.sim import URSim

    faults = FaultConfig(duplicate_rate=0.5, late_rate=0.1, late_ms=30.0, seed=11)
    gripper_sim = RobotiqSim(faults, GripperModel(activation_s=0.1)).start()
    ur = URSim(port=0, script_port=0, faults=faults).start()
    gripper = open_gripper(RobotiqConfig(port=gripper_sim.port, timeout=0.02, retries=3))
    arm = open_arm(URConfig(host="127.0.0.1", port=ur.port, script_port=ur.script_port, start_timeout=2.0))
    try:
        for driver in (gripper, arm):
            driver.configure()
            driver.activate()
        for _ in range(15):
            now = time.monotonic()
            q = arm.read(now).positions
            arm.command(q, now, 0.1)
            assert gripper.command(0.5, now, 0.1) == pytest.approx(0.5, abs=0.01)
            gripper.read(now)
            time.sleep(0.05)
        assert arm.state.value == gripper.state.value == "active"
        assert gripper_sim.faults.duplicated > 0 and ur.faults.duplicated > 0
        assert gripper_sim.faults.held_back > 0 and ur.faults.held_back > 0
    finally:
        for driver in (arm, gripper):
            driver.close()
        gripper_sim.stop()
        ur.stop()


def test_the_worst_case_bus_time_per_tick_is_known_before_the_run(servo_rig):
    r = servo_rig(timeout=0.02, retries=2)
    assert r.bus.link.worst_case_s == pytest.approx(0.06)
    assert r.robot.worst_io_s == pytest.approx(0.06)  # one sync read with every attempt timing out


def test_start_and_stop_survive_a_noisy_bus(servo_rig):
    """Configure and activate are dozens of exchanges each; one that exhausts its retries is run again."""
    r = servo_rig(faults=FaultConfig(bad_crc_rate=0.05, seed=9))  # a 5-servo read fails ~1 % of exchanges
    for _ in range(3):
        r.robot.activate()
        assert all(r.torque().values())
        r.robot.stop(hold=False)
        assert not any(r.torque().values())
    assert r.bus.link.stats.retries > 0


def test_a_failed_first_read_before_the_warm_up_is_tried_again(servo_rig):
    r = servo_rig(retries=0)
    drops = iter([True, True])  # the first state read loses a reply twice, then the bus is clean
    configure = r.robot.configure

    def configure_then_flaky():
        configure()
        r.sim.faults.drop = lambda: next(drops, False)

    r.robot.configure = configure_then_flaky
    result = r.run(ReachPolicy(), steps=3)
    assert next(drops, None) is None  # both drops happened
    assert result.stop_reason == "completed" and result.ticks == 3
    assert "torque on at ids" in result.stopped
