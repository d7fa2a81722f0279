"""URArm: the runtime's ArmDriver for Universal Robots e-Series / CB3 over RTDE.

Joint targets go into input registers; `vla_control.script` on the controller follows them
with servoj and is stopped by the controller's RTDE watchdog if our packages stop arriving,
so a crashed runtime leaves a stopped arm, not one chasing its last target. activate() starts
that program (uploading it to the secondary interface, or waiting for an operator to press
play) and returns only once the program reports it is holding.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

import numpy as np
from vla_runtime.drivers.base import (
    ArmDriver,
    DeviceTimeout,
    DriverError,
    DriverState,
    HardwareFault,
    JointReading,
    PortLost,
)
from vla_runtime.drivers.transport import TcpConfig, TcpTransport
from vla_runtime.drivers.ur.client import RTDEClient, RTDEClientConfig
from vla_runtime.drivers.ur.program import Command, ProgramConfig, ProgramState

logger = logging.getLogger(__name__)

UR_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3")
ROBOT_MODE_RUNNING = 7
SAFETY_NORMAL = 1
SAFETY_MODES = {2: "reduced", 3: "protective stop", 4: "recovery", 5: "safeguard stop", 6: "system emergency stop",
                7: "robot emergency stop", 8: "violation", 9: "fault"}  # fmt: skip


@dataclass(frozen=True)
class URConfig:
    host: str  # controller IP address; 127.0.0.1 for `sim-device ur-rtde`
    port: int = 30004  # RTDE port
    script_port: int = 30002  # secondary interface that runs a program sent to it
    upload_script: bool = True  # False: an operator starts vla_control.script on the pendant
    frequency: float = 125.0  # Hz of the state stream; 125 suits CB3 and e-Series alike
    setup_timeout: float = 1.0  # seconds for each RTDE setup reply (version, recipes, start)
    start_timeout: float = 5.0  # seconds for the program to report HOLDING after activate()
    receive_timeout: float = 0.1  # seconds read() waits for a state package (one 10 Hz tick)
    program: ProgramConfig = field(default_factory=ProgramConfig)  # registers, watchdog, servoj settings

    def __post_init__(self):
        if not self.host:
            raise ValueError('arm host is empty; set [arm] host = "192.168.x.y" in the robot description')
        for name in ("port", "script_port"):
            if not 0 < getattr(self, name) < 65536:
                raise ValueError(f"arm {name} must be 1..65535, got {getattr(self, name)}")
        if min(self.setup_timeout, self.start_timeout, self.receive_timeout) <= 0:
            raise ValueError("arm timeouts must be positive seconds")
        RTDEClientConfig(frequency=self.frequency)  # validates the rate with the client's own rule

    @classmethod
    def from_options(cls, options: Mapping[str, object]) -> URConfig:
        """Build from the robot description's [arm] keys; servoj/watchdog keys go to the program."""
        top = {f.name for f in fields(cls)} - {"program"}
        prog = {f.name for f in fields(ProgramConfig)}
        unknown = sorted(set(options) - top - prog)
        if unknown:
            raise ValueError(f"[arm] unknown key(s) {unknown} for ur-rtde; known: {sorted(top | prog)}")
        try:
            program = ProgramConfig(**{k: v for k, v in options.items() if k in prog})
            return cls(program=program, **{k: v for k, v in options.items() if k in top})
        except TypeError as exc:
            raise ValueError(f"[arm] ur-rtde settings: {exc}") from None


