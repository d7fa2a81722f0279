"""RTDE variable types and recipes: which names a data package carries and how they pack.

A recipe is agreed once at setup (names from the client, types from the controller) and then
every data package is a fixed struct, so packing is precomputed here and kept out of the codec.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# RTDE type name -> struct code (big-endian, no padding)
TYPE_CODES: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT32": "I",
    "UINT64": "Q",
    "INT32": "i",
    "DOUBLE": "d",
    "VECTOR3D": "3d",
    "VECTOR6D": "6d",
    "VECTOR6INT32": "6i",
    "VECTOR6UINT32": "6I",
}
NOT_FOUND = "NOT_FOUND"
IN_USE = "IN_USE"


def _vector_len(type_name: str) -> int:
    code = TYPE_CODES[type_name]
    return int(code[:-1]) if len(code) > 1 else 1


@dataclass(frozen=True)
class Recipe:
    """An agreed list of variables; values are scalars or tuples in that order."""

    recipe_id: int  # 1..255, assigned by the controller
    names: tuple[str, ...]
    types: tuple[str, ...]  # RTDE type names, one per name
    _struct: struct.Struct = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if len(self.names) != len(self.types):
            raise ValueError(f"recipe {self.recipe_id}: {len(self.names)} names but {len(self.types)} types")
        bad = [(n, t) for n, t in zip(self.names, self.types, strict=True) if t not in TYPE_CODES]
        if bad:
            raise ValueError(f"recipe {self.recipe_id}: unusable variables {bad}")
        object.__setattr__(self, "_struct", struct.Struct(">" + "".join(TYPE_CODES[t] for t in self.types)))

    @property
    def size(self) -> int:
        return self._struct.size

    def pack(self, values: dict[str, object]) -> bytes:
        flat: list[object] = []
        for name, type_name in zip(self.names, self.types, strict=True):
            value = values[name]
            if _vector_len(type_name) > 1:
                flat.extend(value)  # type: ignore[arg-type]
            else:
                flat.append(value)
        return self._struct.pack(*flat)

    def unpack(self, body: bytes) -> dict[str, object]:
        if len(body) != self._struct.size:
            raise ValueError(f"recipe {self.recipe_id}: data package of {len(body)} bytes, want {self.size}")
        flat = self._struct.unpack(body)
        out: dict[str, object] = {}
        i = 0
        for name, type_name in zip(self.names, self.types, strict=True):
            n = _vector_len(type_name)
            out[name] = flat[i] if n == 1 else tuple(flat[i : i + n])
            i += n
        return out


def _registers() -> dict[str, str]:
    table: dict[str, str] = {}
    for side in ("input", "output"):
        for i in range(48):
            table[f"{side}_int_register_{i}"] = "INT32"
            table[f"{side}_double_register_{i}"] = "DOUBLE"
        for i in range(64, 128):
            table[f"{side}_bit_register_{i}"] = "BOOL"
        table[f"{side}_bit_registers0_to_31"] = "UINT32"
        table[f"{side}_bit_registers32_to_63"] = "UINT32"
    return table


# Controller -> client variables (a subset of the UR list that covers common clients).
OUTPUT_TYPES: dict[str, str] = {
    "timestamp": "DOUBLE",
    **dict.fromkeys(
        """target_q target_qd target_qdd target_current target_moment actual_q actual_qd actual_current
        joint_control_output actual_TCP_pose actual_TCP_speed actual_TCP_force target_TCP_pose
        target_TCP_speed joint_temperatures actual_joint_voltage ft_raw_wrench payload_inertia""".split(),
        "VECTOR6D",
    ),
    **dict.fromkeys(
        """actual_execution_time speed_scaling target_speed_fraction actual_momentum actual_main_voltage
        actual_robot_voltage actual_robot_current standard_analog_input0 standard_analog_input1
        standard_analog_output0 standard_analog_output1 payload""".split(),
        "DOUBLE",
    ),
    "actual_digital_input_bits": "UINT64",
    "actual_digital_output_bits": "UINT64",
    "robot_mode": "INT32",
    "safety_mode": "INT32",
    "joint_mode": "VECTOR6INT32",
    "actual_tool_accelerometer": "VECTOR3D",
    "payload_cog": "VECTOR3D",
    "runtime_state": "UINT32",
    "robot_status_bits": "UINT32",
    "safety_status_bits": "UINT32",
    **{k: v for k, v in _registers().items() if k.startswith("output_")},
}
# Client -> controller variables.
INPUT_TYPES: dict[str, str] = {
    "speed_slider_mask": "UINT32",
    "speed_slider_fraction": "DOUBLE",
    "standard_digital_output_mask": "UINT8",
    "standard_digital_output": "UINT8",
    **{k: v for k, v in _registers().items() if k.startswith("input_")},
}


def zero_value(type_name: str) -> object:
    """The value a variable holds before anything has set it."""
    code = TYPE_CODES[type_name][-1]
    scalar: object = False if code == "?" else 0.0 if code == "d" else 0
    n = _vector_len(type_name)
    return scalar if n == 1 else (scalar,) * n
