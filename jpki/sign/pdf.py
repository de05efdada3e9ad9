"""PDF signatures: PAdES baseline B-B, B-T, B-LT and B-LTA made by the card through pyHanko,
their upgrade (``extend_pdf``), and their verification.

Signing uses pyHanko's PDF machinery with :class:`CardPdfSigner`, a ``pyhanko.sign.signers.Signer``
whose raw signature comes from the card (``async_sign_raw``: hash the signed attributes, send
the digest to the card). The signature dictionary is ``/SubFilter /ETSI.CAdES.detached``; the
signed attributes carry signing-certificate-v2 and no signing-time (PAdES puts the time in
``/M``). Output is written whole or not at all.

Verification lists every signature dictionary a viewer can show, signatures and document
timestamps alike, and checks its shape and ``/ByteRange`` against the raw file
(:mod:`jpki.sign.pdf_checks`: the hostile-document defences), then reads it with pyHanko's
reader, hashes its byte range, and checks the CMS with the same code as ``.p7s`` files
(:func:`jpki.sign.cms.check_signer_info`) and who signed (the signer identifier, basic
constraints, key usage), or a document timestamp's token and imprint; pyHanko's difference
analysis decides whether updates after a signature are harmless (more signatures, form filling,
validation data and timestamps, annotations: reported) or change the signed content
(``tampered``). Each certificate is validated at the time a timestamp proves, when there is one
(``_analyse`` and ``_covered`` decide which timestamp stands behind which signature).

pyHanko (a dependency of jpki) is imported only when a PDF is signed or verified: this module is
not imported by the rest of :mod:`jpki.sign`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any, Literal

from asn1crypto import cms
from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pyhanko.pdf_utils import misc as _pdf_misc
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.general import SigningError
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes
from pyhanko.sign.signers.pdf_signer import PdfTimeStamper
from pyhanko.sign.timestamps import TimeStamper
from pyhanko.sign.validation import DocumentSecurityStore
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

from ..certinfo import cert_kind
from ..clock import Clock, SystemClock
from ..errors import JpkiError, UsageError, VerificationError
from ..fileio import write_atomic
from ..hashing import SIGN_DIGESTS, regular_file
from ..tsa.client import HttpTimestamper, Timestamper
from ..verify.evidence import RevocationEvidence
from . import levels
from .cms import (
    DECODE_ERRORS,
    OID_DATA,
    DigestSigner,
    SignerCheck,
    TimestampCheck,
    _signature_report,
    check_nesting,
    check_signer_info,
    check_timestamp_token,
    decode_failure,
)
from .pdf_checks import (
    DIFF_POLICY,
    FoundSignature,
    certificate_problem,
    check_dictionary,
    check_signer_identifier,
    file_report,
    find_signatures,
    judge_changes,
    judge_coverage,
    with_change_note,
)
from .report import (
    CertificateValidator,
    SignatureReport,
    VerificationReport,
    certificate_summary,
    identity_of,
)

# pyHanko logs what it skips in a broken PDF as warnings with a traceback; with no logging set
# up, Python would print them on stderr. A NullHandler keeps them for applications that set up
# logging, and out of ``jpki verify``'s output, which reports ``malformed`` instead.
logging.getLogger("pyhanko").addHandler(logging.NullHandler())

__all__ = ["CardPdfSigner", "PdfExtendOutcome", "PdfSignOutcome", "PyhankoTimestamper", "VisibleBox",
           "extend_pdf", "parse_visible", "sign_pdf", "verify_pdf"]


class CardPdfSigner(signers.Signer):
    """A pyHanko ``Signer`` whose key is on the card (or any :class:`DigestSigner`).

    pyHanko hands ``async_sign_raw`` the DER of the signed attributes; the card signs their
    digest (PKCS#1 v1.5). A dry run (pyHanko sizing the signature) touches no card.
    """

    def __init__(self, card: DigestSigner) -> None:
        cert = card.asn1_certificate
        super().__init__(signing_cert=cert, cert_registry=SimpleCertificateStore.from_certs([cert]),
                         embed_roots=False)
        self.card = card

    async def async_sign_raw(self, data: bytes, digest_algorithm: str,
                             dry_run: bool = False) -> bytes:
        """The card's signature over ``data`` hashed with ``digest_algorithm``."""
        if dry_run:
            return bytes(self.card.key_size)
        return self.card.sign_digest(digest_algorithm, hashlib.new(digest_algorithm, data).digest())


@dataclasses.dataclass(frozen=True)
class VisibleBox:
    """Where a visible signature goes: a 1-based page and a rectangle in PDF points."""

    page: int
    box: tuple[int, int, int, int]


def parse_visible(text: str) -> VisibleBox:
    """``PAGE,x1,y1,x2,y2`` (page from 1, points from the lower-left corner) → VisibleBox."""
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) != 5:
            raise ValueError
        page, x1, y1, x2, y2 = (int(p) for p in parts)
    except ValueError:
        raise UsageError(f"--visible wants PAGE,x1,y1,x2,y2 (integers), not {text!r}") from None
    if page < 1 or x2 <= x1 or y2 <= y1 or min(x1, y1) < 0:
        raise UsageError("--visible: pages count from 1 and the box needs x1 < x2, y1 < y2, "
                         "all at least 0")
    return VisibleBox(page, (x1, y1, x2, y2))


