"""A simulated UR controller on loopback: `vla-runtime sim-device ur-rtde`.

It speaks RTDE on one TCP port (30004 by default; 0 picks a free one) and accepts the control
program on a second, like the secondary interface (30002), then emulates that program so the
joints follow the targets written into the input registers. Faults are injected on the wire:
dropped packages, junk bytes between packages (TCP has no CRC, so this is the corruption a
client can actually meet), delays, a protective stop, and the controller vanishing. The shared
flags map as: --drop-rate drops packages, --bad-crc-rate puts junk bytes before a package,
--delay-ms delays every package, --hardware-error (any id) starts in a protective stop.
"""

from __future__ import annotations

import argparse
import collections
import logging
import select
import socket
import struct
import sys
import threading
import time

from vla_runtime.drivers.simdevice import (
    FaultConfig,
    FaultInjector,
    add_fault_arguments,
    fault_config_from_args,
    serve_until_interrupted,
)
from vla_runtime.drivers.ur import rtde
from vla_runtime.drivers.ur.controller import ArmModel, Controller
from vla_runtime.drivers.ur.program import parse_program
from vla_runtime.drivers.ur.recipes import OUTPUT_TYPES, Recipe

logger = logging.getLogger(__name__)

JUNK = b"\x00\x00\x00"  # a header of size 0: never valid, so a client must skip it byte by byte
MAX_CLIENTS = 4  # concurrent RTDE connections; a real controller allows a few more
CONTROL_PERIOD = 0.008  # seconds between model steps (125 Hz)


class _Connection:
    """One RTDE connection: setup, then streaming of its output recipes."""

    def __init__(self, sim: URSim, sock: socket.socket, conn_id: int):
        self.sim, self.sock, self.conn_id = sim, sock, conn_id
        self.version = 1
        self.outputs: dict[int, tuple[Recipe, float]] = {}  # recipe id -> (recipe, period s)
        self.inputs: dict[int, Recipe] = {}
        self.next_id = 1
        self.started = False
        self.outbox: collections.deque[rtde.TextMessage] = collections.deque()  # encoded when sent
        self.closed = threading.Event()

    def serve(self) -> None:
        buf = b""
        due: dict[int, float] = {}
        try:
            while not self.sim._stop.is_set() and not self.closed.is_set():
                now = time.monotonic()
                wait = min((t - now for t in due.values()), default=0.05) if self.started else 0.05
                ready, _, _ = select.select([self.sock], [], [], min(max(wait, 0.0), 0.05))
                if ready:
                    data = self.sock.recv(65536)
                    if not data:
                        return
                    buf = self._handle(buf + data)
                while self.outbox:  # in the protocol version agreed by the time it leaves
                    self._send(rtde.text_message(self.outbox.popleft(), self.version))
                if not self.started:
                    due.clear()
                    continue
                now = time.monotonic()
                for rid, (recipe, period) in self.outputs.items():
                    if now >= due.setdefault(rid, now):
                        values = self.sim.controller.snapshot(recipe.names)
                        self._send(rtde.data_package(rid, recipe.pack(values)))
                        due[rid] = max(due[rid] + period, now)  # behind schedule: skip, never burst
        except OSError:
            return
        finally:
            self.sim.controller.release(self.conn_id)
            self.sock.close()

    def _send(self, pkg: rtde.Package) -> None:
        if self.sim.faults.drop():
            return
        self.sim.faults.delay()
        data = rtde.encode(pkg)
        if self.sim.faults.corrupt(b"\x00") != b"\x00":  # the injector's bad-CRC draw decides
            data = JUNK + data
        if self.sim.faults.late():  # on a TCP stream a late package holds back everything behind it
            time.sleep(self.sim.faults.config.late_ms / 1e3)
        self.sock.sendall(data)
        if self.sim.faults.duplicate():
            self.sock.sendall(data)

    def _handle(self, buf: bytes) -> bytes:
        while buf:
            consumed, pkg = rtde.decode(buf)
            if consumed == 0:
                break
            buf = buf[consumed:]
            if pkg is None:
                continue
            try:
                self._dispatch(pkg)
            except (struct.error, ValueError, IndexError) as exc:  # a malformed payload must not kill the server
                self.tell(f"malformed '{chr(pkg.kind)}' package ignored ({exc})", rtde.ERROR)
        return buf

    def _dispatch(self, pkg: rtde.Package) -> None:
        kind, payload = pkg.kind, pkg.payload
        if kind == rtde.REQUEST_PROTOCOL_VERSION:
            version = rtde.parse_protocol_request(payload)
            ok = version in self.sim.protocols
            self.version = version if ok else self.version
            self._send(rtde.accepted(kind, ok))
        elif kind == rtde.GET_URCONTROL_VERSION:
            self._send(rtde.urcontrol_version(*self.sim.urcontrol_version))
        elif kind == rtde.SETUP_OUTPUTS:
            frequency, names = rtde.parse_setup_outputs(payload, self.version)
            frequency = 125.0 if frequency is None else frequency
            types = tuple(OUTPUT_TYPES.get(n, "NOT_FOUND") for n in names)
            rid = 0
            if "NOT_FOUND" not in types and 0 < frequency <= 500:
                rid = self._new_id()
                self.outputs[rid] = (Recipe(rid, names, types), 1.0 / frequency)
            self._send(rtde.recipe_reply(kind, rid, types))
        elif kind == rtde.SETUP_INPUTS:
            names = rtde.parse_setup_inputs(payload)
            types = self.sim.controller.claim_inputs(self.conn_id, names)
            rid = 0
            if not any(t in ("NOT_FOUND", "IN_USE") for t in types):
                rid = self._new_id()
                self.inputs[rid] = Recipe(rid, names, types)
            self._send(rtde.recipe_reply(kind, rid, types))
        elif kind in (rtde.START, rtde.PAUSE):
            self.started = kind == rtde.START
            self._send(rtde.accepted(kind, True))
        elif kind == rtde.DATA_PACKAGE:
            self._input(payload)
        elif kind == rtde.TEXT_MESSAGE:
            logger.info("client %d says %s", self.conn_id, rtde.parse_text_message(payload, self.version))

    def _input(self, payload: bytes) -> None:
        rid, body = rtde.parse_data_package(payload)
        recipe = self.inputs.get(rid)
        if recipe is None or len(body) != recipe.size or not self.started:
            self.tell(f"ignored data package for recipe {rid}", rtde.WARNING)
            return
        self.sim.controller.write_inputs(recipe.unpack(body), time.monotonic())

    def _new_id(self) -> int:
        rid, self.next_id = self.next_id, self.next_id + 1
        return rid

    def tell(self, text: str, level: int) -> None:
        self.outbox.append(rtde.TextMessage(text, "Controller", level))


