"""CMS SignedData (RFC 5652) in the CAdES-BES shape, signed by the card; and its verification.

Signing: the file is hashed in 64 KiB chunks (memory stays flat whatever its size); the signed
attributes are content-type, message-digest, signing-time and signing-certificate-v2 (RFC
5035); the signer's certificate is included; the card signs the DER of the attributes. A
detached signature (``.p7s``) holds no content. An attached one (``.p7m``) is written in one
pass: the DER lengths are known in advance (the file size, the modulus size), so the content
is copied and hashed on its way to the output, then the signer info follows.

Verification parses the outer DER/BER layers of the file itself and streams the embedded
content into the hash without holding it, so a large ``.p7m`` is verified in flat memory too;
the certificates and signer infos (small) are decoded with asn1crypto. It accepts what other
tools make: BER indefinite lengths, constructed OCTET STRINGs, PEM, SubjectKeyIdentifier
signer ids, signatures without signed attributes, RSA PKCS#1 v1.5 or PSS, ECDSA.

Levels (:mod:`jpki.sign.levels`): ``sign_file(level='T'|'LT'|'LTA')`` makes the B-level
signature beside the output and :func:`extend_cms` brings it to the level (a signature
timestamp, the validation data in ``certificates``/``crls``, an archive-time-stamp-v2);
``extend_cms`` upgrades any existing signature the same way. Verification reports the level
found, checks the signature timestamp's TSA (the proven time) and every archive timestamp, and
hands the embedded revocation values to the validator.

A leaf of the verification side: no card library is imported here.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import hmac
import io
import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from .. import der
from ..certinfo import cert_kind
from ..clock import Clock, SystemClock
from ..errors import UsageError, VerificationError
from ..fileio import atomic_output
from ..hashing import (  # (re-exported: the streaming half of signing)
    CHUNK_SIZE,
    SIGN_DIGESTS,
    BinarySource,
    HashedFile,
    HashingCancelled,
    hash_file,
    hash_for_signing,
    hash_stream,
    regular_file,
)
from ..tsa.client import Timestamper
from ..verify.evidence import RevocationEvidence
from ..verify.timestamp import TokenReason, check_token
from . import levels
from .report import (
    CertificateValidator,
    SignatureReport,
    VerificationReport,
    certificate_summary,
    check_certificate,
    check_key_usage,
    identity_of,
)

__all__ = [
    "CHUNK_SIZE",
    "DECODE_ERRORS",
    "OID_RI_OCSP_RESPONSE",
    "CmsLayout",
    "DigestSigner",
    "ExtendOutcome",
    "HashedFile",
    "HashingCancelled",
    "ParsedCms",
    "SignOutcome",
    "SignerCheck",
    "TimestampCheck",
    "check_nesting",
    "check_output",
    "check_signer_info",
    "check_timestamp_token",
    "cms_level",
    "decode_failure",
    "default_output",
    "extend_cms",
    "hash_file",
    "hash_for_signing",
    "hash_stream",
    "read_cms",
    "sign_file",
    "sign_hashed",
    "signed_attributes",
    "verify_cms",
]

#: Largest certificate set / signer infos / digest algorithm set accepted in a CMS file.
MAX_META_SIZE = 16 << 20

#: Deepest nesting of BER/DER values accepted in a CMS file, counted from the ContentInfo and
#: on into encodings held in OCTET and BIT STRINGs (eContent, extensions). A CMS with a
#: signature timestamp nests about 20 deep. asn1crypto and the walker below recurse once per
#: level, so without a bound 13 KB of nested indefinite lengths (``30 80`` ...) exhaust
#: Python's stack.
MAX_NESTING = 64

#: What asn1crypto and cryptography raise for bytes they cannot decode (UnicodeDecodeError is a
#: ValueError; cryptography's InvalidVersion, DuplicateExtension, UnsupportedGeneralNameType and
#: UnsupportedAlgorithm are not). Any of these while a signature is read or checked means
#: ``malformed``: a parse failure is a refusal, never an acceptance and never a traceback.
#: RecursionError stays a last guard behind MAX_NESTING.
DECODE_ERRORS: tuple[type[Exception], ...] = (
    ValueError, TypeError, LookupError, ArithmeticError, RecursionError,
    UnsupportedAlgorithm, x509.InvalidVersion, x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)

OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"

#: Digests accepted when verifying (sha1 is refused: it no longer protects a signature).
VERIFY_DIGESTS: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha224": hashes.SHA224, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
    "sha512": hashes.SHA512, "sha3_256": hashes.SHA3_256, "sha3_384": hashes.SHA3_384,
    "sha3_512": hashes.SHA3_512,
}


class DigestSigner(Protocol):
    """What signs: a certificate and a way to sign a digest (``CardSigner`` fits)."""

    certificate: x509.Certificate

    @property
    def key_size(self) -> int:
        """Bytes in a signature."""
        ...

    @property
    def asn1_certificate(self) -> asn1_x509.Certificate:
        """The certificate as an asn1crypto object."""
        ...

    def sign_digest(self, algorithm: str, digest: bytes) -> bytes:
        """A PKCS#1 v1.5 signature over ``digest``."""
        ...


def _malformed(message: str) -> VerificationError:
    return VerificationError("malformed", message)


def decode_failure(what: str, exc: BaseException) -> VerificationError:
    """``VerificationError('malformed')`` for a decoder's exception, in one line (asn1crypto's
    messages span several, and may quote the bytes at length)."""
    detail = " ".join(str(exc).split())
    if len(detail) > 160:
        detail = detail[:157] + "..."
    return _malformed(f"{what}: {type(exc).__name__}" + (f": {detail}" if detail else ""))


# --------------------------------------------------------------------------- hashing

# --------------------------------------------------------------------------- building

def _signing_time(when: _dt.datetime) -> cms.Time:
    when = when.astimezone(_dt.UTC).replace(microsecond=0)
    if 1950 <= when.year < 2050:  # RFC 5652 §11.3: UTCTime in these years
        return cms.Time({"utc_time": core.UTCTime(when)})
    return cms.Time({"generalized_time": core.GeneralizedTime(when)})


def _signing_certificate_v2(cert: asn1_x509.Certificate) -> tsp.SigningCertificateV2:
    """ESS signing-certificate-v2 naming ``cert`` by its SHA-256 hash, issuer and serial."""
    return tsp.SigningCertificateV2({"certs": [tsp.ESSCertIDv2({
        # sha256 is the DEFAULT hashAlgorithm: DER leaves it out
        "cert_hash": hashlib.sha256(cert.dump()).digest(),
        "issuer_serial": {
            "issuer": [asn1_x509.GeneralName({"directory_name": cert.issuer})],
            "serial_number": cert.serial_number,
        },
    })]})


def _attribute(kind: str, value_der: bytes) -> bytes:
    """DER of one CMS attribute with a single value (built from bytes: asn1crypto copies values
    put into an attribute the slow way, re-encoding them field by field)."""
    kind_der: bytes = cms.CMSAttributeType(kind).dump()
    body = kind_der + der.encode_header(0x31, len(value_der)) + value_der
    return der.encode_header(0x30, len(body)) + body


def signed_attributes(content_digest: bytes, cert: asn1_x509.Certificate,
                      signing_time: _dt.datetime) -> cms.CMSAttributes:
    """The CAdES-BES signed attributes: content-type (data), message-digest, signing-time,
    signing-certificate-v2; in DER order (a SET OF sorts its encodings)."""
    encoded = sorted([
        _attribute("content_type", cms.ContentType("data").dump()),
        _attribute("signing_time", _signing_time(signing_time).dump()),
        _attribute("message_digest", core.OctetString(content_digest).dump()),
        _attribute("signing_certificate_v2", _signing_certificate_v2(cert).dump()),
    ])
    body = b"".join(encoded)
    return cms.CMSAttributes.load(der.encode_header(0x31, len(body)) + body)


def _signer_info(cert: asn1_x509.Certificate, algorithm: str, attrs: cms.CMSAttributes,
                 signature: bytes) -> cms.SignerInfo:
    return cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber(
            {"issuer": cert.issuer, "serial_number": cert.serial_number})}),
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": algorithm}),
        "signed_attrs": attrs,
        "signature_algorithm": algos.SignedDigestAlgorithm(
            {"algorithm": "rsassa_pkcs1v15", "parameters": core.Null()}),
        "signature": signature,
    })


