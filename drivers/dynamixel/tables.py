"""Dynamixel X-series control table as data: register -> (address, size), per model number.

All X-series models (XL430, XM430, XC430, XL330, XC330, XM540, XH540) share these addresses, so
one table serves every model we know; `MODELS` names them so a scan can say what it found.
Enum keys turn a mistyped register name into a lint error instead of a wrong write.
"""

from __future__ import annotations

import enum


class Reg(enum.Enum):
    MODEL_NUMBER = "model_number"
    FIRMWARE_VERSION = "firmware_version"
    ID = "id"
    BAUD_RATE = "baud_rate"
    RETURN_DELAY_TIME = "return_delay_time"
    DRIVE_MODE = "drive_mode"
    OPERATING_MODE = "operating_mode"
    HOMING_OFFSET = "homing_offset"
    MAX_POSITION_LIMIT = "max_position_limit"
    MIN_POSITION_LIMIT = "min_position_limit"
    SHUTDOWN = "shutdown"
    TORQUE_ENABLE = "torque_enable"
    LED = "led"
    STATUS_RETURN_LEVEL = "status_return_level"
    HARDWARE_ERROR_STATUS = "hardware_error_status"
    BUS_WATCHDOG = "bus_watchdog"
    GOAL_CURRENT = "goal_current"
    GOAL_VELOCITY = "goal_velocity"
    PROFILE_ACCELERATION = "profile_acceleration"
    PROFILE_VELOCITY = "profile_velocity"
    GOAL_POSITION = "goal_position"
    MOVING = "moving"
    PRESENT_CURRENT = "present_current"
    PRESENT_VELOCITY = "present_velocity"
    PRESENT_POSITION = "present_position"
    PRESENT_INPUT_VOLTAGE = "present_input_voltage"
    PRESENT_TEMPERATURE = "present_temperature"


# register -> (address, size in bytes); little-endian, signed where the value can be negative
X_SERIES: dict[Reg, tuple[int, int]] = {
    Reg.MODEL_NUMBER: (0, 2),
    Reg.FIRMWARE_VERSION: (6, 1),
    Reg.ID: (7, 1),
    Reg.BAUD_RATE: (8, 1),
    Reg.RETURN_DELAY_TIME: (9, 1),  # 2 us units; factory 250 (500 us), we want 0
    Reg.DRIVE_MODE: (10, 1),
    Reg.OPERATING_MODE: (11, 1),
    Reg.HOMING_OFFSET: (20, 4),  # Present = Actual + Homing_Offset
    Reg.MAX_POSITION_LIMIT: (48, 4),
    Reg.MIN_POSITION_LIMIT: (52, 4),
    Reg.SHUTDOWN: (63, 1),
    Reg.TORQUE_ENABLE: (64, 1),
    Reg.LED: (65, 1),
    Reg.STATUS_RETURN_LEVEL: (68, 1),
    Reg.HARDWARE_ERROR_STATUS: (70, 1),
    Reg.BUS_WATCHDOG: (98, 1),  # 20 ms units, 0 = off; the device writes 0xFF (-1) when it trips
    Reg.GOAL_CURRENT: (102, 2),
    Reg.GOAL_VELOCITY: (104, 4),
    Reg.PROFILE_ACCELERATION: (108, 4),
    Reg.PROFILE_VELOCITY: (112, 4),
    Reg.GOAL_POSITION: (116, 4),
    Reg.MOVING: (122, 1),
    Reg.PRESENT_CURRENT: (126, 2),
    Reg.PRESENT_VELOCITY: (128, 4),  # 0.229 rev/min units
    Reg.PRESENT_POSITION: (132, 4),
    Reg.PRESENT_INPUT_VOLTAGE: (144, 2),
    Reg.PRESENT_TEMPERATURE: (146, 1),
}

SIGNED = frozenset(
    {
        Reg.HOMING_OFFSET,
        Reg.GOAL_CURRENT,
        Reg.GOAL_VELOCITY,
        Reg.GOAL_POSITION,
        Reg.PRESENT_CURRENT,
        Reg.PRESENT_VELOCITY,
        Reg.PRESENT_POSITION,
    }
)

# Registers written only while torque is off (EEPROM area, addresses below 64).
EEPROM_END = 64

# model number -> name (from ROBOTIS model numbers)
MODELS: dict[int, str] = {
    1020: "XM430-W350",
    1030: "XM430-W210",
    1060: "XL430-W250",
    1070: "XC430-W150",
    1080: "XC430-W240",
    1110: "XH540-W150",
    1120: "XM540-W270",
    1130: "XM540-W150",
    1190: "XL330-M077",
    1200: "XL330-M288",
    1210: "XC330-T181",
    1220: "XC330-T288",
}

TABLES: dict[int, dict[Reg, tuple[int, int]]] = {model: X_SERIES for model in MODELS}

TICKS_PER_REV = 4096  # 0.088 deg per tick on every X-series model
VELOCITY_UNIT_RPM = 0.229  # Present/Goal Velocity unit, rev/min
WATCHDOG_UNIT_S = 0.020  # Bus Watchdog unit, seconds

# Baud Rate register code -> bits/s
BAUD_CODES: dict[int, int] = {
    0: 9600,
    1: 57_600,
    2: 115_200,
    3: 1_000_000,
    4: 2_000_000,
    5: 3_000_000,
    6: 4_000_000,
    7: 4_500_000,
}


class HardwareError(enum.IntFlag):
    """Hardware Error Status (70) bits; any of these cleared torque and needs a REBOOT."""

    INPUT_VOLTAGE = 0x01
    OVERHEATING = 0x04
    MOTOR_ENCODER = 0x08
    ELECTRICAL_SHOCK = 0x10
    OVERLOAD = 0x20


def table_for(model: int) -> dict[Reg, tuple[int, int]]:
    """The control table of a model; unknown models fall back to X-series (same addresses)."""
    return TABLES.get(model, X_SERIES)


def model_name(model: int) -> str:
    return MODELS.get(model, f"unknown model {model}")
