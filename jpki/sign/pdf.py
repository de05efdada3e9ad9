"""PDF signatures: PAdES baseline B-B (B-T with a timestamp authority) made by the card through
pyHanko, and their verification.

Signing uses pyHanko's PDF machinery with :class:`CardPdfSigner`, a ``pyhanko.sign.signers.Signer``
whose raw signature comes from the card (``async_sign_raw``: hash the signed attributes, send
the digest to the card). The signature dictionary is ``/SubFilter /ETSI.CAdES.detached``; the
signed attributes carry signing-certificate-v2 and no signing-time (PAdES puts the time in
``/M``). Output is written whole or not at all.

Verification lists every signature dictionary a viewer can show and checks its shape and
``/ByteRange`` against the raw file (:mod:`jpki.sign.pdf_checks`: the hostile-document
defences), then reads it with pyHanko's reader, hashes its byte range, and checks the CMS with
the same code as ``.p7s`` files (:func:`jpki.sign.cms.check_signer_info`) and who signed (the
signer identifier, basic constraints, key usage); pyHanko's difference analysis decides whether
updates after a signature are harmless (more signatures, form filling, validation data,
annotations: reported) or change the signed content (``tampered``).

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

from pyhanko.pdf_utils import misc as _pdf_misc
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.general import SigningError
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes
from pyhanko.sign.timestamps import HTTPTimeStamper, TimestampRequestError
from pyhanko_certvalidator.registry import SimpleCertificateStore

from ..clock import Clock, SystemClock
from ..errors import JpkiError, UsageError, VerificationError
from ..fileio import write_atomic
from ..hashing import SIGN_DIGESTS, regular_file
from .cms import (
    DECODE_ERRORS,
    OID_DATA,
    DigestSigner,
    SignerCheck,
    _signature_report,
    check_nesting,
    check_signer_info,
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

__all__ = ["CardPdfSigner", "PdfSignOutcome", "VisibleBox", "parse_visible", "sign_pdf", "verify_pdf"]

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

    def to_json(self) -> dict[str, Any]:
        return {"file": str(self.input), "output": str(self.output), "field": self.field,
                "profile": self.profile, "digest_algorithm": self.digest_algorithm,
                "signing_time": self.signing_time.isoformat(), "signer": self.signer_subject,
                "visible": None if self.visible is None else
                {"page": self.visible.page, "box": list(self.visible.box)}}


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


def sign_pdf(path: str | os.PathLike[str], output: str | os.PathLike[str], signer: DigestSigner, *,
             field: str | None = None, visible: VisibleBox | None = None,
             reason: str | None = None, location: str | None = None,
             tsa_url: str | None = None, digest: str = "sha256",
             clock: Clock | None = None,
             stamp_font: str | os.PathLike[str] | None = None) -> PdfSignOutcome:
    """Sign a PDF with ``signer`` (PAdES B-B; B-T with ``tsa_url``) into ``output``.

    ``field`` names the signature field (an existing empty one is used; default: the first
    free ``SignatureN``); ``visible`` puts a stamp on a page: the holder's name, the reason, the
    place and the signing time in Japanese, in ``stamp_font`` (default: an installed Japanese
    font) embedded as a subset (:mod:`jpki.sign.stamp`; ``StampFontError`` without one).
    ``output`` is written atomically and must differ from the input.
    """
    if digest not in SIGN_DIGESTS:
        raise UsageError(f"unsupported digest {digest!r}: use one of {', '.join(SIGN_DIGESTS)}")
    src, out = Path(path), Path(output)
    regular_file(src, "PDF to sign")
    if out.exists() and (out.is_dir() or os.path.samefile(out, src)):
        raise UsageError(f"output {out}: " + ("is a directory" if out.is_dir()
                                              else "is the PDF being signed: choose another name"))
    if not out.parent.is_dir():
        raise UsageError(f"output {out}: folder {out.parent} does not exist")
    now = (clock or SystemClock()).now()
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
        ident = identity_of(signer.certificate)
        meta = signers.PdfSignatureMetadata(
            field_name=name, md_algorithm=digest, subfilter=fields.SigSeedSubFilter.PADES,
            reason=reason, location=location, name=None if ident is None else ident["name"])
        timestamper = None
        if tsa_url is not None:
            timestamper = HTTPTimeStamper(tsa_url)
        pdf_signer = signers.PdfSigner(meta, CardPdfSigner(signer), timestamper=timestamper,
                                       new_field_spec=spec, stamp_style=style)
        buffer = io.BytesIO()
        try:
            writer = IncrementalPdfFileWriter(fh, strict=False)
            asyncio.run(_sign(pdf_signer, writer, buffer, now))
        except TimestampRequestError as exc:
            cause = exc.__cause__ or exc.__context__
            raise JpkiError(f"timestamp authority {tsa_url}: {exc}"
                            + (f" ({cause})" if cause else "")) from None
        except (SigningError, _pdf_misc.PdfError) as exc:
            raise JpkiError(f"cannot sign {src}: {exc}") from None
    write_atomic(out, buffer.getvalue())
    return PdfSignOutcome(src, out, name, "PAdES-B-T" if tsa_url else "PAdES-B-B", digest, now,
                          signer.certificate.subject.rfc4514_string(), visible)


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


# --------------------------------------------------------------------------- verifying

def _check_embedded(emb: Any) -> tuple[SignerCheck, dict[str, Any], str]:
    """Integrity of one embedded signature: coverage, later changes, the CMS itself (its
    dictionary and byte range were checked by :func:`jpki.sign.pdf_checks.check_dictionary`)."""
    details: dict[str, Any] = {"field": emb.field_name}
    try:
        emb.compute_integrity_info(diff_policy=DIFF_POLICY)
        summary = emb.summarise_integrity_info()
    except VerificationError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyHanko's reader and diff errors
        raise decode_failure(f"cannot read the signature in field {emb.field_name}", exc) from None
    details["coverage"] = judge_coverage(summary["coverage"], emb.field_name)
    details.update(judge_changes(summary))
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
        profile = "PAdES-B-T" if check.timestamp is not None else "PAdES-B-B"
        if not check.signing_certificate_attr:
            profile = "PDF (ETSI.CAdES.detached without signing-certificate-v2)"
    else:
        profile = f"PDF ({subfilter.lstrip('/') or 'no SubFilter'})"
    return check, details, profile


def verify_pdf(path: str | os.PathLike[str], *, validator: CertificateValidator | None = None,
               expected: Literal["sign", "auth"] = "sign",
               clock: Clock | None = None) -> VerificationReport:
    """Verify every signature of a PDF: byte-range digest, CMS signature, what changed after
    signing, the key, and the certificate through ``validator`` at the signing time.

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
            return _verify_pdf_stream(fh, str(src), validator, expected, clock)
    except OSError as exc:
        raise UsageError(f"cannot read {src}: {exc.strerror or exc}") from None


