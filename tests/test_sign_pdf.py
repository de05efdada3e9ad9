"""PDF signatures by the card (jpki.sign.pdf, ``jpki sign --pdf`` / ``jpki verify``): PAdES B-B
and B-T, interop with pyHanko's validator and poppler's ``pdfsig``, visible stamps, more than one
signature, and bad input (an update after signing, the auth key, no signature, a broken file).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("pyhanko")

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext
from sign_support import ALICE, CHECKED_AT, SIGNED_AT, card_signer, make_pdf, validator

from jpki.clock import FixedClock
from jpki.errors import JpkiError, UsageError
from jpki.pki import free_port
from jpki.sign.pdf import parse_visible, sign_pdf, verify_pdf


@pytest.fixture
def pdf(tmp_path) -> Path:
    path = tmp_path / "contract.pdf"
    path.write_bytes(make_pdf(pages=2))
    return path


def sign(home: Path, src: Path, out: Path, *, key: str = "sign", card: str = "alice", **options):
    with card_signer(home, key, card=card) as signer:
        return sign_pdf(src, out, signer, clock=FixedClock(SIGNED_AT), **options)


def signer_info(path: Path, index: int = 0) -> cms.SignerInfo:
    with open(path, "rb") as fh:
        emb = PdfFileReader(fh).embedded_signatures[index]
        return emb.signer_info


# --------------------------------------------------------------------------- B-B

def test_pades_b_b_signed_by_the_card(home, pdf, tmp_path):
    out = tmp_path / "signed.pdf"
    done = sign(home, pdf, out, reason="承認", location="東京")
    assert done.profile == "PAdES-B-B" and done.field == "Signature1"
    with open(out, "rb") as fh:
        emb = PdfFileReader(fh).embedded_signatures[0]
        assert str(emb.sig_object["/SubFilter"]) == "/ETSI.CAdES.detached"
        assert emb.sig_object["/Reason"] == "承認"
        attrs = {a["type"].native for a in emb.signer_info["signed_attrs"]}
    assert "signing_certificate_v2" in attrs and "signing_time" not in attrs, "PAdES: time in /M"
    report = verify_pdf(out, validator=validator(home))
    assert report.ok, report.summary()
    (sig,) = report.signatures
    assert sig.profile == "PAdES-B-B" and sig.details["coverage"] == "the whole file"
    assert sig.identity["name"] == ALICE.name and sig.identity["birth_date"] == "1990-04-15"
    assert sig.signing_time == SIGNED_AT and "/M" in sig.time_source


def test_pyhanko_validator_accepts_our_pdf(home, pdf, tmp_path):
    out = tmp_path / "signed.pdf"
    with card_signer(home) as signer:
        sign_pdf(pdf, out, signer, clock=FixedClock(SIGNED_AT))
    root = asn1_x509.Certificate.load(x509.load_pem_x509_certificate(
        (home / "ca" / "sign_ca.pem").read_bytes()).public_bytes(serialization.Encoding.DER))
    context = ValidationContext(trust_roots=[root], allow_fetching=False,
                                revocation_mode="soft-fail", moment=CHECKED_AT)  # any date
    with open(out, "rb") as fh:
        status = validate_pdf_signature(PdfFileReader(fh).embedded_signatures[0], context)
    assert status.intact and status.valid and status.trusted, status.pretty_print_details()
    assert status.bottom_line


@pytest.fixture
def pdfsig():
    if shutil.which("pdfsig") is None:
        pytest.skip("pdfsig (poppler-utils) not installed")
    return "pdfsig"


def test_pdfsig_reports_a_valid_signature(cli, pdf, tmp_path, pdfsig):
    out = tmp_path / "signed.pdf"
    r = cli("sign", "--pdf", str(pdf), "-o", str(out), "--visible", "1,360,40,560,100",
            "--reason", "approved", input="ABC123\n")
    assert r.exit_code == 0, r.stderr
    p = subprocess.run([pdfsig, str(out)], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    assert "Signature Validation: Signature is Valid." in p.stdout, p.stdout
    assert "Signature Type: ETSI.CAdES.detached" in p.stdout
    assert "Total document signed" in p.stdout


def test_visible_signature_on_the_chosen_page(home, pdf, tmp_path):
    out = tmp_path / "signed.pdf"
    sign(home, pdf, out, field="Approval", visible=parse_visible("2,100,100,300,160"))
    with open(out, "rb") as fh:
        reader = PdfFileReader(fh)
        first, second = (k.get_object() for k in reader.root["/Pages"]["/Kids"])
        assert "/Annots" not in first
        (widget,) = (w.get_object() for w in second["/Annots"])
        assert widget["/T"] == "Approval"
        assert [float(v) for v in widget["/Rect"]] == [100, 100, 300, 160]
        assert "/AP" in widget
    assert verify_pdf(out, validator=validator(home)).ok
    with pytest.raises(UsageError, match="has 2 page"):
        sign(home, pdf, tmp_path / "x.pdf", visible=parse_visible("3,1,1,20,20"))
    for bad in ("1,2,3", "0,1,1,2,2", "1,10,10,5,20", "a,b,c,d,e"):
        with pytest.raises(UsageError):
            parse_visible(bad)
    assert not (tmp_path / "x.pdf").exists()


def test_cli_pdf_sign_and_verify_json(cli, pdf, tmp_path):
    r = cli("--json", "sign", "--pdf", str(pdf), "--field", "Sig-A",
            input="ABC123\n")
    assert r.exit_code == 0, r.stderr
    done = r.json()
    assert done["output"] == str(tmp_path / "contract-signed.pdf") and done["field"] == "Sig-A"
    v = cli("--json", "verify", done["output"], "--revocation", "none")
    assert v.exit_code == 0, v.stdout
    doc = v.json()
    assert doc["ok"] and doc["format"] == "pdf"
    (sig,) = doc["signatures"]
    assert sig["field"] == "Sig-A" and sig["identity"]["sex"] == "female"
    assert sig["identity"]["address"] == ALICE.address
    h = cli("verify", done["output"], "--revocation", "none")
    assert "VALID" in h.stdout and ALICE.name in h.stdout and "1990-04-15" in h.stdout


# --------------------------------------------------------------------------- several signatures

def test_a_second_signature_keeps_the_first_valid(home, pdf, tmp_path):
    once = tmp_path / "once.pdf"
    twice = tmp_path / "twice.pdf"
    sign(home, pdf, once)
    done = sign(home, once, twice, card="bob")
    assert done.field == "Signature2"
    report = verify_pdf(twice, validator=validator(home))
    assert report.ok, report.summary()
    first, second = report.signatures
    assert first.identity["name"] == ALICE.name and second.identity["name"] == "鈴木\u3000一郎"
    assert "update" in first.details["coverage"] and "signatures" in first.details["changes"]
    assert second.details["coverage"] == "the whole file"
    with pytest.raises(JpkiError):
        sign(home, twice, tmp_path / "again.pdf", field="Signature1")
    assert not (tmp_path / "again.pdf").exists()


# --------------------------------------------------------------------------- B-T

def test_pades_b_t_with_a_timestamp_authority(cli, home, pdf, tmp_path, tsa):
    out = tmp_path / "b-t.pdf"
    r = cli("--json", "sign", "--pdf", str(pdf), "-o", str(out), "--tsa", tsa.url,
            input="ABC123\n")
    assert r.exit_code == 0, r.stderr
    assert r.json()["profile"] == "PAdES-B-T"
    unsigned = {a["type"].native for a in signer_info(out)["unsigned_attrs"]}
    assert "signature_time_stamp_token" in unsigned
    report = verify_pdf(out, validator=validator(home, at=CHECKED_AT))
    assert report.ok, report.summary()
    (sig,) = report.signatures
    assert sig.profile == "PAdES-B-T" and sig.time_source.startswith("signature timestamp")
    assert sig.timestamp["tsa"] == "CN=jpki test TSA,O=jpki tests,C=JP"
    assert sig.timestamp["tsa_certificate_validated"] is True and sig.proven_time == SIGNED_AT
    if shutil.which("pdfsig"):
        p = subprocess.run(["pdfsig", str(out)], capture_output=True, text=True, timeout=60, check=False)
        assert "Signature Validation: Signature is Valid." in p.stdout, p.stdout


def test_unreachable_tsa_leaves_no_output(cli, pdf, tmp_path):
    out = tmp_path / "b-t.pdf"
    r = cli("sign", "--pdf", str(pdf), "-o", str(out), "--tsa",
            f"http://127.0.0.1:{free_port()}/tsr", input="ABC123\n")  # nothing listens there
    assert r.exit_code == 1 and "error:" in r.stderr
    assert not out.exists()


# --------------------------------------------------------------------------- bad input

def test_an_update_after_signing_is_tampering(cli, home, pdf, tmp_path):
    signed = tmp_path / "signed.pdf"
    sign(home, pdf, signed)
    changed = tmp_path / "changed.pdf"
    with open(signed, "rb") as fh:
        writer = IncrementalPdfFileWriter(fh)
        page = writer.root["/Pages"]["/Kids"][0].get_object()
        extra = writer.add_object(generic.StreamObject(
            stream_data=b"BT /F1 24 Tf 72 600 Td (Pay 1,000,000 yen) Tj ET"))
        page["/Contents"] = generic.ArrayObject([page.raw_get("/Contents"), extra])
        writer.update_container(page)
        with open(changed, "wb") as out:
            writer.write(out)
    report = verify_pdf(changed, validator=validator(home))
    assert (report.ok, report.reason) == (False, "tampered"), report.summary()
    assert "changed after it was signed" in report.message
    r = cli("verify", str(changed), "--revocation", "none")
    assert r.exit_code == 3 and "INVALID (tampered)" in r.stdout
    # bytes appended inside the signed range are tampering of another kind
    raw = bytearray(signed.read_bytes())
    at = raw.find(b"Contract, page 1")
    raw[at] = ord("K")
    flipped = tmp_path / "flipped.pdf"
    flipped.write_bytes(bytes(raw))
    assert verify_pdf(flipped, validator=validator(home)).reason == "tampered"


def test_auth_key_pdf_signature_is_wrong_key_usage(home, pdf, tmp_path):
    out = tmp_path / "auth.pdf"
    sign(home, pdf, out, key="auth")
    report = verify_pdf(out, validator=validator(home))
    assert (report.ok, report.reason) == (False, "wrong-key-usage")
    assert verify_pdf(out, validator=validator(home), expected="auth").ok


def test_unsigned_broken_and_encrypted_files(cli, home, pdf, tmp_path):
    r = cli("--json", "verify", str(pdf), "--revocation", "none")
    assert r.exit_code == 3 and r.json()["reason"] == "no-signer"
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog\nthis is not a pdf")
    r = cli("--json", "verify", str(broken), "--revocation", "none")
    assert r.exit_code == 3 and r.json()["reason"] == "malformed"
    signed = tmp_path / "signed.pdf"
    sign(home, pdf, signed)
    truncated = tmp_path / "truncated.pdf"
    truncated.write_bytes(signed.read_bytes()[: signed.stat().st_size // 2])
    r = cli("--json", "verify", str(truncated), "--revocation", "none")
    assert r.exit_code == 3 and r.json()["reason"] in ("malformed", "no-signer")
    r = cli("sign", "--pdf", str(broken), "-o", str(tmp_path / "o.pdf"), input="ABC123\n")
    assert r.exit_code == 1 and "not a readable PDF" in r.stderr
    assert not (tmp_path / "o.pdf").exists()
    r = cli("verify", str(signed), "--data", str(pdf))
    assert r.exit_code == 2 and "--data is for detached CMS" in r.stderr


def test_pdf_signing_never_leaves_a_partial_file(cli, pdf, tmp_path):
    out = tmp_path / "out.pdf"
    r = cli("sign", "--pdf", str(pdf), "-o", str(out), input="WRONG1\n")
    assert r.exit_code == 4
    assert not out.exists() and not list(tmp_path.glob("*.part"))
    r = cli("sign", "--pdf", str(pdf), "-o", str(pdf), input="ABC123\n")
    assert r.exit_code == 2 and "the PDF being signed" in r.stderr
    r = cli("sign", "--pdf", str(pdf), "--attached", input="ABC123\n")
    assert r.exit_code == 2 and "always embedded" in r.stderr