def _signed_data(cert: asn1_x509.Certificate, algorithm: str,
                 signer_info: cms.SignerInfo) -> cms.SignedData:
    """A SignedData without content (the shape of a detached signature)."""
    return cms.SignedData({
        "version": "v1",
        "digest_algorithms": [algos.DigestAlgorithm({"algorithm": algorithm})],
        "encap_content_info": {"content_type": "data"},
        "certificates": [cert],
        "signer_infos": [signer_info],
    })


@dataclasses.dataclass(frozen=True)
class SignOutcome:
    """What :func:`sign_file` made."""

    input: Path
    output: Path
    size: int
    digest_algorithm: str
    digest: bytes
    attached: bool
    signing_time: _dt.datetime
    signer_subject: str
    signer_serial: int
    level: str = "B"
    extension: ExtendOutcome | None = None

    @property
    def profile(self) -> str:
        """CAdES-BES, CAdES-T, CAdES-LT or CAdES-LTA."""
        return _PROFILES[f"B-{self.level}"]

    def to_json(self) -> dict[str, Any]:
        doc = {"file": str(self.input), "signature": str(self.output), "bytes_signed": self.size,
               "digest_algorithm": self.digest_algorithm, "digest": self.digest.hex(),
               "attached": self.attached, "format": f"CMS SignedData, {self.profile}",
               "level": f"B-{self.level}", "signing_time": self.signing_time.isoformat(),
               "signer": self.signer_subject, "serial": f"{self.signer_serial:X}"}
        if self.extension is not None:
            doc["timestamp_time"] = _iso_or_none(self.extension.timestamp_time)
            doc["timestamp_authority"] = self.extension.tsa
            doc["archive_timestamp_time"] = _iso_or_none(self.extension.archive_time)
            doc["validation_data"] = list(self.extension.validation)
        return doc


_PROFILES = {"B-B": "CAdES-BES", "B-T": "CAdES-T", "B-LT": "CAdES-LT", "B-LTA": "CAdES-LTA"}


def _iso_or_none(when: _dt.datetime | None) -> str | None:
    return None if when is None else when.isoformat()


@dataclasses.dataclass(frozen=True)
class ExtendOutcome:
    """What :func:`extend_cms` did: the level found and the level reached (``B-T``…), the
    signature timestamp's time and TSA, the archive timestamp's time, and where each embedded
    revocation answer came from."""

    input: Path
    output: Path
    before: str
    level: str
    timestamp_time: _dt.datetime | None
    tsa: str | None
    archive_time: _dt.datetime | None
    validation: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"file": str(self.input), "output": str(self.output), "level_before": self.before,
                "level": self.level, "format": f"CMS SignedData, {_PROFILES[self.level]}",
                "timestamp_time": _iso_or_none(self.timestamp_time), "timestamp_authority": self.tsa,
                "archive_timestamp_time": _iso_or_none(self.archive_time),
                "validation_data": list(self.validation)}


def default_output(path: Path, attached: bool) -> Path:
    """``FILE.p7s`` for a detached signature, ``FILE.p7m`` for an attached one."""
    return path.with_name(path.name + (".p7m" if attached else ".p7s"))


def check_output(src: Path, out: Path) -> None:
    """UsageError unless ``out`` can receive the signature of ``src`` (not a folder, not the
    input itself, in an existing folder)."""
    if out.exists() and (out.is_dir() or os.path.samefile(out, src)):
        raise UsageError(f"output {out}: " + ("is a directory" if out.is_dir()
                                              else "is the file being signed"))
    if not out.parent.is_dir():
        raise UsageError(f"output {out}: folder {out.parent} does not exist")


def sign_hashed(hashed: HashedFile, output: str | os.PathLike[str] | None, signer: DigestSigner,
                *, clock: Clock | None = None, level: str = "B", timestamper: Timestamper | None = None,
                source: levels.ValidationDataSource | None = None) -> SignOutcome:
    """Make the detached CMS signature of a hashed file and write it atomically (the second
    half of :func:`sign_file`); ``level`` as there."""
    src = hashed.path
    out = Path(output) if output is not None else default_output(src, False)
    check_output(src, out)
    _check_level_inputs(level, timestamper, source)
    if level.upper() != "B":
        with _b_level_first(out) as first:
            made = sign_hashed(hashed, first, signer, clock=clock)
            return _extended(made, out, level, timestamper, source, data=src)
    now = (clock or SystemClock()).now()
    cert = signer.asn1_certificate
    algorithm = hashed.digest_algorithm
    attrs = signed_attributes(hashed.digest, cert, now)
    signature = signer.sign_digest(algorithm, hashlib.new(algorithm, attrs.dump()).digest())
    info = cms.ContentInfo({
        "content_type": "signed_data",
        "content": _signed_data(cert, algorithm, _signer_info(cert, algorithm, attrs, signature)),
    })
    try:
        with atomic_output(out) as sink:
            sink.write(info.dump())
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    return SignOutcome(src, out, hashed.size, algorithm, hashed.digest, False, now,
                       signer.certificate.subject.rfc4514_string(), signer.certificate.serial_number)


def sign_file(path: str | os.PathLike[str], output: str | os.PathLike[str] | None,
              signer: DigestSigner, *, digest: str = "sha256", attached: bool = False,
              clock: Clock | None = None, level: str = "B", timestamper: Timestamper | None = None,
              source: levels.ValidationDataSource | None = None) -> SignOutcome:
    """Sign a file as CMS SignedData (CAdES-BES) with ``signer``; write it atomically.

    ``output`` defaults to ``FILE.p7s`` (detached) or ``FILE.p7m`` (``attached=True``). The
    file is read once, in :data:`CHUNK_SIZE` chunks; on any error no output file is left behind.
    ``level`` ``T``, ``LT`` or ``LTA`` adds a signature timestamp from ``timestamper``, the
    validation data from ``source``, an archive timestamp (see :mod:`jpki.sign.levels`): the
    B-level signature is made first beside the output, then extended into it
    (:func:`extend_cms`; an attached one is copied once more, in chunks).
    """
    if digest not in SIGN_DIGESTS:
        raise UsageError(f"unsupported digest {digest!r}: use one of {', '.join(SIGN_DIGESTS)}")
    src = Path(path)
    size = regular_file(src, "file to sign")
    out = Path(output) if output is not None else default_output(src, attached)
    check_output(src, out)
    _check_level_inputs(level, timestamper, source)
    if level.upper() != "B":
        with _b_level_first(out) as first:
            made = sign_file(src, first, signer, digest=digest, attached=attached, clock=clock)
            return _extended(made, out, level, timestamper, source, data=src)
    if not attached:
        return sign_hashed(hash_for_signing(src, digest), out, signer, clock=clock)
    now = (clock or SystemClock()).now()
    cert = signer.asn1_certificate
    try:
        with open(src, "rb", buffering=0) as fh, atomic_output(out) as sink:
            content_digest, done = _write_attached(fh, size, sink, signer, cert, digest, now)
            if done != size:
                raise UsageError(f"{src} changed size while it was being signed")
    except OSError as exc:
        raise UsageError(f"cannot sign {src} into {out}: {exc.strerror or exc}") from None
    return SignOutcome(src, out, size, digest, content_digest, True, now,
                       signer.certificate.subject.rfc4514_string(), signer.certificate.serial_number)


def _check_level_inputs(level: str, timestamper: Timestamper | None,
                        source: levels.ValidationDataSource | None) -> None:
    rank = levels.level_rank(level)
    if rank >= 1 and timestamper is None:
        raise UsageError(f"level {level.upper()} needs a timestamp authority (--tsa URL)")
    if rank >= 2 and source is None:
        raise UsageError(f"level {level.upper()} needs a source of validation data")


@contextlib.contextmanager
def _b_level_first(out: Path) -> Iterator[Path]:
    """A path beside ``out`` for the B-level signature that is then extended into ``out``;
    removed afterwards, whatever happened."""
    first = out.with_name(f".{out.name}.{secrets.token_hex(4)}.b-level")
    try:
        yield first
    finally:
        first.unlink(missing_ok=True)


