"""The URScript control program the arm runs on the controller, and its register protocol.

RTDE only moves registers; motion comes from a program on the controller that reads them. The
program ships as package data (`vla_control.script`) and is rendered here with the register
numbers and watchdog rate, so the client and the program can never disagree on them.
"""

from __future__ import annotations

import enum
import re
import string
from dataclasses import dataclass
from importlib import resources

PROGRAM_NAME = "vla_runtime_control"


class Command(enum.IntEnum):
    HOLD = 0  # stay where the arm is
    SERVO = 1  # follow the joint targets with servoj
    STOP = 2  # stopj and end the program


class ProgramState(enum.IntEnum):
    NOT_RUNNING = 0
    HOLDING = 1
    FOLLOWING = 2


@dataclass(frozen=True)
class ProgramConfig:
    register_offset: int = 24  # first register used; 0-23 belong to fieldbus/PLC adapters, 24-47 to RTDE clients
    watchdog_hz: float = 2.0  # the program stops when the counter register is updated more rarely than this
    servo_time: float = 0.008  # seconds each servoj call blocks for (e-Series control period is 0.002)
    lookahead: float = 0.1  # seconds of servoj look-ahead, 0.03..0.2; longer is smoother and laggier
    gain: float = 300.0  # servoj proportional gain, 100..2000
    stop_acc: float = 2.0  # rad/s^2 deceleration of the final stopj

    def __post_init__(self):
        if not 0 <= self.register_offset <= 41:
            raise ValueError(f"register_offset must leave 7 registers within 0..47, got {self.register_offset}")
        if not self.watchdog_hz > 0:
            raise ValueError(f"watchdog_hz must be positive, got {self.watchdog_hz}")
        if not 0.03 <= self.lookahead <= 0.2:
            raise ValueError(f"servoj lookahead must be within 0.03..0.2 s, got {self.lookahead}")
        if not 100 <= self.gain <= 2000:
            raise ValueError(f"servoj gain must be within 100..2000, got {self.gain}")
        if self.servo_time <= 0 or self.stop_acc <= 0:
            raise ValueError("servo_time and stop_acc must be positive")

    # register numbers (int bank for cmd/counter/state/echo, double bank for the targets)
    @property
    def cmd_reg(self) -> int:
        return self.register_offset

    @property
    def counter_reg(self) -> int:
        return self.register_offset + 1

    @property
    def q_reg(self) -> int:
        return self.register_offset

    @property
    def state_reg(self) -> int:
        return self.register_offset

    @property
    def echo_reg(self) -> int:
        return self.register_offset + 1

    def input_names(self) -> tuple[str, ...]:
        ints = (f"input_int_register_{self.cmd_reg}", f"input_int_register_{self.counter_reg}")
        return ints + tuple(f"input_double_register_{self.q_reg + i}" for i in range(6))

    def render(self) -> str:
        text = resources.files("vla_runtime.drivers.ur").joinpath("vla_control.script").read_text()
        return string.Template(text).substitute(
            cmd_reg=self.cmd_reg,
            counter_reg=self.counter_reg,
            q_reg=self.q_reg,
            state_reg=self.state_reg,
            echo_reg=self.echo_reg,
            watchdog_hz=repr(float(self.watchdog_hz)),
            servo_time=repr(float(self.servo_time)),
            lookahead=repr(float(self.lookahead)),
            gain=repr(float(self.gain)),
            stop_acc=repr(float(self.stop_acc)),
        )


_ASSIGN = re.compile(r"^\s+(\w+) = ([0-9.]+)\s*$", re.MULTILINE)


def parse_program(text: str) -> ProgramConfig | None:
    """Recover the settings from a rendered program (what a simulated controller runs); None if not ours."""
    if f"def {PROGRAM_NAME}():" not in text:
        return None
    values = {name: float(value) for name, value in _ASSIGN.findall(text)}
    try:
        return ProgramConfig(
            register_offset=int(values["cmd_reg"]),
            watchdog_hz=values["watchdog_hz"],
            servo_time=values["servo_time"],
            lookahead=values["lookahead"],
            gain=values["gain"],
            stop_acc=values["stop_acc"],
        )
    except (KeyError, ValueError):
        return None
