"""The emulated My Number Card at the APDU level: bytes in, bytes out (spec sections 1-7).

Expected answers come from /work/shared/jpki-card-spec.md, not from the emulator's code. Reference
values (certificates, the My Number, the holder's birth date) come from the test CA's database and
``home/holders/alice.json``, never from the card's own files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
from functools import cache
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from card_emulator import CardProfile, MyNumberCard
from card_emulator import card as card_module
from card_emulator.provision import CardData, create_card
from jpki.pki import TestCA

# ----------------------------------------------------------------------------- constants (spec §2-§5)
JPKI_AID = "D392F000260100000001"
TEXT_AID = "D3921000310001010408"
SURFACE_AID = "D3921000310001010402"
JUKI_AID = "D3921000310001010401"
COMMON_AID = "D3921000310001010100"
ALL_AIDS = {"jpki": JPKI_AID, "text": TEXT_AID, "surface": SURFACE_AID, "juki": JUKI_AID,
            "common": COMMON_AID}

SEL_JPKI = "00A4040C0A" + JPKI_AID
SEL_TEXT = "00A4040C0A" + TEXT_AID
SEL_SURFACE = "00A4040C0A" + SURFACE_AID


def sel_ef(fid: str) -> str:
    return "00A4020C02" + fid


AUTH_PIN = b"1234"
SIGN_PIN = b"ABC123"
CARD_PIN = b"1234"
SECURITY_CODE = "1357"

VERIFY_AUTH = "0020009804" + AUTH_PIN.hex()  # SFI form, EF 0018
VERIFY_SIGN = "0020009B06" + SIGN_PIN.hex()  # SFI form, EF 001B
VERIFY_CARD = "0020009104" + CARD_PIN.hex()  # SFI form, EF 0011 (text AP)

DIGEST_INFO_PREFIX = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha224": bytes.fromhex("302d300d06096086480165030402040500041c"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
HASHES = {"sha1": hashes.SHA1(), "sha224": hashes.SHA224(), "sha256": hashes.SHA256(),
          "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}


def digest_info(name: str, message: bytes = b"abc") -> bytes:
    return DIGEST_INFO_PREFIX[name] + hashlib.new(name, message).digest()


DI256 = digest_info("sha256").hex()  # 51 bytes = 0x33


def sign_apdu(p2: str, data: bytes | str, *, le: str = "00", cla: str = "80", p1: str = "00") -> str:
    data_hex = data.hex() if isinstance(data, bytes) else data
    n = len(data_hex) // 2
    assert 1 <= n <= 255
    return f"{cla}2A{p1}{p2}{n:02X}{data_hex}{le}"


# ----------------------------------------------------------------------------- helpers
def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def tx(card: MyNumberCard, apdu: str | bytes) -> bytes:
    r = card.transmit(h(apdu) if isinstance(apdu, str) else apdu)
    assert isinstance(r, bytes) and len(r) >= 2
    return r


def sw(r: bytes) -> str:
    return r[-2:].hex().upper()


def ok(card: MyNumberCard, *apdus: str) -> list[bytes]:
    """Send each APDU; each must answer 9000. Returns the data fields."""
    out = []
    for a in apdus:
        r = tx(card, a)
        assert sw(r) == "9000", f"{a} -> {r.hex()}"
        out.append(r[:-2])
    return out


def read_ef(card: MyNumberCard, size: int | None = None) -> bytes:
    """READ BINARY of the current EF in 256-byte steps up to ``size`` (or until 6B00)."""
    out = b""
    while size is None or len(out) < size:
        r = tx(card, f"00B0{len(out):04X}00")
        if size is None and sw(r) == "6B00":
            break
        assert sw(r) == "9000", r.hex()
        out += r[:-2]
    return out if size is None else out[:size]


def read_certificate(card: MyNumberCard, fid: str) -> bytes:
    """OpenSC's way: 4-byte header, then the whole DER."""
    ok(card, sel_ef(fid))
    header = ok(card, "00B0000004")[0]
    assert header[:2] == b"\x30\x82"
    return read_ef(card, 4 + int.from_bytes(header[2:4], "big"))


def holder(home: Path, name: str = "alice") -> dict:
    return json.loads((home / "holders" / f"{name}.json").read_text(encoding="utf-8"))


def era_yy(d: dt.date) -> int:
    """Japanese-era year (spec §4 照合番号B), computed here independently of the emulator."""
    for start, offset in ((dt.date(2019, 5, 1), 2018), (dt.date(1989, 1, 8), 1988),
                          (dt.date(1926, 12, 25), 1925), (dt.date(1912, 7, 30), 1911)):
        if d >= start:
            return d.year - offset
    raise AssertionError("persona born before Taisho")


def verification_b(home: Path, name: str = "alice", *, era: bool = True) -> str:
    info = holder(home, name)
    birth = dt.date.fromisoformat(info["persona"]["birth_date"])
    yy = era_yy(birth) if era else birth.year % 100
    expiry = dt.date.fromisoformat(info["card_expiry"])
    return f"{yy:02d}{birth.month:02d}{birth.day:02d}{expiry.year:04d}{info['security_code']}"


@cache
def reference_certs(home: Path, name: str = "alice") -> dict[str, bytes]:
    """DER of the card's four certificates, from the test CA (not from the card)."""
    info = holder(home, name)
    ca = TestCA.open(home / "ca")
    try:
        return {
            "auth": ca.db.get(info["auth_serial"]).der,
            "sign": ca.db.get(info["sign_serial"]).der,
            "auth_ca": ca.auth_ca_cert.public_bytes(serialization.Encoding.DER),
            "sign_ca": ca.sign_ca_cert.public_bytes(serialization.Encoding.DER),
        }
    finally:
        ca.close()


@cache
def load_keys(card_dir: Path) -> dict[str, object]:
    return {k: serialization.load_pem_private_key((card_dir / "keys" / f"{k}.pem").read_bytes(), None)
            for k in ("auth", "sign")}


def make_card(home: Path, dest: Path, profile: CardProfile) -> MyNumberCard:
    """alice's card again (same keys, certificates and PINs) with another profile."""
    info = holder(home)
    keys = load_keys(home / "cards" / "alice")
    certs = reference_certs(home)
    p = info["persona"]
    data = CardData(
        auth_key=keys["auth"], sign_key=keys["sign"], auth_cert=certs["auth"], sign_cert=certs["sign"],
        auth_ca_cert=certs["auth_ca"], sign_ca_cert=certs["sign_ca"], my_number=p["my_number"],
        name=p["name"], address=p["address"], birth_date=dt.date.fromisoformat(p["birth_date"]),
        sex_code="2", auth_pin=AUTH_PIN.decode(), sign_pin=SIGN_PIN.decode(),
        card_pin=CARD_PIN.decode(), security_code=info["security_code"],
        card_expiry=dt.date.fromisoformat(info["card_expiry"]))
    create_card(dest, data, profile)
    card = MyNumberCard.open(dest)
    card.power_on()
    return card


def pkcs1_type1(data: bytes, k: int = 256) -> int:
    return int.from_bytes(b"\x00\x01" + b"\xff" * (k - 3 - len(data)) + b"\x00" + data, "big")


# ----------------------------------------------------------------------------- fixtures
# Opening a card (loading two RSA keys) and copying a home cost ~0.1 s; with ~350 cases that is
# most of the time budget. This module therefore shadows conftest's ``home``/``card_dir``/``emu_card``
# with one copy of the provisioned home per module and ONE open card whose persisted PIN state
# (state.json, the only file a card writes) is restored and whose session is reset before each
# test: the same card a fresh ``emu_card`` would be, bytes for bytes.
@pytest.fixture(scope="module")
def _shared_card(template_home, tmp_path_factory):
    home = tmp_path_factory.mktemp("apdu") / "home"
    shutil.copytree(template_home, home)
    card_dir = home / "cards" / "alice"
    pristine = {name: (card_dir / name).read_bytes() for name in ("state.json", "card.json")}
    card = MyNumberCard.open(card_dir)
    yield home, card_dir, card, pristine
    card.close()


@pytest.fixture
def home(_shared_card) -> Path:
    return _shared_card[0]


@pytest.fixture
def card_dir(_shared_card) -> Path:
    return _shared_card[1]


@pytest.fixture
def emu_card(_shared_card):
    _, card_dir, card, pristine = _shared_card
    assert (card_dir / "card.json").read_bytes() == pristine["card.json"]
    (card_dir / "state.json").write_bytes(pristine["state.json"])
    card.reset()
    card.power_on()
    yield card
    card.close()