class URSim:
    """RTDE server + program port + controller model; `start()`, `stop()`, `.address`."""

    kind = "UR controller (RTDE)"

    def __init__(
        self,
        port: int = 30004,
        script_port: int = 30002,
        faults: FaultConfig | None = None,
        model: ArmModel | None = None,
        urcontrol_version: tuple[int, int, int, int] = (5, 12, 0, 0),
        host: str = "127.0.0.1",
        protocols: tuple[int, ...] = (1, 2),
    ):
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"the simulator binds loopback only, not {host}")
        self.host, self.port, self.script_port = host, port, script_port
        self.faults = FaultInjector(faults or FaultConfig())
        self.urcontrol_version = urcontrol_version
        self.protocols = protocols  # RTDE protocol versions accepted; (1,) imitates old CB3 software
        self.controller = Controller(model, notify=self._broadcast)
        self.vanished = threading.Event()
        self._stop = threading.Event()
        self._connections: list[_Connection] = []
        self._threads: list[threading.Thread] = []
        self._listeners: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def script_address(self) -> tuple[str, int]:
        return self.host, self.script_port

    def banner(self) -> str:
        return (
            f"simulated {self.kind}: RTDE on {self.host}:{self.port}, "
            f"control program accepted on {self.host}:{self.script_port}"
        )

    def start(self) -> URSim:
        rtde_sock = self._listen(self.port)
        script_sock = self._listen(self.script_port)
        self.port, self.script_port = rtde_sock.getsockname()[1], script_sock.getsockname()[1]
        if self.faults.config.hardware_error_ids:
            self.controller.protective_stop()
        self._stop.clear()
        self._spawn(self._accept_rtde, rtde_sock)
        self._spawn(self._accept_script, script_sock)
        self._spawn(self._control_loop)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._close_all()
        for t in self._threads:
            t.join(timeout=2.0)
        self._threads.clear()

    def vanish(self) -> None:
        """Drop every connection and stop listening, as if the controller lost power."""
        self._close_all()
        self.vanished.set()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- internals ------------------------------------------------------------------------------
    def _listen(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            self._close_all()
            raise
        sock.listen(MAX_CLIENTS)
        self._listeners.append(sock)
        return sock

    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True, name=f"ursim-{fn.__name__}")
        self._threads = [x for x in self._threads if x.is_alive()] + [t]  # closed connections drop out
        t.start()

    def _close_all(self) -> None:
        for sock in self._listeners:
            try:
                sock.close()
            except OSError:
                pass
        self._listeners.clear()
        with self._lock:
            for s in self._connections:
                s.closed.set()

    def _broadcast(self, text: str, level: int) -> None:
        with self._lock:
            for s in self._connections:
                s.tell(text, level)

    def _accept_loop(self, sock: socket.socket):
        while not self._stop.is_set() and not self.vanished.is_set():
            try:
                ready, _, _ = select.select([sock], [], [], 0.05)
                if ready:
                    yield sock.accept()[0]
            except OSError:
                return

    def _accept_rtde(self, sock: socket.socket) -> None:
        for n, conn in enumerate(self._accept_loop(sock), start=1):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Connection(self, conn, n)
            with self._lock:
                self._connections = [s for s in self._connections if not s.closed.is_set()]
                if len(self._connections) >= MAX_CLIENTS:
                    conn.close()
                    continue
                self._connections.append(client)
            self._spawn(self._run_connection, client)

    def _run_connection(self, client: _Connection) -> None:
        client.serve()
        client.closed.set()

    def _accept_script(self, sock: socket.socket) -> None:
        for conn in self._accept_loop(sock):
            text = self._read_program(conn)
            program = parse_program(text)
            if program is None:
                self._broadcast("rejected a program that is not vla_runtime_control", rtde.ERROR)
            elif self.controller.safety_mode == 1:
                self.controller.start_program(program, time.monotonic())
            else:
                self._broadcast("cannot start the program during a protective stop", rtde.ERROR)

    def _read_program(self, conn: socket.socket) -> str:
        deadline = time.monotonic() + 1.0  # the uploader sends everything and closes
        chunks = []
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([conn], [], [], deadline - time.monotonic())
                data = conn.recv(65536) if ready else b""
                if not data:
                    break
                chunks.append(data)
        except OSError:
            pass
        finally:
            conn.close()
        return b"".join(chunks).decode("utf-8", errors="replace")

    def _control_loop(self) -> None:
        started = time.monotonic()
        vanish_at = self.faults.config.vanish_after_s
        while not self._stop.wait(CONTROL_PERIOD):
            now = time.monotonic()
            self.controller.step(now)
            if vanish_at is not None and now - started >= vanish_at and not self.vanished.is_set():
                self.vanish()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=30004, help="RTDE port on 127.0.0.1 (0 = any free)")
    parser.add_argument("--script-port", type=int, default=30002, help="port accepting the control program")
    parser.add_argument("--max-joint-speed", type=float, default=1.0, help="simulated joint speed limit, rad/s")
    add_fault_arguments(parser)


def from_args(args: argparse.Namespace) -> URSim:
    return URSim(
        port=args.port,
        script_port=args.script_port,
        faults=fault_config_from_args(args),
        model=ArmModel(max_joint_speed=args.max_joint_speed),
    )


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C; bad flags or a busy port end with one line on stderr and exit code 2."""
    try:
        sim = from_args(args)
        hint = 'arm config: host = "127.0.0.1" with the two ports above (port, script_port)'
        return serve_until_interrupted(sim, hint)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except OSError as exc:
        print(
            f"error: cannot listen on 127.0.0.1 ({exc}); pass --port 0 --script-port 0 for free ports", file=sys.stderr
        )
    return 2


def main(argv: list[str] | None = None) -> int:
    """`python -m vla_runtime.drivers.ur.sim`: the same as `vla-runtime sim-device ur-rtde`."""
    parser = argparse.ArgumentParser(prog="ur-rtde-sim", description=__doc__.splitlines()[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.WARNING)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
