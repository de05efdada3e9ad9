"""Checks of a signed PDF that pyHanko leaves to its caller: the hostile-document defences of
``jpki verify``.

The advisories of jpki/myna (GHSA-g258-q5gf-7hvx: only the first signature was verified;
GHSA-58hw-cg5m-88rp: key usage and basic constraints were not enforced) and the PDF signature
attacks of Mladenov et al. (incremental saving, signature wrapping, universal signature forgery,
shadow attacks) are the pattern. pyHanko verifies what it is given, but:

* its list of signatures skips a field whose ``/SubFilter`` it does not know, whose ``/V`` is an
  empty dictionary, or whose signature dictionary does not parse (one bad field then hides the
  others), and never looks at widgets that the form does not list;
* it judges a ``/ByteRange`` that covers the whole file by its total length only, not by where
  the hole is, and only reports (does not refuse) one that stops short of its revision's end;
* it leaves key usage, basic constraints and the signer identifier to the caller.

So :func:`find_signatures` lists every signature dictionary a viewer can show (form fields with
a value, and signature widgets on the pages), :func:`check_dictionary` checks each one's shape
and byte range against the raw file before any cryptography, :func:`judge_coverage` and
:func:`judge_changes` turn pyHanko's coverage and difference analysis into a verdict,
:func:`check_signer_identifier` and :func:`certificate_problem` check who signed. Each refusal is
a :class:`~jpki.errors.VerificationError` whose reason is one of :data:`jpki.sign.report.REASONS`
and whose message is one line.

Document timestamps (``/DocTimeStamp``) get the same structural checks here; verifying their
tokens belongs to the long-term-validation code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from typing import Any, Literal

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.form_tools import enumerate_fields_in
from pyhanko.pdf_utils.reader import HistoricalResolver, PdfFileReader
from pyhanko.sign.diff_analysis import (
    DEFAULT_DIFF_POLICY,
    ModificationLevel,
    QualifiedWhitelistRule,
    ReferenceUpdate,
    StandardDiffPolicy,
)
from pyhanko.sign.diff_analysis.commons import compare_dicts
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko.sign.validation.status import SignatureCoverageLevel

from ..errors import VerificationError
from .report import SignatureReport, VerificationReport

__all__ = [
    "ALLOWED_CHANGES",
    "DIFF_POLICY",
    "SIGNATURE_SUBFILTERS",
    "TIMESTAMP_SUBFILTERS",
    "AnnotationRule",
    "FoundSignature",
    "certificate_problem",
    "check_dictionary",
    "check_signer_identifier",
    "file_report",
    "find_signatures",
    "judge_changes",
    "judge_coverage",
    "with_change_note",
]

#: The ``/SubFilter`` values a signature (``/Type /Sig``) may have: CMS detached signatures of
#: the byte range. ``adbe.pkcs7.sha1`` (a signed SHA-1 digest) and ``adbe.x509.rsa_sha1`` (a bare
#: PKCS#1 signature) are refused: deprecated, and not what the card signs.
SIGNATURE_SUBFILTERS = frozenset({"/adbe.pkcs7.detached", "/ETSI.CAdES.detached"})
TIMESTAMP_SUBFILTERS = frozenset({"/ETSI.RFC3161"})

#: Modification levels after a signature that leave it valid: none, validation data and
#: document timestamps, more signatures and form filling, annotations (comments: they are not
#: part of the signed content, and the report names them). Anything else changes what was signed.
ALLOWED_CHANGES = (ModificationLevel.NONE, ModificationLevel.LTA_UPDATES,
                   ModificationLevel.FORM_FILLING, ModificationLevel.ANNOTATIONS)

#: Stable names of the modification levels (``details["modification_level"]``) and their words.
CHANGE_LEVELS: dict[ModificationLevel, tuple[str, str]] = {
    ModificationLevel.NONE: ("none", "none"),
    ModificationLevel.LTA_UPDATES: ("lta-updates", "later updates add only validation data or timestamps"),
    ModificationLevel.FORM_FILLING: ("form-filling", "later updates add signatures or fill form fields"),
    ModificationLevel.ANNOTATIONS: ("annotations", "later updates add or change annotations (comments "
                                    "on the page, not part of the signed content: review them)"),
    ModificationLevel.OTHER: ("other", "later updates change the document"),
}

#: Bounds of the walks below (a hostile file may hold cycles or millions of objects).
MAX_PAGES = 100_000
MAX_PARENTS = 32


@dataclasses.dataclass(frozen=True)
class FoundSignature:
    """A signature dictionary a viewer can show, or a reason it cannot be one.

    ``value_ref`` is the reference of the field's ``/V`` (None when it is not an indirect
    object); ``problem`` is set when the listing itself found it unusable.
    """

    name: str
    field_ref: generic.IndirectObject | None
    value_ref: generic.Reference | None
    kind: Literal["signature", "timestamp"]
    problem: VerificationError | None = None

    def embedded(self, reader: PdfFileReader) -> EmbeddedPdfSignature:
        """pyHanko's view of this signature (after :func:`check_dictionary` passed)."""
        field = None if self.field_ref is None else self.field_ref.get_object()
        if not isinstance(field, generic.DictionaryObject):
            raise _malformed(f"signature field {self.name} is not a dictionary")
        return EmbeddedPdfSignature(reader, field, self.name)

    def revision(self, reader: PdfFileReader) -> int:
        """The revision that last changed the signature dictionary (signing order)."""
        if self.value_ref is None:
            return 1 << 30
        try:
            return int(reader.xrefs.get_last_change(self.value_ref))
        except Exception:  # noqa: BLE001 - an object the xref does not know: order it last
            return 1 << 30


