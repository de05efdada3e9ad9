"""Byte layouts of the card's files (spec §3, §4): what the card stores, built from plain values.

The host library has its own, independent parsers; the two meet only in the bytes.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
from dataclasses import dataclass

from .profile import TOKEN_LABELS

JPKI_AID = bytes.fromhex("D392F000260100000001")
TEXT_AID = bytes.fromhex("D3921000310001010408")
SURFACE_AID = bytes.fromhex("D3921000310001010402")
JUKI_AID = bytes.fromhex("D3921000310001010401")
COMMON_AID = bytes.fromhex("D3921000310001010100")

SEX_CARD_CODES = {"1", "2", "9"}

#: The highest offset a short READ BINARY reaches (P1P2 with bit 15 clear): EFs read with
#: offsets stay below this.
MAX_SHORT_OFFSET = 0x7FFF


@dataclass(frozen=True)
class SurfaceImages:
    """The images of the card's face that the card-surface AP holds (see :mod:`.images`)."""

    name_png: bytes
    address_png: bytes
    photo_jp2: bytes
    code_png: bytes


def encode_length(n: int, form: str = "82") -> bytes:
    """BER length; for n >= 0x80 the spec's ``82 HH LL`` form, or minimal BER with ``form='ber'``."""
    if n < 0x80:
        return bytes([n])
    if form == "ber" and n <= 0xFF:
        return bytes([0x81, n])
    if n <= 0xFFFF:
        return bytes([0x82, n >> 8, n & 0xFF])
    raise ValueError("TLV value too long")


def tlv(tag: bytes, value: bytes, form: str = "82") -> bytes:
    return tag + encode_length(len(value), form) + value


def token_info(token_kind: str = "card", serial: str = "") -> bytes:
    """EF 0006: a 160-byte PKCS#11 CK_TOKEN_INFO whose label names the card type."""
    label = TOKEN_LABELS[token_kind].encode().ljust(32, b" ")
    manufacturer = b"J-LIS (jpki emulator)".ljust(32, b" ")
    model = b"JPKI AP emu".ljust(16, b" ")
    serial_b = serial.encode("ascii")[:16].ljust(16, b" ")
    body = label + manufacturer + model + serial_b
    return body + bytes(160 - len(body))


