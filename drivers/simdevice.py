"""Shared pieces of the simulated devices: a pseudo-terminal, fault injection and its CLI flags.

A simulated device answers real bytes on a real pty, so the production driver and a vendor SDK
both talk to it exactly as to hardware. Faults are injected at the byte level (a reply dropped,
its CRC flipped, delayed, an error bit raised, the port vanishing) because that is where real
buses fail, and it keeps every error path of the driver testable without a robot.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import select
import threading
import time
import tty
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from vla_runtime.drivers.link import take_frames

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultConfig:
    drop_rate: float = 0.0  # probability 0..1 that a reply is never sent (a servo that missed the request)
    bad_crc_rate: float = 0.0  # probability 0..1 that a reply's last checksum byte is flipped (line noise)
    delay_ms: float = 0.0  # milliseconds added before every reply (slow USB adapter, long return delay)
    hardware_error_ids: tuple[int, ...] = ()  # device ids that report a hardware error (overload, overheat)
    vanish_after_s: float | None = None  # seconds after start() when the port disappears (USB unplug)
    seed: int | None = None  # RNG seed so a fault sequence can be replayed; None = random
    echo: bool = False  # the adapter echoes every host frame back (single-wire TTL without direction control)
    duplicate_rate: float = 0.0  # probability 0..1 that a reply is sent twice (a flaky adapter or repeater)
    late_rate: float = 0.0  # probability 0..1 that a reply is held back by `late_ms` (it may miss its exchange)
    late_ms: float = 50.0  # milliseconds a late reply is held back; past the host's timeout it lands in the next

    def __post_init__(self):
        for name in ("drop_rate", "bad_crc_rate", "duplicate_rate", "late_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be within 0..1, got {value}")
        if self.delay_ms < 0:
            raise ValueError(f"--delay-ms must be >= 0, got {self.delay_ms}")
        if self.late_ms < 0:
            raise ValueError(f"--late-ms must be >= 0, got {self.late_ms}")
        if self.vanish_after_s is not None and self.vanish_after_s < 0:
            raise ValueError(f"--vanish-after must be >= 0 seconds, got {self.vanish_after_s}")

    @property
    def any(self) -> bool:
        rates = self.drop_rate or self.bad_crc_rate or self.duplicate_rate or self.late_rate
        return bool(rates or self.delay_ms or self.hardware_error_ids or self.echo) or self.vanish_after_s is not None


def add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    """The fault flags every `vla-runtime sim-device KIND` accepts."""
    g = parser.add_argument_group("fault injection")
    g.add_argument("--drop-rate", type=float, default=0.0, help="probability 0..1 of not replying")
    g.add_argument("--bad-crc-rate", type=float, default=0.0, help="probability 0..1 of a corrupt checksum")
    g.add_argument("--delay-ms", type=float, default=0.0, help="extra delay before each reply, ms")
    g.add_argument("--duplicate-rate", type=float, default=0.0, help="probability 0..1 of sending a reply twice")
    g.add_argument(
        "--late-rate", type=float, default=0.0, help="probability 0..1 of holding a reply back by --late-ms"
    )
    g.add_argument("--late-ms", type=float, default=50.0, help="how long a late reply is held back, ms (default 50)")
    g.add_argument(
        "--hardware-error",
        type=int,
        action="append",
        default=[],
        metavar="ID",
        help="device id that reports a hardware error (repeatable)",
    )
    g.add_argument("--vanish-after", type=float, default=None, metavar="S", help="close the port after S s")
    g.add_argument("--seed", type=int, default=None, help="random seed for repeatable faults")
    g.add_argument(
        "--echo", action="store_true", help="echo every host frame back, like a TTL adapter without direction control"
    )


def fault_config_from_args(args: argparse.Namespace) -> FaultConfig:
    return FaultConfig(
        drop_rate=args.drop_rate,
        bad_crc_rate=args.bad_crc_rate,
        delay_ms=args.delay_ms,
        hardware_error_ids=tuple(args.hardware_error),
        vanish_after_s=args.vanish_after,
        seed=args.seed,
        echo=getattr(args, "echo", False),
        duplicate_rate=getattr(args, "duplicate_rate", 0.0),
        late_rate=getattr(args, "late_rate", 0.0),
        late_ms=getattr(args, "late_ms", 50.0),
    )


class FaultInjector:
    """Decides, reply by reply, which fault to apply; the only randomness in a simulator."""

    def __init__(self, config: FaultConfig):
        self.config = config
        self._rng = random.Random(config.seed)
        self.dropped = 0  # replies never sent
        self.corrupted = 0  # replies sent with a flipped checksum byte
        self.duplicated = 0  # replies sent twice
        self.held_back = 0  # replies held back by late_ms

    def drop(self) -> bool:
        hit = self.config.drop_rate > 0 and self._rng.random() < self.config.drop_rate
        self.dropped += hit
        return hit

    def corrupt(self, reply: bytes) -> bytes:
        if self.config.bad_crc_rate > 0 and self._rng.random() < self.config.bad_crc_rate:
            self.corrupted += 1
            return reply[:-1] + bytes([reply[-1] ^ 0xFF])
        return reply

    def duplicate(self) -> bool:
        hit = self.config.duplicate_rate > 0 and self._rng.random() < self.config.duplicate_rate
        self.duplicated += hit
        return hit

    def late(self) -> bool:
        hit = self.config.late_rate > 0 and self._rng.random() < self.config.late_rate
        self.held_back += hit
        return hit

    def delay(self) -> None:
        if self.config.delay_ms > 0:
            time.sleep(self.config.delay_ms / 1e3)

    def hardware_error(self, device_id: int) -> bool:
        return device_id in self.config.hardware_error_ids


def open_pty() -> tuple[int, int, str]:
    """(master_fd, slave_fd, slave_path), both ends raw so no byte is translated or echoed."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