def _malformed(message: str) -> VerificationError:
    return VerificationError("malformed", message)


def _parent_chain(node: generic.DictionaryObject) -> list[generic.DictionaryObject]:
    """``node`` and its /Parent fields, nearest first, bounded (cycles are cut)."""
    chain = [node]
    seen = {id(node)}
    while len(chain) < MAX_PARENTS:
        parent = chain[-1].get("/Parent")
        if not isinstance(parent, generic.DictionaryObject) or id(parent) in seen:
            break
        seen.add(id(parent))
        chain.append(parent)
    return chain


def _inherited(chain: list[generic.DictionaryObject], key: str) -> Any:
    return next((d.raw_get(key) for d in chain if key in d), None)


def _kind_of(value: generic.PdfObject) -> Literal["signature", "timestamp"]:
    if isinstance(value, generic.DictionaryObject) and value.get("/Type") == "/DocTimeStamp":
        return "timestamp"
    return "signature"


def _from_value(name: str, field_ref: generic.IndirectObject | None,
                raw: generic.PdfObject) -> FoundSignature:
    """A FoundSignature for a field's raw /V."""
    if isinstance(raw, generic.IndirectObject):
        value = raw.get_object()
        if not isinstance(value, generic.DictionaryObject):
            return FoundSignature(name, field_ref, raw.reference, "signature", _malformed(
                f"the value of signature field {name} is not a signature dictionary"))
        return FoundSignature(name, field_ref, raw.reference, _kind_of(value))
    return FoundSignature(name, field_ref, None, "signature", _malformed(
        f"the value of signature field {name} is not an indirect signature dictionary"))


def find_signatures(reader: PdfFileReader) -> list[FoundSignature]:
    """Every signature dictionary in the document, in signing order.

    Form fields of type /Sig (inherited /FT included) with a /V — whatever their /SubFilter and
    even when the dictionary is empty or broken — and signature widgets on the pages whose field
    the form does not list (a viewer draws them; no verifier would look at them: refused).
    Raises what pyHanko's reader raises for a broken form tree (the caller's ``malformed``).
    """
    found: list[FoundSignature] = []
    known: set[tuple[int, int]] = set()
    try:
        fields = reader.root["/AcroForm"]["/Fields"]
    except (KeyError, TypeError):
        fields = None
    if fields is not None:
        for name, _, field_ref in enumerate_fields_in(fields, filled_status=None, refs_seen=set(),
                                                      target_field_type="/Sig"):
            field = field_ref.get_object()
            raw = field.raw_get("/V") if "/V" in field else None
            if raw is None or isinstance(raw.get_object(), generic.NullObject):
                continue  # an empty signature field: nothing signed, nothing claimed
            item = _from_value(str(name), field_ref, raw)
            if item.value_ref is not None:
                known.add((item.value_ref.idnum, item.value_ref.generation))
            found.append(item)
    for page_no, widget in _page_widgets(reader):
        chain = _parent_chain(widget)
        if _inherited(chain, "/FT") != "/Sig":
            continue
        raw = _inherited(chain, "/V")
        if raw is None or isinstance(raw.get_object(), generic.NullObject):
            continue
        ref = raw.reference if isinstance(raw, generic.IndirectObject) else None
        if ref is not None and (ref.idnum, ref.generation) in known:
            continue
        title = _inherited(chain, "/T")
        name = f"{title} (page {page_no})" if title is not None else f"unnamed (page {page_no})"
        found.append(FoundSignature(name, None, ref, "signature", _malformed(
            f"a signature widget on page {page_no} belongs to no field of the document's form "
            "(/AcroForm /Fields): viewers may draw it, no verifier checks it")))
    return sorted(found, key=lambda f: f.revision(reader))


