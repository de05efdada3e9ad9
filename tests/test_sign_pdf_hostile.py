"""Hostile signed PDFs (issue 13, part 4): ``jpki verify`` refuses each with a stable reason code
and a one-line message, never a traceback, and says which signature is at fault.

The pattern is the advisories of jpki/myna (GHSA-g258-q5gf-7hvx: only the first signature was
verified; GHSA-58hw-cg5m-88rp: key usage and basic constraints not enforced) and the PDF
signature attacks of Mladenov et al. Every file is made here from a PDF that verifies, signed
with alice's real key (her emulated card, or the same key in software where the attack lays
out the signature itself: tests/pdf_attacks_support.py), so what is refused is the attack:

* every /Sig dictionary: a second, unsigned signature field (zeros in /Contents, an empty
  dictionary, no /ByteRange, a /SubFilter pyHanko skips, a widget the form does not list);
* the /ByteRange: a gap, an overlap, not from byte 0, a hole larger than /Contents, short of the
  end of the signed revision, past the end of the file;
* changes after signing: a shadow attack (the page shows an object hidden in the signed
  revision), the page content replaced, against an annotation added (allowed, reported);
* who signed: a CA key, a key usage without digitalSignature/nonRepudiation or none, a
  certificate swapped in the CMS certificates set;
* document timestamps (/DocTimeStamp, verified since the long-term levels): the same byte-range
  attacks with a genuine token from the test TSA over the attacker's range, one never stamped,
  a token over other bytes, an impostor beside the TSA's certificate. None may give a signature
  its time, and ``extend_pdf`` extends none of them.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyhanko")

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from pdf_attacks_support import (
    KeySigner,
    byte_range,
    card_key,
    cms_of,
    fake_signature_field,
    name,
    reissued,
    resigned,
    restamped,
    signature_spans,
    unsigned_value,
    updated,
    with_cms,
)
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation.status import SignatureCoverageLevel
from sign_support import ALICE, SIGNED_AT, card_signer, clocked_stamper, make_pdf, validator

from jpki.clock import FixedClock
from jpki.pki import TestCA
from jpki.sign import REASONS
from jpki.sign.levels import LevelError
from jpki.sign.pdf import extend_pdf, sign_pdf, verify_pdf
from jpki.verify import Validator

HIDDEN = b"BT /F1 24 Tf 72 600 Td (Pay 1,000,000 yen) Tj ET"


@dataclasses.dataclass(frozen=True)
class Base:
    """Made once per module: a home, valid PDFs signed by alice, her key in software."""

    home: Path
    folder: Path
    signed: bytes          # one page, signed by alice's card
    shadow: bytes          # the same with an unreferenced content stream, signed by the card
    alice: KeySigner       # alice's key and certificate
    bob_cert: x509.Certificate
    ca_key: rsa.RSAPrivateKey
    ca_cert: x509.Certificate
    validator: Validator

    def sign_with(self, signer: KeySigner, pdf: bytes | None = None) -> bytes:
        src = self.folder / "src.pdf"
        src.write_bytes(pdf or make_pdf())
        out = self.folder / "out.pdf"
        sign_pdf(src, out, signer, clock=FixedClock(SIGNED_AT))
        return out.read_bytes()


@pytest.fixture(scope="module")
def base(template_home, tmp_path_factory) -> Base:
    folder = tmp_path_factory.mktemp("hostile")
    home = folder / "home"
    shutil.copytree(template_home, home)
    plain = folder / "plain.pdf"
    plain.write_bytes(make_pdf())
    # the shadow document: the signed revision holds a content stream no page shows
    hidden = folder / "hidden.pdf"
    hidden.write_bytes(updated(make_pdf(), lambda w: w.add_object(generic.StreamObject(
        stream_data=HIDDEN))))
    with card_signer(home) as signer:
        sign_pdf(plain, folder / "signed.pdf", signer, clock=FixedClock(SIGNED_AT))
        sign_pdf(hidden, folder / "shadow.pdf", signer, clock=FixedClock(SIGNED_AT))
        alice = KeySigner(card_key(home), signer.certificate)
    with card_signer(home, card="bob") as signer:
        bob_cert = signer.certificate
    with TestCA.open(home / "ca") as ca:
        ca_key, ca_cert = ca.sign_ca_key, ca.sign_ca_cert
    made = Base(home, folder, (folder / "signed.pdf").read_bytes(),
                (folder / "shadow.pdf").read_bytes(), alice, bob_cert, ca_key, ca_cert,
                validator(home))
    assert verify_pdf(folder / "signed.pdf", validator=made.validator).ok
    assert verify_pdf(folder / "shadow.pdf", validator=made.validator).ok
    assert verify_pdf(_write(folder / "soft.pdf", made.sign_with(alice)), validator=made.validator).ok
    return made


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- the attacks

def _second_field(value: Callable[[], generic.DictionaryObject], *, listed: bool = True):
    def make(b: Base) -> bytes:
        return updated(b.signed, lambda w: fake_signature_field(w, "Mayor", value(), listed=listed))
    return make


def _range(change: Callable[[list[int]], list[int]]):
    def make(b: Base) -> bytes:
        pdf = b.sign_with(b.alice)
        return resigned(pdf, b.alice, change(byte_range(pdf)))
    return make


def _shadow(b: Base) -> bytes:
    """The hide variant of the shadow attack: the update only points the page at content that
    was in the signed revision all along (unreferenced, so no viewer showed it)."""
    reader = PdfFileReader(io.BytesIO(b.shadow))
    hidden = next(ref for ref in reader.xrefs.explicit_refs_in_revision(1)
                  if isinstance(ref.get_object(), generic.StreamObject)
                  and ref.get_object().data == HIDDEN)

    def show(w) -> None:
        page = w.root["/Pages"]["/Kids"][0].get_object()
        page[name("/Contents")] = generic.IndirectObject(hidden.idnum, hidden.generation, w)
        w.update_container(page)
    return updated(b.shadow, show)


def _replace_content(b: Base) -> bytes:
    """An incremental update that redefines the page's content stream object."""
    def replace(w) -> None:
        ref = w.root["/Pages"]["/Kids"][0].get_object().raw_get("/Contents").reference
        w.objects[(ref.generation, ref.idnum)] = generic.StreamObject(stream_data=HIDDEN)
    return updated(b.signed, replace)


