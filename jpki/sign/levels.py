"""Signature levels (ETSI baseline B, T, LT, LTA) of CMS signatures: the upgrade steps, the
archive timestamp, and the validation data a long-term signature embeds.

What each level adds to a CAdES signature (EN 319 122-1), as jpki makes it:

``T``
    a ``signature-time-stamp`` unsigned attribute (id-aa-signatureTimeStampToken): an RFC 3161
    token over the signature value, from any TSA (:mod:`jpki.tsa.client`).
``LT``
    the validation data that proves the signer's certificate and the TSA's were valid and
    unrevoked at the time the timestamp proves: the certificates (each one's path up to its
    root) in ``SignedData.certificates``, the CRLs and OCSP responses in ``SignedData.crls`` —
    an OCSP response as ``other`` revocation info of format ``id-ri-ocsp-response`` (RFC 5940),
    which makes the SignedData version 5. This is the placement EN 319 122-1 allows for the
    certificate and revocation values (and the one its archive-time-stamp-v3 expects); the
    ``certificate-values`` / ``revocation-values`` unsigned attributes are not used. The
    answers are fetched from the certificates' own OCSP responder (a fresh, nonced response)
    or CRL at signing time, or given as files, and are checked before they are embedded.
``LTA``
    an ``archive-time-stamp-v2`` unsigned attribute (id-aa-54, 1.2.840.113549.1.9.16.2.48;
    RFC 5126 §6.4.1, the CAdES-A of ETSI TS 101 733), whose imprint is the hash of the
    concatenation of: the encapContentInfo as encoded, the external data for a detached
    signature, the ``certificates`` and ``crls`` fields as encoded, then every field of the
    SignerInfo as encoded — the unsigned attributes being those present before this archive
    timestamp. Chosen over EN 319 122-1's archive-time-stamp-v3 (whose ats-hash-index-v3
    bookkeeping no tool here could check against): v2 is simple to make and to check exactly,
    and protects the same things. ``--extend LTA`` on an LTA signature adds one more archive
    timestamp (renewal), covering the earlier ones.

Every step keeps the signed part untouched (the signed attributes and the signature, and the
content) and rewrites the file around it: :func:`write_signed_data` copies the encapsulated
content in 64 KiB chunks, so upgrading a large attached ``.p7m`` stays in flat memory.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any, Literal, Protocol

from asn1crypto import cms, core
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .. import der
from ..errors import JpkiError, UsageError, VerificationError
from ..hashing import CHUNK_SIZE
from ..tsa.client import Timestamper
from ..verify.evidence import RevocationEvidence
from ..verify.timestamp import TimestampToken, signer_certificate

__all__ = [
    "LEVELS",
    "OID_ARCHIVE_TIMESTAMP_V2",
    "OID_ARCHIVE_TIMESTAMP_V3",
    "OID_SIGNATURE_TIMESTAMP",
    "Level",
    "LevelError",
    "ValidationData",
    "ValidationDataError",
    "ValidationDataSource",
    "ValidatorSource",
    "archive_imprint",
    "attribute",
    "level_rank",
    "signer_info_fields",
    "unsigned_attributes",
    "with_unsigned_attribute",
    "write_signed_data",
]

Level = Literal["B", "T", "LT", "LTA"]
LEVELS: tuple[Level, ...] = ("B", "T", "LT", "LTA")

OID_SIGNATURE_TIMESTAMP = "1.2.840.113549.1.9.16.2.14"
OID_ARCHIVE_TIMESTAMP_V2 = "1.2.840.113549.1.9.16.2.48"
OID_ARCHIVE_TIMESTAMP_V3 = "0.4.0.1733.2.4"
OID_RI_OCSP_RESPONSE = "1.3.6.1.5.5.7.16.2"


class LevelError(JpkiError):
    """A signature cannot be brought to the level asked for (already there, a part missing,
    an encoding that cannot be rewritten)."""

    code = "level_failed"


class ValidationDataError(JpkiError):
    """The validation data of a long-term signature could not be gathered: a certificate is
    revoked, untrusted, or no revocation source answered. ``reason`` is the validator's."""

    code = "validation_data_unavailable"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


