"""The validator (jpki.verify): trust stores, path and kind checks, validity, OCSP with CRL
fallback, hard and soft fail, caches, and every failure's reason code.

Revocation is served by the real revocation server (jpki.pki.server): in process through
an injected fetch that calls its ASGI app, and once under uvicorn with the default HTTP fetcher.
Forged OCSP responses are built with cryptography's OCSPResponseBuilder. Clocks are fixed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from fixed import FIXED_NOW, TEMPLATE_BASE_URL

import jpki.verify
from jpki.clock import FixedClock
from jpki.errors import UsageError
from jpki.pki import TestCA, free_port, profiles
from jpki.pki.responder import (
    build_responder_certificate,
    ensure_responder,
    load_responder,
)
from jpki.pki.server import create_app, serve_in_thread
from jpki.revocation import build_crl
from jpki.verify import (
    CrlCache,
    HttpFetcher,
    OcspCache,
    Reason,
    TrustStore,
    ValidationResult,
    Validator,
)
from jpki.verify.path import MAX_SERIAL

DER = serialization.Encoding.DER
BASE = TEMPLATE_BASE_URL  # the base URL the template CA's certificates name
UTC = dt.UTC


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def responder_keys():
    """RSA keys for the delegated OCSP responders (pre-issued so no test generates keys)."""
    return {kind: rsa.generate_private_key(65537, 2048) for kind in ("sign", "auth")}


@pytest.fixture(scope="module")
def ec_key():
    """A fast throw-away key for foreign CAs and forged responders."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def ca(home, clock, responder_keys):
    with TestCA.open(home / "ca", clock=clock) as test_ca:
        for kind, key in responder_keys.items():
            ensure_responder(test_ca, kind, key)
        yield test_ca


@pytest.fixture
def certs(ca):
    """alice's and bob's certificates by (card, kind), parsed from the CA database."""
    out = {}
    for card in ("alice", "bob"):
        for record in ca.db.list(card=card):
            out[(card, record.kind)] = x509.load_der_x509_certificate(record.der)
    return out


@pytest.fixture
def alice_auth(certs):
    return certs[("alice", "auth")]


@pytest.fixture
def alice_sign(certs):
    return certs[("alice", "sign")]


@pytest.fixture
def trust(home):
    return TrustStore.from_ca_dir(home / "ca")


class Net:
    """An injected fetch: requests go to the revocation server's ASGI app, in process.

    ``down`` holds URL fragments that fail like an unreachable host; ``replace`` maps a URL
    fragment to a function (url, body) -> bytes that answers instead of the server. Every call is
    recorded in ``calls`` as (url, body).
    """

    def __init__(self, app) -> None:
        self.app = app
        self.down: set[str] = set()
        self.replace: dict[str, Callable[[str, bytes | None], bytes]] = {}
        self.calls: list[tuple[str, bytes | None]] = []

    def __call__(self, url: str, data: bytes | None = None, content_type: str | None = None) -> bytes:
        self.calls.append((url, data))
        for fragment in self.down:
            if fragment in url:
                raise httpx.ConnectError(f"connection refused ({url})")
        for fragment, answer in self.replace.items():
            if fragment in url:
                return answer(url, data)
        return self.server(url, data, content_type)

    def server(self, url: str, data: bytes | None = None, content_type: str | None = None) -> bytes:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport) as client:
                if data is None:
                    return await client.get(url)
                return await client.post(url, content=data, headers={"Content-Type": content_type or ""})

        response = asyncio.run(go())
        if response.status_code != 200:
            raise httpx.HTTPStatusError(f"HTTP {response.status_code}", request=response.request,
                                        response=response)
        return response.content

    def count(self, fragment: str) -> int:
        return sum(fragment in url for url, _ in self.calls)


def make_app(home: Path, clock):
    return create_app(home / "ca", clock=clock)


@pytest.fixture
def app(ca, home, clock):
    application = make_app(home, clock)
    yield application
    application.state.service.close()


@pytest.fixture
def net(app):
    return Net(app)


@pytest.fixture
def validator(trust, clock, net):
    return Validator(trust, clock=clock, fetch=net)


def responder_creds(ca, kind="auth"):
    creds = load_responder(ca, kind)
    assert creds is not None
    return creds


def forge(
    request_der: bytes,
    *,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    signer_cert: x509.Certificate,
    signer_key,
    include: list[x509.Certificate] | None = None,
    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
    this_update: dt.datetime = FIXED_NOW,
    next_update: dt.datetime | None = FIXED_NOW + dt.timedelta(minutes=15),
    nonce: bytes | str | None = "echo",
    revocation_time: dt.datetime | None = None,
) -> bytes:
    """An OCSP response about ``cert`` signed by ``signer_key`` (identified by ``signer_cert``'s
    key hash); ``nonce='echo'`` copies the request's nonce."""
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=cert,
        issuer=issuer,
        algorithm=hashes.SHA1(),
        cert_status=status,
        this_update=this_update,
        next_update=next_update,
        revocation_time=revocation_time,
        revocation_reason=x509.ReasonFlags.key_compromise if revocation_time else None,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, signer_cert)
    if include:
        builder = builder.certificates(include)
    if nonce == "echo":
        request = ocsp.load_der_ocsp_request(request_der)
        nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.sign(signer_key, hashes.SHA256()).public_bytes(DER)


