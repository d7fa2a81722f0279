"""The link's contract over real pipes (a pty and a loopback socket): deadlines, retries, resync."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from vla_runtime.drivers.base import DeviceTimeout, PortLost, ProtocolError
from vla_runtime.drivers.dynamixel import protocol as p
from vla_runtime.drivers.link import Link, LinkConfig
from vla_runtime.drivers.simdevice import PtySimulator, open_pty
from vla_runtime.drivers.transport import SerialConfig, SerialTransport, TcpConfig, TcpTransport

pytestmark = pytest.mark.timeout(30)


class Scripted(PtySimulator):
    """Answers the n-th request with script[n] (raw bytes, possibly garbage or nothing)."""

    kind = "scripted device"

    def __init__(self, script: list[bytes]):
        super().__init__()
        self.script = list(script)

    def decode_request(self, buf):
        return p.decode_instruction(buf)

    def handle(self, request):
        return [self.script.pop(0)] if self.script else []


@pytest.fixture
def scripted():
    sims, transports = [], []

    def build(script, **cfg):
        sim = Scripted(script).start()
        transport = SerialTransport(SerialConfig(sim.port))
        sims.append(sim)
        transports.append(transport)
        return sim, Link(transport, p.decode_status, LinkConfig(**cfg))

    yield build
    for t in transports:
        t.close()
    for s in sims:
        s.stop()


def status(i: int, data: bytes = b"") -> bytes:
    return p.encode_status(i, 0, data)


def test_reply_is_returned_and_unexpected_frames_dropped(scripted):
    sim, link = scripted([b"\x00\x13" + status(9) + status(1, b"\x2a")])
    (reply,) = link.exchange(p.ping(1), expect=lambda m: m.id == 1)
    assert reply.data == b"\x2a"
    assert link.stats.unexpected == 1 and link.stats.garbage_bytes == 2 and link.stats.retries == 0


def test_silence_raises_device_timeout_after_bounded_retries(scripted):
    sim, link = scripted([], timeout=0.03, retries=2)
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout, match="0 of 1 replies in 30 ms"):
        link.exchange(p.ping(1))
    assert 0.09 <= time.monotonic() - t0 < 0.5
    assert sim.requests == 3 and link.stats.retries == 2 and link.stats.timeouts == 3


def test_garbage_only_raises_protocol_error(scripted):
    bad = status(1)[:-1] + b"\x00"
    sim, link = scripted([bad, bad], timeout=0.03, retries=1)
    with pytest.raises(ProtocolError, match="corrupt byte"):
        link.exchange(p.ping(1))


def test_retry_recovers_after_a_lost_reply(scripted):
    sim, link = scripted([b"", status(1, b"\x01")], timeout=0.03, retries=2)
    (reply,) = link.exchange(p.ping(1))
    assert reply.data == b"\x01" and link.stats.retries == 1


def test_multiple_replies_collected_in_one_exchange(scripted):
    sim, link = scripted([status(1) + status(2) + status(3)])
    replies = link.exchange(p.sync_read(132, 4, [1, 2, 3]), count=3)
    assert [r.id for r in replies] == [1, 2, 3]


def test_listen_gathers_everything_in_the_window(scripted):
    sim, link = scripted([status(4) + b"\xff" + status(7)])
    assert [m.id for m in link.listen(p.ping(p.BROADCAST_ID), 0.1)] == [4, 7]


def test_closed_port_is_port_lost_without_retries():
    master, slave, path = open_pty()
    transport = SerialTransport(SerialConfig(path))
    os.close(master)
    os.close(slave)
    link = Link(transport, p.decode_status, LinkConfig(timeout=0.5, retries=5))
    t0 = time.monotonic()
    with pytest.raises(PortLost):
        link.exchange(p.ping(1))
    assert time.monotonic() - t0 < 0.5 and link.stats.retries == 0
    transport.close()


def test_missing_serial_port_is_one_clear_line():
    with pytest.raises(PortLost, match="cannot open serial port /nonexistent/tty.*dialout"):
        SerialTransport(SerialConfig("/nonexistent/tty"))


def test_second_opener_of_a_port_is_refused():
    master, slave, path = open_pty()
    first = SerialTransport(SerialConfig(path, exclusive=True))
    with pytest.raises(PortLost, match="in use by another program"):
        SerialTransport(SerialConfig(path, exclusive=True))
    first.close()
    SerialTransport(SerialConfig(path, exclusive=True)).close()  # free again once the first one closed
    os.close(master)
    os.close(slave)


def test_config_validation():
    with pytest.raises(ValueError, match="timeout"):
        LinkConfig(timeout=0)
    with pytest.raises(ValueError, match="--port"):
        SerialConfig("")
    with pytest.raises(ValueError, match="1..65535"):
        TcpConfig("127.0.0.1", 0)


def test_tcp_transport_round_trip_and_peer_close():
    server = socket.create_server(("127.0.0.1", 0))
    host, port = server.getsockname()

    def serve():
        conn, _ = server.accept()
        with conn:
            data = conn.recv(64)
            conn.sendall(status(1, data[7:9]))
            time.sleep(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    transport = TcpTransport(TcpConfig(host, port))
    link = Link(transport, p.decode_status, LinkConfig(timeout=0.5, retries=0))
    (reply,) = link.exchange(p.ping(1))
    assert reply.id == 1
    thread.join()
    with pytest.raises(PortLost, match="closed the connection"):
        link.exchange(p.ping(1))
    transport.close()
    server.close()


def test_tcp_connect_refused_is_one_clear_line():
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(PortLost, match=f"cannot connect to 127.0.0.1:{port}"):
        TcpTransport(TcpConfig("127.0.0.1", port, connect_timeout=0.5))