# ============================================================================= the table
P = pytest.param
DI = DI256
_PROBE_AIDS = {  # other drivers' probes (OpenSC on connect), spec §1
    "piv": "A00000030800001000",
    "piv-short": "A000000308",
    "openpgp": "D27600012401",
    "cac": "A0000000790100",
    "cac-ccc": "A0000001163000",
    "coolkey": "627601FF000000",
    "sc-hsm": "E82B0601040181C31F0201",
    "gids": "A000000397425446590201",
    "muscle": "A00000000101",
    "pkcs15": "A000000063504B43532D3135",
    "esteid": "A000000077010800070000FE00000100",
    "yubikey-otp": "A0000005272001",
    "emv-pse": "315041592E5359532E4444463031",
    "jpki-prefix": JPKI_AID[:-2],
    "jpki-plus-byte": JPKI_AID + "00",
    "jpki-3bytes": JPKI_AID[:6],
}

TABLE = [
    # --- ISO 7816-4 cases, each parsed right
    P([], "00A4000C", "9000", 0, id="case1-select-mf"),
    P([SEL_JPKI, sel_ef("0018")], "00200080", "63C3", 0, id="case1-empty-verify"),
    P([SEL_JPKI, sel_ef("000A")], "00B0000004", "9000", 4, id="case2S-le04"),
    P([SEL_JPKI, sel_ef("000A")], "00B0000000", "9000", 256, id="case2S-le00-is-256"),
    P([SEL_JPKI, sel_ef("000A")], "00B00000000100", "9000", 256, id="case2E-le0100"),
    P([SEL_JPKI, sel_ef("000A")], "00B00000000004", "9000", 4, id="case2E-le0004"),
    P([SEL_JPKI, sel_ef("000A")], "00B00000000800", "9000", 2048, id="case2E-le0800-whole-ef"),
    P([SEL_JPKI, sel_ef("000A")], "00B00000000000", "9000", 2048, id="case2E-le0000-is-65536"),
    P([SEL_JPKI, sel_ef("000A")], "00B00700000101", "9000", 256, id="case2E-short-read-at-end"),
    P([], SEL_JPKI, "9000", 0, id="case3S-select-ap"),
    P([], "00A4040C00000A" + JPKI_AID, "9000", 0, id="case3E-select-ap"),
    P([SEL_JPKI], "00A4020C000002000A", "9000", 0, id="case3E-select-ef"),
    P([], SEL_JPKI + "00", "9000", 0, id="case4S-select-ap"),
    P([SEL_JPKI], sel_ef("000A") + "00", "9000", 0, id="case4S-select-ef"),
    P([], "00A4040C00000A" + JPKI_AID + "0000", "9000", 0, id="case4E-select-ap"),
    P([], "00A4040C00000A" + JPKI_AID + "0100", "9000", 0, id="case4E-select-ap-le0100"),
    P([SEL_JPKI], "00200098000004" + AUTH_PIN.hex(), "9000", 0, id="case3E-verify"),
    P([SEL_JPKI, VERIFY_AUTH], sign_apdu("97", DI), "9000", 256, id="case4S-sign"),
    P([SEL_JPKI, VERIFY_AUTH], sign_apdu("97", DI, le=""), "9000", 256, id="case3S-sign"),
    P([SEL_JPKI, VERIFY_AUTH], "802A0097000033" + DI + "0000", "9000", 256, id="case4E-sign"),
    P([SEL_JPKI, VERIFY_AUTH], "802A0097000033" + DI, "9000", 256, id="case3E-sign"),
    P([], "0084000008", "9000", 8, id="case2S-get-challenge"),
    # --- malformed lengths -> 6700
    P([], "00A4040C0B" + JPKI_AID, "6700", 0, id="lc-longer-than-data"),
    P([], "00A4040C08" + JPKI_AID, "6700", 0, id="lc-shorter-than-data"),
    P([], "00A4040C09" + JPKI_AID, "6A82", 0, id="lc-one-short-is-case4S-9-byte-aid"),
    P([], SEL_JPKI + "0000", "6700", 0, id="case4S-two-trailing-bytes"),
    P([], "00A4040C0000", "6700", 0, id="six-byte-apdu"),
    P([], "00A4040C000000" + JPKI_AID, "6700", 0, id="extended-lc-0-with-data"),
    P([], "00A4040C00000000", "6700", 0, id="extended-lc-0-no-data"),
    P([], "00A4040C00000B" + JPKI_AID, "6700", 0, id="extended-lc-longer"),
    P([], "00A4040C000009" + JPKI_AID, "6700", 0, id="extended-lc-shorter"),
    P([], "00A4040C000008" + JPKI_AID, "6A82", 0, id="extended-lc-two-short-is-case4E"),
    P([], "00A4040C00000A" + JPKI_AID + "00", "6700", 0, id="extended-lc-one-byte-le"),
    P([SEL_JPKI, sel_ef("000A")], "00B00000" + "000000" + "0004", "6700", 0, id="extended-lc-0-with-le"),
    P([], "00840000" + "000000" + "0008", "6700", 0, id="extended-lc-0-with-le-challenge"),
    P([SEL_JPKI, sel_ef("000A")], "00B000000004", "6700", 0, id="six-byte-read-binary"),
    P([], "008400000008", "6700", 0, id="six-byte-get-challenge"),
    P([SEL_JPKI, sel_ef("000A")], "00B0000000000400", "6700", 0, id="eight-byte-read-binary"),
    P([], "00A404", "6700", 0, id="three-byte-apdu"),
    P([], "00A4", "6700", 0, id="two-byte-apdu"),
    P([], "00", "6700", 0, id="one-byte-apdu"),
    P([], "", "6700", 0, id="empty-apdu"),
    P([SEL_JPKI, sel_ef("000A")], "00B00000", "6700", 0, id="read-binary-case1"),
    P([SEL_JPKI, sel_ef("000A")], "00B000000100", "6700", 0, id="read-binary-with-data"),
    P([SEL_JPKI], "00A4020C03000A00", "6700", 0, id="select-ef-3-byte-fid"),
    P([SEL_JPKI], "00A4020C01" + "0A", "6700", 0, id="select-ef-1-byte-fid"),
    P([], "00A4040C00", "6700", 0, id="select-ap-case2-no-aid"),
    # --- unknown INS -> 6D00 (CLA 00 and 80)
    *[P([SEL_JPKI], f"00{ins}000000", "6D00", 0, id=f"ins-{ins}")
      for ins in ("CA", "CB", "C0", "22", "2C", "44", "46", "47", "70", "82", "86", "87", "88",
                  "D6", "E2", "FD", "0E", "B1", "A5")],
    P([SEL_JPKI], "00B2000000", "6A86", 0, id="read-record-p1-00"),  # READ RECORD: tests/test_card_common.py
    P([], "80CA9F7F00", "6D00", 0, id="gp-get-cplc"),
    P([], "8050000008" + "00" * 8 + "00", "6D00", 0, id="gp-initialize-update"),
    P([], "80F21000024F0000", "6D00", 0, id="gp-get-status"),
    # --- classes the card does not speak -> 6E00
    P([], "FFCA000000", "6E00", 0, id="cla-FF-pcsc-get-uid"),
    P([SEL_JPKI, sel_ef("000A")], "FFB0000004", "6E00", 0, id="cla-FF-read"),
    P([], "A0A40000023F00", "6E00", 0, id="cla-A0-gsm"),
    P([], "20A4040C0A" + JPKI_AID, "6E00", 0, id="cla-20-rfu"),
    P([], "C0A4040C0A" + JPKI_AID, "6E00", 0, id="cla-C0"),
    P([], "E0A4040C0A" + JPKI_AID, "6E00", 0, id="cla-E0"),
    P([SEL_JPKI, sel_ef("000A")], "B0B0000004", "6E00", 0, id="cla-B0"),
    P([], "80A4040C0A" + JPKI_AID, "6E00", 0, id="cla-80-select"),
    P([SEL_JPKI, sel_ef("000A")], "80B0000004", "6E00", 0, id="cla-80-read"),
    P([SEL_JPKI, sel_ef("0018")], "80200080", "6E00", 0, id="cla-80-verify"),
    P([], "8084000008", "6E00", 0, id="cla-80-get-challenge"),
    P([SEL_JPKI, VERIFY_AUTH], sign_apdu("97", DI, cla="00"), "6E00", 0, id="cla-00-ins-2A"),
    # --- logical channels 1..3 and further-interindustry channels -> 6881
    P([], "01A4040C0A" + JPKI_AID, "6881", 0, id="channel-1-select"),
    P([SEL_JPKI, sel_ef("000A")], "02B0000004", "6881", 0, id="channel-2-read"),
    P([SEL_JPKI, sel_ef("0018")], "03200080", "6881", 0, id="channel-3-verify"),
    P([], "40A4040C0A" + JPKI_AID, "6881", 0, id="channel-4-further-interindustry"),
    P([], "4FA4040C0A" + JPKI_AID, "6881", 0, id="channel-19-further-interindustry"),
    P([], "60A4040C0A" + JPKI_AID, "6881", 0, id="channel-4-further-interindustry-sm"),
    P([SEL_JPKI, VERIFY_AUTH], sign_apdu("97", DI, cla="81"), "6881", 0, id="channel-1-proprietary"),
    P([], "13A4040C0A" + JPKI_AID, "6881", 0, id="channel-3-with-chaining"),
    # --- secure messaging -> 6882 on SELECT, 69FC on READ BINARY / VERIFY
    P([], "0CA4040C0A" + JPKI_AID, "6882", 0, id="sm-0C-select-ap"),
    P([], "04A4040C0A" + JPKI_AID, "6882", 0, id="sm-04-select-ap"),
    P([], "08A4040C0A" + JPKI_AID, "6882", 0, id="sm-08-select-ap"),
    P([SEL_JPKI], "0CA4020C02000A", "6882", 0, id="sm-0C-select-ef"),
    P([SEL_JPKI, sel_ef("000A")], "0CB0000004", "69FC", 0, id="sm-0C-read-binary"),
    P([SEL_JPKI], "0CB08A0004", "69FC", 0, id="sm-0C-read-binary-sfi"),
    P([SEL_JPKI, sel_ef("0018")], "0C20008004" + AUTH_PIN.hex(), "69FC", 0, id="sm-0C-verify"),
    P([SEL_JPKI, sel_ef("0018")], "0C200080", "69FC", 0, id="sm-0C-empty-verify"),
    P([SEL_JPKI], "0C20009B06" + SIGN_PIN.hex(), "69FC", 0, id="sm-0C-verify-sfi"),
    # --- command chaining -> 6884
    P([], "10A4040C0A" + JPKI_AID, "6884", 0, id="chaining-select"),
    P([SEL_JPKI, sel_ef("000A")], "10B0000004", "6884", 0, id="chaining-read"),
    P([SEL_JPKI], "1020009804" + AUTH_PIN.hex(), "6884", 0, id="chaining-verify"),
    P([SEL_JPKI, VERIFY_AUTH], sign_apdu("97", DI, cla="90"), "6884", 0, id="chaining-sign"),
    # --- unknown AIDs (other drivers' probes) -> 6A82
    *[P([], f"00A40400{len(aid) // 2:02X}{aid}00", "6A82", 0, id=f"aid-{name}")
      for name, aid in _PROBE_AIDS.items()],
    *[P([SEL_JPKI], f"00A4040C{len(aid) // 2:02X}{aid}", "6A82", 0, id=f"aid-{name}-p2-0C")
      for name, aid in _PROBE_AIDS.items()],
    # --- files not found
    P([], sel_ef("000A"), "6A82", 0, id="select-ef-before-any-ap"),
    P([], sel_ef("0018"), "6A82", 0, id="select-pin-ef-before-any-ap"),
    *[P([SEL_JPKI], sel_ef(fid), "6A82", 0, id=f"jpki-unknown-fid-{fid}")
      for fid in ("0003", "0004", "0005", "0011", "0014", "00FF", "3F00", "FFFF", "0100", "000C")],
    *[P([SEL_TEXT], sel_ef(fid), "6A82", 0, id=f"text-unknown-fid-{fid}")
      for fid in ("000A", "0018", "0017", "001B", "0004", "0006")],
    P([SEL_JPKI], "00A4020402000A", "6A86", 0, id="select-p2-04-fcp"),
    P([SEL_JPKI], "00A4080C02000A", "6A86", 0, id="select-by-path-p1-08"),
    # --- READ BINARY: current EF, bounds, SFI, protected EFs
    P([], "00B0000004", "6986", 0, id="read-no-ap-no-ef"),
    P([SEL_JPKI], "00B0000004", "6986", 0, id="read-no-current-ef"),
    P([SEL_JPKI, sel_ef("000A"), SEL_JPKI], "00B0000004", "6986", 0, id="read-after-reselect-ap"),
    P([SEL_JPKI, sel_ef("000A")], "00B0080001", "6B00", 0, id="read-at-end"),
    P([SEL_JPKI, sel_ef("000A")], "00B07FFF01", "6B00", 0, id="read-far-past-end"),
    P([SEL_JPKI, sel_ef("000A")], "00B007FF00", "9000", 1, id="read-last-byte"),
    P([SEL_JPKI, sel_ef("0008")], "00B0000300", "6B00", 0, id="read-ef0008-at-end"),
    P([SEL_JPKI, sel_ef("0008")], "00B0000200", "9000", 1, id="read-ef0008-last"),
    P([SEL_JPKI], "00B08A0004", "9000", 4, id="sfi-000A"),
    P([SEL_JPKI], "00B08B0004", "9000", 4, id="sfi-000B"),
    P([SEL_JPKI], "00B0820004", "9000", 4, id="sfi-0002"),
    P([SEL_JPKI], "00B0860000", "9000", 160, id="sfi-0006-token-info"),
    P([SEL_JPKI], "00B0880000", "9000", 3, id="sfi-0008"),
    P([SEL_JPKI], "00B08A1000", "9000", 256, id="sfi-offset-16"),
    P([SEL_JPKI], "00B0880301", "6B00", 0, id="sfi-offset-at-end"),
    P([SEL_JPKI], "00B0830004", "6A82", 0, id="sfi-unknown"),
    P([SEL_JPKI], "00B09F0004", "6A82", 0, id="sfi-1F-unknown"),
    P([], "00B08A0004", "6A82", 0, id="sfi-no-ap"),
    P([SEL_JPKI], "00B0C10000", "6A86", 0, id="sfi-p1-bits-0x40"),
    P([SEL_JPKI], "00B0A10000", "6A86", 0, id="sfi-p1-bits-0x20"),
    P([SEL_JPKI], "00B0810004", "6982", 0, id="sfi-sign-cert-no-password"),
    P([SEL_JPKI, sel_ef("0001")], "00B0000004", "6982", 0, id="sign-cert-no-password"),
    P([SEL_JPKI, VERIFY_AUTH, sel_ef("0001")], "00B0000004", "6982", 0, id="sign-cert-auth-pin-only"),
    P([SEL_JPKI, VERIFY_SIGN, sel_ef("0001")], "00B0000004", "9000", 4, id="sign-cert-after-password"),
    P([SEL_JPKI, VERIFY_SIGN], "00B0810004", "9000", 4, id="sfi-sign-cert-after-password"),
    *[P([SEL_JPKI, sel_ef(fid)], "00B0000000", "6982", 0, id=f"read-secret-ef-{fid}")
      for fid in ("0017", "0018", "001A", "001B")],
    *[P([SEL_JPKI], f"00B0{0x80 | int(fid, 16):02X}0000", "6982", 0, id=f"sfi-secret-ef-{fid}")
      for fid in ("0017", "0018", "001A", "001B")],
    *[P([SEL_JPKI, VERIFY_AUTH, VERIFY_SIGN, sel_ef(fid)], "00B0000000", "6982", 0,
        id=f"read-secret-ef-{fid}-all-verified") for fid in ("0017", "0018", "001A", "001B")],
    *[P([SEL_TEXT, sel_ef(fid)], "00B0000000", "6982", 0, id=f"read-text-pin-ef-{fid}")
      for fid in ("0011", "0014", "0015")],
    *[P([SEL_TEXT], f"00B0{0x80 | fid:02X}0000", "6982", 0, id=f"text-no-pin-sfi-{fid:02X}")
      for fid in (0x01, 0x02, 0x03)],
    P([SEL_TEXT], "00B0850000", "9000", None, id="text-ef0005-free"),
    # --- VERIFY forms
    P([SEL_JPKI], "00200098", "63C3", 0, id="verify-empty-sfi-98"),
    P([SEL_JPKI], "0020009B", "63C5", 0, id="verify-empty-sfi-9B"),
    P([SEL_JPKI, sel_ef("001B")], "00200080", "63C5", 0, id="verify-empty-current-001B"),
    P([SEL_TEXT], "00200091", "63C3", 0, id="verify-empty-text-0011"),
    P([SEL_TEXT], "00200094", "63C3", 0, id="verify-empty-text-0014"),
    P([SEL_TEXT], "00200095", "63C3", 0, id="verify-empty-text-0015"),
    P([SEL_JPKI, VERIFY_AUTH], "00200098", "63C3", 0, id="verify-empty-after-success"),
    P([SEL_JPKI, VERIFY_SIGN], "0020009B", "63C5", 0, id="verify-empty-sign-after-success"),
    P([SEL_JPKI, sel_ef("0018")], "002000800431323334", "9000", 0, id="verify-current-ef"),
    P([SEL_JPKI], VERIFY_SIGN, "9000", 0, id="verify-sign-sfi"),
    P([SEL_JPKI], "002000980430303030", "63C2", 0, id="verify-wrong-auth"),
    P([SEL_JPKI], "0020009B06" + b"ABC124".hex(), "63C4", 0, id="verify-wrong-sign"),
    P([SEL_JPKI], "0020009B06" + b"abc123".hex(), "63C4", 0, id="verify-sign-lowercase-is-wrong"),
    P([SEL_JPKI], "0020009803313233", "63C2", 0, id="verify-auth-too-short-is-wrong"),
    P([SEL_JPKI], "00200198" + "04" + AUTH_PIN.hex(), "6A86", 0, id="verify-p1-01"),
    P([SEL_JPKI], "00208098" + "04" + AUTH_PIN.hex(), "6A86", 0, id="verify-p1-80"),
    P([SEL_JPKI], "00200198", "6A86", 0, id="verify-empty-p1-01"),
    P([SEL_JPKI], "00200018" + "04" + AUTH_PIN.hex(), "6A86", 0, id="verify-p2-without-80"),
    P([SEL_JPKI], "002000D8" + "04" + AUTH_PIN.hex(), "6A86", 0, id="verify-p2-bits-0x40"),
    P([SEL_JPKI], "00200081", "6A88", 0, id="verify-sfi-of-binary-ef"),
    P([SEL_JPKI], "00200097", "6A88", 0, id="verify-sfi-of-key-ef"),
    P([SEL_JPKI], "00200091", "6A88", 0, id="verify-text-pin-in-jpki"),
    P([SEL_TEXT], "00200098", "6A88", 0, id="verify-jpki-pin-in-text"),
    P([], "00200098", "6A88", 0, id="verify-sfi-no-ap"),
    P([SEL_JPKI], "00200080", "6986", 0, id="verify-no-current-ef"),
    P([SEL_JPKI, sel_ef("000A")], "00200080", "6981", 0, id="verify-current-ef-binary"),
    P([SEL_JPKI, sel_ef("0018")], "00200080" + "04" + AUTH_PIN.hex() + "00", "6700", 0,
      id="verify-with-le"),
    # --- CHANGE REFERENCE DATA
    P([SEL_JPKI, sel_ef("0018")], "0024018004" + b"5678".hex(), "6982", 0, id="change-without-verify"),
    P([SEL_JPKI, sel_ef("0018"), "002000800431323334"], "0024018004" + b"5678".hex(), "9000", 0,
      id="change-after-verify"),
    P([SEL_JPKI, VERIFY_AUTH], "0024019804" + b"5678".hex(), "9000", 0, id="change-sfi"),
    P([SEL_JPKI, VERIFY_SIGN], "0024019B06" + b"XYZ789".hex(), "9000", 0, id="change-sign-6"),
    P([SEL_JPKI, VERIFY_SIGN], "0024019B10" + b"ABCDEFGHIJ123456".hex(), "9000", 0,
      id="change-sign-16"),
    P([SEL_JPKI, VERIFY_AUTH], "0024019805" + b"56789".hex(), "6A80", 0, id="change-auth-5-digits"),
    P([SEL_JPKI, VERIFY_AUTH], "0024019803" + b"567".hex(), "6A80", 0, id="change-auth-3-digits"),
    P([SEL_JPKI, VERIFY_AUTH], "0024019804" + b"56A8".hex(), "6A80", 0, id="change-auth-letter"),
    P([SEL_JPKI, VERIFY_SIGN], "0024019B06" + b"xyz789".hex(), "6A80", 0, id="change-sign-lowercase"),
    P([SEL_JPKI, VERIFY_SIGN], "0024019B05" + b"XYZ78".hex(), "6A80", 0, id="change-sign-5"),
    P([SEL_JPKI, VERIFY_SIGN], "0024019B11" + b"ABCDEFGHIJ1234567".hex(), "6A80", 0,
      id="change-sign-17"),
    P([SEL_JPKI, VERIFY_SIGN], "0024019B06" + b"XYZ 89".hex(), "6A80", 0, id="change-sign-space"),
    P([SEL_JPKI, VERIFY_AUTH], "0024009804" + b"5678".hex(), "6A86", 0, id="change-p1-00"),
    P([SEL_JPKI, VERIFY_AUTH], "00240198", "6700", 0, id="change-no-data"),
    P([SEL_JPKI, VERIFY_AUTH], "0024019804" + b"5678".hex() + "00", "6700", 0, id="change-with-le"),
    P([SEL_JPKI, VERIFY_AUTH], "0024019B06" + b"XYZ789".hex(), "6982", 0, id="change-other-pin"),
    # --- COMPUTE DIGITAL SIGNATURE
    P([SEL_JPKI, sel_ef("0017")], sign_apdu("80", DI), "6982", 0, id="sign-auth-no-pin"),
    P([SEL_JPKI, VERIFY_AUTH, sel_ef("0017")], sign_apdu("80", DI), "9000", 256, id="sign-auth-0017"),
    P([SEL_JPKI, sel_ef("001A")], sign_apdu("80", DI), "6982", 0, id="sign-sign-no-pin"),
    P([SEL_JPKI, VERIFY_SIGN, sel_ef("001A")], sign_apdu("80", DI), "9000", 256, id="sign-sign-001A"),
    P([SEL_JPKI, VERIFY_AUTH], sign_apdu("97", DI), "9000", 256, id="sign-p2-97"),
    P([SEL_JPKI, VERIFY_SIGN], sign_apdu("9A", DI), "9000", 256, id="sign-p2-9A"),
    P([SEL_JPKI, VERIFY_AUTH], sign_apdu("9A", DI), "6982", 0, id="sign-9A-with-auth-pin"),
    P([SEL_JPKI, VERIFY_SIGN], sign_apdu("97", DI), "6982", 0, id="sign-97-with-sign-pin"),
    P([SEL_JPKI, VERIFY_AUTH, sel_ef("001A")], sign_apdu("80", DI), "6982", 0,
      id="sign-001A-with-auth-pin"),
    *[P([SEL_JPKI, VERIFY_AUTH], sign_apdu("97", DI, p1=p1), "6A86", 0, id=f"sign-p1-{p1}")
      for p1 in ("01", "02", "05", "80", "FF")],
    P([SEL_JPKI, VERIFY_AUTH], "802A0097", "6700", 0, id="sign-case1-no-data"),
    P([SEL_JPKI, VERIFY_AUTH], "802A009700", "6700", 0, id="sign-case2-no-data"),
    P([SEL_JPKI, VERIFY_AUTH], sign_apdu("97", "AB" * 246), "6700", 0, id="sign-246-bytes"),
    P([SEL_JPKI, VERIFY_AUTH], sign_apdu("97", "AB" * 255), "6700", 0, id="sign-255-bytes"),
    P([SEL_JPKI, VERIFY_AUTH], "802A00970000F6" + "AB" * 246 + "0000", "6700", 0,
      id="sign-246-bytes-extended"),
    P([SEL_JPKI, VERIFY_AUTH], "802A0097000100" + "AB" * 256 + "0000", "6700", 0,
      id="sign-256-bytes-extended"),
    P([SEL_JPKI, VERIFY_AUTH], sign_apdu("97", "AB" * 245), "9000", 256, id="sign-245-bytes"),
    P([SEL_JPKI, VERIFY_AUTH], sign_apdu("97", "AB"), "9000", 256, id="sign-1-byte"),
    P([SEL_JPKI, VERIFY_AUTH], sign_apdu("97", "00"), "9000", 256, id="sign-1-zero-byte"),
    P([SEL_JPKI, VERIFY_AUTH, sel_ef("000A")], sign_apdu("80", DI), "6981", 0, id="sign-current-ef-binary"),
    P([SEL_JPKI, VERIFY_AUTH, sel_ef("0018")], sign_apdu("80", DI), "6981", 0, id="sign-current-ef-pin"),
    P([SEL_JPKI, VERIFY_AUTH], sign_apdu("80", DI), "6986", 0, id="sign-no-current-ef"),
    P([SEL_JPKI, VERIFY_AUTH], sign_apdu("98", DI), "6A88", 0, id="sign-sfi-of-pin-ef"),
    P([SEL_JPKI, VERIFY_AUTH], sign_apdu("8A", DI), "6A88", 0, id="sign-sfi-of-cert-ef"),
    P([SEL_JPKI, VERIFY_AUTH], sign_apdu("17", DI), "6A86", 0, id="sign-p2-without-80"),
    P([SEL_TEXT, VERIFY_CARD], sign_apdu("97", DI), "6A88", 0, id="sign-in-text-ap"),
    # --- GET CHALLENGE
    P([], "0084000001", "9000", 1, id="challenge-1"),
    P([], "0084000000", "9000", 256, id="challenge-le00-256"),
    P([], "00840000000100", "9000", 256, id="challenge-ext-0100"),
    P([], "00840000000020", "9000", 32, id="challenge-ext-0020"),
    P([], "00840000000101", "6700", 0, id="challenge-ext-257"),
    P([], "00840000000000", "6700", 0, id="challenge-ext-65536"),
    P([], "00840000", "6700", 0, id="challenge-case1"),
    P([], "008400000108", "6700", 0, id="challenge-with-data"),
    P([], "0084000100", "6A86", 0, id="challenge-p2-01"),
    P([], "0084010000", "6A86", 0, id="challenge-p1-01"),
]