@dataclasses.dataclass(frozen=True)
class PdfSignOutcome:
    """What :func:`sign_pdf` made."""

    input: Path
    output: Path
    field: str
    profile: str
    digest_algorithm: str
    signing_time: _dt.datetime
    signer_subject: str
    visible: VisibleBox | None
    level: str = "B-B"
    validation: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"file": str(self.input), "output": str(self.output), "field": self.field,
                "profile": self.profile, "level": self.level,
                "digest_algorithm": self.digest_algorithm,
                "signing_time": self.signing_time.isoformat(), "signer": self.signer_subject,
                "visible": None if self.visible is None else
                {"page": self.visible.page, "box": list(self.visible.box)},
                "validation_data": list(self.validation)}


def _open_reader(fh: Any, path: Path) -> PdfFileReader:
    try:
        reader = PdfFileReader(fh, strict=False)
    except Exception as exc:  # noqa: BLE001 - pyHanko raises many kinds for a broken file
        raise JpkiError(f"{path} is not a readable PDF: {exc}") from None
    if reader.encrypted:
        raise JpkiError(f"{path} is encrypted: decrypt it before signing or verifying")
    return reader


def _page_count(reader: PdfFileReader) -> int:
    try:
        return int(reader.root["/Pages"]["/Count"])
    except (KeyError, TypeError, ValueError):
        return 0


def _free_field_name(reader: PdfFileReader) -> str:
    taken = {name for name, _, _ in fields.enumerate_sig_fields(reader)}
    n = 1
    while f"Signature{n}" in taken:
        n += 1
    return f"Signature{n}"


class PyhankoTimestamper(TimeStamper):
    """A pyHanko ``TimeStamper`` over a :class:`jpki.tsa.Timestamper`: every token pyHanko
    asks for (signature timestamps, document timestamps, the dummy one it sizes the signature
    with) comes through jpki's RFC 3161 client."""

    def __init__(self, timestamper: Timestamper) -> None:
        super().__init__(include_nonce=False)  # type: ignore[no-untyped-call]  # (the client's nonce)
        self.timestamper = timestamper

    async def async_timestamp(self, message_digest: bytes, md_algorithm: str) -> cms.ContentInfo:
        return cms.ContentInfo.load(self.timestamper.stamp(md_algorithm.lower(), message_digest))

    async def async_request_tsa_response(self, req: Any) -> Any:  # pragma: no cover - unused
        raise NotImplementedError("jpki's client makes the requests")

    def certificate(self, md_algorithm: str) -> x509.Certificate:
        """The TSA's certificate, learnt from the token pyHanko sizes signatures with (so it
        costs no extra request)."""
        dummy = asyncio.run(self.async_dummy_response(md_algorithm))
        return levels.token_certificate(dummy.dump())


def _validation_context(data: levels.ValidationData, now: _dt.datetime) -> ValidationContext:
    """A pyHanko validation context holding exactly the gathered data: no fetching (jpki's
    validator fetched and checked it), revocation answers issued after ``now`` accepted
    (``retroactive_revinfo``: they prove the status at the signing time)."""
    return ValidationContext(
        trust_roots=[asn1_x509.Certificate.load(c) for c in data.anchors],
        other_certs=[asn1_x509.Certificate.load(c) for c in data.certificates],
        ocsps=[asn1_ocsp.OCSPResponse.load(o) for o in data.ocsp],
        crls=[asn1_crl.CertificateList.load(c) for c in data.crls],
        allow_fetching=False, moment=now, retroactive_revinfo=True, revocation_mode="hard-fail")


def _signer_kind(cert: x509.Certificate) -> str:
    kind = cert_kind(cert)
    return kind if kind in ("sign", "auth") else "sign"