def _extended(done: SignOutcome, out: Path, level: str, timestamper: Timestamper | None,
              source: levels.ValidationDataSource | None, *, data: Path) -> SignOutcome:
    """``done`` (a B-level signature) extended into ``out`` at ``level``."""
    extension = extend_cms(done.output, level, output=out, data=data, timestamper=timestamper,
                           source=source)
    return dataclasses.replace(done, output=out, level=extension.level.removeprefix("B-"),
                               extension=extension)


def extend_cms(path: str | os.PathLike[str], level: str, *, output: str | os.PathLike[str] | None = None,
               data: str | os.PathLike[str] | None = None, timestamper: Timestamper | None = None,
               source: levels.ValidationDataSource | None = None) -> ExtendOutcome:
    """Bring the CMS signature in ``path`` to ``level`` (``T``, ``LT`` or ``LTA``), written
    atomically to ``output`` (default: in place).

    The signed part (content, signed attributes, signature) is kept byte for byte; what the
    level needs and the signature lacks is added (see :mod:`jpki.sign.levels`): a signature
    timestamp from ``timestamper``; the validation data from ``source``, proving the signer's
    and the TSA's certificates at the time the timestamp states; an archive timestamp, which
    for a detached signature also covers ``data``. A signature whose content is at hand (an
    attached one, or ``data``) is checked first: a broken one is not extended.
    Raises LevelError (already at that level, an archive timestamp present, not DER…),
    UsageError (a missing input), VerificationError (a broken signature),
    TimestampError/ValidationDataError (the TSA or the revocation sources).
    """
    target = levels.level_rank(level)
    if target == 0:
        raise UsageError("--extend takes T, LT or LTA")
    src = Path(path)
    regular_file(src, "signature file")
    out = Path(output) if output is not None else src
    data_path = Path(data) if data is not None else None
    if data_path is not None:
        regular_file(data_path, "data file")
    try:
        with open(src, "rb") as fh:
            parsed = read_cms(fh)
    except OSError as exc:
        raise UsageError(f"cannot read {src}: {exc.strerror or exc}") from None
    except VerificationError as exc:
        raise levels.LevelError(f"{src} is not a CMS signature that can be extended ({exc.reason}: {exc})") from None
    if len(parsed.signer_infos) != 1 or parsed.content_type != OID_DATA or parsed.layout is None:
        raise levels.LevelError(f"{src}: only a CMS with one signer over data can be extended")
    layout = parsed.layout
    si_der = parsed.signer_infos[0].dump()
    fields = levels.signer_info_fields(si_der)
    types = [levels.attribute_type(a) for a in levels.unsigned_attributes(fields)]
    has_values = bool(parsed.crls or parsed.ocsp_responses)
    archived = any(t in (levels.OID_ARCHIVE_TIMESTAMP_V2, levels.OID_ARCHIVE_TIMESTAMP_V3) for t in types)
    before = cms_level(levels.OID_SIGNATURE_TIMESTAMP in types, has_values, archived)
    if archived:
        raise levels.LevelError(f"{src} already holds an archive timestamp ({before}); renewing "
                                "archive timestamps is not supported")
    if target <= levels.level_rank(before.removeprefix("B-")):
        raise levels.LevelError(f"{src} is already at level {before}")
    try:
        signer = _check_before_extending(parsed, data_path)
    except VerificationError as exc:
        raise levels.LevelError(f"{src}: the signature does not verify ({exc.reason}: {exc}): not extended") from None
    ts_token = None
    if levels.OID_SIGNATURE_TIMESTAMP in types:
        ts_token = _attr_values(parsed.signer_infos[0]["unsigned_attrs"], "signature_time_stamp_token")[0].dump()
    else:
        if timestamper is None:
            raise UsageError(f"{src} has no signature timestamp: give a timestamp authority (--tsa URL)")
        si_der, ts_token = levels.signature_timestamp(si_der, timestamper)
    ts_time = levels.token_time(ts_token)
    tsa_cert = levels.token_certificate(ts_token)
    certs_raw, crls_raw, version_raw = layout.certificates_raw, layout.crls_raw, layout.version_raw
    validation: tuple[str, ...] = ()
    if target >= 2 and not has_values:
        if source is None:
            raise UsageError("level LT needs a source of validation data")
        kind = cert_kind(signer)
        gathered = source.collect([(signer, kind if kind in ("sign", "auth") else "sign", ts_time),
                                   (tsa_cert, "tsa", ts_time)])
        certs_raw = levels.certificates_field(certs_raw, gathered.certificates)
        crls_raw = levels.crls_field(crls_raw, gathered.crls, gathered.ocsp)
        version_raw = levels.signed_data_version(crls_raw, version_raw)
        validation = gathered.sources
    archive_time = None
    if target == 3:
        if timestamper is None:
            raise UsageError("level LTA needs a timestamp authority (--tsa URL)")
        if not parsed.attached and data_path is None:
            raise UsageError(f"{src} is a detached signature: its archive timestamp covers the "
                             "signed file too: give it with --data FILE")
        algorithm = parsed.signer_infos[0]["digest_algorithm"]["algorithm"].native
        digest = levels.archive_imprint(
            algorithm, encap=levels.file_chunks(src, layout.body, layout.encap_start, layout.encap_end),
            external=None if parsed.attached or data_path is None else _data_chunks(data_path),
            certificates_raw=certs_raw, crls_raw=crls_raw,
            signer_fields=levels.signer_info_fields(si_der))
        ats = timestamper.stamp(algorithm, digest)
        si_der = levels.with_unsigned_attribute(
            si_der, levels.attribute(levels.OID_ARCHIVE_TIMESTAMP_V2, ats))
        archive_time = levels.token_time(ats)
    reached = levels.LEVELS[target]
    try:
        with atomic_output(out) as sink:
            levels.write_signed_data(
                sink, content_type_raw=layout.content_type_raw, version_raw=version_raw,
                digest_algorithms_raw=layout.digest_algorithms_raw,
                encap=levels.file_chunks(src, layout.body, layout.encap_start, layout.encap_end),
                encap_length=layout.encap_end - layout.encap_start, certificates_raw=certs_raw,
                crls_raw=crls_raw, signer_infos_raw=levels.signer_infos_field(si_der))
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    return ExtendOutcome(src, out, before, f"B-{reached}", ts_time,
                         tsa_cert.subject.rfc4514_string(), archive_time, validation)


def _check_before_extending(parsed: ParsedCms, data_path: Path | None) -> x509.Certificate:
    """The signer's certificate, after checking the signature when its content is at hand
    (VerificationError for a broken one)."""
    info = parsed.signer_infos[0]
    if parsed.attached or data_path is not None:
        if parsed.attached:
            digest_of: Callable[[str], bytes | None] = parsed.content_digests.get
        else:
            assert data_path is not None
            digest_of = lambda a: hash_file(data_path, a)[0] if a in VERIFY_DIGESTS else None  # noqa: E731
        check = check_signer_info(info, parsed.certificates, parsed.content_type, digest_of,
                                  mismatch_reason="wrong-data" if data_path else "tampered")
        return check.certificate
    return _load_certificate(_find_signer_cert(info["sid"], parsed.certificates))


def _write_attached(fh: BinarySource, size: int, sink: IO[bytes], signer: DigestSigner,
                    cert: asn1_x509.Certificate, digest: str,
                    now: _dt.datetime) -> tuple[bytes, int]:
    """Write ContentInfo(SignedData) with the content inside, in one pass over ``fh``.

    The signer info comes after the content; its length is fixed in advance (same attributes,
    a digest and a signature of known sizes), so the outer DER lengths are written first.
    """
    digest_len = hashlib.new(digest).digest_size

    def tail(content_digest: bytes, signature: bytes) -> tuple[bytes, bytes, bytes]:
        attrs = signed_attributes(content_digest, cert, now)
        sd = _signed_data(cert, digest, _signer_info(cert, digest, attrs, signature))
        return sd["version"].dump(), sd["digest_algorithms"].dump(), \
            sd["certificates"].dump() + sd["signer_infos"].dump()

    version, algs, template = tail(bytes(digest_len), bytes(signer.key_size))
    data_oid = core.ObjectIdentifier(OID_DATA).dump()
    octets_header = der.encode_header(0x04, size)
    explicit_len = len(octets_header) + size
    explicit_header = der.encode_header(0xA0, explicit_len)
    encap_len = len(data_oid) + len(explicit_header) + explicit_len
    encap_header = der.encode_header(0x30, encap_len)
    sd_len = len(version) + len(algs) + len(encap_header) + encap_len + len(template)
    sd_header = der.encode_header(0x30, sd_len)
    outer_explicit = der.encode_header(0xA0, len(sd_header) + sd_len)
    signed_data_oid = core.ObjectIdentifier(OID_SIGNED_DATA).dump()
    ci_len = len(signed_data_oid) + len(outer_explicit) + len(sd_header) + sd_len
    sink.write(der.encode_header(0x30, ci_len) + signed_data_oid + outer_explicit + sd_header
               + version + algs + encap_header + data_oid + explicit_header + octets_header)
    digests, done = hash_stream(fh, [digest], sink=sink, limit=size)
    if done != size or fh.read(1):
        raise UsageError("the file changed size while it was being signed")
    content_digest = digests[digest]
    attrs = signed_attributes(content_digest, cert, now)
    signature = signer.sign_digest(digest, hashlib.new(digest, attrs.dump()).digest())
    _, _, real_tail = tail(content_digest, signature)
    if len(real_tail) != len(template):
        raise VerificationError("malformed", "internal error: the signer info changed length")
    sink.write(real_tail)
    return content_digest, done