@pytest.mark.parametrize("setup, apdu, expected_sw, data_len", TABLE)
def test_apdu_table(emu_card, setup, apdu, expected_sw, data_len):
    ok(emu_card, *setup)
    r = tx(emu_card, apdu)
    assert sw(r) == expected_sw, f"{apdu} -> {r.hex().upper()}"
    if expected_sw != "9000":
        assert len(r) == 2, "an error status carries no data"
    elif data_len is not None:
        assert len(r) - 2 == data_len


def test_table_ids_are_unique():
    ids = [p.id for p in TABLE]
    assert len(ids) == len(set(ids))


# ============================================================================= parsing effects
def test_extended_select_really_selects(emu_card, home):
    certs = reference_certs(home)
    ok(emu_card, "00A4040C00000A" + JPKI_AID + "0000", "00A4020C000002000A0000")
    assert ok(emu_card, "00B00000000100")[0] == certs["auth"][:256]


def test_case4S_lc_is_not_taken_for_le(emu_card):
    """`00 A4 02 0C 02 00 0A 00`: the trailing 00 is Le, the FID is 000A (not 0A00)."""
    ok(emu_card, SEL_JPKI, sel_ef("000A") + "00")
    assert ok(emu_card, "00B0000004")[0][:2] == b"\x30\x82"