def certificate_ef(der: bytes, min_size: int, filler: int) -> bytes:
    """A certificate followed by filler up to an EF size: ``min_size`` or the next 256-byte step."""
    size = max(min_size, (len(der) + 255) // 256 * 256)
    return der + bytes([filler]) * (size - len(der))


def mynumber_ef(my_number: str) -> bytes:
    """Card-info EF 0001: ``FF 10 0C`` + 12 ASCII digits + ``FF FF``."""
    if len(my_number) != 12 or not my_number.isdigit():
        raise ValueError("a My Number is 12 digits")
    return b"\xff\x10\x0c" + my_number.encode("ascii") + b"\xff\xff"


def basic4_value(name: str, address: str, birth_yyyymmdd: str, sex_code: str,
                 form: str = "82") -> bytes:
    """The value of the ``FF20`` TLV of card-info EF 0002 (what EF 0003's DF32 hashes)."""
    if len(birth_yyyymmdd) != 8 or not birth_yyyymmdd.isdigit():
        raise ValueError("birth date must be YYYYMMDD")
    if sex_code not in SEX_CARD_CODES:
        raise ValueError("sex code must be 1, 2 or 9")
    name_t = tlv(b"\xdf\x22", name.encode("utf-8"), form)
    addr_t = tlv(b"\xdf\x23", address.encode("utf-8"), form)
    birth_t = tlv(b"\xdf\x24", birth_yyyymmdd.encode("ascii"), form)
    sex_t = tlv(b"\xdf\x25", sex_code.encode("ascii"), form)
    # Offsets are absolute within the EF; compute the header length first.
    inner_len = 11 + len(name_t) + len(addr_t) + len(birth_t) + len(sex_t)
    header = 2 + len(encode_length(inner_len, form))
    first = header + 11
    offsets = [first, first + len(name_t), first + len(name_t) + len(addr_t),
               first + len(name_t) + len(addr_t) + len(birth_t)]
    off_t = b"\xdf\x21\x08" + b"".join(o.to_bytes(2, "big") for o in offsets)
    return off_t + name_t + addr_t + birth_t + sex_t


def basic4_ef(name: str, address: str, birth_yyyymmdd: str, sex_code: str, *,
              form: str = "82", size: int = 0, filler: int = 0xFF) -> bytes:
    value = basic4_value(name, address, birth_yyyymmdd, sex_code, form)
    ef = tlv(b"\xff\x20", value, form)
    return ef + bytes([filler]) * max(0, size - len(ef))


def integrity_record(ef0001: bytes, basic4_val: bytes, signature: bytes) -> bytes:
    """Card-info EF 0003: ``FF30{DF31 SHA-256(EF0001), DF32 SHA-256(EF0002 value), DF33 signature}``."""
    body = (tlv(b"\xdf\x31", hashlib.sha256(ef0001).digest())
            + tlv(b"\xdf\x32", hashlib.sha256(basic4_val).digest())
            + tlv(b"\xdf\x33", signature))
    return tlv(b"\xff\x30", body)


def integrity_signed_part(ef0001: bytes, basic4_val: bytes) -> bytes:
    """What DF33 signs: the DF31 and DF32 TLVs."""
    return (tlv(b"\xdf\x31", hashlib.sha256(ef0001).digest())
            + tlv(b"\xdf\x32", hashlib.sha256(basic4_val).digest()))


def ap_basic_info(key_id: bytes) -> bytes:
    """Card-info EF 0005: ``FF40{DF41 4 bytes, DF42 16-byte key id, DF43 version}``."""
    if len(key_id) != 16:
        raise ValueError("key id is 16 bytes")
    body = tlv(b"\xdf\x41", b"\x00\x01\x00\x00") + tlv(b"\xdf\x42", key_id) + tlv(b"\xdf\x43", b"\x01")
    return tlv(b"\xff\x40", body)


_ERAS = [  # (start date, era year offset)
    (_dt.date(2019, 5, 1), 2018),
    (_dt.date(1989, 1, 8), 1988),
    (_dt.date(1926, 12, 25), 1925),
    (_dt.date(1912, 7, 30), 1911),
    (_dt.date(1868, 10, 23), 1867),
]


def _era_year(d: _dt.date) -> int:
    for start, offset in _ERAS:
        if d >= start:
            return d.year - offset
    return d.year % 100


def verification_number_b(birth: _dt.date, card_expiry_year: int, security_code: str,
                          year_form: str = "era") -> str:
    """照合番号B: birth YYMMDD (era year by default, UNCERTAIN) + expiry year YYYY + 4-digit code."""
    if len(security_code) != 4 or not security_code.isdigit():
        raise ValueError("the security code is 4 digits")
    yy = _era_year(birth) if year_form == "era" else birth.year % 100
    return f"{yy % 100:02d}{birth.month:02d}{birth.day:02d}{card_expiry_year:04d}{security_code}"


def blank_png(width: int, height: int) -> bytes:
    """A valid white greyscale PNG (stands in for the card's rendered name/address images)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    raw = b"".join(b"\x00" + b"\xff" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def rsa_public_key_value(n: int, e: int, form: str = "82") -> bytes:
    """An RSA public key as the card's other APs carry one: ``90`` exponent, ``91`` modulus (the
    layout of the public key inside the J-LIS CV certificates that soltia48/myna-card dumped;
    jsapdu's ``decodePublicKey`` reads the exponent's TLV, then the modulus's)."""
    e_bytes = e.to_bytes((e.bit_length() + 7) // 8, "big")
    n_bytes = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return tlv(b"\x90", e_bytes, form) + tlv(b"\x91", n_bytes, form)


def surface_ef(birth_yyyymmdd: str, sex_code: str, card_expiry_yyyymmdd: str, signature: bytes,
               key: bytes, images: SurfaceImages, form: str = "82", filler: int = 0xFF) -> bytes:
    """券面事項確認AP EF 0002: ``FF20{DF21 offsets, DF22 birth, DF23 sex, DF24 key, DF25 name
    image, DF26 address image, DF27 photo, DF28 signature, DF29 expiry, DF2A code image}``,
    then filler to the next 256-byte step (like the other EFs, the file is larger than its TLV).

    The offsets are absolute positions in the EF (u16, like the card-info AP's): the whole TLV
    must stay below 32 KiB, where short READ BINARY offsets end.
    """
    parts = [
        (b"\xdf\x22", birth_yyyymmdd.encode("ascii")),
        (b"\xdf\x23", sex_code.encode("ascii")),
        (b"\xdf\x24", key),
        (b"\xdf\x25", images.name_png),
        (b"\xdf\x26", images.address_png),
        (b"\xdf\x27", images.photo_jp2),
        (b"\xdf\x28", signature),
        (b"\xdf\x29", card_expiry_yyyymmdd.encode("ascii")),
        (b"\xdf\x2a", images.code_png),
    ]
    tlvs = [tlv(tag, value, form) for tag, value in parts]
    offsets_len = 2 * len(tlvs)
    off_tlv_len = 3 + offsets_len
    inner_len = off_tlv_len + sum(len(t) for t in tlvs)
    pos = 2 + len(encode_length(inner_len, form)) + off_tlv_len
    offsets = []
    for t in tlvs:
        offsets.append(pos)
        pos += len(t)
    if pos > MAX_SHORT_OFFSET:
        raise ValueError(f"the card-surface EF would be {pos} bytes, over {MAX_SHORT_OFFSET}")
    off_t = b"\xdf\x21" + bytes([offsets_len]) + b"".join(o.to_bytes(2, "big") for o in offsets)
    ef = tlv(b"\xff\x20", off_t + b"".join(tlvs), form)
    size = min(MAX_SHORT_OFFSET + 1, (len(ef) + 255) // 256 * 256)
    return ef + bytes([filler]) * (size - len(ef))


def surface_basic_info(key_id: bytes, city: str) -> bytes:
    """券面事項確認AP EF 0003, the AP basic info: ``FF40{DF41 AP id (4 bytes), DF42 key id (16
    bytes), DF43 version (1 byte), DF44 the issuing municipality (UTF-8)}`` — the four TLVs that
    jpki/myna's ``VisualAP::basic_info`` reads in order (what DF42 is, and the outer tag, are not
    public: the emulator uses the card-info AP's EF 0005 layout)."""
    if len(key_id) != 16:
        raise ValueError("key id is 16 bytes")
    body = (tlv(b"\xdf\x41", b"\x00\x01\x00\x00") + tlv(b"\xdf\x42", key_id) + tlv(b"\xdf\x43", b"\x01")
            + tlv(b"\xdf\x44", city.encode("utf-8")))
    return tlv(b"\xff\x40", body)


_PREFECTURE = re.compile(r"東京都|北海道|(?:京都|大阪)府|.{2,3}県")


def municipality_of(address: str) -> str:
    """The municipality an address names (``東京都千代田区神田…`` → ``千代田区``, ``…郡…町`` whole),
    or the address's first ten characters when it names none."""
    m = _PREFECTURE.match(address)
    rest = address[m.end():] if m else address
    county = rest.find("郡")
    if county > 0:
        ends = [i for i in (rest.find("町", county), rest.find("村", county)) if i > county]
        if ends:
            return rest[:min(ends) + 1]
    ends = [i for i in (rest.find(c) for c in "市区町村") if i > 0]
    return rest[:min(ends) + 1] if ends else address[:10]


def card_id_record(manufacture_number: str, tag: int = 0x30) -> bytes:
    """共通AP record 1 of EF 0001 (SFI 1): a BER TLV whose value is 2 characters (``00``;
    UNCERTAIN, not public) then the 13-character card manufacture number — what jpki/myna's
    ``UnknownAP::read_manufacture`` takes as characters 2..15, and the マイナポータル combination
    code is computed from (mpa/src/main.rs)."""
    if len(manufacture_number) != 13 or not manufacture_number.isascii() or not manufacture_number.isalnum():
        raise ValueError("a card manufacture number is 13 letters or digits")
    return tlv(bytes([tag]), b"00" + manufacture_number.encode("ascii"))
