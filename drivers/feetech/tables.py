"""Feetech STS/SMS memory table as data: register -> (address, size), plus encodings.

STS and SMS share one table. Where a register can be negative it is stored sign-magnitude, with
the sign bit given in SIGN_BITS; the Homing Offset is *subtracted* (Present = Actual - Offset),
the opposite of Dynamixel, which the bus hides behind `set_homing_shift`.
"""

from __future__ import annotations

import enum


class Reg(enum.Enum):
    FIRMWARE_MAJOR = "firmware_major"
    FIRMWARE_MINOR = "firmware_minor"
    MODEL_NUMBER = "model_number"
    ID = "id"
    BAUD_RATE = "baud_rate"
    RETURN_DELAY_TIME = "return_delay_time"
    RESPONSE_STATUS_LEVEL = "response_status_level"
    MIN_POSITION_LIMIT = "min_position_limit"
    MAX_POSITION_LIMIT = "max_position_limit"
    MAX_TORQUE_LIMIT = "max_torque_limit"
    PHASE = "phase"
    PROTECTION_CURRENT = "protection_current"
    HOMING_OFFSET = "homing_offset"
    OPERATING_MODE = "operating_mode"
    TORQUE_ENABLE = "torque_enable"
    ACCELERATION = "acceleration"
    GOAL_POSITION = "goal_position"
    GOAL_TIME = "goal_time"
    GOAL_VELOCITY = "goal_velocity"
    TORQUE_LIMIT = "torque_limit"
    LOCK = "lock"
    PRESENT_POSITION = "present_position"
    PRESENT_VELOCITY = "present_velocity"
    PRESENT_LOAD = "present_load"
    PRESENT_VOLTAGE = "present_voltage"
    PRESENT_TEMPERATURE = "present_temperature"
    STATUS = "status"
    MOVING = "moving"
    PRESENT_CURRENT = "present_current"


STS_SMS: dict[Reg, tuple[int, int]] = {
    Reg.FIRMWARE_MAJOR: (0, 1),
    Reg.FIRMWARE_MINOR: (1, 1),
    Reg.MODEL_NUMBER: (3, 2),
    Reg.ID: (5, 1),
    Reg.BAUD_RATE: (6, 1),
    Reg.RETURN_DELAY_TIME: (7, 1),  # 2 us units
    Reg.RESPONSE_STATUS_LEVEL: (8, 1),
    Reg.MIN_POSITION_LIMIT: (9, 2),
    Reg.MAX_POSITION_LIMIT: (11, 2),
    Reg.MAX_TORQUE_LIMIT: (16, 2),  # 0.1 % units, loaded into Torque Limit at boot
    Reg.PHASE: (18, 1),
    Reg.PROTECTION_CURRENT: (28, 2),
    Reg.HOMING_OFFSET: (31, 2),  # sign-magnitude, sign bit 11; Present = Actual - Offset
    Reg.OPERATING_MODE: (33, 1),  # 0 position, 1 speed, 2 PWM, 3 step
    Reg.TORQUE_ENABLE: (40, 1),  # 0 off, 1 on, 2 damping, 128 = current position becomes 2048
    Reg.ACCELERATION: (41, 1),
    Reg.GOAL_POSITION: (42, 2),  # sign-magnitude, sign bit 15
    Reg.GOAL_TIME: (44, 2),
    Reg.GOAL_VELOCITY: (46, 2),  # sign-magnitude, sign bit 15, steps/s
    Reg.TORQUE_LIMIT: (48, 2),  # 0.1 % units
    Reg.LOCK: (55, 1),  # 0 = EEPROM writes persist, 1 = locked
    Reg.PRESENT_POSITION: (56, 2),  # sign-magnitude, sign bit 15
    Reg.PRESENT_VELOCITY: (58, 2),  # sign-magnitude, sign bit 15, steps/s
    Reg.PRESENT_LOAD: (60, 2),  # sign-magnitude, sign bit 10, 0.1 %
    Reg.PRESENT_VOLTAGE: (62, 1),  # 0.1 V
    Reg.PRESENT_TEMPERATURE: (63, 1),  # deg C
    Reg.STATUS: (65, 1),  # same bits as the status ERR byte
    Reg.MOVING: (66, 1),
    Reg.PRESENT_CURRENT: (69, 2),
}

SIGN_BITS: dict[Reg, int] = {
    Reg.HOMING_OFFSET: 11,
    Reg.GOAL_POSITION: 15,
    Reg.GOAL_VELOCITY: 15,
    Reg.PRESENT_POSITION: 15,
    Reg.PRESENT_VELOCITY: 15,
    Reg.PRESENT_LOAD: 10,
}

EEPROM_END = 40  # addresses below this are EEPROM: writable only with Lock = 0

MODELS: dict[int, str] = {777: "STS3215", 2825: "STS3250", 2313: "SMS-series", 1284: "SCS0009"}

TICKS_PER_REV = 4096  # STS/SMS magnetic encoder, 0.088 deg per step

# Baud Rate register code -> bits/s (vendor document)
BAUD_CODES: dict[int, int] = {
    0: 1_000_000,
    1: 500_000,
    2: 250_000,
    3: 128_000,
    4: 115_200,
    5: 76_800,
    6: 57_600,
    7: 38_400,
}


def model_name(model: int) -> str:
    return MODELS.get(model, f"unknown model {model}")
