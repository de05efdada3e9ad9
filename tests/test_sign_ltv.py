"""Signatures that stay valid (jpki.sign.levels, jpki.tsa.client, ``jpki sign --level/--extend``,
``jpki verify`` at the proven time, ``--offline``, ``--crl``/``--ocsp-response``): CAdES and PAdES
B-T, B-LT, B-LTA made with the test TSA (its certificate issued by the test CA) and the test CA's
revocation server; the card moved after signing; interop with ``openssl cms``, pyHanko's AdES
validator and ``pdfsig``.

Times: the document is signed (and timestamped) at SIGNED_AT, the card moves at MOVED_AT, the
document is verified at CHECKED (the revocation server's clock and ``$JPKI_NOW`` follow).
"""

from __future__ import annotations

import datetime as dt
import re
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from asn1crypto import cms, tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fixed import FIXED_NOW
from sign_support import SIGNED_AT, asgi_fetch, card_signer, clocked_stamper, make_pdf, validator

from jpki import der, lifecycle
from jpki.clock import FixedClock
from jpki.pki import TestCA, free_port
from jpki.pki.server import create_app, serve_in_thread
from jpki.provision import Home, read_holder
from jpki.sign import levels
from jpki.sign.cms import read_cms, sign_file, verify_cms
from jpki.sign.levels import ValidatorSource
from jpki.tsa import HttpTimestamper, TimestampError, TimestampRefusedError, check_response
from jpki.verify import RevocationEvidence

MOVED_AT = SIGNED_AT + dt.timedelta(days=1)
CHECKED = SIGNED_AT + dt.timedelta(days=3)
NEW_ADDRESS = "大阪府大阪市北区梅田１－１"


def move_to(clock: FixedClock, when: dt.datetime) -> None:
    clock.advance(seconds=(when - clock.now()).total_seconds())


def at(when: dt.datetime) -> dict[str, str]:
    """The CLI's clock at ``when``."""
    return {"JPKI_NOW": when.isoformat()}


@pytest.fixture
def revocation(home):
    """The revocation server in process (an ASGI fetch) on a clock the test moves."""
    moving = FixedClock(SIGNED_AT)
    app = create_app(home / "ca", clock=moving)
    yield moving, asgi_fetch(app)
    app.state.service.close()


def source(home, fetch, when=SIGNED_AT) -> ValidatorSource:
    return ValidatorSource(validator(home, revocation="ocsp", fetch=fetch, at=when))


def checker(home, fetch, when=CHECKED, *, offline=False):
    v = validator(home, revocation="ocsp", fetch=fetch, at=when)
    v.offline = offline
    return v


def sign_cms(home, doc: Path, out: Path, level: str, tsa, fetch, *, attached=False):
    with card_signer(home) as signer:
        return sign_file(doc, out, signer, clock=FixedClock(SIGNED_AT), level=level, attached=attached,
                         timestamper=tsa.stamper, source=source(home, fetch))


