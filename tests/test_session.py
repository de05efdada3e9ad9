"""jpki.session over a transport: JPKI AP (certificates, PINs, signatures) and card-info AP.

Every card-level test takes the ``transport_uri`` fixture and opens the card with
``open_card(home, kind)``, so that the same tests run over every transport in ``TRANSPORTS``
(the in-process emulator now; PC/SC through pcscd + vpcd can be added there).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from jpki.errors import (
    FileNotFoundOnCardError,
    PinBlockedError,
    PinIncorrectError,
    ProtocolError,
    SecurityStatusError,
    UsageError,
)
from jpki.identity import Sex, is_valid_mynumber
from jpki.pins import PINS
from jpki.pki import CertificateDB
from jpki.session import JPKI_AID, TEXT_AID, BasicInfo, CardInfoSession, JpkiSession, parse_basic_info
from jpki.transport import open_transport
from jpki.transport.emu import emulated_card_info

TRANSPORTS = ["emu", pytest.param("pcsc", marks=pytest.mark.pcsc)]

AUTH_PIN, SIGN_PIN, CARD_PIN = "1234", "ABC123", "1234"
MAX_TRIES = {"auth": 3, "sign": 5}
HASHES = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256(), "sha384": hashes.SHA384(),
          "sha512": hashes.SHA512()}


def open_card(home: Path, kind: str, card: str = "alice"):
    """Open card ``card`` of ``home`` over ``kind``: ``emu``, or a ``pcsc:READER`` URI.

    Over PC/SC the reader holds alice's card, served through pcscd + vpcd (``served_card``).
    """
    if kind == "emu":
        return open_transport(f"emu:{card}", home=home)
    assert card == "alice", "only alice's card is served through vpcd"
    return open_transport(kind, home=home)


@pytest.fixture(params=TRANSPORTS)
def transport_uri(request) -> str:
    """``emu``, or ``pcsc:<reader>`` with alice's card served through pcscd + vpcd."""
    if request.param == "pcsc":
        return f"pcsc:{request.getfixturevalue('served_card')}"
    return request.param


@pytest.fixture
def card(home, transport_uri):
    t = open_card(home, transport_uri)
    yield t
    t.close()


