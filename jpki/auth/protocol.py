"""The wire protocol of card login and eKYC: what the card signs and what travels as JSON.

See ``docs/auth-protocol.md`` for the full description. In short:

1. The relying party issues a :class:`~jpki.auth.store.Challenge` (``Challenge.to_json()`` is
   its JSON form): a random id and nonce, the relying party's id, the purpose (``login`` or
   ``ekyc``), an expiry and, for eKYC, an optional transaction text.
2. The client builds the :class:`ClientData` for it and encodes it canonically
   (:meth:`ClientData.encode`): a fixed magic, a version, then each field as tag, 32-bit length
   and value, in one fixed order. Nothing else is signed, and the relying party rebuilds
   nothing: it decodes exactly those bytes and compares every field with its stored challenge.
3. Login: the card signs the encoding with the **user-authentication key**: RSASSA-PKCS1-v1_5
   with SHA-256, i.e. the card's COMPUTE DIGITAL SIGNATURE over
   ``DigestInfo(SHA-256, SHA-256(encoding))``. The :class:`LoginResponse` carries the challenge
   id, the encoding, the user-authentication certificate and the signature.
   eKYC: the card signs a CMS SignedData (CAdES-BES, made by :mod:`jpki.sign.cms`) over the
   encoding with the **signing key**; the :class:`EkycResponse` carries the challenge id, the
   encoding and the (detached) CMS with the signing certificate.

This module is pure data: no cryptography, no I/O, no clock. Every parser is strict (unknown
fields, padding in base64, trailing bytes, duplicated or out-of-order fields are refused) and
raises :class:`MalformedMessageError`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from jpki.auth.store import (
    NONCE_SIZE,
    PURPOSES,
    Challenge,
    MalformedChallengeError,
    Purpose,
)
from jpki.errors import JpkiError

__all__ = [
    "MAGIC",
    "MAX_CERTIFICATE_SIZE",
    "MAX_CLIENT_DATA_SIZE",
    "MAX_CMS_SIZE",
    "MAX_SIGNATURE_SIZE",
    "MAX_TRANSACTION_TEXT",
    "PROTOCOL_VERSION",
    "ClientData",
    "EkycResponse",
    "LoginResponse",
    "MalformedMessageError",
    "b64url_decode",
    "b64url_encode",
    "parse_challenge",
    "parse_json_object",
]

#: Version of the signed encoding and of the response documents.
PROTOCOL_VERSION: Final = 1
#: First bytes of every signed encoding: domain separation from any other use of the card keys.
MAGIC: Final = b"JPKI-AUTH\x00"
#: Size limits of the response parts (a JPKI certificate is under 2 KB, an RSA-2048 signature
#: 256 bytes, a CMS with the signing certificate and CAdES attributes about 3 KB).
MAX_CLIENT_DATA_SIZE: Final = 8 * 1024
MAX_CERTIFICATE_SIZE: Final = 16 * 1024
MAX_SIGNATURE_SIZE: Final = 1024
MAX_CMS_SIZE: Final = 48 * 1024
#: Longest transaction text (characters) an eKYC challenge may carry.
MAX_TRANSACTION_TEXT: Final = 2000

_TAG_PURPOSE: Final = 1
_TAG_RP_ID: Final = 2
_TAG_CHALLENGE_ID: Final = 3
_TAG_NONCE: Final = 4
_TAG_EXPIRES: Final = 5
_TAG_TEXT: Final = 6
_U32 = struct.Struct(">BI")
_I64 = struct.Struct(">q")
_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_MICROSECOND: Final = _dt.timedelta(microseconds=1)
_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*")
_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{22,128}")


class MalformedMessageError(JpkiError, ValueError):
    """A protocol message (JSON document, base64url field, signed encoding) is malformed.

    ``reason`` is always ``'malformed'``; the message says what is wrong (it never quotes
    personal data, only field names and sizes).
    """

    reason = "malformed"


# --------------------------------------------------------------------------- encodings


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url text of ``data``."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: Unused low bits of the last character, by the text's length modulo 4 (canonical: zero).
_TAIL_MASK: Final = {0: 0, 2: 0x0F, 3: 0x03}
_TO_STANDARD: Final = bytes.maketrans(b"-_", b"+/")


def b64url_decode(text: object, field: str, *, max_size: int) -> bytes:
    """Strict unpadded base64url: only the alphabet, no padding, no whitespace, canonical
    trailing bits, at most ``max_size`` decoded bytes. :class:`MalformedMessageError` else."""
    if not isinstance(text, str):
        raise MalformedMessageError(f"{field} must be a base64url string")
    if len(text) > (max_size * 4 + 2) // 3:
        raise MalformedMessageError(f"{field} is larger than {max_size} bytes")
    mask = _TAIL_MASK.get(len(text) % 4)
    if mask is None or not _B64URL_RE.fullmatch(text):
        raise MalformedMessageError(f"{field} is not unpadded base64url")
    if mask and _B64URL_ALPHABET.index(text[-1]) & mask:  # two texts for one value
        raise MalformedMessageError(f"{field} is not canonical base64url")
    try:
        return binascii.a2b_base64(text.encode("ascii").translate(_TO_STANDARD) + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError):  # pragma: no cover - excluded by the checks above
        raise MalformedMessageError(f"{field} is not unpadded base64url") from None


def parse_json_object(body: bytes | str | Mapping[str, Any], what: str) -> Mapping[str, Any]:
    """A JSON object from bytes, text or an already parsed mapping; refuses duplicate keys,
    non-finite numbers and anything but an object at the top."""
    if isinstance(body, Mapping):
        return body
    if not isinstance(body, (bytes, bytearray, memoryview, str)):
        raise MalformedMessageError(f"{what} must be a JSON object")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise MalformedMessageError(f"{what}: duplicate key {key[:40]!r}")
            out[key] = value
        return out

    def no_constant(name: str) -> Any:
        raise MalformedMessageError(f"{what}: {name} is not JSON")

    try:
        text = bytes(body).decode("utf-8") if not isinstance(body, str) else body
        data = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except MalformedMessageError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MalformedMessageError(f"{what} is not valid UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise MalformedMessageError(f"{what} must be a JSON object")
    return data


def _check_fields(data: Mapping[str, Any], what: str, required: set[str],
                  optional: frozenset[str] = frozenset()) -> None:
    unknown = set(data) - required - optional - {"v"}
    if unknown:
        names = ", ".join(sorted(str(n)[:40] for n in unknown)[:5])
        raise MalformedMessageError(f"{what}: unknown field(s) {names}")
    missing = required - set(data)
    if missing:
        raise MalformedMessageError(f"{what}: missing field(s) {', '.join(sorted(missing))}")
    version = data.get("v", PROTOCOL_VERSION)
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise MalformedMessageError(f"{what}: unsupported protocol version")


def _check_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise MalformedMessageError(f"{field} must be 22-128 base64url characters")
    return value


# --------------------------------------------------------------------------- client data


def _micros(when: _dt.datetime) -> int:
    return (when - _EPOCH) // _MICROSECOND


@dataclass(frozen=True, slots=True)
class ClientData:
    """What the card signs: the challenge's fields, bound together.

    ``expires_at`` is the challenge's expiry (microsecond precision, UTC). ``transaction_text``
    is the text the card holder agrees to with an eKYC (``None`` for login, and for an eKYC
    challenge without one).
    """

    purpose: Purpose
    rp_id: str
    challenge_id: str
    nonce: bytes
    expires_at: _dt.datetime
    transaction_text: str | None = None

    @classmethod
    def for_challenge(cls, challenge: Challenge) -> ClientData:
        """The client data answering ``challenge``."""
        return cls(purpose=challenge.purpose, rp_id=challenge.rp_id, challenge_id=challenge.id,
                   nonce=challenge.nonce, expires_at=challenge.expires_at,
                   transaction_text=challenge.transaction_text)

    def encode(self) -> bytes:
        """The canonical encoding (see the module docstring and ``docs/auth-protocol.md``)::

            "JPKI-AUTH" 00 | version (1 byte) | 1 purpose | 2 rp_id | 3 challenge id
            | 4 nonce | 5 expires_at (int64 µs since 1970 UTC) | [6 transaction text]

        each field as ``tag (1 byte) | length (uint32 big-endian) | value``, text in UTF-8.
        """
        if self.purpose not in PURPOSES:
            raise MalformedMessageError("purpose must be login or ekyc")
        if self.transaction_text is not None and self.purpose != "ekyc":
            raise MalformedMessageError("only an eKYC challenge carries a transaction text")
        fields = [
            (_TAG_PURPOSE, self.purpose.encode("ascii")),
            (_TAG_RP_ID, self.rp_id.encode("utf-8")),
            (_TAG_CHALLENGE_ID, self.challenge_id.encode("ascii")),
            (_TAG_NONCE, bytes(self.nonce)),
            (_TAG_EXPIRES, _I64.pack(_micros(self.expires_at))),
        ]
        if self.transaction_text is not None:
            fields.append((_TAG_TEXT, self.transaction_text.encode("utf-8")))
        out = bytearray(MAGIC)
        out.append(PROTOCOL_VERSION)
        for tag, value in fields:
            out += _U32.pack(tag, len(value))
            out += value
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> ClientData:
        """Parse :meth:`encode`'s output, strictly; :class:`MalformedMessageError` otherwise."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MalformedMessageError("client data must be bytes")
        data = bytes(data)
        if len(data) > MAX_CLIENT_DATA_SIZE:
            raise MalformedMessageError(f"client data is larger than {MAX_CLIENT_DATA_SIZE} bytes")
        head = len(MAGIC)
        if data[:head] != MAGIC or len(data) < head + 1:
            raise MalformedMessageError("client data does not start with the JPKI-AUTH magic")
        if data[head] != PROTOCOL_VERSION:
            raise MalformedMessageError(f"unsupported client data version {data[head]}")
        pos = head + 1
        values: dict[int, bytes] = {}
        order = (_TAG_PURPOSE, _TAG_RP_ID, _TAG_CHALLENGE_ID, _TAG_NONCE, _TAG_EXPIRES, _TAG_TEXT)
        expected = 0
        while pos < len(data):
            if pos + _U32.size > len(data):
                raise MalformedMessageError("client data: truncated field header")
            tag, length = _U32.unpack_from(data, pos)
            pos += _U32.size
            if length > len(data) - pos:
                raise MalformedMessageError("client data: field longer than the data")
            while expected < len(order) and order[expected] != tag:
                expected += 1
            if expected == len(order):
                raise MalformedMessageError(f"client data: unknown, repeated or misplaced field {tag}")
            values[tag] = data[pos:pos + length]
            pos += length
            expected += 1
        missing = [t for t in order[:-1] if t not in values]
        if missing:
            raise MalformedMessageError(f"client data: missing field(s) {missing}")
        try:
            purpose = values[_TAG_PURPOSE].decode("ascii")
            rp_id = values[_TAG_RP_ID].decode("utf-8")
            challenge_id = values[_TAG_CHALLENGE_ID].decode("ascii")
            text = values[_TAG_TEXT].decode("utf-8") if _TAG_TEXT in values else None
        except UnicodeDecodeError:
            raise MalformedMessageError("client data: a text field is not valid UTF-8") from None
        if purpose not in PURPOSES:
            raise MalformedMessageError("client data: purpose must be login or ekyc")
        if not rp_id:
            raise MalformedMessageError("client data: empty rp_id")
        _check_id(challenge_id, "client data: challenge id")
        nonce = values[_TAG_NONCE]
        if len(nonce) != NONCE_SIZE:
            raise MalformedMessageError(f"client data: the nonce must be {NONCE_SIZE} bytes")
        if len(values[_TAG_EXPIRES]) != _I64.size:
            raise MalformedMessageError("client data: expires_at must be 8 bytes")
        try:
            expires = _EPOCH + _dt.timedelta(microseconds=_I64.unpack(values[_TAG_EXPIRES])[0])
        except OverflowError:
            raise MalformedMessageError("client data: expires_at out of range") from None
        if text is not None and purpose != "ekyc":
            raise MalformedMessageError("client data: a login carries no transaction text")
        return cls(purpose=purpose, rp_id=rp_id, challenge_id=challenge_id,
                   nonce=nonce, expires_at=expires, transaction_text=text)


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True)
class LoginResponse:
    """The client's answer to a login challenge.

    ``client_data`` is the canonical encoding the card signed, ``certificate`` the card's
    user-authentication certificate (DER), ``signature`` the card's RSASSA-PKCS1-v1_5 SHA-256
    signature over ``client_data``.
    """

    challenge_id: str
    client_data: bytes
    certificate: bytes
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        """The JSON document POSTed to the relying party (binary fields in base64url)."""
        return {"v": PROTOCOL_VERSION, "challenge_id": self.challenge_id,
                "client_data": b64url_encode(self.client_data),
                "certificate": b64url_encode(self.certificate),
                "signature": b64url_encode(self.signature)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | bytes | str) -> LoginResponse:
        """Parse a login response document (a mapping, or JSON bytes or text)."""
        data = parse_json_object(data, "login response")
        _check_fields(data, "login response", {"challenge_id", "client_data", "certificate", "signature"})
        return cls(
            challenge_id=_check_id(data["challenge_id"], "challenge_id"),
            client_data=b64url_decode(data["client_data"], "client_data", max_size=MAX_CLIENT_DATA_SIZE),
            certificate=b64url_decode(data["certificate"], "certificate", max_size=MAX_CERTIFICATE_SIZE),
            signature=b64url_decode(data["signature"], "signature", max_size=MAX_SIGNATURE_SIZE),
        )