def level_rank(level: str) -> int:
    """0 for B … 3 for LTA (UsageError for anything else)."""
    try:
        return [str(x) for x in LEVELS].index(level.upper())
    except ValueError:
        raise UsageError(f"unknown level {level!r}: use one of {', '.join(LEVELS)}") from None


# --------------------------------------------------------------------------- validation data

@dataclasses.dataclass(frozen=True)
class ValidationData:
    """What a long-term signature embeds: certificates, OCSP responses and CRLs (DER), and a
    line per certificate saying where its revocation answer came from."""

    certificates: tuple[bytes, ...] = ()
    ocsp: tuple[bytes, ...] = ()
    crls: tuple[bytes, ...] = ()
    sources: tuple[str, ...] = ()
    anchors: tuple[bytes, ...] = ()  # the roots the paths end at (also among certificates)

    def __add__(self, other: ValidationData) -> ValidationData:
        def merged(a: tuple[bytes, ...], b: tuple[bytes, ...]) -> tuple[bytes, ...]:
            return a + tuple(x for x in b if x not in a)
        return ValidationData(merged(self.certificates, other.certificates),
                              merged(self.ocsp, other.ocsp), merged(self.crls, other.crls),
                              self.sources + other.sources, merged(self.anchors, other.anchors))


class ValidationDataSource(Protocol):
    """Gathers the validation data of certificates: ``subjects`` are (certificate, kind
    ``'sign'``/``'auth'``/``'tsa'``, the time it must be proven valid at)."""

    def collect(self, subjects: Sequence[tuple[x509.Certificate, str, _dt.datetime]]) -> ValidationData:
        """The data proving every subject valid at its time; ValidationDataError otherwise."""
        ...


class _Gatherer(Protocol):
    def gather(self, cert: x509.Certificate, *, kind: str, at: _dt.datetime | None = None,
               evidence: RevocationEvidence | None = None) -> Any: ...


class ValidatorSource:
    """A :class:`ValidationDataSource` over ``jpki.verify.Validator.gather``: the certificates'
    own OCSP responder (then CRL) asked now, or the ``given`` answers (files) when there are."""

    def __init__(self, validator: _Gatherer, given: RevocationEvidence | None = None) -> None:
        self.validator = validator
        self.given = given

    def collect(self, subjects: Sequence[tuple[x509.Certificate, str, _dt.datetime]]) -> ValidationData:
        data = ValidationData()
        for cert, kind, at in subjects:
            gathered = self.validator.gather(cert, kind=kind, at=at, evidence=self.given)
            result = gathered.result
            what = "timestamp authority's" if kind == "tsa" else f"{kind}"
            if not result.ok:
                raise ValidationDataError(
                    f"cannot embed validation data: the {what} certificate "
                    f"{cert.subject.rfc4514_string()} does not validate at {at.isoformat()}: "
                    f"{result.message} ({result.reason})", reason=str(result.reason))
            certs = [cert.public_bytes(Encoding.DER)]
            anchors: tuple[bytes, ...] = ()
            if gathered.anchor is not None:
                anchors = (gathered.anchor.public_bytes(Encoding.DER),)
                certs.append(anchors[0])
            rev = result.revocation
            line = f"{kind} certificate: " + (f"{rev.method.upper()} {rev.status}" if rev is not None else "none")
            if rev is not None and rev.source:
                line += f", {rev.source}"
            data = data + ValidationData(tuple(certs), gathered.evidence.ocsp, gathered.evidence.crls,
                                         (line,), anchors)
        return data


# --------------------------------------------------------------------------- DER pieces

def _tlvs(content: bytes) -> list[bytes]:
    """The consecutive DER values of ``content`` (LevelError when it is not strict DER)."""
    out = []
    pos = 0
    try:
        while pos < len(content):
            _, _, stop = der.read_header(content, pos, len(content))
            out.append(content[pos:stop])
            pos = stop
    except der.DerError as exc:
        raise LevelError(f"the signer info is not DER ({exc}): it cannot be extended") from None
    return out