@pytest.fixture
def doc(tmp_path) -> Path:
    path = tmp_path / "contract.txt"
    path.write_text("契約書: 1 yen\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- CAdES levels

@pytest.mark.parametrize("attached", [False, True], ids=["detached", "attached"])
def test_cades_levels_embed_what_each_level_needs(home, tmp_path, doc, tsa, revocation, attached):
    _, fetch = revocation
    made = {lv: sign_cms(home, doc, tmp_path / f"{lv}.p7", lv, tsa, fetch, attached=attached)
            for lv in ("T", "LT", "LTA")}
    assert [m.profile for m in made.values()] == ["CAdES-T", "CAdES-LT", "CAdES-LTA"]
    with open(made["LTA"].output, "rb") as fh:
        parsed = read_cms(fh)
    info = parsed.signer_infos[0]
    unsigned = [a["type"].dotted for a in info["unsigned_attrs"]]
    assert unsigned == [levels.OID_SIGNATURE_TIMESTAMP, levels.OID_ARCHIVE_TIMESTAMP_V2]
    # LT: the OCSP responses as RFC 5940 other revocation info (SignedData v5), the signer's and
    # the TSA's certificates with their root
    assert len(parsed.ocsp_responses) == 2 and parsed.layout.version_raw == b"\x02\x01\x05"
    subjects = {c.subject.native.get("common_name") for c in parsed.certificates}
    assert "jpki test TSA" in subjects and len(parsed.certificates) == 3
    data = None if attached else doc
    for lv, outcome in made.items():
        report = verify_cms(outcome.output, data=data, validator=checker(home, fetch))
        assert report.ok, report.summary()
        (sig,) = report.signatures
        assert sig.level == f"B-{lv}" and sig.proven_time == SIGNED_AT
        assert sig.timestamp["tsa_certificate_validated"] is True
        offline = verify_cms(outcome.output, data=data, validator=checker(home, fetch, offline=True))
        if lv == "T":  # nothing embedded: offline cannot prove the TSA's status
            assert (offline.ok, offline.reason) == (False, "untrusted"), offline.summary()
            assert "offline" in offline.message
        else:
            assert offline.ok, offline.summary()
            assert offline.signatures[0].revocation_source == "embedded"
    assert len(made["LTA"].extension.validation) == 2, "the signer's and the TSA's answers"
    lta = verify_cms(made["LTA"].output, data=data, validator=checker(home, fetch, offline=True))
    (ats,) = lta.signatures[0].archive_timestamps
    assert ats["tsa_certificate_validated"] is True and ats["kind"] == "archive timestamp"


def test_openssl_cms_verify_accepts_the_long_term_levels(home, tmp_path, doc, tsa, revocation):
    _, fetch = revocation
    ca = home / "ca" / "sign_ca.pem"
    attime = str(int(CHECKED.timestamp()))
    for lv in ("T", "LT", "LTA"):
        for attached in (False, True):
            out = sign_cms(home, doc, tmp_path / f"{lv}{attached}.p7", lv, tsa, fetch, attached=attached).output
            args = ["openssl", "cms", "-verify", "-inform", "DER", "-in", str(out), "-CAfile", str(ca),
                    "-binary", "-purpose", "any", "-attime", attime, "-out", str(tmp_path / "out.bin")]
            if not attached:
                args += ["-content", str(doc)]
            p = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
            assert p.returncode == 0 and "Verification successful" in p.stderr, (lv, attached, p.stderr)
            assert (tmp_path / "out.bin").read_bytes() == doc.read_bytes()


def test_changes_after_the_archive_timestamp_are_tampering(home, tmp_path, doc, tsa, revocation):
    _, fetch = revocation
    out = sign_cms(home, doc, tmp_path / "lta.p7s", "LTA", tsa, fetch).output
    with open(out, "rb") as fh:
        layout = read_cms(fh).layout
    # drop the embedded revocation values (the signature itself stays intact)
    stripped = tmp_path / "stripped.p7s"
    with open(stripped, "wb") as sink:
        levels.write_signed_data(
            sink, content_type_raw=layout.content_type_raw, version_raw=layout.version_raw,
            digest_algorithms_raw=layout.digest_algorithms_raw,
            encap=[out.read_bytes()[layout.encap_start:layout.encap_end]],
            encap_length=layout.encap_end - layout.encap_start, certificates_raw=layout.certificates_raw,
            crls_raw=None, signer_infos_raw=layout.signer_infos_raw)
    report = verify_cms(stripped, data=doc, validator=checker(home, fetch))
    assert (report.ok, report.reason) == (False, "tampered"), report.summary()
    assert "archive timestamp does not match" in report.message
    # the archive timestamp covers the detached data too
    other = tmp_path / "other.txt"
    other.write_text("契約書: 1,000,000 yen\n", encoding="utf-8")
    assert verify_cms(out, data=other, validator=checker(home, fetch)).reason == "wrong-data"


# --------------------------------------------------------------------------- the timestamp authority

def self_signed_tsa(*, critical: bool = True):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self-made TSA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(FIXED_NOW - dt.timedelta(days=1))
            .not_valid_after(FIXED_NOW + dt.timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=critical)
            .sign(key, hashes.SHA256()))
    return clocked_stamper(cert, key, SIGNED_AT)


def test_a_timestamp_proves_the_time_only_when_its_tsa_validates(home, tmp_path, doc, tsa, revocation):
    _, fetch = revocation
    # a TSA nobody trusts (self-signed): the signature is untrusted, whatever the time says
    with card_signer(home) as signer:
        out = sign_file(doc, tmp_path / "self.p7s", signer, clock=FixedClock(SIGNED_AT), level="T",
                        timestamper=self_signed_tsa())
    report = verify_cms(out.output, data=doc, validator=checker(home, fetch))
    assert (report.ok, report.reason) == (False, "untrusted"), report.summary()
    assert "signature timestamp cannot be trusted" in report.message and "self-made TSA" in report.message
    assert report.signatures[0].timestamp["tsa_certificate_validated"] is False
    # the test TSA, but its certificate revoked (key compromise) before the token's time
    with TestCA.open(home / "ca", clock=FixedClock(FIXED_NOW)) as ca:
        ca.revoke(tsa.cert.serial_number, "keyCompromise", revoked_at=SIGNED_AT - dt.timedelta(minutes=5))
    out = sign_cms(home, doc, tmp_path / "revoked-tsa.p7s", "T", tsa, fetch)
    report = verify_cms(out.output, data=doc, validator=checker(home, fetch))
    assert (report.ok, report.reason) == (False, "untrusted"), report.summary()
    assert "revoked" in report.message


def test_tsa_certificate_must_carry_the_critical_timestamping_eku(home, tmp_path, doc, revocation):
    from jpki.verify import TrustStore, Validator

    stamper = self_signed_tsa(critical=False)
    cert = x509.load_der_x509_certificate(stamper.tsa_cert.dump())
    v = Validator(TrustStore.from_ca_dir(home / "ca"), clock=FixedClock(CHECKED), revocation="none")
    result = v.validate(cert, kind="tsa", at=SIGNED_AT)
    assert (result.ok, result.reason) == (False, "wrong-kind")
    assert "not marked critical" in result.message
    alice = read_holder(Home(home), "alice")
    with TestCA.open(home / "ca") as ca:
        card_cert = ca.db.get(alice.sign_serial).certificate()
    assert v.validate(card_cert, kind="tsa", at=SIGNED_AT).reason == "wrong-kind"


