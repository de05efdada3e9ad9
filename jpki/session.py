"""Sessions over the card's applications: the JPKI AP and the card-info (券面事項入力補助) AP.

Each session selects its AP when it is created. Methods are small and typed; a non-9000 status
word arrives as an exception from ``jpki.apdu``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from .apdu import ApduProtocol, Response, raise_for_sw
from .der import DerError, read_tlv, tlv_size
from .errors import FileNotFoundOnCardError, PinError, ProtocolError, SecurityStatusError, UsageError
from .identity import Sex, is_valid_mynumber, japanese_era
from .pins import PINS
from .transport.base import Transport

JPKI_AID = bytes.fromhex("D392F000260100000001")
TEXT_AID = bytes.fromhex("D3921000310001010408")
SURFACE_AID = bytes.fromhex("D3921000310001010402")
COMMON_AID = bytes.fromhex("D3921000310001010100")

CertKind = Literal["auth", "sign", "auth-ca", "sign-ca"]
KeyKind = Literal["auth", "sign"]

CERT_FIDS: dict[str, int] = {"sign": 0x0001, "sign-ca": 0x0002, "auth": 0x000A, "auth-ca": 0x000B}
KEY_FIDS: dict[str, int] = {"auth": 0x0017, "sign": 0x001A}

TOKEN_TYPES = {
    "JPKIAPICCTOKEN2": "my-number-card",
    "JPKIAPICCTOKEN": "juki-card",
    "JPKIAPGPSETOKEN": "smartphone",
}


JPKI_PIN_FIDS: dict[str, int] = {k: p.fid for k, p in PINS.items() if p.application == "jpki"}
TEXT_PIN_FIDS: dict[str, int] = {k: p.fid for k, p in PINS.items() if p.application == "text"}
SURFACE_PIN_FIDS: dict[str, int] = {k: p.fid for k, p in PINS.items() if p.application == "surface"}

DIGEST_INFO_PREFIX: dict[str, bytes] = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}


def normalise_pin(pin: str, value: str) -> bytes:
    """Check a PIN against its rule and encode it.

    The value is NFKC-normalised first, so that what a Japanese keyboard types in full-width
    mode (``ＡＢＣ１２３``, ``１２３４``) is the ASCII the card compares; signature passwords are
    then upper-cased.
    """
    value = unicodedata.normalize("NFKC", value)
    if pin == "sign":
        value = value.upper()
    spec = PINS[pin]
    if not spec.pattern.fullmatch(value):
        raise UsageError(spec.rule)
    return value.encode("ascii")


@contextlib.contextmanager
def _naming_pin(pin: str) -> Iterator[None]:
    """Name the PIN on a PIN error the card answers (the status word alone does not say which)."""
    try:
        yield
    except (PinError, SecurityStatusError) as exc:
        if exc.pin is None:
            exc.pin = pin
        raise


def digest_info(algorithm: str, digest: bytes) -> bytes:
    """DER DigestInfo for a hash (what the card pads and signs)."""
    if algorithm not in DIGEST_INFO_PREFIX:
        raise UsageError(f"unsupported digest {algorithm!r}: use one of {sorted(DIGEST_INFO_PREFIX)}")
    if len(digest) != DIGEST_SIZES[algorithm]:
        raise UsageError(f"a {algorithm} digest is {DIGEST_SIZES[algorithm]} bytes")
    return DIGEST_INFO_PREFIX[algorithm] + digest


def _der_total_length(header: bytes) -> int:
    """Length of a DER SEQUENCE (header included) from its first bytes."""
    if len(header) < 2 or header[0] != 0x30:
        raise ProtocolError("no certificate in this EF (does not start with a DER SEQUENCE)")
    try:
        return tlv_size(header)
    except DerError as exc:
        raise ProtocolError(f"unsupported DER length in certificate header: {exc}") from None


class _ApSession:
    aid: bytes
    #: what the AP is called in messages
    ap_name = "application"
    pin_fids: Mapping[str, int]

    def __init__(self, card: Transport | ApduProtocol) -> None:
        self.protocol = card if isinstance(card, ApduProtocol) else ApduProtocol(card)
        self.select_ap()

    def select_ap(self) -> None:
        """(Re)select the AP; this also logs out every PIN. An AP the card does not hold (a
        smartphone's JPKI holds the JPKI AP only) is FileNotFoundOnCardError saying which."""
        try:
            self.protocol.send(0x00, 0xA4, 0x04, 0x0C, self.aid)
        except FileNotFoundOnCardError as exc:
            raise FileNotFoundOnCardError(exc.sw, f"this card has no {self.ap_name} ({exc.sw:04X}; a "
                                          "smartphone's JPKI holds the JPKI AP only)") from None

    def _select_ef(self, fid: int) -> None:
        self.protocol.send(0x00, 0xA4, 0x02, 0x0C, fid.to_bytes(2, "big"))

    def _pin_fid(self, pin: str) -> int:
        try:
            return self.pin_fids[pin]
        except KeyError:
            raise UsageError(f"unknown PIN {pin!r}: use one of {sorted(self.pin_fids)}") from None

    def read_binary(self, offset: int, length: int) -> bytes:
        """READ BINARY of the current EF, in chunks of at most 256 bytes."""
        out = bytearray()
        while len(out) < length:
            want = min(256, length - len(out))
            pos = offset + len(out)
            if pos > 0x7FFF:
                raise ProtocolError("EF offset beyond 7FFF")
            chunk = self.protocol.send(0x00, 0xB0, pos >> 8, pos & 0xFF, le=want)
            if not chunk:
                raise ProtocolError("card returned no data before the end of the object")
            out += chunk
        return bytes(out[:length])

    def tries_left(self, pin: str) -> int:
        """Tries left for a PIN, spending none (an empty VERIFY)."""
        self._select_ef(self._pin_fid(pin))
        response: Response = self.protocol.send_raw(bytes((0x00, 0x20, 0x00, 0x80)))
        if response.sw & 0xFFF0 == 0x63C0:
            return response.sw & 0x0F
        if response.sw in (0x6983, 0x6984):
            return 0
        if response.sw == 0x9000:
            raise ProtocolError("the card answered 9000 to a PIN status query (expected 63Cx)")
        raise_for_sw(response.sw)
        raise ProtocolError(f"unexpected status {response.sw:04X}")  # pragma: no cover

    def verify(self, pin: str, value: str) -> None:
        """VERIFY a PIN. Raises PinIncorrectError(tries_left) or PinBlockedError."""
        fid = self._pin_fid(pin)
        data = normalise_pin(pin, value)
        self._select_ef(fid)
        with _naming_pin(pin):
            self.protocol.send(0x00, 0x20, 0x00, 0x80, data)

    def change_pin(self, pin: str, old: str, new: str) -> None:
        """Verify the old value, then CHANGE REFERENCE DATA to the new one."""
        new_data = normalise_pin(pin, new)
        self.verify(pin, old)
        with _naming_pin(pin):
            self.protocol.send(0x00, 0x24, 0x01, 0x80, new_data)


class JpkiSession(_ApSession):
    """The JPKI AP: certificates, PINs and the two signing keys."""

    ap_name = "JPKI AP (公的個人認証AP)"
    aid = JPKI_AID
    pin_fids = JPKI_PIN_FIDS

    def token_label(self) -> str:
        self._select_ef(0x0006)
        return self.read_binary(0, 32).rstrip(b" \x00").decode("ascii", "replace")

    def card_type(self) -> str:
        """``my-number-card``, ``juki-card`` or ``smartphone``, from the token EF's label."""
        label = self.token_label()
        if label not in TOKEN_TYPES:
            raise ProtocolError(f"unknown JPKI token label {label!r}")
        return TOKEN_TYPES[label]

    def read_certificate(self, kind: CertKind) -> bytes:
        """A certificate's DER, read by the length in its header (the EF is larger)."""
        if kind not in CERT_FIDS:
            raise UsageError(f"unknown certificate {kind!r}: use one of {sorted(CERT_FIDS)}")
        self._select_ef(CERT_FIDS[kind])
        with _naming_pin("sign") if kind == "sign" else contextlib.nullcontext():
            header = self.read_binary(0, 4)
        total = _der_total_length(header)
        return header + self.read_binary(4, total - 4) if total > 4 else header[:total]

    def sign(self, key: KeyKind, data: bytes) -> bytes:
        """COMPUTE DIGITAL SIGNATURE over ``data`` (a DigestInfo) with the auth or sign key.

        The key's PIN must have been verified in this session (else SecurityStatusError).
        """
        if key not in KEY_FIDS:
            raise UsageError(f"unknown key {key!r}: use 'auth' or 'sign'")
        if not 1 <= len(data) <= 245:
            raise UsageError("the card signs 1-245 bytes (a DigestInfo)")
        self._select_ef(KEY_FIDS[key])
        with _naming_pin(key):
            return self.protocol.send(0x80, 0x2A, 0x00, 0x80, data, le=256)

    def sign_digest(self, key: KeyKind, algorithm: str, digest: bytes) -> bytes:
        return self.sign(key, digest_info(algorithm, digest))


@dataclass(frozen=True)
class BasicInfo:
    """The basic 4 info (基本4情報) as the card-info AP holds it."""

    name: str
    address: str
    birth_date: _dt.date
    sex: Sex

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "address": self.address,
                "birth_date": self.birth_date.isoformat(), "sex": self.sex.name.lower()}


