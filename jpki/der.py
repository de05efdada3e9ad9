"""DER and BER by hand: the one place in ``jpki`` that encodes or walks ASN.1 bytes itself.

Everywhere else the libraries do it (``cryptography`` for certificates, CRLs and OCSP requests,
``asn1crypto`` for the rest). What is left here is what a library cannot do, or does too slowly
where it counts (``benchmarks/revocation.py --section codec`` measures each against its library
in the same run):

* the CRL codec (:mod:`jpki.revocation.crl`): ``cryptography``'s CRL builder is quadratic in the
  number of entries, and its parsed CRL builds an object per entry;
* OCSP responses (:mod:`jpki.revocation.ocsp`): ``cryptography``'s builder takes one
  SingleResponse, no singleExtensions, and stamps producedAt from the system clock;
* the framing of card data (:mod:`jpki.session`): BER-TLV with two-byte tags and 82-form lengths,
  and the size of a TLV from its first bytes, before the rest is read from the card;
* a CMS file read as a stream (:mod:`jpki.sign.cms`): headers, indefinite lengths included,
  without loading the signed content.

A leaf module: the standard library only. Every decoding error is a :class:`DerError` (a
``ValueError``) with a short reason; callers turn it into their own error (``crl-malformed``,
``malformedRequest``, ``ProtocolError``, ``VerificationError('malformed')``).

Three readers, three strictness levels, each named for what it accepts:

=========================  =========================================================
:func:`read_header`        strict DER in memory: low tag numbers, definite minimal lengths
:func:`read_tlv`           BER-TLV of card data in memory: multi-byte tags, any definite length
:func:`read_stream_header` BER from a stream: multi-byte tags, indefinite lengths (CMS)
=========================  =========================================================
"""

from __future__ import annotations

import datetime as _dt
from typing import Protocol

__all__ = [
    "ByteSource",
    "ByteStream",
    "DerError",
    "StreamHeader",
    "decode_integer",
    "decode_oid",
    "decode_time",
    "encode_header",
    "encode_integer",
    "encode_length",
    "encode_oid",
    "expect",
    "generalized_time",
    "has_more",
    "integer_content",
    "oid_content",
    "read_header",
    "read_oid",
    "read_stream_header",
    "read_time",
    "read_tlv",
    "seq",
    "tlv",
    "tlv_size",
]

_UTC = _dt.UTC


class DerError(ValueError):
    """The bytes are not the DER (or BER) expected here."""


# --------------------------------------------------------------------------- encoding


def encode_length(n: int) -> bytes:
    """A DER definite length: one octet below 128, else ``0x80 | k`` and ``k`` big-endian octets."""
    if n < 0:
        raise ValueError("a length is not negative")
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def encode_header(tag: int, length: int) -> bytes:
    """The identifier and length octets of a value of ``length`` content octets (low tag)."""
    return bytes((tag,)) + encode_length(length)


def tlv(tag: int, content: bytes) -> bytes:
    """A whole value: identifier (one octet), DER length, ``content``."""
    n = len(content)
    if n < 0x80:  # the usual case, without a call
        return bytes((tag, n)) + content
    return bytes((tag,)) + encode_length(n) + content


def seq(*parts: bytes) -> bytes:
    """A SEQUENCE of the already encoded ``parts``."""
    return tlv(0x30, b"".join(parts))