# --------------------------------------------------------------------------- parsing

class _Input(der.ByteStream):
    """A byte source with a small look-ahead buffer and a position, for the DER walker; it can
    also feed a run of bytes to hashers without keeping them."""

    def __init__(self, fh: BinarySource) -> None:
        super().__init__(fh)
        self.source = fh

    def stream(self, n: int, hashers: dict[str, Any]) -> None:
        """Feed the next ``n`` bytes to every hasher, in chunks, without keeping them."""
        if self.buf:
            head = self.buf[:n]
            for h in hashers.values():
                h.update(head)
            self.buf = self.buf[len(head):]
            self.pos += len(head)
            n -= len(head)
        buf = bytearray(CHUNK_SIZE)
        view = memoryview(buf)
        while n > 0:
            got = self.source.readinto(view[:min(CHUNK_SIZE, n)])
            if not got:
                raise _malformed("the file is truncated inside the signed content")
            for h in hashers.values():
                h.update(view[:got])
            n -= got
            self.pos += got


def _expect(src: _Input, tag: int, what: str) -> der.StreamHeader:
    tlv = der.read_stream_header(src)
    if tlv.tag != tag:
        raise _malformed(f"expected {what} (tag {tag:02X}), found tag {tlv.tag:02X}")
    return tlv


def _read_raw(src: _Input, tlv: der.StreamHeader, depth: int, budget: int = MAX_META_SIZE) -> bytes:
    """The whole encoding of ``tlv`` (header included), indefinite lengths resolved by walking;
    ``depth`` is how many values enclose ``tlv`` in the file. The encoding is checked against
    :data:`MAX_NESTING` here, before any decoder sees it."""
    if depth >= MAX_NESTING:
        raise _nested_too_deep()
    if tlv.length is not None:
        if tlv.length > budget:
            raise _malformed(f"an element of {tlv.length} bytes is over the limit")
        raw = tlv.header + src.read(tlv.length)
        check_nesting(raw, depth)
        return raw
    parts = [tlv.header]
    used = len(tlv.header)
    while der.has_more(src, tlv):
        child = der.read_stream_header(src)
        raw = _read_raw(src, child, depth + 1, budget - used)
        parts.append(raw)
        used += len(raw)
    parts.append(b"\x00\x00")
    return b"".join(parts)


def _nested_too_deep() -> VerificationError:
    return _malformed(f"the encoding nests more than {MAX_NESTING} levels deep")


def check_nesting(data: bytes, depth: int = 0) -> None:
    """Raise ``VerificationError('malformed')`` if the BER/DER values in ``data`` (enclosed by
    ``depth`` values) nest deeper than :data:`MAX_NESTING`.

    A cheap pre-scan of what decoders would otherwise recurse into, with a stack instead of
    recursion: each constructed value counts a level, and so does an OCTET or BIT STRING whose
    contents start like an encoding (DER inside DER: extensions, eContent, timestamp tokens),
    which is then scanned too (the one recursion, bounded by the limit). Anything that does
    not parse is left for the decoder to refuse.
    """
    _scan_nesting(memoryview(data), 0, len(data), depth)


def _scan_nesting(data: memoryview, pos: int, end: int, depth: int) -> bool:
    """Scan ``data[pos:end]``; False when it is not a sequence of BER values."""
    ends: list[int | None] = []  # the open constructed values: end offset, None if indefinite
    while True:
        while ends:
            top = ends[-1]
            if top is None or pos < top:
                break
            ends.pop()
            if pos > top:
                return False
        if pos >= end:
            return not ends
        if ends and ends[-1] is None and data[pos] == 0 and pos + 1 < end and data[pos + 1] == 0:
            ends.pop()
            pos += 2
            continue
        tag = data[pos]
        pos += 1
        if tag & 0x1F == 0x1F:
            while pos < end and data[pos] & 0x80:
                pos += 1
            pos += 1
        if pos >= end:
            return False
        first = data[pos]
        pos += 1
        length: int | None
        if first < 0x80:
            length = first
        elif first == 0x80:
            length = None
        else:
            count = first & 0x7F
            if count > 8 or pos + count > end:
                return False
            length = int.from_bytes(data[pos:pos + count], "big")
            pos += count
        if length is not None and pos + length > end:
            return False
        level = depth + len(ends) + 1
        if tag & 0x20:
            if level > MAX_NESTING:
                raise _nested_too_deep()
            ends.append(None if length is None else pos + length)
            continue
        if length is None:
            return False
        if tag in (0x03, 0x04):  # an encoding inside a BIT/OCTET STRING counts one more level
            start = pos + (1 if tag == 0x03 else 0)
            if start < pos + length and (data[start] & 0x20 or data[start] in (0x03, 0x04)):
                if level > MAX_NESTING:  # (so this recursion is bounded too)
                    raise _nested_too_deep()
                _scan_nesting(data, start, pos + length, level)
        pos += length


def _hash_content(src: _Input, tlv: der.StreamHeader, hashers: dict[str, Any], depth: int = 0) -> int:
    """Stream an OCTET STRING's bytes (primitive, or constructed of OCTET STRINGs) into the
    hashers; returns how many content bytes went in."""
    if depth > 8:
        raise _malformed("OCTET STRING nested too deep")
    if tlv.tag == 0x04:
        assert tlv.length is not None
        src.stream(tlv.length, hashers)
        return tlv.length
    if tlv.tag != 0x24:
        raise _malformed(f"the signed content is not an OCTET STRING (tag {tlv.tag:02X})")
    total = 0
    while der.has_more(src, tlv):
        total += _hash_content(src, der.read_stream_header(src), hashers, depth + 1)
    return total


@dataclasses.dataclass
class CmsLayout:
    """Where the parts of a SignedData lie in its file, for a rewrite that copies the content
    (``jpki sign --extend``) and for the archive timestamp's hash: the raw encodings of the
    small parts, and the offsets of the encapsulated content info (which may be large) in the
    bytes read (the file, or the decoded body of a PEM file: ``body``)."""

    content_type_raw: bytes
    version_raw: bytes
    digest_algorithms_raw: bytes
    encap_start: int
    encap_end: int
    certificates_raw: bytes | None
    crls_raw: bytes | None
    signer_infos_raw: bytes
    body: bytes | None = None


@dataclasses.dataclass
class ParsedCms:
    """The parts of a CMS SignedData file, the embedded content reduced to its digests.

    ``crls`` and ``ocsp_responses`` are the revocation values of ``SignedData.crls`` (CRLs, and
    OCSP responses as ``id-ri-ocsp-response`` other revocation info, RFC 5940), DER."""

    content_type: str
    digest_algorithms: list[str]
    attached: bool
    content_digests: dict[str, bytes]
    content_size: int | None
    certificates: list[asn1_x509.Certificate]
    signer_infos: list[cms.SignerInfo]
    crls: list[bytes] = dataclasses.field(default_factory=list)
    ocsp_responses: list[bytes] = dataclasses.field(default_factory=list)
    layout: CmsLayout | None = None


def _oid(raw: bytes, what: str) -> str:
    try:
        return der.read_oid(raw)
    except der.DerError as exc:
        raise _malformed(f"bad {what}: {exc}") from None