def _read_tlv(buf: bytes, pos: int) -> tuple[bytes, bytes, int]:
    """One BER-TLV (a 1- or 2-byte tag, a short, 81 or 82 length) at ``pos``: (tag, value,
    next position)."""
    try:
        tag, start, stop = read_tlv(buf, pos, len(buf))
    except DerError as exc:
        raise ProtocolError(f"bad TLV in card data: {exc}") from None
    return tag, buf[start:stop], stop


def parse_basic_info(ef: bytes) -> BasicInfo:
    """Parse card-info EF 0002: ``FF20{DF21 offsets, DF22 name, DF23 address, DF24 birth, DF25 sex}``."""
    tag, value, _ = _read_tlv(ef, 0)
    if tag != b"\xff\x20":
        raise ProtocolError("basic 4 info EF does not start with FF20")
    fields: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(value):
        t, v, pos = _read_tlv(value, pos)
        fields[t] = v
    try:
        name = fields[b"\xdf\x22"].decode("utf-8")
        address = fields[b"\xdf\x23"].decode("utf-8")
        birth_raw = fields[b"\xdf\x24"].decode("ascii")
        sex_code = fields[b"\xdf\x25"].decode("ascii")
    except KeyError as missing:
        raise ProtocolError(f"basic 4 info lacks tag {missing.args[0].hex().upper()}") from None
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"basic 4 info is not valid text: {exc}") from None
    try:
        if len(birth_raw) != 8 or not birth_raw.isdigit():
            raise ValueError(f"birth date {birth_raw!r} is not YYYYMMDD")
        birth = _dt.datetime.strptime(birth_raw, "%Y%m%d").date()
        sex = Sex.from_card_code(sex_code)
    except ValueError as exc:
        raise ProtocolError(f"basic 4 info has a bad field: {exc}") from None
    return BasicInfo(name, address, birth, sex)


