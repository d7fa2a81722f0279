"""A simulated Robotiq 2F-85 / Hand-E on a pseudo-terminal: `vla-runtime sim-device robotiq`.

It models what a driver can observe: the activation routine takes time, the fingers travel at
a speed set by rSP, closing onto an optional object stops with "object detected", writes to
anything but the request block are refused, and faults appear in gFLT. The model advances
from the clock when a request arrives, so an idle simulator costs nothing.
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import time
from dataclasses import dataclass

from vla_runtime.drivers.robotiq import codec
from vla_runtime.drivers.robotiq.registers import (
    ACT,
    BLOCKS,
    DEFAULT_UNIT,
    GTO,
    ActivationStatus,
    Block,
    GripperRequest,
    GripperStatus,
    ObjectStatus,
)
from vla_runtime.drivers.simdevice import (
    FaultConfig,
    PtySimulator,
    add_fault_arguments,
    fault_config_from_args,
    serve_until_interrupted,
)

logger = logging.getLogger(__name__)

OVER_CURRENT = 0x0E  # gFLT reported while --hardware-error names this device
NOT_ACTIVATED = 0x07  # gFLT when rGTO arrives without rACT


@dataclass(frozen=True)
class GripperModel:
    activation_s: float = 0.5  # seconds the activation routine takes (the real one takes ~2-5 s)
    stroke_fast_s: float = 0.5  # seconds for a full stroke at rSP = 255
    stroke_slow_s: float = 4.0  # seconds for a full stroke at rSP = 0
    object_at: int | None = None  # position count (0 open .. 255 closed) where an object blocks closing

    def __post_init__(self):
        if self.activation_s < 0 or self.stroke_fast_s <= 0 or self.stroke_slow_s < self.stroke_fast_s:
            raise ValueError("gripper model times must be positive, with stroke_slow_s >= stroke_fast_s")
        if self.object_at is not None and not 0 <= self.object_at <= 255:
            raise ValueError(f"--object-at must be a position count 0..255, got {self.object_at}")


class RobotiqSim(PtySimulator):
    """The gripper's Modbus RTU slave plus a kinematic finger model."""

    kind = "Robotiq 2F-85 gripper (Modbus RTU, 115200 8N1)"

    def __init__(self, faults: FaultConfig | None = None, model: GripperModel | None = None, unit: int = DEFAULT_UNIT):
        super().__init__(faults)
        self.model = model or GripperModel()
        self.unit = unit
        self.request = GripperRequest()
        self.position = 0.0  # counts, 0 open .. 255 closed (float while moving)
        self.fault = 0
        # the latest well-formed requests as received, for byte-level checks; bounded for long runs
        self.frames: collections.deque[bytes] = collections.deque(maxlen=10_000)
        self._activation_started: float | None = None
        self._activated = False
        self._object = ObjectStatus.MOVING
        self._last_update = time.monotonic()

    def banner(self) -> str:
        return f"simulated {self.kind}, device id {self.unit}, on {self.port}"

    # -- byte side -------------------------------------------------------------------------------
    def decode_request(self, buf: bytes):
        consumed, request = codec.decode_request(buf)
        if request is not None:
            self.frames.append(bytes(buf[:consumed]))
        return consumed, request

    def handle(self, request) -> list[bytes]:
        if request.unit != self.unit:
            return []  # another device on the bus; stay silent
        self._advance(time.monotonic())
        if isinstance(request, codec.WriteRegisters):
            if not self._store(request.address, request.values):
                return [self._refuse(codec.WRITE_MULTIPLE)]
            return [codec.encode(codec.WriteReply(self.unit, request.address, len(request.values)))]
        if isinstance(request, codec.ReadWriteRegisters):  # the write happens first, then the read
            if not self._store(request.write_address, request.values):
                return [self._refuse(codec.READ_WRITE_MULTIPLE)]
            regs = self._load(request.read_address, request.read_count, input_block=True)
        else:
            regs = self._load(request.address, request.count, input_block=request.function == codec.READ_INPUT)
        if regs is None:
            return [self._refuse(request.function)]
        return [codec.encode(codec.RegistersReply(self.unit, request.function, regs))]

    def _refuse(self, function: int) -> bytes:
        return codec.encode(codec.ExceptionReply(self.unit, function, 2))  # illegal data address

    def _store(self, address: int, values: tuple[int, ...]) -> bool:
        """Any part of the request block may be written, as the gripper allows (e.g. rPR alone)."""
        start, count = BLOCKS[Block.REQUEST]
        if not (start <= address and address + len(values) <= start + count):
            return False
        regs = list(self.request.to_registers())
        regs[address - start : address - start + len(values)] = values
        self._apply(GripperRequest.from_registers(tuple(regs)))
        return True

    def _load(self, address: int, count: int, input_block: bool) -> tuple[int, ...] | None:
        """Input reads see the status block; holding reads see the request block."""
        block = Block.STATUS if input_block else Block.REQUEST
        start, size = BLOCKS[block]
        if not (start <= address and address + count <= start + size):
            return None
        regs = self.status().to_registers() if block is Block.STATUS else self.request.to_registers()
        return regs[address - start : address - start + count]

    # -- device model ----------------------------------------------------------------------------
    def status(self) -> GripperStatus:
        if self.faults.hardware_error(self.unit):
            self.fault = OVER_CURRENT
        if self._activated:
            activation = ActivationStatus.COMPLETE
        elif self._activation_started is not None:
            activation = ActivationStatus.IN_PROGRESS
        else:
            activation = ActivationStatus.RESET
        moving = self._object is ObjectStatus.MOVING
        return GripperStatus(
            activated=bool(self.request.action & ACT),
            going=bool(self.request.action & GTO),
            activation=activation,
            object=self._object,
            fault=self.fault,
            position_request=self.request.position,
            position=int(round(self.position)),
            current=(self.request.force // 8 if moving and self._activated and self.request.action & GTO else 0),
        )

    def _apply(self, new: GripperRequest) -> None:
        old = self.request
        self.request = new
        if new.action & ACT and not old.action & ACT:
            self.fault = 0  # a rising edge on rACT clears faults and starts activation
            self._activated = False
            self._activation_started = time.monotonic()
        elif not new.action & ACT:
            self._activated = False
            self._activation_started = None
            if self.fault < 0x0A:
                self.fault = 0
        if new.action & GTO and not new.action & ACT:
            self.fault = NOT_ACTIVATED
        self._object = ObjectStatus.MOVING if new.action & GTO else self._object

    def _advance(self, now: float) -> None:
        dt = max(0.0, now - self._last_update)
        self._last_update = now
        if self._activation_started is not None and not self._activated:
            if now - self._activation_started >= self.model.activation_s:
                self._activated = True
                self.position = 0.0  # activation ends with the fingers open
        if not (self._activated and self.request.action & GTO) or self.fault >= 0x0A:
            return
        target = float(self.request.position)
        m = self.model
        stroke_s = m.stroke_slow_s + (m.stroke_fast_s - m.stroke_slow_s) * self.request.speed / 255.0
        step = 255.0 / stroke_s * dt  # counts this update
        if m.object_at is not None and self.position <= m.object_at < target:
            if self.position + step >= m.object_at:
                self.position = float(m.object_at)
                self._object = ObjectStatus.CONTACT_CLOSING
                return
        if abs(target - self.position) <= step:
            self.position = target
            self._object = ObjectStatus.AT_POSITION
        else:
            self.position += step if target > self.position else -step
            self._object = ObjectStatus.MOVING


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--unit", type=int, default=DEFAULT_UNIT, help="Modbus device id (default 9)")
    parser.add_argument("--activation-s", type=float, default=0.5, help="activation routine duration, s")
    parser.add_argument("--stroke-s", type=float, default=0.5, help="full stroke time at maximum speed, s")
    parser.add_argument(
        "--object-at", type=int, default=None, metavar="COUNT", help="an object blocks closing at 0..255"
    )
    add_fault_arguments(parser)


def from_args(args: argparse.Namespace) -> RobotiqSim:
    model = GripperModel(
        activation_s=args.activation_s,
        stroke_fast_s=args.stroke_s,
        stroke_slow_s=max(args.stroke_s, 4.0),
        object_at=args.object_at,
    )
    return RobotiqSim(fault_config_from_args(args), model, unit=args.unit)


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C; bad flags end with one line on stderr and exit code 2."""
    try:
        sim = from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    hint = f"connect at 115200 baud 8N1, Modbus RTU device id {sim.unit}, to the pty path above"
    return serve_until_interrupted(sim, hint)