def test_bytearray_and_memoryview_are_accepted(emu_card):
    assert emu_card.transmit(bytearray(h(SEL_JPKI))) == h("9000")
    assert emu_card.transmit(memoryview(h(sel_ef("0008")))) == h("9000")
    assert emu_card.transmit(h("00B0000000")) == h("8F8F00 9000")


def test_atr_is_the_openSC_jpki_atr(emu_card):
    assert emu_card.atr == h("3B E0 00 FF 81 31 FE 45 14")


# ============================================================================= file contents
def test_certificate_efs_hold_der_plus_filler(emu_card, home, card_dir):
    certs = reference_certs(home)
    keys = load_keys(card_dir)
    ok(emu_card, SEL_JPKI, VERIFY_SIGN)
    for fid, name in (("000A", "auth"), ("000B", "auth_ca"), ("0001", "sign"), ("0002", "sign_ca")):
        ok(emu_card, sel_ef(fid))
        ef = read_ef(emu_card)
        der = certs[name]
        assert len(ef) >= len(der) and len(ef) >= 2048 and len(ef) % 256 == 0
        assert ef[:len(der)] == der
        assert set(ef[len(der):]) == {0xFF}
        header = ok(emu_card, "00B0000004")[0]
        assert 4 + int.from_bytes(header[2:], "big") == len(der)
    for fid, name in (("000A", "auth"), ("0001", "sign")):
        cert = x509.load_der_x509_certificate(read_certificate(emu_card, fid))
        assert cert.public_key().public_numbers() == keys[name].public_key().public_numbers()