def _annotation(b: Base, subtype: str = "/Text", **extra: generic.PdfObject) -> bytes:
    """A reader's comment (or another annotation) added to page 1 after signing."""
    def comment(w) -> None:
        page = w.root["/Pages"]["/Kids"][0].get_object()
        note = w.add_object(generic.DictionaryObject({
            name("/Type"): name("/Annot"), name("/Subtype"): name(subtype),
            name("/Rect"): generic.ArrayObject([generic.NumberObject(v) for v in (300, 700, 320, 720)]),
            name("/Contents"): generic.TextStringObject("確認しました"),
            **{name(k): v for k, v in extra.items()}}))
        page[name("/Annots")] = generic.ArrayObject([*page["/Annots"], note])
        w.update_container(page)
    return updated(b.signed, comment)


def _signed_by(make_cert: Callable[[Base], tuple[rsa.RSAPrivateKey, x509.Certificate]]):
    def make(b: Base) -> bytes:
        key, cert = make_cert(b)
        return b.sign_with(KeySigner(key, cert))
    return make


def _ku(usage: x509.KeyUsage | None):
    return _signed_by(lambda b: (b.alice.key, reissued(b.alice.certificate, b.ca_key, key_usage=usage)))


def _certificates(change: Callable[[Base, list[asn1_x509.Certificate]], list[asn1_x509.Certificate]]):
    """The card's signature with its CMS certificates set changed (signed bytes untouched)."""
    def make(b: Base) -> bytes:
        info = cms_of(b.signed)
        signed_data = info["content"]
        certs = [c.chosen for c in signed_data["certificates"]]
        signed_data["certificates"] = cms.CertificateSet(
            [cms.CertificateChoices({"certificate": c}) for c in change(b, certs)])
        return with_cms(b.signed, cms.ContentInfo({"content_type": "signed_data",
                                                   "content": signed_data}))
    return make


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))


def _impostor(b: Base) -> x509.Certificate:
    """A certificate with alice's issuer and serial number but bob's name and key usage: what
    an attacker puts beside (or instead of) alice's to show another signer."""
    return reissued(b.bob_cert, b.ca_key, key_usage=x509.KeyUsage(
        True, True, False, False, False, False, False, False, False),
        serial=b.alice.certificate.serial_number)