def signer_info_fields(signer_info_der: bytes) -> list[bytes]:
    """The fields of a SignerInfo (version, sid, digestAlgorithm, [0] signedAttrs,
    signatureAlgorithm, signature, [1] unsignedAttrs), each as encoded."""
    try:
        _, start, stop = der.read_header(signer_info_der, 0, len(signer_info_der))
    except der.DerError as exc:
        raise LevelError(f"the signer info is not DER ({exc})") from None
    return _tlvs(signer_info_der[start:stop])


def unsigned_attributes(fields: list[bytes]) -> list[bytes]:
    """The attributes of the [1] unsignedAttrs field among ``fields`` (each as encoded)."""
    if fields and fields[-1][0] == 0xA1:
        _, start, stop = der.read_header(fields[-1], 0, len(fields[-1]))
        return _tlvs(fields[-1][start:stop])
    return []


def _with_unsigned(fields: list[bytes], attributes: list[bytes]) -> list[bytes]:
    """``fields`` with the [1] unsignedAttrs holding ``attributes`` (none: the field left out)."""
    signed_part = fields[:-1] if fields and fields[-1][0] == 0xA1 else list(fields)
    if not attributes:
        return signed_part
    return [*signed_part, der.tlv(0xA1, b"".join(attributes))]


def with_unsigned_attribute(signer_info_der: bytes, attribute_der: bytes) -> bytes:
    """The SignerInfo with ``attribute_der`` appended to its unsigned attributes (the signed
    part, and the other unsigned attributes, as they were encoded)."""
    fields = signer_info_fields(signer_info_der)
    return der.tlv(0x30, b"".join(_with_unsigned(fields, [*unsigned_attributes(fields), attribute_der])))


def attribute(oid: str, value_der: bytes) -> bytes:
    """DER of an Attribute with one value."""
    return der.seq(core.ObjectIdentifier(oid).dump(), der.tlv(0x31, value_der))


def attribute_type(attribute_der: bytes) -> str:
    """The dotted type of an Attribute's encoding."""
    _, start, stop = der.read_header(attribute_der, 0, len(attribute_der))
    _, _, oid_stop = der.read_header(attribute_der, start, stop)
    return der.read_oid(attribute_der[start:oid_stop])


# --------------------------------------------------------------------------- timestamps

def signature_timestamp(signer_info_der: bytes, timestamper: Timestamper) -> tuple[bytes, bytes]:
    """Add a signature-time-stamp over the signature value: (new SignerInfo, token DER)."""
    info = cms.SignerInfo.load(signer_info_der)
    algorithm = info["digest_algorithm"]["algorithm"].native
    digest = hashlib.new(algorithm, info["signature"].native).digest()
    token = timestamper.stamp(algorithm, digest)
    return with_unsigned_attribute(signer_info_der, attribute(OID_SIGNATURE_TIMESTAMP, token)), token


def archive_imprint(algorithm: str, *, encap: Iterable[bytes], external: Iterable[bytes] | None,
                    certificates_raw: bytes | None, crls_raw: bytes | None,
                    signer_fields: list[bytes]) -> bytes:
    """The archive-time-stamp-v2 imprint (see the module docstring): ``encap`` the chunks of
    the encapContentInfo as encoded, ``external`` those of a detached signature's data,
    ``signer_fields`` the SignerInfo's fields with the unsigned attributes as they were before
    the archive timestamp."""
    h = hashlib.new(algorithm)
    for chunk in encap:
        h.update(chunk)
    if external is not None:
        for chunk in external:
            h.update(chunk)
    for part in (certificates_raw, crls_raw):
        if part is not None:
            h.update(part)
    for field in signer_fields:
        h.update(field)
    return h.digest()


def token_time(token_der: bytes) -> _dt.datetime:
    """The genTime of a TimeStampToken."""
    try:
        return TimestampToken.from_der(token_der).gen_time
    except VerificationError as exc:
        raise LevelError(str(exc)) from None