def test_openSC_reads_7_byte_header_like_myna(emu_card, home):
    ok(emu_card, SEL_JPKI, sel_ef("000B"))
    assert ok(emu_card, "00B0000007")[0] == reference_certs(home)["auth_ca"][:7]


def test_sfi_read_makes_the_ef_current(emu_card, home):
    certs = reference_certs(home)
    ok(emu_card, SEL_JPKI)
    assert ok(emu_card, "00B08A0004")[0] == certs["auth"][:4]
    assert ok(emu_card, "00B0000408")[0] == certs["auth"][4:12]
    assert ok(emu_card, "00B08B1004")[0] == certs["auth_ca"][16:20]


def test_read_binary_offsets(emu_card, home):
    der = reference_certs(home)["auth"]
    ok(emu_card, SEL_JPKI, sel_ef("000A"))
    for off in (0, 1, 0xFF, 0x100, 0x3FF, len(der) - 3):
        assert ok(emu_card, f"00B0{off:04X}03")[0] == der[off:off + 3]


def test_token_info_and_ef0008(emu_card):
    ok(emu_card, SEL_JPKI, sel_ef("0006"))
    info = ok(emu_card, "00B0000000")[0]
    assert len(info) == 160
    assert info[:32] == b"JPKIAPICCTOKEN2".ljust(32, b" ")
    ok(emu_card, sel_ef("0008"))
    assert ok(emu_card, "00B0000000")[0] == h("8F8F00")


def test_sign_cert_locked_until_signature_password(emu_card, home):
    der = reference_certs(home)["sign"]
    ok(emu_card, SEL_JPKI, sel_ef("0001"))
    assert sw(tx(emu_card, "00B0000004")) == "6982"
    assert sw(tx(emu_card, "0020009B06" + b"WRONG1".hex())) == "63C4"
    assert sw(tx(emu_card, "00B0000004")) == "6982"
    ok(emu_card, VERIFY_AUTH)
    assert sw(tx(emu_card, "00B0000004")) == "6982"
    ok(emu_card, VERIFY_SIGN)
    assert ok(emu_card, "00B0000004")[0] == der[:4]
    ok(emu_card, SEL_JPKI, sel_ef("0001"))  # logout: re-select the AP
    assert sw(tx(emu_card, "00B0000004")) == "6982"


# ============================================================================= VERIFY sequences
@pytest.mark.parametrize("p2, good, bad, tries", [
    ("98", AUTH_PIN, b"9999", 3),
    ("9B", SIGN_PIN, b"ZZZ999", 5),
])
def test_verify_counts_down_blocks_then_6984(emu_card, p2, good, bad, tries):
    ok(emu_card, SEL_JPKI)
    empty = "002000" + p2
    wrong = f"002000{p2}{len(bad):02X}{bad.hex()}"
    right = f"002000{p2}{len(good):02X}{good.hex()}"
    assert sw(tx(emu_card, empty)) == f"63C{tries:X}"
    for left in range(tries - 1, -1, -1):
        assert sw(tx(emu_card, wrong)) == f"63C{left:X}"
        assert sw(tx(emu_card, empty)) == f"63C{left:X}"
    assert sw(tx(emu_card, right)) == "6984"
    assert sw(tx(emu_card, wrong)) == "6984"
    assert sw(tx(emu_card, empty)) == "63C0"  # the default blocked_query_sw
    ok(emu_card, SEL_JPKI)  # re-selecting does not unblock
    assert sw(tx(emu_card, right)) == "6984"
    assert sw(tx(emu_card, empty)) == "63C0"


def test_blocked_pin_with_empty_verify_via_current_ef(emu_card):
    ok(emu_card, SEL_JPKI, sel_ef("0018"))
    for left in "210":
        assert sw(tx(emu_card, "002000800430303030")) == f"63C{left}"
    assert sw(tx(emu_card, "00200080")) == "63C0"
    assert sw(tx(emu_card, "002000800431323334")) == "6984"


def test_blocked_query_sw_profile(home, tmp_path):
    card = make_card(home, tmp_path / "card", CardProfile(blocked_query_sw=0x6983))
    ok(card, SEL_JPKI)
    for left in "210":
        assert sw(tx(card, "002000980430303030")) == f"63C{left}"
    assert sw(tx(card, "00200098")) == "6983"
    assert sw(tx(card, VERIFY_AUTH)) == "6984"


def test_successful_verify_resets_counter_and_empty_verify_never_says_9000(emu_card):
    ok(emu_card, SEL_JPKI)
    assert sw(tx(emu_card, "002000980430303030")) == "63C2"
    assert sw(tx(emu_card, "002000980430303030")) == "63C1"
    ok(emu_card, VERIFY_AUTH)
    assert sw(tx(emu_card, "00200098")) == "63C3"
    ok(emu_card, VERIFY_AUTH)
    assert sw(tx(emu_card, "00200098")) == "63C3"


def test_rejected_verify_forms_spend_no_try(emu_card):
    ok(emu_card, SEL_JPKI, sel_ef("0018"))
    for apdu in ("0C20008004" + "30303030",  # SM
                 "1020008004" + "30303030",  # chaining
                 "01200080" + "04" + "30303030",  # channel 1
                 "00200180" + "04" + "30303030",  # P1
                 "002000800430303030" + "00",  # Le
                 "8020008004" + "30303030"):  # CLA 80
        assert not sw(tx(emu_card, apdu)).startswith("63"), apdu
    assert sw(tx(emu_card, "00200080")) == "63C3"


def test_wrong_verify_after_success_drops_the_verified_state(emu_card):
    ok(emu_card, SEL_JPKI, VERIFY_AUTH)
    ok(emu_card, sign_apdu("97", DI))
    assert sw(tx(emu_card, "002000980430303030")) == "63C2"
    assert sw(tx(emu_card, sign_apdu("97", DI))) == "6982"