#: name → (how to make it from the base, the reason jpki verify must give)
CASES: dict[str, tuple[Callable[[Base], bytes], str]] = {
    # every /Sig dictionary, not only the first
    "second field never signed": (_second_field(unsigned_value), "not-signed"),
    "second field, empty dictionary": (_second_field(generic.DictionaryObject), "not-signed"),
    "second field without /ByteRange": (_second_field(lambda: generic.DictionaryObject({
        name("/Type"): name("/Sig"), name("/SubFilter"): name("/ETSI.CAdES.detached"),
        name("/Contents"): generic.ByteStringObject(b"\x30\x03\x02\x01\x01")})), "not-signed"),
    "second field, a SubFilter pyHanko skips": (_second_field(lambda: unsigned_value(
        "/jpki.forged", contents=b"\x30\x03\x02\x01\x01")), "malformed"),
    "signature widget outside the form": (_second_field(unsigned_value, listed=False), "malformed"),
    # the byte range
    "gap after the value": (_range(lambda r: [0, r[1], r[2] + 12, r[3] - 12]), "bad-byte-range"),
    "hole starts before the value": (_range(lambda r: [0, r[1] - 10, r[2], r[3]]), "bad-byte-range"),
    "second range inside the value, last bytes unsigned": (
        _range(lambda r: [0, r[1], r[2] - 40, r[3]]), "bad-byte-range"),
    "not from byte 0": (_range(lambda r: [9, r[1] - 9, r[2], r[3]]), "bad-byte-range"),
    "ranges overlap": (_range(lambda r: [0, r[2] + 4, r[2], r[3]]), "bad-byte-range"),
    "short of the end of the revision": (_range(lambda r: [0, r[1], r[2], r[3] - 12]),
                                         "bad-byte-range"),
    "past the end of the file": (_range(lambda r: [0, r[1], r[2], r[3] + 100]), "bad-byte-range"),
    # changes after signing
    "shadow attack: the page shows a hidden object": (_shadow, "tampered"),
    "page content replaced": (_replace_content, "tampered"),
    # who signed
    "signed by the CA's key": (_signed_by(lambda b: (b.ca_key, b.ca_cert)), "ca-certificate"),
    "key usage: keyEncipherment only": (_ku(x509.KeyUsage(
        False, False, True, False, False, False, False, False, False)), "wrong-key-usage"),
    "no key usage": (_ku(None), "wrong-key-usage"),
    "certificate swapped for bob's": (_certificates(lambda b, certs: [_asn1(b.bob_cert)]),
                                      "signer-mismatch"),
    "impostor beside the signer's certificate": (_certificates(
        lambda b, certs: [_asn1(_impostor(b)), *certs]), "signer-mismatch"),
    "impostor instead of the signer's certificate": (_certificates(
        lambda b, certs: [_asn1(_impostor(b))]), "signer-mismatch"),
}


#: Cases where the update that adds the attack also fails the first signature, and how.
EARLIER_FAILS = {"signature widget outside the form": "tampered"}


@pytest.fixture(scope="module")
def hostile(base) -> dict[str, Path]:
    """Each case written to a file once."""
    folder = base.folder / "cases"
    folder.mkdir()
    return {case: _write(folder / f"case{i}.pdf", make(base))
            for i, (case, (make, _)) in enumerate(CASES.items())}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_pdf_is_refused_with_its_reason(base, hostile, case):
    report = verify_pdf(hostile[case], validator=base.validator)
    reason = CASES[case][1]
    assert not report.ok and reason in REASONS
    # the attack's signature is the last one; an update that adds it may also be a change
    # after the first signature (the widget outside the form: pyHanko finds it unexplained)
    assert report.signatures[-1].reason == reason, report.summary()
    assert report.reason == (EARLIER_FAILS.get(case) or reason), report.summary()
    for sig in report.signatures:
        assert sig.ok or "\n" not in sig.message
    assert "\n" not in report.message and "Traceback" not in report.summary()


def test_a_fake_second_signature_does_not_hide_behind_a_valid_first(base, hostile):
    """GHSA-g258-q5gf-7hvx: each signature is reported; the file is valid only if all are, and
    the verdict names the one that is not."""
    for case in ("second field never signed", "second field, a SubFilter pyHanko skips",
                 "second field, empty dictionary"):
        report = verify_pdf(hostile[case], validator=base.validator)
        first, second = report.signatures
        assert first.ok and first.identity["name"] == ALICE.name, first.message
        assert first.details["modification_level"] == "form-filling"
        assert not second.ok and second.details["field"] == "Mayor"
        assert report.message.startswith("signature 2 of 2 (field Mayor) is INVALID ("), report.message
        assert report.message.endswith("; 1 of 2 valid")
    widget = verify_pdf(hostile["signature widget outside the form"], validator=base.validator)
    assert widget.signatures[-1].details["field"] == "Mayor (page 1)"
    assert "belongs to no field" in widget.signatures[-1].message
    # pyHanko alone lists one signature in these files: the second hides
    with open(hostile["second field, a SubFilter pyHanko skips"], "rb") as fh:
        assert len(PdfFileReader(fh).embedded_signatures) == 1