def resign(der: bytes, key, **changes) -> bytes:
    """``der`` with TBS fields changed (asn1crypto names) and signed again by ``key``."""
    cert = asn1_x509.Certificate.load(der)
    tbs = cert["tbs_certificate"]
    for name, value in changes.items():
        tbs[name] = value
    tbs_der = tbs.dump(force=True)
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(tbs_der, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = key.sign(tbs_der, ec.ECDSA(hashes.SHA256()))
    return asn1_x509.Certificate({
        "tbs_certificate": tbs,
        "signature_algorithm": cert["signature_algorithm"],
        "signature_value": signature,
    }).dump(force=True)


def foreign_root(key, name: str = "Foreign CA", *, not_before=FIXED_NOW - dt.timedelta(days=1),
                 not_after=FIXED_NOW + dt.timedelta(days=3650)) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def auth_leaf(ca, *, issuer_cert=None, issuer_key=None, serial=None, not_before=FIXED_NOW,
              not_after=FIXED_NOW + dt.timedelta(days=365), key=None) -> x509.Certificate:
    """A user-authentication certificate of the test CA's profile (not recorded in the DB)."""
    return profiles.build_auth_certificate(
        (key or ca.auth_ca_key).public_key(),
        issuer_cert=issuer_cert or ca.auth_ca_cert,
        issuer_key=issuer_key or ca.auth_ca_key,
        issuance_id=profiles.new_issuance_id(),
        serial=serial or profiles.new_serial(),
        not_before=not_before,
        not_after=not_after,
        base_url=BASE,
    )


# --------------------------------------------------------------------------- good certificates


def test_good_auth_certificate(validator, alice_auth, ca, net):
    result = validator.validate(alice_auth.public_bytes(DER), kind="auth")
    assert result.ok, result.summary()
    assert result.reason is None and result.message == "valid"
    assert result.kind == "auth" and result.detected_kind == "auth"
    assert result.serial == alice_auth.serial_number
    assert result.serial_hex == format(alice_auth.serial_number, "X")
    assert result.subject == alice_auth.subject.rfc4514_string()
    assert result.issuer == result.anchor == ca.auth_ca_cert.subject.rfc4514_string()
    assert result.checked_at == FIXED_NOW
    assert result.warnings == ()
    rev = result.revocation
    assert rev is not None
    assert (rev.method, rev.status, rev.cached) == ("ocsp", "good", False)
    assert rev.source == f"{BASE}/ocsp/auth"
    assert rev.responder == responder_creds(ca).cert.subject.rfc4514_string()  # the delegate
    assert rev.this_update == rev.produced_at == FIXED_NOW
    assert rev.next_update == FIXED_NOW + dt.timedelta(minutes=15)
    assert net.count("/ocsp/") == 1 and net.count("/crl/") == 0
    assert result.summary().startswith("OK: user-authentication certificate CN=")
    assert "OCSP says good" in result.summary()


def test_good_sign_certificate_and_every_input_form(validator, alice_sign):
    for form in (alice_sign, alice_sign.public_bytes(DER),
                 alice_sign.public_bytes(serialization.Encoding.PEM),
                 bytearray(alice_sign.public_bytes(DER)), memoryview(alice_sign.public_bytes(DER))):
        result = validator.validate(form, kind="sign")
        assert result.ok, result.summary()
        assert result.detected_kind == "sign"
        assert result.fingerprint == alice_sign.fingerprint(hashes.SHA256()).hex()


def test_the_ocsp_request_carries_a_fresh_nonce_unless_disabled(validator, alice_auth, net, clock):
    validator.validate(alice_auth, kind="auth")
    validator.invalidate(alice_auth)
    validator.validate(alice_auth, kind="auth")
    nonces = []
    for _url, body in net.calls:
        request = ocsp.load_der_ocsp_request(body)
        assert request.serial_number == alice_auth.serial_number
        assert isinstance(request.hash_algorithm, hashes.SHA1)
        nonces.append(request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce)
    assert len(nonces) == 2 and nonces[0] != nonces[1] and len(nonces[0]) == 32
    validator.invalidate()
    assert validator.validate(alice_auth, kind="auth", nonce=False).ok
    request = ocsp.load_der_ocsp_request(net.calls[-1][1])
    assert len(request.extensions) == 0


def test_result_is_frozen_and_serialises(validator, alice_auth):
    result = validator.validate(alice_auth, kind="auth")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.ok = False  # type: ignore[misc]
    doc = result.to_json()
    assert doc["ok"] is True and doc["reason"] is None
    assert doc["serial"] == format(alice_auth.serial_number, "X")
    assert doc["revocation"]["method"] == "ocsp" and doc["revocation"]["status"] == "good"
    assert doc["checked_at"] == "2026-11-27T03:00:00+00:00"
    assert set(doc) == {f.name for f in dataclasses.fields(ValidationResult)}
    assert json.loads(json.dumps(doc)) == doc  # JSON-ready as it is


def test_every_reason_code_is_documented():
    doc = jpki.verify.__doc__
    missing = [r.value for r in Reason if f"``{r.value}``" not in doc]
    assert not missing, f"reason codes not documented in jpki.verify: {missing}"
    assert Reason.REVOKED == "revoked" and json.dumps(Reason.EXPIRED) == '"expired"'


# --------------------------------------------------------------------------- kind


def test_signing_certificate_is_not_an_auth_certificate(validator, alice_sign, net):
    result = validator.validate(alice_sign, kind="auth")
    assert not result.ok and result.reason == Reason.WRONG_KIND
    assert result.detected_kind == "sign" and result.kind == "auth"
    assert "a signing certificate, not a user-authentication certificate" in result.message
    assert result.revocation is None and net.calls == []  # nothing fetched for a wrong kind
    assert result.summary().startswith("FAILED (wrong-kind): user-authentication certificate")


def test_auth_certificate_is_not_a_signing_certificate(validator, alice_auth):
    result = validator.validate(alice_auth, kind="sign")
    assert (result.ok, result.reason, result.detected_kind) == (False, Reason.WRONG_KIND, "auth")


def test_ca_and_responder_certificates_are_not_card_certificates(validator, ca):
    for cert in (ca.auth_ca_cert, responder_creds(ca).cert):
        for kind in ("auth", "sign"):
            result = validator.validate(cert, kind=kind)
            assert result.reason == Reason.WRONG_KIND, result.summary()
    assert validator.validate(ca.auth_ca_cert, kind="auth").detected_kind == "ca"
    assert validator.validate(responder_creds(ca).cert, kind="auth").detected_kind is None


# --------------------------------------------------------------------------- revocation


def test_revoked_certificate_after_cache_invalidation(validator, ca, alice_auth, app):
    assert validator.validate(alice_auth, kind="auth").ok
    revoked_at = FIXED_NOW - dt.timedelta(minutes=1)
    ca.revoke(alice_auth.serial_number, x509.ReasonFlags.key_compromise, revoked_at=revoked_at)
    app.state.service.responder.invalidate(alice_auth.serial_number)
    # The verified good answer is reused while fresh …
    cached = validator.validate(alice_auth, kind="auth")
    assert cached.ok and cached.revocation.cached
    # … until the validator is told.
    validator.invalidate(alice_auth.serial_number)
    result = validator.validate(alice_auth, kind="auth")
    assert not result.ok and result.reason == Reason.REVOKED
    assert result.revocation_reason == "keyCompromise"
    assert result.revocation.status == "revoked" and result.revocation.revoked_at == revoked_at
    assert "revoked at 2026-11-27T02:59:00+00:00 (reason keyCompromise; OCSP)" in result.message
    assert result.summary().startswith("FAILED (revoked)")
    # The revoked answer is cached too.
    again = validator.validate(alice_auth, kind="auth")
    assert again.reason == Reason.REVOKED and again.revocation.cached


def test_revoked_on_the_crl(trust, clock, net, ca, alice_sign):
    validator = Validator(trust, clock=clock, fetch=net, revocation="crl")
    good = validator.validate(alice_sign, kind="sign")
    assert good.ok and good.revocation.method == "crl" and good.revocation.crl_number == 1
    ca.revoke(alice_sign.serial_number, "affiliationChanged")
    assert validator.validate(alice_sign, kind="sign").ok  # the cached CRL holds until nextUpdate
    validator.invalidate(alice_sign)  # per certificate: OCSP answers only
    assert validator.validate(alice_sign, kind="sign").ok
    validator.invalidate()  # everything, CRLs included
    result = validator.validate(alice_sign, kind="sign")
    assert result.reason == Reason.REVOKED and result.revocation_reason == "affiliationChanged"
    assert result.revocation.method == "crl" and result.revocation.crl_number == 2
    assert net.count("/ocsp/") == 0 and net.count("/crl/sign.crl") == 2


def test_certificate_on_hold_counts_as_revoked(validator, ca, alice_auth):
    ca.revoke(alice_auth.serial_number, "certificateHold")
    result = validator.validate(alice_auth, kind="auth")
    assert result.reason == Reason.REVOKED and result.revocation_reason == "certificateHold"


def test_revoked_after_the_validation_time_was_good_then(validator, ca, alice_auth, clock):
    clock.advance(hours=2)
    ca.revoke(alice_auth.serial_number, "keyCompromise", revoked_at=FIXED_NOW + dt.timedelta(hours=1))
    before = validator.validate(alice_auth, kind="auth", at=FIXED_NOW + dt.timedelta(minutes=30))
    assert before.ok and before.revocation.status == "revoked"
    assert [w.split(":")[0] for w in before.warnings] == ["revoked-later"]
    after = validator.validate(alice_auth, kind="auth")
    assert after.reason == Reason.REVOKED


def test_ocsp_unknown_is_final_even_with_a_crl(validator, ca, net):
    stray = auth_leaf(ca)  # signed by the CA but never recorded: the responder does not know it
    result = validator.validate(stray, kind="auth")
    assert result.reason == Reason.OCSP_UNKNOWN and result.revocation.status == "unknown"
    assert net.count("/crl/") == 0


# --------------------------------------------------------------------------- validity


def test_expired_and_not_yet_valid(validator, alice_auth, net):
    end, start = alice_auth.not_valid_after_utc, alice_auth.not_valid_before_utc
    result = validator.validate(alice_auth, kind="auth", at=end + dt.timedelta(seconds=1))
    assert result.reason == Reason.EXPIRED and end.isoformat() in result.message
    result = validator.validate(alice_auth, kind="auth", at=start - dt.timedelta(seconds=1))
    assert result.reason == Reason.NOT_YET_VALID and result.not_before == start
    assert net.calls == []
    # the edges themselves are inside
    assert validator.validate(alice_auth, kind="auth", at=start, nonce=False).ok


def test_times_in_other_zones_are_the_same_instant(validator, alice_auth):
    jst = dt.timezone(dt.timedelta(hours=9))
    end = alice_auth.not_valid_after_utc.astimezone(jst)
    assert validator.validate(alice_auth, kind="auth", at=end + dt.timedelta(seconds=1)).reason == Reason.EXPIRED


def test_an_expired_root_fails_even_with_a_valid_leaf(ec_key, clock):
    root = foreign_root(ec_key, "Short-lived root", not_after=FIXED_NOW + dt.timedelta(days=10))
    root_kind = TrustStore.from_certificates([root], kind="auth")
    # the test CA profiles want RSA leaf keys: this leaf is built by hand, with an EC key
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]))
        .issuer_name(root.subject).public_key(ec_key.public_key()).serial_number(5)
        .not_valid_before(FIXED_NOW - dt.timedelta(days=1)).not_valid_after(FIXED_NOW + dt.timedelta(days=100))
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.CertificatePolicies([x509.PolicyInformation(profiles.AUTH_POLICY, None)]),
                       critical=False)
        .sign(ec_key, hashes.SHA256())
    )
    validator = Validator(root_kind, clock=clock, revocation="none")
    assert validator.validate(leaf, kind="auth").ok
    late = validator.validate(leaf, kind="auth", at=FIXED_NOW + dt.timedelta(days=20))
    assert late.reason == Reason.EXPIRED and "the root" in late.message


