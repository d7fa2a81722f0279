"""Joins a pure codec to a transport: one request out, the matching replies back, by a deadline.

The codec only turns bytes into frames; the transport only moves bytes. Everything that needs a
clock lives here: the per-attempt deadline, a bounded number of retries, dropping stale bytes
before a retry, and skipping garbage between frames. Nothing here can block past
`timeout * (retries + 1)` plus one transport read, so a dead bus can never hang the control loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from vla_runtime.drivers.base import DeviceTimeout, DriverError, PortLost, ProtocolError
from vla_runtime.drivers.transport import Transport

logger = logging.getLogger(__name__)

M = TypeVar("M")


class Decoder(Protocol[M]):
    def __call__(self, buf: bytes) -> tuple[int, M | None]:
        """(consumed, frame): consumed 0 = need more bytes; consumed > 0 with None = skipped garbage."""


def take_frames(decode: Decoder[M], buf: bytearray) -> Iterator[tuple[bytes, M | None]]:
    """(raw bytes, frame or None for skipped garbage) off the front of `buf`, until more bytes are needed.

    Each frame's bytes leave `buf` before it is yielded, so a caller may stop early and keep the rest.
    """
    while buf:
        consumed, msg = decode(bytes(buf))
        if consumed == 0:
            return
        raw = bytes(buf[:consumed])
        del buf[:consumed]
        yield raw, msg


@dataclass(frozen=True)
class LinkConfig:
    timeout: float = 0.02  # seconds per attempt; at 1 Mbps a 6-servo reply is ~0.3 ms, USB adds 1-16 ms
    retries: int = 2  # extra attempts after the first; 3 x 20 ms stays inside one 100 ms tick
    read_chunk: int = 4096  # bytes asked of the transport per read; larger than any frame we expect

    def __post_init__(self):
        if not self.timeout > 0:
            raise ValueError(f"link timeout must be positive seconds, got {self.timeout}")
        if self.retries < 0:
            raise ValueError(f"link retries must be >= 0, got {self.retries}")
        if self.read_chunk < 1:
            raise ValueError(f"read_chunk must be >= 1 byte, got {self.read_chunk}")


@dataclass
class LinkStats:
    exchanges: int = 0  # requests that expected replies
    sends: int = 0  # requests that expected none (sync write, broadcast)
    retries: int = 0  # attempts beyond the first
    timeouts: int = 0  # attempts that ended at the deadline
    garbage_bytes: int = 0  # bytes skipped while resynchronising (noise, bad CRC frames)
    unexpected: int = 0  # well-formed frames that did not match (stale replies, wrong id)
    duplicates: int = 0  # replies that repeated one already collected in the same exchange
    last_error: str = field(default="")


class Link(Generic[M]):
    """exchange(request) -> replies; send(request) for frames that get no reply."""

    def __init__(self, transport: Transport, decode: Decoder[M], config: LinkConfig | None = None):
        self.transport = transport
        self.decode = decode
        self.config = config or LinkConfig()
        self.stats = LinkStats()
        self._lock = threading.Lock()  # one bus, one conversation: a gripper and an arm may share it

    @property
    def name(self) -> str:
        return self.transport.name

    @property
    def worst_case_s(self) -> float:
        """Longest one exchange can take when every attempt times out, seconds."""
        return self.config.timeout * (self.config.retries + 1)

    def send(self, frame: bytes) -> None:
        """Write a frame that gets no reply (sync write, broadcast)."""
        with self._lock:
            self.stats.sends += 1
            self.transport.write(frame)

    def listen(self, frame: bytes, duration: float) -> list[M]:
        """Write `frame` and return every frame decoded within `duration` s (broadcast ping, scans)."""
        with self._lock:
            self.stats.exchanges += 1
            self.transport.reset_input()
            self.transport.write(frame)
            deadline = time.monotonic() + duration
            buf, out = bytearray(), []
            while (remaining := deadline - time.monotonic()) > 0:
                buf += self.transport.read(self.config.read_chunk, remaining)
                for raw, msg in take_frames(self.decode, buf):
                    if msg is None:
                        self.stats.garbage_bytes += len(raw)
                    else:
                        out.append(msg)
            return out

    def exchange(
        self,
        frame: bytes,
        expect: Callable[[M], bool] = lambda _m: True,
        count: int = 1,
        timeout: float | None = None,
        retries: int | None = None,
        key: Callable[[M], Hashable] | None = None,
    ) -> list[M]:
        """Write `frame` and collect `count` replies accepted by `expect`, retrying the whole exchange.

        Replies that decode but are not expected (a late answer to an abandoned request) are dropped.
        With `key`, `count` distinct replies are collected: a second reply with a key already seen
        (a device or adapter that sent its status twice) is dropped, never counted as another device.
        Raises DeviceTimeout when nothing valid arrived, ProtocolError when only garbage or corrupt
        frames did, PortLost when the port vanished (never retried: it will not come back by itself).
        """
        timeout = self.config.timeout if timeout is None else timeout
        retries = self.config.retries if retries is None else retries
        with self._lock:
            self.stats.exchanges += 1
            err: DriverError | None = None
            for attempt in range(retries + 1):
                if attempt:
                    self.stats.retries += 1
                    logger.debug("%s: retry %d after: %s", self.name, attempt, err)
                self.transport.reset_input()  # a late reply to an abandoned request must not answer this one
                self.transport.write(frame)
                replies, err = self._collect(expect, count, timeout, key)
                if err is None:
                    return replies
            self.stats.last_error = str(err)
            raise err

    def _collect(
        self, expect: Callable[[M], bool], count: int, timeout: float, key: Callable[[M], Hashable] | None
    ) -> tuple[list[M], DriverError | None]:
        deadline = time.monotonic() + timeout
        buf = bytearray()
        replies: list[M] = []
        seen: set = set()
        garbage = 0
        while len(replies) < count:
            for raw, msg in take_frames(self.decode, buf):
                if msg is None:
                    garbage += len(raw)
                elif expect(msg):
                    if key is not None:
                        k = key(msg)
                        if k in seen:
                            self.stats.duplicates += 1
                            continue
                        seen.add(k)
                    replies.append(msg)
                    if len(replies) == count:
                        break
                else:
                    self.stats.unexpected += 1
            if len(replies) == count:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stats.timeouts += 1
                self.stats.garbage_bytes += garbage
                got = f"{len(replies)} of {count} replies"
                if garbage:
                    return replies, ProtocolError(
                        f"{self.name}: {got} and {garbage} corrupt byte(s) in {timeout * 1e3:.0f} ms; "
                        "check baud rate, wiring and termination"
                    )
                return replies, DeviceTimeout(
                    f"{self.name}: {got} in {timeout * 1e3:.0f} ms; check power, ids and baud rate"
                )
            try:
                buf += self.transport.read(self.config.read_chunk, remaining)
            except PortLost:
                self.stats.last_error = "port lost"
                raise
        self.stats.garbage_bytes += garbage
        return replies, None