def test_a_byte_range_that_pyhanko_calls_the_whole_file(base, hostile):
    """The second range starts inside the hole and keeps its length, so the lengths add up to
    the file's size and pyHanko reports ENTIRE_FILE; the file's last 40 bytes (startxref, %%EOF)
    are signed by nobody. jpki checks where the hole is."""
    case = hostile["second range inside the value, last bytes unsigned"]
    data = case.read_bytes()
    _, _, start2, len2 = byte_range(data)
    assert start2 + len2 == len(data) - 40
    with open(case, "rb") as fh:
        emb = PdfFileReader(fh).embedded_signatures[0]
        emb.compute_integrity_info()
        assert emb.coverage == SignatureCoverageLevel.ENTIRE_FILE
    report = verify_pdf(case, validator=base.validator)
    assert report.reason == "bad-byte-range" and "not exactly its /Contents value" in report.message


def test_changes_after_signing_are_reported_as_what_they_are(base, hostile, tmp_path):
    for case, words in (("shadow attack: the page shows a hidden object", "change the document"),
                        ("page content replaced", "change the document")):
        report = verify_pdf(hostile[case], validator=base.validator)
        assert report.reason == "tampered" and words in report.message, report.message
    noted = verify_pdf(_write(tmp_path / "noted.pdf", _annotation(base)), validator=base.validator)
    assert noted.ok, noted.summary()
    (sig,) = noted.signatures
    assert sig.details["modification_level"] == "annotations"
    assert "annotations" in sig.details["changes"] and "annotations were added after signing" in sig.message
    # not a comment: a link that opens a web page when the reader clicks the page
    link = _annotation(base, "/Link", **{"/A": generic.DictionaryObject({
        name("/S"): name("/URI"), name("/URI"): generic.TextStringObject("https://example.com/")})})
    assert verify_pdf(_write(tmp_path / "link.pdf", link), validator=base.validator).reason == "tampered"
    untouched = verify_pdf(_write(tmp_path / "same.pdf", base.signed), validator=base.validator)
    assert untouched.signatures[0].details["modification_level"] == "none"


def test_who_signed_is_checked(base, hostile):
    ca = verify_pdf(hostile["signed by the CA's key"], validator=base.validator)
    assert "BasicConstraints cA=TRUE" in ca.message
    assert ca.signatures[0].signer["kind"] == "ca"  # the report still says who it was
    assert "digitalSignature nor nonRepudiation" in verify_pdf(
        hostile["key usage: keyEncipherment only"], validator=base.validator).message
    assert "no KeyUsage" in verify_pdf(hostile["no key usage"], validator=base.validator).message
    # without a validator too: these checks are not the certificate path's
    for case in ("signed by the CA's key", "no key usage"):
        assert verify_pdf(hostile[case]).reason == CASES[case][1]
    assert "ambiguous" in verify_pdf(hostile["impostor beside the signer's certificate"]).message
    assert "swapped" in verify_pdf(hostile["impostor instead of the signer's certificate"]).message


def test_the_cli_refuses_each_with_one_json_document(cli, base, hostile):
    for case, path in hostile.items():
        r = cli("--json", "verify", str(path), "--revocation", "none", home=base.home)
        assert r.exit_code == 3, (case, r.output)
        assert r.json()["reason"] == (EARLIER_FAILS.get(case) or CASES[case][1]), case
        assert "Traceback" not in r.stderr, case
    r = cli("verify", str(hostile["second field never signed"]), "--revocation", "none",
            home=base.home)
    assert r.exit_code == 3
    assert "INVALID (not-signed): signature 2 of 2 (field Mayor) is INVALID (not-signed)" in r.stdout
    assert "signature 1: VALID" in r.stdout and "signature 2: INVALID (not-signed)" in r.stdout
    # as a user runs it (no logging set up): pyHanko logs a traceback while it compares the
    # revisions of this one, and none reaches stderr
    done = cli.process("--json", "verify", str(hostile["signature widget outside the form"]),
                       "--revocation", "none", home=base.home, card=None)
    assert done.exit_code == 3 and done.json()["reason"] == "tampered"
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr


# --------------------------------------------------------------------------- document timestamps

@dataclasses.dataclass(frozen=True)
class Stamped:
    """alice's signature, then a document timestamp giving it its time (``--extend T``)."""

    pdf: bytes
    stamper: Any            # the test TSA, in process (a jpki.tsa.Timestamper)
    tsa_cert: x509.Certificate


