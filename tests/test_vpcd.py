"""Unit tests of card_emulator.vpcd against a fake vpcd: a local listening socket + framing."""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from card_emulator.faults import FaultPlan
from card_emulator.vpcd import (
    DEFAULT_ATR,
    MinimalCard,
    VpcdBridge,
    describe_command,
    describe_response,
    start_many,
)
from jpki.pki import free_port

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 5.0
SECRET_PIN = b"7Q3X9K2M"  # would show as ASCII or hex if a trace leaked it
SECRET_DATA = bytes.fromhex("C0FFEE5EC7E7DA7A")


def wait_for(predicate: Callable[[], bool], timeout: float = DEADLINE) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


class RecordingCard:
    """Echoes command data + 9000; READ BINARY returns SECRET_DATA; records power events."""

    def __init__(self, atr: bytes = DEFAULT_ATR) -> None:
        self.atr = atr
        self.events: list[str] = []
        self.apdus: list[bytes] = []
        self.fail = False

    def power_on(self) -> None:
        self.events.append("on")

    def power_off(self) -> None:
        self.events.append("off")

    def reset(self) -> None:
        self.events.append("reset")

    def transmit(self, apdu: bytes) -> bytes:
        self.apdus.append(apdu)
        if self.fail:
            raise RuntimeError("card bug")
        if apdu[1] == 0xB0:
            return SECRET_DATA + b"\x90\x00"
        if apdu[1] in (0x20, 0x24):
            return b"\x90\x00"
        return apdu[5:] + b"\x90\x00" if len(apdu) > 5 else b"\x90\x00"

    def close(self) -> None:
        pass


class FakeVpcd:
    """The listening side of vpcd: accept the card, send frames, read replies."""

    def __init__(self, port: int = 0) -> None:
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", port))
        self.server.listen(4)
        self.port = self.server.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self, timeout: float = DEADLINE) -> socket.socket:
        self.server.settimeout(timeout)
        conn, _ = self.server.accept()
        conn.settimeout(timeout)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.conn is not None:
            self.conn.close()
        self.conn = conn
        return conn

    def send(self, payload: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(struct.pack(">H", len(payload)) + payload)

    def recv_exact(self, size: int) -> bytes:
        assert self.conn is not None
        buf = b""
        while len(buf) < size:
            chunk = self.conn.recv(size - len(buf))
            if not chunk:
                raise EOFError(f"card closed the connection after {len(buf)} of {size} bytes")
            buf += chunk
        return buf

    def recv(self) -> bytes:
        (length,) = struct.unpack(">H", self.recv_exact(2))
        return self.recv_exact(length)

    def transact(self, payload: bytes) -> bytes:
        self.send(payload)
        return self.recv()

    def peer_closed(self, timeout: float = DEADLINE) -> bool:
        """True when the card side closed the connection (EOF) within ``timeout``."""
        assert self.conn is not None
        self.conn.settimeout(timeout)
        try:
            return self.conn.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()




@pytest.fixture
def vpcd() -> Iterator[FakeVpcd]:
    server = FakeVpcd()
    yield server
    server.close()


@pytest.fixture
def run_bridge() -> Iterator[Callable[..., VpcdBridge]]:
    """Start bridges in threads; stop, join and close them all at teardown."""
    started: list[tuple[VpcdBridge, threading.Thread]] = []

    def start(card: object, port: int, **kwargs: object) -> VpcdBridge:
        kwargs.setdefault("backoff_initial", 0.02)
        kwargs.setdefault("backoff_max", 0.1)
        bridge = VpcdBridge(card, port=port, **kwargs)  # type: ignore[arg-type]
        started.append((bridge, bridge.start()))
        return bridge

    yield start
    for bridge, _ in started:
        bridge.stop()
    for bridge, thread in started:
        thread.join(DEADLINE)
        assert not thread.is_alive(), "bridge thread did not stop"
        bridge.close()


@pytest.fixture(autouse=True)
def no_leftover_bridge_threads() -> Iterator[None]:
    yield
    assert wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith("vpcd-")])


