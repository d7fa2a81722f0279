"""`vla-runtime drivers scan|latency` and `vla-runtime sim-device` as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from vla_runtime.drivers.dynamixel.sim import DynamixelSim
from vla_runtime.drivers.feetech.sim import FeetechSim
from vla_runtime.drivers.usb_latency import check_latency_timer, lower_latency_timer
from vla_runtime.runtime.cli import main

pytestmark = pytest.mark.timeout(60)


def fake_sysfs(tmp_path, driver: str, latency: int | None):
    """A real directory tree laid out like Linux sysfs for one adapter, ttyUSB0."""
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "ttyUSB0").write_text("")
    sys_root = tmp_path / "sys"
    drv = sys_root / "bus" / "usb-serial" / "drivers" / driver
    drv.mkdir(parents=True)
    device = sys_root / "class" / "tty" / "ttyUSB0" / "device"
    device.mkdir(parents=True)
    (device / "driver").symlink_to(drv)
    if latency is not None:
        node = sys_root / "bus" / "usb-serial" / "devices" / "ttyUSB0"
        node.mkdir(parents=True)
        (node / "latency_timer").write_text(f"{latency}\n")
    return str(dev / "ttyUSB0"), sys_root


def test_ftdi_default_latency_is_flagged_with_the_one_line_fix(tmp_path):
    port, sys_root = fake_sysfs(tmp_path, "ftdi_sio", 16)
    report = check_latency_timer(port, sys_root)
    assert (report.driver, report.latency_ms, report.ok) == ("ftdi_sio", 16, False)
    assert report.fix == f"echo 1 | sudo tee {sys_root}/bus/usb-serial/devices/ttyUSB0/latency_timer"
    assert "16 ms" in report.describe() and "udev" in report.describe()
    fixed = lower_latency_timer(report)  # the fake tree is writable, like sysfs for root
    assert fixed.latency_ms == 1 and fixed.ok


def test_low_latency_and_acm_adapters_pass(tmp_path):
    port, sys_root = fake_sysfs(tmp_path, "cdc_acm", None)
    report = check_latency_timer(port, sys_root)
    assert report.ok and report.latency_ms is None and "no latency timer" in report.describe()


def test_scan_finds_dynamixel_servos(capsys):
    with DynamixelSim(ids=(1, 4, 7), model=1190) as sim:
        rc = main(["drivers", "scan", "--port", sim.port, "--protocol", "dynamixel", "--window-ms", "100"])
    out = capsys.readouterr().out
    assert rc == 0
    rows = [line.split() for line in out.splitlines() if line.startswith("dynamixel ") and "XL330" in line]
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("1000000", "1", "1190"),
        ("1000000", "4", "1190"),
        ("1000000", "7", "1190"),
    ]


def test_scan_finds_feetech_servos(capsys):
    with FeetechSim(ids=(2, 3)) as sim:
        rc = main(["drivers", "scan", "--port", sim.port, "--protocol", "feetech", "--ids", "1-4", "--baud", "1000000"])
    out = capsys.readouterr().out
    assert rc == 0 and "STS3215" in out
    assert [line.split()[2] for line in out.splitlines() if line.startswith("feetech ") and "STS" in line] == ["2", "3"]


def test_scan_reports_nothing_found_and_bad_port(capsys):
    with FeetechSim(ids=()) as sim:
        rc = main(["drivers", "scan", "--port", sim.port, "--protocol", "feetech", "--ids", "1-2", "--baud", "1000000"])
    assert rc == 1 and "no servos answered" in capsys.readouterr().out
    assert main(["drivers", "scan", "--port", "/nonexistent/ttyUSB9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: serial port /nonexistent/ttyUSB9 does not exist; list adapters with: ls /dev/serial/by-id/"]


def test_bad_fault_flag_is_one_line(capsys):
    assert main(["sim-device", "dynamixel", "--drop-rate", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--drop-rate must be within 0..1" in err[0]


def test_sim_device_command_prints_where_to_connect_and_stops_on_ctrl_c(capsys):
    proc = subprocess.Popen(
        [sys.executable, "-m", "vla_runtime.runtime.cli", "sim-device", "feetech", "--ids", "1-2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = proc.stdout.readline()
        assert "simulated Feetech STS/SMS bus: ids [1, 2]" in banner
        port = banner.rsplit(" on ", 1)[1].strip()
        assert os.path.exists(port)
        assert (
            main(["drivers", "scan", "--port", port, "--protocol", "feetech", "--ids", "1-3", "--baud", "1000000"]) == 0
        )
        assert "STS3215" in capsys.readouterr().out
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def test_sim_device_started_in_the_background_still_stops_on_ctrl_c():
    """`sim-device &` from a script inherits SIGINT ignored; the command must still stop on it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vla_runtime.runtime.cli", "sim-device", "dynamixel", "--ids", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # what `cmd &` does
    )
    try:
        assert "on /dev/" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