def integer_content(value: int) -> bytes:
    """Minimal two's complement: ``00`` before a high bit of a positive value, ``0`` is ``00``."""
    if value >= 0:
        return value.to_bytes((value.bit_length() + 8) // 8, "big")
    return value.to_bytes((~value).bit_length() // 8 + 1, "big", signed=True)


def encode_integer(value: int) -> bytes:
    """A DER INTEGER (tag, length, minimal two's complement content)."""
    return tlv(0x02, integer_content(value))


def oid_content(dotted: str) -> bytes:
    """The content octets of the OBJECT IDENTIFIER ``dotted`` (``"1.2.840.113549.1.1.11"``)."""
    try:
        arcs = [int(a) for a in dotted.split(".")]
    except ValueError:
        raise ValueError(f"not a dotted OID: {dotted!r}") from None
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40) or min(arcs) < 0:
        raise ValueError(f"not a valid OID: {dotted!r}")
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


def encode_oid(dotted: str) -> bytes:
    """A DER OBJECT IDENTIFIER."""
    return tlv(0x06, oid_content(dotted))


def generalized_time(when: _dt.datetime) -> bytes:
    """A DER GeneralizedTime ``YYYYMMDDHHMMSSZ`` of an aware datetime (UTC, whole seconds)."""
    return tlv(0x18, when.astimezone(_UTC).strftime("%Y%m%d%H%M%SZ").encode())


# --------------------------------------------------------------------------- strict DER, in memory


def read_header(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """Read the DER header at ``buf[pos:end]``: (tag, start of contents, end of contents),
    bounds-checked; only low-number tags and definite, minimal lengths are accepted."""
    if pos + 2 > end:
        raise DerError("truncated header")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise DerError("high tag number")
    first = buf[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 8:
            raise DerError("indefinite or oversized length")
        if pos + count > end:
            raise DerError("truncated length")
        length = int.from_bytes(buf[pos : pos + count], "big")
        if length < 0x80 or buf[pos] == 0:
            raise DerError("non-minimal length")
        pos += count
    if pos + length > end:
        raise DerError("content runs past its container")
    return tag, pos, pos + length


def expect(buf: bytes, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    """:func:`read_header` of a value that must have ``tag``: (start, end of contents)."""
    got, start, stop = read_header(buf, pos, end)
    if got != tag:
        raise DerError(f"{what}: expected tag {tag:#04x}, found {got:#04x}")
    return start, stop


def decode_integer(buf: bytes, start: int, stop: int) -> int:
    """The INTEGER whose content is ``buf[start:stop]`` (minimal two's complement only)."""
    if start == stop:
        raise DerError("empty INTEGER")
    if stop - start > 1 and (
        (buf[start] == 0 and buf[start + 1] < 0x80) or (buf[start] == 0xFF and buf[start + 1] >= 0x80)
    ):
        raise DerError("non-minimal INTEGER")
    return int.from_bytes(buf[start:stop], "big", signed=True)


def decode_oid(content: bytes) -> str:
    """Dotted text of an OBJECT IDENTIFIER's content octets (minimal arcs only).

    The one OID decoder of the project; code that holds a library object uses its own
    (``ObjectIdentifier.dotted_string``, asn1crypto's ``.dotted``) instead of the bytes.
    """
    if not content or content[-1] & 0x80:
        raise DerError("bad OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for octet in content:
        if value == 0 and octet == 0x80:
            raise DerError("non-minimal OBJECT IDENTIFIER arc")
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def read_oid(encoding: bytes) -> str:
    """Dotted text of a whole OBJECT IDENTIFIER (tag, length, content; nothing after it). The
    length may be in any definite form (BER, as a streamed CMS may write it); the arcs must be
    minimal (X.690 §8.19.2, BER and DER alike)."""
    tag, start, length = _tlv_head(encoding, 0, len(encoding), 4)
    if tag != b"\x06":
        raise DerError(f"OBJECT IDENTIFIER: expected tag 0x06, found {tag.hex()}")
    if start + length != len(encoding):
        raise DerError("the OBJECT IDENTIFIER does not fill its encoding")
    return decode_oid(encoding[start:])


def decode_time(tag: int, text: bytes) -> _dt.datetime:
    """UTCTime ``YYMMDDHHMMSSZ`` or GeneralizedTime ``YYYYMMDDHHMMSS[.f]Z`` → aware UTC."""
    try:
        if tag == 0x17:
            if len(text) != 13 or text[12] != 0x5A or not text[:12].isdigit():
                raise DerError("bad UTCTime")
            year = int(text[0:2])
            year += 2000 if year < 50 else 1900
            rest = text[2:12]
        elif tag == 0x18:
            if len(text) < 15 or text[-1] != 0x5A or not text[:14].isdigit():
                raise DerError("bad GeneralizedTime")
            fraction = text[14:-1]
            if fraction and (
                fraction[:1] != b"." or not fraction[1:].isdigit() or fraction.endswith(b"0")
            ):
                raise DerError("bad GeneralizedTime fraction")
            year = int(text[0:4])
            rest = text[4:14]
        else:
            raise DerError(f"expected a time, found tag {tag:#04x}")
        return _dt.datetime(
            year,
            int(rest[0:2]),
            int(rest[2:4]),
            int(rest[4:6]),
            int(rest[6:8]),
            int(rest[8:10]),
            tzinfo=_UTC,
        )
    except ValueError as exc:  # DerError included: "bad time: bad UTCTime"
        raise DerError(f"bad time: {exc}") from None


def read_time(buf: bytes, pos: int, end: int) -> tuple[_dt.datetime, int]:
    """The UTCTime or GeneralizedTime at ``buf[pos:end]`` and the position after it."""
    tag, start, stop = read_header(buf, pos, end)
    return decode_time(tag, buf[start:stop]), stop


# --------------------------------------------------------------------------- BER-TLV, in memory


def _tlv_head(buf: bytes, pos: int, end: int, max_length_octets: int) -> tuple[bytes, int, int]:
    """(tag octets, start of contents, length) of the BER-TLV header at ``buf[pos:end]``."""
    if pos >= end:
        raise DerError("truncated tag")
    tag_end = pos + 1
    if buf[pos] & 0x1F == 0x1F:  # subsequent tag octets: bit 8 set on all but the last
        while True:
            if tag_end >= end:
                raise DerError("truncated tag")
            octet = buf[tag_end]
            tag_end += 1
            if not octet & 0x80:
                break
            if tag_end - pos >= 3:
                raise DerError("tag number too long")
    if tag_end >= end:
        raise DerError("truncated length")
    first = buf[tag_end]
    start = tag_end + 1
    if first < 0x80:
        return bytes(buf[pos:tag_end]), start, first
    count = first & 0x7F
    if count == 0 or count > max_length_octets:
        raise DerError(f"unsupported length octet {first:02X}")
    if start + count > end:
        raise DerError("truncated length")
    return bytes(buf[pos:tag_end]), start + count, int.from_bytes(buf[start : start + count], "big")


def read_tlv(buf: bytes, pos: int, end: int, *, max_length_octets: int = 2) -> tuple[bytes, int, int]:
    """Read one BER-TLV data object (ISO/IEC 7816-4) at ``buf[pos:end]``: (tag octets, start,
    end of the value). Tags of up to three octets (``DF22``, ``FF20``); definite lengths in
    short form or ``81``/``82``… with up to ``max_length_octets`` octets, minimal or not (cards
    write ``82 00 xx``)."""
    tag, start, length = _tlv_head(buf, pos, end, max_length_octets)
    if start + length > end:
        raise DerError("truncated value")
    return tag, start, start + length


def tlv_size(prefix: bytes, *, max_length_octets: int = 2) -> int:
    """The size (header and value) of the BER-TLV that starts with ``prefix``: enough to know
    how much more to read (of a certificate or a card-info EF) when only its first bytes are in."""
    _, start, length = _tlv_head(prefix, 0, len(prefix), max_length_octets)
    return start + length


# --------------------------------------------------------------------------- BER, from a stream


class ByteSource(Protocol):
    """What :func:`read_stream_header` and :func:`has_more` read from (:class:`ByteStream`)."""

    pos: int

    def read(self, n: int) -> bytes:
        """The next ``n`` bytes (fewer only at the end of the input)."""
        ...

    def peek(self, n: int) -> bytes:
        """Up to ``n`` bytes ahead, not consumed."""
        ...


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class ByteStream:
    """A binary file-like object read with a small look-ahead buffer and a position.

    ``read(n)`` returns exactly ``n`` bytes or raises ``DerError("the file is truncated")``.
    """

    def __init__(self, fh: _Readable) -> None:
        self.fh = fh
        self.buf = b""
        self.pos = 0

    def peek(self, n: int) -> bytes:
        if len(self.buf) < n:
            self.buf += self.fh.read(max(n - len(self.buf), 4096))
        return self.buf[:n]

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            more = self.fh.read(n - len(self.buf))
            if not more:
                raise DerError("the file is truncated")
            self.buf += more
        data, self.buf = self.buf[:n], self.buf[n:]
        self.pos += n
        return data


class StreamHeader:
    """A BER header read by :func:`read_stream_header`: the first tag octet, the length (None:
    indefinite), the header's bytes and where the contents end in the stream (None: indefinite)."""

    __slots__ = ("end", "header", "length", "tag")

    def __init__(self, tag: int, length: int | None, header: bytes, end: int | None) -> None:
        self.tag = tag
        self.length = length
        self.header = header
        self.end = end

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)


def _take(src: ByteSource, n: int) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise DerError("the file is truncated")
    return data


def read_stream_header(src: ByteSource) -> StreamHeader:
    """Read the BER header at ``src``'s position: high tag numbers are skipped over (up to four
    more octets; ``tag`` is the first), lengths of up to four octets (minimal or not) or
    indefinite (constructed values only)."""
    first = _take(src, 1)[0]
    raw = bytes((first,))
    if first & 0x1F == 0x1F:  # high tag number: skip its octets
        for _ in range(4):
            b = _take(src, 1)
            raw += b
            if not b[0] & 0x80:
                break
        else:
            raise DerError("tag number too long")
    lb = _take(src, 1)[0]
    raw += bytes((lb,))
    length: int | None
    if lb < 0x80:
        length = lb
    elif lb == 0x80:
        if not first & 0x20:
            raise DerError("indefinite length on a primitive value")
        length = None
    elif lb <= 0x84:
        more = _take(src, lb & 0x7F)
        raw += more
        length = int.from_bytes(more, "big")
    else:
        raise DerError("length field too long")
    return StreamHeader(first, length, raw, None if length is None else src.pos + length)


def has_more(src: ByteSource, header: StreamHeader) -> bool:
    """True while the constructed value of ``header`` has more elements at ``src``'s position;
    at the end of an indefinite-length value, consumes its end-of-contents octets."""
    if header.end is not None:
        if src.pos > header.end:
            raise DerError("an element overruns its enclosing structure")
        return src.pos < header.end
    if src.peek(2) == b"\x00\x00":
        _take(src, 2)
        return False
    if not src.peek(1):
        raise DerError("the file is truncated (missing end of contents)")
    return True
