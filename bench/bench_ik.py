"""Per-tick cost of inverse kinematics and the whole safety layer, for each example arm and the sim.

One tick of an end-effector policy on an arm costs: forward kinematics of the measured joints
(the state), then `ActionSafety.enforce` (step and box limits, damped least-squares IK warm-
started from the measured joints, joint limits, and the post-IK pose check). This replays a
random walk of policy-sized actions (within the default bundle's q01..q99: 1.5 cm and 0.08 rad
per tick) from each arm's start pose, timing every tick, and prints p50 / p99 in milliseconds
next to the share of a 100 ms control period. For scale it also times one forward kinematics
through MuJoCo (`mj_kinematics`, C) next to the numpy chain on the same model, in the same run.
p99 includes whatever else the host runs (a loaded 2-core machine preempts for milliseconds).

    python bench/bench_ik.py [--ticks 2000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import vla_runtime.runtime.sim  # noqa: F401 - MuJoCo's offscreen GL platform before MuJoCo loads
from vla_runtime.runtime.kinematics_files import arm_kinematics
from vla_runtime.runtime.manifest import SafetyDefaults
from vla_runtime.runtime.robot import STOP_KEYS
from vla_runtime.runtime.robot_description import load_robot_description
from vla_runtime.runtime.safety import ActionSafety, SafetyLimits
from vla_runtime.runtime.types import RobotState

ARMS = ("koch_dynamixel", "so101_feetech", "ur5e_robotiq", "sim")
STARTS = {"ur5e_robotiq": (0.0, -1.57, 1.57, -1.57, -1.57, 0.0)}  # rad; the servo arms start at joint zero
PERIOD_MS = 100.0  # the default 10 Hz control period


def setup(robot: str):
    desc = load_robot_description(robot)
    if desc.arm.driver == "sim":
        from vla_runtime.runtime.sim.world import SimWorld

        world = SimWorld()
        kin, q0 = world.kinematics, world.data.qpos[world.arm_qpos].copy()
    else:
        kin = arm_kinematics(desc)
        q0 = np.array(STARTS.get(robot, np.zeros(len(desc.arm.joints))), dtype=np.float64)
    limits_only = {k: v for k, v in desc.safety.items() if k not in STOP_KEYS}  # not the on_stop settings
    limits = SafetyLimits.from_sources(SafetyDefaults(), limits_only, desc.joint_min, desc.joint_max,
                                       desc.joint_max_velocity)
    return desc, kin, q0, ActionSafety(limits, "ee_delta", 7, kin, len(desc.arm.joints))


def walk(kin, q0, safety, ticks: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Time every tick of a random walk; the arm tracks its command exactly."""
    rng = np.random.default_rng(seed)
    state_ms, ik_ms, safety_ms, held = [], [], [], 0
    q = q0.copy()
    for _ in range(ticks):
        action = np.concatenate([rng.uniform(-0.015, 0.015, 3), rng.uniform(-0.08, 0.08, 3), [rng.uniform()]])
        t0 = time.perf_counter()
        pos, rpy = kin.forward(q)  # what read_state computes
        t1 = time.perf_counter()
        state = RobotState(q, pos, rpy, 0.5, 0.0)
        command, report = safety.enforce(state, action, PERIOD_MS / 1e3)
        t2 = time.perf_counter()
        try:
            kin.inverse(q, pos + action[:3], rpy)
        except ValueError:
            pass
        t3 = time.perf_counter()
        state_ms.append((t1 - t0) * 1e3)
        safety_ms.append((t2 - t1) * 1e3)
        ik_ms.append((t3 - t2) * 1e3)
        held += report.held
        q = command.joint_targets
    return {"state FK": np.array(state_ms), "IK alone": np.array(ik_ms), "safety (with IK)": np.array(safety_ms),
            "tick total": np.array(state_ms) + np.array(safety_ms), "held": held}


def mujoco_fk_ratio(desc, kin, q0, n: int = 2000) -> tuple[float, float]:
    """(numpy FK, MuJoCo mj_kinematics) median microseconds per call on the same model, interleaved."""
    import mujoco

    if desc.arm.driver == "sim":
        from vla_runtime.runtime.sim.world import SimWorld

        world = SimWorld()
        model, data, adr = world.model, world.data, world.arm_qpos
    else:
        spec = mujoco.MjSpec.from_file(str(Path(desc.arm.kinematics)))
        spec.compiler.boundmass, spec.compiler.boundinertia = 1e-3, 1e-6
        model = spec.compile()
        data, adr = mujoco.MjData(model), np.arange(len(q0))
    ours, theirs = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        kin.pose(q0)
        t1 = time.perf_counter()
        data.qpos[adr] = q0
        mujoco.mj_kinematics(model, data)
        t2 = time.perf_counter()
        ours.append(t1 - t0)
        theirs.append(t2 - t1)
    return float(np.median(ours)) * 1e6, float(np.median(theirs)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=2000, help="ticks per arm (default 2000)")
    args = parser.parse_args()
    print(f"{'arm':16s} {'stage':18s} {'p50 ms':>8s} {'p99 ms':>8s} {'p99 % of 100 ms':>16s}")
    for robot in ARMS:
        desc, kin, q0, safety = setup(robot)
        walk(kin, q0, safety, 50)  # warm caches
        times = walk(kin, q0, safety, args.ticks)
        for stage in ("state FK", "IK alone", "safety (with IK)", "tick total"):
            p50, p99 = np.percentile(times[stage], [50, 99])
            print(f"{robot:16s} {stage:18s} {p50:8.3f} {p99:8.3f} {p99 / PERIOD_MS * 100:15.2f}%")
        numpy_us, mujoco_us = mujoco_fk_ratio(desc, kin, q0)
        print(f"{robot:16s} held {times['held']} of {args.ticks} ticks; one FK: numpy {numpy_us:.1f} us, "
              f"MuJoCo {mujoco_us:.1f} us (x{numpy_us / mujoco_us:.1f})")


if __name__ == "__main__":
    main()