# --------------------------------------------------------------------------- trust and signatures


def test_untrusted_issuer_of_another_name(validator, ca, ec_key):
    root = foreign_root(ec_key)
    leaf = auth_leaf(ca, issuer_cert=root, issuer_key=ec_key)
    result = validator.validate(leaf, kind="auth")
    assert result.reason == Reason.UNTRUSTED_ISSUER and "is not a trusted user-authentication root" in result.message


def test_another_ca_with_the_same_name_is_untrusted(validator, ca, tmp_path, clock, key_pool):
    """Like J-LIS root generations: same DN, other key. The AKI tells them apart."""
    other = TestCA.init(tmp_path / "other", clock=clock, keys={"sign": key_pool[1], "auth": key_pool[0]})
    try:
        leaf = auth_leaf(other)
        assert leaf.issuer == other.auth_ca_cert.subject
        result = validator.validate(leaf, kind="auth")
        assert result.reason == Reason.UNTRUSTED_ISSUER and "key identifier" in result.message
        # trusting both generations, the key identifier picks the right one
        both = validator.trust + TrustStore.from_ca_dir(tmp_path / "other")
        assert len(both.candidates("auth", leaf.issuer.public_bytes())) == 2
        generations = Validator(both, clock=clock, revocation="none")
        assert generations.validate(leaf, kind="auth").ok
        assert generations.validate(auth_leaf(ca), kind="auth").ok
    finally:
        other.close()


def test_the_trust_store_of_a_home(home, tmp_path, ca):
    """TrustStore.for_home: the J-LIS roots, the home's test CA when there is one, extra PEMs."""
    jlis = {a.fingerprint for a in TrustStore.jlis()}
    test_ca = {a.fingerprint for a in TrustStore.from_ca_dir(home / "ca")}
    assert {a.fingerprint for a in TrustStore.for_home(tmp_path / "no-ca-here")} == jlis
    assert {a.fingerprint for a in TrustStore.for_home(home)} == jlis | test_ca
    extra = tmp_path / "roots"
    extra.mkdir()
    (extra / "auth_extra.pem").write_bytes((home / "ca" / "auth_ca.pem").read_bytes())
    assert {a.fingerprint for a in TrustStore.for_home(tmp_path / "none", extra_pem=[extra])} == (
        jlis | {a.fingerprint for a in TrustStore.from_ca_dir(home / "ca").anchors("auth")})
    (home / "ca" / "sign_ca.pem").unlink()
    with pytest.raises(UsageError, match=r"sign_ca\.pem"):
        TrustStore.for_home(home)  # a damaged test CA is an error, not a smaller store


def test_same_name_without_aki_is_a_bad_signature(validator, ca, key_pool):
    leaf = auth_leaf(ca)
    der = leaf.public_bytes(DER)
    parsed = asn1_x509.Certificate.load(der)
    extensions = [e for e in parsed["tbs_certificate"]["extensions"]
                  if e["extn_id"].native != "authority_key_identifier"]
    forged = resign(der, key_pool[0], extensions=extensions)  # the sign root's key, the auth root's name
    result = validator.validate(forged, kind="auth")
    assert result.reason == Reason.BAD_SIGNATURE


def test_tampered_certificates(validator, alice_auth):
    der = bytearray(alice_auth.public_bytes(DER))
    sig_flipped = bytes(der[:-1]) + bytes([der[-1] ^ 0x01])
    assert validator.validate(sig_flipped, kind="auth").reason == Reason.BAD_SIGNATURE
    cn = alice_auth.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value.encode()
    at = bytes(der).index(cn)
    der[at + len(cn) - 1] ^= 0x01  # one hex digit of the CN becomes another character
    result = validator.validate(bytes(der), kind="auth")
    assert result.reason == Reason.BAD_SIGNATURE and result.subject != alice_auth.subject.rfc4514_string()


