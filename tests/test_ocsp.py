"""The OCSP responder core (jpki.revocation.ocsp) and its delegated certificates
(jpki.pki.responder): statuses, CertIDs, nonces, signatures, caching, bad input.

Every test runs on a private copy of the provisioned home (CA + alice + bob) with a fixed clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from fixed import FIXED_NOW
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jpki.errors import UsageError
from jpki.pki import TestCA
from jpki.pki.db import CertificateDB
from jpki.pki.responder import (
    DEFAULT_RESPONDER_VALIDITY,
    RESPONDER_CARD_ID,
    build_responder_certificate,
    ensure_responder,
    issue_responder_cert,
    key_type_of,
    load_responder,
    new_responder_key,
)
from jpki.provision import Home, read_holder
from jpki.revocation.ocsp import (
    MAX_REQUEST_SIZE,
    OcspResponder,
    ResponseStatus,
    SqliteStatusLookup,
    unsuccessful_response,
)

FRESHNESS = dt.timedelta(minutes=15)
DER = serialization.Encoding.DER


# --------------------------------------------------------------------------- helpers


def spki_bits(cert: x509.Certificate) -> bytes:
    info = asn1_keys.PublicKeyInfo.load(
        cert.public_key().public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return bytes(info["public_key"].contents[1:])


def cert_id(issuer: x509.Certificate, serial: int, algorithm: str = "sha1") -> asn1_ocsp.CertId:
    """A CertID built independently of the code under test."""
    return asn1_ocsp.CertId(
        {
            "hash_algorithm": {"algorithm": algorithm},
            "issuer_name_hash": hashlib.new(algorithm, issuer.subject.public_bytes()).digest(),
            "issuer_key_hash": hashlib.new(algorithm, spki_bits(issuer)).digest(),
            "serial_number": serial,
        }
    )


def make_request(cert_ids, *, nonce: bytes | None = None, extensions=()) -> bytes:
    """An OCSPRequest for several CertIDs (cryptography's builder takes only one)."""
    exts = list(extensions)
    if nonce is not None:
        exts.append({"extn_id": "nonce", "critical": False, "extn_value": nonce})
    tbs = {"request_list": [{"req_cert": c} for c in cert_ids]}
    if exts:
        tbs["request_extensions"] = exts
    return asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump()


def simple_request(cert, issuer, algorithm: hashes.HashAlgorithm | None = None,
                   nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(DER)


def db_snapshot(path: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT * FROM certificates ORDER BY serial").fetchall()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def responder_keys():
    return {kind: rsa.generate_private_key(65537, 2048) for kind in ("sign", "auth")}


@pytest.fixture
def ca(home, clock):
    with TestCA.open(home / "ca", clock=clock) as test_ca:
        yield test_ca


@pytest.fixture
def creds(ca, responder_keys):
    return {kind: ensure_responder(ca, kind, responder_keys[kind]) for kind in ("sign", "auth")}


@pytest.fixture
def lookup(ca):
    look = SqliteStatusLookup(ca.db.path)
    yield look
    look.close()


@pytest.fixture
def responder(ca, creds, lookup, clock):
    return OcspResponder(
        lookup,
        {kind: (ca.ca_cert(kind), c.cert, c.key) for kind, c in creds.items()},
        clock,
        freshness=FRESHNESS,
    )


@pytest.fixture
def alice(home):
    return read_holder(Home(home), "alice")


@pytest.fixture
def bob(home):
    return read_holder(Home(home), "bob")


def leaf(ca: TestCA, serial: int) -> x509.Certificate:
    record = ca.db.get(serial)
    assert record is not None
    return record.certificate()


# --------------------------------------------------------------------------- responder certificates


def test_responder_certificate_profile(ca, creds, clock):
    for kind, c in creds.items():
        cert = c.cert
        issuer = ca.ca_cert(kind)
        assert cert.issuer == issuer.subject
        ca.ca_key(kind).public_key().verify(
            cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256()
        )
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        assert list(eku.value) == [ExtendedKeyUsageOID.OCSP_SIGNING]
        assert cert.extensions.get_extension_for_class(x509.OCSPNoCheck).critical is False
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and not bc.value.ca
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert aki.key_identifier == ski.digest
        assert cert.not_valid_before_utc == FIXED_NOW
        assert cert.not_valid_after_utc == FIXED_NOW + DEFAULT_RESPONDER_VALIDITY
        assert "OCSP responder" in cert.subject.rfc4514_string()
        assert "TEST" in cert.subject.rfc4514_string()


def test_responder_files_and_db_record(ca, creds):
    for kind, c in creds.items():
        assert c.key_path == ca.directory / f"{kind}_ocsp.key"
        assert stat.S_IMODE(c.key_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(c.cert_path.stat().st_mode) == 0o644
        assert x509.load_pem_x509_certificate(c.cert_path.read_bytes()) == c.cert
        record = ca.db.get(c.cert.serial_number)
        assert record is not None
        assert (record.kind, record.card, record.status) == (kind, RESPONDER_CARD_ID, "good")
    assert not list(ca.directory.glob("*.part"))


def test_responder_certificate_passes_openssl_as_ocsp_helper(ca, creds, tmp_path):
    for kind, c in creds.items():
        proc = subprocess.run(
            ["openssl", "verify", "-CAfile", str(ca.ca_cert_path(kind)), "-purpose", "ocsphelper",
             "-attime", str(int(FIXED_NOW.timestamp()) + 60), str(c.cert_path)],
            capture_output=True, text=True, timeout=30, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert ": OK" in proc.stdout


def test_ensure_responder_keeps_then_renews_with_the_same_key(ca, creds, clock, responder_keys):
    first = creds["auth"]
    assert ensure_responder(ca, "auth").cert == first.cert
    clock.advance(days=6, hours=1)  # 23 hours left: less than the default day
    renewed = ensure_responder(ca, "auth")
    assert renewed.cert.serial_number != first.cert.serial_number
    assert renewed.cert.public_key().public_numbers() == responder_keys["auth"].public_key().public_numbers()
    assert renewed.cert.not_valid_before_utc == clock.now()
    assert load_responder(ca, "auth").cert == renewed.cert
    assert ca.db.get(first.cert.serial_number) is not None  # the old one stays on record
    assert ensure_responder(ca, "auth").cert == renewed.cert


def test_load_responder_refuses_mismatched_or_foreign_files(ca, creds, responder_keys):
    # the sign responder's key beside the auth certificate
    creds["auth"].key_path.write_bytes(creds["sign"].key_path.read_bytes())
    assert load_responder(ca, "auth") is None
    # the sign responder certificate (issued by the other root) in the auth slot
    creds["auth"].key_path.write_bytes(creds["sign"].key_path.read_bytes())
    creds["auth"].cert_path.write_bytes(creds["sign"].cert_path.read_bytes())
    assert load_responder(ca, "auth") is None
    creds["auth"].cert_path.write_bytes(b"garbage")
    assert load_responder(ca, "auth") is None
    again = ensure_responder(ca, "auth", responder_keys["auth"])
    assert again.cert.issuer == ca.auth_ca_cert.subject


def test_issue_responder_cert_is_capped_and_checked(ca, clock, responder_keys):
    with pytest.raises(UsageError):
        issue_responder_cert(ca, "auth", responder_keys["auth"], validity=dt.timedelta(0))
    with pytest.raises(UsageError):
        issue_responder_cert(ca, "nope", responder_keys["auth"])  # type: ignore[arg-type]
    long = issue_responder_cert(ca, "sign", responder_keys["sign"], validity=dt.timedelta(days=9999))
    assert long.cert.not_valid_after_utc == ca.sign_ca_cert.not_valid_after_utc


# --------------------------------------------------------------------------- ECDSA P-256 responders


@pytest.fixture
def ec_creds(ca):
    return {kind: ensure_responder(ca, kind, key_type="ec") for kind in ("sign", "auth")}


def test_ec_responder_certificate_profile_and_files(ca, ec_creds):
    for kind, c in ec_creds.items():
        key = c.cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
        assert isinstance(c.key, ec.EllipticCurvePrivateKey) and c.key_type == "ec"
        # signed by the RSA root, same profile as an RSA responder
        assert c.cert.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSA_WITH_SHA256
        ca.ca_key(kind).public_key().verify(
            c.cert.signature, c.cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256())
        assert list(c.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
            ExtendedKeyUsageOID.OCSP_SIGNING]
        ku = c.cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.digital_signature and not ku.key_cert_sign
        c.cert.extensions.get_extension_for_class(x509.OCSPNoCheck)
        assert stat.S_IMODE(c.key_path.stat().st_mode) == 0o600
        assert b"BEGIN PRIVATE KEY" in c.key_path.read_bytes()  # PKCS#8, like the RSA keys
        assert ca.db.get(c.cert.serial_number).card == RESPONDER_CARD_ID
        loaded = load_responder(ca, kind)
        assert loaded is not None and loaded.cert == c.cert and loaded.key_type == "ec"
        proc = subprocess.run(
            ["openssl", "verify", "-CAfile", str(ca.ca_cert_path(kind)), "-purpose", "ocsphelper",
             "-attime", str(int(FIXED_NOW.timestamp()) + 60), str(c.cert_path)],
            capture_output=True, text=True, timeout=30, check=False,
        )
        assert proc.returncode == 0 and ": OK" in proc.stdout, proc.stderr


def test_ec_responder_signs_ecdsa_with_sha256(ca, ec_creds, lookup, clock, alice):
    responder = OcspResponder(
        lookup, {k: (ca.ca_cert(k), c.cert, c.key) for k, c in ec_creds.items()}, clock, freshness=FRESHNESS)
    for kind, serial in (("auth", alice.auth_serial), ("sign", alice.sign_serial)):
        resp = ocsp.load_der_ocsp_response(
            responder.respond(simple_request(leaf(ca, serial), ca.ca_cert(kind))))
        assert resp.certificate_status is ocsp.OCSPCertStatus.GOOD
        assert resp.certificates == [ec_creds[kind].cert]
        assert resp.responder_key_hash == hashlib.sha1(spki_bits(ec_creds[kind].cert)).digest()
        assert resp.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
        ec_creds[kind].cert.public_key().verify(resp.signature, resp.tbs_response_bytes,
                                                ec.ECDSA(hashes.SHA256()))
    ca.revoke(alice.auth_serial, x509.ReasonFlags.key_compromise)
    responder.invalidate(alice.auth_serial)
    resp = ocsp.load_der_ocsp_response(
        responder.respond(simple_request(leaf(ca, alice.auth_serial), ca.auth_ca_cert)))
    assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert resp.revocation_reason is x509.ReasonFlags.key_compromise


def test_switching_key_type_reissues_the_responder(ca, creds, responder_keys):
    rsa_auth = creds["auth"]
    assert rsa_auth.key_type == "rsa"
    assert ensure_responder(ca, "auth").cert == rsa_auth.cert  # no key type: keep what is there
    assert ensure_responder(ca, "auth", key_type="rsa").cert == rsa_auth.cert
    switched = ensure_responder(ca, "auth", key_type="ec")
    assert switched.key_type == "ec" and switched.cert.serial_number != rsa_auth.cert.serial_number
    assert isinstance(load_responder(ca, "auth").key, ec.EllipticCurvePrivateKey)
    assert ensure_responder(ca, "auth").cert == switched.cert  # kept, whatever its type
    assert ensure_responder(ca, "auth", key_type="ec").cert == switched.cert
    back = ensure_responder(ca, "auth", key_type="rsa")
    assert back.key_type == "rsa" and back.cert.serial_number != switched.cert.serial_number
    # a fresh RSA key, not the earlier one
    assert back.key.public_key().public_numbers() != rsa_auth.key.public_key().public_numbers()
    assert ensure_responder(ca, "sign", key_type="rsa").cert == creds["sign"].cert  # untouched
    assert ca.db.get(rsa_auth.cert.serial_number) is not None  # the old ones stay on record
    assert ca.db.get(switched.cert.serial_number) is not None


def test_a_stored_key_of_another_type_than_configured_is_replaced(ca, creds):
    # an EC key and certificate put in the auth slot by hand (say, restored from a backup)
    key = new_responder_key("ec")
    issuer = ca.auth_ca_cert
    cert = build_responder_certificate(
        "auth", key.public_key(), issuer_cert=issuer, issuer_key=ca.auth_ca_key, serial=4242,
        not_before=FIXED_NOW, not_after=FIXED_NOW + dt.timedelta(days=3))
    creds["auth"].key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    creds["auth"].cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert load_responder(ca, "auth").key_type == "ec"  # loads: it is a valid responder
    replaced = ensure_responder(ca, "auth", key_type="rsa")
    assert replaced.key_type == "rsa" and replaced.cert.serial_number != 4242
    assert isinstance(replaced.cert.public_key(), rsa.RSAPublicKey)
    assert load_responder(ca, "auth").cert == replaced.cert


def test_ec_responder_is_renewed_with_the_same_key(ca, ec_creds, clock):
    first = ec_creds["auth"]
    clock.advance(days=6, hours=1)
    renewed = ensure_responder(ca, "auth", key_type="ec")
    assert renewed.cert.serial_number != first.cert.serial_number
    assert renewed.cert.public_key().public_numbers() == first.key.public_key().public_numbers()


def test_responder_key_type_checks(ca, responder_keys):
    ec_key = new_responder_key("ec")
    with pytest.raises(UsageError, match="unknown responder key type"):
        ensure_responder(ca, "auth", key_type="dsa")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="is rsa, not ec"):
        ensure_responder(ca, "auth", responder_keys["auth"], key_type="ec")
    with pytest.raises(UsageError, match="is ec, not rsa"):
        issue_responder_cert(ca, "auth", ec_key, key_type="rsa")
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(UsageError):
        issue_responder_cert(ca, "auth", p384)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        build_responder_certificate(
            "auth", p384.public_key(), issuer_cert=ca.auth_ca_cert, issuer_key=ca.auth_ca_key,
            serial=5, not_before=FIXED_NOW, not_after=FIXED_NOW + dt.timedelta(days=1))
    with pytest.raises(UsageError):
        new_responder_key("rsa", key_size=1024)
    assert key_type_of(ec_key) == "ec" and key_type_of(responder_keys["auth"].public_key()) == "rsa"
    assert key_type_of(p384) is None and key_type_of(b"key") is None
    # a given key decides the type when none is asked for
    assert ensure_responder(ca, "auth", ec_key).key_type == "ec"


# --------------------------------------------------------------------------- statuses


def test_good_for_both_kinds(ca, responder, alice):
    for kind, serial in (("auth", alice.auth_serial), ("sign", alice.sign_serial)):
        req = simple_request(leaf(ca, serial), ca.ca_cert(kind))
        resp = ocsp.load_der_ocsp_response(responder.respond(req))
        assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert resp.certificate_status is ocsp.OCSPCertStatus.GOOD
        assert resp.serial_number == serial
        assert resp.this_update_utc == FIXED_NOW
        assert resp.next_update_utc == FIXED_NOW + FRESHNESS
        assert resp.produced_at_utc == FIXED_NOW
        assert resp.issuer_key_hash == hashlib.sha1(spki_bits(ca.ca_cert(kind))).digest()
        assert resp.hash_algorithm.name == "sha1"


def test_revoked_carries_time_and_reason(ca, responder, alice):
    when = FIXED_NOW - dt.timedelta(hours=2)
    ca.db.set_status(alice.auth_serial, "revoked", revoked_at=when, reason="keyCompromise")
    resp = ocsp.load_der_ocsp_response(
        responder.respond(simple_request(leaf(ca, alice.auth_serial), ca.auth_ca_cert))
    )
    assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert resp.revocation_time_utc == when
    assert resp.revocation_reason is x509.ReasonFlags.key_compromise
    assert len(resp.single_extensions) == 0


def test_revoked_by_the_ca_with_an_invalidity_date(ca, responder, alice):
    """TestCA.revoke records an invalidity date; OCSP sends it as the CRL does."""
    invalid = FIXED_NOW - dt.timedelta(days=3)
    ca.revoke(alice.sign_serial, x509.ReasonFlags.key_compromise, invalidity_date=invalid)
    resp = ocsp.load_der_ocsp_response(
        responder.respond(simple_request(leaf(ca, alice.sign_serial), ca.sign_ca_cert))
    )
    assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert resp.revocation_time_utc == FIXED_NOW
    assert resp.revocation_reason is x509.ReasonFlags.key_compromise
    ext = resp.single_extensions.get_extension_for_class(x509.InvalidityDate)
    assert not ext.critical and ext.value.invalidity_date_utc == invalid


def test_reason_unspecified_is_left_out_and_hold_can_be_released(ca, responder, alice, bob):
    ca.db.set_status(bob.sign_serial, "revoked", revoked_at=FIXED_NOW)  # reason: unspecified
    req = simple_request(leaf(ca, bob.sign_serial), ca.sign_ca_cert)
    resp = ocsp.load_der_ocsp_response(responder.respond(req))
    assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert resp.revocation_reason is None

    ca.db.set_status(alice.sign_serial, "revoked", revoked_at=FIXED_NOW, reason="certificateHold")
    req = simple_request(leaf(ca, alice.sign_serial), ca.sign_ca_cert)
    resp = ocsp.load_der_ocsp_response(responder.respond(req))
    assert resp.revocation_reason is x509.ReasonFlags.certificate_hold
    ca.db.set_status(alice.sign_serial, "good")
    resp = ocsp.load_der_ocsp_response(responder.respond(req))
    assert resp.certificate_status is ocsp.OCSPCertStatus.GOOD


def test_superseded_without_revocation_time_is_good(ca, responder, alice):
    ca.db.set_status(alice.auth_serial, "superseded")
    req = simple_request(leaf(ca, alice.auth_serial), ca.auth_ca_cert)
    assert ocsp.load_der_ocsp_response(responder.respond(req)).certificate_status is ocsp.OCSPCertStatus.GOOD
    ca.db.set_status(alice.auth_serial, "revoked", revoked_at=FIXED_NOW, reason="superseded")
    resp = ocsp.load_der_ocsp_response(responder.respond(req))
    assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert resp.revocation_reason is x509.ReasonFlags.superseded


@pytest.mark.parametrize(
    "serial", [1, 2**64 + 12345, 2**159 - 1, 2**159 + 7, 2**167, 0, -5], ids=lambda s: hex(s)
)
def test_unknown_serials_including_the_edges(ca, responder, serial):
    """Not in the DB: unknown. 0, negative and >20-byte serials too (never a crash)."""
    result = responder.process(make_request([cert_id(ca.auth_ca_cert, serial)]))
    assert result.status is ResponseStatus.SUCCESSFUL
    assert [a.status for a in result.answers] == ["unknown"]
    parsed = asn1_ocsp.OCSPResponse.load(result.der)
    single = parsed.basic_ocsp_response["tbs_response_data"]["responses"][0]
    assert single["cert_id"]["serial_number"].native == serial
    assert single["cert_status"].name == "unknown"


def test_serial_of_the_other_ca_is_unknown(ca, responder, alice):
    """alice's signing serial asked of the authentication CA: that CA never issued it."""
    result = responder.process(make_request([cert_id(ca.auth_ca_cert, alice.sign_serial)]))
    assert result.status is ResponseStatus.SUCCESSFUL
    assert [a.status for a in result.answers] == ["unknown"]


@pytest.mark.parametrize("algorithm",
                         [hashes.SHA1(), hashes.SHA224(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()],
                         ids=lambda a: a.name)
def test_certid_hash_algorithms(ca, responder, alice, algorithm):
    req = simple_request(leaf(ca, alice.auth_serial), ca.auth_ca_cert, algorithm)
    resp = ocsp.load_der_ocsp_response(responder.respond(req))
    assert resp.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert resp.hash_algorithm.name == algorithm.name
    # the CertID is echoed byte for byte
    request_cid = asn1_ocsp.OCSPRequest.load(req)["tbs_request"]["request_list"][0]["req_cert"].dump()
    response_cid = asn1_ocsp.OCSPResponse.load(resp.public_bytes(DER)).basic_ocsp_response[
        "tbs_response_data"]["responses"][0]["cert_id"].dump()
    assert response_cid == request_cid


@pytest.mark.parametrize("nonce", [None, b"n" * 16])
@pytest.mark.parametrize("algorithm", [hashes.SHA1(), hashes.SHA256(), hashes.SHA512()], ids=lambda a: a.name)
def test_usual_requests_are_read_by_cryptography_alone(ca, responder, alice, monkeypatch, algorithm, nonce):
    """The requests OpenSSL, cryptography and Go send (one CertID, NULL hash parameters, maybe a
    nonce) never reach the slower asn1crypto reading."""
    import jpki.revocation.ocsp as ocsp_module

    class NoAsn1:
        @staticmethod
        def load(*args, **kwargs):
            raise AssertionError("asn1crypto was used for a usual request")

    monkeypatch.setattr(ocsp_module._asn1_ocsp, "OCSPRequest", NoAsn1)
    req = simple_request(leaf(ca, alice.auth_serial), ca.auth_ca_cert, algorithm, nonce=nonce)
    result = responder.process(req)
    assert result.status is ResponseStatus.SUCCESSFUL, result.detail
    assert result.nonce is (nonce is not None)
    monkeypatch.undo()
    request_cid = asn1_ocsp.OCSPRequest.load(req)["tbs_request"]["request_list"][0]["req_cert"].dump()
    response = asn1_ocsp.OCSPResponse.load(result.der).basic_ocsp_response["tbs_response_data"]
    assert response["responses"][0]["cert_id"].dump() == request_cid


def test_certid_with_absent_hash_parameters_is_echoed_as_sent(ca, responder, alice):
    cid = cert_id(ca.auth_ca_cert, alice.auth_serial, "sha256")
    cid["hash_algorithm"] = {"algorithm": "sha256"}  # no NULL parameters
    req = make_request([cid])
    result = responder.process(req)
    assert result.answers[0].status == "good"
    parsed = asn1_ocsp.OCSPResponse.load(result.der)
    assert parsed.basic_ocsp_response["tbs_response_data"]["responses"][0]["cert_id"].dump() == cid.dump()


def test_several_certids_each_answered_in_order(ca, responder, alice, bob):
    ca.db.set_status(bob.auth_serial, "revoked", revoked_at=FIXED_NOW, reason="affiliationChanged")
    cids = [
        cert_id(ca.auth_ca_cert, alice.auth_serial),
        cert_id(ca.auth_ca_cert, bob.auth_serial, "sha256"),
        cert_id(ca.auth_ca_cert, 0xDEADBEEF),
    ]
    result = responder.process(make_request(cids))
    assert [a.status for a in result.answers] == ["good", "revoked", "unknown"]
    responses = asn1_ocsp.OCSPResponse.load(result.der).basic_ocsp_response["tbs_response_data"]["responses"]
    assert [r["cert_id"].dump() for r in responses] == [c.dump() for c in cids]
    assert [r["cert_status"].name for r in responses] == ["good", "revoked", "unknown"]
    assert responses[1]["cert_status"].chosen["revocation_reason"].native == "affiliation_changed"
    for r in responses:
        assert r["this_update"].native == FIXED_NOW
        assert r["next_update"].native == FIXED_NOW + FRESHNESS


def test_the_responder_certificate_itself_is_good(ca, responder, creds):
    cert = creds["auth"].cert
    result = responder.process(make_request([cert_id(ca.auth_ca_cert, cert.serial_number)]))
    assert [a.status for a in result.answers] == ["good"]


def test_certificatedb_get_works_as_the_lookup(ca, creds, clock, alice):
    responder = OcspResponder(
        ca.db.get, {k: (ca.ca_cert(k), c.cert, c.key) for k, c in creds.items()}, clock
    )
    ca.db.set_status(alice.auth_serial, "revoked", revoked_at=FIXED_NOW, reason="keyCompromise")
    result = responder.process(make_request([cert_id(ca.auth_ca_cert, alice.auth_serial),
                                             cert_id(ca.auth_ca_cert, 0)]))
    assert [a.status for a in result.answers] == ["revoked", "unknown"]


def test_sqlite_lookup_matches_the_db_and_is_read_only(ca, lookup, alice):
    ca.db.set_status(alice.auth_serial, "revoked", revoked_at=FIXED_NOW, reason="keyCompromise")
    for serial in (alice.auth_serial, alice.sign_serial):
        record, row = ca.db.get(serial), lookup(serial)
        assert (row.kind, row.status, row.revoked_at, row.reason) == (
            record.kind, record.status, record.revoked_at, record.reason)
    assert lookup(12345) is None and lookup(0) is None and lookup(-1) is None
    with pytest.raises(sqlite3.OperationalError):
        lookup._connection().execute("DELETE FROM certificates")


# --------------------------------------------------------------------------- signature, nonce


def test_signature_verifies_with_the_included_delegated_certificate(ca, responder, creds, alice):
    req = simple_request(leaf(ca, alice.auth_serial), ca.auth_ca_cert)
    resp = ocsp.load_der_ocsp_response(responder.respond(req))
    assert resp.certificates == [creds["auth"].cert]
    signer = resp.certificates[0]
    assert resp.responder_key_hash == hashlib.sha1(spki_bits(signer)).digest()
    assert resp.responder_name is None  # byKey
    assert resp.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSA_WITH_SHA256
    signer.public_key().verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(), hashes.SHA256())
    # the signer chains to the CA of the certificate in question and may sign OCSP responses
    ca.auth_ca_cert.public_key().verify(
        signer.signature, signer.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256()
    )
    assert signer.issuer == ca.auth_ca_cert.subject
    assert ExtendedKeyUsageOID.OCSP_SIGNING in signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    signer.extensions.get_extension_for_class(x509.OCSPNoCheck)


def test_sign_ca_answers_are_signed_by_the_sign_responder(ca, responder, creds, alice):
    resp = ocsp.load_der_ocsp_response(
        responder.respond(simple_request(leaf(ca, alice.sign_serial), ca.sign_ca_cert)))
    assert resp.certificates == [creds["sign"].cert]
    creds["sign"].cert.public_key().verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(),
                                           hashes.SHA256())


def test_nonce_is_echoed_and_never_cached(ca, responder, alice):
    cert = leaf(ca, alice.auth_serial)
    answers = []
    for nonce in (os.urandom(16), os.urandom(32)):
        resp = ocsp.load_der_ocsp_response(responder.respond(simple_request(cert, ca.auth_ca_cert, nonce=nonce)))
        assert resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
        answers.append(resp)
    assert responder.stats["signed"] == 2 and responder.stats["cache_hits"] == 0
    assert responder.cache_len == 0
    plain = ocsp.load_der_ocsp_response(responder.respond(simple_request(cert, ca.auth_ca_cert)))
    with pytest.raises(x509.ExtensionNotFound):
        plain.extensions.get_extension_for_class(x509.OCSPNonce)


@pytest.mark.parametrize("length,ok", [(1, True), (16, True), (32, True), (128, True), (0, False), (129, False)])
def test_nonce_lengths(ca, responder, alice, length, ok):
    req = make_request([cert_id(ca.auth_ca_cert, alice.auth_serial)], nonce=os.urandom(length))
    result = responder.process(req)
    if ok:
        assert result.status is ResponseStatus.SUCCESSFUL and result.nonce
        parsed = asn1_ocsp.OCSPResponse.load(result.der).basic_ocsp_response["tbs_response_data"]
        assert parsed["response_extensions"][0]["extn_value"].parsed.native == asn1_ocsp.OCSPRequest.load(
            req).nonce_value.native
    else:
        assert result.status is ResponseStatus.MALFORMED_REQUEST


def test_legacy_bare_nonce_is_echoed_as_received(ca, responder, alice):
    """Old clients put the nonce bytes straight into extnValue; echo them unchanged."""
    raw = b"\xaa" * 20
    # an extension of id-pkix-ocsp 9 takes raw bytes; then give it the nonce OID (same length)
    placeholder = {"extn_id": "1.3.6.1.5.5.7.48.1.9", "critical": False, "extn_value": raw}
    der = make_request([cert_id(ca.auth_ca_cert, alice.auth_serial)], extensions=[placeholder])
    oid_nonce, oid_9 = bytes.fromhex("06092b0601050507300102"), bytes.fromhex("06092b0601050507300109")
    assert der.count(oid_9) == 1
    der = der.replace(oid_9, oid_nonce)
    result = responder.process(der)
    assert result.status is ResponseStatus.SUCCESSFUL and result.nonce
    assert bytes([0x30, 0x21]) + oid_nonce + bytes([0x04, 0x14]) + raw in result.der
    assert ocsp.load_der_ocsp_response(result.der).extensions[0].oid.dotted_string == "1.3.6.1.5.5.7.48.1.2"


# --------------------------------------------------------------------------- cache


def test_cache_returns_the_same_bytes_within_the_window(ca, responder, alice, clock):
    req = simple_request(leaf(ca, alice.auth_serial), ca.auth_ca_cert)
    first = responder.process(req)
    assert not first.cached and responder.stats["signed"] == 1
    clock.advance(minutes=14, seconds=59)
    again = responder.process(req)
    assert again.cached and again.der == first.der
    assert responder.stats["signed"] == 1 and responder.stats["cache_hits"] == 1
    clock.advance(seconds=1)  # nextUpdate reached: a fresh response
    fresh = responder.process(req)
    assert not fresh.cached and fresh.der != first.der
    assert ocsp.load_der_ocsp_response(fresh.der).this_update_utc == FIXED_NOW + FRESHNESS


def test_cache_is_per_certid(ca, responder, alice):
    cert = leaf(ca, alice.auth_serial)
    sha1 = responder.respond(simple_request(cert, ca.auth_ca_cert, hashes.SHA1()))
    sha256 = responder.respond(simple_request(cert, ca.auth_ca_cert, hashes.SHA256()))
    assert sha1 != sha256 and responder.cache_len == 2
    # a different encoding of the same question (an explicit requestorName) hits the same entry
    req = asn1_ocsp.OCSPRequest({"tbs_request": {
        "requestor_name": {"dns_name": "client.example"},
        "request_list": [{"req_cert": asn1_ocsp.OCSPRequest.load(
            simple_request(cert, ca.auth_ca_cert))["tbs_request"]["request_list"][0]["req_cert"]}],
    }}).dump()
    result = responder.process(req)
    assert result.cached and result.der == sha1


def test_revocation_elsewhere_is_seen_through_the_cache(ca, responder, alice, home):
    req = simple_request(leaf(ca, alice.auth_serial), ca.auth_ca_cert)
    good = responder.respond(req)
    assert responder.respond(req) == good
    # another connection (as another process would) revokes; no invalidate() call
    with CertificateDB(home / "ca" / "certs.db") as other:
        other.set_status(alice.auth_serial, "revoked", revoked_at=FIXED_NOW, reason="keyCompromise")
    result = responder.process(req)
    assert not result.cached
    assert ocsp.load_der_ocsp_response(result.der).certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert responder.process(req).cached  # and the revoked answer is cached in turn


def test_repeated_request_bytes_skip_parsing_but_not_the_kind_check(ca, responder, alice):
    req = simple_request(leaf(ca, alice.auth_serial), ca.auth_ca_cert)
    assert not responder.process(req).cached
    assert responder.process(req).cached
    assert responder.process(req, kind="auth").cached  # same CertID: same cached response
    assert responder.process(req, kind="sign").status is ResponseStatus.UNAUTHORIZED


def test_revocation_seen_without_a_change_token(ca, creds, clock, alice, home):
    """A lookup without snapshot_token (CertificateDB.get): every hit re-reads the status."""
    responder = OcspResponder(ca.db.get, {k: (ca.ca_cert(k), c.cert, c.key) for k, c in creds.items()}, clock)
    req = simple_request(leaf(ca, alice.auth_serial), ca.auth_ca_cert)
    good = responder.respond(req)
    assert responder.process(req).der == good
    with CertificateDB(home / "ca" / "certs.db") as other:
        other.set_status(alice.auth_serial, "revoked", revoked_at=FIXED_NOW, reason="keyCompromise")
    result = responder.process(req)
    assert not result.cached and result.answers[0].status == "revoked"


def test_snapshot_token_moves_on_commits_elsewhere(lookup, alice, home):
    first = lookup.snapshot_token()
    assert lookup.snapshot_token() == first
    with CertificateDB(home / "ca" / "certs.db") as other:
        other.set_status(alice.sign_serial, "superseded")
    assert lookup.snapshot_token() != first


def test_invalidate_drops_the_entries_of_a_serial(ca, responder, alice, bob):
    ra = simple_request(leaf(ca, alice.auth_serial), ca.auth_ca_cert)
    rb = simple_request(leaf(ca, bob.auth_serial), ca.auth_ca_cert)
    both = make_request([cert_id(ca.auth_ca_cert, alice.auth_serial), cert_id(ca.auth_ca_cert, bob.auth_serial)])
    for r in (ra, rb, both):
        responder.respond(r)
    assert responder.cache_len == 3
    assert responder.invalidate(alice.auth_serial) == 2
    assert responder.cache_len == 1
    assert responder.process(rb).cached
    assert not responder.process(ra).cached
    responder.status_changed(format(bob.auth_serial, "X"), "revoked")  # listener form, hex text
    assert not responder.process(rb).cached
    responder.invalidate_all()
    assert responder.cache_len == 0


def test_cache_size_bounds_and_zero_disables(ca, creds, lookup, clock, alice, bob):
    issuers = {k: (ca.ca_cert(k), c.cert, c.key) for k, c in creds.items()}
    small = OcspResponder(lookup, issuers, clock, cache_size=1)
    ra = simple_request(leaf(ca, alice.auth_serial), ca.auth_ca_cert)
    rb = simple_request(leaf(ca, bob.auth_serial), ca.auth_ca_cert)
    small.respond(ra)
    small.respond(rb)
    assert small.cache_len == 1
    assert small.process(rb).cached and not small.process(ra).cached
    off = OcspResponder(lookup, issuers, clock, cache_size=0)
    off.respond(ra)
    assert not off.process(ra).cached and off.cache_len == 0


def test_set_signer_drops_that_kinds_cache(ca, responder, creds, alice):
    ra = simple_request(leaf(ca, alice.auth_serial), ca.auth_ca_cert)
    rs = simple_request(leaf(ca, alice.sign_serial), ca.sign_ca_cert)
    responder.respond(ra)
    responder.respond(rs)
    responder.set_signer("auth", ca.auth_ca_cert, creds["auth"].cert, creds["auth"].key)
    assert not responder.process(ra).cached
    assert responder.process(rs).cached


# --------------------------------------------------------------------------- refusals


def test_unsuccessful_responses_are_minimal_and_parse():
    for status in (ResponseStatus.MALFORMED_REQUEST, ResponseStatus.UNAUTHORIZED, ResponseStatus.TRY_LATER,
                   ResponseStatus.INTERNAL_ERROR):
        parsed = ocsp.load_der_ocsp_response(unsuccessful_response(status))
        assert parsed.response_status.value == int(status)
    with pytest.raises(UsageError):
        unsuccessful_response(ResponseStatus.SUCCESSFUL)


def _valid(ca, alice) -> bytes:
    return simple_request(leaf(ca, alice.auth_serial), ca.auth_ca_cert)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: b"",
        lambda d: b"garbage",
        lambda d: b"\x30\x80" + d[2:] + b"\x00\x00",  # BER indefinite length
        lambda d: d[:-1],  # truncated
        lambda d: d + b"\x00",  # trailing byte
        lambda d: d + d,  # two requests
        lambda d: b"\x30\x03\x30\x01\x00",
        lambda d: b"\x30\x04\x30\x02\x30\x00",  # no CertID
        lambda d: bytes([0x30, 0x81, 0x05]) + b"\x30\x03\x30\x01\x00",  # non-minimal length
        lambda d: b"\x1f\x81\x00",  # high tag number
        lambda d: b"\x30\x84\xff\xff\xff\xff",  # absurd length
    ],
    ids=["empty", "garbage", "ber", "truncated", "trailing", "doubled", "junk-seq", "no-certid",
         "non-minimal", "high-tag", "huge-length"],
)
def test_malformed_requests(ca, responder, alice, mutate):
    result = responder.process(mutate(_valid(ca, alice)))
    assert result.status is ResponseStatus.MALFORMED_REQUEST, result.detail
    assert result.der == b"\x30\x03\x0a\x01\x01"


def test_unsupported_version_and_critical_extensions_are_malformed(ca, responder, alice):
    cid = cert_id(ca.auth_ca_cert, alice.auth_serial)
    v2 = asn1_ocsp.OCSPRequest({"tbs_request": {"version": 1, "request_list": [{"req_cert": cid}]}}).dump()
    assert responder.process(v2).status is ResponseStatus.MALFORMED_REQUEST
    v1_explicit = asn1_ocsp.OCSPRequest({"tbs_request": {"version": 0, "request_list": [{"req_cert": cid}]}})
    der = v1_explicit.dump(force=True)
    if b"\xa0\x03\x02\x01\x00" in der:  # asn1crypto may leave the DEFAULT out
        assert responder.process(der).status is ResponseStatus.SUCCESSFUL
    unknown_critical = {"extn_id": "1.2.3.4.5", "critical": True, "extn_value": b"\x05\x00"}
    unknown_plain = {"extn_id": "1.2.3.4.5", "critical": False, "extn_value": b"\x05\x00"}
    assert responder.process(make_request([cid], extensions=[unknown_critical])).status is \
        ResponseStatus.MALFORMED_REQUEST
    assert responder.process(make_request([cid], extensions=[unknown_plain])).status is ResponseStatus.SUCCESSFUL
    dup = make_request([cid], nonce=b"a" * 16, extensions=[{"extn_id": "nonce", "critical": False,
                                                          "extn_value": b"b" * 16}])
    assert responder.process(dup).status is ResponseStatus.MALFORMED_REQUEST
    single_crit = asn1_ocsp.OCSPRequest({"tbs_request": {"request_list": [{
        "req_cert": cid,
        "single_request_extensions": [{"extn_id": "1.2.3.4.6", "critical": True, "extn_value": b"\x05\x00"}],
    }]}}).dump()
    assert responder.process(single_crit).status is ResponseStatus.MALFORMED_REQUEST

def _short_tlv(tag: int, content: bytes) -> bytes:
    assert len(content) < 0x80
    return bytes([tag, len(content)]) + content


@pytest.mark.parametrize("case", ["explicit-v1", "critical-false", "true-as-01", "non-minimal-serial"])
def test_encodings_der_forbids_are_malformed(ca, responder, alice, case):
    """BER that DER forbids (X.690 §10-11): an encoded DEFAULT, a TRUE other than FF, an INTEGER
    with a redundant leading octet. cryptography refuses them, and so does the responder."""
    cid = cert_id(ca.auth_ca_cert, alice.auth_serial).dump()
    request_list = _short_tlv(0x30, _short_tlv(0x30, cid))
    oid = bytes.fromhex("06042a030405")
    if case == "explicit-v1":
        tbs = _short_tlv(0xA0, b"\x02\x01\x00") + request_list
    elif case in ("critical-false", "true-as-01"):
        flag = b"\x01\x01\x00" if case == "critical-false" else b"\x01\x01\x01"
        ext = _short_tlv(0x30, oid + flag + _short_tlv(0x04, b"\x05\x00"))
        tbs = request_list + _short_tlv(0xA2, _short_tlv(0x30, ext))
    else:
        serial = alice.auth_serial.to_bytes((alice.auth_serial.bit_length() + 8) // 8, "big")
        body = cid[2:]
        assert body.endswith(_short_tlv(0x02, serial))
        padded = body[: -len(serial) - 2] + _short_tlv(0x02, b"\x00" + serial)
        tbs = _short_tlv(0x30, _short_tlv(0x30, _short_tlv(0x30, padded)))
    der = _short_tlv(0x30, _short_tlv(0x30, tbs))
    assert asn1_ocsp.OCSPRequest.load(der)["tbs_request"]["request_list"][0]["req_cert"][
        "serial_number"].native == alice.auth_serial  # BER readers take it
    result = responder.process(der)
    assert result.status is ResponseStatus.MALFORMED_REQUEST, result.detail
    assert result.der == b"\x30\x03\x0a\x01\x01"



def test_signed_requests_are_accepted_without_checking_the_signature(ca, responder, alice):
    cid = cert_id(ca.auth_ca_cert, alice.auth_serial)
    req = asn1_ocsp.OCSPRequest({
        "tbs_request": {"request_list": [{"req_cert": cid}]},
        "optional_signature": {"signature_algorithm": {"algorithm": "sha256_rsa"}, "signature": b"\x00" * 8},
    }).dump()
    assert responder.process(req).status is ResponseStatus.SUCCESSFUL


def test_oversized_requests(ca, creds, lookup, clock, alice):
    issuers = {k: (ca.ca_cert(k), c.cert, c.key) for k, c in creds.items()}
    responder = OcspResponder(lookup, issuers, clock, max_certids=3)
    cid = cert_id(ca.auth_ca_cert, alice.auth_serial)
    assert responder.process(make_request([cid] * 3)).status is ResponseStatus.SUCCESSFUL
    too_many = responder.process(make_request([cid] * 4))
    assert too_many.status is ResponseStatus.MALFORMED_REQUEST and "CertIDs" in too_many.detail
    big = make_request([cid], extensions=[{"extn_id": "1.2.3.4.5", "critical": False,
                                           "extn_value": b"\x04\x83" + (MAX_REQUEST_SIZE).to_bytes(3, "big")
                                           + b"x" * MAX_REQUEST_SIZE}])
    assert len(big) > MAX_REQUEST_SIZE
    result = responder.process(big)
    assert result.status is ResponseStatus.MALFORMED_REQUEST and "limit" in result.detail


def test_other_ca_is_unauthorized(ca, responder, key_pool, tmp_path, clock, alice):
    """A CA with the very same DN but other keys (another emulator home) is not ours."""
    with TestCA.init(tmp_path / "other", clock=clock, keys={"sign": key_pool[4], "auth": key_pool[5]}) as other:
        assert other.auth_ca_cert.subject == ca.auth_ca_cert.subject
        result = responder.process(make_request([cert_id(other.auth_ca_cert, alice.auth_serial)]))
    assert result.status is ResponseStatus.UNAUTHORIZED
    assert result.der == b"\x30\x03\x0a\x01\x06"


def test_wrong_kind_mixed_cas_and_unknown_hashes_are_unauthorized(ca, responder, alice):
    auth_cid = cert_id(ca.auth_ca_cert, alice.auth_serial)
    sign_cid = cert_id(ca.sign_ca_cert, alice.sign_serial)
    assert responder.process(make_request([sign_cid]), kind="auth").status is ResponseStatus.UNAUTHORIZED
    assert responder.process(make_request([sign_cid]), kind="sign").status is ResponseStatus.SUCCESSFUL
    assert responder.process(make_request([auth_cid]), kind="nope").status is ResponseStatus.UNAUTHORIZED
    assert responder.process(make_request([auth_cid, sign_cid])).status is ResponseStatus.UNAUTHORIZED
    md5 = cert_id(ca.auth_ca_cert, alice.auth_serial, "md5")
    assert responder.process(make_request([md5])).status is ResponseStatus.UNAUTHORIZED


class _Boom:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __call__(self, serial: int):
        raise self.exc


@pytest.mark.parametrize("exc,status", [
    (sqlite3.OperationalError("database is locked"), ResponseStatus.TRY_LATER),
    (RuntimeError("bug"), ResponseStatus.INTERNAL_ERROR),
])
def test_lookup_failures_never_raise(ca, creds, clock, alice, exc, status):
    responder = OcspResponder(_Boom(exc), {k: (ca.ca_cert(k), c.cert, c.key) for k, c in creds.items()}, clock)
    result = responder.process(_valid(ca, alice))
    assert result.status is status
    assert ocsp.load_der_ocsp_response(result.der).response_status.value == int(status)


def test_constructor_checks(ca, creds, lookup, clock):
    c = creds["auth"]
    with pytest.raises(UsageError):
        OcspResponder(lookup, {}, clock)
    with pytest.raises(UsageError):
        OcspResponder(lookup, {"auth": (ca.auth_ca_cert, c.cert, creds["sign"].key)}, clock)
    with pytest.raises(UsageError):
        OcspResponder(lookup, {"auth": (ca.sign_ca_cert, c.cert, c.key)}, clock)
    with pytest.raises(UsageError):
        OcspResponder(lookup, {"auth": (ca.auth_ca_cert, c.cert, c.key)}, clock, freshness=dt.timedelta(0))


def test_respond_accepts_non_bytes_without_raising(responder):
    assert responder.respond("not bytes") == b"\x30\x03\x0a\x01\x01"  # type: ignore[arg-type]
    assert responder.respond(bytearray(b"\x30\x00")) == b"\x30\x03\x0a\x01\x01"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_requests_never_crash_nor_change_the_db(ca, responder, alice, bob, data):
    valid = make_request([cert_id(ca.auth_ca_cert, alice.auth_serial),
                          cert_id(ca.auth_ca_cert, bob.auth_serial, "sha256")], nonce=b"n" * 16)
    before = db_snapshot(ca.db.path)
    choice = data.draw(st.sampled_from(["flip", "cut", "insert", "random"]))
    der = bytearray(valid)
    if choice == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(der) - 1))
            der[i] = data.draw(st.integers(0, 255))
    elif choice == "cut":
        der = der[: data.draw(st.integers(0, len(der) - 1))]
    elif choice == "insert":
        i = data.draw(st.integers(0, len(der)))
        der[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    else:
        der = bytearray(data.draw(st.binary(max_size=300)))
    result = responder.process(bytes(der))
    parsed = ocsp.load_der_ocsp_response(result.der)
    assert parsed.response_status.value == int(result.status)
    assert result.status in (ResponseStatus.SUCCESSFUL, ResponseStatus.MALFORMED_REQUEST,
                             ResponseStatus.UNAUTHORIZED)
    if result.status is ResponseStatus.SUCCESSFUL:
        # whatever we accepted, asn1crypto reads the same CertIDs out of the request
        request = asn1_ocsp.OCSPRequest.load(bytes(der))
        assert len(request["tbs_request"]["request_list"]) == len(result.answers)
        parsed.public_bytes(DER)
        assert parsed.certificates[0].public_key().verify(
            parsed.signature, parsed.tbs_response_bytes, padding.PKCS1v15(), hashes.SHA256()) is None
    assert db_snapshot(ca.db.path) == before
