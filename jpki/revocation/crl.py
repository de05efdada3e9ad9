"""Certificate revocation lists at JPKI scale: a streaming DER encoder and a verifying loader.

The ``cryptography`` CRL builder is quadratic in the number of entries (about 24 s for 100,000
entries), and its parsed CRL materialises every entry; J-LIS CRLs hold about a million entries.
This module encodes the TBSCertList itself and scans a loaded CRL without building an object per
entry:

```python
der = build_crl(ca_cert, ca_key, entries, crl_number=7, this_update=t0, next_update=t1)
crl = LoadedCRL.from_der(der, ca_cert, now=clock.now())   # raises CRLError(reason)
crl.lookup(serial)                                         # RevokedEntry | None, a dict lookup
```

Encoding (RFC 5280 §5, DER):

* CRL version 2, ``sha256WithRSAEncryption``, the issuer name copied byte for byte from the
  issuer certificate's subject, ``thisUpdate`` and ``nextUpdate``;
* CRL extensions: authority key identifier (the issuer's subject key identifier, or the SHA-1
  of its public key when the certificate has none) and CRL number, both non-critical;
* per entry: the serial number (minimal two's complement), the revocation date, the reason code
  (absent for ``unspecified``, as §5.3.1 recommends) and the invalidity date (GeneralizedTime,
  §5.3.2); ``revokedCertificates`` is absent when there are no entries;
* times before 2050 as UTCTime, from 2050 as GeneralizedTime, in UTC, whole seconds
  (fractions are dropped).

Loading checks, in this order (malformed, issuer, signature, extensions, time), and reports the
first failure as :class:`CRLError` with a machine-readable ``reason``:

``crl-malformed``
    not DER of the expected shape (truncated, trailing bytes, bad lengths, bad times, an
    entry's framing, a serial listed twice, an inner and outer signature algorithm that
    differ, duplicate extensions). The content of an entry (its dates, its reason code) is
    checked when it is looked up: a bad one raises this error from :meth:`LoadedCRL.lookup`;
``crl-issuer-mismatch``
    the CRL's issuer name or authority key identifier does not match the issuer certificate,
    or the certificate's key usage does not allow CRL signing;
``crl-signature-invalid``
    the signature does not verify with the issuer's public key (or uses an algorithm other than
    RSA PKCS#1 v1.5 / ECDSA with SHA-256/384/512);
``crl-unsupported-extension``
    a critical CRL or entry extension this loader does not process (delta CRLs, issuing
    distribution points, indirect CRLs), which RFC 5280 forbids using the CRL with;
``crl-not-yet-valid`` / ``crl-expired``
    only when ``now`` is given: ``now < thisUpdate`` or ``nextUpdate < now``.

By default entries are decoded lazily: loading checks every entry's framing and records each
serial number with the offset of its entry; :meth:`LoadedCRL.lookup` is one dict operation and
decodes (and keeps) an entry on its first hit. ``LoadedCRL.from_der(..., eager=True)`` decodes
every entry while loading instead, for a CRL that is consulted many times.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import hashlib
from collections.abc import Iterable, Iterator
from typing import NamedTuple, cast

from asn1crypto import x509 as _ax
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from jpki.der import DerError as _Malformed
from jpki.der import decode_integer as _integer
from jpki.der import decode_oid as _object_identifier
from jpki.der import decode_time as _decode_time
from jpki.der import encode_integer as der_integer
from jpki.der import encode_length as der_length
from jpki.der import encode_oid as _oid
from jpki.der import expect as _expect
from jpki.der import read_header as _header
from jpki.der import read_time as _read_time
from jpki.der import tlv as _tlv
from jpki.errors import UsageError, VerificationError

__all__ = [
    "CRL_EXPIRED",
    "CRL_ISSUER_MISMATCH",
    "CRL_MALFORMED",
    "CRL_NOT_YET_VALID",
    "CRL_REASONS",
    "CRL_SIGNATURE_INVALID",
    "CRL_UNSUPPORTED_EXTENSION",
    "MAX_CRL_NUMBER",
    "MAX_SERIAL",
    "REASON_CODES",
    "CRLError",
    "LoadedCRL",
    "RevokedEntry",
    "build_crl",
    "der_integer",
    "der_length",
    "der_time",
]

UTC = _dt.UTC

CRL_MALFORMED = "crl-malformed"
CRL_ISSUER_MISMATCH = "crl-issuer-mismatch"
CRL_SIGNATURE_INVALID = "crl-signature-invalid"
CRL_UNSUPPORTED_EXTENSION = "crl-unsupported-extension"
CRL_NOT_YET_VALID = "crl-not-yet-valid"
CRL_EXPIRED = "crl-expired"
#: Every reason a :class:`CRLError` can carry.
CRL_REASONS = frozenset(
    {
        CRL_MALFORMED,
        CRL_ISSUER_MISMATCH,
        CRL_SIGNATURE_INVALID,
        CRL_UNSUPPORTED_EXTENSION,
        CRL_NOT_YET_VALID,
        CRL_EXPIRED,
    }
)

#: Serial numbers are encoded in at most 20 octets (RFC 5280 §4.1.2.2): below 2**159.
MAX_SERIAL = 1 << 159
#: CRL numbers likewise (RFC 5280 §5.2.3).
MAX_CRL_NUMBER = 1 << 159

#: CRLReason codes (RFC 5280 §5.3.1); 7 is unused.
REASON_CODES: dict[x509.ReasonFlags, int] = {
    x509.ReasonFlags.unspecified: 0,
    x509.ReasonFlags.key_compromise: 1,
    x509.ReasonFlags.ca_compromise: 2,
    x509.ReasonFlags.affiliation_changed: 3,
    x509.ReasonFlags.superseded: 4,
    x509.ReasonFlags.cessation_of_operation: 5,
    x509.ReasonFlags.certificate_hold: 6,
    x509.ReasonFlags.remove_from_crl: 8,
    x509.ReasonFlags.privilege_withdrawn: 9,
    x509.ReasonFlags.aa_compromise: 10,
}
_REASON_BY_CODE = {code: flag for flag, code in REASON_CODES.items()}


class CRLError(VerificationError):
    """A CRL was rejected. ``reason`` is one of :data:`CRL_REASONS`."""


class RevokedEntry(NamedTuple):
    """One revoked certificate on a CRL (an immutable named tuple: cheap to make by the million).

    ``revoked_at`` and ``invalidity_date`` are timezone-aware; decoded entries carry UTC times
    in whole seconds. ``reason`` ``unspecified`` is encoded as an absent reason code.
    """

    serial: int
    revoked_at: _dt.datetime
    reason: x509.ReasonFlags = x509.ReasonFlags.unspecified
    invalidity_date: _dt.datetime | None = None


# --------------------------------------------------------------------------- DER encoding
# The generic pieces (lengths, TLVs, INTEGERs, OIDs, times) are jpki.der's; what is here is the
# CRL's own layout and its hot loops.


def _utc_seconds(when: _dt.datetime, what: str) -> _dt.datetime:
    if not isinstance(when, _dt.datetime):
        raise UsageError(f"{what} must be a datetime, not {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise UsageError(f"{what} must be timezone-aware")
    if when.tzinfo is not UTC:
        when = when.astimezone(UTC)
    return when.replace(microsecond=0) if when.microsecond else when


def der_time(when: _dt.datetime) -> bytes:
    """A DER ``Time`` (RFC 5280): UTCTime for 1950..2049, else GeneralizedTime; UTC, whole
    seconds (fractions are dropped)."""
    return _TimeEncoder().encode(when, "time")


def _extension(oid: str, value: bytes, *, critical: bool = False) -> bytes:
    crit = b"\x01\x01\xff" if critical else b""
    return _tlv(0x30, _oid(oid) + crit + _tlv(0x04, value))


OID_AUTHORITY_KEY_IDENTIFIER = "2.5.29.35"
OID_CRL_NUMBER = "2.5.29.20"
OID_DELTA_CRL_INDICATOR = "2.5.29.27"
OID_REASON_CODE = "2.5.29.21"
OID_INVALIDITY_DATE = "2.5.29.24"
OID_CERTIFICATE_ISSUER = "2.5.29.29"

_SHA256_RSA = _tlv(0x30, _oid("1.2.840.113549.1.1.11") + b"\x05\x00")
_VERSION_2 = b"\x02\x01\x01"
_INVALIDITY_PREFIX = _oid(OID_INVALIDITY_DATE) + b"\x04\x11"  # OCTET STRING of 17 octets
_INVALIDITY_EXT_HEAD = b"\x30" + der_length(len(_INVALIDITY_PREFIX) + 17) + _INVALIDITY_PREFIX
#: Entry extension bytes for each reason code (empty for ``unspecified``).
_REASON_EXT: dict[x509.ReasonFlags, bytes] = {
    flag: (b"" if code == 0 else _extension(OID_REASON_CODE, b"\x0a\x01" + bytes((code,))))
    for flag, code in REASON_CODES.items()
}


def _key_identifier(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _subject_der(cert: x509.Certificate) -> bytes:
    """The subject Name of ``cert`` exactly as encoded in the certificate."""
    parsed = _ax.Certificate.load(cert.public_bytes(Encoding.DER))
    subject: bytes = parsed["tbs_certificate"]["subject"].dump()
    return subject


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=UTC)


class _TimeEncoder:
    """Encodes aware datetimes as DER times at a million per second or so.

    ``when - epoch`` works for any aware datetime whatever its zone (and raises TypeError for a
    naive one); the day and the second of the day are then looked up in small caches.
    """

    __slots__ = ("days", "generalized_days", "seconds")

    def __init__(self) -> None:
        self.days: dict[int, bytes] = {}
        self.generalized_days: dict[int, bytes] = {}
        self.seconds: dict[int, bytes] = {}

    def day(self, days: int, *, generalized: bool) -> bytes:
        """Tag, length and ``[YY]YYMMDD`` of the day ``days`` after 1970-01-01."""
        cache = self.generalized_days if generalized else self.days
        found = cache.get(days)
        if found is None:
            try:
                date = _EPOCH + _dt.timedelta(days=days)
            except OverflowError:
                raise UsageError("date out of range") from None
            if not generalized and 1950 <= date.year < 2050:
                found = b"\x17\x0d%02d%02d%02d" % (date.year % 100, date.month, date.day)
            else:
                found = b"\x18\x0f%04d%02d%02d" % (date.year, date.month, date.day)
            if len(cache) > 100_000:
                cache.clear()
            cache[days] = found
        return found

    def second(self, seconds: int) -> bytes:
        """``HHMMSSZ`` for the second ``seconds`` of the day."""
        found = self.seconds.get(seconds)
        if found is None:
            found = self.seconds[seconds] = b"%02d%02d%02dZ" % (
                seconds // 3600, seconds // 60 % 60, seconds % 60
            )
        return found

    def encode(self, when: _dt.datetime, what: str, *, generalized: bool = False) -> bytes:
        """The DER time TLV of ``when`` (UTC, whole seconds; fractions are dropped)."""
        try:
            delta = when - _EPOCH
        except TypeError:
            raise UsageError(f"{what} must be a timezone-aware datetime, not {when!r}") from None
        if not isinstance(delta, _dt.timedelta):
            raise UsageError(f"{what} must be a timezone-aware datetime, not {when!r}")
        return self.day(delta.days, generalized=generalized) + self.second(delta.seconds)


def _encode_entries(entries: Iterable[RevokedEntry], out: bytearray) -> None:
    """Append the DER of each entry to ``out``; validates as it goes (one pass, no sorting).

    This is the hot loop of :func:`build_crl` (a million iterations): caches and locals, one
    formatting operation per entry. An entry is at most 2 + 22 + 17 + 2 + 38 octets, so its
    length always fits the short form.
    """
    seen: set[int] = set()
    seen_add = seen.add
    encoder = _TimeEncoder()
    day_cache = encoder.days
    day = encoder.day
    second_cache = encoder.seconds
    second = encoder.second
    timedelta = _dt.timedelta
    epoch = _EPOCH
    reason_ext: dict[x509.ReasonFlags | None, bytes] = {f: ext for f, ext in _REASON_EXT.items()}
    reason_ext[None] = b""
    del reason_ext[x509.ReasonFlags.remove_from_crl]
    unspecified = x509.ReasonFlags.unspecified
    max_serial = MAX_SERIAL
    inv_head = _INVALIDITY_EXT_HEAD
    for entry in entries:
        serial = entry.serial
        if type(serial) is not int:
            if not isinstance(serial, int) or isinstance(serial, bool):
                raise UsageError(f"serial numbers are ints, not {type(serial).__name__}")
            serial = int(serial)
        if not 0 <= serial < max_serial:
            raise UsageError(f"serial number {serial} is outside 0 .. 2**159-1 (20 octets)")
        count = len(seen)
        seen_add(serial)
        if len(seen) == count:
            raise UsageError(f"serial number {serial:#x} is listed twice")
        try:
            delta = entry.revoked_at - epoch
        except TypeError:
            delta = None
        if type(delta) is not timedelta:
            raise UsageError(f"revoked_at must be a timezone-aware datetime, not {entry.revoked_at!r}")
        date = day_cache.get(delta.days) or day(delta.days, generalized=False)
        clock = second_cache.get(delta.seconds) or second(delta.seconds)
        n = (serial.bit_length() + 8) >> 3
        reason = entry.reason
        invalid = entry.invalidity_date
        if reason is unspecified and invalid is None:
            out += b"\x30%c\x02%c%b%b%b" % (
                n + len(date) + 9, n, serial.to_bytes(n, "big"), date, clock
            )
            continue
        try:
            ext = reason_ext[reason]
        except (KeyError, TypeError):
            raise UsageError(
                f"reason must be an x509.ReasonFlags other than removeFromCRL, not {reason!r}"
            ) from None
        if invalid is not None:
            ext += inv_head + encoder.encode(invalid, "invalidity_date", generalized=True)
        if ext:
            out += b"\x30%c\x02%c%b%b%b\x30%c%b" % (
                n + len(date) + len(ext) + 11, n, serial.to_bytes(n, "big"), date, clock,
                len(ext), ext,
            )
        else:
            out += b"\x30%c\x02%c%b%b%b" % (
                n + len(date) + 9, n, serial.to_bytes(n, "big"), date, clock
            )


def build_crl(
    issuer_cert: x509.Certificate,
    issuer_key: rsa.RSAPrivateKey,
    entries: Iterable[RevokedEntry],
    *,
    crl_number: int,
    this_update: _dt.datetime,
    next_update: _dt.datetime,
) -> bytes:
    """Encode and sign a CRL v2 (DER) with sha256WithRSAEncryption.

    ``entries`` is consumed once, in order (it may be a generator). Serial numbers must be
    ``0 <= serial < 2**159`` and unique; ``crl_number`` likewise; ``this_update`` must precede
    ``next_update``; every time must be timezone-aware. ``issuer_key`` must be the RSA key of
    ``issuer_cert``. Raises :class:`jpki.errors.UsageError` for bad arguments.
    """
    if not isinstance(issuer_key, rsa.RSAPrivateKey):
        raise UsageError("CRLs are signed with an RSA private key")
    if not isinstance(issuer_cert, x509.Certificate):
        raise UsageError("issuer_cert must be an x509.Certificate")
    issuer_pub = issuer_cert.public_key()
    if (
        not isinstance(issuer_pub, rsa.RSAPublicKey)
        or issuer_pub.public_numbers() != issuer_key.public_key().public_numbers()
    ):
        raise UsageError("issuer_key does not belong to issuer_cert")
    if isinstance(crl_number, bool) or not isinstance(crl_number, int):
        raise UsageError("crl_number must be an int")
    if not 0 <= crl_number < MAX_CRL_NUMBER:
        raise UsageError("crl_number must be in 0 .. 2**159-1 (20 octets)")
    this_update = _utc_seconds(this_update, "this_update")
    next_update = _utc_seconds(next_update, "next_update")
    if next_update <= this_update:
        raise UsageError("next_update must be later than this_update")

    revoked = bytearray()
    _encode_entries(entries, revoked)

    aki = _tlv(0x30, _tlv(0x80, _key_identifier(issuer_cert)))
    extensions = _extension(OID_AUTHORITY_KEY_IDENTIFIER, aki) + _extension(
        OID_CRL_NUMBER, der_integer(crl_number)
    )
    crl_extensions = _tlv(0xA0, _tlv(0x30, extensions))
    times = _TimeEncoder()
    head = (
        _VERSION_2
        + _SHA256_RSA
        + _subject_der(issuer_cert)
        + times.encode(this_update, "this_update")
        + times.encode(next_update, "next_update")
    )
    revoked_header = (b"\x30" + der_length(len(revoked))) if revoked else b""
    content_length = len(head) + len(revoked_header) + len(revoked) + len(crl_extensions)
    tbs = b"".join(
        (b"\x30", der_length(content_length), head, revoked_header, revoked, crl_extensions)
    )
    del revoked
    signature = issuer_key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    tail = _SHA256_RSA + _tlv(0x03, b"\x00" + signature)
    return b"".join((b"\x30", der_length(len(tbs) + len(tail)), tbs, tail))


# --------------------------------------------------------------------------- DER decoding
# Strict DER through jpki.der (read_header, expect, decode_integer, decode_oid, decode_time).


def _extensions(buf: bytes, start: int, stop: int) -> dict[str, tuple[bool, bytes]]:
    """Decode ``Extensions`` (the SEQUENCE content ``start:stop``): oid → (critical, value)."""
    found: dict[str, tuple[bool, bytes]] = {}
    pos = start
    if pos == stop:
        raise _Malformed("empty Extensions")
    while pos < stop:
        ext_start, ext_stop = _expect(buf, pos, stop, 0x30, "Extension")
        oid_start, oid_stop = _expect(buf, ext_start, ext_stop, 0x06, "extnID")
        oid = _object_identifier(buf[oid_start:oid_stop])
        tag, v_start, v_stop = _header(buf, oid_stop, ext_stop)
        critical = False
        if tag == 0x01:
            if v_stop - v_start != 1 or buf[v_start] != 0xFF:
                raise _Malformed("critical must be an explicit TRUE in DER")
            critical = True
            tag, v_start, v_stop = _header(buf, v_stop, ext_stop)
        if tag != 0x04 or v_stop != ext_stop:
            raise _Malformed("bad extnValue")
        if oid in found:
            raise _Malformed(f"extension {oid} appears twice")
        found[oid] = (critical, buf[v_start:v_stop])
        pos = ext_stop
    return found


def _decode_entry(buf: bytes, pos: int, end: int) -> RevokedEntry:
    """Fully decode the revokedCertificates entry whose SEQUENCE starts at ``pos``."""
    start, stop = _expect(buf, pos, end, 0x30, "revoked certificate")
    s_start, s_stop = _expect(buf, start, stop, 0x02, "userCertificate")
    if s_start == s_stop:
        raise _Malformed("empty serial number")
    # As lenient as the scanner: a non-minimal serial from another CA still matches its value.
    serial = int.from_bytes(buf[s_start:s_stop], "big", signed=True)
    return _decode_entry_tail(buf, serial, s_stop, stop)


def _decode_entry_tail(buf: bytes, serial: int, pos: int, stop: int) -> RevokedEntry:
    """Decode an entry's revocation date and extensions (``pos:stop``), generically."""
    revoked_at, pos = _read_time(buf, pos, stop)
    reason = x509.ReasonFlags.unspecified
    invalidity: _dt.datetime | None = None
    if pos < stop:
        e_start, e_stop = _expect(buf, pos, stop, 0x30, "crlEntryExtensions")
        if e_stop != stop:
            raise _Malformed("bytes after crlEntryExtensions")
        for oid, (critical, value) in _extensions(buf, e_start, e_stop).items():
            if oid == OID_REASON_CODE:
                if len(value) != 3 or value[0] != 0x0A or value[1] != 1:
                    raise _Malformed("bad reasonCode")
                flag = _REASON_BY_CODE.get(value[2])
                if flag is None:
                    raise _Malformed(f"unknown reason code {value[2]}")
                reason = flag
            elif oid == OID_INVALIDITY_DATE:
                tag, v_start, v_stop = _header(value, 0, len(value))
                if tag != 0x18 or v_stop != len(value):
                    raise _Malformed("invalidityDate is a GeneralizedTime")
                invalidity = _decode_time(tag, value[v_start:v_stop])
            elif critical:
                raise CRLError(
                    CRL_UNSUPPORTED_EXTENSION,
                    f"entry {serial:#x} has critical extension {oid}, which this loader does not process",
                )
    return RevokedEntry(serial, revoked_at, reason, invalidity)