def upload_program(host: str, port: int, text: str, timeout: float = 2.0) -> None:
    """Send a URScript program to the secondary interface, which runs it on arrival."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(text.encode("utf-8"))
            sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        raise PortLost(
            f"cannot send the control program to {host}:{port}: {exc}; check the address, "
            "or set upload_script = false and start it on the pendant"
        ) from exc


class URArm(ArmDriver):
    """Six revolute joints in radians, in UR order (base to wrist 3)."""

    OUTPUTS = ("timestamp", "actual_q", "actual_qd", "robot_mode", "safety_mode", "runtime_state")

    def __init__(
        self,
        client: RTDEClient,
        config: URConfig,
        upload: Callable[[str], None] | None = None,
        name: str = "arm",
    ):
        super().__init__(name)
        self.client = client
        self.config = config
        self.upload = upload  # sends the rendered program; None when an operator starts it
        self.counter = 0  # watchdog counter written with every package
        self.last_state: dict[str, object] = {}  # the newest state package
        p = config.program
        self._outputs = self.OUTPUTS + (f"output_int_register_{p.state_reg}", f"output_int_register_{p.echo_reg}")

    @property
    def joint_names(self) -> tuple[str, ...]:
        return UR_JOINTS

    @property
    def worst_io_s(self) -> float:
        return self.config.receive_timeout  # a read waits for one state package; a command is one write

    @property
    def program_state(self) -> ProgramState:
        value = self.last_state.get(f"output_int_register_{self.config.program.state_reg}", 0)
        try:
            return ProgramState(value)
        except ValueError:  # a register another program wrote: ours is not the one running
            return ProgramState.NOT_RUNNING

    # -- RTDE ------------------------------------------------------------------------------------
    def _send(self, command: Command, targets: np.ndarray) -> None:
        p = self.config.program
        self.counter = (self.counter + 1) % 2**31
        values: dict[str, object] = {
            f"input_int_register_{p.cmd_reg}": int(command),
            f"input_int_register_{p.counter_reg}": self.counter,
        }
        values.update({f"input_double_register_{p.q_reg + i}": float(q) for i, q in enumerate(targets)})
        self.client.send(values)

    def _poll(self) -> dict[str, object]:
        self.last_state = self.client.receive(self.config.receive_timeout)
        return self.last_state

    def _check_safety(self, state: dict[str, object]) -> None:
        safety = state["safety_mode"]
        if safety != SAFETY_NORMAL:
            what = SAFETY_MODES.get(safety, f"safety mode {safety}")
            raise HardwareFault(f"{self.name}: controller reports {what}; clear it on the pendant, then re-activate")
        if state["robot_mode"] != ROBOT_MODE_RUNNING:
            raise HardwareFault(
                f"{self.name}: robot_mode is {state['robot_mode']}, not running; power on and release the brakes"
            )

    # -- lifecycle hooks -------------------------------------------------------------------------
    def _on_configure(self) -> None:
        self.client.negotiate()
        version = self.client.controller_version()
        self.client.setup_outputs(self._outputs)
        self.client.setup_inputs(self.config.program.input_names())
        self.client.start()
        self._check_safety(self._poll())
        logger.info("%s: UR controller %s, RTDE protocol %d", self.name, version, self.client.protocol)

    def _on_activate(self) -> None:
        hold = np.asarray(self._poll()["actual_q"], dtype=np.float64)
        self._check_safety(self.last_state)
        self._send(Command.HOLD, hold)  # registers say "hold" before the program reads them
        if self.upload is not None:
            self.upload(self.config.program.render())
        deadline = time.monotonic() + self.config.start_timeout
        while self.program_state is ProgramState.NOT_RUNNING:
            if time.monotonic() >= deadline:
                how = "check the controller log" if self.upload else "press play on the pendant"
                raise DeviceTimeout(
                    f"{self.name}: control program not running after {self.config.start_timeout:.1f} s; "
                    f"{how} (remote control mode must be on to accept programs)"
                )
            self._send(Command.HOLD, hold)  # also feeds the watchdog while we wait
            self._poll()
            self._check_safety(self.last_state)

    def _on_deactivate(self) -> None:
        if self.last_state:
            self._send(Command.STOP, np.asarray(self.last_state["actual_q"], dtype=np.float64))
        deadline = time.monotonic() + self.config.start_timeout
        while self._poll() and self.program_state is not ProgramState.NOT_RUNNING:
            if time.monotonic() >= deadline:
                raise DeviceTimeout(f"{self.name}: control program did not stop; stop it on the pendant")

    def _on_fault(self) -> None:
        """Best effort: ask the program to stop; if the link is gone the controller's watchdog stops it."""
        if self.client.input is None:
            return  # setup never finished, so no program can be running on our behalf
        try:
            self._send(Command.STOP, np.asarray(self.last_state.get("actual_q", (0.0,) * 6), dtype=np.float64))
        except (DriverError, OSError) as exc:
            logger.warning("%s: stop request not sent (%s); relying on the RTDE watchdog", self.name, exc)

    def _read_back(self) -> str:
        # hold and deactivate both stop the program: a stopped UR holds its pose on its own
        self._poll()
        state = self.program_state
        running = "stopped" if state is ProgramState.NOT_RUNNING else f"still running ({state.name.lower()})"
        return f"control program {running}, safety mode {self.last_state.get('safety_mode')} (read back)"

    def _on_close(self) -> None:
        self.client.transport.close()

    # -- I/O ---------------------------------------------------------------------------------
    def _read(self, now: float) -> JointReading:
        state = self._poll()
        self._check_safety(state)
        if self.state is DriverState.ACTIVE and self.program_state is ProgramState.NOT_RUNNING:
            raise HardwareFault(
                f"{self.name}: the control program stopped (RTDE watchdog or pendant); "
                "check the command rate against watchdog_hz, then re-activate"
            )
        return JointReading(
            positions=np.asarray(state["actual_q"], dtype=np.float64),
            velocities=np.asarray(state["actual_qd"], dtype=np.float64),
            t=now,
        )

    def _command(self, targets: np.ndarray, now: float, period: float) -> np.ndarray:
        self._send(Command.SERVO, targets)
        return targets.copy()  # doubles go over the wire unchanged


def open_arm(config: URConfig, name: str = "arm") -> URArm:
    """Connect the RTDE socket and build the driver; nothing is set up until configure()."""
    transport = TcpTransport(TcpConfig(host=config.host, port=config.port))
    client = RTDEClient(
        transport,
        RTDEClientConfig(
            frequency=config.frequency, setup_timeout=config.setup_timeout, receive_timeout=config.receive_timeout
        ),
    )
    upload = None
    if config.upload_script:

        def upload(text: str) -> None:
            upload_program(config.host, config.script_port, text)

    return URArm(client, config, upload=upload, name=name)


def make_arm(spec):
    """Robot-description factory: `[arm] driver = "ur-rtde"` plus URConfig / ProgramConfig keys."""
    config = URConfig.from_options(dict(spec.options))
    names = tuple(j.name for j in getattr(spec, "joints", ()))
    if names and names != UR_JOINTS:
        raise ValueError(f"[[arm.joints]] for ur-rtde must be named {list(UR_JOINTS)} in that order, got {list(names)}")
    try:
        return open_arm(config)
    except DriverError as exc:  # the controller cannot be reached: one line for the user, not a traceback
        raise ConnectionError(str(exc)) from None