@pytest.fixture(scope="module")
def stamped(base, _test_tsa) -> Stamped:
    stamper = clocked_stamper(_test_tsa.cert, _test_tsa.key, SIGNED_AT)
    out = base.folder / "stamped.pdf"
    extend_pdf(_write(base.folder / "to-stamp.pdf", base.signed), "T", output=out,
               timestamper=stamper, clock=FixedClock(SIGNED_AT))
    report = verify_pdf(out, validator=base.validator)
    assert report.ok and len(report.signatures) == 1, report.summary()
    assert report.signatures[0].time_source.startswith("document timestamp"), report.signatures[0].time_source
    assert report.signatures[0].profile == "PAdES-B-T"
    return Stamped(out.read_bytes(), stamper, _test_tsa.cert)


def _stamp_range(change: Callable[[list[int]], list[int]]) -> Callable[[Stamped, Base], bytes]:
    return lambda s, b: restamped(s.pdf, s.stamper, change(byte_range(s.pdf)))


def _never_stamped(s: Stamped, b: Base) -> bytes:
    _, contents = signature_spans(s.pdf)[-1]
    lo, hi = contents.span(1)
    return s.pdf[:lo] + b"0" * (hi - lo) + s.pdf[hi:]


def _token_of_other_bytes(s: Stamped, b: Base) -> bytes:
    return with_cms(s.pdf, cms.ContentInfo.load(s.stamper.stamp("sha256", bytes(32))))


def _tsa_impostor(s: Stamped, b: Base) -> bytes:
    """The TSA's issuer and serial number on another key (an EC one: it fits the slot), beside
    the TSA's certificate in the token (the certificates set is not signed: the document's bytes
    and the token's signature stay)."""
    usage = s.tsa_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    impostor = reissued(s.tsa_cert, b.ca_key, key_usage=usage,
                        public_key=ec.generate_private_key(ec.SECP256R1()).public_key())  # type: ignore[arg-type]
    token = cms_of(s.pdf)
    signed_data = token["content"]
    certs = [c.chosen for c in signed_data["certificates"]]
    signed_data["certificates"] = cms.CertificateSet(
        [cms.CertificateChoices({"certificate": c}) for c in (_asn1(impostor), *certs)])
    return with_cms(s.pdf, cms.ContentInfo({"content_type": "signed_data", "content": signed_data}))


#: name → (how to make it from the timestamped PDF, the reason of the document timestamp)
STAMP_CASES: dict[str, tuple[Callable[[Stamped, Base], bytes], str]] = {
    "gap after the value": (_stamp_range(lambda r: [0, r[1], r[2] + 12, r[3] - 12]), "bad-byte-range"),
    "second range inside the value, last bytes unsigned": (
        _stamp_range(lambda r: [0, r[1], r[2] - 40, r[3]]), "bad-byte-range"),
    "short of the end of the revision": (_stamp_range(lambda r: [0, r[1], r[2], r[3] - 12]),
                                         "bad-byte-range"),
    "never stamped (zeros in /Contents)": (_never_stamped, "not-signed"),
    "a token over other bytes": (_token_of_other_bytes, "tampered"),
    "an impostor beside the TSA's certificate": (_tsa_impostor, "signer-mismatch"),
}


@pytest.mark.parametrize("case", list(STAMP_CASES))
def test_a_hostile_document_timestamp_is_refused_and_proves_no_time(base, stamped, case, tmp_path):
    make, reason = STAMP_CASES[case]
    path = _write(tmp_path / "stamp.pdf", make(stamped, base))
    report = verify_pdf(path, validator=base.validator)
    assert not report.ok and report.reason == reason, report.summary()
    first, stamp = report.signatures
    # alice's signature itself is intact, but the broken timestamp gives it no time: its
    # signing time is the claim in /M again, and the file is invalid for the timestamp
    assert first.ok and first.profile == "PAdES-B-B" and first.proven_time is None, first.message
    assert stamp.reason == reason and stamp.message.startswith("document timestamp: "), stamp.message
    assert report.message.startswith("signature 2 of 2 (field "), report.message
    assert "\n" not in report.message
    with pytest.raises(LevelError, match=f"{reason}: .*: not extended"):
        extend_pdf(path, "LTA", output=tmp_path / "lta.pdf", timestamper=stamped.stamper,
                   clock=FixedClock(SIGNED_AT))
    assert not (tmp_path / "lta.pdf").exists()