def sign_pdf(path: str | os.PathLike[str], output: str | os.PathLike[str], signer: DigestSigner, *,
             field: str | None = None, visible: VisibleBox | None = None,
             reason: str | None = None, location: str | None = None,
             tsa_url: str | None = None, digest: str = "sha256",
             clock: Clock | None = None, level: str | None = None,
             timestamper: Timestamper | None = None,
             source: levels.ValidationDataSource | None = None,
             stamp_font: str | os.PathLike[str] | None = None) -> PdfSignOutcome:
    """Sign a PDF with ``signer`` into ``output``: PAdES baseline ``level`` B (B-B), T (B-T: a
    signature timestamp from ``timestamper``, or an :class:`~jpki.tsa.HttpTimestamper` of
    ``tsa_url``), LT (B-LT: and the DSS with the validation data ``source`` gathers for the
    signer's and the TSA's certificates, through pyHanko's ``embed_validation_info``), LTA
    (B-LTA: and a document timestamp after the DSS, pyHanko's ``use_pades_lta``). The level
    defaults to T with a timestamper, else B.

    ``field`` names the signature field (an existing empty one is used; default: the first
    free ``SignatureN``); ``visible`` puts a stamp on a page: the holder's name, the reason, the
    place and the signing time in Japanese, in ``stamp_font`` (default: an installed Japanese
    font) embedded as a subset (:mod:`jpki.sign.stamp`; ``StampFontError`` without one).
    ``output`` is written atomically and must differ from the input.
    """
    if digest not in SIGN_DIGESTS:
        raise UsageError(f"unsupported digest {digest!r}: use one of {', '.join(SIGN_DIGESTS)}")
    if timestamper is None and tsa_url is not None:
        timestamper = HttpTimestamper(tsa_url)
    rank = levels.level_rank(level or ("T" if timestamper is not None else "B"))
    if rank >= 1 and timestamper is None:
        raise UsageError(f"level {levels.LEVELS[rank]} needs a timestamp authority (--tsa URL)")
    if rank >= 2 and source is None:
        raise UsageError(f"level {levels.LEVELS[rank]} needs a source of validation data")
    src, out = Path(path), Path(output)
    regular_file(src, "PDF to sign")
    if out.exists() and (out.is_dir() or os.path.samefile(out, src)):
        raise UsageError(f"output {out}: " + ("is a directory" if out.is_dir()
                                              else "is the PDF being signed: choose another name"))
    if not out.parent.is_dir():
        raise UsageError(f"output {out}: folder {out.parent} does not exist")
    now = (clock or SystemClock()).now()
    pyhanko_ts = None if timestamper is None or rank == 0 else PyhankoTimestamper(timestamper)
    with open(src, "rb") as fh:
        reader = _open_reader(fh, src)
        name = field or _free_field_name(reader)
        spec = style = None
        if visible is not None:
            pages = _page_count(reader)
            if visible.page > pages:
                raise UsageError(f"--visible: page {visible.page}, but {src} has {pages} page(s)")
            spec = fields.SigFieldSpec(sig_field_name=name, on_page=visible.page - 1, box=visible.box)
            style = _stamp_style(signer, reason, location, now, stamp_font)
        context = None
        validation: tuple[str, ...] = ()
        try:
            if rank >= 2:
                assert pyhanko_ts is not None and source is not None
                tsa_cert = pyhanko_ts.certificate(digest)
                data = source.collect([(signer.certificate, _signer_kind(signer.certificate), now),
                                       (tsa_cert, "tsa", now)])
                context = _validation_context(data, now)
                validation = data.sources
            ident = identity_of(signer.certificate)
            meta = signers.PdfSignatureMetadata(
                field_name=name, md_algorithm=digest, subfilter=fields.SigSeedSubFilter.PADES,
                reason=reason, location=location, name=None if ident is None else ident["name"],
                embed_validation_info=rank >= 2, validation_context=context,
                use_pades_lta=rank == 3, signer_key_usage=set())
            pdf_signer = signers.PdfSigner(meta, CardPdfSigner(signer), timestamper=pyhanko_ts,
                                           new_field_spec=spec, stamp_style=style)
            buffer = io.BytesIO()
            writer = IncrementalPdfFileWriter(fh, strict=False)
            asyncio.run(_sign(pdf_signer, writer, buffer, now))
        except (SigningError, _pdf_misc.PdfError) as exc:
            cause = exc.__cause__
            raise JpkiError(f"cannot sign {src}: {exc}" + (f" ({cause})" if cause else "")) from None
    write_atomic(out, buffer.getvalue())
    profile = f"PAdES-B-{levels.LEVELS[rank]}"
    return PdfSignOutcome(src, out, name, profile, digest, now,
                          signer.certificate.subject.rfc4514_string(), visible,
                          profile.removeprefix("PAdES-"), validation)


def _stamp_style(signer: DigestSigner, reason: str | None, location: str | None,
                 when: _dt.datetime, font: str | os.PathLike[str] | None) -> Any:
    """The visible stamp's style (:mod:`jpki.sign.stamp` imports fontTools and HarfBuzz: only
    for a visible signature)."""
    from .stamp import stamp_style

    return stamp_style(signer.certificate, reason=reason, location=location, when=when, font=font)