def test_timestamp_client_checks_the_answer(tsa):
    stamper = HttpTimestamper(tsa.url)
    digest = bytes(range(32))
    token = cms.ContentInfo.load(stamper.stamp("sha256", digest))
    imprint = token["content"]["encap_content_info"]["content"].parsed["message_imprint"]
    assert imprint["hashed_message"].native == digest and stamper.tokens == 1
    body, nonce = stamper.request("sha256", digest)
    answer = tsa.stamper.request_tsa_response(tsp.TimeStampReq.load(body)).dump()
    with pytest.raises(TimestampError, match="another imprint"):
        check_response(answer, "sha256", bytes(32), nonce)
    with pytest.raises(TimestampError, match="nonce"):
        check_response(answer, "sha256", digest, (nonce or 0) + 1)
    refused = der.seq(tsp.PKIStatusInfo({"status": "rejection", "status_string": ["bad alg"],
                                          "fail_info": {"bad_alg"}}).dump())
    with pytest.raises(TimestampRefusedError, match=r"refused \(rejection: badAlg\): bad alg") as no:
        check_response(refused, "sha256", digest, nonce, url=tsa.url)
    assert (no.value.code, no.value.fail_info, no.value.url) == ("timestamp_refused", ("badAlg",), tsa.url)
    with pytest.raises(TimestampError, match="not an RFC 3161 response") as bad:
        check_response(b"<html>", "sha256", digest, nonce)
    assert (bad.value.code, bad.value.reason) == ("timestamp_failed", "bad-reply")
    nowhere = f"http://127.0.0.1:{free_port()}/tsr"  # nothing listens there
    with pytest.raises(TimestampError, match=f"timestamp authority {re.escape(nowhere)}: ") as down:
        HttpTimestamper(nowhere, deadline=2).stamp("sha256", digest)
    assert down.value.reason == "unreachable"
    stamper.close()


ESS_ATTRIBUTES = ("signing_certificate", "signing_certificate_v2")


def resigned(token_der: bytes, key: rsa.RSAPrivateKey, *, keep_ess: bool = False, flip: bool = False) -> bytes:
    """The token signed again by its TSA's ``key``: without the ESS signingCertificate
    attribute (unless ``keep_ess``), its signature's last byte flipped with ``flip``."""
    info = cms.ContentInfo.load(token_der)
    signer_info = info["content"]["signer_infos"][0]
    signer_info["signed_attrs"] = cms.CMSAttributes(
        [a for a in signer_info["signed_attrs"] if keep_ess or a["type"].native not in ESS_ATTRIBUTES])
    signed = b"\x31" + signer_info["signed_attrs"].dump(force=True)[1:]
    signature = bytearray(key.sign(signed, padding.PKCS1v15(), hashes.SHA256()))
    signature[-1] ^= int(flip)
    signer_info["signature"] = bytes(signature)
    return info.dump(force=True)


def test_the_client_checks_the_tokens_signature_and_its_ess_attribute(tsa):
    """RFC 3161 §2.4.1: a token names its TSA's certificate in a signingCertificate(V2)
    attribute; the one client refuses a reply whose token lacks it or whose signature fails."""
    digest = bytes(range(32))
    stamper = HttpTimestamper(tsa.url)
    body, nonce = stamper.request("sha256", digest)
    token = tsa.stamper.request_tsa_response(tsp.TimeStampReq.load(body))["time_stamp_token"].dump()

    def answer(token_der: bytes) -> bytes:
        return tsp.TimeStampResp({"status": {"status": "granted"},
                                  "time_stamp_token": cms.ContentInfo.load(token_der)}).dump()

    check_response(answer(resigned(token, tsa.key, keep_ess=True)), "sha256", digest, nonce)  # signed again: good
    with pytest.raises(TimestampError, match="no signingCertificate") as no_ess:
        check_response(answer(resigned(token, tsa.key)), "sha256", digest, nonce, url=tsa.url)
    assert no_ess.value.reason == "bad-reply"
    with pytest.raises(TimestampError, match="signature does not verify"):
        check_response(answer(resigned(token, tsa.key, keep_ess=True, flip=True)), "sha256", digest, nonce)
    stamper.close()


def test_a_signature_timestamp_without_ess_attribute_is_refused(home, tmp_path, doc, tsa):
    """CMS verification checks its timestamp tokens with the same checks as the client."""

    class WithoutEss:
        name = "a TSA that leaves out the signingCertificate attribute"

        def stamp(self, algorithm: str, digest: bytes) -> bytes:
            return resigned(tsa.stamper.stamp(algorithm, digest), tsa.key)

    with card_signer(home) as signer:
        out = sign_file(doc, tmp_path / "no-ess.p7s", signer, clock=FixedClock(SIGNED_AT), level="T",
                        timestamper=WithoutEss())
    report = verify_cms(out.output, data=doc)
    assert (report.ok, report.reason) == (False, "tampered"), report.summary()
    assert "signingCertificate" in report.message