_PEM = re.compile(rb"-----BEGIN (?:PKCS7|CMS)-----(.*?)-----END (?:PKCS7|CMS)-----", re.DOTALL)


def read_cms(fh: BinarySource) -> ParsedCms:
    """Parse a CMS SignedData (DER, BER or PEM) from ``fh``; hash any embedded content with
    every digest algorithm it lists. Raises ``VerificationError('malformed')`` for anything
    that does not decode (and OSError when ``fh`` cannot be read), nothing else. Every
    encoding kept (certificates, signer infos) nests at most :data:`MAX_NESTING` deep."""
    head = fh.read(64)
    if head.lstrip().startswith(b"-----BEGIN"):
        text = head + fh.read(64 << 20)
        match = _PEM.search(text)
        if not match:
            raise _malformed("a PEM file without a PKCS7/CMS block")
        try:
            body = base64.b64decode(b"".join(match.group(1).split()), validate=True)
        except ValueError:
            raise _malformed("the PEM block is not valid base64") from None
        parsed = read_cms(io.BytesIO(body))
        if parsed.layout is not None:
            parsed.layout.body = body
        return parsed
    src = _Input(_Chain(head, fh))
    if not src.peek(1):
        raise _malformed("the file is empty")
    try:
        return _read_signed_data(src)
    except VerificationError:
        raise
    except der.DerError as exc:
        raise _malformed(str(exc)) from None
    except DECODE_ERRORS as exc:
        raise decode_failure("cannot decode the CMS structure", exc) from None


class _Chain:
    """``head`` then the rest of ``fh``, as one readable stream."""

    def __init__(self, head: bytes, fh: BinarySource) -> None:
        self.head = head
        self.fh = fh

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n < 0:
                data, self.head = self.head + self.fh.read(), b""
                return data
            data, self.head = self.head[:n], self.head[n:]
            if len(data) < n:
                data += self.fh.read(n - len(data))
            return data
        return self.fh.read(n)

    def readinto(self, view: memoryview, /) -> int | None:
        if self.head:
            n = min(len(view), len(self.head))
            view[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        return self.fh.readinto(view)


def _read_signed_data(src: _Input) -> ParsedCms:
    ci = der.read_stream_header(src)
    if ci.tag != 0x30:
        raise _malformed("not a CMS file (it does not start with a SEQUENCE)")
    ctype_raw = _read_raw(src, _expect(src, 0x06, "the content type"), 1)
    ctype = _oid(ctype_raw, "content type")
    if ctype != OID_SIGNED_DATA:
        raise _malformed(f"not a CMS SignedData (content type {ctype})")
    explicit = _expect(src, 0xA0, "[0] content")
    sd = _expect(src, 0x30, "SignedData")
    version_raw = _read_raw(src, _expect(src, 0x02, "the SignedData version"), 3, 16)
    algs_raw = _read_raw(src, _expect(src, 0x31, "the digest algorithms"), 3)
    digest_algorithms = [a["algorithm"].native for a in cms.DigestAlgorithms.load(algs_raw)]
    encap_start = src.pos
    encap = _expect(src, 0x30, "the encapsulated content info")
    content_type = _oid(_read_raw(src, _expect(src, 0x06, "the content type"), 4, 64), "content type")
    attached = False
    digests: dict[str, bytes] = {}
    size: int | None = None
    if der.has_more(src, encap):
        econtent = _expect(src, 0xA0, "[0] eContent")
        if der.has_more(src, econtent):
            hashers = {a: hashlib.new(a) for a in digest_algorithms if a in VERIFY_DIGESTS}
            size = _hash_content(src, der.read_stream_header(src), hashers)
            digests = {a: h.digest() for a, h in hashers.items()}
            attached = True
            if der.has_more(src, econtent):
                raise _malformed("extra data after the signed content")
        if der.has_more(src, encap):
            raise _malformed("extra data in the encapsulated content info")
    encap_end = src.pos
    certificates: list[asn1_x509.Certificate] = []
    signer_infos: list[cms.SignerInfo] | None = None
    certs_raw = crls_raw = sis_raw = None
    crls: list[bytes] = []
    ocsp_responses: list[bytes] = []
    while der.has_more(src, sd):
        tlv = der.read_stream_header(src)
        raw = _read_raw(src, tlv, 3)
        if tlv.tag == 0xA0 and certs_raw is None and crls_raw is None and sis_raw is None:
            certs_raw = raw  # [0] IMPLICIT CertificateSet
            for choice in cms.CertificateSet.load(b"\x31" + raw[1:]):
                if choice.name == "certificate":
                    certificates.append(choice.chosen)
        elif tlv.tag == 0xA1 and crls_raw is None and sis_raw is None:
            crls_raw = raw  # [1] IMPLICIT RevocationInfoChoices: CRLs and OCSP responses
            _revocation_values(raw, crls, ocsp_responses)
        elif tlv.tag == 0x31 and sis_raw is None:
            sis_raw = raw
            signer_infos = list(cms.SignerInfos.load(raw))
        else:
            raise _malformed(f"unexpected element (tag {tlv.tag:02X}) in SignedData")
    if signer_infos is None or sis_raw is None:
        raise _malformed("SignedData without signer infos")
    for outer in (explicit, ci):
        if der.has_more(src, outer):
            raise _malformed("extra data after the SignedData")
    if src.peek(1):
        raise _malformed("extra bytes after the end of the CMS structure")
    layout = CmsLayout(ctype_raw, version_raw, algs_raw, encap_start, encap_end, certs_raw,
                       crls_raw, sis_raw)
    return ParsedCms(content_type, digest_algorithms, attached, digests, size,
                     certificates, signer_infos, crls, ocsp_responses, layout)


#: RFC 5940: an OCSP response as other revocation info of SignedData.crls.
OID_RI_OCSP_RESPONSE = "1.3.6.1.5.5.7.16.2"


def _revocation_values(raw: bytes, crls: list[bytes], ocsp_responses: list[bytes]) -> None:
    """The CRLs and OCSP responses (DER) of a [1] RevocationInfoChoices; other kinds are
    skipped (they are not relied on)."""
    for choice in cms.RevocationInfoChoices.load(b"\x31" + raw[1:]):
        if choice.name == "crl":
            crls.append(choice.chosen.dump())
        elif choice.name == "other":
            other = choice.chosen
            if other["other_rev_info_format"].dotted == OID_RI_OCSP_RESPONSE:
                ocsp_responses.append(other["other_rev_info"].dump())


# --------------------------------------------------------------------------- checking

@dataclasses.dataclass(frozen=True)
class TimestampCheck:
    """A timestamp token (RFC 3161) whose imprint and signature were checked: its time, the
    TSA's subject and certificate (whose path and revocation are checked apart)."""

    time: _dt.datetime
    tsa: str
    digest_algorithm: str
    certificate: x509.Certificate | None = None

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time.isoformat(), "tsa": self.tsa,
                "digest_algorithm": self.digest_algorithm,
                "tsa_certificate_validated": False}


@dataclasses.dataclass(frozen=True)
class SignerCheck:
    """A signer info whose signature and message digest were checked."""

    certificate: x509.Certificate
    digest_algorithm: str
    signature_algorithm: str
    signing_time: _dt.datetime | None
    signing_certificate_attr: bool
    signed_attrs: bool
    timestamp: TimestampCheck | None


def _attr_values(attrs: cms.CMSAttributes, name: str) -> list[Any]:
    found = [a for a in attrs if a["type"].native == name]
    if len(found) > 1:
        raise _malformed(f"the signed attribute {name} appears more than once")
    if not found:
        return []
    values = list(found[0]["values"])
    if len(values) != 1:
        raise _malformed(f"the attribute {name} must have exactly one value")
    return values


def _find_signer_cert(sid: cms.SignerIdentifier,
                      certs: list[asn1_x509.Certificate]) -> asn1_x509.Certificate:
    if sid.name == "issuer_and_serial_number":
        want = sid.chosen
        for cert in certs:
            if cert.serial_number == want["serial_number"].native and (
                    cert.issuer.dump() == want["issuer"].dump() or cert.issuer == want["issuer"]):
                return cert
    elif sid.name == "subject_key_identifier":
        kid = sid.chosen.native
        for cert in certs:
            if cert.key_identifier == kid:
                return cert
    raise _malformed("the signer's certificate is not included in the signature")