# The entry extensions build_crl writes, byte for byte: lookups of such entries take a fast path.
_REASON_PREFIX = _extension(OID_REASON_CODE, b"\x0a\x01\x00")[:-1]
_INVALIDITY_PREFIX_FULL = _INVALIDITY_EXT_HEAD + b"\x18\x0f"
_EXT_REASON = b"\x30" + der_length(len(_REASON_PREFIX) + 1) + _REASON_PREFIX
_EXT_INVALIDITY = b"\x30" + der_length(len(_INVALIDITY_PREFIX_FULL) + 15) + _INVALIDITY_PREFIX_FULL
_EXT_BOTH = (
    b"\x30" + der_length(len(_REASON_PREFIX) + len(_INVALIDITY_PREFIX_FULL) + 16) + _REASON_PREFIX
)
_UNSPECIFIED = x509.ReasonFlags.unspecified
#: From this many entries on, the 86,400 times of day are decoded up front (about 0.1 s).
_WARM_CLOCKS_FROM = 20_000
_new_entry = tuple.__new__


class _EntryDecoder:
    """Decodes entries on lookup. Caches midnight of each day and the offset of each time of day
    (``midnight + offset`` is several times cheaper than building an aware datetime)."""

    __slots__ = ("buf", "clocks", "days")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.days: dict[bytes, _dt.datetime] = {}
        self.clocks: dict[bytes, _dt.timedelta] = {}

    def _midnight(self, raw: bytes, day_key: bytes) -> _dt.datetime:
        midnight = _decode_time(raw[0], raw[2 : len(day_key)] + b"000000Z")
        if len(self.days) > 65536:
            self.days.clear()
        self.days[day_key] = midnight
        return midnight

    def _clock(self, clock: bytes) -> _dt.timedelta:
        if not clock.isdigit():
            raise _Malformed("bad time of day")
        hours, minutes, seconds = int(clock[0:2]), int(clock[2:4]), int(clock[4:6])
        if hours > 23 or minutes > 59 or seconds > 59:
            raise _Malformed("bad time of day")
        offset = self.clocks[clock] = _dt.timedelta(hours=hours, minutes=minutes, seconds=seconds)
        return offset

    def warm_clocks(self) -> None:
        """Fill the time-of-day cache (86,400 entries; worth it for large CRLs)."""
        clocks = self.clocks
        timedelta = _dt.timedelta
        for hour in range(24):
            for minute in range(60):
                base = hour * 3600 + minute * 60
                prefix = b"%02d%02d" % (hour, minute)
                for second in range(60):
                    clocks[prefix + b"%02d" % second] = timedelta(seconds=base + second)

    def time(self, raw: bytes) -> _dt.datetime:
        """Decode a time TLV (tag, length, text) into an aware UTC datetime."""
        size = len(raw)
        if size == 15 and raw[0] == 0x17:
            day_key, clock, zulu = raw[:8], raw[8:14], raw[14]
        elif size == 17 and raw[0] == 0x18:
            day_key, clock, zulu = raw[:10], raw[10:16], raw[16]
        else:  # fractions of a second, or garbage
            if size < 2 or raw[1] != size - 2:
                raise _Malformed("bad time length")
            return _decode_time(raw[0], raw[2:])
        if zulu != 0x5A:
            raise _Malformed("time not in UTC")
        midnight = self.days.get(day_key)
        if midnight is None:
            midnight = self._midnight(raw, day_key)
        offset = self.clocks.get(clock)
        if offset is None:
            offset = self._clock(clock)
        return midnight + offset

    def decode(self, serial: int, packed: int) -> RevokedEntry:
        """The entry whose date and extensions the scanner packed as ``offset << 24 | length``.

        The hot path of a first lookup: a UTCTime whose day and time of day are cached, and no
        extension or build_crl's reason code; anything else goes to :meth:`decode_general`.
        (The scanner has checked that a UTCTime tag comes with 13 octets.)
        """
        buf = self.buf
        pos = packed >> 24
        size = packed & 0xFFFFFF
        if buf[pos] == 0x17 and buf[pos + 14] == 0x5A:
            midnight = self.days.get(buf[pos : pos + 8])
            offset = self.clocks.get(buf[pos + 8 : pos + 14])
            if midnight is not None and offset is not None:
                if size == 15:
                    return _new_entry(RevokedEntry, (serial, midnight + offset, _UNSPECIFIED, None))
                if size == 29 and buf.startswith(_EXT_REASON, pos + 15):
                    reason = _REASON_BY_CODE.get(buf[pos + 28])
                    if reason is not None:
                        return _new_entry(RevokedEntry, (serial, midnight + offset, reason, None))
        return self.decode_general(serial, pos, pos + size)

    def decode_general(self, serial: int, pos: int, end: int) -> RevokedEntry:
        """Decode the revocation date and extensions at ``pos:end``: build_crl's extension
        layouts byte for byte, anything else through the generic DER decoder."""
        buf = self.buf
        time_end = pos + 2 + buf[pos + 1]
        revoked_at = self.time(buf[pos:time_end])
        if time_end == end:
            return _new_entry(RevokedEntry, (serial, revoked_at, _UNSPECIFIED, None))
        ext = buf[time_end:end]
        size = len(ext)
        if size == 14 and ext.startswith(_EXT_REASON):
            reason = _REASON_BY_CODE.get(ext[13])
            if reason is not None:
                return _new_entry(RevokedEntry, (serial, revoked_at, reason, None))
        elif size == 28 and ext.startswith(_EXT_INVALIDITY):
            return _new_entry(
                RevokedEntry, (serial, revoked_at, _UNSPECIFIED, self.time(ext[11:28]))
            )
        elif size == 40 and ext.startswith(_EXT_BOTH) and ext[14:25] == _INVALIDITY_PREFIX_FULL:
            reason = _REASON_BY_CODE.get(ext[13])
            if reason is not None:
                return _new_entry(
                    RevokedEntry, (serial, revoked_at, reason, self.time(ext[23:40]))
                )
        return _decode_entry_tail(buf, serial, pos, end)

    def decode_all(self, index: dict[int, int | RevokedEntry]) -> None:
        """Replace every packed offset in ``index`` by its decoded entry, in CRL order."""
        decode = self.decode
        for serial, packed in index.items():
            if isinstance(packed, int):
                index[serial] = decode(serial, packed)


