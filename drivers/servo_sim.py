"""What the simulated serial servo buses share: a shaft that moves toward its goal, and a bus of them.

The family modules (`dynamixel.sim`, `feetech.sim`) keep what is protocol-specific: the memory
map, how values are stored, which writes a servo refuses, and how each instruction is answered.
"""

from __future__ import annotations

import argparse
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from vla_runtime.drivers.simdevice import (
    FaultConfig,
    PtySimulator,
    add_fault_arguments,
    fault_config_from_args,
    serve_until_interrupted,
)


@dataclass
class SimulatedServo(ABC):
    """One servo: a shaft in ticks and the byte memory a master reads and writes."""

    id: int
    model: int
    actual: float = 2048.0  # shaft position, ticks, before the homing offset is applied
    blocked_below: float | None = None  # an object in the jaws: the shaft cannot go below this tick
    speed: float = 4096.0  # ticks/s the shaft moves at toward the goal (about 1 rev/s)
    memory: bytearray = field(default_factory=bytearray)  # memory map; each family gives it its modelled size

    @abstractmethod
    def step(self, dt: float, now: float) -> None:
        """Advance the servo by `dt` s to monotonic time `now`: motion, present values, watchdogs."""

    @abstractmethod
    def write(self, addr: int, data: bytes) -> int | None:
        """Apply a WRITE as the device does (it may refuse or alter it); the status error where the family has one."""

    @abstractmethod
    def raise_hardware_error(self, bits: int) -> None:
        """Latch hardware-error `bits` (each family defaults to overload) and cut torque."""

    def read(self, addr: int, size: int) -> bytes | None:
        """Bytes at `addr`, or None past the end of the modelled memory."""
        if addr + size > len(self.memory):
            return None
        return bytes(self.memory[addr : addr + size])

    def move_toward(self, target: float, dt: float) -> float:
        """Move the shaft toward `target` ticks for `dt` s (> 0) at `speed`; returns its velocity, ticks/s."""
        move = max(-self.speed * dt, min(self.speed * dt, target - self.actual))
        if self.blocked_below is not None and move < 0 and self.actual + move < self.blocked_below:
            move = min(0.0, max(move, self.blocked_below - self.actual))
        self.actual += move
        return move / dt


class ServoBusSim(PtySimulator):
    """Servos on one pty, stepped on every tick; `servos[id]` is open to tests for inspection."""

    def __init__(self, servos: Iterable[SimulatedServo], faults: FaultConfig | None = None):
        super().__init__(faults)
        self.servos = {s.id: s for s in servos}
        for i in self.faults.config.hardware_error_ids:
            if i in self.servos:
                self.servos[i].raise_hardware_error()
        self._last_tick: float | None = None

    @staticmethod
    def model_name(model: int) -> str:
        """The name printed in the banner for a model number."""
        return str(model)

    def banner(self) -> str:
        ids = sorted(self.servos)
        model = self.model_name(next(iter(self.servos.values())).model) if ids else "-"
        return f"simulated {self.kind}: ids {ids} ({model}) on {self.port}"

    def tick(self, now: float) -> None:
        dt = 0.0 if self._last_tick is None else now - self._last_tick
        self._last_tick = now
        for servo in self.servos.values():
            servo.step(dt, now)

    def sync_write(self, addr: int, size: int, body: bytes) -> None:
        """Apply a SYNC_WRITE body, (id, `size` data bytes) per servo; no servo answers one."""
        for k in range(0, len(body) - size, size + 1):
            servo = self.servos.get(body[k])
            if servo is not None:
                servo.write(addr, body[k + 1 : k + 1 + size])


# -- `vla-runtime sim-device dynamixel|feetech` ------------------------------------------------------
def parse_ids(text: str) -> tuple[int, ...]:
    """'1-6' or '1,2,7' -> ids; one line naming the fix on bad input."""
    ids: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            ids.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"--ids {text!r} is not a list like 1-6 or 1,2,7") from None
    if not ids or any(not 0 <= i <= 252 for i in ids):
        raise ValueError(f"--ids {text!r}: ids must be within 0..252")
    return tuple(ids)


def add_servo_arguments(parser: argparse.ArgumentParser, default_model: int, model_help: str) -> None:
    """--ids, --model and the fault flags."""
    parser.add_argument("--ids", default="1-6", help="servo ids, e.g. 1-6 or 1,2,7 (default 1-6)")
    parser.add_argument("--model", type=int, default=default_model, help=model_help)
    add_fault_arguments(parser)


def run_servo_sim(make_sim: Callable[..., ServoBusSim], protocol: str, args: argparse.Namespace) -> int:
    """Serve until Ctrl-C; bad flags end with one line on stderr and exit code 2."""
    try:
        sim = make_sim(parse_ids(args.ids), args.model, fault_config_from_args(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    hint = f"connect with: vla-runtime drivers scan --port {{port}} --protocol {protocol} (any baud; a pty ignores it)"
    return serve_until_interrupted(sim, hint)