class CardInfoSession(_ApSession):
    """The 券面事項入力補助AP: My Number and the basic 4 info, behind the 4-digit card-info PIN."""

    ap_name = "card-info AP (券面事項入力補助AP)"
    aid = TEXT_AID
    pin_fids = TEXT_PIN_FIDS

    def _read_ef(self, fid: int, length: int) -> bytes:
        self._select_ef(fid)
        with _naming_pin("card"):
            return self.read_binary(0, length)

    def read_my_number(self) -> str:
        """The My Number (needs PIN ``card`` or 照合番号A verified); its check digit is validated."""
        ef = self._read_ef(0x0001, 17)
        if ef[:3] != b"\xff\x10\x0c":
            raise ProtocolError("My Number EF does not start with FF100C")
        number = ef[3:15].decode("ascii", "replace")
        if not is_valid_mynumber(number):
            raise ProtocolError("the card's My Number fails its check digit")
        return number

    def read_basic_info(self) -> BasicInfo:
        """The basic 4 info (needs PIN ``card`` or 照合番号B verified)."""
        self._select_ef(0x0002)
        head = self.read_binary(0, 5)
        if head[:2] != b"\xff\x20":
            raise ProtocolError("basic 4 info EF does not start with FF20")
        try:
            total = tlv_size(head)
        except DerError as exc:
            raise ProtocolError(f"unsupported length in basic 4 info: {exc}") from None
        return parse_basic_info(head + self.read_binary(5, total - 5) if total > 5 else head[:total])

    def verify_b(self, birth_date: _dt.date, card_expiry_year: int, security_code: str,
                 era_year: bool = True) -> None:
        """VERIFY 照合番号B from the birth date, the card's expiry year and its security code."""
        yy = japanese_era(birth_date)[1] if era_year else birth_date.year
        value = f"{yy % 100:02d}{birth_date:%m%d}{card_expiry_year:04d}{security_code}"
        self.verify("card_b", value)


