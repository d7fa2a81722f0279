"""The control loop: camera -> policy -> safety -> robot, paced by absolute deadlines.

A policy predicts a chunk of H actions; the loop executes one step per tick and asks for a new
chunk every `replan_every` ticks. Step i of a chunk belongs to the slot i ticks after the
observation it was predicted from, so steps whose slot already passed (a slow inference, a
skipped tick) are dropped rather than replayed late, which is what makes an arm "step back" at
chunk boundaries. In asynchronous mode inference runs in its own thread while the loop keeps
commanding the current chunk; when a chunk runs out before the next arrives the loop holds
position and counts a starved tick instead of waiting.

Lifecycle: the robot is configured and read, the policy's first inference (the warm-up, which
can take seconds on a real model) runs, and only then is the robot activated (torque, device
watchdogs, the UR program), so no watchdog can trip while the model loads.

Whatever ends the episode (its length, Ctrl-C, SIGTERM, SIGHUP, an exception, too many deadline
misses, missed inferences, rejected actions or failed bus ticks), the robot ends as `StopConfig.on_stop` says (hold
by default, park, or limp) and the devices are asked what state they are really in.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from vla_runtime.runtime.recorder import FlightRecorder, TickRecord
from vla_runtime.runtime.robot import Camera, Robot, StopConfig, TransientRobotError
from vla_runtime.runtime.safety import SafetyFilter, SafetyReport, SafetyStats
from vla_runtime.runtime.scheduler import Scheduler
from vla_runtime.runtime.types import ActionChunk, Frame, Frames, InferenceMiss, Policy, RobotState, capture_time

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    steps: int  # ticks in the episode
    replan_every: int = 1  # ticks between inferences; the bundle's control.replan_every by default
    asynchronous: bool = False  # infer in a worker thread while commanding from the current chunk
    max_consecutive_rejects: int = 3  # held (rejected) actions in a row before a safe stop
    # seconds; a frame older than this when inference is due is not inferred on (a frozen or
    # unplugged camera must not steer the arm): the robot holds until a fresh frame arrives
    max_frame_age: float = 0.5
    stop: StopConfig = field(default_factory=StopConfig)  # on_stop, park pose, failed-tick budget
    # inferences in a row that could not be had in time (InferenceMiss: a remote server late or
    # gone) before a safe stop; meanwhile the current chunk runs out, then the robot holds
    max_missed_inferences: int = 3

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.replan_every < 1:
            raise ValueError(f"replan_every must be >= 1, got {self.replan_every}")
        if self.max_consecutive_rejects < 1:
            raise ValueError("max_consecutive_rejects must be >= 1")
        if self.max_frame_age <= 0:
            raise ValueError("max_frame_age must be > 0 seconds")
        if self.max_missed_inferences < 1:
            raise ValueError("max_missed_inferences must be >= 1")


@dataclass
class EpisodeResult:
    ticks: int = 0  # ticks run
    stop_reason: str = "completed"  # completed | interrupted | deadline misses | safety rejects | error: ...
    inferences: int = 0  # chunks predicted (warm-up included)
    starved_ticks: int = 0  # ticks with no valid chunk step: the robot held position
    stale_steps_dropped: int = 0  # chunk steps whose slot had passed when the chunk arrived
    stale_frames: int = 0  # ticks held (inference skipped) because the camera frame was too old
    warmup_s: float = 0.0  # seconds of the first (warm-up) inference
    failed_ticks: int = 0  # ticks whose bus exchange failed (timeout, corrupt reply); the devices held
    consecutive_failed: int = 0
    missed_inferences: int = 0  # inferences that raised InferenceMiss (late or unreachable server)
    consecutive_missed: int = 0
    last_miss: str = ""  # why the latest one was missed
    signal: str | None = None  # "SIGINT" / "SIGTERM" / "SIGHUP" when a signal ended the episode
    stopped: str = ""  # the devices' own account of their state after the stop (or "could not confirm")
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

    def submit(self, frame: Frames, state: RobotState, slot: int) -> None:
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
        camera: Camera | Mapping[str, Camera],  # one camera, or {view: Camera} for a policy reading several
        safety: SafetyFilter,
        scheduler: Scheduler,
        recorder: FlightRecorder | None = None,
    ):
        self.config, self.policy, self.robot = config, policy, robot
        if not isinstance(camera, Mapping):  # a lone camera is the recording's first view
            camera = {recorder.run.cameras[0] if recorder is not None else "camera": camera}
        self.cameras: dict[str, Camera] = dict(camera)
        self.safety, self.scheduler, self.recorder = safety, scheduler, recorder
        self._stop_requested = False
        self._signal: str | None = None
        self._activated = False
        self._last_gripper: float | None = None  # the last opening sent, kept through a park
        self._fresh = True  # the last frame checked was fresh (logs the start of a stale spell once)
        self._clock = scheduler._clock

    def request_stop(self) -> None:
        """Finish the current tick, then stop safely (what the first Ctrl-C does)."""
        self._stop_requested = True

    def run(self, task: str) -> EpisodeResult:
        result = EpisodeResult()
        worker: InferenceWorker | None = None
        restore = self._install_signals()
        try:
            self.robot.configure()  # open and verify; reads allowed, no torque, no watchdog yet
            state = self._first_state()
            now = self._clock()
            frame = self._observation(self._capture(now))
            if now - capture_time(frame) > self.config.max_frame_age:
                age_ms = (now - capture_time(frame)) * 1e3
                raise RuntimeError(f"camera frame is {age_ms:.0f} ms old at start; check the camera")
            t = self._clock()
            chunk = self._warm_up(frame, task, state, result)  # and the first chunk
            result.warmup_s = self._clock() - t
            result.inferences += 1
            if not self._stop_requested:  # a signal during the warm-up: never activate
                self._activated = True
                self.robot.activate()  # torque, watchdogs, the UR program: the ticks start at once
                logger.info(
                    "activated after a %.0f ms warm-up; running %d ticks", result.warmup_s * 1e3, self.config.steps
                )
            cursor = ChunkCursor()
            cursor.set(chunk, 0, 0)
            if self.config.asynchronous:
                worker = InferenceWorker(self.policy, task, self.scheduler)
            self.scheduler.start()
            last_plan = 0
            while result.ticks < self.config.steps and not self._stop_requested:
                last_plan = self._tick(task, cursor, worker, last_plan, result)
                result.ticks += 1
                if result.consecutive_failed >= self.config.stop.max_failed_ticks:
                    result.stop_reason = f"bus errors: {result.consecutive_failed} failed ticks in a row"
                    logger.error("%d failed bus ticks in a row: safe stop", result.consecutive_failed)
                    break
                if result.safety.consecutive_held >= self.config.max_consecutive_rejects:
                    result.stop_reason = "safety rejects"
                    logger.error("%d rejected actions in a row: safe stop", result.safety.consecutive_held)
                    break
                if result.consecutive_missed >= self.config.max_missed_inferences:
                    result.stop_reason = (f"inference missed {result.consecutive_missed} times in a row "
                                          f"({result.last_miss})")
                    logger.info("%d missed inferences in a row: safe stop", result.consecutive_missed)
                    break
                if self.scheduler.stop_requested:
                    result.stop_reason = "deadline misses"
                    logger.error("%d deadline misses in a row: safe stop", self.scheduler.consecutive_misses)
                    break
            if self._stop_requested:
                result.stop_reason = "interrupted"
        except KeyboardInterrupt:
            result.stop_reason = "interrupted"
        except _NoInference as exc:  # the robot was never activated
            result.stop_reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - any failure ends in the safe state with one line
            logger.debug("loop failed", exc_info=True)
            result.stop_reason = f"error: {type(exc).__name__}: {exc}"
        finally:
            self._ignore_signals()  # a further Ctrl-C / SIGTERM must not cut the safe stop short
            try:
                if worker is not None:
                    worker.stop()
                result.stopped = self._safe_stop()
            finally:
                self.scheduler.release()
                restore()
        result.signal = self._signal
        return result

    # -- one tick ----------------------------------------------------------------------------------
    def _tick(self, task, cursor: ChunkCursor, worker, last_plan: int, result: EpisodeResult) -> int:
        sched, period = self.scheduler, self.scheduler.period
        k = sched.tick()
        now = self._clock()
        try:
            with sched.section("state"):
                state = self.robot.read_state(now)
        except TransientRobotError as exc:
            return self._failed_tick(exc, result, last_plan)
        replan = k - last_plan >= self.config.replan_every
        frames, frame, inference, stale = {}, None, -1, False
        if replan or self.recorder is not None:
            with sched.section("capture"):
                frames = self._capture(now)
            frame = self._observation(frames)
            if replan and now - capture_time(frame) > self.config.max_frame_age:
                if self._fresh:
                    age_ms = (now - capture_time(frame)) * 1e3
                    logger.warning("camera frame is %.0f ms old: holding until frames return", age_ms)
                result.stale_frames += 1
                replan, stale = False, True  # and every tick until a fresh frame: replanning stays due
            self._fresh = not stale
        if worker is not None:
            try:
                done = worker.poll()
            except InferenceMiss as exc:
                done = None
                self._missed(exc, result)
            if done is not None:
                result.consecutive_missed = 0
                result.inferences += 1
                result.stale_steps_dropped += cursor.set(done[0], done[1], k)
            if replan and not worker.busy:
                worker.submit(frame, state, k)
                last_plan, inference = k, result.inferences
        elif replan:
            t = self._clock()
            try:
                with sched.section("infer"):
                    chunk = self.policy.infer(frame, task, state)
            except InferenceMiss as exc:  # keep the chunk; replanning stays due, so the next tick tries again
                self._missed(exc, result)
            else:
                sched.profiler.record_stages(getattr(self.policy, "stage_times", {}) or {}, t)
                inference = result.inferences
                result.inferences += 1
                result.consecutive_missed = 0
                result.stale_steps_dropped += cursor.set(chunk, k, k)
                last_plan = k
        desired = None if stale else cursor.action_at(k)  # a blind camera holds the arm
        with sched.section("safety"):
            if desired is None:  # no chunk step for this slot: hold, which is not a rejected action
                result.starved_ticks += 1
                command, report = self.safety.hold(state), SafetyReport()
            else:
                command, report = self.safety.enforce(state, desired, period)
        try:
            with sched.section("command"):
                sent_q, sent_g = self.robot.command(command.joint_targets, command.gripper, now, period)
        except TransientRobotError as exc:
            return self._failed_tick(exc, result, last_plan)
        result.consecutive_failed = 0
        self._last_gripper = sent_g
        result.safety.add(report)
        if self.recorder is not None:
            with sched.section("record"):
                self.recorder.record(TickRecord(
                    k, now, {view: f.image for view, f in frames.items()}, state.joint_positions, state.gripper,
                    desired, command.action, sent_q, sent_g, self.safety.executed_action(state, sent_q, sent_g),
                    report.interventions, report.held, cursor.chunk_id, k - cursor.start_slot, inference,
                    sched.profiler.tick_stages(), self._clock() > sched.deadline(k + 1),
                ))
        sched.wait()
        return last_plan

    def _capture(self, now: float) -> dict[str, Frame]:
        """The newest frame of every view (a camera never waits for a new one)."""
        return {view: camera.read(now) for view, camera in self.cameras.items()}

    @staticmethod
    def _observation(frames: dict[str, Frame]) -> Frames:
        """What the policy infers on: the lone Frame, or {view: Frame} when it reads several views."""
        return next(iter(frames.values())) if len(frames) == 1 else frames

    def _first_state(self) -> RobotState:
        """The state the warm-up infers on; a failed read is tried again, as a failed tick would be."""
        for _ in range(self.config.stop.max_failed_ticks - 1):
            try:
                return self.robot.read_state(self._clock())
            except TransientRobotError as exc:
                logger.warning("first state read failed (%s); trying again", exc)
                time.sleep(self.scheduler.period)
        return self.robot.read_state(self._clock())

    def _warm_up(self, frame: Frames, task: str, state: RobotState, result: EpisodeResult) -> ActionChunk:
        """The first inference, tried again (one period apart) while it is missed; never activates without it."""
        while True:
            try:
                return self.policy.infer(frame, task, state)
            except InferenceMiss as exc:
                self._missed(exc, result)
                if result.consecutive_missed >= self.config.max_missed_inferences:
                    raise _NoInference(f"inference missed {result.consecutive_missed} times in a row before the "
                                       f"robot was activated ({result.last_miss})") from None
                time.sleep(self.scheduler.period)

    def _missed(self, exc: InferenceMiss, result: EpisodeResult) -> None:
        """An inference could not be had in time: the current chunk runs on (then the robot holds)."""
        result.missed_inferences += 1
        result.consecutive_missed += 1
        result.last_miss = str(exc)
        if result.consecutive_missed == 1:
            # info: the episode line counts them, and the stop line names the last one
            logger.info("inference missed (%s): executing the current chunk, then holding", exc)
        if self.recorder is not None:
            self.recorder.event(self._clock(), f"tick {self.scheduler.index}: inference missed: {exc}")

    def _failed_tick(self, exc: Exception, result: EpisodeResult, last_plan: int) -> int:
        """A bus exchange failed this tick: the devices keep their last goal; count it and move on."""
        result.failed_ticks += 1
        result.consecutive_failed += 1
        logger.warning("tick failed (%d in a row): %s", result.consecutive_failed, exc)
        if self.recorder is not None:
            self.recorder.event(self._clock(), f"tick {self.scheduler.index} failed: {exc}")
        self.scheduler.wait()
        return last_plan

    # -- endings -----------------------------------------------------------------------------------
    def _safe_stop(self) -> str:
        """Hold (and park) as configured, stop, then read back what the devices report; never raises."""
        cfg, period = self.config.stop, self.scheduler.period
        if self._activated:
            try:
                self.robot.hold(self._clock(), period)
            except Exception as exc:  # noqa: BLE001 - the stop below must still run
                logger.warning("hold on stop failed: %s", exc)
            if cfg.on_stop == "park":
                self._park(cfg)
        hold = cfg.on_stop != "limp"
        try:
            self.robot.stop(hold=hold)
        except Exception as exc:  # noqa: BLE001
            logger.error("stop failed: %s", exc)
        if hold and self._activated and cfg.hold_s is not None:
            logger.info("holding for %.1f s, then torque off", cfg.hold_s)
            time.sleep(cfg.hold_s)
            try:
                self.robot.release()
            except Exception as exc:  # noqa: BLE001
                logger.error("release after hold failed: %s", exc)
        try:
            return self.robot.confirm_stop()
        except Exception as exc:  # noqa: BLE001
            return f"could not confirm: {exc}"

    def _park(self, cfg: StopConfig) -> None:
        """Walk to the park pose at the joints' velocity limits, one period at a time; give up at the timeout."""
        period = self.scheduler.period
        target = np.asarray(cfg.park, dtype=np.float64)
        vmax = getattr(getattr(self.safety, "limits", None), "joint_max_velocity", None)  # rad/s [J]
        vmax = np.asarray(vmax, dtype=np.float64) if vmax is not None and len(vmax) == len(target) else 0.5
        deadline = time.monotonic() + cfg.park_timeout_s
        while time.monotonic() < deadline:
            try:
                state = self.robot.read_state(self._clock())
                error = target - state.joint_positions
                if np.all(np.abs(error) <= 1e-3):
                    logger.info("parked")
                    return
                step = np.clip(error, -vmax * period, vmax * period)
                gripper = state.gripper if self._last_gripper is None else self._last_gripper
                self.robot.command(state.joint_positions + step, gripper, self._clock(), period)
            except TransientRobotError:
                pass
            except Exception as exc:  # noqa: BLE001 - stop where it is; the hold/stop below still runs
                logger.warning("park interrupted: %s", exc)
                return
            time.sleep(period)
        logger.warning("park pose not reached in %.1f s; holding where the arm is", cfg.park_timeout_s)

    @staticmethod
    def _ignore_signals() -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)

    def _install_signals(self):
        """Ctrl-C, SIGTERM (kill, systemctl/docker stop) and SIGHUP (terminal closed) all take the same
        path: the first stops after this tick; a second raises KeyboardInterrupt, which still ends in
        the safe stop."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

        def on_signal(signum, frame):
            name = signal.Signals(signum).name
            if self._signal is not None:
                raise KeyboardInterrupt
            logger.warning("%s: stopping after this tick (again to stop now)", "Ctrl-C" if name == "SIGINT" else name)
            self._signal = name
            self.request_stop()

        for signum in STOP_SIGNALS:
            signal.signal(signum, on_signal)

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return restore


class _NoInference(Exception):
    """The warm-up inference was missed too often: stop before activating."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # each ends the episode through the safe stop