class Recorder:
    """Wraps a transport and records every command APDU."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(bytes(apdu))
        return self.inner.transmit(apdu)

    def close(self) -> None:
        self.inner.close()

    @property
    def atr(self) -> bytes:
        return self.inner.atr

    @property
    def description(self) -> str:
        return "recorder"


class FakeCard:
    """A minimal fake card: SELECT AP/EF, READ BINARY by offset, VERIFY always 9000."""

    PIN_EFS = (0x0011, 0x0014, 0x0015, 0x0018, 0x001B)

    def __init__(self, apps: dict[bytes, dict[int, bytes]]) -> None:
        self.apps = {aid: {**dict.fromkeys(self.PIN_EFS, b""), **files} for aid, files in apps.items()}
        self.app: dict[int, bytes] | None = None
        self.ef: bytes | None = None
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(bytes(apdu))
        ins, p1 = apdu[1], apdu[2]
        if ins == 0xA4:
            data = apdu[5:5 + apdu[4]]
            if p1 == 0x04:
                self.app = self.apps.get(data)
                return b"\x90\x00" if self.app is not None else b"\x6a\x82"
            fid = int.from_bytes(data, "big")
            if self.app is None or fid not in self.app:
                return b"\x6a\x82"
            self.ef = self.app[fid]
            return b"\x90\x00"
        if ins == 0xB0:
            offset = int.from_bytes(apdu[2:4], "big")
            le = apdu[4] or 256
            if self.ef is None or offset >= len(self.ef):
                return b"\x6b\x00"
            return self.ef[offset:offset + le] + b"\x90\x00"
        if ins == 0x20:
            return b"\x90\x00" if len(apdu) > 5 else b"\x63\xc3"
        return b"\x6d\x00"

    def close(self) -> None:
        pass

    atr = b"\x3b\x00"
    description = "fake"


def holder(home: Path, name: str = "alice") -> dict:
    return json.loads((home / "holders" / f"{name}.json").read_text(encoding="utf-8"))


def issued_der(home: Path, kind: str, name: str = "alice") -> bytes:
    """The DER of the certificate the test CA issued to card ``name`` (from the CA database)."""
    db = CertificateDB(home / "ca" / "certs.db")
    try:
        record = db.get(holder(home, name)[f"{kind}_serial"])
        assert record is not None and record.kind == kind and record.card == name
        return record.der
    finally:
        db.close()


def ca_der(home: Path, kind: str) -> bytes:
    pem = (home / "ca" / f"{kind}_ca.pem").read_bytes()
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


# --------------------------------------------------------------------------- card type, certificates

def test_card_type_and_token_label(card):
    j = JpkiSession(card)
    assert j.card_type() == "my-number-card"
    assert j.token_label() == "JPKIAPICCTOKEN2"


@pytest.mark.parametrize("label, kind", [
    (b"JPKIAPICCTOKEN2", "my-number-card"),
    (b"JPKIAPICCTOKEN", "juki-card"),
    (b"JPKIAPGPSETOKEN", "smartphone"),
])
def test_card_type_from_the_token_label(label, kind):
    fake = FakeCard({JPKI_AID: {0x0006: label.ljust(32, b" ") + bytes(128)}})
    assert JpkiSession(fake).card_type() == kind


def test_unknown_token_label_is_a_protocol_error():
    fake = FakeCard({JPKI_AID: {0x0006: b"SOMETHINGELSE".ljust(32, b" ") + bytes(128)}})
    with pytest.raises(ProtocolError):
        JpkiSession(fake).card_type()


def test_a_card_without_the_jpki_ap_raises_file_not_found():
    with pytest.raises(FileNotFoundOnCardError) as exc:
        JpkiSession(FakeCard({}))
    assert exc.value.sw == 0x6A82


@pytest.mark.parametrize("kind", ["auth", "auth-ca", "sign-ca"])
def test_free_certificates_read_without_a_pin(card, home, kind):
    der = JpkiSession(card).read_certificate(kind)
    cert = x509.load_der_x509_certificate(der)
    expected = issued_der(home, "auth") if kind == "auth" else ca_der(home, kind[:-3])
    assert der == expected
    assert cert.public_bytes(serialization.Encoding.DER) == der


def test_all_four_certificates_equal_what_the_ca_issued(card, home):
    j = JpkiSession(card)
    j.verify("sign", SIGN_PIN)
    got = {k: j.read_certificate(k) for k in ("auth", "sign", "auth-ca", "sign-ca")}
    assert got["auth"] == issued_der(home, "auth")
    assert got["sign"] == issued_der(home, "sign")
    assert got["auth-ca"] == ca_der(home, "auth")
    assert got["sign-ca"] == ca_der(home, "sign")
    for kind, ca_kind in (("auth", "auth-ca"), ("sign", "sign-ca")):
        leaf = x509.load_der_x509_certificate(got[kind])
        leaf.verify_directly_issued_by(x509.load_der_x509_certificate(got[ca_kind]))


def test_certificate_length_comes_from_the_der_header_not_the_ef(home, transport_uri):
    with open_card(home, transport_uri) as t:
        rec = Recorder(t)
        der = JpkiSession(rec).read_certificate("auth")
    assert len(der) < 2048, "the EF is 2048 bytes; the certificate is shorter"
    assert not der.endswith(b"\xff" * 8)
    reads = [a for a in rec.sent if a[1] == 0xB0]
    assert reads[0] == bytes.fromhex("00B0000004"), "the first read is the 4-byte DER header"
    # exactly len(der) bytes are asked for, in <= 256-byte chunks, at consecutive offsets
    offset = 0
    for a in reads:
        assert int.from_bytes(a[2:4], "big") == offset
        le = a[4] or 256
        offset += le
    assert offset == len(der)


def test_certificate_ef_without_a_der_sequence_is_a_protocol_error():
    fake = FakeCard({JPKI_AID: {0x000A: b"\xff" * 2048}})
    with pytest.raises(ProtocolError):
        JpkiSession(fake).read_certificate("auth")


def test_short_form_der_header_is_honoured():
    tiny = b"\x30\x03\x02\x01\x05"
    fake = FakeCard({JPKI_AID: {0x000B: tiny + b"\xff" * 100}})
    assert JpkiSession(fake).read_certificate("auth-ca") == tiny


def test_unknown_certificate_kind_is_a_usage_error(card):
    with pytest.raises(UsageError):
        JpkiSession(card).read_certificate("root")  # type: ignore[arg-type]


def test_sign_certificate_needs_the_password_then_reads(card, home):
    j = JpkiSession(card)
    with pytest.raises(SecurityStatusError) as exc:
        j.read_certificate("sign")
    assert exc.value.sw == 0x6982
    j.verify("sign", SIGN_PIN)
    der = j.read_certificate("sign")
    assert der == issued_der(home, "sign")


def test_reselecting_the_ap_logs_out(card):
    j = JpkiSession(card)
    j.verify("sign", SIGN_PIN)
    j.read_certificate("sign")
    j.select_ap()
    with pytest.raises(SecurityStatusError):
        j.read_certificate("sign")


# --------------------------------------------------------------------------- PINs

@pytest.mark.parametrize("pin", ["auth", "sign"])
def test_tries_left_spends_nothing(card, home, transport_uri, pin):
    j = JpkiSession(card)
    for _ in range(5):
        assert j.tries_left(pin) == MAX_TRIES[pin]
    with open_card(home, transport_uri) as t2:  # a new session sees the same counter
        assert JpkiSession(t2).tries_left(pin) == MAX_TRIES[pin]


def test_card_info_pin_tries_left(card):
    assert CardInfoSession(card).tries_left("card") == 3
    assert CardInfoSession(card).tries_left("card") == 3


def test_tries_left_of_an_unknown_pin_is_a_usage_error(card):
    with pytest.raises(UsageError):
        JpkiSession(card).tries_left("card")


@pytest.mark.parametrize("pin, wrong, right", [("auth", "0000", AUTH_PIN), ("sign", "WRONG1", SIGN_PIN)])
def test_wrong_pins_count_down_to_blocked(card, home, transport_uri, pin, wrong, right):
    j = JpkiSession(card)
    for left in range(MAX_TRIES[pin] - 1, -1, -1):
        with pytest.raises(PinIncorrectError) as exc:
            j.verify(pin, wrong)
        assert exc.value.tries_left == left
        assert exc.value.sw == 0x63C0 | left
        assert j.tries_left(pin) == left
    with pytest.raises(PinBlockedError) as exc:
        j.verify(pin, wrong)
    assert exc.value.sw == 0x6984
    with pytest.raises(PinBlockedError):
        j.verify(pin, right)  # blocked means blocked, even for the right value
    assert j.tries_left(pin) == 0
    with open_card(home, transport_uri) as t2:  # the block survives the session
        assert JpkiSession(t2).tries_left(pin) == 0
        with pytest.raises(PinBlockedError):
            JpkiSession(t2).verify(pin, right)


def test_right_pin_restores_the_counter(card):
    j = JpkiSession(card)
    with pytest.raises(PinIncorrectError):
        j.verify("auth", "9999")
    assert j.tries_left("auth") == 2
    j.verify("auth", AUTH_PIN)
    assert j.tries_left("auth") == 3


def test_pins_are_separate(card):
    j = JpkiSession(card)
    with pytest.raises(PinIncorrectError):
        j.verify("auth", "9999")
    assert j.tries_left("sign") == 5
    assert CardInfoSession(card).tries_left("card") == 3


@pytest.mark.parametrize("pin, old, new, session_cls", [
    ("auth", AUTH_PIN, "4321", JpkiSession),
    ("sign", SIGN_PIN, "NEWPASS99", JpkiSession),
    ("card", CARD_PIN, "8642", CardInfoSession),
])
def test_change_pin(card, home, transport_uri, pin, old, new, session_cls):
    session_cls(card).change_pin(pin, old, new)
    with open_card(home, transport_uri) as t2:
        s = session_cls(t2)
        with pytest.raises(PinIncorrectError):
            s.verify(pin, old)
        s.verify(pin, new)
        assert s.tries_left(pin) == (5 if pin == "sign" else 3)


def test_change_pin_with_a_wrong_old_pin_changes_nothing(card, home, transport_uri):
    j = JpkiSession(card)
    with pytest.raises(PinIncorrectError) as exc:
        j.change_pin("auth", "0000", "4321")
    assert exc.value.tries_left == 2
    with open_card(home, transport_uri) as t2:
        JpkiSession(t2).verify("auth", AUTH_PIN)


def test_change_sign_password_is_upper_cased(card, home, transport_uri):
    JpkiSession(card).change_pin("sign", "abc123", "lower99x")
    with open_card(home, transport_uri) as t2:
        JpkiSession(t2).verify("sign", "LOWER99X")


@pytest.mark.parametrize("pin, value", [
    ("auth", "123"), ("auth", "12345"), ("auth", "12a4"), ("auth", ""), ("auth", "１２３４５"),
    ("auth", "1234\n"), ("sign", "ABC12"), ("sign", "A" * 17), ("sign", "ABC-123"),
    ("sign", "ÄBC123"), ("sign", "ABC 123"),
])
def test_bad_pin_format_is_a_usage_error_before_any_apdu(home, transport_uri, pin, value):
    with open_card(home, transport_uri) as t:
        rec = Recorder(t)
        j = JpkiSession(rec)
        before = len(rec.sent)
        with pytest.raises(UsageError):
            j.verify(pin, value)
        with pytest.raises(UsageError):
            j.change_pin(pin, value, "1234" if pin == "auth" else "ABC123")
        with pytest.raises(UsageError):
            j.change_pin(pin, "1234" if pin == "auth" else "ABC123", value)
        assert rec.sent[before:] == []
        assert j.tries_left(pin) == MAX_TRIES[pin]


@pytest.mark.parametrize("value", ["123", "12345", "abcd"])
def test_bad_card_info_pin_is_a_usage_error_before_any_apdu(home, transport_uri, value):
    with open_card(home, transport_uri) as t:
        rec = Recorder(t)
        s = CardInfoSession(rec)
        before = len(rec.sent)
        with pytest.raises(UsageError):
            s.verify("card", value)
        with pytest.raises(UsageError):
            s.verify("card_a", value)
        assert rec.sent[before:] == []


def test_unknown_pin_is_a_usage_error_before_any_apdu(home, transport_uri):
    with open_card(home, transport_uri) as t:
        rec = Recorder(t)
        j = JpkiSession(rec)
        before = len(rec.sent)
        with pytest.raises(UsageError):
            j.verify("card", "1234")
        with pytest.raises(UsageError):
            j.tries_left("nope")
        assert rec.sent[before:] == []


def test_lower_case_signature_password_is_upper_cased(home, transport_uri):
    with open_card(home, transport_uri) as t:
        rec = Recorder(t)
        j = JpkiSession(rec)
        j.verify("sign", "abc123")
        verify = [a for a in rec.sent if a[1] == 0x20 and len(a) > 5]
        assert verify == [bytes.fromhex("0020008006") + b"ABC123"]
        j.read_certificate("sign")  # the password really is verified


@pytest.mark.parametrize("pin, typed, sent", [("sign", "ＡＢＣ１２３", b"ABC123"),
                                              ("sign", "ａｂｃ１２３", b"ABC123"),
                                              ("auth", "１２３４", b"1234")])
def test_full_width_input_is_nfkc_normalised_before_it_is_sent(home, transport_uri, pin, typed, sent):
    """What a Japanese keyboard types in full-width mode is the ASCII the card compares."""
    with open_card(home, transport_uri) as t:
        rec = Recorder(t)
        j = JpkiSession(rec)
        j.verify(pin, typed)
        verify = [a for a in rec.sent if a[1] == 0x20 and len(a) > 5]
        assert verify == [bytes.fromhex("00200080") + bytes([len(sent)]) + sent]
        assert j.tries_left(pin) == MAX_TRIES[pin]


def test_a_pin_error_names_the_pin(card):
    j = JpkiSession(card)
    with pytest.raises(PinIncorrectError) as exc:
        j.verify("sign", "WRONG1")
    assert exc.value.pin == "sign" and exc.value.tries_left == 4
    with pytest.raises(SecurityStatusError) as denied:
        j.sign_digest("auth", "sha256", bytes(32))
    assert denied.value.pin == "auth"
    with pytest.raises(SecurityStatusError) as unread:
        CardInfoSession(card).read_my_number()
    assert unread.value.pin == "card"


# --------------------------------------------------------------------------- signatures

def _public_key(card_t, key: str):
    j = JpkiSession(card_t)
    if key == "sign":
        j.verify("sign", SIGN_PIN)
    return x509.load_der_x509_certificate(j.read_certificate(key)).public_key()


@pytest.fixture
def openssl():
    path = shutil.which("openssl")
    if path is None:
        pytest.skip("openssl not installed")
    return path


@pytest.mark.parametrize("algorithm", list(HASHES))
@pytest.mark.parametrize("key", ["auth", "sign"])
def test_sign_digest_verifies_with_the_certificate_and_openssl(card, tmp_path, openssl, key, algorithm):
    pub = _public_key(card, key)
    data = f"jpki session test {key} {algorithm} ".encode() * 7
    digest = hashlib.new(algorithm, data).digest()
    j = JpkiSession(card)
    j.verify(key, AUTH_PIN if key == "auth" else SIGN_PIN)
    sig = j.sign_digest(key, algorithm, digest)
    assert len(sig) == 256
    pub.verify(sig, digest, padding.PKCS1v15(), Prehashed(HASHES[algorithm]))
    pub.verify(sig, data, padding.PKCS1v15(), HASHES[algorithm])
    with pytest.raises(InvalidSignature):
        pub.verify(sig, data + b"x", padding.PKCS1v15(), HASHES[algorithm])

    (tmp_path / "pub.pem").write_bytes(pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "data").write_bytes(data)
    (tmp_path / "sig").write_bytes(sig)
    ok = subprocess.run([openssl, "dgst", f"-{algorithm}", "-verify", str(tmp_path / "pub.pem"),
                         "-signature", str(tmp_path / "sig"), str(tmp_path / "data")],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert "Verified OK" in ok.stdout
    (tmp_path / "data").write_bytes(data + b"x")
    bad = subprocess.run([openssl, "dgst", f"-{algorithm}", "-verify", str(tmp_path / "pub.pem"),
                          "-signature", str(tmp_path / "sig"), str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0


def test_the_two_keys_differ(card):
    auth_pub = _public_key(card, "auth")
    sign_pub = _public_key(card, "sign")
    digest = hashlib.sha256(b"which key?").digest()
    j = JpkiSession(card)
    j.verify("auth", AUTH_PIN)
    sig = j.sign_digest("auth", "sha256", digest)
    auth_pub.verify(sig, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        sign_pub.verify(sig, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


@pytest.mark.parametrize("key", ["auth", "sign"])
def test_sign_without_the_pin_is_a_security_status_error(card, key):
    j = JpkiSession(card)
    with pytest.raises(SecurityStatusError) as exc:
        j.sign_digest(key, "sha256", hashlib.sha256(b"x").digest())
    assert exc.value.sw == 0x6982


def test_the_auth_pin_does_not_open_the_sign_key(card):
    j = JpkiSession(card)
    j.verify("auth", AUTH_PIN)
    with pytest.raises(SecurityStatusError):
        j.sign_digest("sign", "sha256", hashlib.sha256(b"x").digest())


@pytest.mark.parametrize("call", [
    lambda j: j.sign_digest("auth", "md5", b"\x00" * 16),
    lambda j: j.sign_digest("auth", "sha256", b"\x00" * 31),
    lambda j: j.sign_digest("auth", "sha1", b"\x00" * 32),
    lambda j: j.sign("other", b"\x00" * 20),
    lambda j: j.sign("auth", b""),
    lambda j: j.sign("auth", b"\x00" * 246),
])
def test_bad_sign_arguments_are_usage_errors_before_any_apdu(home, transport_uri, call):
    with open_card(home, transport_uri) as t:
        rec = Recorder(t)
        j = JpkiSession(rec)
        j.verify("auth", AUTH_PIN)
        before = len(rec.sent)
        with pytest.raises(UsageError):
            call(j)
        assert rec.sent[before:] == []


# --------------------------------------------------------------------------- card-info AP

def test_my_number_after_the_card_info_pin(card, home):
    s = CardInfoSession(card)
    with pytest.raises(SecurityStatusError):
        s.read_my_number()
    s.verify("card", CARD_PIN)
    number = s.read_my_number()
    assert is_valid_mynumber(number)
    assert number == holder(home)["persona"]["my_number"]


def test_my_number_after_verification_number_a(card, home):
    number = holder(home)["persona"]["my_number"]
    s = CardInfoSession(card)
    s.verify("card_a", number)
    assert s.read_my_number() == number


def test_basic_info_equals_the_persona(card, home):
    p = holder(home)["persona"]
    s = CardInfoSession(card)
    with pytest.raises(SecurityStatusError):
        s.read_basic_info()
    s.verify("card", CARD_PIN)
    info = s.read_basic_info()
    assert info == BasicInfo(p["name"], p["address"], dt.date.fromisoformat(p["birth_date"]),
                             Sex.parse(p["sex"]))
    assert info.name == "山田　花子"
    assert info.sex is Sex.FEMALE
    assert info.to_json() == {"name": p["name"], "address": p["address"],
                              "birth_date": p["birth_date"], "sex": "female"}


def test_basic_info_after_verification_number_b(card, home):
    h = holder(home)
    s = CardInfoSession(card)
    s.verify_b(dt.date.fromisoformat(h["persona"]["birth_date"]),
               dt.date.fromisoformat(h["card_expiry"]).year, h["security_code"])
    assert s.read_basic_info().name == h["persona"]["name"]


def test_the_jpki_pins_do_not_open_the_card_info_ap(card):
    JpkiSession(card).verify("auth", AUTH_PIN)
    s = CardInfoSession(card)
    with pytest.raises(SecurityStatusError):
        s.read_my_number()


# -- building card-info EFs by hand

def _tlv(tag: bytes, value: bytes, form: str) -> bytes:
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    elif form == "81" and n <= 0xFF:
        length = bytes([0x81, n])
    else:
        length = bytes([0x82, n >> 8, n & 0xFF])
    return tag + length + value


def basic4_ef(name="山田　花子", address="東京都千代田区１", birth="19900415", sex="2",
              form="82", filler=b"\xff" * 40, pad_to_long=True) -> bytes:
    fields = [(b"\xdf\x22", name.encode()), (b"\xdf\x23", address.encode()),
              (b"\xdf\x24", birth.encode()), (b"\xdf\x25", sex.encode())]
    body = b"".join(_tlv(t, v, form) for t, v in fields)
    offsets = _tlv(b"\xdf\x21", bytes(8), form)
    value = offsets + body
    if pad_to_long and len(value) < 0x80:  # lengthen the address so the outer TLV needs 81/82
        extra = "丁" * ((0x80 - len(value)) // 3 + 1)
        return basic4_ef(name, address + extra, birth, sex, form, filler, pad_to_long)
    return _tlv(b"\xff\x20", value, form) + filler


@pytest.mark.parametrize("form, marker", [("82", 0x82), ("81", 0x81)])
def test_parse_basic_info_in_both_long_length_forms(form, marker):
    ef = basic4_ef(form=form)
    assert ef[2] == marker
    info = parse_basic_info(ef)
    assert info.name == "山田　花子"
    assert info.address.startswith("東京都千代田区１丁")
    assert info.birth_date == dt.date(1990, 4, 15)
    assert info.sex is Sex.FEMALE


def test_parse_basic_info_short_form_and_every_sex():
    for code, sex in (("1", Sex.MALE), ("2", Sex.FEMALE), ("9", Sex.UNKNOWN)):
        ef = basic4_ef(sex=code, form="82", pad_to_long=False)
        assert ef[2] < 0x80
        assert parse_basic_info(ef).sex is sex


def test_parse_basic_info_with_82_inner_lengths():
    long_address = "北海道" + "あ" * 60  # > 127 bytes: the DF23 TLV itself uses 82 HH LL
    ef = basic4_ef(address=long_address, form="82")
    assert parse_basic_info(ef).address == long_address


@pytest.mark.parametrize("ef", [
    b"",
    b"\xff",
    b"\xff\x20",
    b"\xff\x21\x03\xdf\x22\x00",                          # wrong outer tag
    b"\x30\x03\x02\x01\x00",                              # not FF20 at all
    b"\xff\x20\x83\x00\x00\x05" + bytes(5),               # unsupported length byte
    b"\xff\x20\x82\x01\x00" + bytes(10),                  # value shorter than its length
    b"\xff\x20\x81",                                      # length bytes missing
    basic4_ef(form="82")[:40],                            # truncated EF
    b"\xff\x20\x08\xdf\x22\x01\xff\xdf\x23\x01\x41",      # name not UTF-8, fields missing
])
def test_parse_basic_info_rejects_malformed_data(ef):
    with pytest.raises(ProtocolError):
        parse_basic_info(ef)


@pytest.mark.parametrize("kwargs, what", [
    ({"birth": "19901315"}, "impossible birth date"),
    ({"birth": "ABCDEFGH"}, "non-digit birth date"),
    ({"sex": "3"}, "unknown sex code"),
    ({"sex": ""}, "empty sex code"),
])
def test_parse_basic_info_rejects_bad_fields(kwargs, what):
    with pytest.raises(ProtocolError):
        parse_basic_info(basic4_ef(**kwargs))


@pytest.mark.parametrize("birth", ["1990041", "1990415"])
def test_parse_basic_info_rejects_a_birth_date_that_is_not_8_digits(birth):
    with pytest.raises(ProtocolError):
        parse_basic_info(basic4_ef(birth=birth))


def test_parse_basic_info_rejects_missing_fields():
    value = _tlv(b"\xdf\x22", "山田".encode(), "82") + _tlv(b"\xdf\x23", b"x", "82")
    with pytest.raises(ProtocolError, match="DF24"):
        parse_basic_info(_tlv(b"\xff\x20", value, "82"))


def test_parse_basic_info_rejects_non_utf8_text():
    value = (_tlv(b"\xdf\x22", b"\xff\xfe", "82") + _tlv(b"\xdf\x23", b"x", "82")
             + _tlv(b"\xdf\x24", b"19900415", "82") + _tlv(b"\xdf\x25", b"1", "82"))
    with pytest.raises(ProtocolError):
        parse_basic_info(_tlv(b"\xff\x20", value, "82"))


@pytest.mark.parametrize("form", ["82", "81", "short"])
def test_read_basic_info_reads_every_length_form_from_a_card(form):
    ef = basic4_ef(form="82" if form == "short" else form, pad_to_long=form != "short")
    fake = FakeCard({TEXT_AID: {0x0002: ef}})
    s = CardInfoSession(fake)
    s.verify("card", CARD_PIN)
    assert s.read_basic_info().name == "山田　花子"
    reads = [a for a in fake.sent if a[1] == 0xB0]
    asked = sum(a[4] or 256 for a in reads)
    assert asked == len(ef) - 40, "read exactly the TLV, not the filler"


def test_read_basic_info_over_a_card_with_long_ber_lengths(home, key_pool, clock):
    """End to end: a card whose basic 4 info needs 81 / 82 lengths (long address, 'ber' profile).

    In process only: these extra cards are not served through vpcd."""
    from jpki.identity import SAMPLE_PERSONAS
    from jpki.provision import Home, create_card

    persona = SAMPLE_PERSONAS["bob"].replace(address="大阪府大阪市北区梅田２丁目４番９号" + "ビル" * 8)
    for name, profile, marker in (("long82", None, 0x82), ("long81", {"long_length_form": "ber"}, 0x81)):
        create_card(Home(home), name, persona, clock=clock, keys=(key_pool[4], key_pool[5]),
                    profile=profile)
        doc = json.loads((home / "cards" / name / "card.json").read_text())
        raw = base64.b64decode(doc["applications"]["text"]["files"]["0002"]["data"])
        assert raw[2] == marker, f"{name}: expected the FF20 length in {marker:02X} form"
        with open_card(home, "emu", name) as t:
            s = CardInfoSession(t)
            s.verify("card", CARD_PIN)
            info = s.read_basic_info()
        assert info.address == persona.address
        assert info.name == persona.name and info.sex is Sex.MALE


def _patch_my_number(home: Path, name: str, number_bytes: bytes) -> None:
    path = home / "cards" / name / "card.json"
    doc = json.loads(path.read_text())
    doc["applications"]["text"]["files"]["0001"]["data"] = base64.b64encode(number_bytes).decode()
    path.write_text(json.dumps(doc))


def _bad_check_digit(number: str) -> str:
    return number[:11] + str((int(number[11]) + 1) % 10)


def test_a_card_with_a_bad_my_number_check_digit_is_a_protocol_error(home, transport_uri):
    number = holder(home)["persona"]["my_number"]
    bad = _bad_check_digit(number)
    assert not is_valid_mynumber(bad)
    _patch_my_number(home, "alice", b"\xff\x10\x0c" + bad.encode() + b"\xff\xff")
    with open_card(home, transport_uri) as t:
        if hasattr(t, "reconnect"):  # a served card reloads rewritten content at reset
            t.reconnect(reset=True)
        s = CardInfoSession(t)
        s.verify("card", CARD_PIN)
        with pytest.raises(ProtocolError, match="check digit"):
            s.read_my_number()


@pytest.mark.parametrize("ef", [
    b"\xff\x10\x0c" + b"12345678901X" + b"\xff\xff",     # not digits
    b"\xff\x11\x0c" + b"123456789018" + b"\xff\xff",     # wrong tag
    b"\x00" * 17,                                         # empty EF
])
def test_my_number_ef_malformed_is_a_protocol_error(ef):
    fake = FakeCard({TEXT_AID: {0x0001: ef}})
    s = CardInfoSession(fake)
    s.verify("card", CARD_PIN)
    with pytest.raises(ProtocolError):
        s.read_my_number()


def test_my_number_from_a_fake_card_with_a_valid_number():
    fake = FakeCard({TEXT_AID: {0x0001: b"\xff\x10\x0c123456789018\xff\xff"}})
    s = CardInfoSession(fake)
    s.verify("card", CARD_PIN)
    assert s.read_my_number() == "123456789018"


def test_the_host_pin_table_agrees_with_the_card(card_dir):
    """jpki.pins, the host's one table of PINs (the host may not import card_emulator), has the
    maximum tries the emulator provisions for each PIN."""
    provisioned = emulated_card_info(card_dir)["pins"]
    assert {kind: provisioned[kind][1] for kind in PINS} == {k: p.max_tries for k, p in PINS.items()}
    assert {k: p.max_tries for k, p in PINS.items() if k in MAX_TRIES} == MAX_TRIES