def test_empty_verify_does_not_log_in(emu_card):
    ok(emu_card, SEL_JPKI)
    assert sw(tx(emu_card, "0020009B")) == "63C5"
    assert sw(tx(emu_card, sign_apdu("9A", DI))) == "6982"
    assert sw(tx(emu_card, "00B0810004")) == "6982"


# ============================================================================= CHANGE REFERENCE DATA
def test_change_pin_new_works_old_fails(emu_card, card_dir):
    ok(emu_card, SEL_JPKI, sel_ef("0018"))
    assert sw(tx(emu_card, "0024018004" + b"5678".hex())) == "6982"
    ok(emu_card, "002000800431323334", "0024018004" + b"5678".hex())
    ok(emu_card, SEL_JPKI)
    assert sw(tx(emu_card, VERIFY_AUTH)) == "63C2"
    ok(emu_card, "0020009804" + b"5678".hex())
    assert sw(tx(emu_card, "00200098")) == "63C3"
    reopened = MyNumberCard.open(card_dir)
    ok(reopened, SEL_JPKI, "0020009804" + b"5678".hex())


def test_change_sign_password(emu_card):
    ok(emu_card, SEL_JPKI, VERIFY_SIGN, "0024019B08" + b"NEWPASS9".hex())
    ok(emu_card, SEL_JPKI)
    assert sw(tx(emu_card, VERIFY_SIGN)) == "63C4"
    assert sw(tx(emu_card, "0020009B08" + b"newpass9".hex())) == "63C3"
    ok(emu_card, "0020009B08" + b"NEWPASS9".hex(), sign_apdu("9A", DI))


def test_change_on_blocked_pin_is_refused(emu_card):
    ok(emu_card, SEL_JPKI, VERIFY_AUTH)
    for left in "210":
        assert sw(tx(emu_card, "002000980430303030")) == f"63C{left}"
    assert sw(tx(emu_card, "0024019804" + b"5678".hex())) in ("6984", "6982")
    assert sw(tx(emu_card, "00200098")) == "63C0"


def test_change_with_bad_format_keeps_old_pin(emu_card):
    ok(emu_card, SEL_JPKI, VERIFY_AUTH)
    assert sw(tx(emu_card, "0024019805" + b"12345".hex())) == "6A80"
    ok(emu_card, SEL_JPKI, VERIFY_AUTH)


# ============================================================================= signatures
def _public(card_dir: Path, key: str):
    return load_keys(card_dir)[key].public_key()


@pytest.mark.parametrize("hash_name", ["sha1", "sha224", "sha256", "sha384", "sha512"])
@pytest.mark.parametrize("key, p2, verify", [("auth", "97", VERIFY_AUTH), ("sign", "9A", VERIFY_SIGN)])
def test_digestinfo_signatures_verify_with_certificate_key(emu_card, hash_name, key, p2, verify):
    message = b"jpki test message " + hash_name.encode()
    ok(emu_card, SEL_JPKI, verify)
    cert = x509.load_der_x509_certificate(read_certificate(emu_card, "000A" if key == "auth" else "0001"))
    sig = ok(emu_card, sign_apdu(p2, digest_info(hash_name, message)))[0]
    assert len(sig) == 256
    digest = hashlib.new(hash_name, message).digest()
    cert.public_key().verify(sig, digest, padding.PKCS1v15(), utils.Prehashed(HASHES[hash_name]))
    cert.public_key().verify(sig, message, padding.PKCS1v15(), HASHES[hash_name])


@pytest.mark.parametrize("length", [1, 2, 20, 32, 36, 100, 244, 245])
@pytest.mark.parametrize("key, p2, verify", [("auth", "97", VERIFY_AUTH), ("sign", "9A", VERIFY_SIGN)])
def test_raw_input_gets_type1_padding(emu_card, card_dir, length, key, p2, verify):
    data = bytes((7 * i + length) % 256 for i in range(length))
    ok(emu_card, SEL_JPKI, verify)
    sig = ok(emu_card, sign_apdu(p2, data))[0]
    nums = _public(card_dir, key).public_numbers()
    assert len(sig) == 256
    assert pow(int.from_bytes(sig, "big"), nums.e, nums.n) == pkcs1_type1(data)


def test_the_card_does_not_check_the_hash_in_a_digestinfo(emu_card, card_dir):
    """A SHA-256 DigestInfo with a 20-byte digest is still just bytes to pad and sign."""
    data = DIGEST_INFO_PREFIX["sha256"] + bytes(20)
    ok(emu_card, SEL_JPKI, VERIFY_AUTH)
    sig = ok(emu_card, sign_apdu("97", data))[0]
    nums = _public(card_dir, "auth").public_numbers()
    assert pow(int.from_bytes(sig, "big"), nums.e, nums.n) == pkcs1_type1(data)


def test_signature_is_deterministic_and_key_specific(emu_card):
    ok(emu_card, SEL_JPKI, VERIFY_AUTH, VERIFY_SIGN)
    a1 = ok(emu_card, sign_apdu("97", DI))[0]
    a2 = ok(emu_card, sign_apdu("97", DI))[0]
    s1 = ok(emu_card, sign_apdu("9A", DI))[0]
    assert a1 == a2 and a1 != s1


def test_several_signatures_per_verify_by_default(emu_card):
    ok(emu_card, SEL_JPKI, VERIFY_SIGN, sel_ef("001A"))
    for _ in range(3):
        ok(emu_card, sign_apdu("80", DI))
    ok(emu_card, SEL_JPKI, sel_ef("001A"))
    assert sw(tx(emu_card, sign_apdu("80", DI))) == "6982"


def test_one_signature_per_verify_profile(home, tmp_path):
    card = make_card(home, tmp_path / "card", CardProfile(one_signature_per_verify=True))
    ok(card, SEL_JPKI, VERIFY_SIGN, sel_ef("001A"))
    ok(card, sign_apdu("80", DI))
    assert sw(tx(card, sign_apdu("80", DI))) == "6982"
    assert sw(tx(card, sign_apdu("9A", DI))) == "6982"
    ok(card, VERIFY_SIGN, sign_apdu("9A", DI))
    assert sw(tx(card, sign_apdu("9A", DI))) == "6982"
    # the user-authentication key is not limited
    ok(card, VERIFY_AUTH, sign_apdu("97", DI), sign_apdu("97", DI), sign_apdu("97", DI))


@pytest.mark.parametrize("kind, label", [("juki", b"JPKIAPICCTOKEN"), ("smartphone", b"JPKIAPGPSETOKEN")])
def test_token_kind_profile(home, tmp_path, kind, label):
    card = make_card(home, tmp_path / "card", CardProfile(token_kind=kind))
    ok(card, SEL_JPKI)
    info = ok(card, "00B0860000")[0]
    assert len(info) == 160 and info[:32] == label.ljust(32, b" ")


def test_short_read_sw_profile(home, tmp_path):
    card = make_card(home, tmp_path / "card", CardProfile(short_read_sw=0x6282))
    ok(card, SEL_JPKI, sel_ef("0008"))
    assert tx(card, "00B0000000") == h("8F8F00 6282")
    assert tx(card, "00B0000003") == h("8F8F00 9000")


# ============================================================================= GET CHALLENGE
def test_get_challenge_is_random(emu_card):
    values = {ok(emu_card, "0084000010")[0] for _ in range(8)}
    assert len(values) == 8
    assert all(len(v) == 16 for v in values)


# ============================================================================= 券面事項入力補助AP
def test_my_number_ef_opened_by_card_pin(emu_card, home):
    my_number = holder(home)["persona"]["my_number"]
    ok(emu_card, SEL_TEXT, sel_ef("0001"))
    assert sw(tx(emu_card, "00B0000000")) == "6982"
    ok(emu_card, VERIFY_CARD)
    ef = ok(emu_card, "00B0000000")[0]
    assert ef == b"\xff\x10\x0c" + my_number.encode("ascii") + b"\xff\xff"
    assert len(ef) == 17
    assert sw(tx(emu_card, "00B0001100")) == "6B00"


def test_my_number_ef_opened_by_verification_number_a(emu_card, home):
    my_number = holder(home)["persona"]["my_number"].encode()
    ok(emu_card, SEL_TEXT)
    ok(emu_card, "002000940C" + my_number.hex())
    assert ok(emu_card, "00B0810000")[0] == b"\xff\x10\x0c" + my_number + b"\xff\xff"
    assert sw(tx(emu_card, "00B0820000")) == "6982", "照合番号A must not open the basic 4 info"


def test_jpki_auth_pin_does_not_open_text_ap(emu_card):
    ok(emu_card, SEL_JPKI, VERIFY_AUTH, SEL_TEXT)
    assert sw(tx(emu_card, "00B0810000")) == "6982"


