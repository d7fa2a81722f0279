"""Dumb byte pipes: a serial port (USB adapter or pseudo-terminal) and a TCP socket.

A transport knows nothing about frames. It writes bytes and returns whatever bytes arrive
within a timeout, so the link above it owns deadlines and retries, and the codec owns framing.
A vanished port is reported as `PortLost`, never as an empty read, because an unplugged USB
adapter must stop the robot rather than look like a slow servo.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass

import serial
from vla_runtime.drivers.base import DeviceTimeout, PortLost

logger = logging.getLogger(__name__)

if sys.platform != "win32":
    import termios

    _TTY_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError, ValueError, termios.error)
else:  # pragma: no cover - Windows has no termios
    _TTY_ERRORS = (serial.SerialException, OSError, ValueError)


class Transport(ABC):
    """Write bytes; read what arrived within a timeout; nothing else."""

    name: str  # the port path or host:port, for messages

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Queue all of `data` for sending."""

    @abstractmethod
    def read(self, max_bytes: int, timeout: float) -> bytes:
        """Return 1..max_bytes bytes as soon as any arrive, or b'' after `timeout` seconds."""

    @abstractmethod
    def reset_input(self) -> None:
        """Drop bytes already received (stale replies from an earlier, abandoned exchange)."""

    @abstractmethod
    def close(self) -> None:
        """Release the port; safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass(frozen=True)
class SerialConfig:
    port: str  # device path, e.g. /dev/ttyUSB0, /dev/serial/by-id/..., or a pty path from sim-device
    baud: int = 1_000_000  # bits/s; Dynamixel X and Feetech STS buses usually run at 1 Mbps
    low_latency: bool = True  # ask the kernel for ASYNC_LOW_LATENCY (FTDI latency timer 16 ms -> 1 ms)
    write_timeout: float = 0.1  # seconds; a write that cannot drain this fast means a dead adapter
    exclusive: bool = False  # flock the device: a second program on one servo bus corrupts both (POSIX)

    def __post_init__(self):
        if not self.port:
            raise ValueError("serial port is empty; pass --port /dev/ttyUSB0 (or the path sim-device prints)")
        if self.baud <= 0:
            raise ValueError(f"baud must be positive, got {self.baud}")
        if self.write_timeout <= 0:
            raise ValueError(f"write_timeout must be positive seconds, got {self.write_timeout}")


class SerialTransport(Transport):
    """pyserial underneath; on POSIX it waits with select() so a reply returns the moment it lands."""

    def __init__(self, config: SerialConfig):
        self.config = config
        self.name = config.port
        lockable = config.exclusive and "://" not in config.port and sys.platform != "win32"
        extra = {"exclusive": True} if lockable else {}
        try:
            self._ser = serial.serial_for_url(
                config.port, baudrate=config.baud, timeout=0, write_timeout=config.write_timeout, **extra
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            if "lock" in str(exc):
                raise PortLost(
                    f"serial port {config.port} is in use by another program; stop it (lsof {config.port}) first"
                ) from exc
            raise PortLost(
                f"cannot open serial port {config.port}: {exc}; check the path (ls /dev/serial/by-id/) "
                "and permissions (add yourself to the dialout group)"
            ) from exc
        if config.low_latency and hasattr(self._ser, "set_low_latency_mode"):
            try:
                self._ser.set_low_latency_mode(True)
            except (OSError, ValueError, serial.SerialException):
                logger.debug("%s: low-latency mode not supported (normal for pty and ttyACM)", config.port)
        try:
            self._fd: int | None = self._ser.fileno()
        except (AttributeError, NotImplementedError, serial.SerialException, OSError):
            self._fd = None  # URL handlers such as loop:// have no file descriptor

    def write(self, data: bytes) -> None:
        try:
            self._ser.write(data)
        except serial.SerialTimeoutException as exc:
            raise DeviceTimeout(f"{self.name}: write did not drain in {self.config.write_timeout}s") from exc
        except (serial.SerialException, OSError) as exc:
            raise PortLost(f"{self.name}: write failed ({exc}); is the adapter still plugged in?") from exc

    def read(self, max_bytes: int, timeout: float) -> bytes:
        if self._fd is None:
            return self._read_pyserial(max_bytes, timeout)
        try:
            ready, _, _ = select.select([self._fd], [], [], max(timeout, 0.0))
            if not ready:
                return b""
            data = os.read(self._fd, max_bytes)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EINTR):
                return b""
            raise PortLost(f"{self.name}: read failed ({exc}); is the adapter still plugged in?") from exc
        if not data:
            raise PortLost(f"{self.name}: port reports data but returns none; the device vanished")
        return data

    def _read_pyserial(self, max_bytes: int, timeout: float) -> bytes:
        try:
            self._ser.timeout = timeout
            first = self._ser.read(1)
            if not first:
                return b""
            self._ser.timeout = 0
            return first + self._ser.read(min(self._ser.in_waiting, max_bytes - 1))
        except (serial.SerialException, OSError) as exc:
            raise PortLost(f"{self.name}: read failed ({exc})") from exc

    def reset_input(self) -> None:
        try:
            self._ser.reset_input_buffer()
        except _TTY_ERRORS as exc:  # a hung-up pty raises termios.error, which is not an OSError
            raise PortLost(f"{self.name}: port gone ({exc}); is the adapter still plugged in?") from exc

    def close(self) -> None:
        try:
            self._ser.close()
        except (serial.SerialException, OSError):
            pass


@dataclass(frozen=True)
class TcpConfig:
    host: str  # controller address, e.g. 192.168.1.10 or 127.0.0.1 for sim-device
    port: int  # TCP port, e.g. 30004 for UR RTDE
    connect_timeout: float = 2.0  # seconds; a controller that does not accept this fast is off or unreachable

    def __post_init__(self):
        if not self.host:
            raise ValueError("host is empty; pass the controller's IP address")
        if not 0 < self.port < 65536:
            raise ValueError(f"TCP port must be 1..65535, got {self.port}")
        if self.connect_timeout <= 0:
            raise ValueError(f"connect_timeout must be positive seconds, got {self.connect_timeout}")


class TcpTransport(Transport):
    """A TCP stream with Nagle off, so small command frames leave immediately."""

    def __init__(self, config: TcpConfig):
        self.config = config
        self.name = f"{config.host}:{config.port}"
        try:
            self._sock = socket.create_connection((config.host, config.port), timeout=config.connect_timeout)
        except OSError as exc:
            raise PortLost(
                f"cannot connect to {self.name}: {exc}; check the address and that the controller is on"
            ) from exc
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.settimeout(None)
        self._sock.setblocking(False)

    def write(self, data: bytes) -> None:
        try:
            self._sock.setblocking(True)
            self._sock.settimeout(self.config.connect_timeout)
            self._sock.sendall(data)
        except TimeoutError as exc:
            raise DeviceTimeout(f"{self.name}: send stalled for {self.config.connect_timeout}s") from exc
        except OSError as exc:
            raise PortLost(f"{self.name}: send failed ({exc}); connection lost") from exc
        finally:
            try:
                self._sock.setblocking(False)
            except OSError:
                pass

    def read(self, max_bytes: int, timeout: float) -> bytes:
        try:
            ready, _, _ = select.select([self._sock], [], [], max(timeout, 0.0))
            if not ready:
                return b""
            data = self._sock.recv(max_bytes)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:
            raise PortLost(f"{self.name}: receive failed ({exc}); connection lost") from exc
        if not data:
            raise PortLost(f"{self.name}: the controller closed the connection")
        return data

    def reset_input(self) -> None:
        while True:
            try:
                if not self._sock.recv(65536):
                    raise PortLost(f"{self.name}: the controller closed the connection")
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                raise PortLost(f"{self.name}: connection lost ({exc})") from exc

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass
