"""The simulated UR controller's state: joints, modes, registers, and the control program's behaviour.

The RTDE server only moves bytes; this model is what those bytes read and write. It emulates
what `vla_control.script` does on a real controller (hold, follow targets like servoj with a
speed limit, stop on command) and what the controller does around it (the RTDE watchdog that
stops the program, a protective stop). `step(now)` advances everything from the clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from vla_runtime.drivers.ur.program import Command, ProgramConfig, ProgramState
from vla_runtime.drivers.ur.recipes import INPUT_TYPES, OUTPUT_TYPES, zero_value

logger = logging.getLogger(__name__)

ROBOT_MODE_RUNNING = 7  # robot_mode: powered on, brakes released
SAFETY_NORMAL = 1  # safety_mode values
SAFETY_PROTECTIVE_STOP = 3
RUNTIME_STOPPED = 1  # runtime_state values
RUNTIME_PLAYING = 2


@dataclass(frozen=True)
class ArmModel:
    max_joint_speed: float = 1.0  # rad/s, per joint (a UR5e allows 3.14; slower keeps tests visible)
    tracking_time: float = 0.05  # seconds, first-order time constant of servoj following its target
    initial_q: tuple[float, ...] = (0.0, -1.57, 1.57, -1.57, -1.57, 0.0)  # rad, a tidy home pose

    def __post_init__(self):
        if self.max_joint_speed <= 0 or self.tracking_time <= 0:
            raise ValueError("max_joint_speed and tracking_time must be positive")
        if len(self.initial_q) != 6:
            raise ValueError(f"initial_q needs 6 joints, got {len(self.initial_q)}")


class Controller:
    """Thread-safe controller state shared by every RTDE connection of one simulator."""

    def __init__(self, model: ArmModel | None = None, notify: Callable[[str, int], None] | None = None):
        self.model = model or ArmModel()
        self.notify = notify or (lambda _text, _level: None)  # text message to every connected client
        self.lock = threading.RLock()
        self.t0: float | None = None
        self.timestamp = 0.0  # seconds since the simulator started
        self.q = np.array(self.model.initial_q, dtype=np.float64)  # rad, [6]
        self.qd = np.zeros(6)  # rad/s, [6]
        self.target_q = self.q.copy()
        self.safety_mode = SAFETY_NORMAL
        self.inputs: dict[str, object] = {n: zero_value(t) for n, t in INPUT_TYPES.items()}
        self.outputs: dict[str, object] = {n: zero_value(t) for n, t in OUTPUT_TYPES.items() if n.startswith("output_")}
        self.owners: dict[str, int] = {}  # input variable -> connection id that owns it
        self.program: ProgramConfig | None = None  # the running program's settings, None when stopped
        self.watchdog_stops = 0  # times the RTDE watchdog stopped the program
        self._last_update: dict[str, float] = {}  # input name -> time it was last written
        self._last_step: float | None = None

    # -- inputs from clients --------------------------------------------------------------------
    def claim_inputs(self, conn: int, names: tuple[str, ...]) -> tuple[str, ...]:
        """Types for an input recipe; NOT_FOUND / IN_USE where refused (then nothing is claimed)."""
        with self.lock:
            types = tuple(
                "NOT_FOUND"
                if n not in INPUT_TYPES
                else "IN_USE"
                if self.owners.get(n, conn) != conn
                else INPUT_TYPES[n]
                for n in names
            )
            if not any(t in ("NOT_FOUND", "IN_USE") for t in types):
                self.owners.update(dict.fromkeys(names, conn))
            return types

    def release(self, conn: int) -> None:
        with self.lock:
            self.owners = {n: c for n, c in self.owners.items() if c != conn}

    def write_inputs(self, values: dict[str, object], now: float) -> None:
        with self.lock:
            self.inputs.update(values)
            self._last_update.update(dict.fromkeys(values, now))

    # -- outputs to clients ---------------------------------------------------------------------
    def snapshot(self, names: tuple[str, ...]) -> dict[str, object]:
        with self.lock:
            running = self.program is not None
            live = {
                "timestamp": self.timestamp,
                "actual_q": tuple(self.q),
                "target_q": tuple(self.target_q),
                "actual_qd": tuple(self.qd),
                "target_qd": tuple(self.qd),
                "robot_mode": ROBOT_MODE_RUNNING,
                "safety_mode": self.safety_mode,
                "runtime_state": RUNTIME_PLAYING if running else RUNTIME_STOPPED,
                "speed_scaling": 1.0,
                "target_speed_fraction": 1.0,
                "joint_mode": (253,) * 6,  # JOINT_RUNNING_MODE
                "actual_main_voltage": 48.0,
                "actual_robot_voltage": 48.0,
            }
            out = {}
            for n in names:
                value = live[n] if n in live else self.outputs.get(n)
                out[n] = zero_value(OUTPUT_TYPES[n]) if value is None else value
            return out

    # -- program and physics --------------------------------------------------------------------
    def start_program(self, program: ProgramConfig, now: float) -> None:
        with self.lock:
            self.program = program
            self.target_q = self.q.copy()
            self._last_update[f"input_int_register_{program.counter_reg}"] = now  # watchdog counts from here
            self.outputs[f"output_int_register_{program.state_reg}"] = int(ProgramState.HOLDING)
        self.notify(f"program started (watchdog {program.watchdog_hz:g} Hz)", 3)

    def stop_program(self, why: str, level: int = 3) -> None:
        with self.lock:
            if self.program is None:
                return
            self.outputs[f"output_int_register_{self.program.state_reg}"] = int(ProgramState.NOT_RUNNING)
            self.program = None
            self.target_q = self.q.copy()
        self.notify(f"program stopped: {why}", level)

    def protective_stop(self) -> None:
        with self.lock:
            if self.safety_mode == SAFETY_PROTECTIVE_STOP:
                return
            self.safety_mode = SAFETY_PROTECTIVE_STOP
        self.stop_program("protective stop", level=1)

    def step(self, now: float) -> None:
        with self.lock:
            if self.t0 is None:
                self.t0 = self._last_step = now
            dt = max(0.0, now - self._last_step)
            self._last_step = now
            self.timestamp = now - self.t0
            p = self.program
            if p is not None:
                watched = f"input_int_register_{p.counter_reg}"
                if now - self._last_update.get(watched, now) > 1.0 / p.watchdog_hz:
                    self.watchdog_stops += 1
                    self.stop_program(f"RTDE watchdog: {watched} not updated at {p.watchdog_hz:g} Hz", level=1)
                    p = None
            if p is not None:
                self._run_program(p)
            self._move(dt)

    def _run_program(self, p: ProgramConfig) -> None:
        cmd = self.inputs[f"input_int_register_{p.cmd_reg}"]
        self.outputs[f"output_int_register_{p.echo_reg}"] = self.inputs[f"input_int_register_{p.counter_reg}"]
        if cmd == Command.STOP:
            self.stop_program("stop requested by the client")
        elif cmd == Command.SERVO:
            self.target_q = np.array([self.inputs[f"input_double_register_{p.q_reg + i}"] for i in range(6)])
            self.outputs[f"output_int_register_{p.state_reg}"] = int(ProgramState.FOLLOWING)
        else:
            self.target_q = self.q.copy()  # hold: the servo thread idles where the arm is
            self.outputs[f"output_int_register_{p.state_reg}"] = int(ProgramState.HOLDING)

    def _move(self, dt: float) -> None:
        if self.program is None or self.safety_mode != SAFETY_NORMAL:
            self.qd = np.zeros(6)  # stopj / protective stop: the sim decelerates instantly
            return
        m = self.model
        self.qd = np.clip((self.target_q - self.q) / m.tracking_time, -m.max_joint_speed, m.max_joint_speed)
        self.q = self.q + self.qd * dt