def _parse_tlv(buf: bytes, pos: int) -> tuple[bytes, bytes, int]:
    """(tag, value, next position) for 1- or 2-byte tags and 1-byte / 81 / 82 lengths."""
    tag_len = 2 if buf[pos] & 0x1F == 0x1F else 1
    tag = buf[pos:pos + tag_len]
    pos += tag_len
    n = buf[pos]
    pos += 1
    if n == 0x81:
        n, pos = buf[pos], pos + 1
    elif n == 0x82:
        n, pos = int.from_bytes(buf[pos:pos + 2], "big"), pos + 2
    else:
        assert n < 0x80
    return tag, buf[pos:pos + n], pos + n


def _check_basic4(ef: bytes, home: Path) -> None:
    p = holder(home)["persona"]
    tag, value, end = _parse_tlv(ef, 0)
    assert tag == b"\xff\x20"
    assert set(ef[end:]) <= {0xFF}
    header = end - len(value)
    tag, offsets, pos = _parse_tlv(ef, header)
    assert tag == b"\xdf\x21" and len(offsets) == 8
    expected = [(b"\xdf\x22", p["name"].encode()), (b"\xdf\x23", p["address"].encode()),
                (b"\xdf\x24", p["birth_date"].replace("-", "").encode()), (b"\xdf\x25", b"2")]
    for i, (want_tag, want_value) in enumerate(expected):
        assert int.from_bytes(offsets[2 * i:2 * i + 2], "big") == pos, "absolute offset of the tag"
        tag, value, pos = _parse_tlv(ef, pos)
        assert tag == want_tag and value == want_value
    assert pos == end
    assert "\u3000" in p["name"]


def test_basic4_ef_opened_by_card_pin(emu_card, home):
    ok(emu_card, SEL_TEXT, sel_ef("0002"))
    assert sw(tx(emu_card, "00B0000000")) == "6982"
    ok(emu_card, VERIFY_CARD)
    _check_basic4(read_ef(emu_card), home)


def test_basic4_ef_opened_by_verification_number_b(emu_card, home):
    b = verification_b(home).encode()
    assert len(b) == 14 and b[:2] == b"02"  # alice, born 1990 = Heisei 2
    ok(emu_card, SEL_TEXT, "002000950E" + b.hex(), sel_ef("0002"))
    _check_basic4(read_ef(emu_card), home)
    assert sw(tx(emu_card, "00B0810000")) == "6982", "照合番号B must not open the My Number"


def test_verification_number_b_uses_the_era_year(emu_card, home):
    gregorian = verification_b(home, era=False).encode()
    assert gregorian[:2] == b"90"
    ok(emu_card, SEL_TEXT)
    assert sw(tx(emu_card, "002000950E" + gregorian.hex())) == "63C2"
    assert sw(tx(emu_card, "00B0820000")) == "6982"


def test_verification_numbers_do_not_cross(emu_card, home):
    my_number = holder(home)["persona"]["my_number"].encode()
    b = verification_b(home).encode()
    ok(emu_card, SEL_TEXT)
    assert sw(tx(emu_card, "002000950C" + my_number.hex())) == "63C2"  # A given to B
    assert sw(tx(emu_card, "002000940E" + b.hex())) == "63C2"  # B given to A
    assert sw(tx(emu_card, "0020009104" + b"0000".hex())) == "63C2"
    for ef in ("81", "82", "83"):
        assert sw(tx(emu_card, f"00B0{ef}0000")) == "6982"


def test_integrity_record(emu_card, home):
    my_number = holder(home)["persona"]["my_number"].encode()
    ok(emu_card, SEL_TEXT, VERIFY_CARD, sel_ef("0002"))
    basic4 = read_ef(emu_card)
    _, b4_value, _ = _parse_tlv(basic4, 0)
    ok(emu_card, sel_ef("0003"))
    record = read_ef(emu_card)
    tag, body, _ = _parse_tlv(record, 0)
    assert tag == b"\xff\x30"
    t1, v1, pos = _parse_tlv(body, 0)
    t2, v2, pos = _parse_tlv(body, pos)
    t3, v3, pos = _parse_tlv(body, pos)
    assert (t1, t2, t3) == (b"\xdf\x31", b"\xdf\x32", b"\xdf\x33")
    assert v1 == hashlib.sha256(b"\xff\x10\x0c" + my_number + b"\xff\xff").digest()
    assert v2 == hashlib.sha256(b4_value).digest()
    assert len(v3) == 256


def test_ap_basic_info_is_free(emu_card):
    ok(emu_card, SEL_TEXT, sel_ef("0005"))
    info = ok(emu_card, "00B0000000")[0]
    tag, body, _ = _parse_tlv(info, 0)
    assert tag == b"\xff\x40"
    t1, v1, pos = _parse_tlv(body, 0)
    t2, v2, pos = _parse_tlv(body, pos)
    assert (t1, len(v1), t2, len(v2)) == (b"\xdf\x41", 4, b"\xdf\x42", 16)
    assert body[pos:pos + 2] == b"\xdf\x43"


def test_surface_ap_has_verification_numbers(emu_card, home):
    my_number = holder(home)["persona"]["my_number"].encode()
    ok(emu_card, SEL_SURFACE)
    assert sw(tx(emu_card, "00200093")) == "63C3"
    assert sw(tx(emu_card, "00200092")) == "63C3"
    ok(emu_card, "002000930C" + my_number.hex(), sel_ef("0002"))
    assert ok(emu_card, "00B0000002")[0] == b"\xff\x20"


# ============================================================================= security state lifetime
@pytest.mark.parametrize("ap", sorted(ALL_AIDS))
def test_selecting_any_ap_clears_every_pin(emu_card, home, ap):
    my_number = holder(home)["persona"]["my_number"].encode()
    ok(emu_card, SEL_JPKI, VERIFY_AUTH, VERIFY_SIGN, "00B0810004", sign_apdu("97", DI))
    ok(emu_card, "00A4040C0A" + ALL_AIDS[ap])
    ok(emu_card, SEL_JPKI)
    assert sw(tx(emu_card, "00B0810004")) == "6982"
    assert sw(tx(emu_card, sign_apdu("97", DI))) == "6982"
    assert sw(tx(emu_card, sign_apdu("9A", DI))) == "6982"
    ok(emu_card, SEL_TEXT, VERIFY_CARD, "002000940C" + my_number.hex(), "00B0810000")
    ok(emu_card, "00A4040C0A" + ALL_AIDS[ap])
    ok(emu_card, SEL_TEXT)
    assert sw(tx(emu_card, "00B0810000")) == "6982"
    assert sw(tx(emu_card, "00B0820000")) == "6982"


@pytest.mark.parametrize("event", ["reset", "power_off", "power_on", "close"])
def test_reset_and_power_cycle_clear_state(emu_card, event):
    ok(emu_card, SEL_JPKI, VERIFY_AUTH, VERIFY_SIGN, sel_ef("000A"))
    getattr(emu_card, event)()
    if event == "power_off":
        emu_card.power_on()
    assert sw(tx(emu_card, "00B0000004")) == "6986"  # no current AP/EF any more
    assert sw(tx(emu_card, sel_ef("000A"))) == "6A82"
    ok(emu_card, SEL_JPKI)
    assert sw(tx(emu_card, "00B0810004")) == "6982"
    assert sw(tx(emu_card, sign_apdu("97", DI))) == "6982"
    assert sw(tx(emu_card, sign_apdu("9A", DI))) == "6982"


def test_selecting_an_ef_keeps_the_login(emu_card):
    ok(emu_card, SEL_JPKI, VERIFY_AUTH, sel_ef("000A"), sel_ef("0018"), sel_ef("0017"))
    ok(emu_card, sign_apdu("80", DI))


# ============================================================================= robustness (hypothesis)
@pytest.fixture(scope="module")
def fuzz_card(template_home, tmp_path_factory):
    """A card of its own (the fuzzer spends and changes PINs), opened once for all examples."""
    dest = tmp_path_factory.mktemp("fuzz") / "home"
    shutil.copytree(template_home, dest)
    card_dir = dest / "cards" / "alice"
    card = MyNumberCard.open(card_dir)
    card.power_on()
    yield card, _secret_chunks(card_dir)
    card.close()


def _secret_chunks(card_dir: Path) -> list[bytes]:
    """32-byte windows (every 16 bytes) of each private value, big- and little-endian."""
    chunks = []
    for key in load_keys(card_dir).values():
        priv = key.private_numbers()
        for value in (priv.d, priv.p, priv.q, priv.dmp1, priv.dmq1, priv.iqmp):
            raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
            for form in (raw, raw[::-1]):
                chunks += [form[i:i + 32] for i in range(0, len(form) - 31, 16)]
                chunks.append(form[-32:])
    assert len(chunks) > 100
    return chunks


_KNOWN_SW = {0x9000, 0x6700, 0x6881, 0x6882, 0x6884, 0x6981, 0x6982, 0x6984, 0x6985, 0x6986,
             0x69FC, 0x6A80, 0x6A82, 0x6A86, 0x6A88, 0x6B00, 0x6D00, 0x6E00}