async def _sign(pdf_signer: signers.PdfSigner, writer: IncrementalPdfFileWriter,
                output: io.BytesIO, now: _dt.datetime) -> None:
    """``PdfSigner.async_sign_pdf`` step by step, with the signing time from our clock."""
    session = pdf_signer.init_signing_session(writer)
    session.system_time = now
    validation_info = await session.perform_presign_validation(writer)
    reserved = await session.estimate_signature_container_size(validation_info, tight=False)
    tbs = session.prepare_tbs_document(validation_info=validation_info, bytes_reserved=reserved)
    prepared, res_output = tbs.digest_tbs_document(output=output)
    post = await tbs.perform_signature(
        document_digest=prepared.document_digest,
        pdf_cms_signed_attrs=PdfCMSSignedAttributes(
            signing_time=session.system_time,
            adobe_revinfo_attr=None if validation_info is None else validation_info.adobe_revinfo_attr,
            cades_signed_attrs=pdf_signer.signature_meta.cades_signed_attr_spec))
    await post.post_signature_processing(res_output)


@dataclasses.dataclass(frozen=True)
class PdfExtendOutcome:
    """What :func:`extend_pdf` did: the levels before and after, what it added."""

    input: Path
    output: Path
    before: str
    level: str
    added: tuple[str, ...]
    validation: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"file": str(self.input), "output": str(self.output), "level_before": self.before,
                "level": self.level, "profile": f"PAdES-{self.level}", "added": list(self.added),
                "validation_data": list(self.validation)}


def extend_pdf(path: str | os.PathLike[str], level: str, *, output: str | os.PathLike[str] | None = None,
               timestamper: Timestamper | None = None,
               source: levels.ValidationDataSource | None = None,
               digest: str = "sha256", clock: Clock | None = None) -> PdfExtendOutcome:
    """Bring every signature of a PDF to ``level`` (``T``, ``LT`` or ``LTA``) by incremental
    updates, written atomically to ``output`` (default: in place); what was signed is not
    touched.

    A signature without a signature timestamp gets a time from a document timestamp first
    (PAdES allows one to serve as the B-T timestamp). ``LT`` then adds a DSS (with a VRI
    entry per signature) holding the validation data ``source`` gathers: each signer's
    certificate at the time its timestamp proves, each TSA's at its token's time (and the
    TSA about to make the document timestamp of ``LTA``, now). ``LTA`` then adds a document
    timestamp over everything. LevelError when the PDF is already there or holds no signature.
    """
    target = levels.level_rank(level)
    if target == 0:
        raise UsageError("--extend takes T, LT or LTA")
    src = Path(path)
    regular_file(src, "PDF")
    out = Path(output) if output is not None else src
    now = (clock or SystemClock()).now()
    try:
        original = src.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {src}: {exc.strerror or exc}") from None
    buffer = io.BytesIO(original)
    reader = _open_reader(buffer, src)
    state = _pdf_state(reader)
    if not state.signatures:
        raise levels.LevelError(f"{src} holds no signature to extend")
    before = state.level
    if target <= levels.level_rank(before.removeprefix("B-")):
        raise levels.LevelError(f"{src} is already at level {before}")
    pyhanko_ts = None if timestamper is None else PyhankoTimestamper(timestamper)
    added: list[str] = []
    validation: tuple[str, ...] = ()
    try:
        if any(t is None for _, _, t in state.signatures):
            if pyhanko_ts is None:
                raise UsageError(f"{src} has a signature without a timestamp: give a timestamp "
                                 "authority (--tsa URL)")
            _document_timestamp(buffer, pyhanko_ts, digest)
            added.append("document timestamp (the signature time)")
            state = _pdf_state(_open_reader(buffer, src))
        if target >= 2 and not state.dss:
            if source is None:
                raise UsageError("level LT needs a source of validation data")
            subjects: list[tuple[x509.Certificate, str, _dt.datetime]] = []
            for cert, _, ts in state.signatures:
                assert ts is not None
                subjects.append((cert, _signer_kind(cert), ts.time))
            for ts in state.timestamps:
                if ts.certificate is not None:
                    subjects.append((ts.certificate, "tsa", ts.time))
            if target == 3:
                assert pyhanko_ts is not None
                subjects.append((pyhanko_ts.certificate(digest), "tsa", now))
            data = source.collect(_unique(subjects))
            _add_dss(buffer, [contents for _, contents, _ in state.signatures], data)
            added.append("DSS (validation data)")
            validation = data.sources
        if target == 3:
            if pyhanko_ts is None:
                raise UsageError("level LTA needs a timestamp authority (--tsa URL)")
            _document_timestamp(buffer, pyhanko_ts, digest)
            added.append("document timestamp (archive)")
    except (SigningError, _pdf_misc.PdfError) as exc:
        raise JpkiError(f"cannot extend {src}: {exc}") from None
    write_atomic(out, buffer.getvalue())
    after = _pdf_state(_open_reader(io.BytesIO(buffer.getvalue()), out)).level
    return PdfExtendOutcome(src, out, before, after, tuple(added), validation)