def _scan_entries(
    buf: bytes, start: int, stop: int
) -> tuple[dict[int, int | RevokedEntry], list[tuple[int, int]]]:
    """Index the revokedCertificates SEQUENCE content ``start:stop``.

    Maps each serial to ``time_offset << 24 | length`` where ``time_offset:time_offset+length``
    holds the entry's revocation date and extensions. Checks each entry's framing (SEQUENCE,
    INTEGER serial, a 13-octet UTCTime or 15-or-more-octet GeneralizedTime, optional extensions
    SEQUENCE ending the entry) and that no serial is listed twice; the contents are decoded on
    lookup. Also returns the (serial, packed) entries that may hold a critical extension (the
    bytes ``01 01 FF``, DER's TRUE, occur in them): the caller decodes those in full, so that
    one this loader does not process rejects the CRL. Hot loop: a million iterations.
    """
    index: dict[int, int | RevokedEntry] = {}  # packed offsets for now: decoded on demand
    count = 0
    pos = start
    from_bytes = int.from_bytes
    while pos < stop:
        if pos + 2 > stop or buf[pos] != 0x30:
            raise _Malformed(f"entry at offset {pos} is not a SEQUENCE")
        length = buf[pos + 1]
        body = pos + 2
        if length >= 0x80:
            count_octets = length & 0x7F
            if count_octets == 0 or count_octets > 2 or body + count_octets > stop:
                raise _Malformed(f"bad entry length at offset {pos}")
            length = from_bytes(buf[body : body + count_octets], "big")
            if length < 0x80 or buf[body] == 0:
                raise _Malformed(f"non-minimal entry length at offset {pos}")
            body += count_octets
        entry_end = body + length
        if entry_end > stop or length < 4 or buf[body] != 0x02:
            raise _Malformed(f"bad entry at offset {pos}")
        serial_len = buf[body + 1]
        serial_end = body + 2 + serial_len
        if serial_len == 0 or serial_len >= 0x80 or serial_end + 2 > entry_end:
            raise _Malformed(f"bad serial number at offset {pos}")
        time_tag = buf[serial_end]
        time_len = buf[serial_end + 1]
        time_end = serial_end + 2 + time_len
        if time_end > entry_end or not (
            (time_tag == 0x17 and time_len == 13) or (time_tag == 0x18 and 15 <= time_len < 0x80)
        ):
            raise _Malformed(f"bad revocation date at offset {pos}")
        if time_end != entry_end and (
            buf[time_end] != 0x30 or buf[time_end + 1] != entry_end - time_end - 2
        ):
            # crlEntryExtensions: one SEQUENCE that ends the entry (long form: rare).
            tag, _, ext_stop = _header(buf, time_end, entry_end)
            if tag != 0x30 or ext_stop != entry_end:
                raise _Malformed(f"bad entry extensions at offset {pos}")
        index[from_bytes(buf[body + 2 : serial_end], "big", signed=True)] = (
            serial_end << 24
        ) | (entry_end - serial_end)
        count += 1
        pos = entry_end
    if count != len(index):
        raise _Malformed("a serial number is listed twice")
    suspects: list[tuple[int, int]] = []
    hit = buf.find(b"\x01\x01\xff", start, stop)
    if hit >= 0:
        serials = list(index)
        # in CRL order, so sorted by offset; nothing is decoded yet: every value is an offset
        packed = cast("list[int]", list(index.values()))
        while hit >= 0:
            i = bisect.bisect_right(packed, (hit << 24) | 0xFFFFFF) - 1
            if i >= 0 and (not suspects or suspects[-1][0] != serials[i]):
                suspects.append((serials[i], packed[i]))
            hit = buf.find(b"\x01\x01\xff", hit + 1, stop)
    return index, suspects