def _page_widgets(reader: PdfFileReader) -> list[tuple[int, generic.DictionaryObject]]:
    """(page number from 1, widget annotation) for the pages of the page tree, bounded."""
    out: list[tuple[int, generic.DictionaryObject]] = []
    try:
        todo = [reader.root["/Pages"]]
    except (KeyError, TypeError):
        return out
    seen: set[int] = set()
    page_no = 0
    while todo and page_no < MAX_PAGES:
        node = todo.pop()
        if not isinstance(node, generic.DictionaryObject) or id(node) in seen:
            continue
        seen.add(id(node))
        kids = node.get("/Kids")
        if isinstance(kids, generic.ArrayObject):
            todo.extend(reversed([k.get_object() for k in kids]))
            continue
        page_no += 1
        annots = node.get("/Annots")
        if not isinstance(annots, generic.ArrayObject):
            continue
        for annot in annots:
            annot = annot.get_object()
            if isinstance(annot, generic.DictionaryObject) and annot.get("/Subtype") == "/Widget":
                out.append((page_no, annot))
    return out


# --------------------------------------------------------------------------- one dictionary

def _byte_range(sig: generic.DictionaryObject, name: str) -> tuple[int, int, int, int]:
    raw = sig.raw_get("/ByteRange") if "/ByteRange" in sig else None
    if raw is None:
        raise VerificationError("not-signed", f"the signature dictionary of field {name} has no "
                                "/ByteRange: nothing is signed")
    if not isinstance(raw, generic.ArrayObject):
        raise VerificationError("bad-byte-range", f"the /ByteRange of field {name} is not a direct "
                                "array (an indirect one could be replaced by a later update)")
    values = list(raw)
    if len(values) != 4 or not all(isinstance(v, generic.NumberObject) and v >= 0 for v in values):
        raise VerificationError("bad-byte-range", f"the /ByteRange of field {name} is not four "
                                "non-negative integers (two ranges around the signature value)")
    start1, len1, start2, len2 = (int(v) for v in values)
    return start1, len1, start2, len2


def _contents(sig: generic.DictionaryObject, name: str) -> bytes:
    raw = sig.raw_get("/Contents") if "/Contents" in sig else None
    if raw is None:
        raise VerificationError("not-signed", f"the signature dictionary of field {name} has no "
                                "/Contents: there is no signature")
    if not isinstance(raw, (generic.ByteStringObject, generic.TextStringObject)):
        raise VerificationError("not-signed", f"the /Contents of field {name} is not a direct "
                                "string: there is no signature in it")
    contents: bytes = raw.original_bytes
    if not contents.strip(b"\0"):
        raise VerificationError("not-signed", f"field {name} holds a signature dictionary whose "
                                "/Contents is empty: it was never signed")
    return contents