def test_evidence_must_be_issued_after_the_time_it_proves(home, tsa, revocation):
    """A 'good' answer issued before the proven time says nothing about that time: offline it
    is not used (and the reason is given); a revoked answer is used whenever it was issued."""
    moving, fetch = revocation
    gathered = checker(home, fetch, when=SIGNED_AT).gather(tsa.cert, kind="tsa", at=SIGNED_AT)
    assert gathered.result.ok and gathered.result.revocation.origin == "fetched"
    embedded = RevocationEvidence.of(ocsp=gathered.evidence.ocsp, origin="embedded")
    offline = checker(home, fetch, offline=True)
    ok = offline.validate(tsa.cert, kind="tsa", at=SIGNED_AT, evidence=embedded)
    assert ok.ok and ok.revocation.origin == "embedded", ok.message
    later = offline.validate(tsa.cert, kind="tsa", at=SIGNED_AT + dt.timedelta(minutes=10), evidence=embedded)
    assert (later.ok, later.reason) == (False, "revocation-unavailable")
    assert "before 2026-11-27T04:10:00+00:00: it cannot prove the status at that time" in later.message
    assert offline.validate(tsa.cert, kind="tsa", at=SIGNED_AT).reason == "revocation-unavailable"
    with TestCA.open(home / "ca", clock=FixedClock(SIGNED_AT)) as ca:
        ca.revoke(tsa.cert.serial_number, "keyCompromise", revoked_at=SIGNED_AT - dt.timedelta(hours=1))
    moving.advance(minutes=30)
    revoked = checker(home, fetch).gather(tsa.cert, kind="tsa", at=SIGNED_AT).evidence
    answer = offline.validate(tsa.cert, kind="tsa", at=SIGNED_AT + dt.timedelta(minutes=10),
                              evidence=embedded + RevocationEvidence.of(ocsp=revoked.ocsp, origin="given"))
    assert (answer.ok, answer.reason, answer.revocation.origin) == (False, "revoked", "given")


# --------------------------------------------------------------------------- the card moved after signing

def test_move_after_signing_cms(cli, home, doc, tsa, ca_server):
    signed = {}
    for name, extra in (("lt", ["--level", "LT", "--tsa", tsa.url]), ("t", ["--tsa", tsa.url]), ("b", [])):
        out = doc.with_name(f"{name}.p7s")
        r = cli("--json", "sign", str(doc), "-o", str(out), *extra, input="ABC123\n", env=at(SIGNED_AT))
        assert r.exit_code == 0, r.output
        signed[name] = out
    assert r.json()["level"] == "B-B"
    ca_server.advance(days=1)
    r = cli("card", "move", "alice", "--address", NEW_ADDRESS, env=at(MOVED_AT))
    assert r.exit_code == 0 and "affiliationChanged" in r.stdout, r.output
    ca_server.advance(days=2)
    for name in ("lt", "t"):
        r = cli("--json", "verify", str(signed[name]), "--data", str(doc), env=at(CHECKED))
        assert r.exit_code == 0, r.output
        (sig,) = r.json()["signatures"]
        assert sig["level"] == ("B-LT" if name == "lt" else "B-T")
        assert sig["proven_time"] == SIGNED_AT.isoformat() and sig["revocation_source"] == "fetched"
        assert sig["timestamp"]["tsa"] == "CN=jpki test TSA,O=jpki tests,C=JP"
        # (the CLI's clock runs on from $JPKI_NOW: the move may land a second or two later)
        assert re.search(r"revoked on 2026-11-28T04:00:\d\d\+00:00 \(affiliationChanged\), after the "
                         r"signature time 2026-11-27T04:00:00\+00:00 proven by the timestamp", sig["message"])
    human = cli("verify", str(signed["lt"]), "--data", str(doc), env=at(CHECKED))
    assert human.exit_code == 0 and "VALID [CAdES-LT, detached, sha256]" in human.stdout
    assert "(affiliationChanged), after the signature time" in human.stdout
    # offline: the embedded answers (made at signing time) suffice; without them it fails closed
    r = cli("--json", "verify", str(signed["lt"]), "--data", str(doc), "--offline", env=at(CHECKED))
    assert r.exit_code == 0 and r.json()["signatures"][0]["revocation_source"] == "embedded", r.output
    r = cli("verify", str(signed["t"]), "--data", str(doc), "--offline", env=at(CHECKED))
    assert r.exit_code == 3 and "offline" in r.stdout and "embedded or given" in r.stdout
    # no timestamp: the claimed time proves nothing, the revocation refuses the signature
    r = cli("--json", "verify", str(signed["b"]), "--data", str(doc), env=at(CHECKED))
    assert r.exit_code == 3 and r.json()["reason"] == "revoked"
    assert "no timestamp proves the signature was made before the revocation" in r.json()["message"]


def test_move_after_signing_pdf(cli, home, tmp_path, tsa, ca_server):
    src = tmp_path / "contract.pdf"
    src.write_bytes(make_pdf())
    lt, plain = tmp_path / "lt.pdf", tmp_path / "plain.pdf"
    for out, extra in ((lt, ["--level", "LT", "--tsa", tsa.url]), (plain, [])):
        r = cli("--json", "sign", "--pdf", str(src), "-o", str(out), *extra, input="ABC123\n", env=at(SIGNED_AT))
        assert r.exit_code == 0, r.output
    assert r.json()["level"] == "B-B"
    lifecycle.move(Home(home), "alice", address=NEW_ADDRESS, clock=FixedClock(MOVED_AT))
    ca_server.advance(days=3)
    for extra, origin in (([], "fetched"), (["--offline"], "embedded")):
        r = cli("--json", "verify", str(lt), *extra, env=at(CHECKED))
        assert r.exit_code == 0, r.output
        (sig,) = r.json()["signatures"]
        assert (sig["level"], sig["revocation_source"]) == ("B-LT", origin)
        assert sig["proven_time"] == SIGNED_AT.isoformat()
    assert "(affiliationChanged), after the signature time" in sig["message"] or origin == "embedded"
    r = cli("--json", "verify", str(plain), env=at(CHECKED))
    assert r.exit_code == 3 and r.json()["reason"] == "revoked"