class PtySimulator(ABC):
    """A device on the far end of a pty: decode requests, answer with frames, inject faults.

    Subclasses provide `decode_request(buf) -> (consumed, request | None)` (the same contract as
    a codec) and `handle(request) -> list[bytes]` (whole reply frames, possibly none).
    """

    kind = "device"  # shown in the banner, e.g. "Dynamixel bus"

    def __init__(self, faults: FaultConfig | None = None):
        self.faults = FaultInjector(faults or FaultConfig())
        self.port: str = ""  # the pty path to connect to; set by start()
        self.requests = 0  # requests decoded and handled
        self.garbage_bytes = 0  # bytes skipped while resynchronising
        self._master = self._slave = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards device state between the serving thread and tests
        self.vanished = threading.Event()

    @abstractmethod
    def decode_request(self, buf: bytes) -> tuple[int, Any]:
        """Same contract as a codec decoder."""

    @abstractmethod
    def handle(self, request: Any) -> list[bytes]:
        """Apply the request to the device model; return the reply frames to send."""

    def tick(self, now: float) -> None:  # noqa: B027 - optional hook
        """Advance the device model to `now` (motion, watchdogs); called often, under the lock."""

    def banner(self) -> str:
        return f"simulated {self.kind} on {self.port}"

    def start(self) -> PtySimulator:
        self._master, self._slave, self.port = open_pty()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"sim-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self._close_fds()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def vanish(self) -> None:
        """Close our end of the pty now, as if the USB adapter were pulled."""
        logger.info("%s: port vanishing", self.port)
        self.vanished.set()
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = -1

    def _serve(self) -> None:
        started = time.monotonic()
        vanish_at = self.faults.config.vanish_after_s
        buf = bytearray()
        while not self._stop.is_set():
            if vanish_at is not None and time.monotonic() - started >= vanish_at:
                self.vanish()
                return
            master = self._master
            if master < 0:
                return
            with self._lock:
                self.tick(time.monotonic())
            try:
                ready, _, _ = select.select([master], [], [], 0.005)
                if not ready:
                    continue
                buf += os.read(master, 4096)
            except OSError:
                return  # closed under us (vanish() or stop())
            self._drain(buf)

    def _drain(self, buf: bytearray) -> None:
        for frame, request in take_frames(self.decode_request, buf):
            if request is None:
                self.garbage_bytes += len(frame)
                continue
            self.requests += 1
            if self.faults.config.echo:
                self._write(frame)
            with self._lock:
                self.tick(time.monotonic())
                replies = self.handle(request)
            for reply in replies:
                self._send(reply)

    def _send(self, reply: bytes) -> None:
        if self.faults.drop():
            return
        self.faults.delay()
        reply = self.faults.corrupt(reply)
        if self.faults.late():
            # held back without stalling the device: it lands whenever the timer fires, perhaps in
            # the middle of the host's next exchange, which is what a late reply on a real bus does
            timer = threading.Timer(self.faults.config.late_ms / 1e3, self._write, (reply,))
            timer.daemon = True
            timer.start()
            return
        self._write(reply)
        if self.faults.duplicate():
            self._write(reply)

    def _write(self, data: bytes) -> None:
        try:
            os.write(self._master, data)
        except OSError:
            pass


def serve_until_interrupted(sim: PtySimulator | Any, connect_hint: str) -> int:
    """Body of every sim `run(args)`: start, say where to connect, serve until Ctrl-C.

    `{port}` in the hint is replaced by the pty path once it exists.
    """
    sim.start()
    try:
        print(sim.banner(), flush=True)
        print(connect_hint.replace("{port}", str(getattr(sim, "port", ""))), flush=True)
        print("Ctrl-C to stop.", flush=True)
        while not getattr(sim, "vanished", threading.Event()).is_set():
            time.sleep(0.2)
        print("port vanished (fault injection); exiting.", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0