def check_dictionary(reader: PdfFileReader, found: FoundSignature) -> None:
    """The shape of one signature dictionary and its /ByteRange against the raw file.

    A signature covers the file from byte 0 to the end of the revision that holds it, except
    the hole that is exactly its ``/Contents`` hex string ``<…>``: ``[0 a b c]`` with the
    value at ``a..b``. Refused (``bad-byte-range``): not from 0, overlapping ranges, a hole
    larger or smaller than the value or not holding it (bytes nobody signed), a range past the
    end of the file. Where the signed part ends is judged with the revisions by
    :func:`judge_coverage`. A dictionary without a signature value is ``not-signed``; an unknown
    /SubFilter or /Type ``malformed``.
    """
    name = found.name
    if found.problem is not None:
        raise found.problem
    assert found.value_ref is not None
    sig = found.value_ref.get_object()
    assert isinstance(sig, generic.DictionaryObject)
    kind = sig.get("/Type", "/Sig")
    if kind not in ("/Sig", "/DocTimeStamp"):
        raise _malformed(f"the signature dictionary of field {name} has /Type {kind}, not /Sig")
    contents = _contents(sig, name)
    allowed = SIGNATURE_SUBFILTERS if found.kind == "signature" else TIMESTAMP_SUBFILTERS
    subfilter = sig.get("/SubFilter")
    if subfilter not in allowed:
        raise _malformed(f"field {name}: /SubFilter {subfilter or '(none)'} is not supported "
                         f"(expected {' or '.join(sorted(s.lstrip('/') for s in allowed))}); the "
                         "signature cannot be checked")
    start1, len1, start2, len2 = _byte_range(sig, name)
    stream = reader.stream
    stream.seek(0, 2)
    size = stream.tell()
    if start1 != 0:
        raise VerificationError("bad-byte-range", f"the /ByteRange of field {name} starts at byte "
                                f"{start1}, not 0: the beginning of the file is not signed")
    if len1 == 0 or start2 < len1:
        raise VerificationError("bad-byte-range", f"the /ByteRange of field {name} has overlapping "
                                f"ranges (0..{len1} and {start2}..{start2 + len2})")
    end = start2 + len2
    if end > size:
        raise VerificationError("bad-byte-range", f"the /ByteRange of field {name} ends at byte "
                                f"{end}, past the end of the file ({size} bytes)")
    hole = start2 - len1
    expected = 2 * len(contents) + 2
    if hole != expected:
        raise VerificationError("bad-byte-range", f"the unsigned hole of field {name} (bytes "
                                f"{len1}..{start2}, {hole} bytes) is not exactly its /Contents value "
                                f"({expected} bytes): {abs(hole - expected)} bytes are left unsigned "
                                "or the value is partly signed")
    stream.seek(len1)
    raw = stream.read(hole)
    if raw[:1] != b"<" or raw[-1:] != b">" or raw[1:-1].lower() != contents.hex().encode():
        raise VerificationError("bad-byte-range", f"the unsigned hole of field {name} (bytes "
                                f"{len1}..{start2}) does not hold its /Contents value: the "
                                "signature value is elsewhere and other bytes are left unsigned")


def judge_coverage(coverage: SignatureCoverageLevel | None, name: str) -> str:
    """What a signature covers in words, or ``bad-byte-range`` when it does not reach the end of
    the revision that holds it (bytes of that revision nobody signed: an incremental-saving
    attack) or when pyHanko cannot tell."""
    if coverage == SignatureCoverageLevel.ENTIRE_FILE:
        return "the whole file"
    if coverage == SignatureCoverageLevel.ENTIRE_REVISION:
        return "its revision; the file was updated after signing"
    if coverage == SignatureCoverageLevel.CONTIGUOUS_BLOCK_FROM_START:
        raise VerificationError("bad-byte-range", f"the signed ranges of field {name} stop before "
                                "the end of the revision that holds the signature: the rest of "
                                "that revision (its cross-reference table or objects) is not signed")
    raise VerificationError("bad-byte-range", f"the /ByteRange of field {name} does not cover its "
                            "revision of the document")


#: Annotations a reader may add to a signed page: comments and markup. Not widgets (form
#: fields have their own rules), links, file attachments, media or anything with an action.
MARKUP_ANNOTATIONS = frozenset({
    "/Text", "/FreeText", "/Line", "/Square", "/Circle", "/Polygon", "/PolyLine", "/Highlight",
    "/Underline", "/Squiggly", "/StrikeOut", "/Stamp", "/Caret", "/Ink", "/Popup"})


def _annot_refs(page: generic.DictionaryObject) -> set[generic.Reference] | None:
    """The references in a page's /Annots (empty without one), None if it is not an array of
    indirect references (then nothing is approved)."""
    if "/Annots" not in page:
        return set()
    annots = page["/Annots"]
    if not isinstance(annots, generic.ArrayObject):
        return None
    refs = set()
    for item in annots:
        if not isinstance(item, generic.IndirectObject):
            return None
        refs.add(item.reference)
    return refs


def _is_markup(annot: generic.PdfObject) -> bool:
    return (isinstance(annot, generic.DictionaryObject)
            and annot.get("/Subtype") in MARKUP_ANNOTATIONS
            and "/A" not in annot and "/AA" not in annot)