def _verify_raw_signature(cert: x509.Certificate, algo: algos.SignedDigestAlgorithm,
                          digest_algorithm: str, data: bytes | None, digest: bytes,
                          signature: bytes) -> str:
    """Check ``signature`` over ``data`` (whose ``digest_algorithm`` digest is ``digest``).
    Returns the mechanism name; raises VerificationError('tampered'/'malformed')."""
    try:
        mech: str = algo.signature_algo
    except ValueError:
        raise _malformed(f"unsupported signature algorithm {algo['algorithm'].dotted}") from None
    try:
        implied = algo.hash_algo
    except ValueError:
        implied = None
    if implied is not None and mech != "rsassa_pss" and implied != digest_algorithm:
        raise _malformed(f"the signature algorithm uses {implied} but the digest is {digest_algorithm}")
    hash_cls = VERIFY_DIGESTS[digest_algorithm]
    key = cert.public_key()
    try:
        if mech == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, digest, padding.PKCS1v15(), Prehashed(hash_cls()))
        elif mech == "rsassa_pss" and isinstance(key, rsa.RSAPublicKey):
            params = algo["parameters"]
            pss_hash = params["hash_algorithm"]["algorithm"].native
            mgf_hash = params["mask_gen_algorithm"]["parameters"]["algorithm"].native
            if pss_hash not in VERIFY_DIGESTS or mgf_hash not in VERIFY_DIGESTS:
                raise _malformed(f"unsupported RSASSA-PSS hash {pss_hash}/{mgf_hash}")
            pss = padding.PSS(padding.MGF1(VERIFY_DIGESTS[mgf_hash]()), params["salt_length"].native)
            if pss_hash == digest_algorithm:
                key.verify(signature, digest, pss, Prehashed(hash_cls()))
            elif data is not None:
                key.verify(signature, data, pss, VERIFY_DIGESTS[pss_hash]())
            else:
                raise _malformed("RSASSA-PSS hash differs from the digest algorithm")
        elif mech == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(Prehashed(hash_cls())))
        elif mech in ("ed25519", "ed448") and isinstance(
                key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            if data is None:
                raise _malformed(f"{mech} without signed attributes is not supported")
            key.verify(signature, data)
        else:
            raise _malformed(f"signature algorithm {mech} does not fit the certificate's key")
    except InvalidSignature:
        raise VerificationError("tampered", "the signature does not verify with the signer's "
                                "certificate: the signed attributes or the signature were changed") from None
    except DECODE_ERRORS as exc:
        raise decode_failure("cannot check the signature", exc) from None
    return mech


def _check_signing_cert_attr(attrs: cms.CMSAttributes, cert: asn1_x509.Certificate) -> bool:
    """True if a signing-certificate(-v2) attribute is present; it must name ``cert``."""
    v2 = _attr_values(attrs, "signing_certificate_v2")
    v1 = _attr_values(attrs, "signing_certificate")
    if not v2 and not v1:
        return False
    for values, hash_of in ((v2, lambda ident: ident["hash_algorithm"]["algorithm"].native),
                            (v1, lambda ident: "sha1")):
        if not values:
            continue
        ids = list(values[0]["certs"])
        if not ids:
            raise _malformed("an empty signing-certificate attribute")
        first = ids[0]
        algorithm = hash_of(first)
        if algorithm not in VERIFY_DIGESTS and algorithm != "sha1":
            raise _malformed(f"unsupported hash {algorithm} in the signing-certificate attribute")
        if not hmac.compare_digest(hashlib.new(algorithm, cert.dump()).digest(),
                                   first["cert_hash"].native):
            raise VerificationError("tampered", "the signing-certificate attribute names another "
                                    "certificate than the one that verifies the signature")
        serial = first["issuer_serial"]
        if serial.native is not None and serial["serial_number"].native != cert.serial_number:
            raise VerificationError("tampered", "the signing-certificate attribute names another "
                                    "serial number")
    return True


def _signing_time_of(attrs: cms.CMSAttributes) -> _dt.datetime | None:
    values = _attr_values(attrs, "signing_time")
    if not values:
        return None
    return _aware(values[0].native, "the signing-time attribute")


def _aware(when: Any, what: str) -> _dt.datetime:
    """``when`` if it is a datetime with a time zone (a GeneralizedTime without one, or of
    year 0, is not a time a certificate can be checked at)."""
    if not isinstance(when, _dt.datetime) or when.utcoffset() is None:
        raise _malformed(f"{what} is not a time in UTC")
    return when


def check_signer_info(signer_info: cms.SignerInfo, certificates: list[asn1_x509.Certificate],
                      content_type: str, content_digest: Callable[[str], bytes | None],
                      *, mismatch_reason: str = "tampered", data: bytes | None = None,
                      check_timestamp: bool = True) -> SignerCheck:
    """Check one signer info: the message digest against the content, the signature against
    the signer's certificate, the signing-certificate attribute, and a signature timestamp.

    ``content_digest(algorithm)`` returns the content's digest (None if it cannot); a mismatch
    raises ``VerificationError(mismatch_reason)`` (``tampered`` for embedded content,
    ``wrong-data`` for data given separately). ``data`` is the content itself when it is small
    and at hand (timestamp tokens). Other failures raise ``tampered`` or ``malformed``: any
    part that does not decode (asn1crypto and cryptography decode lazily, so that happens
    here, not in :func:`read_cms`) is ``malformed``, never another exception. The certificate
    returned is decoded in full (see :func:`_load_certificate`).
    """
    try:
        return _check_signer_info(signer_info, certificates, content_type, content_digest,
                                  mismatch_reason=mismatch_reason, data=data,
                                  check_timestamp=check_timestamp)
    except VerificationError:
        raise
    except DECODE_ERRORS as exc:
        raise decode_failure("cannot decode the signer info", exc) from None


def _load_certificate(cert_asn1: asn1_x509.Certificate) -> x509.Certificate:
    """The signer's certificate for cryptography, with every field decoded now.

    cryptography decodes the version, names, validity, extensions and key on first use: a
    field that does not decode must be refused as ``malformed`` here, not raise later in a
    report, a validator or a relying party (an unknown key algorithm, a version 5, a name that
    is not UTF-8).
    """
    try:
        cert = x509.load_der_x509_certificate(cert_asn1.dump())
        _ = (cert.version, cert.serial_number, cert.not_valid_before_utc, cert.not_valid_after_utc,
             cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), list(cert.extensions),
             cert.public_key())
    except DECODE_ERRORS as exc:
        raise decode_failure("the signer's certificate cannot be decoded", exc) from None
    return cert


def _check_signer_info(signer_info: cms.SignerInfo, certificates: list[asn1_x509.Certificate],
                       content_type: str, content_digest: Callable[[str], bytes | None],
                       *, mismatch_reason: str, data: bytes | None,
                       check_timestamp: bool) -> SignerCheck:
    digest_algorithm = signer_info["digest_algorithm"]["algorithm"].native
    if digest_algorithm not in VERIFY_DIGESTS:
        raise _malformed(f"unsupported or weak digest algorithm {digest_algorithm}")
    cert_asn1 = _find_signer_cert(signer_info["sid"], certificates)
    cert = _load_certificate(cert_asn1)
    content = content_digest(digest_algorithm)
    if content is None:
        raise _malformed(f"the content was not hashed with {digest_algorithm} "
                         "(the digest algorithm is not listed in the SignedData)")
    attrs = signer_info["signed_attrs"]
    # the encoding as received, taken before its children are looked at (asn1crypto would
    # otherwise re-encode the SET, slowly); the signature covers it as a SET OF, not as [0]
    has_attrs = not isinstance(attrs, core.Void)
    encoded = b"\x31" + attrs.dump()[1:] if has_attrs else b""
    signature = signer_info["signature"].native
    if not has_attrs:
        if content_type != OID_DATA:
            raise _malformed("signed attributes are required for this content type")
        try:
            mech = _verify_raw_signature(cert, signer_info["signature_algorithm"],
                                         digest_algorithm, data, content, signature)
        except VerificationError as exc:
            if exc.reason != "tampered" or mismatch_reason != "wrong-data":
                raise
            raise VerificationError("wrong-data", "the data does not match the signature (no "
                                    "signed attributes: a changed signature looks the same)") from None
        signing_time, cades = None, False
    else:
        ct = _attr_values(attrs, "content_type")
        md = _attr_values(attrs, "message_digest")
        if not ct or not md:
            raise _malformed("the signed attributes lack content-type or message-digest")
        if ct[0].dotted != content_type:
            raise VerificationError("tampered", "the content-type attribute does not match the content")
        if not hmac.compare_digest(md[0].native, content):
            if mismatch_reason == "wrong-data":
                raise VerificationError("wrong-data", "the data does not match the signature "
                                        "(its digest differs from the signed message digest)")
            raise VerificationError("tampered", "the signed content was changed: its digest "
                                    "differs from the signed message digest")
        mech = _verify_raw_signature(cert, signer_info["signature_algorithm"], digest_algorithm,
                                     encoded, hashlib.new(digest_algorithm, encoded).digest(),
                                     signature)
        cades = _check_signing_cert_attr(attrs, cert_asn1)
        signing_time = _signing_time_of(attrs)
    timestamp = _check_timestamp(signer_info, signature) if check_timestamp else None
    return SignerCheck(cert, digest_algorithm, mech, signing_time, cades, has_attrs, timestamp)


