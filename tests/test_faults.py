"""Fault injection in process (card_emulator.faults carried out by jpki.transport.emu): each fault,
what the host sees (the PC/SC transport's errors), what the trace shows, and the counters a torn
VERIFY or CHANGE REFERENCE DATA leaves on the card. The served card's control file is tested here
too (without pcscd); the bridge in test_vpcd.py, pcscd + vpcd in test_faults_pcsc.py."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from card_emulator.faults import (
    KINDS,
    PLAN_FILE,
    READER_ERRORS,
    Fault,
    FaultPlan,
    FaultSpecError,
    PlanWatcher,
    ServedFaults,
)
from card_emulator.state import check_state, load_state, pin_names
from jpki.errors import CardRemovedError, NoCardError, NoReaderError, TransportError
from jpki.transport import open_transport
from jpki.transport.emu import card_faults
from jpki.transport.pcsc import PCSC_ERRORS, transmit_error

SELECT_JPKI = bytes.fromhex("00A4040C0AD392F000260100000001")
SELECT_AUTH_CERT = bytes.fromhex("00A4020C02000A")
SELECT_AUTH_PIN = bytes.fromhex("00A4020C020018")
READ_4 = bytes.fromhex("00B0000004")
READ_256 = bytes.fromhex("00B0000000")
TRIES = bytes.fromhex("00200080")  # VERIFY without data: tries left, spends none
SIGN = bytes.fromhex("802A008033") + bytes.fromhex("3031300d060960864801650304020105000420") + bytes(32) + b"\x00"
AUTH_PIN, SIGN_PIN = b"1234", b"ABC123"


def verify(pin: bytes) -> bytes:
    return bytes([0x00, 0x20, 0x00, 0x80, len(pin)]) + pin


def change(pin: bytes) -> bytes:
    return bytes([0x00, 0x24, 0x01, 0x80, len(pin)]) + pin


class Card:
    """alice's card opened in process with tracing on; ``faults`` is its plan, whose latency
    sleeps are recorded in ``slept`` instead of slept."""

    def __init__(self, home: Path, card_dir: Path) -> None:
        self.home = home
        self.lines: list[str] = []
        self.slept: list[float] = []
        self.faults = card_faults(card_dir)
        self.faults.sleep = self.slept.append
        self.t = open_transport("emu:alice", home=home, trace=self.lines.append)

    def __call__(self, apdu: bytes) -> bytes:
        return self.t.transmit(apdu)

    def sw(self, apdu: bytes) -> str:
        return self(apdu)[-2:].hex().upper()

    def events(self) -> list[str]:
        return [line for line in self.lines if line.startswith(("!!", "R!"))]


@pytest.fixture
def card(home, card_dir):
    c = Card(home, card_dir)
    yield c
    c.faults.clear()
    c.faults.insert()
    c.t.close()


def test_no_fault_set_goes_straight_to_the_card(card, monkeypatch):
    assert not card.faults.armed
    monkeypatch.setattr(card.faults, "run", lambda *a: pytest.fail("the plan ran with no fault set"))
    assert card.sw(SELECT_JPKI) == "9000"
    card.faults.status_word(0x6A82)
    card.faults.clear()
    assert not card.faults.armed and card.sw(SELECT_JPKI) == "9000"
    assert card.events() == []


def test_one_plan_per_card_shared_by_its_transports(card, home, card_dir):
    assert card.t.faults is card_faults(card_dir) is card_faults(str(card_dir) + "/")
    card.faults.status_word(0x6985, match="select")
    with open_transport("emu:alice", home=home) as other:
        assert other.transmit(SELECT_JPKI) == b"\x69\x85"
    assert card.sw(SELECT_JPKI) == "9000"  # once: the other transport used it up


def test_remove_after_n_apdus_then_insert(card, home):
    card(SELECT_JPKI)
    card(SELECT_AUTH_PIN)
    assert card(verify(AUTH_PIN)) == b"\x90\x00"
    card.faults.remove_after(2)
    assert card.sw(SELECT_JPKI) == "9000"
    assert card.sw(SELECT_AUTH_CERT) == "9000"  # the 2nd: answered, then the card leaves
    assert not card.faults.present
    with pytest.raises(CardRemovedError) as removed:
        card(READ_4)
    assert removed.value.code == "card_removed"
    with pytest.raises(NoCardError, match="remove_after#1"):
        open_transport("emu:alice", home=home)
    card.faults.insert()
    with pytest.raises(CardRemovedError):  # as over PC/SC: this connection is gone until reconnect
        card(SELECT_JPKI)
    card.t.reconnect()
    card(SELECT_JPKI)
    card(bytes.fromhex("00A4020C020001"))  # the signing certificate: the PIN state did not survive
    assert card.sw(READ_4) == "6982"
    assert card.events() == [
        "!! fault remove_after#1: the card left the reader after answering 2 APDU(s)",
        "!! card out of the reader: fault remove_after#1: the card left the reader after answering 2 APDU(s)",
        "R! card_removed: the card was removed from the reader of emulated card alice",
        "R! card_removed: the card was removed from the reader of emulated card alice",
    ]
    card.faults.remove_after(0)  # 0: at once
    with pytest.raises(CardRemovedError):
        card(SELECT_JPKI)


def test_card_removed_mid_signature_in_the_cli(cli, card, tmp_path):
    doc, sig = tmp_path / "doc.txt", tmp_path / "doc.sig"
    doc.write_bytes(b"a contract\n")
    card.faults.remove_on_signature()
    r = cli("--json", "--trace", "pkey", "sign", "sign", str(doc), "-o", str(sig), "--pin", "ABC123")
    assert r.exit_code == 5, r
    assert r.json()["error"] == "card_removed" and "put the card back" in r.json()["hint"]
    assert isinstance(r.exception, CardRemovedError)
    trace = r.stderr.splitlines()
    assert trace[-4:-2] == [
        "!! fault remove_on_signature#1: the card left the reader before answering COMPUTE DIGITAL SIGNATURE",
        "R! card_removed: the card was removed from the reader of emulated card alice"]
    assert trace[-5].startswith("C> 80 2A 00 80")
    assert not sig.exists()
    out = cli("--json", "pin", "status")
    assert out.exit_code == 5 and out.json()["error"] == "no_card"
    card.faults.insert()
    assert cli("--json", "pin", "status").json()["sign"]["tries_left"] == 5  # its VERIFY went through
    assert cli("pkey", "sign", "sign", str(doc), "-o", str(sig), "--pin", "ABC123").exit_code == 0
    der = tmp_path / "sign.der"
    assert cli("cert", "read", "sign", "-o", str(der), "--pin", "ABC123").exit_code == 0
    x509.load_der_x509_certificate(der.read_bytes()).public_key().verify(
        sig.read_bytes(), doc.read_bytes(), padding.PKCS1v15(), hashes.SHA256())


def test_status_word_once_n_times_or_always(card):
    card.faults.status_word(0x6A82, match="read-binary", times=2)
    card(SELECT_JPKI)
    assert card.sw(SELECT_AUTH_CERT) == "9000"
    assert [card.sw(READ_4) for _ in range(3)] == ["6A82", "6A82", "9000"]
    assert not card.faults.armed
    card.faults.status_word("6985", match="80 2A")  # a hex prefix of the APDU
    assert card.sw(READ_4) == "9000" and card.sw(SIGN) == "6985"
    card.faults.status_word(0x6F00, times=None)  # every APDU until cleared
    assert {card.sw(SELECT_JPKI) for _ in range(3)} == {"6F00"}
    card.faults.clear()
    assert card.sw(SELECT_JPKI) == "9000"
    assert card.events()[:2] == ["!! fault status_word#1: answered 6A82 in place of the card (READ BINARY)"] * 2


def test_a_replaced_answer_never_reaches_the_card(card):
    card(SELECT_JPKI)
    card(SELECT_AUTH_PIN)
    card.faults.status_word(0x9000, match="verify")
    assert card.sw(verify(b"9999")) == "9000"  # a wrong PIN the card never saw
    assert card.sw(TRIES) == "63C3"


def test_latency_fixed_and_as_a_contact_or_contactless_card(card):
    card.faults.latency(5)
    card(SELECT_JPKI)
    card(SELECT_AUTH_CERT)
    assert card.slept == [0.005, 0.005]
    card.slept.clear()
    card.faults.latency(profile="contact")  # replaces the fixed one
    assert len(card(READ_256)) == 258
    card(SELECT_JPKI)
    # T=1 at 9600 bit/s, 11 etu a byte, 4 bytes of framing a block, IFSC 254: the command
    # (5 + 4 bytes) and the answer (258 bytes: two blocks + one R-block), plus the reader's
    # 2 ms and the card's 2 ms: 279 bytes * 11 / 9600 + 4 ms.
    assert card.slept[0] == pytest.approx(279 * 11 / 9600 + 0.004)
    assert card.slept[1] == pytest.approx((15 + 4 + 2 + 4) * 11 / 9600 + 0.005)
    card(SELECT_AUTH_PIN)
    card(verify(AUTH_PIN))
    card(SELECT_JPKI)
    card(bytes.fromhex("00A4020C020017"))
    card(SIGN)
    contact_signature = card.slept[-1]
    assert 0.3 <= contact_signature <= 1.0  # RSA-2048 on a card: 0.3-1 s (docs/faults.md)
    card(SELECT_AUTH_CERT)
    card.faults.latency(profile="contactless")
    assert len(card(READ_256)) == 258
    assert card.slept[-1] < card.slept[0] / 5  # 106 kbit/s against 9.6 kbit/s
    card.faults.latency(profile="contact", bit_rate=38400)  # the ATR with TA1=13 (Di=4)
    card(READ_256)
    assert card.slept[-1] == pytest.approx(279 * 11 / 38400 + 0.004)
    assert [f.kind for f in card.faults.faults] == ["latency"]
    assert "!! fault latency#2: 323.7 ms for READ BINARY (5+258 bytes, contact card)" in card.events()


@pytest.mark.parametrize("pin", [AUTH_PIN, b"9999"], ids=["right-pin", "wrong-pin"])
def test_tear_during_verify_spends_the_try_until_a_correct_verify(card, card_dir, pin):
    card(SELECT_JPKI)
    card(SELECT_AUTH_PIN)
    card.faults.tear("verify")
    assert card.sw(TRIES) == "63C3"  # asking the tries left writes nothing: not torn
    with pytest.raises(CardRemovedError):
        card(verify(pin))
    assert load_state(card_dir / "state.json")["pins"]["auth"]["remaining"] == 2  # written before
    assert card.events()[0] == ("!! fault tear#1: power lost during VERIFY, after the card's write; "
                                "the card left the reader")
    card.faults.insert()
    card.t.reconnect()
    card(SELECT_JPKI)
    card(SELECT_AUTH_PIN)
    assert card.sw(TRIES) == "63C2"  # after power-up: one try fewer, right PIN or not
    assert card.sw(verify(AUTH_PIN)) == "9000"
    assert card.sw(TRIES) == "63C3"  # a correct VERIFY gives them back


def test_tear_before_the_write_leaves_the_counter(card):
    card(SELECT_JPKI)
    card(SELECT_AUTH_PIN)
    card.faults.tear("verify", after_write=False)
    with pytest.raises(CardRemovedError):
        card(verify(b"9999"))
    card.faults.insert()
    card.t.reconnect()
    card(SELECT_JPKI)
    card(SELECT_AUTH_PIN)
    assert card.sw(TRIES) == "63C3"


@pytest.mark.parametrize("after_write", [True, False], ids=["after-write", "before-write"])
def test_tear_during_change_pin_leaves_the_old_or_the_new_pin(card, card_dir, after_write):
    card(SELECT_JPKI)
    card(SELECT_AUTH_PIN)
    assert card.sw(verify(AUTH_PIN)) == "9000"
    card.faults.tear("change_pin", after_write=after_write)
    with pytest.raises(CardRemovedError):
        card(change(b"5678"))
    state = load_state(card_dir / "state.json")
    check_state(state, card_dir / "state.json",
                pin_names(json.loads((card_dir / "card.json").read_text())))  # a whole record
    card.faults.insert()
    card.t.reconnect()
    card(SELECT_JPKI)
    card(SELECT_AUTH_PIN)
    now, other = (b"5678", AUTH_PIN) if after_write else (AUTH_PIN, b"5678")
    assert card.sw(verify(other)) == "63C2"
    assert card.sw(verify(now)) == "9000"
    assert card.sw(TRIES) == "63C3"


def test_reader_error_is_what_the_pcsc_transport_raises(card):
    card.faults.reader_error(match="read-binary")
    card(SELECT_JPKI)
    card(SELECT_AUTH_CERT)
    with pytest.raises(TransportError) as failed:
        card(READ_4)
    exc = failed.value
    expected = transmit_error(0x80100016, "emulated card alice")
    assert (type(exc), str(exc), exc.code, exc.pcsc_code) == (type(expected), str(expected), "transport", 0x80100016)
    assert str(exc) == "cannot talk to the card in 'emulated card alice': Transaction failed (0x80100016)"
    assert card.sw(READ_4) == "9000"  # the card stayed in its reader, with its state
    card.faults.reader_error("SCARD_E_READER_UNAVAILABLE")
    with pytest.raises(NoReaderError) as unplugged:
        card(READ_4)
    assert unplugged.value.pcsc_code == 0x80100017
    assert card.events()[:2] == [
        "!! fault reader_error#1: reader error SCARD_E_NOT_TRANSACTED on READ BINARY",
        "R! transport: cannot talk to the card in 'emulated card alice': Transaction failed (0x80100016)"]


def test_reader_error_in_the_cli_carries_its_code(cli, card):
    card.faults.reader_error(match="verify")
    r = cli("--json", "pin", "status")
    assert r.exit_code == 5
    doc = r.json()
    assert (doc["error"], doc["pcsc_code"]) == ("transport", "0x80100016")


def test_every_reader_error_is_a_pcsc_error_the_host_knows():
    assert set(READER_ERRORS) <= set(PCSC_ERRORS)


@pytest.mark.parametrize(("verb", "args", "reason"), [
    ("status_word", ("12",), "4 hex digits"),
    ("status_word", (0x1234,), "not a status word"),
    ("status_word", (0x6A82, "frobnicate"), "cannot match 'frobnicate'"),
    ("status_word", (0x6A82, None, 0), "times must be"),
    ("remove_after", (-1,), "whole number"),
    ("latency", (), "needs ms > 0 or a profile"),
    ("tear", ("sign",), "verify or change-pin"),
    ("reader_error", ("SCARD_E_BOGUS",), "unknown reader error"),
])
def test_a_fault_that_cannot_be_set_says_why(verb, args, reason):
    plan = FaultPlan()
    with pytest.raises(FaultSpecError, match=reason) as bad:
        getattr(plan, verb)(*args)
    assert bad.value.code == "bad_fault" and not plan.armed
    with pytest.raises(FaultSpecError):
        FaultPlan().latency(profile="bluetooth")


def test_every_fault_survives_the_plan_file():
    plan = FaultPlan()
    made = [plan.remove_after(3), plan.remove_on_signature(), plan.status_word("6a82", "ins=b0", times=None),
            plan.latency(7, profile="contactless", bit_rate=212_000), plan.tear("change-pin", after_write=False),
            plan.reader_error("SCARD_W_UNRESPONSIVE_CARD", match="00A4", times=2)]
    assert sorted(f.kind for f in made) == sorted(KINDS)
    for fault in made:
        assert Fault.from_json(json.loads(json.dumps(fault.to_json()))) == fault


class FakeCard:
    def __init__(self) -> None:
        self.apdus: list[bytes] = []

    def transmit(self, apdu: bytes) -> bytes:
        self.apdus.append(apdu)
        return b"\x90\x00"

    def power_off(self) -> None:
        pass


def test_served_plan_file_round_trip(tmp_path):
    folder = tmp_path / "card"
    folder.mkdir(mode=0o700)
    plan = FaultPlan()
    watcher = PlanWatcher([(plan, folder)])
    watcher.start()
    try:
        served = ServedFaults(folder, watcher.request)
        served.status_word("6A82", match="select", times=2)
        assert plan.armed and stat.S_IMODE(os.stat(folder / PLAN_FILE).st_mode) == 0o600
        fake = FakeCard()
        answers = [plan.run(fake, SELECT_JPKI, lambda _: None).rapdu for _ in range(3)]
        assert answers == [b"\x6a\x82", b"\x6a\x82", b"\x90\x00"]
        assert fake.apdus == [SELECT_JPKI]
        served.remove_on_signature()  # a later request must not bring back a fault used up
        listing = served.describe()
        assert [f["kind"] for f in listing["faults"]] == ["remove_on_signature"]
        assert [f["kind"] for f in listing["fired"]] == ["status_word", "status_word"]
        assert listing["present"] is True
        served.clear()
        assert not plan.armed and served.describe()["faults"] == []
    finally:
        watcher.stop()
    assert not (folder / PLAN_FILE).exists()


def test_fault_cli_needs_a_served_card(cli, home):
    r = cli("--json", "emulator", "fault", "alice", "list")
    assert r.exit_code == 2 and "not being served" in r.json()["message"]
    run = home / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    (run / "alice.pid").write_text(str(os.getpid()))  # "served" by this process: nothing is sent
    for args, reason in ([("status-word", "12"), "4 hex digits"], [("status-word",), "needs SW"],
                         [("list", "x"), "takes no value"], [("tear", "verify", "--match", "sign"), "no --match"]):
        r = cli("--json", "emulator", "fault", "alice", *args)
        assert r.exit_code == 2 and reason in r.json()["message"], r