class AnnotationRule(QualifiedWhitelistRule):
    """pyHanko's difference analysis knows no annotations (its default policy says so in a
    TODO): a comment added after signing is an unexplained change, like new page content. This
    rule approves, at level ANNOTATIONS, pages whose only change is new markup annotations
    (:data:`MARKUP_ANNOTATIONS`, without actions) that are new objects, with the new objects
    they use (appearance streams, pop-ups). Anything else on the page stays unexplained.
    """

    def apply_qualified(self, old: HistoricalResolver, new: HistoricalResolver,
                        ) -> Any:
        try:
            pairs = _page_pairs(old.root["/Pages"], new.root["/Pages"])
        except (KeyError, TypeError):
            return
        level = ModificationLevel.ANNOTATIONS
        for ref, old_page, new_page in pairs:
            old_refs, new_refs = _annot_refs(old_page), _annot_refs(new_page)
            if old_refs is None or new_refs is None or old_refs == new_refs:
                continue
            added = new_refs - old_refs
            if old_refs - new_refs or not all(old.is_ref_unassignable(r) for r in added):
                continue  # annotations removed, or an existing object number reused
            if not all(_is_markup(new(r)) for r in added):
                continue
            if not compare_dicts(old_page, new_page, frozenset({"/Annots"}), raise_exc=False):
                continue
            yield level, ReferenceUpdate(ref)
            array = new_page.raw_get("/Annots")
            if isinstance(array, generic.IndirectObject) and old.is_ref_unassignable(array.reference):
                yield level, ReferenceUpdate(array.reference)
            for annot in added:
                yield level, ReferenceUpdate(annot)
                for dep in new.collect_dependencies(new(annot), since_revision=old.revision + 1):
                    yield level, ReferenceUpdate(dep)


def _page_pairs(old_root: Any, new_root: Any) -> list[tuple[generic.Reference, Any, Any]]:
    """(reference, old page, new page) of the leaves of two page trees with the same shape
    (any difference in shape: none, the change stays unexplained), bounded."""
    out: list[tuple[generic.Reference, Any, Any]] = []
    todo = [(old_root, new_root)]
    seen: set[generic.Reference] = set()
    while todo and len(out) < MAX_PAGES:
        old_node, new_node = todo.pop()
        old_kids, new_kids = old_node.raw_get("/Kids"), new_node.raw_get("/Kids")
        old_kids, new_kids = old_kids.get_object(), new_kids.get_object()
        if not (isinstance(old_kids, generic.ArrayObject) and isinstance(new_kids, generic.ArrayObject)):
            return []
        if [getattr(k, "reference", None) for k in old_kids] != [getattr(k, "reference", None) for k in new_kids]:
            return []
        for old_kid, new_kid in zip(old_kids, new_kids, strict=True):
            ref = getattr(new_kid, "reference", None)
            if ref is None or ref in seen:
                return []
            seen.add(ref)
            old_obj, new_obj = old_kid.get_object(), new_kid.get_object()
            if not (isinstance(old_obj, generic.DictionaryObject)
                    and isinstance(new_obj, generic.DictionaryObject)):
                return []
            if old_obj.get("/Type") == "/Pages":
                todo.append((old_obj, new_obj))
            else:
                out.append((ref, old_obj, new_obj))
    return out


#: pyHanko's default difference policy with :class:`AnnotationRule`.
DIFF_POLICY = StandardDiffPolicy(global_rules=[*DEFAULT_DIFF_POLICY.global_rules, AnnotationRule()],
                                 form_rule=DEFAULT_DIFF_POLICY.form_rule)


def judge_changes(summary: dict[str, Any]) -> dict[str, str]:
    """``details`` entries for what changed after a signature (pyHanko's difference analysis),
    or ``tampered`` when a later update changes the signed content (or breaks the DocMDP
    permissions of a certifying signature), with pyHanko's finding in the message."""
    diff = summary.get("diff_result")
    level = getattr(diff, "modification_level", ModificationLevel.OTHER)
    code, words = CHANGE_LEVELS.get(level, ("other", str(level)))
    details = {"changes": words, "modification_level": code}
    if level not in ALLOWED_CHANGES:
        finding = str(diff).strip().splitlines()[0] if diff is not None and str(diff).strip() else ""
        raise VerificationError(
            "tampered", f"the document was changed after it was signed ({words}: an incremental "
            "update after the signature modifies what was signed"
            + (f"; {finding[:200]}" if finding else "") + ")")
    if summary.get("docmdp_ok") is False:
        raise VerificationError(
            "tampered", f"the document was changed after it was signed ({words}), beyond what the "
            "certifying signature's DocMDP permissions allow")
    return details


# --------------------------------------------------------------------------- who signed

def _matches(sid: cms.SignerIdentifier, cert: asn1_x509.Certificate) -> bool:
    if sid.name == "issuer_and_serial_number":
        want = sid.chosen
        return bool(cert.serial_number == want["serial_number"].native
                    and (cert.issuer.dump() == want["issuer"].dump() or cert.issuer == want["issuer"]))
    if sid.name == "subject_key_identifier":
        return bool(cert.key_identifier == sid.chosen.native)
    return False