_Subject = tuple[x509.Certificate, str, _dt.datetime]


def _unique(subjects: list[_Subject]) -> list[_Subject]:
    seen: set[tuple[bytes, _dt.datetime]] = set()
    kept = []
    for cert, kind, at in subjects:
        key = (cert.fingerprint(hashes.SHA256()), at)
        if key not in seen:
            seen.add(key)
            kept.append((cert, kind, at))
    return kept


def _document_timestamp(buffer: io.BytesIO, pyhanko_ts: PyhankoTimestamper, digest: str) -> None:
    """Append a document timestamp (an incremental update) to the PDF in ``buffer``."""
    writer = IncrementalPdfFileWriter(buffer, strict=False)
    PdfTimeStamper(pyhanko_ts).timestamp_pdf(writer, digest, in_place=True)


def _add_dss(buffer: io.BytesIO, contents: list[bytes], data: levels.ValidationData) -> None:
    """Append the DSS (and a VRI entry per signature) holding ``data``."""
    writer = IncrementalPdfFileWriter(buffer, strict=False)
    certs = [asn1_x509.Certificate.load(c) for c in data.certificates]
    ocsps = [asn1_ocsp.OCSPResponse.load(o) for o in data.ocsp]
    crls = [asn1_crl.CertificateList.load(c) for c in data.crls]
    for signature in contents:
        DocumentSecurityStore.supply_dss_in_writer(writer, signature.hex().encode("ascii"),
                                                   certs=certs, ocsps=ocsps, crls=crls)
    writer.write_in_place()


# --------------------------------------------------------------------------- verifying

def _integrity(emb: Any, details: dict[str, Any]) -> None:
    """Coverage and later changes of one signature or document timestamp: ``bad-byte-range``
    if it does not reach the end of its revision, ``tampered`` if the updates after it change
    what it covers (:func:`~jpki.sign.pdf_checks.judge_coverage`,
    :func:`~jpki.sign.pdf_checks.judge_changes`, with :data:`~jpki.sign.pdf_checks.DIFF_POLICY`,
    which knows annotations)."""
    try:
        emb.compute_integrity_info(diff_policy=DIFF_POLICY)
        summary = emb.summarise_integrity_info()
    except VerificationError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyHanko's reader and diff errors
        raise decode_failure(f"cannot read the signature in field {emb.field_name}", exc) from None
    details["coverage"] = judge_coverage(summary["coverage"], emb.field_name)
    details.update(judge_changes(summary))


def _check_embedded(emb: Any) -> tuple[SignerCheck, dict[str, Any], str]:
    """Integrity of one embedded signature: coverage, later changes, the CMS itself (its
    dictionary and byte range were checked by :func:`jpki.sign.pdf_checks.check_dictionary`)."""
    details: dict[str, Any] = {"field": emb.field_name}
    _integrity(emb, details)
    check_nesting(emb.pkcs7_content)
    signed_data = emb.signed_data
    infos = list(signed_data["signer_infos"])
    if not infos:
        raise VerificationError("no-signer", "the signature holds no signer info")
    if len(infos) > 1:
        raise VerificationError("several-signers", "the signature holds several signer infos")
    certs = [c.chosen for c in signed_data["certificates"] if c.name == "certificate"]
    content_type = signed_data["encap_content_info"]["content_type"].dotted
    if content_type != OID_DATA:
        raise VerificationError("malformed", f"the signed content type is {content_type}, not data")
    try:
        check_signer_identifier(infos[0], certs)
    except DECODE_ERRORS as exc:
        raise decode_failure("cannot decode the signer info", exc) from None
    subfilter = str(emb.sig_object.get("/SubFilter", ""))
    check = check_signer_info(infos[0], certs, content_type, emb.compute_digest)
    if subfilter == "/ETSI.CAdES.detached":
        profile = "PAdES"
        if not check.signing_certificate_attr:
            profile = "PDF (ETSI.CAdES.detached without signing-certificate-v2)"
    else:
        profile = f"PDF ({subfilter.lstrip('/') or 'no SubFilter'})"
    return check, details, profile


def _check_document_timestamp(emb: Any) -> tuple[TimestampCheck, dict[str, Any]]:
    """A document timestamp (/DocTimeStamp, its dictionary and byte range checked by
    :func:`jpki.sign.pdf_checks.check_dictionary`): its coverage and later changes, and its
    token, whose imprint must be the digest of its byte range and whose signer identifier must
    designate exactly the TSA certificate that signed."""
    details: dict[str, Any] = {"field": emb.field_name}
    _integrity(emb, details)
    check_nesting(emb.pkcs7_content)
    token = cms.ContentInfo.load(emb.pkcs7_content)

    def imprint(algorithm: str) -> bytes | None:
        return emb.compute_digest(algorithm) if algorithm in SIGN_DIGESTS else None

    try:  # who signed first (as for signatures): the token's check takes the first match
        if token["content_type"].native == "signed_data":
            signed_data = token["content"]
            infos = list(signed_data["signer_infos"])
            if len(infos) == 1:  # else check_timestamp_token refuses the token
                certs = [c.chosen for c in signed_data["certificates"] if c.name == "certificate"]
                check_signer_identifier(infos[0], certs)
    except DECODE_ERRORS as exc:
        raise decode_failure("cannot decode the document timestamp's signer info", exc) from None
    return check_timestamp_token(token, imprint, "the document timestamp does not match the "
                                 "document: its byte range was changed"), details