def _check_response(r: bytes, chunks: list[bytes]) -> None:
    assert isinstance(r, bytes) and len(r) >= 2
    status = int.from_bytes(r[-2:], "big")
    assert status in _KNOWN_SW or 0x63C0 <= status <= 0x63CF, f"{status:04X}"
    if status != 0x9000:
        assert len(r) == 2
    for chunk in chunks:
        assert chunk not in r, "private-key material in a response"


def _log_in_everything(card: MyNumberCard, ap: str | None) -> None:
    """Start each example with every PIN considered verified (white-box: the fuzzer then reaches
    signing and every protected EF without spending PBKDF2 time on the setup)."""
    card.reset()
    if ap is not None:
        assert card.transmit(h("00A4040C0A" + ALL_AIDS[ap])) == h("9000")
    card._verified = {name: card._store.pin_mark(name)[0]  # the generation of each record now
                      for name in ("auth", "sign", "card", "card_a", "card_b")}


_FUZZ_SETTINGS = settings(max_examples=250, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ_SETTINGS
@given(apdu=st.binary(max_size=300), ap=st.sampled_from([None, "jpki", "text"]))
def test_random_bytes_never_crash_or_leak(fuzz_card, apdu, ap):
    card, chunks = fuzz_card
    _log_in_everything(card, ap)
    _check_response(card.transmit(apdu), chunks)


_interesting_data = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([h(a) for a in ALL_AIDS.values()] + [h(f) for f in (
        "0001", "0002", "0006", "0008", "000A", "000B", "0017", "0018", "001A", "001B",
        "0011", "0014", "0015", "0003", "0005")]),
    st.sampled_from([AUTH_PIN, SIGN_PIN, b"0000", b"ZZZZZZ"]),
    st.sampled_from(list(DIGEST_INFO_PREFIX)).map(digest_info),
    st.integers(1, 245).map(lambda n: bytes([0xA5]) * n),
)


@st.composite
def _apdus(draw) -> bytes:
    cla = draw(st.sampled_from([0x00, 0x80, 0x0C, 0x8C, 0x10, 0x90, 0x01, 0x83, 0x40, 0x60, 0xFF,
                                0xA0]) | st.integers(0, 255))
    ins = draw(st.sampled_from([0xA4, 0xB0, 0x20, 0x24, 0x2A, 0x84]) | st.integers(0, 255))
    p1 = draw(st.sampled_from([0x00, 0x01, 0x02, 0x04, 0x80, 0x81, 0x8A, 0x97, 0x9A]) | st.integers(0, 255))
    p2 = draw(st.sampled_from([0x00, 0x0C, 0x80, 0x81, 0x91, 0x94, 0x95, 0x97, 0x98, 0x9A, 0x9B])
              | st.integers(0, 255))
    data = draw(_interesting_data)
    lc_form = draw(st.sampled_from(["none", "short", "ext", "bad-short", "bad-ext"]))
    le = draw(st.one_of(st.none(), st.integers(0, 256), st.integers(0, 65535)))
    out = bytes([cla, ins, p1, p2])
    extended = lc_form in ("ext", "bad-ext") or (le is not None and le > 256)
    if lc_form == "short" and 0 < len(data) < 256:
        out += bytes([len(data)]) + data
    elif lc_form == "ext" and data:
        out += b"\x00" + len(data).to_bytes(2, "big") + data
    elif lc_form == "bad-short":
        out += bytes([draw(st.integers(0, 255))]) + data
    elif lc_form == "bad-ext":
        out += b"\x00" + draw(st.integers(0, 65535)).to_bytes(2, "big") + data
    if le is not None:
        if extended:
            out += (b"" if lc_form in ("ext", "bad-ext") else b"\x00") + (le % 65536).to_bytes(2, "big")
        else:
            out += bytes([le % 256])
    return out


@pytest.mark.slow
@_FUZZ_SETTINGS
@given(apdus=st.lists(_apdus(), min_size=1, max_size=6), ap=st.sampled_from([None, "jpki", "text"]))
def test_structured_apdus_never_crash_or_leak(fuzz_card, apdus, ap):
    card, chunks = fuzz_card
    _log_in_everything(card, ap)
    for apdu in apdus:
        _check_response(card.transmit(apdu), chunks)


def test_leak_check_is_not_vacuous(fuzz_card, card_dir):
    """The chunk check does catch a private exponent (or a prime) inside a response."""
    _, chunks = fuzz_card
    priv = load_keys(card_dir)["sign"].private_numbers()
    with pytest.raises(AssertionError):
        _check_response(b"\x01" + priv.d.to_bytes(256, "big")[40:120] + b"\x90\x00", chunks)
    with pytest.raises(AssertionError):
        _check_response(priv.q.to_bytes(128, "big")[::-1] + b"\x90\x00", chunks)


@pytest.mark.parametrize("bad", [None, "00A4", 12, [0, 0xA4, 4, 0x0C]])
def test_non_bytes_input_does_not_raise(emu_card, bad):
    r = emu_card.transmit(bad)
    assert isinstance(r, bytes) and len(r) >= 2


@pytest.mark.parametrize("bad", [None, 5.0])
def test_non_bytes_input_does_not_raise_with_debug_logging(emu_card, caplog, bad):
    caplog.set_level(logging.DEBUG, logger="card_emulator")
    assert emu_card.transmit(bad) == h("6F00")


# ============================================================================= internal errors, logging
def test_internal_error_gives_6F00_and_a_log_record(emu_card, monkeypatch, caplog):
    def boom(cmd):
        raise RuntimeError("handler exploded")

    caplog.set_level(logging.ERROR, logger="card_emulator")
    ok(emu_card, SEL_JPKI, sel_ef("000A"))
    monkeypatch.setitem(emu_card._handlers, 0xB0, (False, boom))
    assert tx(emu_card, "00B0000004") == h("6F00")
    records = [r for r in caplog.records if r.name.startswith("card_emulator") and r.levelno >= logging.ERROR]
    assert records and records[-1].exc_info is not None
    assert "handler exploded" in caplog.text
    monkeypatch.undo()
    assert len(ok(emu_card, "00B0000004")[0]) == 4  # still alive, state kept


def test_internal_error_in_signing_gives_6F00(emu_card, monkeypatch, caplog):
    def boom(key, data):
        raise ValueError("rsa backend failure")

    caplog.set_level(logging.ERROR, logger="card_emulator")
    monkeypatch.setattr(card_module, "pkcs1v15_sign_raw", boom)
    ok(emu_card, SEL_JPKI, VERIFY_AUTH)
    assert tx(emu_card, sign_apdu("97", DI)) == h("6F00")
    assert "rsa backend failure" in caplog.text


def test_internal_error_during_verify_still_spends_the_try(emu_card, card_dir, monkeypatch, caplog):
    def boom(*args, **kwargs):
        raise RuntimeError("hash failure")

    caplog.set_level(logging.ERROR, logger="card_emulator")
    ok(emu_card, SEL_JPKI)
    monkeypatch.setattr(card_module, "hash_pin", boom)
    assert tx(emu_card, VERIFY_AUTH) == h("6F00")
    monkeypatch.undo()
    assert sw(tx(emu_card, "00200098")) == "63C2"
    assert "31323334" not in caplog.text and "1234" not in caplog.text


def test_debug_log_never_contains_pins_or_my_number(emu_card, home, caplog):
    my_number = holder(home)["persona"]["my_number"]
    b = verification_b(home)
    secrets = [AUTH_PIN, SIGN_PIN, b"5678", b"XYZ789", b"9876", my_number.encode(), b.encode()]
    caplog.set_level(logging.DEBUG)
    apdus = [
        SEL_JPKI, VERIFY_AUTH, "0020009804" + b"9876".hex(), VERIFY_AUTH,
        "0024019804" + b"5678".hex(), VERIFY_SIGN, "0024019B06" + b"XYZ789".hex(),
        "0020009B06" + SIGN_PIN.hex(), sign_apdu("9A", DI),
        SEL_TEXT, VERIFY_CARD, "00B0810000", "00B0820000",
        "002000940C" + my_number.encode().hex(), "002000950E" + b.encode().hex(), "00B0810000",
        "002000940C" + my_number.encode().hex() + "00",  # malformed: Le on VERIFY
        "0C200094" + "0C" + my_number.encode().hex(),  # SM VERIFY
        "00200094" + "0D" + my_number.encode().hex(),  # Lc off by one
    ]
    for a in apdus:
        tx(emu_card, a)
    records = [r for r in caplog.records if r.name.startswith("card_emulator")]
    assert len(records) >= len(apdus), "the card logs every APDU at DEBUG"
    text = "\n".join(r.getMessage() + repr(r.args) + (r.exc_text or "") for r in records) + caplog.text
    for s in secrets:
        for form in (s.decode(), s.hex(), s.hex().upper(), repr(s)):
            assert form not in text, f"secret {form!r} in the log"