def _check_timestamp(signer_info: cms.SignerInfo, signature: bytes) -> TimestampCheck | None:
    """Check a signature-time-stamp-token unsigned attribute, if present."""
    unsigned = signer_info["unsigned_attrs"]
    if isinstance(unsigned, core.Void):  # (.native would decode every unsigned attribute)
        return None
    tokens = _attr_values(unsigned, "signature_time_stamp_token")
    if not tokens:
        return None
    return check_timestamp_token(tokens[0], lambda alg: hashlib.new(alg, signature).digest(),
                                 "the timestamp token was made for another signature")


def check_timestamp_token(token: cms.ContentInfo, imprint: Callable[[str], bytes | None],
                          mismatch: str) -> TimestampCheck:
    """Check an RFC 3161 TimeStampToken with :func:`jpki.verify.timestamp.check_token` (the one
    place: a SignedData over a TSTInfo with one signer, whose signed attributes — the ESS
    signingCertificate included — and signature verify with the TSA certificate it includes)
    whose message imprint is ``imprint(algorithm)``: ``tampered`` with ``mismatch`` otherwise,
    ``tampered`` for a signature that does not hold, ``malformed`` for the rest. The TSA
    certificate's profile, path and revocation are the validator's business (``kind='tsa'``)."""
    try:
        token_der = token.dump()
    except DECODE_ERRORS as exc:
        raise decode_failure("cannot decode the timestamp token", exc) from None
    try:
        checked, cert = check_token(token_der, imprint=imprint, profile=False)
    except VerificationError as exc:
        if exc.reason == TokenReason.IMPRINT_MISMATCH:
            raise VerificationError("tampered", mismatch) from None
        reason = "tampered" if exc.reason == TokenReason.BAD_SIGNATURE else "malformed"
        raise VerificationError(reason, f"timestamp token ({exc.reason}): {exc}") from None
    assert cert is not None
    return TimestampCheck(checked.gen_time, cert.subject.rfc4514_string(), checked.hash_algorithm, cert)


# --------------------------------------------------------------------------- verifying a file

def _timestamp_json(ts: TimestampCheck, validator: CertificateValidator | None,
                    evidence: RevocationEvidence | None, kind: str) -> tuple[dict[str, Any], str | None]:
    """The report of one timestamp, its TSA's certificate validated at the token's time; and
    why it cannot be trusted (None when it can, or when there is no validator)."""
    data = ts.to_json()
    data["kind"] = kind
    if validator is None or ts.certificate is None:
        data["tsa_certificate_validated"] = None if validator is None else False
        return data, None
    checked = check_certificate(ts.certificate, validator, kind="tsa", at=ts.time, time_proven=True,
                                evidence=evidence)
    data["tsa_certificate_validated"] = checked.ok
    data["tsa_validation"] = checked.to_json()
    if checked.ok:
        return data, None
    return data, (f"the {kind} cannot be trusted: the TSA certificate {ts.tsa} is not valid at "
                  f"{ts.time.isoformat()}: {checked.message}")


def _revocation_tail(revocation: dict[str, Any], at: _dt.datetime, proven: bool) -> str:
    """What the revocation evidence says, in words, for a signature found valid."""
    method = str(revocation.get("method", "")).upper()
    origin = revocation.get("origin")
    where = f" ({origin})" if origin in ("embedded", "given") else ""
    if revocation.get("status") == "revoked":
        when = revocation.get("revoked_at") or "an unknown time"
        by = "proven by the timestamp" if proven else "claimed"
        return (f"certificate path valid; signing certificate revoked on {when} "
                f"({revocation.get('reason')}), after the signature time {at.isoformat()} {by}: "
                f"valid at that time ({method}{where})")
    return f"certificate path valid; {method} says {revocation['status']}{where}"


def _signature_report(check: SignerCheck, *, expected: Literal["sign", "auth"],
                      validator: CertificateValidator | None, clock: Clock | None,
                      profile: str, details: dict[str, Any],
                      claimed_time: _dt.datetime | None = None,
                      claimed_source: str = "signing-time attribute, claimed by the signer",
                      evidence: RevocationEvidence | None = None, level: str | None = None,
                      archive: Sequence[tuple[TimestampCheck, str]] = (),
                      timestamp_kind: str = "signature timestamp",
                      ) -> SignatureReport:
    """Key usage, identity and the certificate check of a signer whose signature is sound.

    With a signature timestamp whose TSA certificate validates (at the token's time, with the
    ``evidence``), the signer's certificate is validated at the time it proves, and a
    revocation after that time leaves the signature valid (the report says when and why).
    ``archive`` are the archive or document timestamps over the signature (checked, kind),
    whose TSAs are validated the same way. A TSA that does not validate makes the signature
    ``untrusted``.
    """
    cert = check.certificate
    problems: list[str] = []
    timestamp = None
    proven: _dt.datetime | None = None
    if check.timestamp is not None:
        timestamp, problem = _timestamp_json(check.timestamp, validator, evidence, timestamp_kind)
        at, source = check.timestamp.time, timestamp_kind
        if problem is not None:
            problems.append(problem)
        elif timestamp.get("tsa_certificate_validated"):
            proven = check.timestamp.time
            source = f"{timestamp_kind}, its TSA certificate validated"
    elif check.signing_time is not None:
        at, source = check.signing_time, "signing-time attribute, claimed by the signer"
    elif claimed_time is not None:
        at, source = claimed_time, claimed_source
    else:
        at, source = (clock or SystemClock()).now(), "none in the signature: checked now"
    archived = []
    for ats, kind in archive:
        data, problem = _timestamp_json(ats, validator, evidence, kind)
        archived.append(data)
        if problem is not None:
            problems.append(problem)
    signer = certificate_summary(cert)
    # the key that signed, as its certificate says (what was expected only for a foreign one)
    key = signer["kind"] if signer["kind"] in ("sign", "auth") else expected
    common: dict[str, Any] = {
        "signer": signer, "identity": identity_of(cert), "key": key,
        "digest_algorithm": check.digest_algorithm,
        "signature_algorithm": check.signature_algorithm, "profile": profile,
        "signing_time": at, "time_source": source, "timestamp": timestamp,
        "details": details, "level": level, "proven_time": proven,
        "archive_timestamps": tuple(archived)}
    try:
        check_key_usage(cert, expected)
    except VerificationError as exc:
        return SignatureReport.failure(exc.reason, str(exc), **common)
    if problems:
        return SignatureReport.failure("untrusted", "; ".join(problems), **common)
    result = check_certificate(cert, validator, kind=expected, at=at, time_proven=proven is not None,
                               evidence=evidence)
    revocation = (result.details or {}).get("revocation") or {}
    if result.checked:
        common["revocation_source"] = revocation.get("origin") or (
            "none" if revocation.get("method") in (None, "none") else None)
    if not result.ok:
        assert result.reason is not None
        return SignatureReport.failure(result.reason, result.message, certificate=result, **common)
    if not result.checked:
        tail = "the certificate was NOT validated (no validator)"
    elif revocation.get("method") in (None, "none"):
        tail = "certificate path valid; revocation NOT checked"
    elif revocation.get("status") == "unavailable":
        tail = "certificate path valid; revocation status unavailable (soft-fail)"
    else:
        tail = _revocation_tail(revocation, at, proven is not None)
    message = f"signature and content intact; {tail}"
    return SignatureReport(True, None, message, certificate=result, **common)