def check_signer_identifier(signer_info: cms.SignerInfo,
                            certificates: list[asn1_x509.Certificate]) -> None:
    """The SignerInfo's ``sid`` designates exactly one certificate of the CMS, and the
    signing-certificate(-v2) attribute, when present, names that same certificate.

    Refused (``signer-mismatch``): no certificate or several for the ``sid`` (a certificate
    swapped or added in the CMS certificates set, to show another name than the key's owner), or
    an attribute naming another certificate.
    """
    sid = signer_info["sid"]
    # the same certificate twice is no ambiguity (pyHanko embeds the signer's certificate
    # both as the signing certificate and from its registry)
    matching = list({c.dump(): c for c in certificates if _matches(sid, c)}.values())
    if not matching:
        raise VerificationError("signer-mismatch", "no certificate in the signature matches the "
                                "signer identifier: the signer's certificate was removed or swapped")
    if len(matching) > 1:
        raise VerificationError("signer-mismatch", f"{len(matching)} certificates in the signature "
                                "match the signer identifier: which one signed is ambiguous")
    cert = matching[0]
    attrs = signer_info["signed_attrs"]
    if attrs.native is None:
        return
    for attr in attrs:
        kind = attr["type"].native
        if kind not in ("signing_certificate_v2", "signing_certificate"):
            continue
        for value in attr["values"]:
            ids = list(value["certs"])
            if not ids:
                continue
            first = ids[0]
            algorithm = (first["hash_algorithm"]["algorithm"].native
                         if kind == "signing_certificate_v2" else "sha1")
            if algorithm not in hashlib.algorithms_available:
                continue  # unknown hash: check_signer_info refuses it as malformed
            if not hmac.compare_digest(hashlib.new(algorithm, cert.dump()).digest(),
                                       first["cert_hash"].native):
                raise VerificationError("signer-mismatch", "the signing-certificate attribute names "
                                        "another certificate than the one the signer identifier "
                                        "designates: the certificate was swapped")


def certificate_problem(cert: x509.Certificate) -> VerificationError | None:
    """Why ``cert`` may not have made a document signature, or None.

    BasicConstraints cA=TRUE: a CA certificate is not a signer (``ca-certificate``); no
    KeyUsage, or one with neither digitalSignature nor nonRepudiation (``wrong-key-usage``).
    Which of the two a legal signature needs is :func:`jpki.sign.report.check_key_usage`'s part.
    """
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    except ValueError as exc:
        return _malformed(f"unreadable certificate extensions: {exc}")
    if bc is not None and bc.ca:
        return VerificationError("ca-certificate", "the signer's certificate is a CA certificate "
                                 "(BasicConstraints cA=TRUE): a CA key signs certificates, not "
                                 "documents")
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return VerificationError("wrong-key-usage", "the signer's certificate has no KeyUsage: it "
                                 "does not say that its key may sign")
    if not (ku.digital_signature or ku.content_commitment):
        return VerificationError("wrong-key-usage", "the signer's certificate allows neither "
                                 "digitalSignature nor nonRepudiation: its key may not sign")
    return None


# --------------------------------------------------------------------------- the file

def with_change_note(report: SignatureReport) -> SignatureReport:
    """A valid signature whose page got annotations after signing says so on its first line,
    not only in its details: what a reader sees is no longer only what was signed."""
    if report.ok and report.details.get("modification_level") == "annotations":
        return dataclasses.replace(report, message=f"{report.message}; annotations were added "
                                   "after signing (not signed: review them)")
    return report



def file_report(name: str, reports: tuple[SignatureReport, ...]) -> VerificationReport:
    """The verdict on a PDF: valid only if every signature is; with several, the message says
    which ones are not (``signature 2 of 3 (field Approval) is INVALID (tampered): …``)."""
    report = VerificationReport.of(name, "pdf", reports)
    bad = [(i, s) for i, s in enumerate(reports, 1) if not s.ok]
    if len(reports) < 2 or not bad:
        return report
    i, first = bad[0]
    field = first.details.get("field")
    which = f"signature {i} of {len(reports)}" + (f" (field {field})" if field else "")
    more = f"; {len(bad) - 1} more invalid" if len(bad) > 1 else ""
    return dataclasses.replace(report, message=f"{which} is INVALID ({first.reason}): "
                               f"{first.message}{more}; {len(reports) - len(bad)} of {len(reports)} valid")