@pytest.mark.parametrize("data", [b"", b"\x30", b"not a certificate", b"\x30\x82\x01\x00" + b"\x00" * 10,
                                  b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_malformed_certificates(validator, data):
    result = validator.validate(data, kind="auth")
    assert (result.ok, result.reason) == (False, Reason.MALFORMED_CERTIFICATE)
    assert result.subject is None and result.serial is None
    assert result.summary().startswith("FAILED (malformed-certificate): user-authentication certificate at")


def test_truncated_and_padded_der(validator, alice_auth):
    der = alice_auth.public_bytes(DER)
    assert validator.validate(der[:-10], kind="auth").reason == Reason.MALFORMED_CERTIFICATE
    assert validator.validate(der + b"\x00", kind="auth").reason == Reason.MALFORMED_CERTIFICATE


def test_unknown_critical_extension(validator, ca):
    leaf = auth_leaf(ca)
    parsed = asn1_x509.Certificate.load(leaf.public_bytes(DER))
    extensions = [*parsed["tbs_certificate"]["extensions"],
                  {"extn_id": "1.2.3.4.5", "critical": True, "extn_value": b"\x05\x00"}]
    result = validator.validate(resign(leaf.public_bytes(DER), ca.auth_ca_key, extensions=extensions), kind="auth")
    assert result.reason == Reason.UNSUPPORTED_CRITICAL_EXTENSION and "1.2.3.4.5" in result.message


def test_the_library_second_opinion_rejects_what_it_must(validator, ca):
    """A critical certificatePolicies passes jpki's own checks; cryptography's verifier refuses
    it (documented limit), and the validator reports path-rejected, never ok."""
    leaf = auth_leaf(ca)
    parsed = asn1_x509.Certificate.load(leaf.public_bytes(DER))
    extensions = []
    for ext in parsed["tbs_certificate"]["extensions"]:
        if ext["extn_id"].native == "certificate_policies":
            ext = {"extn_id": "certificate_policies", "critical": True, "extn_value": ext["extn_value"].parsed}
        extensions.append(ext)
    result = validator.validate(resign(leaf.public_bytes(DER), ca.auth_ca_key, extensions=extensions), kind="auth")
    assert result.reason == Reason.PATH_REJECTED and "RFC 5280 path validation" in result.message


# --------------------------------------------------------------------------- serial numbers


@pytest.mark.parametrize("serial", [1, 0x80, MAX_SERIAL - 1])
def test_serial_edges_that_are_valid(validator, ca, app, serial):
    leaf = auth_leaf(ca, serial=serial)
    assert validator.validate(leaf, kind="auth").reason == Reason.OCSP_UNKNOWN  # not in the DB
    ca.db.record(leaf, "auth", "edge-card", issued_at=FIXED_NOW)
    validator.invalidate(serial)
    assert validator.validate(leaf, kind="auth").ok
    ca.revoke(serial, "keyCompromise")
    validator.invalidate(serial)
    result = validator.validate(leaf, kind="auth")
    assert result.reason == Reason.REVOKED and result.serial == serial
    crl_only = Validator(validator.trust, clock=validator.clock, fetch=validator.fetch, revocation="crl")
    assert crl_only.validate(leaf, kind="auth").reason == Reason.REVOKED


@pytest.mark.parametrize("serial", [0, -1, MAX_SERIAL, 1 << 168])
def test_serials_outside_rfc5280_are_malformed(validator, ca, alice_auth, serial):
    der = resign(alice_auth.public_bytes(DER), ca.auth_ca_key, serial_number=serial)
    with pytest.warns(Warning) if serial <= 0 else _no_warning():
        result = validator.validate(der, kind="auth")
    assert result.reason == Reason.MALFORMED_CERTIFICATE and "20 octets" in result.message


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------- OCSP responses


def _crl_down(net):
    net.down.add("/crl/")


def test_ocsp_signed_by_a_card_key_is_unauthorised(validator, net, ca, certs, key_pool, alice_auth):
    bob_auth, bob_key = certs[("bob", "auth")], key_pool[4]  # issued by the auth root, no OCSPSigning
    assert bob_auth.public_key().public_numbers() == bob_key.public_key().public_numbers()
    net.replace["/ocsp/"] = lambda url, body: forge(
        body, cert=alice_auth, issuer=ca.auth_ca_cert, signer_cert=bob_auth, signer_key=bob_key, include=[bob_auth])
    _crl_down(net)
    result = validator.validate(alice_auth, kind="auth")
    assert result.reason == Reason.OCSP_UNAUTHORISED_RESPONDER
    assert "id-kp-OCSPSigning" in result.message
    assert f"(and CRL {BASE}/crl/auth.crl: ConnectError" in result.message  # the fallback was tried


def test_ocsp_unauthorised_responders(validator, net, ca, alice_auth, ec_key, clock):
    foreign = foreign_root(ec_key)
    # a responder certificate with OCSPSigning, issued by another CA
    stranger = build_responder_certificate(
        "auth", responder_creds(ca).key.public_key(), issuer_cert=foreign, issuer_key=ec_key,
        serial=77, not_before=FIXED_NOW - dt.timedelta(days=1), not_after=FIXED_NOW + dt.timedelta(days=1))
    # the real delegate's key, but a responder certificate of the auth root that expired
    creds = responder_creds(ca)
    expired = build_responder_certificate(
        "auth", creds.key.public_key(), issuer_cert=ca.auth_ca_cert, issuer_key=ca.auth_ca_key,
        serial=78, not_before=FIXED_NOW - dt.timedelta(days=9), not_after=FIXED_NOW - dt.timedelta(days=2))
    _crl_down(net)
    cases = [
        ({"signer_cert": stranger, "signer_key": creds.key, "include": [stranger]}, "not issued by"),
        ({"signer_cert": foreign, "signer_key": ec_key, "include": None}, "neither the issuer nor certified"),
        ({"signer_cert": expired, "signer_key": creds.key, "include": [expired]}, "not valid at producedAt"),
    ]
    for kwargs, words in cases:
        net.replace["/ocsp/"] = lambda url, body, kw=kwargs: forge(body, cert=alice_auth, issuer=ca.auth_ca_cert, **kw)
        validator.invalidate()
        result = validator.validate(alice_auth, kind="auth")
        assert result.reason == Reason.OCSP_UNAUTHORISED_RESPONDER, result.message
        assert words in result.message


def test_ocsp_signed_by_the_root_itself_is_authorised(validator, net, ca, alice_auth):
    net.replace["/ocsp/"] = lambda url, body: forge(
        body, cert=alice_auth, issuer=ca.auth_ca_cert, signer_cert=ca.auth_ca_cert, signer_key=ca.auth_ca_key)
    result = validator.validate(alice_auth, kind="auth")
    assert result.ok and result.revocation.responder == ca.auth_ca_cert.subject.rfc4514_string()


def test_unauthorised_ocsp_falls_back_to_a_good_crl_with_a_warning(validator, net, ca, certs, key_pool, alice_auth):
    bob_auth = certs[("bob", "auth")]
    net.replace["/ocsp/"] = lambda url, body: forge(
        body, cert=alice_auth, issuer=ca.auth_ca_cert, signer_cert=bob_auth, signer_key=key_pool[4], include=[bob_auth])
    result = validator.validate(alice_auth, kind="auth")
    assert result.ok and result.revocation.method == "crl"
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("ocsp-fallback: OCSP gave no usable answer (ocsp-unauthorised-responder")


def test_ocsp_bad_signature(validator, net, alice_auth):
    def flipped(url, body):
        good = net.server(url, body, "application/ocsp-request")
        signature = ocsp.load_der_ocsp_response(good).signature
        at = good.index(signature) + len(signature) - 1  # the response's signature, not the certificate's
        return good[:at] + bytes([good[at] ^ 0x01]) + good[at + 1:]

    net.replace["/ocsp/"] = flipped
    _crl_down(net)
    result = validator.validate(alice_auth, kind="auth")
    assert result.reason == Reason.OCSP_BAD_SIGNATURE


def test_ecdsa_delegated_responder_is_verified(ca, home, clock, trust, alice_auth, certs, ec_key):
    """A server run with responder_key='ec': its ecdsa-with-SHA256 responses, signed by a P-256
    delegate the RSA root certified, verify; good, then revoked; a flipped bit or an EC
    delegate of another CA is refused."""
    application = create_app(home / "ca", clock=clock, responder_key="ec")
    try:
        net = Net(application)
        validator = Validator(trust, clock=clock, fetch=net)
        delegate = responder_creds(ca).cert
        assert isinstance(delegate.public_key(), ec.EllipticCurvePublicKey)
        assert isinstance(delegate.public_key().curve, ec.SECP256R1)
        response = ocsp.load_der_ocsp_response(
            net.server(f"{BASE}/ocsp/auth", ocsp.OCSPRequestBuilder().add_certificate(
                alice_auth, ca.auth_ca_cert, hashes.SHA1()).build().public_bytes(DER),
                "application/ocsp-request"))
        assert response.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
        assert response.certificates == [delegate]

        result = validator.validate(alice_auth, kind="auth")
        assert result.ok, result.summary()
        assert (result.revocation.method, result.revocation.status) == ("ocsp", "good")
        assert result.revocation.responder == delegate.subject.rfc4514_string()
        assert result.warnings == ()
        bob_auth = certs[("bob", "auth")]
        ca.revoke(bob_auth.serial_number, x509.ReasonFlags.key_compromise,
                  revoked_at=FIXED_NOW - dt.timedelta(minutes=1))
        revoked = validator.validate(bob_auth, kind="auth")
        assert revoked.reason == Reason.REVOKED and revoked.revocation.method == "ocsp"
        assert revoked.revocation_reason == "keyCompromise"

        _crl_down(net)

        def flipped(url, body):
            good = net.server(url, body, "application/ocsp-request")
            signature = ocsp.load_der_ocsp_response(good).signature
            at = good.index(signature) + len(signature) - 2  # inside the ECDSA signature's s
            return good[:at] + bytes([good[at] ^ 0x01]) + good[at + 1:]

        net.replace["/ocsp/"] = flipped
        validator.invalidate()
        assert validator.validate(alice_auth, kind="auth").reason == Reason.OCSP_BAD_SIGNATURE

        # a P-256 delegate with OCSPSigning, but certified by another CA
        foreign = foreign_root(ec_key)
        stranger = build_responder_certificate(
            "auth", ec_key.public_key(), issuer_cert=foreign, issuer_key=ec_key, serial=79,
            not_before=FIXED_NOW - dt.timedelta(days=1), not_after=FIXED_NOW + dt.timedelta(days=1))
        net.replace["/ocsp/"] = lambda url, body: forge(
            body, cert=alice_auth, issuer=ca.auth_ca_cert, signer_cert=stranger, signer_key=ec_key,
            include=[stranger])
        validator.invalidate()
        refused = validator.validate(alice_auth, kind="auth")
        assert refused.reason == Reason.OCSP_UNAUTHORISED_RESPONDER and "not issued by" in refused.message
    finally:
        application.state.service.close()


def test_ocsp_signature_algorithm_must_fit_the_responder_key(ca, home, clock, trust, alice_auth):
    """An ECDSA signature presented as sha256WithRSAEncryption (or the reverse) is refused even
    though the key would verify it: the signatureAlgorithm is bound to the key type."""
    from asn1crypto import ocsp as asn1_ocsp

    def relabel(der: bytes, algorithm: str) -> bytes:
        response = asn1_ocsp.OCSPResponse.load(der)
        basic = response["response_bytes"]["response"].parsed
        basic["signature_algorithm"] = {"algorithm": algorithm}
        response["response_bytes"]["response"] = basic
        return response.dump(force=True)

    for key_type, wrong in (("ec", "sha256_rsa"), ("rsa", "sha256_ecdsa")):
        application = create_app(home / "ca", clock=clock, responder_key=key_type)
        try:
            net = Net(application)
            validator = Validator(trust, clock=clock, fetch=net)
            assert validator.validate(alice_auth, kind="auth").ok
            net.replace["/ocsp/"] = lambda url, body, w=wrong, n=net: relabel(
                n.server(url, body, "application/ocsp-request"), w)
            _crl_down(net)
            validator.invalidate()
            result = validator.validate(alice_auth, kind="auth")
            assert result.reason == Reason.OCSP_BAD_SIGNATURE, result.message
            assert "does not fit" in result.message
        finally:
            application.state.service.close()


def test_ocsp_nonce_must_come_back(validator, net, ca, alice_auth):
    sign_as_root = {"cert": alice_auth, "issuer": ca.auth_ca_cert, "signer_cert": ca.auth_ca_cert,
                        "signer_key": ca.auth_ca_key}
    _crl_down(net)
    net.replace["/ocsp/"] = lambda url, body: forge(body, nonce=b"\x42" * 32, **sign_as_root)
    result = validator.validate(alice_auth, kind="auth")
    assert result.reason == Reason.OCSP_NONCE_MISMATCH and "another nonce" in result.message
    net.replace["/ocsp/"] = lambda url, body: forge(body, nonce=None, **sign_as_root)
    result = validator.validate(alice_auth, kind="auth")
    assert result.reason == Reason.OCSP_NONCE_MISMATCH and "does not echo" in result.message
    # without a nonce in the request, none is expected
    assert validator.validate(alice_auth, kind="auth", nonce=False).ok


def test_ocsp_response_about_another_certificate(validator, net, ca, certs, alice_auth):
    bob_auth = certs[("bob", "auth")]
    net.replace["/ocsp/"] = lambda url, body: forge(
        body, cert=bob_auth, issuer=ca.auth_ca_cert, signer_cert=ca.auth_ca_cert, signer_key=ca.auth_ca_key)
    _crl_down(net)
    assert validator.validate(alice_auth, kind="auth").reason == Reason.OCSP_CERTID_MISMATCH


def test_stale_ocsp_response_from_a_server_running_late(trust, net, alice_auth):
    """The server's clock is an hour behind the validator's: its nextUpdate (+15 min) has passed."""
    ahead = FixedClock(FIXED_NOW + dt.timedelta(hours=1))
    _crl_down(net)
    result = Validator(trust, clock=ahead, fetch=net).validate(alice_auth, kind="auth")
    assert result.reason == Reason.OCSP_STALE and "nextUpdate" in result.message


def test_ocsp_times_and_the_tolerance(validator, net, ca, alice_auth, clock):
    sign_as_root = {"cert": alice_auth, "issuer": ca.auth_ca_cert, "signer_cert": ca.auth_ca_cert,
                        "signer_key": ca.auth_ca_key}
    _crl_down(net)
    cases = [
        # (thisUpdate, nextUpdate, expected)
        (FIXED_NOW - dt.timedelta(minutes=30), FIXED_NOW - dt.timedelta(minutes=3), None),  # within 5 min
        (FIXED_NOW - dt.timedelta(minutes=30), FIXED_NOW - dt.timedelta(minutes=6), Reason.OCSP_STALE),
        (FIXED_NOW + dt.timedelta(minutes=4), FIXED_NOW + dt.timedelta(minutes=20), None),
        (FIXED_NOW + dt.timedelta(minutes=6), FIXED_NOW + dt.timedelta(minutes=20), Reason.OCSP_NOT_YET_VALID),
        (FIXED_NOW - dt.timedelta(minutes=4), None, None),  # no nextUpdate: good for the tolerance
        (FIXED_NOW - dt.timedelta(minutes=6), None, Reason.OCSP_STALE),
    ]
    for this_update, next_update, expected in cases:
        net.replace["/ocsp/"] = lambda url, body, t=this_update, n=next_update: forge(
            body, this_update=t, next_update=n, **sign_as_root)
        validator.invalidate()
        result = validator.validate(alice_auth, kind="auth")
        assert result.reason == expected, (this_update, next_update, result.message)
    strict = Validator(validator.trust, clock=clock, fetch=net, ocsp_freshness_tolerance=dt.timedelta(0))
    net.replace["/ocsp/"] = lambda url, body: forge(
        body, this_update=FIXED_NOW - dt.timedelta(minutes=30), next_update=FIXED_NOW - dt.timedelta(seconds=1),
        **sign_as_root)
    assert strict.validate(alice_auth, kind="auth").reason == Reason.OCSP_STALE


@pytest.mark.parametrize("body", [b"", b"garbage", b"\x30\x03\x0a\x01", b"<html>502 Bad Gateway</html>",
                                  b"\x30\x82\xff\xff" + b"\x00" * 20])
def test_garbled_ocsp_bytes(validator, net, alice_auth, body):
    net.replace["/ocsp/"] = lambda url, data: body
    _crl_down(net)
    result = validator.validate(alice_auth, kind="auth")
    assert result.reason == Reason.OCSP_MALFORMED, result.message


def test_truncated_ocsp_response(validator, net, alice_auth):
    net.replace["/ocsp/"] = lambda url, body: net.server(url, body, "application/ocsp-request")[:-40]
    _crl_down(net)
    assert validator.validate(alice_auth, kind="auth").reason == Reason.OCSP_MALFORMED


@pytest.mark.parametrize("status", [b"\x30\x03\x0a\x01\x01", b"\x30\x03\x0a\x01\x03", b"\x30\x03\x0a\x01\x06"])
def test_unsigned_ocsp_errors_count_as_unavailable(validator, net, alice_auth, status):
    net.replace["/ocsp/"] = lambda url, data: status  # malformedRequest, tryLater, unauthorized
    result = validator.validate(alice_auth, kind="auth")
    assert result.ok and result.revocation.method == "crl"
    _crl_down(net)
    validator.clear_caches()
    result = validator.validate(alice_auth, kind="auth")
    assert result.reason == Reason.REVOCATION_UNAVAILABLE and "the OCSP responder answered" in result.message


# --------------------------------------------------------------------------- fallback, hard and soft fail


def test_ocsp_unreachable_falls_back_to_the_crl(validator, net, alice_auth, clock):
    net.down.add("/ocsp/")
    result = validator.validate(alice_auth, kind="auth")
    assert result.ok and result.revocation.method == "crl" and result.revocation.status == "good"
    assert result.revocation.source == f"{BASE}/crl/auth.crl"
    assert result.warnings[0].startswith("ocsp-fallback: OCSP gave no usable answer (revocation-unavailable")
    # the dead responder is left alone for a minute: the cached CRL answers
    again = validator.validate(alice_auth, kind="auth")
    assert again.ok and again.revocation.cached and "not asked again" in again.warnings[0]
    assert net.count("/ocsp/") == 1 and net.count("/crl/") == 1
    clock.advance(seconds=61)
    net.down.clear()
    back = validator.validate(alice_auth, kind="auth")
    assert back.ok and back.revocation.method == "ocsp" and back.warnings == ()


def test_both_unreachable_hard_fails_by_default(validator, net, alice_auth):
    net.down.update({"/ocsp/", "/crl/"})
    result = validator.validate(alice_auth, kind="auth")
    assert not result.ok and result.reason == Reason.REVOCATION_UNAVAILABLE
    assert f"OCSP {BASE}/ocsp/auth: ConnectError" in result.message
    assert f"CRL {BASE}/crl/auth.crl: ConnectError" in result.message
    assert result.revocation is None


def test_soft_fail_accepts_unreachable_sources_with_a_warning(trust, clock, net, alice_auth):
    net.down.update({"/ocsp/", "/crl/"})
    validator = Validator(trust, clock=clock, fetch=net, soft_fail=True)
    result = validator.validate(alice_auth, kind="auth")
    assert result.ok and result.revocation.status == "unavailable"
    assert result.warnings[-1].startswith("soft-fail: revocation status unavailable")
    assert "soft-fail" in result.summary()


def test_soft_fail_never_excuses_a_bad_answer(trust, clock, net, alice_auth):
    net.replace["/ocsp/"] = lambda url, data: b"garbage"
    net.down.add("/crl/")
    validator = Validator(trust, clock=clock, fetch=net, soft_fail=True)
    assert validator.validate(alice_auth, kind="auth").reason == Reason.OCSP_MALFORMED


def test_revocation_none_warns(trust, clock, net, alice_auth):
    validator = Validator(trust, clock=clock, fetch=net, revocation="none")
    result = validator.validate(alice_auth, kind="auth")
    assert result.ok and result.revocation.method == "none" and result.revocation.status == "not-checked"
    assert result.warnings[0].startswith("revocation-not-checked")
    assert "revocation not checked" in result.summary() and net.calls == []


def test_no_revocation_urls_means_unavailable(ca, trust, clock, net):
    """Real J-LIS certificates name neither an OCSP URL nor an HTTP CRL (DirName only)."""
    leaf = auth_leaf(ca)
    parsed = asn1_x509.Certificate.load(leaf.public_bytes(DER))
    keep = [e for e in parsed["tbs_certificate"]["extensions"]
            if e["extn_id"].native not in ("authority_information_access", "crl_distribution_points")]
    bare = resign(leaf.public_bytes(DER), ca.auth_ca_key, extensions=keep)
    result = Validator(trust, clock=clock, fetch=net).validate(bare, kind="auth")
    assert result.reason == Reason.REVOCATION_UNAVAILABLE
    assert "no http(s) OCSP responder" in result.message and "no http(s) CRL" in result.message
    assert net.calls == []
    assert Validator(trust, clock=clock, fetch=net, soft_fail=True).validate(bare, kind="auth").ok


# --------------------------------------------------------------------------- max age, revoked wins


def test_max_age_zero_refetches_the_crl_while_ocsp_is_down(trust, clock, net, ca, alice_auth):
    """A lost card while its OCSP responder is down: the CRL is the only source, and a max age
    of zero must not let a cached CRL (good until its nextUpdate, a day) answer."""
    validator = Validator(trust, clock=clock, fetch=net, revocation_max_age=dt.timedelta(0))
    net.down.add("/ocsp/")
    first = validator.validate(alice_auth, kind="auth")
    assert first.ok and first.revocation.method == "crl"
    ca.revoke(alice_auth.serial_number, "keyCompromise")
    result = validator.validate(alice_auth, kind="auth")
    assert result.reason == Reason.REVOKED and result.revocation_reason == "keyCompromise"
    assert result.revocation.method == "crl" and not result.revocation.cached
    assert net.count("/crl/") == 2


def test_a_call_may_ask_for_a_stricter_max_age_not_a_looser_one(trust, clock, net, ca, alice_auth):
    validator = Validator(trust, clock=clock, fetch=net, revocation_max_age=dt.timedelta(minutes=5))
    net.down.add("/ocsp/")
    assert validator.validate(alice_auth, kind="auth").ok
    ca.revoke(alice_auth.serial_number, "keyCompromise")
    clock.advance(minutes=1)
    within = validator.validate(alice_auth, kind="auth")
    assert within.ok and within.revocation.cached  # the validator's bound (5 minutes) allows it
    stricter = validator.validate(alice_auth, kind="auth", revocation_max_age=dt.timedelta(seconds=30))
    assert stricter.reason == Reason.REVOKED and not stricter.revocation.cached
    never = Validator(trust, clock=clock, fetch=net, revocation_max_age=dt.timedelta(0))
    for _ in range(2):
        looser = never.validate(alice_auth, kind="auth", revocation_max_age=dt.timedelta(hours=1))
        assert looser.reason == Reason.REVOKED and not looser.revocation.cached
    assert net.count("/crl/") == 4


def test_max_age_bounds_a_cached_crl_over_time(trust, clock, net, ca, alice_auth):
    validator = Validator(trust, clock=clock, fetch=net, revocation_max_age=dt.timedelta(minutes=5))
    net.down.add("/ocsp/")
    assert validator.validate(alice_auth, kind="auth").ok
    ca.revoke(alice_auth.serial_number, "keyCompromise")
    clock.advance(minutes=5, seconds=1)
    result = validator.validate(alice_auth, kind="auth")
    assert result.reason == Reason.REVOKED and result.revocation.method == "crl"
    assert not result.revocation.cached


def test_max_age_bounds_ocsp_answers_by_their_production(trust, clock, net, ca, alice_auth):
    validator = Validator(trust, clock=clock, fetch=net, revocation_max_age=dt.timedelta(minutes=1))
    assert validator.validate(alice_auth, kind="auth").revocation.method == "ocsp"
    clock.advance(seconds=60)
    assert validator.validate(alice_auth, kind="auth").revocation.cached
    clock.advance(seconds=1)
    assert not validator.validate(alice_auth, kind="auth").revocation.cached
    assert net.count("/ocsp/") == 2


def test_a_fresh_revoked_crl_wins_over_a_cached_good_ocsp_answer(validator, net, ca, certs, alice_auth):
    assert validator.validate(alice_auth, kind="auth").revocation.method == "ocsp"  # good, cached
    ca.revoke(alice_auth.serial_number, "keyCompromise")
    net.down.add("/ocsp/")
    bob = validator.validate(certs[("bob", "auth")], kind="auth")  # the CRL is fetched for bob …
    assert bob.ok and bob.revocation.method == "crl"
    result = validator.validate(alice_auth, kind="auth")  # … and lists alice
    assert result.reason == Reason.REVOKED and result.revocation_reason == "keyCompromise"
    assert result.revocation.method == "crl" and result.revocation.cached
    assert net.count("/ocsp/") == 2  # alice's good OCSP answer was in the cache, not asked again


def test_a_cached_revoked_ocsp_answer_wins_over_a_good_crl(trust, clock, net, ca, alice_auth):
    shared = OcspCache()
    crl_only = Validator(trust, clock=clock, fetch=net, revocation="crl", ocsp_cache=shared)
    assert crl_only.validate(alice_auth, kind="auth").ok  # the CRL (cached) says good
    ca.revoke(alice_auth.serial_number, "keyCompromise")
    online = Validator(trust, clock=clock, fetch=net, ocsp_cache=shared)
    assert online.validate(alice_auth, kind="auth").reason == Reason.REVOKED
    result = crl_only.validate(alice_auth, kind="auth")
    assert result.reason == Reason.REVOKED and result.revocation.method == "ocsp"
    assert net.count("/crl/") == 1


def test_revocation_max_age_must_be_sane(trust, validator, alice_auth):
    with pytest.raises(UsageError):
        Validator(trust, revocation_max_age=dt.timedelta(seconds=-1))
    with pytest.raises(UsageError):
        validator.validate(alice_auth, kind="auth", revocation_max_age=300)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- CRLs


@pytest.mark.parametrize("body", [b"", b"garbage", b"\x30\x82\x10\x00\x30", b"<html>oops</html>"])
def test_garbled_crl_bytes(trust, clock, net, alice_auth, body):
    net.replace["/crl/"] = lambda url, data: body
    result = Validator(trust, clock=clock, fetch=net, revocation="crl").validate(alice_auth, kind="auth")
    assert result.reason == Reason.CRL_MALFORMED


def test_crl_faults(trust, clock, net, ca, alice_auth, ec_key):
    validator = Validator(trust, clock=clock, fetch=net, revocation="crl")
    good = net.server(f"{BASE}/crl/auth.crl")
    cases = {
        Reason.CRL_MALFORMED: good[:-30],
        Reason.CRL_SIGNATURE_INVALID: good[:-1] + bytes([good[-1] ^ 0x01]),
        Reason.CRL_ISSUER_MISMATCH: net.server(f"{BASE}/crl/sign.crl"),  # the other root's CRL
        Reason.CRL_EXPIRED: build_crl(ca.auth_ca_cert, ca.auth_ca_key, [], crl_number=9,
                                      this_update=FIXED_NOW - dt.timedelta(days=2),
                                      next_update=FIXED_NOW - dt.timedelta(days=1)),
        Reason.CRL_NOT_YET_VALID: build_crl(ca.auth_ca_cert, ca.auth_ca_key, [], crl_number=9,
                                            this_update=FIXED_NOW + dt.timedelta(hours=1),
                                            next_update=FIXED_NOW + dt.timedelta(days=1)),
    }
    for reason, body in cases.items():
        net.replace["/crl/"] = lambda url, data, b=body: b
        validator.invalidate()
        result = validator.validate(alice_auth, kind="auth")
        assert result.reason == reason, result.message
        assert result.message.startswith(f"CRL {BASE}/crl/auth.crl")


def test_crl_from_a_server_running_late_is_expired(trust, net, alice_auth):
    ahead = FixedClock(FIXED_NOW + dt.timedelta(days=2))  # the server's CRLs are good for a day
    validator = Validator(trust, clock=ahead, fetch=net, revocation="crl")
    assert validator.validate(alice_auth, kind="auth").reason == Reason.CRL_EXPIRED


def test_cached_crl_is_refreshed_after_next_update(trust, clock, net, alice_auth):
    validator = Validator(trust, clock=clock, fetch=net, revocation="crl")
    assert validator.validate(alice_auth, kind="auth").revocation.crl_number == 1
    clock.advance(hours=23)
    cached = validator.validate(alice_auth, kind="auth")
    assert cached.revocation.cached and cached.revocation.crl_number == 1
    clock.advance(hours=1, minutes=6)  # past nextUpdate + tolerance
    fresh = validator.validate(alice_auth, kind="auth")
    assert not fresh.revocation.cached and fresh.revocation.crl_number == 2
    assert net.count("/crl/") == 2


# --------------------------------------------------------------------------- caches


def test_warm_cache_answers_without_fetching_until_next_update(validator, net, alice_auth, clock):
    first = validator.validate(alice_auth, kind="auth")
    assert not first.revocation.cached
    for _ in range(5):
        again = validator.validate(alice_auth, kind="auth")
        assert again.ok and again.revocation.cached
    assert net.count("/ocsp/") == 1
    clock.advance(minutes=19)  # nextUpdate (15 min) + tolerance (5 min) not yet passed
    assert validator.validate(alice_auth, kind="auth").revocation.cached
    clock.advance(minutes=2)
    assert not validator.validate(alice_auth, kind="auth").revocation.cached
    assert net.count("/ocsp/") == 2


def test_caches_are_shareable_and_bounded(trust, clock, net, alice_auth, certs):
    shared = OcspCache(max_entries=1)
    one = Validator(trust, clock=clock, fetch=net, ocsp_cache=shared)
    two = Validator(trust, clock=clock, fetch=net, ocsp_cache=shared, crl_cache=CrlCache(0))
    assert one.validate(alice_auth, kind="auth").ok
    assert two.validate(alice_auth, kind="auth").revocation.cached
    assert one.validate(certs[("bob", "auth")], kind="auth").ok
    assert len(shared) == 1  # alice's answer made room for bob's
    assert not two.validate(alice_auth, kind="auth").revocation.cached
    with pytest.raises(ValueError):
        OcspCache(max_entries=-1)


def test_signature_checks_are_done_once_per_certificate(validator, alice_auth, monkeypatch):
    import jpki.verify.validator as validator_module

    calls = []
    real = validator_module.examine
    monkeypatch.setattr(validator_module, "examine", lambda *a: calls.append(a) or real(*a))
    for form in (alice_auth, alice_auth, alice_auth.public_bytes(DER), alice_auth.public_bytes(DER)):
        assert validator.validate(form, kind="auth").ok
    assert len(calls) == 1  # a Certificate and its DER share the cache key
    validator.validate(alice_auth, kind="sign")
    assert len(calls) == 2  # per kind
    validator.clear_caches()
    validator.validate(alice_auth, kind="auth")
    assert len(calls) == 3


def test_one_validator_shared_by_threads(validator, certs, net, ca):
    import concurrent.futures

    ca.revoke(certs[("bob", "sign")].serial_number, "keyCompromise")
    cases = [(certs[("alice", "auth")], "auth", None), (certs[("alice", "sign")], "sign", None),
             (certs[("bob", "auth")], "auth", None), (certs[("bob", "sign")], "sign", Reason.REVOKED),
             (certs[("alice", "sign")], "auth", Reason.WRONG_KIND)]

    def work(i: int) -> bool:
        cert, kind, expected = cases[i % len(cases)]
        if i % 17 == 0:
            validator.clear_caches()
        return validator.validate(cert.public_bytes(DER), kind=kind).reason == expected

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(work, range(200)))


# --------------------------------------------------------------------------- fail closed, misuse


def test_unexpected_errors_fail_closed(trust, net, alice_auth):
    class BrokenClock:
        def now(self):
            raise RuntimeError("clock on fire")

    validator = Validator(trust, clock=BrokenClock(), fetch=net)
    result = validator.validate(alice_auth, kind="auth", at=FIXED_NOW)
    assert not result.ok and result.reason == Reason.INTERNAL_ERROR
    assert "clock on fire" in result.message


def test_any_fetch_exception_is_unavailability(trust, clock, alice_auth):
    def weird(url, data=None, content_type=None):
        raise KeyError("surprise")

    result = Validator(trust, clock=clock, fetch=weird).validate(alice_auth, kind="auth")
    assert result.reason == Reason.REVOCATION_UNAVAILABLE and "KeyError" in result.message


def test_api_misuse_raises(validator, alice_auth, trust):
    with pytest.raises(UsageError):
        validator.validate(alice_auth, kind="login")
    with pytest.raises(UsageError):
        validator.validate(alice_auth, kind="auth", at=dt.datetime(2026, 1, 1))
    with pytest.raises(UsageError):
        validator.validate("not bytes", kind="auth")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        Validator(trust, revocation="sometimes")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        Validator(trust, ocsp_freshness_tolerance=dt.timedelta(minutes=-1))
    with pytest.raises(UsageError):
        Validator([])  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        validator.invalidate(b"not a certificate")


# --------------------------------------------------------------------------- trust stores


def test_jlis_roots_load_and_do_not_trust_the_test_ca(alice_auth, alice_sign, clock, net):
    jlis = TrustStore.jlis()
    assert len(jlis) == 4
    for kind, ou in (("sign", "JPKI for digital signature"), ("auth", "JPKI for user authentication")):
        anchors = jlis.anchors(kind)
        assert len(anchors) == 2
        assert len({a.subject for a in anchors}) == 1 and ou in anchors[0].subject
        assert len({a.key_id for a in anchors}) == 2  # two generations, one name
        assert sorted(a.not_after.year for a in anchors) == [2025, 2033]
        assert all(a.source.startswith("jpki/roots/") for a in anchors)
    validator = Validator(jlis, clock=clock, fetch=net)
    for cert, kind in ((alice_auth, "auth"), (alice_sign, "sign")):
        result = validator.validate(cert, kind=kind)
        assert result.reason == Reason.UNTRUSTED_ISSUER
    assert net.calls == []


def test_combined_stores(home, alice_auth, clock, net):
    both = TrustStore.jlis() + TrustStore.from_ca_dir(home / "ca")
    assert len(both) == 6 and len(both + TrustStore.from_ca_dir(home / "ca")) == 6
    assert Validator(both, clock=clock, fetch=net).validate(alice_auth, kind="auth").ok


def test_from_ca_dir_takes_only_the_roots(home, ca):
    store = TrustStore.from_ca_dir(home / "ca")
    assert (home / "ca" / "auth_ocsp.pem").exists()
    assert [a.kind for a in store] == ["sign", "auth"]
    assert store.anchors("auth")[0].cert == ca.auth_ca_cert
    with pytest.raises(UsageError, match="no test CA root"):
        TrustStore.from_ca_dir(home / "nowhere")


def test_from_pem_files_and_directories(tmp_path, home, ca):
    roots = Path(jpki.verify.__file__).parent.parent / "roots"
    assert len(TrustStore.from_pem(roots)) == 4
    both = tmp_path / "bundle.pem"
    both.write_bytes(ca.sign_ca_cert.public_bytes(serialization.Encoding.PEM)
                     + ca.auth_ca_cert.public_bytes(serialization.Encoding.PEM))
    store = TrustStore.from_pem(both)  # kinds from the OUs
    assert [a.kind for a in store] == ["sign", "auth"]
    forced = TrustStore.from_pem(home / "ca" / "sign_ca.pem", kind="auth")
    assert [a.kind for a in forced] == ["auth"]


def test_bad_anchors_are_refused(tmp_path, ca, alice_auth, ec_key):
    leaf = tmp_path / "auth_leaf.pem"
    leaf.write_bytes(alice_auth.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(UsageError, match="not a CA"):
        TrustStore.from_pem(leaf)
    junk = tmp_path / "auth_junk.pem"
    junk.write_bytes(b"hello")
    with pytest.raises(UsageError, match="not a PEM"):
        TrustStore.from_pem(junk)
    unknown = tmp_path / "root.pem"
    unknown.write_bytes(foreign_root(ec_key).public_bytes(serialization.Encoding.PEM))
    with pytest.raises(UsageError, match="cannot tell the kind"):
        TrustStore.from_pem(unknown)
    assert len(TrustStore.from_pem(unknown, kind="auth")) == 1
    broken = resign(ca.auth_ca_cert.public_bytes(DER), ec_key)  # self-issued, signed by another key
    with pytest.raises(UsageError, match="self-signature"):
        TrustStore.from_certificates([x509.load_der_x509_certificate(broken)], kind="auth")
    with pytest.raises(UsageError):
        TrustStore.from_pem(tmp_path / "missing.pem")


# --------------------------------------------------------------------------- over real HTTP




def test_over_http_with_the_default_fetcher(home, ca, trust, clock, alice_auth, alice_sign):
    fetcher = HttpFetcher(timeout=5, connect_timeout=2)
    with serve_in_thread(home / "ca", clock=clock) as server:
        def fetch(url, data=None, content_type=None):
            return fetcher(url.replace(BASE, server.url), data, content_type)

        validator = Validator(trust, clock=clock, fetch=fetch)
        assert validator.validate(alice_auth, kind="auth").ok
        ca.revoke(alice_sign.serial_number, "keyCompromise")
        result = validator.validate(alice_sign, kind="sign")
        assert result.reason == Reason.REVOKED and result.revocation_reason == "keyCompromise"
        crl = Validator(trust, clock=clock, fetch=fetch, revocation="crl").validate(alice_sign, kind="sign")
        assert crl.reason == Reason.REVOKED
        # closed, the fetcher opens a new pool on its next use
        fetcher.close()
        validator.invalidate()
        assert validator.validate(alice_auth, kind="auth").ok
    fetcher.close()


def test_default_fetcher_against_a_closed_port(trust, clock, alice_auth):
    port = free_port()
    fetcher = HttpFetcher(timeout=2, connect_timeout=1)

    def fetch(url, data=None, content_type=None):
        return fetcher(url.replace(BASE, f"http://127.0.0.1:{port}"), data, content_type)

    result = Validator(trust, clock=clock, fetch=fetch).validate(alice_auth, kind="auth")
    assert result.reason == Reason.REVOCATION_UNAVAILABLE and "ConnectError" in result.message
    assert Validator(trust, clock=clock, fetch=fetch, soft_fail=True).validate(alice_auth, kind="auth").ok
    fetcher.close()


def test_http_fetcher_refuses_other_schemes_and_big_answers(home, clock):
    from jpki.verify import FetchError

    with pytest.raises(FetchError, match="not an http"):
        HttpFetcher()("file:///etc/passwd")
    fetcher = HttpFetcher(max_size=100)
    with serve_in_thread(home / "ca", clock=clock) as server:
        with pytest.raises(FetchError, match="over the limit"):
            fetcher(f"{server.url}/crl/auth.crl")
        with pytest.raises(FetchError, match="HTTP 404"):
            fetcher(f"{server.url}/crl/nothing.crl")
    fetcher.close()


# --------------------------------------------------------------------------- interop


def test_pyhanko_certvalidator_agrees_on_the_path(ca, alice_auth, ec_key, trust, clock):
    """pyHanko's validator (no revocation) accepts what ours accepts and refuses a stranger."""
    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator.errors import PathBuildingError

    def pyhanko(cert: x509.Certificate) -> bool:
        context = ValidationContext(
            trust_roots=[asn1_x509.Certificate.load(ca.auth_ca_cert.public_bytes(DER))],
            moment=FIXED_NOW, allow_fetching=False, revocation_mode="soft-fail")
        checker = CertificateValidator(asn1_x509.Certificate.load(cert.public_bytes(DER)),
                                       validation_context=context)
        try:
            asyncio.run(checker.async_validate_usage({"digital_signature"}))
        except PathBuildingError:
            return False
        return True

    ours = Validator(trust, clock=clock, revocation="none")
    stranger = auth_leaf(ca, issuer_cert=foreign_root(ec_key), issuer_key=ec_key)
    assert pyhanko(alice_auth) and ours.validate(alice_auth, kind="auth").ok
    assert not pyhanko(stranger) and not ours.validate(stranger, kind="auth").ok
