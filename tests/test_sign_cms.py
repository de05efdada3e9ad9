"""CMS signatures by the card (jpki.sign.cms, ``jpki sign`` / ``jpki verify``): CAdES-BES
structure, streaming, interop with ``openssl cms`` both ways, path and revocation through
jpki.verify, and bad input (each a clear message, an exit code and no partial output).

Signing times come from fixed clocks one hour after the fixture's certificates were issued
(conftest FIXED_NOW); the CLI uses the system clock (the certificates are valid from FIXED_NOW).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from asn1crypto import cms
from cli_support import Cli
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from fixed import FIXED_NOW
from sign_support import (
    ALICE,
    CHECKED_AT,
    SIGNED_AT,
    asgi_fetch,
    card_signer,
    sign_doc,
    validator,
)

from jpki.clock import FixedClock, SystemClock, clock_from_environment
from jpki.errors import PinIncorrectError, SecurityStatusError, UsageError
from jpki.identity import SAMPLE_PERSONAS
from jpki.pki import CertificateDB, TestCA
from jpki.provision import Home, read_holder
from jpki.session import JpkiSession
from jpki.sign import CardSigner, sign_file, verify_cms
from jpki.sign.cms import CHUNK_SIZE, hash_stream, read_cms
from jpki.transport import open_transport
from jpki.verify import TrustStore, Validator

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers













def leftovers(folder: Path) -> list[str]:
    """Temporary files atomic_output would leave behind (none, ever)."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


@pytest.fixture
def openssl():
    path = shutil.which("openssl")
    if path is None:
        pytest.skip("openssl not installed")
    return path