@dataclasses.dataclass
class _Signature:
    """One signature of a PDF, checked (or why not: ``failure``; with ``check`` set, the CMS
    verified but its certificate may not sign documents)."""

    found: FoundSignature
    emb: Any = None
    check: SignerCheck | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    profile: str = "PAdES"
    failure: VerificationError | None = None


@dataclasses.dataclass
class _DocTimestamp:
    """One document timestamp of a PDF, checked (or why not)."""

    found: FoundSignature
    emb: Any = None
    check: TimestampCheck | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    failure: VerificationError | None = None


@dataclasses.dataclass
class _Analysis:
    """Every signature and document timestamp of a PDF in signing order, and the first
    revision that holds a DSS (None without one)."""

    items: list[_Signature | _DocTimestamp]
    dss_revision: int | None

    @property
    def signatures(self) -> list[_Signature]:
        return [i for i in self.items if isinstance(i, _Signature)]

    @property
    def stamps(self) -> list[_DocTimestamp]:
        return [i for i in self.items if isinstance(i, _DocTimestamp)]


@dataclasses.dataclass
class _Covered:
    """What times and timestamps stand behind one signature, and the level it reaches."""

    timestamp: TimestampCheck | None
    timestamp_kind: str
    archive: list[tuple[TimestampCheck, str]]
    level: str


def _failure_of(exc: Exception, what: str) -> VerificationError:
    return exc if isinstance(exc, VerificationError) else decode_failure(what, exc)


def _analyse(reader: PdfFileReader) -> _Analysis:
    """Check every signature dictionary and document timestamp of a PDF — the ones
    :func:`~jpki.sign.pdf_checks.find_signatures` lists, which pyHanko's own lists skip —
    first their shape and byte range against the raw file, then their integrity and CMS (no
    certificate validation). Raises what pyHanko's reader raises for a broken form tree."""
    items: list[_Signature | _DocTimestamp] = []
    for found in find_signatures(reader):
        item: _Signature | _DocTimestamp
        if found.kind == "timestamp":
            item = stamp = _DocTimestamp(found, details={"field": found.name})
            try:
                check_dictionary(reader, found)
                stamp.emb = found.embedded(reader)
                stamp.check, stamp.details = _check_document_timestamp(stamp.emb)
            except Exception as exc:  # noqa: BLE001 - pyHanko's reader errors: fail closed
                stamp.failure = _failure_of(exc, "cannot read the document timestamp")
        else:
            item = sig = _Signature(found, details={"field": found.name})
            try:
                check_dictionary(reader, found)
                sig.emb = found.embedded(reader)
                sig.check, sig.details, sig.profile = _check_embedded(sig.emb)
            except Exception as exc:  # noqa: BLE001 - as above
                sig.check, sig.failure = None, _failure_of(exc, "cannot read the signature")
            else:
                sig.failure = certificate_problem(sig.check.certificate)
        items.append(item)
    dss_revision = None
    try:
        for revision in range(reader.xrefs.total_revisions):
            if "/DSS" in reader.get_historical_root(revision):
                dss_revision = revision
                break
    except Exception:  # noqa: BLE001 - an unreadable old revision: no DSS to rely on
        dss_revision = None
    return _Analysis(items, dss_revision)


def _covered(sig: _Signature, stamps: list[_DocTimestamp], dss_revision: int | None) -> _Covered:
    """The timestamp giving ``sig`` its time (its own, else the first document timestamp
    after it: PAdES lets one serve as the B-T timestamp), the document timestamps archiving
    it, and its level: B-B, B-T, B-LT (and a DSS), B-LTA (and a document timestamp covering
    the DSS). Only document timestamps that checked count."""
    assert sig.check is not None
    after = sorted((d for d in stamps if d.check is not None
                    and d.emb.signed_revision > sig.emb.signed_revision),
                   key=lambda d: d.emb.signed_revision)
    timestamp, kind = sig.check.timestamp, "signature timestamp"
    if timestamp is None and after:
        first = after.pop(0)
        timestamp, kind = first.check, "document timestamp"
    archive = [(d.check, "document timestamp") for d in after if d.check is not None]
    if timestamp is None:
        level = "B-B"
    elif dss_revision is None:
        level = "B-T"
    elif any(d.emb.signed_revision >= dss_revision for d in after):
        level = "B-LTA"
    else:
        level = "B-LT"
    return _Covered(timestamp, kind, archive, level)