# -- wire protocol ----------------------------------------------------------------------------


def test_get_atr(vpcd: FakeVpcd, run_bridge: Callable[..., VpcdBridge]) -> None:
    bridge = run_bridge(RecordingCard(), vpcd.port)
    vpcd.accept()
    assert vpcd.transact(b"\x04") == DEFAULT_ATR
    assert wait_for(lambda: bridge.connected)


def test_control_bytes_reach_the_card_without_reply(
    vpcd: FakeVpcd, run_bridge: Callable[..., VpcdBridge]
) -> None:
    card = RecordingCard(atr=bytes.fromhex("3B8F8001"))
    run_bridge(card, vpcd.port)
    vpcd.accept()
    vpcd.send(b"\x01")
    vpcd.send(b"\x02")
    vpcd.send(b"\x00")
    vpcd.send(b"\x7f")  # unknown control byte: ignored, no reply
    # No reply to the control bytes: the next frame read is the ATR.
    assert vpcd.transact(b"\x04") == bytes.fromhex("3B8F8001")
    assert card.events == ["on", "reset", "off"]


def test_apdu_round_trip(vpcd: FakeVpcd, run_bridge: Callable[..., VpcdBridge]) -> None:
    card = RecordingCard()
    bridge = run_bridge(card, vpcd.port)
    vpcd.accept()
    assert vpcd.transact(bytes.fromhex("00A4040C0AD392F000260100000001")) == bytes.fromhex(
        "D392F0002601000000019000"
    )
    big = bytes([0x80, 0xD0, 0, 0, 0]) + bytes(range(256)) * 4  # not a valid APDU: echoed anyway
    assert vpcd.transact(big) == big[5:] + b"\x90\x00"
    assert bridge.apdus == 2


def test_minimal_card_answers_9000(vpcd: FakeVpcd, run_bridge: Callable[..., VpcdBridge]) -> None:
    run_bridge(MinimalCard(), vpcd.port)
    vpcd.accept()
    assert vpcd.transact(b"\x04") == bytes.fromhex("3BE000FF8131FE4514")
    assert vpcd.transact(bytes.fromhex("00B0000004")) == b"\x90\x00"
    assert vpcd.transact(bytes.fromhex("FFFF")) == b"\x90\x00"


def test_split_frames(vpcd: FakeVpcd, run_bridge: Callable[..., VpcdBridge]) -> None:
    run_bridge(RecordingCard(), vpcd.port)
    conn = vpcd.accept()
    apdu = bytes.fromhex("00A4040C0AD392F000260100000001")
    # Length and payload in two writes, like vpcd.
    conn.sendall(struct.pack(">H", len(apdu)))
    time.sleep(0.01)
    conn.sendall(apdu)
    assert vpcd.recv() == apdu[5:] + b"\x90\x00"
    # Everything one byte at a time, the length too.
    for b in struct.pack(">H", len(apdu)) + apdu:
        conn.sendall(bytes([b]))
        time.sleep(0.001)
    assert vpcd.recv() == apdu[5:] + b"\x90\x00"
    # Several frames in one write: answered in order.
    frames = b"".join(struct.pack(">H", len(p)) + p for p in (b"\x04", apdu, b"\x01", b"\x04"))
    conn.sendall(frames)
    assert [vpcd.recv() for _ in range(3)] == [DEFAULT_ATR, apdu[5:] + b"\x90\x00", DEFAULT_ATR]


def test_zero_length_frame_reconnects(
    vpcd: FakeVpcd, run_bridge: Callable[..., VpcdBridge], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="card_emulator.vpcd")
    card = RecordingCard()
    bridge = run_bridge(card, vpcd.port)
    vpcd.accept()
    vpcd.send(b"")
    assert vpcd.peer_closed()
    vpcd.accept()  # the bridge came back
    assert vpcd.transact(b"\x04") == DEFAULT_ATR
    assert bridge.connections == 2
    assert "zero-length frame" in caplog.text
    assert "off" in card.events  # losing the reader powers the card down