def _read_whole_tlv(session: _ApSession, what: str) -> bytes:
    """The BER TLV at the start of the current EF, read by the length in its header."""
    head = session.read_binary(0, 5)
    try:
        total = tlv_size(head)
    except DerError as exc:
        raise ProtocolError(f"unsupported length in {what}: {exc}") from None
    return head + session.read_binary(5, total - 5) if total > 5 else head[:total]


def _tlv_fields(ef: bytes, outer: bytes, what: str) -> dict[bytes, bytes]:
    """The TLVs inside the ``outer`` TLV of an EF, by tag."""
    tag, value, _ = _read_tlv(ef, 0)
    if tag != outer:
        raise ProtocolError(f"{what} does not start with {outer.hex().upper()}")
    fields: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(value):
        t, v, pos = _read_tlv(value, pos)
        fields[t] = v
    return fields


@dataclass(frozen=True)
class SurfaceBasicInfo:
    """The card-surface AP's basic info (EF 0003, free to read)."""

    ap_id: str
    version: int
    city: str

    def to_json(self) -> dict[str, str | int]:
        return {"ap_id": self.ap_id, "version": self.version, "city": self.city}


@dataclass(frozen=True)
class SurfaceEntries:
    """What the card's face shows, as the card-surface AP holds it (EF 0002): the birth date and
    sex as text, the name and address as PNG images, the photo as JPEG 2000."""

    birth_date: _dt.date
    sex: Sex
    name_png: bytes
    address_png: bytes
    photo_jp2: bytes
    card_expiry: _dt.date | None
    security_code_png: bytes

    def __repr__(self) -> str:  # the holder's data stay out of logs and tracebacks
        return (f"SurfaceEntries(name_png=<{len(self.name_png)} bytes>, "
                f"address_png=<{len(self.address_png)} bytes>, photo_jp2=<{len(self.photo_jp2)} bytes>)")


def _date(raw: bytes, what: str) -> _dt.date:
    try:
        text = raw.decode("ascii")
        if len(text) != 8 or not text.isdigit():
            raise ValueError(text)
        return _dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise ProtocolError(f"the card-surface {what} is not a date YYYYMMDD") from None


