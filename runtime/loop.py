"""The control loop: camera -> policy -> safety -> robot, paced by absolute deadlines.

A policy predicts a chunk of H actions; the loop executes one step per tick and asks for a new
chunk every `replan_every` ticks. Step i of a chunk belongs to the slot i ticks after the
observation it was predicted from, so steps whose slot already passed (a slow inference, a
skipped tick) are dropped rather than replayed late, which is what makes an arm "step back" at
chunk boundaries. In asynchronous mode inference runs in its own thread while the loop keeps
commanding the current chunk; when a chunk runs out before the next arrives the loop holds
position and counts a starved tick instead of waiting.

Whatever ends the episode (its length, Ctrl-C, an exception, too many deadline misses or
rejected actions), the robot is left holding its measured position and deactivated.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
from dataclasses import dataclass, field

import numpy as np
from vla_runtime.runtime.recorder import FlightRecorder, TickRecord
from vla_runtime.runtime.robot import Camera, Robot
from vla_runtime.runtime.safety import SafetyFilter, SafetyReport, SafetyStats
from vla_runtime.runtime.scheduler import Scheduler
from vla_runtime.runtime.types import ActionChunk, Frame, Policy, RobotState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    steps: int  # ticks in the episode
    replan_every: int = 1  # ticks between inferences; the bundle's control.replan_every by default
    asynchronous: bool = False  # infer in a worker thread while commanding from the current chunk
    max_consecutive_rejects: int = 3  # held (rejected) actions in a row before a safe stop
    # seconds; a frame older than this when inference is due is not inferred on (a frozen camera
    # must not steer the arm): the current chunk continues, or the robot holds when it runs out
    max_frame_age: float = 0.5

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.replan_every < 1:
            raise ValueError(f"replan_every must be >= 1, got {self.replan_every}")
        if self.max_consecutive_rejects < 1:
            raise ValueError("max_consecutive_rejects must be >= 1")
        if self.max_frame_age <= 0:
            raise ValueError("max_frame_age must be > 0 seconds")


@dataclass
class EpisodeResult:
    ticks: int = 0  # ticks run
    stop_reason: str = "completed"  # completed | interrupted | deadline misses | safety rejects | error: ...
    inferences: int = 0  # chunks predicted (warm-up included)
    starved_ticks: int = 0  # ticks with no valid chunk step: the robot held position
    stale_steps_dropped: int = 0  # chunk steps whose slot had passed when the chunk arrived
    stale_frames: int = 0  # inferences skipped because the camera frame was too old
    warmup_s: float = 0.0  # seconds of the first (warm-up) inference
    safety: SafetyStats = field(default_factory=SafetyStats)


class ChunkCursor:
    """Maps a tick's slot to the chunk step predicted for it."""

    def __init__(self):
        self.chunk: ActionChunk | None = None
        self.start_slot = 0  # slot of the observation the chunk was predicted from
        self.chunk_id = -1  # inference id of the chunk (0 = the warm-up), for the recorder

    def set(self, chunk: ActionChunk, start_slot: int, now_slot: int) -> int:
        """Adopt a chunk; returns how many of its steps are already stale at `now_slot`."""
        self.chunk, self.start_slot = chunk, start_slot
        self.chunk_id += 1  # chunks arrive in inference order: one request is in flight at a time
        return min(max(now_slot - start_slot, 0), chunk.horizon)

    def action_at(self, slot: int) -> np.ndarray | None:
        if self.chunk is None:
            return None
        i = slot - self.start_slot
        return self.chunk.actions[i] if 0 <= i < self.chunk.horizon else None


class InferenceWorker:
    """Runs `policy.infer` in a thread; one request in flight, the newest result kept."""

    def __init__(self, policy: Policy, task: str, scheduler: Scheduler):
        self.policy, self.task, self.scheduler = policy, task, scheduler
        self._requests: queue.Queue = queue.Queue(maxsize=1)
        self._results: queue.Queue = queue.Queue()
        self.busy = False
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    def submit(self, frame: Frame, state: RobotState, slot: int) -> None:
        self.busy = True
        self._requests.put((frame, state, slot))

    def poll(self) -> tuple[ActionChunk, int] | None:
        """The finished chunk and its observation slot, if one arrived; re-raises worker errors."""
        try:
            item = self._results.get_nowait()
        except queue.Empty:
            return None
        self.busy = False
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        try:
            self._requests.put_nowait(None)
        except queue.Full:  # a request is still queued: drop it, the episode is over
            self._requests.get_nowait()
            self._requests.put_nowait(None)
        self._thread.join(timeout=5.0)
        if self._thread.is_alive():
            logger.warning("inference thread still busy after 5 s; leaving it behind")

    def _run(self) -> None:
        clock, profiler = self.scheduler._clock, self.scheduler.profiler
        while (item := self._requests.get()) is not None:
            frame, state, slot = item
            t = clock()
            try:
                chunk = self.policy.infer(frame, self.task, state)
            except Exception as exc:  # noqa: BLE001 - handed to the loop thread, which stops safely
                self._results.put(exc)
                continue
            profiler.record("infer", t, clock() - t, track="inference")
            profiler.record_stages(getattr(self.policy, "stage_times", {}) or {}, t, track="inference")
            self._results.put((chunk, slot))