@pytest.mark.parametrize(
    "sent", [b"\x00", b"\x00\x0a\x00\xa4\x04"], ids=["in-length", "in-payload"]
)
def test_peer_disconnect_mid_frame_then_reconnect(
    vpcd: FakeVpcd,
    run_bridge: Callable[..., VpcdBridge],
    caplog: pytest.LogCaptureFixture,
    sent: bytes,
) -> None:
    caplog.set_level(logging.WARNING, logger="card_emulator.vpcd")
    bridge = run_bridge(RecordingCard(), vpcd.port)
    conn = vpcd.accept()
    conn.sendall(sent)
    time.sleep(0.01)
    conn.close()
    vpcd.conn = None
    vpcd.accept()
    assert vpcd.transact(b"\x04") == DEFAULT_ATR
    assert bridge.connections == 2
    assert "mid-frame" in caplog.text


def test_peer_disconnect_between_frames_then_reconnect(
    vpcd: FakeVpcd, run_bridge: Callable[..., VpcdBridge], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="card_emulator.vpcd")
    bridge = run_bridge(RecordingCard(), vpcd.port)
    for _ in range(3):
        vpcd.accept()
        assert vpcd.transact(b"\x04") == DEFAULT_ATR
        vpcd.conn.close()  # type: ignore[union-attr]
        vpcd.conn = None
    assert wait_for(lambda: bridge.connections >= 3)
    assert "vpcd closed the connection" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # a routine event


def test_card_exception_answers_6f00(
    vpcd: FakeVpcd, run_bridge: Callable[..., VpcdBridge], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="card_emulator.vpcd")
    card = RecordingCard()
    card.fail = True
    run_bridge(card, vpcd.port)
    vpcd.accept()
    assert vpcd.transact(bytes.fromhex("00A4040C00")) == b"\x6f\x00"
    card.fail = False
    assert vpcd.transact(bytes.fromhex("00A4040C0101")) == b"\x01\x90\x00"
    assert "6F00" in caplog.text


class BadCard(RecordingCard):
    def transmit(self, apdu: bytes) -> bytes:
        return b"\x90"  # too short to be a response APDU

    @property  # type: ignore[override]
    def atr(self) -> bytes:
        raise RuntimeError("no ATR")

    @atr.setter
    def atr(self, value: bytes) -> None:
        pass


def test_card_bad_answers_do_not_crash(
    vpcd: FakeVpcd, run_bridge: Callable[..., VpcdBridge]
) -> None:
    run_bridge(BadCard(), vpcd.port)
    vpcd.accept()
    assert vpcd.transact(b"\x04") == DEFAULT_ATR
    assert vpcd.transact(bytes.fromhex("00A4040C00")) == b"\x6f\x00"


# -- stop, back-off, removal --------------------------------------------------------------------


def test_stop_while_connected(vpcd: FakeVpcd) -> None:
    bridge = VpcdBridge(RecordingCard(), port=vpcd.port)
    thread = bridge.start()
    vpcd.accept()
    assert vpcd.transact(b"\x04") == DEFAULT_ATR
    bridge.stop()
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert vpcd.peer_closed()
    assert not bridge.connected
    bridge.close()


def test_stop_while_backing_off() -> None:
    port = free_port()  # nothing listens there
    bridge = VpcdBridge(RecordingCard(), port=port, backoff_initial=30.0, backoff_max=30.0)
    thread = bridge.start()
    time.sleep(0.05)  # let it fail once and enter the 30 s back-off
    started = time.monotonic()
    bridge.stop()
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert time.monotonic() - started < DEADLINE
    bridge.close()


