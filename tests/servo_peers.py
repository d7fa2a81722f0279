"""A vendor servo SDK (dynamixel_sdk or scservo_sdk, which share one API) as an independent peer.

`sdk_on_port` puts the SDK's master on a simulator's pty; `sdk_capture` records the bytes the SDK
writes for one operation so they can be compared with our encoder's.
"""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

from vla_runtime.drivers.simdevice import open_pty

SdkOp = Callable[[Any, Any], object]  # op(port, packet_handler)


@contextlib.contextmanager
def sdk_on_port(sdk: ModuleType, path: str, protocol: float, monkeypatch) -> Iterator[tuple[Any, Any]]:
    """(PortHandler, PacketHandler) open on `path`."""
    # The SDK waits 2 x LATENCY_TIMER + 2 ms for a whole reply; on a loaded 2-core CI runner the
    # simulator thread can miss 34 ms, so give the peer the slack a busy machine needs.
    monkeypatch.setattr(sdk.port_handler, "LATENCY_TIMER", 100)
    port = sdk.PortHandler(path)
    assert port.openPort()
    yield port, sdk.PacketHandler(protocol)
    port.closePort()


@contextlib.contextmanager
def sdk_capture(sdk: ModuleType, protocol: float) -> Iterator[Callable[[SdkOp], bytes]]:
    """run(op) -> the bytes the SDK put on a pty with nobody answering."""
    master, slave, path = open_pty()
    port = sdk.PortHandler(path)
    assert port.openPort()
    ph = sdk.PacketHandler(protocol)

    def run(op: SdkOp) -> bytes:
        op(port, ph)
        port.is_using = False
        out = b""
        while select.select([master], [], [], 0.05)[0]:
            out += os.read(master, 4096)
        return out

    yield run
    port.closePort()
    os.close(master)
    os.close(slave)


def sync_read_tx(sdk: ModuleType, address: int, size: int, ids: Sequence[int]) -> SdkOp:
    """The SDK's GroupSyncRead transmit for `ids`, as an op for `sdk_capture`."""

    def op(port, ph):
        g = sdk.GroupSyncRead(port, ph, address, size)
        for i in ids:
            g.addParam(i)
        g.txPacket()

    return op


def sync_write_tx(sdk: ModuleType, address: int, size: int, values: Mapping[int, list[int]]) -> SdkOp:
    """The SDK's GroupSyncWrite of `values` (id -> data bytes), as an op for `sdk_capture`."""

    def op(port, ph):
        g = sdk.GroupSyncWrite(port, ph, address, size)
        for i, data in values.items():
            g.addParam(i, data)
        g.txPacket()

    return op


def sync_write_then_read(sdk: ModuleType, port, ph, address: int, size: int, values: Mapping[int, list[int]]):
    """GroupSyncWrite `values` (id -> data bytes), then GroupSyncRead them back: the values read, in id order."""
    writer = sdk.GroupSyncWrite(port, ph, address, size)
    for i, data in values.items():
        assert writer.addParam(i, data)
    assert writer.txPacket() == sdk.COMM_SUCCESS
    reader = sdk.GroupSyncRead(port, ph, address, size)
    for i in values:
        assert reader.addParam(i)
    assert reader.txRxPacket() == sdk.COMM_SUCCESS
    return [reader.getData(i, address, size) for i in values]
