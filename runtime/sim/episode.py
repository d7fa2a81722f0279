"""One simulated episode as fast as the host allows, scored by whether the named block was lifted.

The loop, safety layer and scheduler are the ones a robot runs; only the clock differs. A
`SkippingClock` counts real elapsed time (so a slow inference still overruns its deadline and is
counted as a miss) but jumps over the idle time the scheduler would sleep. Simulated physics
advances one control period per command regardless, so an episode reaches the same state as a
paced run, only without waiting between ticks: fifty evaluation episodes take minutes, not hours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from vla_runtime.runtime.loop import ControlLoop, LoopConfig
from vla_runtime.runtime.profiler import Profiler
from vla_runtime.runtime.robot import Camera, Kinematics, Robot
from vla_runtime.runtime.safety import SafetyFilter
from vla_runtime.runtime.scheduler import Scheduler, SchedulerConfig
from vla_runtime.runtime.sim.tasks import LIFT_SUCCESS_M
from vla_runtime.runtime.sim.world import SimWorld
from vla_runtime.runtime.types import Policy, RobotState

logger = logging.getLogger(__name__)

NEVER_STOP = 2**31  # consecutive deadline misses: more than any episode has ticks


class SkippingClock:
    """Monotonic time that skips sleeps: work is timed for real, waiting costs nothing."""

    def __init__(self):
        self._skipped = 0.0  # seconds of sleep jumped over so far

    def __call__(self) -> float:
        return time.monotonic() + self._skipped

    def sleep(self, seconds: float) -> None:
        self._skipped += max(0.0, seconds)


class LiftWatch(Robot):
    """The sim robot, plus the first control tick at which the target block is lifted."""

    def __init__(self, robot: Robot, world: SimWorld, block: str, threshold: float = LIFT_SUCCESS_M):
        self.robot, self.world, self.block, self.threshold = robot, world, block, threshold
        self.start_height = float(world.body_position(block)[2])  # m
        self.commands = 0
        self.first_lift_tick: int | None = None  # commands sent when the block first cleared the threshold

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.robot.joint_names

    @property
    def kinematics(self) -> Kinematics | None:
        return self.robot.kinematics

    def activate(self) -> None:
        self.robot.activate()

    def read_state(self, now: float) -> RobotState:
        return self.robot.read_state(now)

    def command(self, joint_targets, gripper, now, period):
        sent = self.robot.command(joint_targets, gripper, now, period)
        self.commands += 1
        if self.first_lift_tick is None and self.lifted() >= self.threshold:
            self.first_lift_tick = self.commands
        return sent

    def hold(self, now: float, period: float) -> None:
        self.robot.hold(now, period)

    def deactivate(self) -> None:
        self.robot.deactivate()

    def close(self) -> None:
        self.robot.close()

    def lifted(self) -> float:
        """Metres the target block is above where it started."""
        return float(self.world.body_position(self.block)[2]) - self.start_height


@dataclass(frozen=True)
class EpisodeOutcome:
    """What one evaluation episode did, in plain numbers (JSON-ready via `to_json`)."""

    seed: int  # sim seed (block placement)
    task: str  # the instruction given
    block: str  # the block the instruction names
    success: bool  # the block ended at least LIFT_SUCCESS_M above its start
    lifted_m: float  # final height gain of the block, m
    time_to_success_s: float | None  # simulated seconds until the block first cleared the threshold
    stop_reason: str  # the loop's: completed | safety rejects | deadline misses | error: ...
    ticks: int
    inferences: int
    deadline_misses: int  # ticks whose work overran the next deadline (real compute time)
    interventions: dict = field(default_factory=dict)  # safety limit -> ticks it clamped
    held: int = 0  # ticks the safety layer held instead of commanding

    def to_json(self) -> dict:
        return dict(self.__dict__)


def run_sim_episode(
    policy: Policy,
    robot: Robot,
    camera: Camera | Mapping[str, Camera],  # {view: Camera} for a policy reading several views
    world: SimWorld,
    safety: SafetyFilter,
    task: str,
    block: str,
    seed: int,
    rate_hz: float,
    loop: LoopConfig,
    recorder=None,
) -> EpisodeOutcome:
    """Run one episode on the skipping clock and score it; the robot ends held and deactivated."""
    watch = LiftWatch(robot, world, block)
    clock = SkippingClock()
    # Misses are counted, never a reason to stop: simulated physics waits for the policy, so an
    # overloaded host changes the timing figures but never the episode (demonstrations stay reproducible).
    timing = SchedulerConfig(rate_hz, max_consecutive_misses=NEVER_STOP)
    sched = Scheduler(timing, Profiler(1.0 / rate_hz), clock=clock, sleep=clock.sleep)
    reset = getattr(policy, "reset", None)
    if reset is not None:
        reset()  # a conditioned head must not see the previous episode's last action
    result = ControlLoop(loop, policy, watch, camera, safety, sched, recorder).run(task)
    lifted = round(watch.lifted(), 4)
    first = watch.first_lift_tick
    return EpisodeOutcome(
        seed=seed,
        task=task,
        block=block,
        success=bool(lifted >= LIFT_SUCCESS_M and not result.stop_reason.startswith("error")),
        lifted_m=lifted,
        time_to_success_s=None if first is None else round(first / rate_hz, 3),
        stop_reason=result.stop_reason,
        ticks=result.ticks,
        inferences=result.inferences,
        deadline_misses=sched.misses,
        interventions={k: int(v) for k, v in result.safety.counts.items() if v},
        held=result.safety.held,
    )