def test_stop_before_serving_returns_at_once() -> None:
    bridge = VpcdBridge(RecordingCard(), port=free_port())
    bridge.stop()
    bridge.serve_forever()
    bridge.close()
    with pytest.raises(RuntimeError):
        bridge.serve_forever()


def test_connects_once_vpcd_appears(run_bridge: Callable[..., VpcdBridge]) -> None:
    port = free_port()
    bridge = run_bridge(RecordingCard(), port)
    time.sleep(0.15)  # several refused attempts with back-off
    assert not bridge.connected
    server = FakeVpcd(port)
    try:
        server.accept()
        assert server.transact(b"\x04") == DEFAULT_ATR
    finally:
        server.close()


def test_backoff_is_exponential_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    bridge = VpcdBridge(RecordingCard(), port=free_port(), backoff_initial=0.01, backoff_max=0.04)
    delays: list[float | None] = []
    real_wait = bridge._wait

    def recording_wait(timeout: float | None) -> None:
        delays.append(timeout)
        if len(delays) >= 6:
            bridge.stop()
        real_wait(0)

    monkeypatch.setattr(bridge, "_wait", recording_wait)
    bridge.serve_forever()
    bridge.close()
    assert delays[:6] == [0.01, 0.02, 0.04, 0.04, 0.04, 0.04]


def test_remove_and_insert_card(vpcd: FakeVpcd, run_bridge: Callable[..., VpcdBridge]) -> None:
    card = RecordingCard()
    bridge = run_bridge(card, vpcd.port)
    vpcd.accept()
    assert vpcd.transact(b"\x04") == DEFAULT_ATR
    bridge.remove_card()
    assert vpcd.peer_closed()
    assert wait_for(lambda: not bridge.connected)
    assert not bridge.card_present
    assert card.events[-1] == "off"
    with pytest.raises((TimeoutError, socket.timeout)):
        vpcd.accept(timeout=0.3)  # stays out: no reconnect while removed
    bridge.insert_card()
    vpcd.accept()
    assert vpcd.transact(b"\x04") == DEFAULT_ATR
    assert bridge.card_present and bridge.connections == 2


def test_stop_while_removed(run_bridge: Callable[..., VpcdBridge]) -> None:
    bridge = VpcdBridge(RecordingCard(), port=free_port())
    bridge.remove_card()
    thread = bridge.start()
    time.sleep(0.02)
    bridge.stop()
    thread.join(DEADLINE)
    assert not thread.is_alive()
    bridge.close()


def test_serve_two_slots(run_bridge: Callable[..., VpcdBridge]) -> None:
    a, b = FakeVpcd(), FakeVpcd()
    try:
        started = start_many(
            [(RecordingCard(atr=b"\x3b\x01"), a.port), (RecordingCard(atr=b"\x3b\x02"), b.port)]
        )
        a.accept()
        b.accept()
        assert b.transact(b"\x04") == b"\x3b\x02"
        assert a.transact(b"\x04") == b"\x3b\x01"
        assert a.transact(bytes.fromhex("00A4040C0111")) == b"\x11\x90\x00"
    finally:
        for bridge, _ in started:
            bridge.stop()
        for bridge, thread in started:
            thread.join(DEADLINE)
            bridge.close()
        a.close()
        b.close()


# -- faults (card_emulator.faults carried out by the bridge) ---------------------------------

SIGN_APDU = bytes.fromhex("802A00800301020300")