def verify_cms(path: str | os.PathLike[str], *, data: str | os.PathLike[str] | None = None,
               validator: CertificateValidator | None = None,
               expected: Literal["sign", "auth"] = "sign",
               clock: Clock | None = None,
               prehashed: Mapping[str, Callable[[], bytes]] | None = None,
               evidence: RevocationEvidence | None = None) -> VerificationReport:
    """Verify a CMS SignedData file (``.p7s`` detached with ``data``, or ``.p7m`` attached).

    The revocation values embedded in the file (``SignedData.crls``: CRLs and OCSP responses)
    and ``evidence`` (answers the user gave) are handed to the validator with the signer's
    and the timestamp authorities' certificates; a signature timestamp whose TSA validates
    makes the signer's certificate be checked at the time it proves.

    ``prehashed`` maps a digest name to a callable giving ``data``'s digest, computed elsewhere
    (the CLI starts hashing before it imports this module); other digests are computed here.

    Checks, in order: the structure (``malformed``), one signer (``no-signer``,
    ``several-signers``), the message digest against the content (``wrong-data`` for a
    separate data file, ``tampered`` for embedded content), the signature and the
    signing-certificate attribute (``tampered``), the key (``wrong-key-usage``), then the
    certificate through ``validator`` at the signing time (``untrusted``, ``revoked``,
    ``expired-at-signing-time``). A missing or unreadable file, a data file that is a folder,
    or a detached signature without data raise ``UsageError``.
    """
    src = Path(path)
    name = str(src)
    regular_file(src, "signature file")
    data_path = Path(data) if data is not None else None
    if data_path is not None:
        regular_file(data_path, "data file")
    try:
        with open(src, "rb") as fh:
            parsed = read_cms(fh)
    except VerificationError as exc:
        return VerificationReport.failure(name, "cms", exc.reason, str(exc))
    except OSError as exc:
        raise UsageError(f"cannot read {src}: {exc.strerror}") from None
    if not parsed.signer_infos:
        return VerificationReport.failure(name, "cms", "no-signer", "the CMS holds no signer info")
    if len(parsed.signer_infos) > 1:
        return VerificationReport.failure(
            name, "cms", "several-signers",
            f"the CMS holds {len(parsed.signer_infos)} signers; one signature per file is accepted")
    if parsed.content_type != OID_DATA:
        return VerificationReport.failure(name, "cms", "malformed",
                                          f"the signed content is not data ({parsed.content_type})")
    if not parsed.attached and data_path is None:
        raise UsageError(f"{src} is a detached signature: give the signed file with --data FILE")
    signer_info = parsed.signer_infos[0]
    details: dict[str, Any] = {"detached": not parsed.attached}
    external: dict[str, bytes] = {}

    def data_digest(algorithm: str) -> bytes:
        if algorithm not in external:
            assert data_path is not None
            if prehashed is not None and algorithm in prehashed:
                external[algorithm] = prehashed[algorithm]()
            else:
                external[algorithm] = hash_file(data_path, algorithm)[0]
        return external[algorithm]

    if parsed.attached:
        details["data"] = f"embedded ({parsed.content_size} bytes)"
        digest_of: Callable[[str], bytes | None] = parsed.content_digests.get
        reason = "tampered"
    else:
        assert data_path is not None
        details["data"] = f"{data_path} ({data_path.stat().st_size} bytes)"
        digest_of = data_digest
        reason = "wrong-data"
    try:
        check = check_signer_info(signer_info, parsed.certificates, parsed.content_type, digest_of,
                                  mismatch_reason=reason)
        if parsed.attached and data_path is not None:
            details["data"] += f"; compared with {data_path}"
            if not hmac.compare_digest(data_digest(check.digest_algorithm),
                                       parsed.content_digests[check.digest_algorithm]):
                raise VerificationError("wrong-data",
                                        f"{data_path} is not the content embedded in the signature")
        archive = _check_archive_timestamps(parsed, signer_info, src, data_path, details)
    except VerificationError as exc:
        return VerificationReport.of(name, "cms", (SignatureReport.failure(
            exc.reason, str(exc), details=details),))
    level = cms_level(check.timestamp is not None, bool(parsed.crls or parsed.ocsp_responses),
                      bool(archive))
    if not check.signing_certificate_attr:
        profile = "CMS"
    else:
        profile = {"B-B": "CAdES-BES", "B-T": "CAdES-T", "B-LT": "CAdES-LT", "B-LTA": "CAdES-LTA"}[level]
    profile += ", attached" if parsed.attached else ", detached"
    if parsed.crls or parsed.ocsp_responses:
        details["validation_data"] = (f"{len(parsed.certificates)} certificate(s), "
                                      f"{len(parsed.ocsp_responses)} OCSP response(s), "
                                      f"{len(parsed.crls)} CRL(s) embedded")
    embedded = RevocationEvidence.of(ocsp=parsed.ocsp_responses, crls=parsed.crls, origin="embedded")
    if evidence:
        embedded = embedded + evidence
    try:
        report = _signature_report(check, expected=expected, validator=validator, clock=clock,
                                   profile=profile, details=details, evidence=embedded,
                                   level=level, archive=archive)
    except DECODE_ERRORS as exc:  # a last guard: the certificate was decoded in full before
        failed = decode_failure("cannot read the signer's certificate", exc)
        report = SignatureReport.failure(failed.reason, str(failed), details=details)
    return VerificationReport.of(name, "cms", (report,))


def cms_level(timestamped: bool, validation_data: bool, archived: bool) -> str:
    """The baseline level a CAdES signature reaches: B-B, B-T (a signature timestamp), B-LT
    (and validation data), B-LTA (and an archive timestamp)."""
    if not timestamped:
        return "B-B"
    if not validation_data:
        return "B-T"
    return "B-LTA" if archived else "B-LT"


def _data_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            yield chunk


def _check_archive_timestamps(parsed: ParsedCms, signer_info: cms.SignerInfo, src: Path,
                              data_path: Path | None,
                              details: dict[str, Any]) -> list[tuple[TimestampCheck, str]]:
    """Check every archive-time-stamp-v2 of the signer info, in order (see
    :mod:`jpki.sign.levels`): its imprint over the content, the certificates and revocation
    values and the signer info as it was before it, and its token's signature. An
    archive-time-stamp-v3 (EN 319 122-1) is reported in ``details`` but not checked."""
    types = [a["type"].dotted for a in signer_info["unsigned_attrs"]] \
        if not isinstance(signer_info["unsigned_attrs"], core.Void) else []
    if levels.OID_ARCHIVE_TIMESTAMP_V3 in types:
        details["archive_timestamp_v3"] = "present, not checked (jpki checks archive-time-stamp-v2)"
    if levels.OID_ARCHIVE_TIMESTAMP_V2 not in types:
        return []
    layout = parsed.layout
    assert layout is not None
    try:
        fields = levels.signer_info_fields(signer_info.dump())
        attributes = levels.unsigned_attributes(fields)
    except (levels.LevelError, der.DerError) as exc:
        raise _malformed(f"an archive timestamp over a signer info that is not DER: {exc}") from None
    found: list[tuple[TimestampCheck, str]] = []
    for i, attr in enumerate(attributes):
        if levels.attribute_type(attr) != levels.OID_ARCHIVE_TIMESTAMP_V2:
            continue
        before = levels._with_unsigned(fields, attributes[:i])
        values = cms.CMSAttribute.load(attr)["values"]
        if len(values) != 1:
            raise _malformed("an archive timestamp attribute must have exactly one value")
        token = cms.ContentInfo.load(values[0].dump())

        def imprint(algorithm: str, before: list[bytes] = before) -> bytes | None:
            if algorithm not in VERIFY_DIGESTS:
                return None
            return levels.archive_imprint(
                algorithm,
                encap=levels.file_chunks(src, layout.body, layout.encap_start, layout.encap_end),
                external=None if parsed.attached or data_path is None else _data_chunks(data_path),
                certificates_raw=layout.certificates_raw, crls_raw=layout.crls_raw,
                signer_fields=before)

        found.append((check_timestamp_token(
            token, imprint, "the archive timestamp does not match: the signature, its content or "
            "its validation data were changed after it was made"), "archive timestamp"))
    return found