def token_certificate(token_der: bytes) -> x509.Certificate:
    """The certificate that signed a TimeStampToken (it must be included: certReq)."""
    try:
        cert = signer_certificate(token_der)
    except VerificationError as exc:
        raise LevelError(str(exc)) from None
    if cert is None:
        raise LevelError("the timestamp token does not include its TSA's certificate")
    return cert


# --------------------------------------------------------------------------- rewriting a file

def file_chunks(path: str | os.PathLike[str] | None, body: bytes | None, start: int,
                end: int) -> Iterator[bytes]:
    """Bytes ``start:end`` of a file (or of ``body``, a PEM file's decoded DER), in chunks."""
    if body is not None:
        yield body[start:end]
        return
    assert path is not None
    with open(path, "rb") as fh:
        fh.seek(start)
        left = end - start
        while left > 0:
            chunk = fh.read(min(CHUNK_SIZE, left))
            if not chunk:
                raise LevelError(f"{path} changed while it was being read")
            left -= len(chunk)
            yield chunk


def certificates_field(existing_raw: bytes | None, extra: Iterable[bytes]) -> bytes | None:
    """The [0] certificates field: what it held, then the ``extra`` certificates not yet in it."""
    held = _tlvs(existing_raw[der.read_header(existing_raw, 0, len(existing_raw))[1]:]) \
        if existing_raw else []
    for cert in extra:
        if cert not in held:
            held.append(cert)
    return der.tlv(0xA0, b"".join(held)) if held else None


def crls_field(existing_raw: bytes | None, crls: Iterable[bytes], ocsp: Iterable[bytes]) -> bytes | None:
    """The [1] crls field: what it held, then the CRLs and the OCSP responses (as RFC 5940
    other revocation info) not yet in it."""
    held = _tlvs(existing_raw[der.read_header(existing_raw, 0, len(existing_raw))[1]:]) \
        if existing_raw else []
    oid = core.ObjectIdentifier(OID_RI_OCSP_RESPONSE).dump()
    for crl in crls:
        if crl not in held:
            held.append(crl)
    for response in ocsp:
        other = der.tlv(0xA1, oid + response)
        if other not in held:
            held.append(other)
    return der.tlv(0xA1, b"".join(held)) if held else None


def signed_data_version(crls_raw: bytes | None, current_raw: bytes) -> bytes:
    """The SignedData version: 5 once ``crls`` holds other revocation info (RFC 5652 §5.1),
    else as it was."""
    if crls_raw and any(item[0] == 0xA1 for item in _tlvs(crls_raw[der.read_header(crls_raw, 0, len(crls_raw))[1]:])):
        return der.encode_integer(5)
    return current_raw


def write_signed_data(sink: IO[bytes], *, content_type_raw: bytes, version_raw: bytes,
                      digest_algorithms_raw: bytes, encap: Iterable[bytes], encap_length: int,
                      certificates_raw: bytes | None, crls_raw: bytes | None,
                      signer_infos_raw: bytes) -> None:
    """Write ContentInfo(SignedData) from its parts, ``encap`` streamed (``encap_length``
    bytes): definite DER lengths outside, the parts as given."""
    tail = (certificates_raw or b"") + (crls_raw or b"") + signer_infos_raw
    sd_len = len(version_raw) + len(digest_algorithms_raw) + encap_length + len(tail)
    sd_header = der.encode_header(0x30, sd_len)
    explicit = der.encode_header(0xA0, len(sd_header) + sd_len)
    ci_len = len(content_type_raw) + len(explicit) + len(sd_header) + sd_len
    sink.write(der.encode_header(0x30, ci_len) + content_type_raw + explicit + sd_header
               + version_raw + digest_algorithms_raw)
    written = 0
    for chunk in encap:
        sink.write(chunk)
        written += len(chunk)
    if written != encap_length:
        raise LevelError("the signed content changed while it was being copied")
    sink.write(tail)


def signer_infos_field(signer_info_der: bytes) -> bytes:
    """The SET OF SignerInfo holding one."""
    return der.tlv(0x31, signer_info_der)