def test_fault_card_leaves_mid_signature_without_an_answer(
    vpcd: FakeVpcd, run_bridge: Callable[..., VpcdBridge], caplog: pytest.LogCaptureFixture
) -> None:
    plan = FaultPlan()
    card = RecordingCard()
    bridge = run_bridge(card, vpcd.port, faults=plan)
    vpcd.accept()
    plan.remove_on_signature()
    assert vpcd.transact(bytes.fromhex("00B0000008")) == SECRET_DATA + b"\x90\x00"
    vpcd.send(SIGN_APDU)
    assert vpcd.peer_closed()  # no answer: the card is gone, as when pulled out
    assert wait_for(lambda: not bridge.connected)
    assert not bridge.card_present and not plan.present
    assert SIGN_APDU not in card.apdus and card.events[-1] == "off"
    with pytest.raises((TimeoutError, socket.timeout)):
        vpcd.accept(timeout=0.3)  # stays out until inserted
    bridge.insert_card()
    vpcd.accept()
    assert plan.present and vpcd.transact(b"\x04") == DEFAULT_ATR
    assert vpcd.transact(SIGN_APDU)[-2:] == b"\x90\x00"  # used up: the next signature goes through
    assert "fault remove_on_signature#1: the card left the reader before answering" in caplog.text


def test_fault_card_leaves_after_n_answers(vpcd: FakeVpcd, run_bridge: Callable[..., VpcdBridge]) -> None:
    plan = FaultPlan()
    bridge = run_bridge(RecordingCard(), vpcd.port, faults=plan)
    vpcd.accept()
    plan.remove_after(2)
    assert vpcd.transact(b"\x00\xa4\x00\x0c")[-2:] == b"\x90\x00"
    assert vpcd.transact(b"\x00\xa4\x00\x0c")[-2:] == b"\x90\x00"  # answered, then out
    assert vpcd.peer_closed()
    assert wait_for(lambda: not bridge.connected) and not bridge.card_present


def test_fault_reader_error_resets_the_link_and_the_card_stays(
    vpcd: FakeVpcd, run_bridge: Callable[..., VpcdBridge]
) -> None:
    plan = FaultPlan()
    card = RecordingCard()
    bridge = run_bridge(card, vpcd.port, faults=plan)
    conn = vpcd.accept()
    plan.reader_error(match="read-binary")
    vpcd.send(bytes.fromhex("00B0000008"))
    with pytest.raises(ConnectionResetError):  # vpcd sees the exchange fail mid-command
        conn.recv(1)
    vpcd.accept()  # back at once: the card never left
    assert bridge.card_present and plan.present
    assert vpcd.transact(bytes.fromhex("00B0000008")) == SECRET_DATA + b"\x90\x00"
    assert card.apdus == [bytes.fromhex("00B0000008")]


def test_fault_status_word_and_no_fault_no_plan_run(
    vpcd: FakeVpcd, run_bridge: Callable[..., VpcdBridge], monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = FaultPlan()
    card = RecordingCard()
    run_bridge(card, vpcd.port, faults=plan)
    vpcd.accept()
    plan.status_word(0x6982, match="read-binary")
    assert vpcd.transact(bytes.fromhex("00B0000008")) == b"\x69\x82"
    monkeypatch.setattr(plan, "run", lambda *a: pytest.fail("the plan ran with no fault set"))
    assert vpcd.transact(bytes.fromhex("00B0000008")) == SECRET_DATA + b"\x90\x00"
    assert card.apdus == [bytes.fromhex("00B0000008")]


# -- logging --------------------------------------------------------------------------------


def test_traces_hide_pins_and_read_data(
    vpcd: FakeVpcd, run_bridge: Callable[..., VpcdBridge], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="card_emulator.vpcd")
    run_bridge(RecordingCard(), vpcd.port)
    vpcd.accept()
    verify = bytes([0x00, 0x20, 0x00, 0x80, len(SECRET_PIN)]) + SECRET_PIN
    change = bytes([0x00, 0x24, 0x01, 0x80, len(SECRET_PIN)]) + SECRET_PIN
    assert vpcd.transact(verify) == b"\x90\x00"
    assert vpcd.transact(change) == b"\x90\x00"
    assert vpcd.transact(bytes.fromhex("00B0000008")) == SECRET_DATA + b"\x90\x00"
    assert vpcd.transact(bytes.fromhex("00A4040C0AD392F000260100000001"))[-2:] == b"\x90\x00"
    text = caplog.text
    lowered = text.lower()
    for secret in (SECRET_PIN, SECRET_DATA):
        assert secret.hex() not in lowered
        assert secret.hex(" ") not in lowered
    assert SECRET_PIN.decode() not in text
    assert "VERIFY" in text and "CHANGE REFERENCE DATA" in text
    assert "8 data bytes SW=9000" in text  # READ BINARY: length and SW only
    assert "D392F000260100000001" in text  # SELECT shows its AID


def test_describe_helpers_never_show_data() -> None:
    assert describe_command(b"\x00\x20\x00\x80\x04" + b"1234") == (
        "C> 00 20 00 80 VERIFY (9 bytes)"
    )
    assert describe_command(b"\x00") == "C> malformed (1 bytes)"
    assert describe_response(b"\x01\x02\x6a\x82") == "R< 2 data bytes SW=6A82"
    assert describe_response(b"") == "R< malformed (0 bytes)"


# -- signals from another process -----------------------------------------------------------


def _spawn(*ports: int) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "card_emulator.vpcd"]
    for port in ports:
        args += ["--port", str(port)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.PIPE)