@dataclass(frozen=True, slots=True)
class EkycResponse:
    """The client's answer to an eKYC challenge: the challenge id, the client data, and a CMS
    SignedData (DER, CAdES-BES) over the client data made with the card's signing key, the
    signing certificate included. The CMS is detached (what :mod:`jpki.auth.client` makes); an
    attached one is accepted when its content is exactly ``client_data``."""

    challenge_id: str
    client_data: bytes
    cms: bytes

    def to_json(self) -> dict[str, Any]:
        """The JSON document POSTed to the relying party."""
        return {"v": PROTOCOL_VERSION, "challenge_id": self.challenge_id,
                "client_data": b64url_encode(self.client_data), "cms": b64url_encode(self.cms)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | bytes | str) -> EkycResponse:
        """Parse an eKYC response document (a mapping, or JSON bytes or text)."""
        data = parse_json_object(data, "eKYC response")
        _check_fields(data, "eKYC response", {"challenge_id", "client_data", "cms"})
        return cls(challenge_id=_check_id(data["challenge_id"], "challenge_id"),
                   client_data=b64url_decode(data["client_data"], "client_data", max_size=MAX_CLIENT_DATA_SIZE),
                   cms=b64url_decode(data["cms"], "cms", max_size=MAX_CMS_SIZE))


def parse_challenge(data: Mapping[str, Any] | bytes | str) -> Challenge:
    """A challenge document as the relying party's begin endpoint returns it
    (``Challenge.to_json()``); :class:`MalformedMessageError` when it is not one."""
    obj = parse_json_object(data, "challenge")
    try:
        return Challenge.from_json(obj)
    except MalformedChallengeError as exc:
        raise MalformedMessageError(str(exc)) from None
