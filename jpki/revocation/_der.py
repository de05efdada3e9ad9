"""Strict DER, by hand, shared by the CRL and OCSP code (hot paths where asn1crypto objects cost
tens of times more): definite minimal lengths, low tag numbers, every byte accounted for."""

from __future__ import annotations


class DerError(ValueError):
    """The bytes are not the DER we expect."""


def der_length(n: int) -> bytes:
    """A DER definite length: one octet below 128, else ``0x80 | k`` and ``k`` big-endian octets."""
    if n < 0:
        raise ValueError("a length is not negative")
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + der_length(len(content)) + content


def seq(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def header(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """Read the TLV header at ``buf[pos:end]``: (tag, start of contents, end of contents),
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
