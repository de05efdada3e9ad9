"""jpki.transport.pcsc through a real pcscd + vpcd, with software cards plugged in by VpcdBridge.

Needs pcscd, the vpcd driver and pyscard (see jpki/testing/pcsc.py): skipped without them, failed
when CI=true.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from card_emulator.vpcd import DEFAULT_ATR, MinimalCard, VpcdBridge
from jpki import errors
from jpki.testing import pcsc as pcsc_env
from jpki.transport import pcsc as pcsc_module
from jpki.transport.base import TransportBase
from jpki.transport.pcsc import PcscTransport, list_readers

ROOT = Path(__file__).resolve().parents[1]
SELECT_JPKI = bytes.fromhex("00A4040C0AD392F000260100000001")


class EchoCard:
    """Answers command data + 9000 (READ BINARY: Le zero bytes); records power events."""

    def __init__(self, atr: bytes = DEFAULT_ATR) -> None:
        self.atr = atr
        self.events: list[str] = []
        self.lock = threading.Lock()

    def _event(self, name: str) -> None:
        with self.lock:
            self.events.append(name)

    def power_on(self) -> None:
        self._event("on")

    def power_off(self) -> None:
        self._event("off")

    def reset(self) -> None:
        self._event("reset")

    def transmit(self, apdu: bytes) -> bytes:
        if len(apdu) == 5:
            return bytes(apdu[4] or 256) + b"\x90\x00"
        if len(apdu) > 5:
            return apdu[5 : 5 + apdu[4]] + b"\x90\x00"
        return b"\x90\x00"

    def close(self) -> None:
        pass


@pytest.fixture
def slot(pcscd: pcsc_env.PcscdEnv) -> Iterator[int]:
    """A vpcd port (35963/35964) that no other test session uses, its reader empty."""
    with pcsc_env.vpcd_slot() as port:
        yield port


@pytest.fixture
def reader(slot: int) -> str:
    return pcsc_env.reader_name(slot)


@pytest.fixture
def plug(slot: int) -> Iterator[Callable[..., VpcdBridge]]:
    """Plug a card into the locked slot; unplug (stop, join) and wait for an empty reader."""
    started: list[tuple[VpcdBridge, threading.Thread]] = []
    name = pcsc_env.reader_name(slot)

    def plug_card(card: object, *, wait: bool = True) -> VpcdBridge:
        bridge = VpcdBridge(card, port=slot, backoff_initial=0.05, backoff_max=0.5)  # type: ignore[arg-type]
        started.append((bridge, bridge.start()))
        if wait:
            assert pcsc_env.wait_for(lambda: pcsc_env.reader_has_card(name), 10), (
                f"pcscd did not see the card in {name}"
            )
        return bridge

    yield plug_card
    for bridge, _ in started:
        bridge.stop()
    for bridge, thread in started:
        thread.join(5)
        assert not thread.is_alive()
        bridge.close()
    assert pcsc_env.wait_for(lambda: not pcsc_env.reader_has_card(name), 5)


# -- without pcscd --------------------------------------------------------------------------


def test_pyscard_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pcsc_module, "_scard", None)
    monkeypatch.setitem(sys.modules, "smartcard", None)  # makes the import fail
    with pytest.raises(errors.TransportError, match=r"pip install 'jpki\[pcsc\]'"):
        list_readers()
    with pytest.raises(errors.TransportError, match="pyscard"):
        PcscTransport()


def test_pcscd_not_running_is_a_clear_error() -> None:
    pytest.importorskip("smartcard")
    code = (
        "from jpki.transport.pcsc import list_readers, PcscTransport\n"
        "from jpki.errors import NoReaderError\n"
        "for f in (list_readers, PcscTransport):\n"
        "    try:\n"
        "        f()\n"
        "    except NoReaderError as e:\n"
        "        print(type(e).__name__, e)\n"
    )
    # pcsc-lite finds pcscd through this socket path: point it at nothing.
    env = dict(os.environ, PCSCLITE_CSOCK_NAME="/nonexistent/pcscd.comm", PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    assert all("is pcscd running?" in line and line.startswith("NoReaderError") for line in lines)


def test_env_unavailable_skips_locally_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no pcscd here"):
        pcsc_env.unavailable("no pcscd here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no pcscd here"):
        pcsc_env.unavailable("no pcscd here")


def test_env_reports_missing_pieces(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(pcsc_env, "VPCD_CONF", tmp_path / "vpcd")
    if pcsc_env.pcscd_path() is not None:
        assert "vsmartcard-vpcd" in (pcsc_env.missing_reason() or "")
    monkeypatch.setattr(pcsc_env, "pcscd_path", lambda: None)
    assert "pcscd is not installed" in (pcsc_env.missing_reason() or "")
    with pcsc_env.pcscd_running() as env:
        assert isinstance(env, str) and "pcscd is not installed" in env


def test_env_does_not_start_pcscd_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pcsc_env, "missing_reason", lambda: None)
    monkeypatch.setattr(pcsc_env, "pcscd_pids", lambda: [])
    monkeypatch.setattr(pcsc_env.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(pcsc_env, "start_pcscd", lambda *a: pytest.fail("must not start pcscd"))
    with pcsc_env.pcscd_running() as env:
        assert env == "pcscd is not running and only root can start it here"


def test_waiting_for_a_pcscd_that_is_still_starting(monkeypatch: pytest.MonkeyPatch) -> None:
    """pcscd unreachable for the first polls (its socket not yet made), then serving the slot."""
    answers: list[list[str] | None] = [None, None, [], [pcsc_env.reader_name(pcsc_env.VPCD_PORTS[0]) + " 00"]]
    monkeypatch.setattr(pcsc_env, "pcsc_readers", lambda: answers.pop(0) if len(answers) > 1 else answers[0])
    monkeypatch.setattr(pcsc_env.time, "sleep", lambda s: None)
    assert pcsc_env.wait_ready(5, probe_tcp=False)
    assert answers == [[pcsc_env.reader_name(pcsc_env.VPCD_PORTS[0]) + " 00"]]


def test_waiting_for_a_pcscd_that_never_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pcsc_env, "pcsc_readers", lambda: None)
    assert not pcsc_env.wait_ready(0.2, probe_tcp=False)


# -- through pcscd + vpcd -------------------------------------------------------------------


@pytest.mark.pcsc
def test_list_readers_shows_vpcd(pcscd: pcsc_env.PcscdEnv) -> None:
    readers = list_readers()
    assert "Virtual PCD 00 00" in readers
    assert "Virtual PCD 00 01" in readers


@pytest.mark.pcsc
def test_transmit_minimal_card(plug: Callable[..., VpcdBridge], reader: str) -> None:
    bridge = plug(MinimalCard())
    with PcscTransport(reader) as t:
        assert isinstance(t, TransportBase)
        assert t.atr == DEFAULT_ATR
        assert t.reader == reader
        assert t.protocol == "T=1"
        assert reader in t.description and "T=1" in t.description
        assert t.transmit(SELECT_JPKI) == b"\x90\x00"
        for _ in range(20):
            assert t.transmit(bytes.fromhex("00B0000004")) == b"\x90\x00"
    assert bridge.apdus >= 21


@pytest.mark.pcsc
def test_echo_card_data_both_ways(plug: Callable[..., VpcdBridge], reader: str) -> None:
    plug(EchoCard())
    payload = bytes(range(255))
    with PcscTransport(reader) as t:
        assert t.transmit(bytes([0x80, 0xD0, 0, 0, 255]) + payload) == payload + b"\x90\x00"
        assert t.transmit(bytes.fromhex("00B0000000")) == bytes(256) + b"\x90\x00"
        assert t.transmit(SELECT_JPKI) == SELECT_JPKI[5:] + b"\x90\x00"


@pytest.mark.pcsc
def test_reader_selection_by_substring(plug: Callable[..., VpcdBridge], slot: int) -> None:
    plug(MinimalCard())
    digits = f"00 {slot - pcsc_env.VPCD_PORTS[0]:02d}"
    with PcscTransport(f"virtual pcd {digits}") as t:  # case-insensitive substring
        assert t.reader == pcsc_env.reader_name(slot)
    with PcscTransport(f"PCD {digits}", wait=1) as t:
        assert t.reader == pcsc_env.reader_name(slot)
    with PcscTransport() as t:  # the first reader holding a card (ours, or another session's)
        assert t.reader.startswith("Virtual PCD") or pcsc_env.reader_has_card(t.reader)
        assert pcsc_env.reader_has_card(t.reader)


@pytest.mark.pcsc
def test_no_matching_reader(pcscd: pcsc_env.PcscdEnv) -> None:
    with pytest.raises(
        errors.NoReaderError, match="no PC/SC reader matching 'no such reader'"
    ) as info:
        PcscTransport("no such reader", wait=0.2)
    assert "Virtual PCD 00 00" in str(info.value)


@pytest.mark.pcsc
def test_no_card_after_waiting(reader: str) -> None:
    with pytest.raises(errors.NoCardError, match="no card in"):
        PcscTransport(reader)  # wait=0: at once
    started = time.monotonic()
    with pytest.raises(errors.NoCardError, match=r"after waiting 0\.5 s"):
        PcscTransport(reader, wait=0.5)
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 5  # waited, and gave up within the timeout (plus slack)


@pytest.mark.pcsc
def test_waits_for_a_card_inserted_later(plug: Callable[..., VpcdBridge], reader: str) -> None:
    timer = threading.Timer(0.2, lambda: plug(MinimalCard(), wait=False))
    timer.start()
    try:
        with PcscTransport(reader, wait=10) as t:
            assert t.transmit(SELECT_JPKI) == b"\x90\x00"
    finally:
        timer.join()


@pytest.mark.pcsc
def test_t0_only_card_falls_back(plug: Callable[..., VpcdBridge], reader: str) -> None:
    plug(MinimalCard(atr=bytes.fromhex("3B021450")))  # no TD1: T=0 only
    with PcscTransport(reader) as t:
        assert t.protocol == "T=0"
        assert t.atr == bytes.fromhex("3B021450")
        assert t.transmit(SELECT_JPKI) == b"\x90\x00"


@pytest.mark.pcsc
def test_card_removed_mid_session_then_reconnect(
    plug: Callable[..., VpcdBridge], reader: str
) -> None:
    card = EchoCard()
    bridge = plug(card)
    with PcscTransport(reader) as t:
        assert t.transmit(SELECT_JPKI)[-2:] == b"\x90\x00"
        bridge.remove_card()
        with pytest.raises(errors.CardRemovedError, match="removed"):
            t.transmit(SELECT_JPKI)
        assert pcsc_env.wait_for(lambda: not pcsc_env.reader_has_card(reader), 5)
        with pytest.raises(errors.NoCardError):
            t.reconnect()
        with pytest.raises(errors.CardRemovedError):
            t.transmit(SELECT_JPKI)
        bridge.insert_card()
        t.reconnect(wait=10)  # waits for the card to be back
        assert t.transmit(SELECT_JPKI)[-2:] == b"\x90\x00"
        assert t.atr == DEFAULT_ATR


@pytest.mark.pcsc
def test_reset_by_another_client_is_retried(plug: Callable[..., VpcdBridge], reader: str) -> None:
    card = EchoCard()
    plug(card)
    with PcscTransport(reader) as first, PcscTransport(reader) as second:
        assert first.transmit(SELECT_JPKI)[-2:] == b"\x90\x00"
        card.events.clear()
        second.reconnect(reset=True)
        assert "reset" in card.events
        assert first.transmit(SELECT_JPKI)[-2:] == b"\x90\x00"  # reconnected and retried
        assert first.card_resets == 1


class _FirstExchangeFails:
    """pyscard's scard module, except that the next SCardTransmit fails as it can while pcscd
    is still powering up a card just inserted (SCARD_E_NOT_TRANSACTED)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.failures = 1

    def SCardTransmit(self, *args: Any) -> Any:   # pyscard's name
        if self.failures:
            self.failures -= 1
            return self._real.SCARD_E_NOT_TRANSACTED, []
        return self._real.SCardTransmit(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.mark.pcsc
def test_a_first_select_that_fails_on_a_card_just_inserted_is_sent_again(
        plug: Callable[..., VpcdBridge], reader: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pcsc_module, "_REMOVAL_GRACE", 0.1)   # how long a failed exchange looks for a removal
    card = EchoCard()
    plug(card)
    with PcscTransport(reader) as t:
        t._sc = flaky = _FirstExchangeFails(t._sc)
        assert t.transmit(SELECT_JPKI)[-2:] == b"\x90\x00" and flaky.failures == 0
        # once the card has answered, a failed exchange is an error: nothing is sent twice
        flaky.failures = 1
        with pytest.raises(errors.TransportError):
            t.transmit(SELECT_JPKI)
        assert t.transmit(SELECT_JPKI)[-2:] == b"\x90\x00"
    with PcscTransport(reader) as t:   # and only a SELECT is sent again
        t._sc = flaky = _FirstExchangeFails(t._sc)
        with pytest.raises(errors.TransportError):
            t.transmit(bytes.fromhex("00B0000004"))


@pytest.mark.pcsc
def test_exclusive_access_makes_others_busy(plug: Callable[..., VpcdBridge], reader: str) -> None:
    plug(MinimalCard())
    with PcscTransport(reader, exclusive=True) as owner:
        assert "exclusive" in owner.description
        with pytest.raises(errors.ReaderBusyError, match="in use by another program"):
            PcscTransport(reader)
        assert owner.transmit(SELECT_JPKI) == b"\x90\x00"
    with PcscTransport(reader) as t:  # free again once closed
        assert t.transmit(SELECT_JPKI) == b"\x90\x00"


@pytest.mark.pcsc
def test_close_resets_the_card_unless_asked_not_to(
    plug: Callable[..., VpcdBridge], reader: str
) -> None:
    card = EchoCard()
    plug(card)
    with PcscTransport(reader, reset_on_close=False) as t:
        t.transmit(SELECT_JPKI)
        card.events.clear()
    assert "reset" not in card.events
    with PcscTransport(reader) as t:
        t.transmit(SELECT_JPKI)
        card.events.clear()
    assert card.events[:1] == ["reset"]


@pytest.mark.pcsc
def test_closed_transport_refuses(plug: Callable[..., VpcdBridge], reader: str) -> None:
    plug(MinimalCard())
    t = PcscTransport(reader)
    t.close()
    t.close()  # idempotent
    with pytest.raises(errors.TransportError, match="closed"):
        t.transmit(SELECT_JPKI)
    with pytest.raises(errors.TransportError, match="closed"):
        t.reconnect()


def test_a_session_inside_another_leaves_pcscd_to_the_outer_one(monkeypatch, tmp_path):
    # pytester runs a pytest session inside this one, in this process: when it ends, the pcscd
    # the outer session uses must stay (it once was stopped, and the outer PC/SC tests failed).
    for name, file in (("_START_LOCK", "start.lock"), ("_USERS_LOCK", "users.lock"), ("_STARTED_FILE", "started")):
        monkeypatch.setattr(pcsc_env, name, tmp_path / file)
    (tmp_path / "started").write_text("4242")   # a pcscd an earlier session of these tests started
    running = [4242]
    killed: list[tuple[int, int]] = []

    def kill(pid: int, signum: int) -> None:
        killed.append((pid, signum))
        running.clear()

    monkeypatch.setattr(pcsc_env, "_LOCAL_USERS", 0)   # this test's own sessions only (not this worker's)
    monkeypatch.setattr(pcsc_env, "missing_reason", lambda: None)
    monkeypatch.setattr(pcsc_env, "pcscd_pids", lambda: list(running))
    monkeypatch.setattr(pcsc_env, "wait_ready", lambda *a, **k: True)
    monkeypatch.setattr(pcsc_env.os, "kill", kill)
    with pcsc_env.pcscd_running() as outer:
        assert isinstance(outer, pcsc_env.PcscdEnv) and not outer.started
        with pcsc_env.pcscd_running() as inner:
            assert isinstance(inner, pcsc_env.PcscdEnv)
        assert killed == [] and running == [4242]
    assert killed == [(4242, signal.SIGTERM)] and not (tmp_path / "started").exists()