def test_signals_remove_insert_stop(vpcd: FakeVpcd) -> None:
    proc = _spawn(vpcd.port)
    try:
        vpcd.accept(timeout=15)  # interpreter start-up
        assert vpcd.transact(b"\x04") == DEFAULT_ATR
        proc.send_signal(signal.SIGUSR1)  # remove
        assert vpcd.peer_closed()
        proc.send_signal(signal.SIGUSR2)  # insert
        vpcd.accept()
        assert vpcd.transact(bytes.fromhex("00A4040C00")) == b"\x90\x00"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0
        assert vpcd.peer_closed()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def test_serve_many_two_slots_sigint(vpcd: FakeVpcd) -> None:
    other = FakeVpcd()
    proc = _spawn(vpcd.port, other.port)
    try:
        vpcd.accept(timeout=15)
        other.accept(timeout=15)
        assert vpcd.transact(b"\x04") == DEFAULT_ATR
        assert other.transact(b"\x04") == DEFAULT_ATR
        proc.send_signal(signal.SIGUSR1)
        assert vpcd.peer_closed() and other.peer_closed()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(DEADLINE) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        other.close()


# -- TCP_QUICKACK ---------------------------------------------------------------------------


class RecordingSocket:
    """Hands out queued chunks and records the calls the bridge makes."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.calls: list[str] = []

    def setsockopt(self, level: int, option: int, value: int) -> None:
        if (level, option, value) == (socket.IPPROTO_TCP, getattr(socket, "TCP_QUICKACK", -1), 1):
            self.calls.append("quickack")

    def recv(self, size: int, flags: int = 0) -> bytes:
        self.calls.append("recv")
        chunk = self.chunks.pop(0)
        assert len(chunk) <= size
        return chunk


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="Linux only")
def test_quickack_is_set_before_every_recv() -> None:
    # vpcd writes length and payload separately; without a quick ACK before each recv the
    # peer's Nagle waits for our delayed ACK and every APDU stalls ~40 ms (20 APDU/s).
    bridge = VpcdBridge(RecordingCard(), port=free_port())
    sock = RecordingSocket([b"\x00", b"\x05", b"\x00\xa4", b"\x04\x00", b"\x00"])
    with selectors.DefaultSelector() as sel:
        header = bridge._recv_exact(sock, sel, 2, frame_start=True)  # type: ignore[arg-type]
        payload = bridge._recv_exact(sock, sel, 5, frame_start=False)  # type: ignore[arg-type]
    bridge.close()
    assert header == b"\x00\x05" and payload == bytes.fromhex("00A4040000")
    assert sock.calls == ["quickack", "recv"] * 5