#: Supported signature algorithms: AlgorithmIdentifier DER → (hash, key type).
_SIGNATURE_ALGORITHMS: dict[bytes, tuple[type[hashes.HashAlgorithm], str]] = {}
for _dotted, _hash, _kind in (
    ("1.2.840.113549.1.1.11", hashes.SHA256, "rsa"),
    ("1.2.840.113549.1.1.12", hashes.SHA384, "rsa"),
    ("1.2.840.113549.1.1.13", hashes.SHA512, "rsa"),
    ("1.2.840.10045.4.3.2", hashes.SHA256, "ec"),
    ("1.2.840.10045.4.3.3", hashes.SHA384, "ec"),
    ("1.2.840.10045.4.3.4", hashes.SHA512, "ec"),
):
    if _kind == "rsa":
        _SIGNATURE_ALGORITHMS[_tlv(0x30, _oid(_dotted) + b"\x05\x00")] = (_hash, _kind)
    _SIGNATURE_ALGORITHMS[_tlv(0x30, _oid(_dotted))] = (_hash, _kind)


def _verify_signature(
    issuer_cert: x509.Certificate, algorithm: bytes, signature: bytes, tbs: bytes
) -> None:
    supported = _SIGNATURE_ALGORITHMS.get(algorithm)
    if supported is None:
        raise CRLError(CRL_SIGNATURE_INVALID, "unsupported CRL signature algorithm")
    hash_cls, kind = supported
    public_key = issuer_cert.public_key()
    try:
        if kind == "rsa" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, tbs, padding.PKCS1v15(), hash_cls())
        elif kind == "ec" and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, tbs, ec.ECDSA(hash_cls()))
        else:
            raise CRLError(
                CRL_SIGNATURE_INVALID, "the CRL's signature algorithm does not fit the issuer's key"
            )
    except InvalidSignature:
        raise CRLError(CRL_SIGNATURE_INVALID, "CRL signature does not verify") from None
    except ValueError as exc:  # e.g. a signature of the wrong size for the key
        raise CRLError(CRL_SIGNATURE_INVALID, f"CRL signature does not verify: {exc}") from None