class ControlLoop:
    def __init__(
        self,
        config: LoopConfig,
        policy: Policy,
        robot: Robot,
        camera: Camera,
        safety: SafetyFilter,
        scheduler: Scheduler,
        recorder: FlightRecorder | None = None,
    ):
        self.config, self.policy, self.robot, self.camera = config, policy, robot, camera
        self.safety, self.scheduler, self.recorder = safety, scheduler, recorder
        self._stop_requested = False
        self._clock = scheduler._clock

    def request_stop(self) -> None:
        """Finish the current tick, then stop safely (what the first Ctrl-C does)."""
        self._stop_requested = True

    def run(self, task: str) -> EpisodeResult:
        result = EpisodeResult()
        worker: InferenceWorker | None = None
        restore = self._install_sigint()
        try:
            self.robot.activate()
            now = self._clock()
            state = self.robot.read_state(now)
            frame = self.camera.read(now)
            if now - frame.t_capture > self.config.max_frame_age:
                age_ms = (now - frame.t_capture) * 1e3
                raise RuntimeError(f"camera frame is {age_ms:.0f} ms old at start; check the camera")
            t = self._clock()
            chunk = self.policy.infer(frame, task, state)  # warm-up, and the first chunk
            result.warmup_s = self._clock() - t
            result.inferences += 1
            cursor = ChunkCursor()
            cursor.set(chunk, 0, 0)
            if self.config.asynchronous:
                worker = InferenceWorker(self.policy, task, self.scheduler)
            self.scheduler.start()
            last_plan = 0
            while result.ticks < self.config.steps and not self._stop_requested:
                last_plan = self._tick(task, cursor, worker, last_plan, result)
                result.ticks += 1
                if result.safety.consecutive_held >= self.config.max_consecutive_rejects:
                    result.stop_reason = "safety rejects"
                    logger.error("%d rejected actions in a row: safe stop", result.safety.consecutive_held)
                    break
                if self.scheduler.stop_requested:
                    result.stop_reason = "deadline misses"
                    logger.error("%d deadline misses in a row: safe stop", self.scheduler.consecutive_misses)
                    break
            if self._stop_requested:
                result.stop_reason = "interrupted"
        except KeyboardInterrupt:
            result.stop_reason = "interrupted"
        except Exception as exc:  # noqa: BLE001 - any failure ends in the safe state with one line
            logger.debug("loop failed", exc_info=True)
            result.stop_reason = f"error: {type(exc).__name__}: {exc}"
        finally:
            self._ignore_sigint()  # a further Ctrl-C must not cut the safe stop short
            try:
                if worker is not None:
                    worker.stop()
                self._safe_stop()
            finally:
                self.scheduler.release()
                restore()
        return result

    # -- one tick ----------------------------------------------------------------------------------
    def _tick(self, task, cursor: ChunkCursor, worker, last_plan: int, result: EpisodeResult) -> int:
        sched, period = self.scheduler, self.scheduler.period
        k = sched.tick()
        now = self._clock()
        with sched.section("state"):
            state = self.robot.read_state(now)
        replan = k - last_plan >= self.config.replan_every
        frame, inference = None, -1
        if replan or self.recorder is not None:
            with sched.section("capture"):
                frame = self.camera.read(now)
            if replan and now - frame.t_capture > self.config.max_frame_age:
                result.stale_frames += 1
                logger.warning("camera frame is %.0f ms old: not inferring on it", (now - frame.t_capture) * 1e3)
                replan = False
        if worker is not None:
            done = worker.poll()
            if done is not None:
                result.inferences += 1
                result.stale_steps_dropped += cursor.set(done[0], done[1], k)
            if replan and not worker.busy:
                worker.submit(frame, state, k)
                last_plan, inference = k, result.inferences
        elif replan:
            t = self._clock()
            with sched.section("infer"):
                chunk = self.policy.infer(frame, task, state)
            sched.profiler.record_stages(getattr(self.policy, "stage_times", {}) or {}, t)
            inference = result.inferences
            result.inferences += 1
            result.stale_steps_dropped += cursor.set(chunk, k, k)
            last_plan = k
        desired = cursor.action_at(k)
        with sched.section("safety"):
            if desired is None:  # no chunk step for this slot: hold, which is not a rejected action
                result.starved_ticks += 1
                command, report = self.safety.hold(state), SafetyReport()
            else:
                command, report = self.safety.enforce(state, desired, period)
        with sched.section("command"):
            sent_q, sent_g = self.robot.command(command.joint_targets, command.gripper, now, period)
        result.safety.add(report)
        if self.recorder is not None:
            with sched.section("record"):
                self.recorder.record(TickRecord(
                    k, now, {self.recorder.run.cameras[0]: frame.image},
                    np.concatenate([state.joint_positions, [state.gripper]]), desired, command.action,
                    np.concatenate([sent_q, [sent_g]]), self.safety.executed_action(state, sent_q, sent_g),
                    report.interventions, report.held, cursor.chunk_id, k - cursor.start_slot, inference,
                    sched.profiler.tick_stages_ms(), self._clock() > sched.deadline(k + 1),
                ))
        sched.wait()
        return last_plan

    # -- endings -----------------------------------------------------------------------------------
    def _safe_stop(self) -> None:
        """Hold the measured position with the gripper stopped, then deactivate; never raises."""
        now = self._clock()
        try:
            self.robot.hold(now, self.scheduler.period)
        except Exception as exc:  # noqa: BLE001 - deactivation below must still run
            logger.warning("hold on stop failed: %s", exc)
        try:
            self.robot.deactivate()
        except Exception as exc:  # noqa: BLE001
            logger.error("deactivate on stop failed: %s", exc)

    @staticmethod
    def _ignore_sigint() -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def _install_sigint(self):
        """First Ctrl-C: stop after this tick. Second: KeyboardInterrupt (still ends in the safe state)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum, frame):
            logger.warning("Ctrl-C: stopping after this tick (press again to stop now)")
            self.request_stop()
            signal.signal(signal.SIGINT, signal.default_int_handler)

        signal.signal(signal.SIGINT, on_sigint)
        return lambda: signal.signal(signal.SIGINT, previous)