@dataclasses.dataclass
class _PdfState:
    signatures: list[tuple[x509.Certificate, bytes, TimestampCheck | None]]
    timestamps: list[TimestampCheck]
    dss: bool
    level: str


def _pdf_state(reader: PdfFileReader) -> _PdfState:
    """What :func:`extend_pdf` needs to know: each signature's certificate, contents and
    time; the timestamps; whether a DSS is there; the lowest level of the signatures.
    LevelError for a signature or timestamp that does not check, hostile ones included (a
    broken PDF is not extended)."""
    try:
        analysis = _analyse(reader)
    except Exception as exc:  # noqa: BLE001 - pyHanko's reader errors on the form tree
        failed = decode_failure("not a readable PDF", exc)
        raise levels.LevelError(f"{failed.reason}: {failed}: not extended") from None
    for item in analysis.items:
        if item.failure is not None:
            raise levels.LevelError(f"field {item.details.get('field')}: {item.failure.reason}: "
                                    f"{item.failure}: not extended")
    stamps = analysis.stamps
    found = []
    timestamps = [d.check for d in stamps if d.check is not None]
    ranks = []
    for sig in analysis.signatures:
        assert sig.check is not None
        covered = _covered(sig, stamps, analysis.dss_revision)
        found.append((sig.check.certificate, bytes(sig.emb.pkcs7_content), covered.timestamp))
        if sig.check.timestamp is not None:
            timestamps.append(sig.check.timestamp)
        ranks.append(levels.level_rank(covered.level.removeprefix("B-")))
    level = f"B-{levels.LEVELS[min(ranks)]}" if ranks else "B-B"
    return _PdfState(found, timestamps, analysis.dss_revision is not None, level)


def _dss_evidence(reader: PdfFileReader) -> RevocationEvidence:
    """The OCSP responses and CRLs of the document security store (embedded evidence)."""
    try:
        dss = reader.root["/DSS"]
    except (KeyError, TypeError):
        return RevocationEvidence()
    try:
        ocsps = [bytes(ref.get_object().data) for ref in dss.get("/OCSPs", ())]
        crls = [bytes(ref.get_object().data) for ref in dss.get("/CRLs", ())]
    except Exception as exc:  # noqa: BLE001 - a broken DSS: refuse the file as malformed
        raise decode_failure("the document security store (DSS) cannot be read", exc) from None
    return RevocationEvidence.of(ocsp=ocsps, crls=crls, origin="embedded", source="in the PDF's DSS")


def verify_pdf(path: str | os.PathLike[str], *, validator: CertificateValidator | None = None,
               expected: Literal["sign", "auth"] = "sign",
               clock: Clock | None = None,
               evidence: RevocationEvidence | None = None) -> VerificationReport:
    """Verify every signature of a PDF: its dictionary and byte range against the raw file,
    the byte-range digest, the CMS signature, who signed, what changed after signing, the key,
    and the certificate through ``validator`` at the signing time — the time a timestamp
    proves (a signature timestamp, or the first document timestamp after the signature), the
    timestamp authorities' certificates validated too — with the OCSP responses and CRLs of
    the DSS and ``evidence`` (given by the user). Document timestamps are checked like
    signatures (dictionary, byte range, coverage, later changes) and by their token (imprint,
    signer, TSA), and reported as the archive timestamps of the signatures they cover; a broken
    one makes the file invalid.

    A PDF without signatures fails with ``no-signer``; one that cannot be read with
    ``malformed``; updates after a signature that change its content with ``tampered`` (more
    signatures, form filling, validation data and annotations are reported, not refused); a
    signature dictionary without a signature with ``not-signed``; a ``/ByteRange`` that leaves
    bytes unsigned with ``bad-byte-range``; a swapped certificate with ``signer-mismatch``; a CA
    as signer with ``ca-certificate``. The file is valid only if every signature is. Whatever
    pyHanko's reader raises for a broken file (a bad xref, a cycle or deep nesting in the object
    graph, a bad /M) is ``malformed``, for the file or for the signature it concerns; only an
    unreadable file raises (``UsageError``).
    """
    src = Path(path)
    regular_file(src, "PDF")
    try:
        with open(src, "rb") as fh:
            return _verify_pdf_stream(fh, str(src), validator, expected, clock, evidence)
    except OSError as exc:
        raise UsageError(f"cannot read {src}: {exc.strerror or exc}") from None


