"""RTDE client over any Transport: negotiate, agree recipes, start/pause, stream data both ways.

The controller streams output packages at the agreed rate whether or not we read them, so
`receive()` drains everything that has arrived and returns only the newest package: a 10 Hz
loop must act on the current state, not on a queue of stale ones. Text messages from the
controller (warnings, watchdog trips) can arrive between any two packages; they are logged
and kept. Every wait has a deadline.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass

from vla_runtime.drivers.base import DeviceTimeout, ProtocolError
from vla_runtime.drivers.transport import Transport
from vla_runtime.drivers.ur import rtde
from vla_runtime.drivers.ur.recipes import IN_USE, NOT_FOUND, Recipe

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RTDEClientConfig:
    frequency: float = 125.0  # Hz the controller streams outputs at; 500 max on e-Series, 125 on CB3
    setup_timeout: float = 1.0  # seconds to wait for each setup reply (V, v, O, I, S, P)
    receive_timeout: float = 0.1  # seconds receive() waits when no package is buffered

    def __post_init__(self):
        if not 0 < self.frequency <= 500:
            raise ValueError(f"RTDE frequency must be within (0, 500] Hz, got {self.frequency}")
        if self.setup_timeout <= 0 or self.receive_timeout <= 0:
            raise ValueError("RTDE timeouts must be positive seconds")


class RTDEClient:
    """One RTDE connection: version -> recipes -> start -> send()/receive() -> pause."""

    def __init__(self, transport: Transport, config: RTDEClientConfig | None = None):
        self.transport = transport
        self.config = config or RTDEClientConfig()
        self.protocol = 0  # negotiated protocol version, 0 before negotiate()
        self.output: Recipe | None = None
        self.input: Recipe | None = None
        self.messages: collections.deque[rtde.TextMessage] = collections.deque(maxlen=50)
        self.skipped_packages = 0  # older output packages dropped in favour of a newer one
        self.garbage_bytes = 0  # bytes skipped while resynchronising
        self._buf = b""

    @property
    def name(self) -> str:
        return self.transport.name

    # -- setup --------------------------------------------------------------------------------
    def negotiate(self) -> int:
        """Ask for protocol 2, fall back to 1 (older CB3 software)."""
        for version in (rtde.PROTOCOL_VERSION, 1):
            reply = self._request(rtde.request_protocol_version(version))
            if rtde.parse_accepted(reply.payload):
                self.protocol = version
                return version
        raise ProtocolError(f"{self.name}: controller accepts neither RTDE protocol 2 nor 1; update its software")

    def controller_version(self) -> tuple[int, int, int, int]:
        return rtde.parse_urcontrol_version(self._request(rtde.get_urcontrol_version()).payload)

    def setup_outputs(self, names: tuple[str, ...]) -> Recipe:
        freq = self.config.frequency if self.protocol >= 2 else None
        reply = self._request(rtde.setup_outputs(names, freq))
        self.output = self._recipe(reply, names, "output")
        return self.output

    def setup_inputs(self, names: tuple[str, ...]) -> Recipe:
        reply = self._request(rtde.setup_inputs(names))
        self.input = self._recipe(reply, names, "input")
        return self.input

    def start(self) -> None:
        if not rtde.parse_accepted(self._request(rtde.start()).payload):
            raise ProtocolError(f"{self.name}: controller refused to start streaming; check the recipes")

    def pause(self) -> None:
        if not rtde.parse_accepted(self._request(rtde.pause()).payload):
            raise ProtocolError(f"{self.name}: controller refused to pause streaming")

    def _recipe(self, reply: rtde.Package, names: tuple[str, ...], side: str) -> Recipe:
        recipe_id, types = rtde.parse_recipe_reply(reply.payload)
        refused = [f"{n} ({t})" for n, t in zip(names, types, strict=False) if t in (NOT_FOUND, IN_USE)]
        if refused:
            why = "another client owns it" if any(IN_USE in r for r in refused) else "unknown to this controller"
            raise ProtocolError(
                f"{self.name}: {side} variables refused: {', '.join(refused)}; {why} "
                "(pick free registers or update the controller software)"
            )
        if len(types) != len(names) or recipe_id == 0:
            raise ProtocolError(f"{self.name}: {side} recipe reply {recipe_id}, {types} does not match {names}")
        return Recipe(recipe_id, names, types)

    # -- streaming ----------------------------------------------------------------------------
    def send(self, values: dict[str, object]) -> None:
        """One input data package; every input in the recipe must be given."""
        if self.input is None:
            raise ProtocolError(f"{self.name}: send() before setup_inputs()")
        self.transport.write(rtde.encode(rtde.data_package(self.input.recipe_id, self.input.pack(values))))

    def send_message(self, text: str, level: int = rtde.INFO, source: str = "vla-runtime") -> None:
        """A line for the controller's log (shown on the pendant)."""
        msg = rtde.TextMessage(text, source, level)
        self.transport.write(rtde.encode(rtde.text_message(msg, self.protocol or rtde.PROTOCOL_VERSION)))

    def receive(self, timeout: float | None = None) -> dict[str, object]:
        """The newest output package; waits up to `timeout` only if none has arrived yet."""
        if self.output is None:
            raise ProtocolError(f"{self.name}: receive() before setup_outputs()")
        timeout = self.config.receive_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        newest: dict[str, object] | None = None
        while True:
            chunk = self.transport.read(65536, 0.0 if newest is not None else max(0.0, deadline - time.monotonic()))
            self._buf += chunk
            for pkg in self._drain():
                if pkg.kind == rtde.DATA_PACKAGE:
                    got = self._unpack(pkg)
                    if got is not None:
                        self.skipped_packages += newest is not None
                        newest = got
                else:
                    logger.debug("%s: ignoring package %r while streaming", self.name, chr(pkg.kind))
            if newest is not None and (not chunk or time.monotonic() >= deadline):
                return newest  # drained, or a stream so fast it never pauses: stop at the deadline
            if newest is None and time.monotonic() >= deadline:
                raise DeviceTimeout(
                    f"{self.name}: no RTDE data package in {timeout * 1e3:.0f} ms; "
                    "is the controller on and streaming (start() called)?"
                )

    def _unpack(self, pkg: rtde.Package) -> dict[str, object] | None:
        recipe_id, body = rtde.parse_data_package(pkg.payload)
        if recipe_id != self.output.recipe_id or len(body) != self.output.size:
            self.garbage_bytes += len(pkg.payload) + rtde.HEADER.size
            return None
        return self.output.unpack(body)

    # -- plumbing -----------------------------------------------------------------------------
    def _drain(self) -> list[rtde.Package]:
        out = []
        while self._buf:
            consumed, pkg = rtde.decode(self._buf)
            if consumed == 0:
                break
            self._buf = self._buf[consumed:]
            if pkg is None:
                self.garbage_bytes += consumed
            elif pkg.kind == rtde.TEXT_MESSAGE:
                self._text(pkg)
            else:
                out.append(pkg)
        return out

    def _text(self, pkg: rtde.Package) -> None:
        try:
            msg = rtde.parse_text_message(pkg.payload, self.protocol or None)
        except (IndexError, ValueError):
            self.garbage_bytes += len(pkg.payload)
            return
        self.messages.append(msg)
        level = {rtde.EXCEPTION: logging.ERROR, rtde.ERROR: logging.ERROR, rtde.WARNING: logging.WARNING}
        logger.log(
            level.get(msg.level, logging.INFO), "%s: controller says [%s] %s", self.name, msg.source, msg.message
        )

    def _request(self, pkg: rtde.Package) -> rtde.Package:
        """Send a setup package and wait for the reply of the same type; data packages in between are dropped."""
        self.transport.write(rtde.encode(pkg))
        deadline = time.monotonic() + self.config.setup_timeout
        while True:
            for got in self._drain():
                if got.kind == pkg.kind:
                    return got
                if got.kind == rtde.DATA_PACKAGE:
                    self.skipped_packages += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeviceTimeout(
                    f"{self.name}: no reply to RTDE '{chr(pkg.kind)}' in {self.config.setup_timeout:.1f} s; "
                    "check the address and that nothing else holds port 30004"
                )
            self._buf += self.transport.read(65536, remaining)