def parse_surface_entries(ef: bytes) -> SurfaceEntries:
    """Parse card-surface EF 0002: ``FF20{DF21 offsets, DF22 birth, DF23 sex, DF24 key, DF25 name
    PNG, DF26 address PNG, DF27 photo JPEG 2000, DF28 signature, DF29 expiry, DF2A code PNG}``."""
    fields = _tlv_fields(ef, b"\xff\x20", "the card-surface EF")
    try:
        name, address, photo = fields[b"\xdf\x25"], fields[b"\xdf\x26"], fields[b"\xdf\x27"]
        birth, sex_code = fields[b"\xdf\x22"], fields[b"\xdf\x23"]
    except KeyError as missing:
        raise ProtocolError(f"the card-surface EF lacks tag {missing.args[0].hex().upper()}") from None
    try:
        sex = Sex.from_card_code(sex_code.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("the card-surface sex code is not 1, 2 or 9") from None
    expiry = fields.get(b"\xdf\x29")
    return SurfaceEntries(_date(birth, "birth date"), sex, name, address, photo,
                          None if expiry is None else _date(expiry, "card expiry"),
                          fields.get(b"\xdf\x2a", b""))


class SurfaceSession(_ApSession):
    """The 券面事項確認AP (card surface): the face of the card as images, behind 照合番号A (the My
    Number) or 照合番号B. Clients learn the My Number from the card-info AP first (jpki/myna's
    ``visual`` commands do so): :meth:`unlock_with_card_pin`."""

    ap_name = "card-surface AP (券面事項確認AP)"
    aid = SURFACE_AID
    pin_fids = SURFACE_PIN_FIDS

    def basic_info(self) -> SurfaceBasicInfo:
        """EF 0003: ``FF40{DF41 AP id, DF42 key id, DF43 version, DF44 municipality}``."""
        self._select_ef(0x0003)
        fields = _tlv_fields(_read_whole_tlv(self, "the card-surface basic info"), b"\xff\x40",
                             "the card-surface basic info")
        try:
            return SurfaceBasicInfo(fields[b"\xdf\x41"].hex().upper(),
                                    fields[b"\xdf\x43"][0] if fields[b"\xdf\x43"] else 0,
                                    fields[b"\xdf\x44"].decode("utf-8"))
        except (KeyError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"the card-surface basic info is malformed ({type(exc).__name__})") from None

    def unlock_with_card_pin(self, card_pin: str) -> None:
        """Read the My Number with the card-info PIN and VERIFY it as 照合番号A here. The number
        itself is never returned nor kept."""
        text = CardInfoSession(self.protocol)
        text.verify("card", card_pin)
        number = text.read_my_number()
        self.select_ap()
        self.verify("surface_a", number)

    def read_entries(self) -> SurfaceEntries:
        """EF 0002 (needs 照合番号A or B verified in this session)."""
        self._select_ef(0x0002)
        with _naming_pin("surface_a"):
            return parse_surface_entries(_read_whole_tlv(self, "the card-surface EF"))


class CommonSession(_ApSession):
    """The 共通AP: record 1 of its EF 0001 holds the card manufacture number."""

    ap_name = "common AP"
    aid = COMMON_AID
    pin_fids = MappingProxyType({})  # no PINs

    def read_card_id(self) -> bytes:
        """The value of record 1 (``00 B2 01 0C 00``)."""
        raw = self.protocol.send(0x00, 0xB2, 0x01, 0x0C, le=256)
        _, value, _ = _read_tlv(raw, 0)
        return value

    def manufacture_number(self) -> str:
        """Characters 2..15 of record 1, as jpki/myna's ``read_manufacture`` takes them."""
        value = self.read_card_id()
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError("the card identifier record is not ASCII") from None
        if len(text) < 15:
            raise ProtocolError(f"the card identifier record is {len(text)} characters, not 15 or more")
        return text[2:15]


__all__ = ["BasicInfo", "CardInfoSession", "CommonSession", "JpkiSession", "SurfaceBasicInfo",
           "SurfaceEntries", "SurfaceSession", "digest_info", "normalise_pin", "parse_surface_entries"]