def openssl_verify(sig: Path, ca_pem: Path, content: Path | None = None,
                   *extra: str) -> subprocess.CompletedProcess:
    """``openssl cms -verify`` at CHECKED_AT (``-attime``), whatever today's date is."""
    args = ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(sig),
            "-CAfile", str(ca_pem), "-out", os.devnull, "-attime", str(int(CHECKED_AT.timestamp())),
            *extra]
    if content is not None:
        args += ["-content", str(content)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


# --------------------------------------------------------------------------- structure

def test_detached_signature_is_cades_bes_signed_by_the_card(home, tmp_path):
    doc, p7s = sign_doc(home, tmp_path)
    assert p7s == tmp_path / "doc.txt.p7s"
    info = cms.ContentInfo.load(p7s.read_bytes())
    assert info["content_type"].native == "signed_data"
    sd = info["content"]
    assert sd["encap_content_info"]["content"].native is None, "detached: no content"
    (signer_info,) = sd["signer_infos"]
    attrs = {a["type"].native: a["values"][0] for a in signer_info["signed_attrs"]}
    assert set(attrs) == {"content_type", "message_digest", "signing_time", "signing_certificate_v2"}
    assert attrs["content_type"].native == "data"
    assert attrs["message_digest"].native == hashlib.sha256(doc.read_bytes()).digest()
    assert attrs["signing_time"].native == SIGNED_AT
    (cert_choice,) = sd["certificates"]
    cert_der = cert_choice.chosen.dump()
    ess = attrs["signing_certificate_v2"]["certs"][0]
    assert ess["cert_hash"].native == hashlib.sha256(cert_der).digest()
    assert ess["issuer_serial"]["serial_number"].native == cert_choice.chosen.serial_number
    # the signature is the card's: PKCS#1 v1.5 over the DER SET of the signed attributes
    cert = x509.load_der_x509_certificate(cert_der)
    assert cert.serial_number == read_holder(Home(home), "alice").sign_serial
    signed = b"\x31" + signer_info["signed_attrs"].dump()[1:]
    cert.public_key().verify(signer_info["signature"].native, signed, padding.PKCS1v15(),
                             hashes.SHA256())

    report = verify_cms(p7s, data=doc, validator=validator(home))
    assert report.ok, report.summary()
    (sig,) = report.signatures
    assert sig.identity == {"name": ALICE.name, "address": ALICE.address, "sex": "female",
                            "birth_date": "1990-04-15", "birth_date_raw": sig.identity["birth_date_raw"]}
    assert sig.identity["birth_date_raw"].startswith("4")  # 平成 era code … 1990 is 平成2
    assert sig.profile == "CAdES-BES, detached" and sig.signing_time == SIGNED_AT
    assert sig.certificate is not None and sig.certificate.checked and sig.certificate.ok


def test_attached_signature_is_plain_der_written_in_one_pass(home, tmp_path):
    content = os.urandom(3 * CHUNK_SIZE + 12345)
    doc, p7m = sign_doc(home, tmp_path, content, attached=True)
    assert p7m.name == "doc.txt.p7m"
    raw = p7m.read_bytes()
    info = cms.ContentInfo.load(raw)
    assert info.dump(force=True) == raw, "hand-written DER lengths match asn1crypto's encoding"
    assert info["content"]["encap_content_info"]["content"].native == content
    report = verify_cms(p7m, validator=validator(home))
    assert report.ok, report.summary()
    assert report.signatures[0].details["data"] == f"embedded ({len(content)} bytes)"
    with_data = verify_cms(p7m, data=doc, validator=validator(home))
    assert with_data.ok, with_data.summary()


@pytest.mark.parametrize("digest", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("attached", [False, True])
def test_openssl_cms_verify_accepts_our_signatures(home, tmp_path, openssl, digest, attached):
    doc, sig = sign_doc(home, tmp_path, b"line 1\r\nline 2\n\x00binary", digest=digest,
                        attached=attached)
    ca_pem = home / "ca" / "sign_ca.pem"
    content = None if attached else doc
    # the documented command: -binary (no MIME canonicalisation of line ends), DER input,
    # -purpose any (JPKI certificates carry no extended key usage)
    p = openssl_verify(sig, ca_pem, content, "-purpose", "any")
    assert p.returncode == 0 and "Verification successful" in p.stderr, p.stderr
    # OpenSSL 3's default S/MIME purpose accepts them too: no EKU means any purpose
    p = openssl_verify(sig, ca_pem, content)
    assert p.returncode == 0, p.stderr


def test_openssl_refuses_changed_data_and_another_root(home, tmp_path, openssl):
    doc, p7s = sign_doc(home, tmp_path)
    changed = tmp_path / "changed.txt"
    changed.write_bytes(doc.read_bytes() + b"!")
    p = openssl_verify(p7s, home / "ca" / "sign_ca.pem", changed, "-purpose", "any")
    assert p.returncode != 0 and "content verify error" in p.stderr.lower()
    p = openssl_verify(p7s, home / "ca" / "auth_ca.pem", doc, "-purpose", "any")
    assert p.returncode != 0 and "certificate verify error" in p.stderr.lower()


# --------------------------------------------------------------------------- openssl → us

@pytest.fixture
def openssl_signer(tmp_path, key_pool):
    """A fresh key and a signing certificate for carol, as PEM files, and the CA that issued it.

    ``openssl cms -sign`` stamps today's date as the signing time, and the verifier validates at
    the signing time: so this CA and certificate are made today (of all the tests', the one
    clock that is the system's), which keeps the test independent of the date it runs on."""
    key = key_pool[-1]
    ca_dir = tmp_path / "today-ca"
    made = FixedClock(SystemClock().now() - dt.timedelta(minutes=5))  # openssl signs after this
    with TestCA.init(ca_dir, clock=made, keys={"sign": key_pool[0], "auth": key_pool[1]}) as ca:
        persona = SAMPLE_PERSONAS["carol"]
        cert = ca.issue_sign_cert(key.public_key(), persona, card_id="openssl-carol",
                                  card_expiry=ca.card_expiry_for(persona))
    key_pem = tmp_path / "carol.key"
    cert_pem = tmp_path / "carol.pem"
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_pem, cert_pem, ca_dir


@pytest.mark.parametrize("options", [
    ("-outform", "DER"),                                              # detached, DER
    ("-outform", "DER", "-nodetach"),                                 # attached, DER
    ("-outform", "DER", "-nodetach", "-stream"),                      # attached, BER indefinite
    ("-outform", "DER", "-cades", "-md", "sha512"),                   # signing-certificate-v2
    ("-outform", "DER", "-keyid", "-noattr"),                         # SKI signer id, no attributes
    ("-outform", "DER", "-keyopt", "rsa_padding_mode:pss"),           # RSASSA-PSS
    ("-outform", "PEM"),                                              # PEM
], ids=["detached", "attached", "ber-stream", "cades-sha512", "keyid-noattr", "pss", "pem"])
def test_our_verifier_accepts_what_openssl_cms_sign_makes(home, tmp_path, openssl, openssl_signer,
                                                         options):
    key_pem, cert_pem, ca_dir = openssl_signer
    doc = tmp_path / "memo.txt"
    doc.write_bytes(b"approved\n" * 5000)
    sig = tmp_path / "memo.txt.p7s"
    p = subprocess.run(["openssl", "cms", "-sign", "-binary", "-in", str(doc), "-signer", str(cert_pem),
                        "-inkey", str(key_pem), "-out", str(sig), *options],
                       capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    detached = "-nodetach" not in options
    at = SystemClock().now() + dt.timedelta(minutes=1)
    today = Validator(TrustStore.from_ca_dir(ca_dir), clock=FixedClock(at), revocation="none")
    report = verify_cms(sig, data=doc if detached else None, validator=today)
    assert report.ok, report.summary()
    (s,) = report.signatures
    carol = SAMPLE_PERSONAS["carol"]
    assert s.identity["name"] == carol.name and s.identity["sex"] == "unknown"
    assert s.identity["birth_date"] == "2000-02-29"
    if "-cades" in options:
        assert s.profile.startswith("CAdES-BES") and s.digest_algorithm == "sha512"
    if "pss" in " ".join(options):
        assert s.signature_algorithm == "rsassa_pss"
    # and a changed data file is told apart from a changed signature
    if detached:
        doc.write_bytes(doc.read_bytes() + b"x")
        bad = verify_cms(sig, data=doc, validator=today)
        assert (bad.ok, bad.reason) == (False, "wrong-data")


# --------------------------------------------------------------------------- the card and its PIN

class RecordingSession:
    """A JpkiSession wrapper that records the card operations in order."""

    def __init__(self, inner: JpkiSession) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def verify(self, pin: str, value: str) -> None:
        self.calls.append(f"verify {pin}")
        self.inner.verify(pin, value)

    def read_certificate(self, kind: str) -> bytes:
        self.calls.append(f"read {kind}")
        return self.inner.read_certificate(kind)  # type: ignore[arg-type]

    def sign_digest(self, key: str, algorithm: str, digest: bytes) -> bytes:
        self.calls.append(f"sign {key}")
        return self.inner.sign_digest(key, algorithm, digest)  # type: ignore[arg-type]


def test_the_password_is_verified_right_before_each_signature(home, tmp_path):
    """With a card that allows one signature per VERIFY, two signatures in one session work
    because the signer verifies before each COMPUTE DIGITAL SIGNATURE."""
    card_json = home / "cards" / "alice" / "card.json"
    data = json.loads(card_json.read_text(encoding="utf-8"))
    data["profile"]["one_signature_per_verify"] = True
    card_json.write_text(json.dumps(data), encoding="utf-8")
    asked = []
    doc = tmp_path / "a.txt"
    doc.write_bytes(b"a")
    with open_transport("emu:alice", home=home) as t:
        session = RecordingSession(JpkiSession(t))
        signer = CardSigner.from_session(session, "sign", pin=lambda: asked.append(1) or "abc123")
        sign_file(doc, tmp_path / "1.p7s", signer, clock=FixedClock(SIGNED_AT))
        sign_file(doc, tmp_path / "2.p7s", signer, clock=FixedClock(SIGNED_AT), attached=True)
        # a bare second signature without VERIFY is refused by this card
        with pytest.raises(SecurityStatusError):
            session.inner.sign_digest("sign", "sha256", bytes(32))
    assert session.calls == ["verify sign", "read sign", "verify sign", "sign sign",
                             "verify sign", "sign sign"]
    assert len(asked) == 3 and signer.signatures == 2
    for name in ("1.p7s", "2.p7s"):
        assert verify_cms(tmp_path / name, data=doc, validator=validator(home)).ok


def test_cli_asks_for_the_password_once(cli, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("hello\n")
    r = cli("sign", str(doc), input="ABC123\n")  # one line on stdin, one prompt
    assert r.exit_code == 0, r.stderr
    assert "signed" in r.stdout and (tmp_path / "doc.txt.p7s").is_file()
    assert "ABC123" not in r.stdout + r.stderr
    v = cli("verify", str(tmp_path / "doc.txt.p7s"), "--revocation", "none")
    assert v.exit_code == 0, v.stdout + v.stderr
    assert ALICE.name in v.stdout and "1990-04-15" in v.stdout and ALICE.address in v.stdout
    assert "female" in v.stdout and "VALID" in v.stdout
    assert f"data:         {doc}" in v.stdout, "the data file is found beside the .p7s"


def test_cli_json_is_one_document_with_the_identity(cli, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("hello\n")
    s = cli("--json", "sign", str(doc), "--attached", "--digest", "sha384",
            input="abc123\n")
    assert s.exit_code == 0, s.stderr
    signed = s.json()
    assert signed["attached"] is True and signed["digest_algorithm"] == "sha384"
    assert signed["signature"] == str(tmp_path / "doc.txt.p7m") and signed["key"] == "sign"
    v = cli("--json", "verify", signed["signature"], "--revocation", "none")
    assert v.exit_code == 0, v.stderr
    doc_json = v.json()
    assert doc_json["ok"] is True and doc_json["format"] == "cms"
    (sig,) = doc_json["signatures"]
    assert sig["identity"]["birth_date"] == "1990-04-15" and sig["identity"]["sex"] == "female"
    assert sig["digest_algorithm"] == "sha384" and sig["certificate_validation"]["checked"]


# --------------------------------------------------------------------------- validity, trust, revocation

def test_expired_or_not_yet_valid_at_signing_time(home, tmp_path):
    db = CertificateDB(home / "ca" / "certs.db")
    try:
        cert = x509.load_der_x509_certificate(db.get(read_holder(Home(home), "alice").sign_serial).der)
    finally:
        db.close()
    late = cert.not_valid_after_utc + dt.timedelta(days=1)
    doc, p7s = sign_doc(home, tmp_path, when=late)  # the card signs whatever the time
    report = verify_cms(p7s, data=doc, validator=validator(home, at=late + dt.timedelta(hours=1)))
    assert (report.ok, report.reason) == (False, "expired-at-signing-time")
    early = FIXED_NOW - dt.timedelta(days=1)
    doc, p7s = sign_doc(home, tmp_path, when=early, name="early.txt")
    report = verify_cms(p7s, data=doc, validator=validator(home))
    assert (report.ok, report.reason) == (False, "expired-at-signing-time")


def test_untrusted_without_the_test_ca(home, tmp_path):
    doc, p7s = sign_doc(home, tmp_path)
    report = verify_cms(p7s, data=doc, validator=validator(home, trust_test_ca=False))
    assert (report.ok, report.reason) == (False, "untrusted")
    assert "untrusted-issuer" in report.message
    assert report.signatures[0].identity["name"] == ALICE.name, "the report still names the signer"


@pytest.fixture
def revocation_app(home):
    from jpki.pki.server import create_app

    app = create_app(home / "ca", clock=FixedClock(CHECKED_AT))
    yield app
    app.state.service.close()


@pytest.mark.parametrize("method", ["ocsp", "crl"])
def test_revocation_good_then_revoked(home, tmp_path, revocation_app, method):
    doc, p7s = sign_doc(home, tmp_path)
    fetch = asgi_fetch(revocation_app)
    good = verify_cms(p7s, data=doc, validator=validator(home, revocation=method, fetch=fetch))
    assert good.ok, good.summary()
    assert f"{method.upper()} says good" in good.signatures[0].message
    # the card is reported lost after the signature: without a timestamp proving the signing
    # time, the claimed time could be back-dated, so the signature is refused
    with TestCA.open(home / "ca", clock=FixedClock(CHECKED_AT)) as ca:
        ca.revoke(read_holder(Home(home), "alice").sign_serial, "keyCompromise",
                  revoked_at=SIGNED_AT + dt.timedelta(minutes=30))
    bad = verify_cms(p7s, data=doc, validator=validator(home, revocation=method, fetch=fetch))
    assert (bad.ok, bad.reason) == (False, "revoked"), bad.summary()
    assert "after the claimed signing time" in bad.message


def test_revoked_before_signing(home, tmp_path, revocation_app):
    with TestCA.open(home / "ca", clock=FixedClock(FIXED_NOW)) as ca:
        ca.revoke(read_holder(Home(home), "alice").sign_serial, "keyCompromise",
                  revoked_at=FIXED_NOW + dt.timedelta(minutes=10))
    doc, p7s = sign_doc(home, tmp_path)
    report = verify_cms(p7s, data=doc,
                        validator=validator(home, revocation="ocsp", fetch=asgi_fetch(revocation_app)))
    assert (report.ok, report.reason) == (False, "revoked")
    assert "revoked at" in report.message


def test_cli_revocation_unreachable_is_untrusted(cli, home, tmp_path):
    _, p7s = sign_doc(home, tmp_path, when=clock_from_environment().now())  # the CLI's time
    with TestCA.open(home / "ca") as ca:
        url = ca.ocsp_url("sign")
    # the fixture's CA points at a port that was free when the run started; with nothing there the
    # status cannot be learnt: hard-fail by default, accepted with --soft-fail
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(url, timeout=0.5)
        pytest.skip(f"something listens on {url}")
    r = cli("verify", str(p7s), "--revocation", "crl")
    assert r.exit_code == 3 and "INVALID (untrusted)" in r.stdout and "revocation-unavailable" in r.stdout
    r = cli("verify", str(p7s), "--revocation", "crl", "--soft-fail")
    assert r.exit_code == 0, r.stdout
    assert "soft-fail" in r.stdout


# --------------------------------------------------------------------------- keys

def test_auth_key_signature_is_not_a_legal_signature(home, tmp_path):
    doc, p7s = sign_doc(home, tmp_path, key="auth")
    report = verify_cms(p7s, data=doc, validator=validator(home))
    assert (report.ok, report.reason) == (False, "wrong-key-usage")
    assert "user-authentication" in report.message
    as_auth = verify_cms(p7s, data=doc, validator=validator(home), expected="auth")
    assert as_auth.ok, as_auth.summary()
    assert as_auth.signatures[0].identity is None, "no personal data in the auth certificate"
    # and the reverse: a legal signature checked as an authentication signature
    doc2, p7s2 = sign_doc(home, tmp_path, name="legal.txt")
    assert verify_cms(p7s2, data=doc2, validator=validator(home), expected="auth").reason \
        == "wrong-key-usage"


def test_cli_auth_key_sign_and_verify(cli, tmp_path):
    doc = tmp_path / "login.txt"
    doc.write_text("nonce 42\n")
    s = cli("sign", str(doc), "--key", "auth", input="1234\n")
    assert s.exit_code == 0, s.stderr
    assert "not a legal signature" in s.stderr
    v = cli("verify", str(tmp_path / "login.txt.p7s"), "--revocation", "none")
    assert v.exit_code == 3 and "wrong-key-usage" in v.stdout
    assert v.stderr.startswith("error: ")
    v = cli("verify", str(tmp_path / "login.txt.p7s"), "--revocation", "none",
            "--key", "auth")
    assert v.exit_code == 0, v.stdout


# --------------------------------------------------------------------------- bad input

def _reason(cli: Cli, sig: Path, data: Path | None = None) -> tuple[int, str | None, str]:
    args = ["--json", "verify", str(sig), "--revocation", "none"]
    if data is not None:
        args += ["--data", str(data)]
    r = cli(*args)
    doc = r.json()
    return r.exit_code, doc["reason"], doc["message"]


def test_truncated_and_garbled_signature_files_are_malformed(cli, home, tmp_path):
    doc, p7s = sign_doc(home, tmp_path)
    raw = p7s.read_bytes()
    cases = {
        "truncated": raw[: len(raw) // 2],
        "one byte": raw[:1],
        "empty": b"",
        "garbage": os.urandom(700),
        "text": b"this is not a signature\n",
        "trailing": raw + b"\x00junk",
        "not signed data": cms.ContentInfo({"content_type": "data", "content": b"x"}).dump(),
        "bad length": raw[:1] + b"\x84\xff\xff\xff\xff" + raw[4:],
    }
    for name, body in cases.items():
        bad = tmp_path / f"{name}.p7s"
        bad.write_bytes(body)
        code, reason, message = _reason(cli, bad, doc)
        assert (code, reason) == (3, "malformed"), (name, message)
        assert message


def test_a_changed_signature_or_certificate_is_tampered(cli, home, tmp_path):
    doc, p7s = sign_doc(home, tmp_path)
    info = cms.ContentInfo.load(p7s.read_bytes())
    si = info["content"]["signer_infos"][0]
    sig = bytearray(si["signature"].native)
    sig[10] ^= 1
    si["signature"] = bytes(sig)
    flipped = tmp_path / "flipped.p7s"
    flipped.write_bytes(info.dump(force=True))
    assert _reason(cli, flipped, doc)[:2] == (3, "tampered")
    # bob's certificate swapped in: the signature no longer verifies
    with card_signer(home, card="bob") as bob:
        bob_cert = bob.asn1_certificate
    info = cms.ContentInfo.load(p7s.read_bytes())
    info["content"]["certificates"] = [bob_cert]
    si = info["content"]["signer_infos"][0]
    si["sid"] = cms.SignerIdentifier({"issuer_and_serial_number": {
        "issuer": bob_cert.issuer, "serial_number": bob_cert.serial_number}})
    swapped = tmp_path / "swapped.p7s"
    swapped.write_bytes(info.dump(force=True))
    assert _reason(cli, swapped, doc)[:2] == (3, "tampered")


def test_changed_data_is_wrong_data_and_changed_content_is_tampered(cli, home, tmp_path):
    _, p7s = sign_doc(home, tmp_path)
    other = tmp_path / "other.txt"
    other.write_bytes(b"contract: 1000000 yen\n")
    assert _reason(cli, p7s, other)[:2] == (3, "wrong-data")
    _, p7m = sign_doc(home, tmp_path, b"A" * 1000, attached=True, name="att.txt")
    raw = bytearray(p7m.read_bytes())
    at = raw.find(b"A" * 1000)
    raw[at + 500] = ord("B")
    changed = tmp_path / "changed.p7m"
    changed.write_bytes(bytes(raw))
    assert _reason(cli, changed)[:2] == (3, "tampered")
    assert _reason(cli, p7m, other)[:2] == (3, "wrong-data"), "--data must match the embedded content"


def test_several_signers_or_none(cli, home, tmp_path):
    doc, p7s = sign_doc(home, tmp_path)
    info = cms.ContentInfo.load(p7s.read_bytes())
    si = info["content"]["signer_infos"][0]
    info["content"]["signer_infos"] = [si, si]
    two = tmp_path / "two.p7s"
    two.write_bytes(info.dump(force=True))
    code, reason, message = _reason(cli, two, doc)
    assert (code, reason) == (3, "several-signers") and "2 signers" in message
    info["content"]["signer_infos"] = []
    none = tmp_path / "none.p7s"
    none.write_bytes(info.dump(force=True))
    assert _reason(cli, none, doc)[:2] == (3, "no-signer")


def test_missing_or_directory_data_file_is_a_usage_error(cli, home, tmp_path):
    _, p7s = sign_doc(home, tmp_path)
    r = cli("verify", str(p7s), "--data", str(tmp_path / "nope.txt"))
    assert r.exit_code == 2 and "nope.txt: no such file" in r.stderr
    r = cli("verify", str(p7s), "--data", str(tmp_path))
    assert r.exit_code == 2 and "is a directory" in r.stderr
    lone = tmp_path / "lone.p7s"
    shutil.copy(p7s, lone)
    r = cli("verify", str(lone))
    assert r.exit_code == 2 and "detached signature: give the signed file with --data" in r.stderr
    r = cli("verify", str(tmp_path / "missing.p7s"))
    assert r.exit_code == 2 and "no such file" in r.stderr
    with pytest.raises(UsageError, match="is a directory"):
        verify_cms(p7s, data=tmp_path)


def test_sign_never_leaves_a_partial_file(cli, home, tmp_path):
    tmp_path = tmp_path / "work"  # the home lives beside it
    tmp_path.mkdir()
    doc = tmp_path / "doc.txt"
    doc.write_bytes(b"x" * 5000)
    # wrong password: exit 4, nothing written
    r = cli("sign", str(doc), "--attached", input="WRONG1\n")
    assert r.exit_code == 4 and "tries left" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.txt"]
    # missing file, a directory, an output into a missing folder: exit 2 before any PIN
    r = cli("sign", str(tmp_path / "nope.txt"))
    assert r.exit_code == 2 and "no such file" in r.stderr
    r = cli("sign", str(tmp_path))
    assert r.exit_code == 2 and "is a directory" in r.stderr
    r = cli("sign", str(doc), "-o", str(tmp_path / "no" / "x.p7s"), input="ABC123\n")
    assert r.exit_code == 2 and "does not exist" in r.stderr
    # the card fails after the content was streamed into the output: the temp file goes away
    with card_signer(home) as signer:
        def broken(algorithm: str, digest: bytes) -> bytes:
            raise PinIncorrectError(0x63C4, 4)
        signer.sign_digest = broken  # type: ignore[method-assign]
        for attached in (False, True):
            with pytest.raises(PinIncorrectError):
                sign_file(doc, tmp_path / "out.p7m", signer, attached=attached)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.txt"]
    assert not leftovers(tmp_path)
    # an existing output is replaced whole, never half-written
    (tmp_path / "doc.txt.p7s").write_bytes(b"old")
    assert cli("sign", str(doc), input="ABC123\n").exit_code == 0
    with open(tmp_path / "doc.txt.p7s", "rb") as fh:
        assert read_cms(fh).signer_infos


def test_pdf_options_need_pdf(cli, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("x")
    r = cli("sign", str(doc), "--reason", "ok")
    assert r.exit_code == 2 and "--reason: only with --pdf" in r.stderr
    r = cli("sign", "--pdf", str(doc), input="ABC123\n")
    assert r.exit_code == 2 and "not a PDF" in r.stderr


# --------------------------------------------------------------------------- streaming

class SpyFile:
    def __init__(self, size: int) -> None:
        self.left = size
        self.asks: list[int] = []

    def readinto(self, view) -> int:
        self.asks.append(len(view))
        n = min(len(view), self.left)
        view[:n] = bytes(n)
        self.left -= n
        return n


def test_hashing_reads_a_small_chunk_at_a_time():
    spy = SpyFile(5 * CHUNK_SIZE + 7)
    digests, total = hash_stream(spy, ["sha256"])  # type: ignore[arg-type]
    assert total == 5 * CHUNK_SIZE + 7 and max(spy.asks) == CHUNK_SIZE <= 1 << 20
    assert digests["sha256"] == hashlib.sha256(bytes(total)).digest()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_memory_stays_flat_for_a_large_file(home, tmp_path):
    """Sign (detached and attached) and verify a 300 MiB file in a child process: its peak RSS
    stays far below the file size."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        fh.truncate(300 << 20)
    code = textwrap.dedent(f"""
        import sys
        from jpki.cli import main
        base = ["--home", {str(home)!r}, "--card", "emu:alice"]
        for args in (["sign", {str(big)!r}], ["sign", {str(big)!r}, "--attached"],
                     ["verify", {str(big)!r} + ".p7s", "--revocation", "none"],
                     ["verify", {str(big)!r} + ".p7m", "--revocation", "none"]):
            rc = main(base + args)
            if rc:
                sys.exit(rc)
        # VmHWM: this process's own peak (ru_maxrss would include the forking pytest process)
        with open("/proc/self/status") as fh:
            hwm = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
        sys.stderr.write(f"maxrss_kib={{hwm}}\\n")
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), JPKI_SIGN_PIN="ABC123")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300, check=False)
    assert p.returncode == 0, p.stderr + p.stdout
    peak_mib = int(p.stderr.rsplit("maxrss_kib=", 1)[1]) / 1024
    assert peak_mib < 100, f"peak RSS {peak_mib:.0f} MiB"
    assert (tmp_path / "big.bin.p7m").stat().st_size > 300 << 20


# --------------------------------------------------------------------------- layering

def test_verification_modules_import_no_card_library():
    """jpki.sign's verification side (cms, report) works on a server without card libraries."""
    code = textwrap.dedent("""
        import importlib, importlib.abc, sys
        BLOCKED = ("jpki.session", "jpki.transport", "jpki.apdu", "jpki.cli", "card_emulator",
                   "smartcard")
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ImportError("blocked: " + name)
                return None
        sys.meta_path.insert(0, Block())
        import jpki.sign, jpki.sign.cms, jpki.sign.report, jpki.sign.signer, jpki.sign.pdf
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=120, check=False)
    assert p.returncode == 0, p.stderr


# --------------------------------------------------------------------------- a card in a reader

@pytest.mark.pcsc
def test_sign_with_the_card_in_a_reader(cli, served_card, home, tmp_path):
    """alice's card behind pcscd + vpcd: the CLI asks for --force before spending a try, then
    signs (the password verified right before the signature) and the signature verifies."""
    doc = tmp_path / "doc.txt"
    doc.write_bytes(b"signed over PC/SC\n")
    card = f"pcsc:{served_card}"
    r = cli("sign", str(doc), card=card, input="ABC123\n")
    assert r.exit_code == 2 and "--force" in r.stderr
    assert not (tmp_path / "doc.txt.p7s").exists()
    r = cli("--force", "sign", str(doc), "--attached", card=card, input="ABC123\n")
    assert r.exit_code == 0, r.stderr
    report = verify_cms(tmp_path / "doc.txt.p7m", validator=validator(
        home, at=dt.datetime.now(dt.UTC)))
    assert report.ok, report.summary()
    assert report.signatures[0].identity["name"] == ALICE.name
