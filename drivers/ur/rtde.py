"""RTDE package framing and payloads: pure bytes in, messages out.

Every package is `uint16 size (header included) | uint8 type | payload`, big-endian. Several
types mean different things in each direction (a 'V' from the client carries the requested
version, from the controller a yes/no), so payloads are parsed per direction. TCP does not
corrupt bytes, but a client that joins mid-stream or a buggy peer can; the decoder skips one
byte whenever the header is implausible, so the caller resynchronises on the next package.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct(">HB")
PROTOCOL_VERSION = 2  # the version we ask for; v1 lacks the output frequency and text-message source

REQUEST_PROTOCOL_VERSION = ord("V")
GET_URCONTROL_VERSION = ord("v")
TEXT_MESSAGE = ord("M")
DATA_PACKAGE = ord("U")
SETUP_OUTPUTS = ord("O")
SETUP_INPUTS = ord("I")
START = ord("S")
PAUSE = ord("P")
KINDS = frozenset(
    (
        REQUEST_PROTOCOL_VERSION,
        GET_URCONTROL_VERSION,
        TEXT_MESSAGE,
        DATA_PACKAGE,
        SETUP_OUTPUTS,
        SETUP_INPUTS,
        START,
        PAUSE,
    )
)

# text message levels
EXCEPTION, ERROR, WARNING, INFO = 0, 1, 2, 3


@dataclass(frozen=True)
class Package:
    """One framed package; `payload` is parsed by the functions below."""

    kind: int  # package type byte, e.g. ord('U')
    payload: bytes


def encode(pkg: Package) -> bytes:
    size = HEADER.size + len(pkg.payload)
    if size > 0xFFFF:
        raise ValueError(f"RTDE package of {size} bytes exceeds the 65535-byte limit")
    return HEADER.pack(size, pkg.kind) + pkg.payload


def decode(buf: bytes) -> tuple[int, Package | None]:
    """Returns (consumed, package); (0, None) = need more bytes, (1, None) = skipped a junk byte."""
    if len(buf) < HEADER.size:
        return 0, None
    size, kind = HEADER.unpack_from(buf)
    if kind not in KINDS or size < HEADER.size:
        return 1, None
    if len(buf) < size:
        return 0, None
    return size, Package(kind, bytes(buf[HEADER.size : size]))


# -- client -> controller ------------------------------------------------------------------------
def request_protocol_version(version: int = PROTOCOL_VERSION) -> Package:
    return Package(REQUEST_PROTOCOL_VERSION, struct.pack(">H", version))


def get_urcontrol_version() -> Package:
    return Package(GET_URCONTROL_VERSION, b"")


def setup_outputs(names: tuple[str, ...], frequency: float | None) -> Package:
    """frequency in Hz (v2); None for a v1 controller, which streams at its own rate."""
    head = b"" if frequency is None else struct.pack(">d", frequency)
    return Package(SETUP_OUTPUTS, head + ",".join(names).encode("ascii"))


def setup_inputs(names: tuple[str, ...]) -> Package:
    return Package(SETUP_INPUTS, ",".join(names).encode("ascii"))


def start() -> Package:
    return Package(START, b"")


def pause() -> Package:
    return Package(PAUSE, b"")


def parse_protocol_request(payload: bytes) -> int:
    return struct.unpack(">H", payload[:2])[0]


def parse_setup_outputs(payload: bytes, version: int) -> tuple[float | None, tuple[str, ...]]:
    """Controller side: (frequency or None for v1, names). Empty names (a trailing comma) are dropped."""
    frequency = None
    if version >= 2:
        (frequency,) = struct.unpack(">d", payload[:8])
        payload = payload[8:]
    return frequency, _names(payload)


def parse_setup_inputs(payload: bytes) -> tuple[str, ...]:
    return _names(payload)


def _names(payload: bytes) -> tuple[str, ...]:
    return tuple(n for n in payload.decode("ascii", errors="replace").split(",") if n)


# -- controller -> client ------------------------------------------------------------------------
def accepted(kind: int, ok: bool) -> Package:
    """Reply to V, S or P."""
    return Package(kind, struct.pack(">B", 1 if ok else 0))


def urcontrol_version(major: int, minor: int, bugfix: int, build: int) -> Package:
    return Package(GET_URCONTROL_VERSION, struct.pack(">IIII", major, minor, bugfix, build))


def recipe_reply(kind: int, recipe_id: int, types: tuple[str, ...]) -> Package:
    """Reply to O or I: recipe id then the type names (NOT_FOUND / IN_USE where refused)."""
    return Package(kind, struct.pack(">B", recipe_id) + ",".join(types).encode("ascii"))


def parse_accepted(payload: bytes) -> bool:
    return len(payload) >= 1 and payload[0] == 1


def parse_urcontrol_version(payload: bytes) -> tuple[int, int, int, int]:
    return struct.unpack(">IIII", payload[:16])


def parse_recipe_reply(payload: bytes) -> tuple[int, tuple[str, ...]]:
    if not payload:
        raise ValueError("empty recipe reply")
    return payload[0], _names(payload[1:])


# -- both directions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextMessage:
    message: str
    source: str  # v2 only
    level: int  # EXCEPTION / ERROR / WARNING / INFO


def text_message(msg: TextMessage, version: int = PROTOCOL_VERSION) -> Package:
    text = msg.message.encode("utf-8")[:255]
    if version < 2:
        return Package(TEXT_MESSAGE, struct.pack(">B", msg.level) + text)
    source = msg.source.encode("utf-8")[:255]
    payload = struct.pack(">B", len(text)) + text + struct.pack(">B", len(source)) + source
    return Package(TEXT_MESSAGE, payload + struct.pack(">B", msg.level))


def parse_text_message(payload: bytes, version: int | None = PROTOCOL_VERSION) -> TextMessage:
    """version None: before negotiation the format is unknown, so pick the one the lengths fit."""
    if version is None:
        version = 2 if _fits_v2(payload) else 1
    if version < 2:
        return TextMessage(payload[1:].decode("utf-8", errors="replace"), "", payload[0])
    n = payload[0]
    text = payload[1 : 1 + n]
    m = payload[1 + n]
    source = payload[2 + n : 2 + n + m]
    level = payload[2 + n + m]
    return TextMessage(text.decode("utf-8", errors="replace"), source.decode("utf-8", errors="replace"), level)


def _fits_v2(payload: bytes) -> bool:
    if len(payload) < 3:
        return False
    n = payload[0]
    return len(payload) > n + 1 and len(payload) == n + payload[n + 1] + 3


def data_package(recipe_id: int, body: bytes) -> Package:
    return Package(DATA_PACKAGE, struct.pack(">B", recipe_id) + body)


def parse_data_package(payload: bytes) -> tuple[int, bytes]:
    if not payload:
        raise ValueError("empty data package")
    return payload[0], payload[1:]