def _verify_pdf_stream(fh: Any, name: str, validator: CertificateValidator | None,
                       expected: Literal["sign", "auth"], clock: Clock | None) -> VerificationReport:
    try:
        reader = PdfFileReader(fh, strict=False)
        if reader.encrypted:
            return VerificationReport.failure(name, "pdf", "malformed",
                                              "the PDF is encrypted: decrypt it first")
        found = find_signatures(reader)
    except Exception as exc:  # noqa: BLE001 - pyHanko raises many kinds for a broken file
        return VerificationReport.failure(
            name, "pdf", "malformed", str(decode_failure("not a readable PDF", exc)))
    reports: list[SignatureReport] = []
    for sig in found:
        try:
            check_dictionary(reader, sig)
        except VerificationError as exc:
            reports.append(SignatureReport.failure(exc.reason, str(exc), details={"field": sig.name}))
            continue
        except Exception as exc:  # noqa: BLE001 - pyHanko's reader errors: fail closed
            failed = decode_failure("cannot read the signature", exc)
            reports.append(SignatureReport.failure(failed.reason, str(failed),
                                                   details={"field": sig.name}))
            continue
        if sig.kind == "timestamp":
            continue  # a document timestamp: its token is the long-term validation's to check
        reports.append(_verify_embedded(reader, sig, validator, expected, clock))
    if not reports:
        return VerificationReport.failure(name, "pdf", "no-signer", "the PDF holds no signature")
    return file_report(name, tuple(reports))


def _verify_embedded(reader: PdfFileReader, sig: FoundSignature,
                     validator: CertificateValidator | None, expected: Literal["sign", "auth"],
                     clock: Clock | None) -> SignatureReport:
    """One signature whose dictionary and byte range are sound: integrity, CMS, signer."""
    try:
        emb = sig.embedded(reader)
        check, details, profile = _check_embedded(emb)
        claimed, source = _claimed_time(emb)
    except VerificationError as exc:
        return SignatureReport.failure(exc.reason, str(exc), details={"field": sig.name})
    except Exception as exc:  # noqa: BLE001 - pyHanko's reader errors: fail closed
        failed = decode_failure("cannot read the signature", exc)
        return SignatureReport.failure(failed.reason, str(failed), details={"field": sig.name})
    problem = certificate_problem(check.certificate)
    if problem is not None:
        return SignatureReport.failure(
            problem.reason, str(problem), signer=certificate_summary(check.certificate),
            identity=identity_of(check.certificate), profile=profile, details=details,
            digest_algorithm=check.digest_algorithm, signature_algorithm=check.signature_algorithm)
    return with_change_note(_signature_report(
        check, expected=expected, validator=validator, clock=clock, profile=profile,
        details=details, claimed_time=claimed, claimed_source=source))


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