def _verify_pdf_stream(fh: Any, name: str, validator: CertificateValidator | None,
                       expected: Literal["sign", "auth"], clock: Clock | None,
                       given: RevocationEvidence | None = None) -> VerificationReport:
    try:
        reader = PdfFileReader(fh, strict=False)
        if reader.encrypted:
            return VerificationReport.failure(name, "pdf", "malformed",
                                              "the PDF is encrypted: decrypt it first")
        analysis = _analyse(reader)
        evidence = _dss_evidence(reader)
    except VerificationError as exc:
        return VerificationReport.failure(name, "pdf", exc.reason, str(exc))
    except Exception as exc:  # noqa: BLE001 - pyHanko raises many kinds for a broken file
        return VerificationReport.failure(
            name, "pdf", "malformed", str(decode_failure("not a readable PDF", exc)))
    if not analysis.signatures:
        return VerificationReport.failure(name, "pdf", "no-signer", "the PDF holds no signature")
    if given:
        evidence = evidence + given
    stamps = analysis.stamps
    reports: list[SignatureReport] = []
    for item in analysis.items:
        if isinstance(item, _DocTimestamp):
            if item.failure is not None:  # a broken document timestamp makes the file invalid
                reports.append(SignatureReport.failure(
                    item.failure.reason, f"document timestamp: {item.failure}",
                    details={"field": item.details.get("field")}))
            continue
        reports.append(_signature_of(item, stamps, analysis.dss_revision, validator, expected,
                                     clock, evidence))
    return file_report(name, tuple(reports))


def _signature_of(sig: _Signature, stamps: list[_DocTimestamp], dss_revision: int | None,
                  validator: CertificateValidator | None, expected: Literal["sign", "auth"],
                  clock: Clock | None, evidence: RevocationEvidence) -> SignatureReport:
    """The report of one analysed signature: its certificate validated at the time its
    timestamp proves, with the embedded and given evidence."""
    field = {"field": sig.details.get("field")}
    if sig.check is None:
        failure = sig.failure or _malformed_signature()
        return SignatureReport.failure(failure.reason, str(failure), details=field)
    check = sig.check
    if sig.failure is not None:  # the CMS verified, but its certificate may not sign documents
        return SignatureReport.failure(
            sig.failure.reason, str(sig.failure), signer=certificate_summary(check.certificate),
            identity=identity_of(check.certificate), profile=sig.profile, details=sig.details,
            digest_algorithm=check.digest_algorithm, signature_algorithm=check.signature_algorithm)
    try:
        claimed, source = _claimed_time(sig.emb)
    except VerificationError as exc:
        return SignatureReport.failure(exc.reason, str(exc), details=field)
    covered = _covered(sig, stamps, dss_revision)
    if check.timestamp is None and covered.timestamp is not None:
        check = dataclasses.replace(check, timestamp=covered.timestamp)
    profile = f"PAdES-{covered.level}" if sig.profile == "PAdES" else sig.profile
    return with_change_note(_signature_report(
        check, expected=expected, validator=validator, clock=clock, profile=profile,
        details=sig.details, claimed_time=claimed, claimed_source=source, evidence=evidence,
        level=covered.level, archive=covered.archive, timestamp_kind=covered.timestamp_kind))


def _malformed_signature() -> VerificationError:
    return VerificationError("malformed", "the signature cannot be read")


def _claimed_time(emb: Any) -> tuple[_dt.datetime | None, str]:
    """The signing time the signer claims (the /M entry, as PAdES puts it) and where it comes
    from. A /M that is not a date is ``malformed``; one without a time zone is read as UTC (the
    PDF format leaves its zone unknown) and the source says so."""
    source = "the PDF's /M entry, claimed by the signer"
    try:
        claimed = emb.self_reported_timestamp
    except Exception as exc:  # noqa: BLE001 - pyHanko's PdfReadError, or a non-string /M
        raise decode_failure("the signature's /M entry is not a date", exc) from None
    if claimed is not None and claimed.utcoffset() is None:
        claimed = claimed.replace(tzinfo=_dt.UTC)
        source = "the PDF's /M entry, without a time zone (read as UTC), claimed by the signer"
    return claimed, source


def simple_pdf(text: str = "A document to sign") -> bytes:
    """A one-page A4 PDF showing one line of ASCII ``text`` (Helvetica): something to sign in
    tests, examples and the README (written by pyHanko's writer)."""
    import io

    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter

    def name(value: str) -> generic.NameObject:
        return generic.NameObject(value)

    line = text.encode("ascii", "replace").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    writer = PdfFileWriter()
    font = writer.add_object(generic.DictionaryObject({
        name("/Type"): name("/Font"), name("/Subtype"): name("/Type1"), name("/BaseFont"): name("/Helvetica")}))
    content = generic.StreamObject(stream_data=b"BT /F1 24 Tf 72 720 Td (" + line + b") Tj ET")
    writer.insert_page(PageObject(
        contents=writer.add_object(content),
        media_box=generic.ArrayObject([generic.NumberObject(v) for v in (0, 0, 595, 842)]),
        resources=generic.DictionaryObject({name("/Font"): generic.DictionaryObject({name("/F1"): font})})))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