def _serving(process: subprocess.Popen[str], what: str, timeout: float = 60) -> str:
    """Wait for the line a jpki server prints on stderr once its port listens; that line."""
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], max(0.0, deadline - time.monotonic()))
        line = process.stderr.readline() if ready else ""
        if what in line:
            return line
        if not line and process.poll() is not None:
            raise AssertionError(f"the server exited: {process.communicate()}")
    raise AssertionError(f"no {what!r} on stderr within {timeout} s")


def test_b_lt_with_jpki_tsa_serve_stays_valid_after_the_move(cli, tsa_home, tmp_path):
    """`jpki sign --level LT --tsa URL` against the project's own TSA, `jpki tsa serve` as a
    process (its certificate from the test CA's signing root, recorded in the CA database as
    @tsa, tokens carrying it): the signature, the timestamp and the embedded OCSP answers for
    the signer and the TSA make a document that `jpki verify` finds VALID at the time the
    token proves after the card moved, online and --offline."""
    doc = tmp_path / "lease.txt"
    doc.write_text("賃貸借契約書\n", encoding="utf-8")
    with TestCA.open(tsa_home / "ca") as ca:
        ca_port = int(ca.base_url.rsplit(":", 1)[1])
        tsa_cert = ca.db.get(x509.load_pem_x509_certificate(
            (tsa_home / "tsa" / "tsa.pem").read_bytes()).serial_number)
    assert tsa_cert is not None and tsa_cert.card == "@tsa"
    ca_clock = FixedClock(FIXED_NOW)  # the CLI's and the TSA's clock start there too ($JPKI_NOW)
    port = free_port()
    server = cli.spawn("tsa", "serve", "--port", str(port), home=tsa_home,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with serve_in_thread(tsa_home / "ca", "127.0.0.1", ca_port, clock=ca_clock):
            _serving(server, "serving the test TSA")
            out = tmp_path / "lease.p7s"
            r = cli("--json", "sign", str(doc), "-o", str(out), "--level", "LT", "--tsa",
                    f"http://127.0.0.1:{port}/", input="ABC123\n", home=tsa_home)
            assert r.exit_code == 0 and r.json()["level"] == "B-LT", r.output
            assert any(line.startswith("tsa certificate: OCSP good") for line in r.json()["validation_data"])
            r = cli("card", "move", "alice", "--address", NEW_ADDRESS, home=tsa_home, env=at(MOVED_AT))
            assert r.exit_code == 0 and "affiliationChanged" in r.stdout, r.output
            move_to(ca_clock, CHECKED)
            for extra, origin in (([], "fetched"), (["--offline"], "embedded")):
                r = cli("--json", "verify", str(out), "--data", str(doc), *extra, home=tsa_home,
                        env=at(CHECKED))
                assert r.exit_code == 0, r.output
                (sig,) = r.json()["signatures"]
                assert (sig["level"], sig["revocation_source"]) == ("B-LT", origin)
                proven = dt.datetime.fromisoformat(sig["proven_time"])
                assert FIXED_NOW <= proven < FIXED_NOW + dt.timedelta(minutes=5)
                assert sig["timestamp"]["tsa"] == tsa_cert.subject
                assert sig["timestamp"]["tsa_certificate_validated"] is True
            r = cli("verify", str(out), "--data", str(doc), home=tsa_home, env=at(CHECKED))
            assert r.exit_code == 0 and "VALID [CAdES-LT, detached, sha256]" in r.stdout, r.output
            assert "(affiliationChanged), after the signature time" in r.stdout
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            server.kill()
            server.communicate()


def test_timestamped_after_the_revocation_is_refused(cli, home, doc, tsa, ca_server, revocation):
    moving, fetch = revocation
    moving.advance(days=3)
    with TestCA.open(home / "ca", clock=FixedClock(MOVED_AT)) as ca:
        ca.revoke(read_holder(Home(home), "alice").sign_serial, "affiliationChanged", revoked_at=MOVED_AT)
    later = MOVED_AT + dt.timedelta(hours=1)
    tsa.at = later
    with card_signer(home) as signer:
        out = sign_file(doc, doc.with_name("late.p7s"), signer, clock=FixedClock(later), level="T",
                        timestamper=tsa.stamper)
    report = verify_cms(out.output, data=doc, validator=checker(home, fetch))
    assert (report.ok, report.reason) == (False, "revoked"), report.summary()
    assert report.signatures[0].proven_time == later
    # and a long-term signature is not even made: the validation data would prove the revocation
    ca_server.advance(days=1, hours=1)
    r = cli("sign", str(doc), "-o", str(doc.with_name("late-lt.p7s")), "--level", "LT", "--tsa", tsa.url,
            input="ABC123\n", env=at(later))
    assert r.exit_code == 1 and "error: cannot embed validation data" in r.stderr and "revoked" in r.stderr
    assert not doc.with_name("late-lt.p7s").exists() and not list(doc.parent.glob(".*b-level"))


# --------------------------------------------------------------------------- extending

def test_extend_cms_step_by_step(cli, home, doc, tsa, ca_server):
    p7s = doc.with_name("contract.txt.p7s")
    r = cli("sign", str(doc), input="ABC123\n", env=at(SIGNED_AT))
    assert r.exit_code == 0, r.output
    r = cli("sign", "--extend", "LT", str(p7s), env=at(SIGNED_AT))
    assert r.exit_code == 2 and "--tsa URL" in r.stderr, r.output
    r = cli("--json", "sign", "--extend", "LT", str(p7s), "--tsa", tsa.url, env=at(SIGNED_AT))
    assert r.exit_code == 0, r.output
    assert (r.json()["level_before"], r.json()["level"]) == ("B-B", "B-LT")
    r = cli("sign", "--extend", "LT", str(p7s), "--tsa", tsa.url, env=at(SIGNED_AT))
    assert r.exit_code == 1 and "already at level B-LT" in r.stderr
    r = cli("sign", "--extend", "LTA", str(p7s), "--tsa", tsa.url, env=at(SIGNED_AT))
    assert r.exit_code == 2 and "--data FILE" in r.stderr
    out = doc.with_name("lta.p7s")
    r = cli("sign", "--extend", "LTA", str(p7s), "--data", str(doc), "-o", str(out), "--tsa", tsa.url,
            env=at(SIGNED_AT))
    assert r.exit_code == 0 and "from B-LT to B-LTA" in r.stdout, r.output
    r = cli("--json", "verify", str(out), "--data", str(doc), "--offline", env=at(CHECKED))
    assert r.exit_code == 0 and r.json()["signatures"][0]["level"] == "B-LTA", r.output
    r = cli("sign", "--extend", "LTA", str(out), "--data", str(doc), "--tsa", tsa.url, env=at(SIGNED_AT))
    assert r.exit_code == 1 and "renewing archive timestamps is not supported" in r.stderr


def test_extend_refuses_what_it_cannot_extend(cli, doc, tmp_path, tsa):
    garbage = tmp_path / "garbage.p7s"
    garbage.write_bytes(b"\x30\x03\x02\x01")
    r = cli("--json", "sign", "--extend", "T", str(garbage), "--tsa", tsa.url)
    assert r.exit_code == 1 and r.json()["error"] == "level_failed", r.output
    assert "is not a CMS signature that can be extended (malformed" in r.json()["message"]
    r = cli("sign", "--extend", "T", str(garbage), "--tsa", tsa.url)
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    r = cli("sign", str(doc), input="ABC123\n")
    assert r.exit_code == 0, r.output
    other = tmp_path / "other.txt"
    other.write_text("something else", encoding="utf-8")
    r = cli("--json", "sign", "--extend", "LTA", str(doc) + ".p7s", "--data", str(other), "--tsa", tsa.url)
    assert r.exit_code == 1 and "does not verify (wrong-data" in r.json()["message"], r.output
    r = cli("sign", "--extend", "LT", str(doc) + ".p7s", "--tsa", "ftp://tsa.example/")
    assert r.exit_code == 2 and "http(s) URL" in r.stderr
    out = tmp_path / "t.p7m"
    r = cli("--json", "sign", str(doc), "--attached", "-o", str(out), "--tsa",
            f"http://127.0.0.1:{free_port()}/tsr", input="ABC123\n")
    assert r.exit_code == 1 and r.json()["error"] == "timestamp_failed", r.output
    assert not out.exists() and not list(tmp_path.glob(".*b-level")), "nothing left behind"
    r = cli("sign", str(doc), "--level", "LT", "--tsa", tsa.url, "--revocation", "none", input="ABC123\n")
    assert r.exit_code == 1 and "revocation='none' gathers no revocation data" in r.stderr, r.output
    for args, why in ((["--level", "T"], "needs a timestamp authority"), (["--tsa", tsa.url, "--level", "B"],
                      "a B-level signature has no timestamp"), (["--crl", str(other)], "only with --level LT")):
        r = cli("sign", str(doc), *args, input="ABC123\n")
        assert r.exit_code == 2 and why in r.stderr, (args, r.stderr)


def test_extend_pdf_adds_a_document_timestamp_and_the_dss(cli, home, tmp_path, tsa, ca_server):
    src = tmp_path / "contract.pdf"
    src.write_bytes(make_pdf())
    signed = tmp_path / "signed.pdf"
    r = cli("sign", "--pdf", str(src), "-o", str(signed), input="ABC123\n", env=at(SIGNED_AT))
    assert r.exit_code == 0, r.output
    lt = tmp_path / "lt.pdf"
    r = cli("--json", "sign", "--extend", "LT", str(signed), "-o", str(lt), "--tsa", tsa.url, env=at(SIGNED_AT))
    assert r.exit_code == 0, r.output
    done = r.json()
    assert (done["level_before"], done["level"]) == ("B-B", "B-LT")
    assert done["added"] == ["document timestamp (the signature time)", "DSS (validation data)"]
    r = cli("--json", "sign", "--extend", "LTA", str(lt), "--tsa", tsa.url, env=at(SIGNED_AT))  # in place
    assert r.exit_code == 0 and r.json()["level"] == "B-LTA", r.output
    lifecycle.move(Home(home), "alice", address=NEW_ADDRESS, clock=FixedClock(MOVED_AT))
    r = cli("--json", "verify", str(lt), "--offline", env=at(CHECKED))
    assert r.exit_code == 0, r.output
    (sig,) = r.json()["signatures"]
    assert sig["level"] == "B-LTA" and sig["time_source"].startswith("document timestamp")
    assert len(sig["archive_timestamps"]) == 1
    assert sig["archive_timestamps"][0]["tsa_certificate_validated"] is True


# --------------------------------------------------------------------------- given revocation data

def test_given_crl_and_ocsp_response_files(cli, home, tmp_path, doc, tsa, revocation):
    _, fetch = revocation
    out = sign_cms(home, doc, tmp_path / "t.p7s", "T", tsa, fetch).output
    with TestCA.open(home / "ca", clock=FixedClock(CHECKED)) as ca:
        crl = tmp_path / "sign.crl"
        crl.write_bytes(ca.crl("sign"))
    r = cli("--json", "verify", str(out), "--data", str(doc), "--offline", "--crl", str(crl), env=at(CHECKED))
    assert r.exit_code == 0, r.output
    (sig,) = r.json()["signatures"]
    assert sig["revocation_source"] == "given" and sig["certificate_validation"]["validator"]["revocation"][
        "method"] == "crl"
    # the CRL lists the card after it moved: the claimed time of an untimestamped signature fails
    plain = sign_cms(home, doc, tmp_path / "b.p7s", "B", tsa, fetch).output
    lifecycle.move(Home(home), "alice", address=NEW_ADDRESS, clock=FixedClock(MOVED_AT))
    with TestCA.open(home / "ca", clock=FixedClock(CHECKED)) as ca:
        crl.write_bytes(ca.crl("sign"))
    r = cli("--json", "verify", str(plain), "--data", str(doc), "--offline", "--crl", str(crl), env=at(CHECKED))
    assert r.exit_code == 3 and r.json()["reason"] == "revoked", r.output
    # OCSP response files (DER, as `openssl ocsp -respout` writes them): the signer's and the TSA's
    files = []
    for cert, kind in ((read_holder(Home(home), "bob").sign_serial, "sign"), (tsa.cert.serial_number, "tsa")):
        with TestCA.open(home / "ca") as ca:
            subject = ca.db.get(cert).certificate()
        gathered = checker(home, fetch, when=SIGNED_AT).gather(subject, kind=kind, at=SIGNED_AT)
        assert gathered.result.ok, gathered.result.message
        files += ["--ocsp-response", str(tmp_path / f"{kind}.ocsp")]
        (tmp_path / f"{kind}.ocsp").write_bytes(gathered.evidence.ocsp[0])
    with card_signer(home, card="bob") as signer:
        bobs = sign_file(doc, tmp_path / "bob.p7s", signer, clock=FixedClock(SIGNED_AT), level="T",
                         timestamper=tsa.stamper).output
    r = cli("--json", "verify", str(bobs), "--data", str(doc), "--offline", *files, env=at(CHECKED))
    assert r.exit_code == 0 and r.json()["signatures"][0]["revocation_source"] == "given", r.output
    for option, bad, why in (("--crl", b"not a crl", "not a CRL"), ("--ocsp-response", b"\x30\x03\x0a\x01\x01",
                                                                      "answered MALFORMED_REQUEST")):
        path = tmp_path / "bad.bin"
        path.write_bytes(bad)
        r = cli("verify", str(out), "--data", str(doc), option, str(path))
        assert r.exit_code == 2 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# --------------------------------------------------------------------------- interop: pyHanko, pdfsig

def test_pyhanko_validators_accept_our_b_lt_and_b_lta(home, tmp_path, tsa, revocation):
    """pyHanko 0.38 no longer has ``validate_pdf_ltv_signature``: its PADES_LT check is done as it
    did it — a validation context from the DSS alone (no fetching, hard-fail revocation) at the
    signature timestamp's time — and the B-LTA file also goes through its AdES validator
    (EN 319 102-1 §5.6.3, ``ades_lta_validation``) days later, nothing fetched."""
    import asyncio

    from asn1crypto import ocsp as asn1_ocsp
    from asn1crypto import x509 as asn1_x509
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.ades.report import AdESPassed
    from pyhanko.sign.validation import DocumentSecurityStore, validate_pdf_signature, validate_pdf_timestamp
    from pyhanko.sign.validation.ades import ades_lta_validation
    from pyhanko.sign.validation.policy_decl import (
        LocalKnowledge,
        PdfSignatureValidationSpec,
        RevinfoOnlineFetchingRule,
        RevocationInfoGatheringSpec,
        SignatureValidationSpec,
    )
    from pyhanko_certvalidator.context import CertValidationPolicySpec
    from pyhanko_certvalidator.ltv.types import ValidationTimingInfo
    from pyhanko_certvalidator.policy_decl import CertRevTrustPolicy, RevocationCheckingPolicy
    from pyhanko_certvalidator.registry import SimpleTrustManager
    from pyhanko_certvalidator.revinfo.archival import OCSPContainer

    from jpki.sign.pdf import sign_pdf

    moving, fetch = revocation
    src = tmp_path / "in.pdf"
    src.write_bytes(make_pdf())
    made = {}
    # as it goes for real: the size-probing token, the signature timestamp, the OCSP answers,
    # the document timestamp, each a little later than the one before
    tsa.stamper.tick = dt.timedelta(seconds=30)
    for level in ("LT", "LTA"):
        made[level] = tmp_path / f"{level}.pdf"
        tsa.at = SIGNED_AT
        move_to(moving, SIGNED_AT + dt.timedelta(seconds=45))
        with card_signer(home) as signer:
            sign_pdf(src, made[level], signer, clock=FixedClock(SIGNED_AT), level=level,
                     timestamper=tsa.stamper, source=source(home, fetch))
    root = asn1_x509.Certificate.load(x509.load_pem_x509_certificate(
        (home / "ca" / "sign_ca.pem").read_bytes()).public_bytes(serialization.Encoding.DER))
    for level, path in made.items():
        with open(path, "rb") as fh:
            reader = PdfFileReader(fh)
            stamped = SIGNED_AT + dt.timedelta(seconds=30)
            context = DocumentSecurityStore.read_dss(reader).as_validation_context(dict(
                trust_roots=[root], allow_fetching=False, moment=stamped, retroactive_revinfo=True,
                revocation_mode="hard-fail"))
            status = validate_pdf_signature(reader.embedded_signatures[0], context)
            assert status.bottom_line and status.trusted and not status.revoked, status.pretty_print_details()
            assert status.timestamp_validity.trusted and status.timestamp_validity.timestamp == stamped
            for stamp in reader.embedded_timestamp_signatures:
                assert level == "LTA"
                assert validate_pdf_timestamp(stamp, context).trusted
    # B-LTA, days later: today's answers given to pyHanko as local knowledge (what it would fetch;
    # nothing is fetched), the document and signature timestamps processed as proofs of existence.
    # (After a revocation, pyHanko 0.38's past validation wants revocation data fresh at the
    # revocation time, which the 15-minute OCSP answers of the test CA are not: jpki's own rule,
    # data issued after the proven time, is checked by test_move_after_signing_pdf.)
    move_to(moving, CHECKED)
    with open(made["LTA"], "rb") as fh:
        signer_cert = x509.load_der_x509_certificate(PdfFileReader(fh).embedded_signatures[0].signer_cert.dump())
    today = [checker(home, fetch).gather(cert, kind=kind, at=CHECKED).evidence.ocsp[0]
             for cert, kind in ((tsa.cert, "tsa"), (signer_cert, "sign"))]
    policy = CertValidationPolicySpec(
        trust_manager=SimpleTrustManager.build(trust_roots=[root]),
        revinfo_policy=CertRevTrustPolicy(RevocationCheckingPolicy.from_legacy("hard-fail")))
    spec = PdfSignatureValidationSpec(SignatureValidationSpec(
        cert_validation_policy=policy,
        local_knowledge=LocalKnowledge(known_ocsps=[
            c for der_ in today for c in OCSPContainer.load_multi(asn1_ocsp.OCSPResponse.load(der_))]),
        revinfo_gathering_policy=RevocationInfoGatheringSpec(
            online_fetching_rule=RevinfoOnlineFetchingRule.LOCAL_ONLY)))
    timing = ValidationTimingInfo(validation_time=CHECKED, best_signature_time=CHECKED,
                                  point_in_time_validation=False)
    with open(made["LTA"], "rb") as fh:
        result = asyncio.run(ades_lta_validation(PdfFileReader(fh).embedded_signatures[0], spec,
                                                 timing_info=timing))
    assert isinstance(result.ades_subindic, AdESPassed), (result.ades_subindic, result.failure_msg)
    assert result.signature_timestamp_status is not None
    assert result.oldest_evidence_record_timestamp == SIGNED_AT + dt.timedelta(seconds=60)


@pytest.fixture
def pdfsig():
    if shutil.which("pdfsig") is None:
        pytest.skip("pdfsig (poppler-utils) not installed")
    return "pdfsig"


def test_pdfsig_lists_the_signature_with_its_timestamp(home, tmp_path, tsa, revocation, pdfsig):
    from jpki.sign.pdf import sign_pdf

    _, fetch = revocation
    src, out = tmp_path / "in.pdf", tmp_path / "lta.pdf"
    src.write_bytes(make_pdf())
    with card_signer(home) as signer:
        sign_pdf(src, out, signer, clock=FixedClock(SIGNED_AT), level="LTA", timestamper=tsa.stamper,
                 source=source(home, fetch))
    p = subprocess.run([pdfsig, "-nocert", str(out)], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    first, stamp = p.stdout.split("Signature #2:")
    assert "Signature Type: ETSI.CAdES.detached" in first and "Signature is Valid." in first, p.stdout
    assert "Signing Time: Nov 27 2026 04:00:00" in first
    # the document timestamp (poppler 22 lists it, signed by the TSA, without checking it)
    assert "Signer Certificate Common Name: jpki test TSA" in stamp, p.stdout