def _names_match(crl_issuer: bytes, issuer_cert: x509.Certificate) -> bool:
    subject = _subject_der(issuer_cert)
    if crl_issuer == subject:
        return True
    try:  # RFC 5280 §7.1 comparison (case and whitespace folding), done by asn1crypto
        return bool(_ax.Name.load(crl_issuer) == _ax.Name.load(subject))
    except Exception as exc:  # noqa: BLE001 - whatever asn1crypto raises on bad input is "malformed"
        raise _Malformed(f"bad issuer name: {exc}") from None


class LoadedCRL:
    """A parsed CRL whose signature was verified against its issuer. Build with :meth:`from_der`.

    Membership and lookup are one dict operation keyed by the int serial number; an entry is
    decoded on its first lookup and kept.
    """

    def __init__(
        self,
        *,
        der: bytes,
        issuer_cert: x509.Certificate,
        this_update: _dt.datetime,
        next_update: _dt.datetime | None,
        crl_number: int | None,
        authority_key_identifier: bytes | None,
        index: dict[int, int | RevokedEntry],
    ) -> None:
        """Use :meth:`from_der`."""
        self.der = der
        self.issuer_cert = issuer_cert
        self.this_update = this_update
        self.next_update = next_update
        self.crl_number = crl_number
        self.authority_key_identifier = authority_key_identifier
        # serial -> packed offset of the entry (see _scan_entries), or the decoded entry.
        self._index = index
        self._decoder = _EntryDecoder(der)

    @property
    def issuer(self) -> x509.Name:
        """The CRL issuer (checked to match the issuer certificate's subject)."""
        return self.issuer_cert.subject

    @classmethod
    def from_der(
        cls,
        der: bytes | bytearray | memoryview,
        issuer_cert: x509.Certificate,
        *,
        now: _dt.datetime | None = None,
        eager: bool = False,
    ) -> LoadedCRL:
        """Parse ``der``, check it against ``issuer_cert`` and, when ``now`` is given, its
        validity period. Raises :class:`CRLError` with the reason of the first failure (see the
        module docstring); never another exception for bad bytes.

        By default entries are decoded on their first lookup (fast loading: one check of a
        freshly fetched CRL). ``eager=True`` decodes every entry now (loading takes about three
        times as long; every lookup is then a single dict operation, and a bad entry is refused
        at once): for a CRL that is loaded once and consulted many times.
        """
        if not isinstance(der, (bytes, bytearray, memoryview)):
            raise UsageError("a CRL is given as bytes")
        if not isinstance(issuer_cert, x509.Certificate):
            raise UsageError("issuer_cert must be an x509.Certificate")
        if now is not None and (
            not isinstance(now, _dt.datetime) or now.tzinfo is None or now.utcoffset() is None
        ):
            raise UsageError("now must be a timezone-aware datetime")
        buf = bytes(der)
        try:
            crl = cls._parse(buf, issuer_cert)
            if len(crl._index) > _WARM_CLOCKS_FROM:
                crl._decoder.warm_clocks()
            if eager:
                crl._decoder.decode_all(crl._index)
        except _Malformed as exc:
            raise CRLError(CRL_MALFORMED, f"malformed CRL: {exc}") from None
        if now is not None:
            crl.check_time(now)
        return crl

    @classmethod
    def _parse(cls, buf: bytes, issuer_cert: x509.Certificate) -> LoadedCRL:
        end = len(buf)
        outer_start, outer_stop = _expect(buf, 0, end, 0x30, "CertificateList")
        if outer_stop != end:
            raise _Malformed("bytes after the CertificateList")
        tbs_start = outer_start
        tbs_content, tbs_stop = _expect(buf, tbs_start, outer_stop, 0x30, "TBSCertList")
        alg_start = tbs_stop
        _, alg_stop = _expect(buf, alg_start, outer_stop, 0x30, "signatureAlgorithm")
        sig_start, sig_stop = _expect(buf, alg_stop, outer_stop, 0x03, "signatureValue")
        if sig_stop != outer_stop:
            raise _Malformed("bytes after signatureValue")
        if sig_stop == sig_start or buf[sig_start] != 0:
            raise _Malformed("signatureValue must be a whole number of octets")
        algorithm = buf[alg_start:alg_stop]
        signature = buf[sig_start + 1 : sig_stop]

        # TBSCertList
        pos = tbs_content
        tag, start, stop = _header(buf, pos, tbs_stop)
        version = 0
        if tag == 0x02:
            version = _integer(buf, start, stop)
            if version != 1:
                raise _Malformed(f"unsupported CRL version {version + 1}")
            pos = stop
        _, inner_alg_stop = _expect(buf, pos, tbs_stop, 0x30, "signature")
        if buf[pos:inner_alg_stop] != algorithm:
            raise _Malformed("inner and outer signature algorithms differ")
        pos = inner_alg_stop
        _, issuer_stop = _expect(buf, pos, tbs_stop, 0x30, "issuer")
        issuer_der = buf[pos:issuer_stop]
        this_update, pos = _read_time(buf, issuer_stop, tbs_stop)
        next_update: _dt.datetime | None = None
        entries_start = entries_stop = pos
        extensions: dict[str, tuple[bool, bytes]] = {}
        if pos < tbs_stop and buf[pos] in (0x17, 0x18):
            next_update, pos = _read_time(buf, pos, tbs_stop)
        if pos < tbs_stop and buf[pos] == 0x30:
            entries_start, entries_stop = _expect(buf, pos, tbs_stop, 0x30, "revokedCertificates")
            pos = entries_stop
        if pos < tbs_stop:
            if version != 1:
                raise _Malformed("a v1 CRL has no extensions")
            wrap_start, wrap_stop = _expect(buf, pos, tbs_stop, 0xA0, "crlExtensions")
            ext_start, ext_stop = _expect(buf, wrap_start, wrap_stop, 0x30, "Extensions")
            if ext_stop != wrap_stop or wrap_stop != tbs_stop:
                raise _Malformed("bytes after crlExtensions")
            extensions = _extensions(buf, ext_start, ext_stop)
            pos = tbs_stop
        if pos != tbs_stop:
            raise _Malformed("bytes after the TBSCertList fields")
        if next_update is not None and next_update < this_update:
            raise _Malformed("nextUpdate precedes thisUpdate")

        crl_number: int | None = None
        aki: bytes | None = None
        unsupported: list[str] = []
        for oid, (critical, value) in extensions.items():
            if oid == OID_CRL_NUMBER:
                start, stop = _expect(value, 0, len(value), 0x02, "CRLNumber")
                if stop != len(value):
                    raise _Malformed("bytes after CRLNumber")
                crl_number = _integer(value, start, stop)
                if crl_number < 0:
                    raise _Malformed("negative CRL number")
            elif oid == OID_AUTHORITY_KEY_IDENTIFIER:
                start, stop = _expect(value, 0, len(value), 0x30, "AuthorityKeyIdentifier")
                if stop != len(value):
                    raise _Malformed("bytes after AuthorityKeyIdentifier")
                while start < stop:
                    tag, f_start, f_stop = _header(value, start, stop)
                    if tag == 0x80:
                        aki = value[f_start:f_stop]
                    start = f_stop
            elif critical:
                unsupported.append(oid)
        index, suspects = _scan_entries(buf, entries_start, entries_stop)

        # Which issuer?
        if not _names_match(issuer_der, issuer_cert):
            raise CRLError(CRL_ISSUER_MISMATCH, "the CRL's issuer is not the given certificate's subject")
        if aki is not None:
            try:
                ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except x509.ExtensionNotFound:
                ski = None
            except ValueError as exc:
                raise CRLError(CRL_ISSUER_MISMATCH, f"issuer certificate extensions: {exc}") from None
            if ski is not None and ski.value.digest != aki:
                raise CRLError(
                    CRL_ISSUER_MISMATCH, "the CRL's authority key identifier is not the issuer's key"
                )
        try:
            usage = issuer_cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            usage = None
        except ValueError as exc:
            raise CRLError(CRL_ISSUER_MISMATCH, f"issuer certificate extensions: {exc}") from None
        if usage is not None and not usage.crl_sign:
            raise CRLError(CRL_ISSUER_MISMATCH, "the issuer certificate may not sign CRLs (no cRLSign)")

        _verify_signature(issuer_cert, algorithm, signature, buf[tbs_start:tbs_stop])

        # What the signer said that this loader cannot honour.
        if unsupported:
            raise CRLError(
                CRL_UNSUPPORTED_EXTENSION,
                f"critical CRL extension {', '.join(unsupported)} is not supported (delta CRLs,"
                " issuing distribution points)",
            )
        for serial, packed in suspects:
            offset = packed >> 24
            _decode_entry_tail(buf, serial, offset, offset + (packed & 0xFFFFFF))
        return cls(
            der=buf,
            issuer_cert=issuer_cert,
            this_update=this_update,
            next_update=next_update,
            crl_number=crl_number,
            authority_key_identifier=aki,
            index=index,
        )

    # -- time

    def check_time(self, now: _dt.datetime) -> None:
        """Raise ``CRLError('crl-not-yet-valid')`` if ``now < this_update`` and
        ``CRLError('crl-expired')`` if ``next_update < now``."""
        if now.tzinfo is None or now.utcoffset() is None:
            raise UsageError("now must be timezone-aware")
        if now < self.this_update:
            raise CRLError(
                CRL_NOT_YET_VALID, f"CRL is not valid before {self.this_update.isoformat()}"
            )
        if self.next_update is not None and self.next_update < now:
            raise CRLError(CRL_EXPIRED, f"CRL expired at {self.next_update.isoformat()}")

    # -- entries

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, serial: object) -> bool:
        return serial in self._index

    def is_revoked(self, serial: int) -> bool:
        """Whether ``serial`` is listed (without decoding its entry)."""
        return serial in self._index

    def serials(self) -> Iterator[int]:
        """Listed serial numbers, in CRL order."""
        return iter(self._index)

    def lookup(self, serial: int) -> RevokedEntry | None:
        """The entry for ``serial``, or None when it is not listed.

        One dict lookup; a listed entry is decoded the first time and kept in place of its
        offset. Raises ``CRLError('crl-malformed')`` if that entry cannot be decoded (possible
        only when the CRL's signer wrote a bad entry: loading checks every entry's framing).
        """
        found = self._index.get(serial)
        if found is None or not isinstance(found, int):
            return found
        return self._decode(serial, found)

    def _decode(self, serial: int, packed: int) -> RevokedEntry:
        """Decode the entry of ``serial`` and keep it in place of its offset."""
        try:
            entry = self._decoder.decode(serial, packed)
        except _Malformed as exc:
            raise CRLError(CRL_MALFORMED, f"malformed CRL entry {serial:#x}: {exc}") from None
        self._index[serial] = entry
        return entry

    def __iter__(self) -> Iterator[RevokedEntry]:
        """Every entry, decoded, in CRL order."""
        decode = self._decode
        for serial, found in self._index.items():  # (replacing a value keeps the dict's order and size)
            yield decode(serial, found) if isinstance(found, int) else found

    def fingerprint(self) -> str:
        """SHA-256 of the DER, hex (to tell CRLs apart in logs and caches)."""
        return hashlib.sha256(self.der).hexdigest()
