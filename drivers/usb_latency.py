"""Detect the FTDI latency timer that turns a 1 ms servo exchange into 16 ms.

Linux `ftdi_sio` adapters (ROBOTIS U2D2, many Feetech boards) hold short replies for up to the
latency timer, 16 ms by default: two reads per tick then eat a third of a 10 Hz budget. The
setting lives in sysfs, so we read it there, and the fix we print is the one that always works
(writing sysfs), plus the udev rule that makes it survive a replug.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

GOOD_LATENCY_MS = 1  # what servo buses need; anything above shows up directly in the loop time
UDEV_RULE = 'ACTION=="add", SUBSYSTEM=="usb-serial", DRIVER=="ftdi_sio", ATTR{latency_timer}="1"'


@dataclass(frozen=True)
class LatencyReport:
    port: str  # what the user passed, e.g. /dev/serial/by-id/usb-FTDI_...
    tty: str  # kernel name it resolves to, e.g. ttyUSB0
    driver: str | None  # kernel driver, e.g. ftdi_sio, cp210x, cdc_acm; None for a pty or unknown
    latency_ms: int | None  # the timer in ms, None where the adapter has none
    sysfs_path: str | None  # the latency_timer file, when there is one

    @property
    def ok(self) -> bool:
        return self.latency_ms is None or self.latency_ms <= GOOD_LATENCY_MS

    @property
    def fix(self) -> str | None:
        """The one-line fix, or None when nothing needs fixing."""
        if self.ok or self.sysfs_path is None:
            return None
        return f"echo 1 | sudo tee {self.sysfs_path}"

    def describe(self) -> str:
        if self.latency_ms is None:
            what = self.driver or "no USB-serial driver (pty or built-in UART)"
            return f"{self.port}: {what}; no latency timer to tune"
        if self.ok:
            return f"{self.port}: {self.driver} latency timer {self.latency_ms} ms (good)"
        return (
            f"{self.port}: {self.driver} latency timer is {self.latency_ms} ms, so every reply can wait that long; "
            f"fix now: {self.fix}   (persist with the udev rule: {UDEV_RULE})"
        )


def check_latency_timer(port: str, sysfs_root: str | os.PathLike = "/sys") -> LatencyReport:
    """Inspect sysfs for `port`; never raises for a missing file, a pty or a non-Linux host."""
    root = Path(sysfs_root)
    tty = Path(os.path.realpath(port)).name
    device = root / "class" / "tty" / tty / "device"
    driver_link = device / "driver"
    driver = Path(os.path.realpath(driver_link)).name if driver_link.exists() else None
    candidates = [root / "bus" / "usb-serial" / "devices" / tty / "latency_timer", device / "latency_timer"]
    for path in candidates:
        try:
            value = int(path.read_text().strip())
        except (OSError, ValueError):
            continue
        return LatencyReport(port, tty, driver, value, str(path))
    return LatencyReport(port, tty, driver, None, None)


def lower_latency_timer(report: LatencyReport, value_ms: int = GOOD_LATENCY_MS) -> LatencyReport:
    """Write the timer through sysfs (needs root or a udev rule) and read it back to be sure."""
    if report.sysfs_path is None:
        return report
    try:
        Path(report.sysfs_path).write_text(f"{value_ms}\n")
    except OSError as exc:
        logger.warning("cannot write %s (%s); run: %s", report.sysfs_path, exc, report.fix)
        return report
    value = int(Path(report.sysfs_path).read_text().strip())
    return LatencyReport(report.port, report.tty, report.driver, value, report.sysfs_path)
