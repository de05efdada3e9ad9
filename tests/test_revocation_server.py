"""The revocation server (jpki.pki.server): OCSP over GET and POST, CRLs, health, bad
input over HTTP, and interop with `openssl ocsp` against the app running under uvicorn.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.utils
import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from fixed import FIXED_NOW

from jpki.clock import clock_from_environment
from jpki.errors import UsageError
from jpki.pki import TestCA
from jpki.pki import server as server_mod
from jpki.pki.db import CertificateDB
from jpki.pki.responder import RESPONDER_CARD_ID, load_responder
from jpki.pki.server import create_app, serve_in_thread
from jpki.provision import Home, read_holder
from jpki.serving import ENV_APP, AppSpec, app_from_environment

DER = serialization.Encoding.DER
OCSP_REQ = {"Content-Type": "application/ocsp-request"}
MALFORMED = b"\x30\x03\x0a\x01\x01"
UNAUTHORIZED = b"\x30\x03\x0a\x01\x06"


def request_der(cert: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None = None,
                algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(DER)


def by_hash_der(issuer: x509.Certificate, serial: int) -> bytes:
    """A request for any serial of ``issuer`` (no certificate needed)."""
    spki = issuer.public_key().public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    from asn1crypto import keys as asn1_keys
    from asn1crypto import ocsp as asn1_ocsp

    bits = bytes(asn1_keys.PublicKeyInfo.load(spki)["public_key"].contents[1:])
    cid = asn1_ocsp.CertId({
        "hash_algorithm": {"algorithm": "sha1"},
        "issuer_name_hash": hashlib.sha1(issuer.subject.public_bytes()).digest(),
        "issuer_key_hash": hashlib.sha1(bits).digest(),
        "serial_number": serial,
    })
    return asn1_ocsp.OCSPRequest({"tbs_request": {"request_list": [{"req_cert": cid}]}}).dump()


def db_snapshot(path: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT * FROM certificates ORDER BY serial").fetchall()


@pytest.fixture
def alice(home):
    return read_holder(Home(home), "alice")


@pytest.fixture
def ca(home, clock):
    with TestCA.open(home / "ca", clock=clock) as test_ca:
        yield test_ca


@pytest.fixture
def app(home, clock):
    application = create_app(home / "ca", clock=clock)
    yield application
    application.state.service.close()


class Client:
    """A synchronous client for the ASGI app (httpx.ASGITransport; one event loop per call,
    as a fresh HTTP client would be)."""

    def __init__(self, app) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await c.request(method, url, **kwargs)

        return asyncio.run(go())

    def get(self, url: str, **kwargs) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs) -> httpx.Response:
        return self.request("PUT", url, **kwargs)


@pytest.fixture
def client(app):
    return Client(app)


def leaf(ca: TestCA, serial: int) -> x509.Certificate:
    return ca.db.get(serial).certificate()


def load(response: httpx.Response) -> ocsp.OCSPResponse:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.content)


# --------------------------------------------------------------------------- OCSP over HTTP


def test_post_answers_good_and_is_not_cacheable(client, ca, alice):
    der = request_der(leaf(ca, alice.auth_serial), ca.auth_ca_cert)
    response = client.post("/ocsp/auth", content=der, headers=OCSP_REQ)
    parsed = load(response)
    assert parsed.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert parsed.this_update_utc == FIXED_NOW
    assert response.headers["cache-control"] == "no-store"
    # parameters on the media type are fine
    again = client.post("/ocsp/auth", content=der,
                        headers={"Content-Type": "Application/OCSP-Request; charset=binary"})
    assert again.content == response.content


def test_get_in_every_encoding_with_rfc5019_cache_headers(client, ca):
    # find a request whose standard base64 holds '/' and '+', the characters that need care
    for serial in range(1, 5000):
        der = by_hash_der(ca.auth_ca_cert, serial)
        text = base64.b64encode(der).decode()
        if "/" in text and "+" in text:
            break
    else:  # pragma: no cover
        pytest.fail("no request with both '/' and '+' in its base64")
    urlsafe = base64.urlsafe_b64encode(der).decode().rstrip("=")
    bodies = set()
    for path in (text, quote(text, safe=""), urlsafe, quote(quote(text, safe=""), safe="")):
        response = client.get(f"/ocsp/auth/{path}")
        parsed = load(response)
        assert parsed.serial_number == serial
        assert parsed.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
        assert response.headers["cache-control"] == "max-age=900, public, no-transform, must-revalidate"
        assert email.utils.parsedate_to_datetime(response.headers["expires"]) == FIXED_NOW + dt.timedelta(minutes=15)
        assert email.utils.parsedate_to_datetime(response.headers["last-modified"]) == FIXED_NOW
        assert response.headers["etag"] == '"' + hashlib.sha1(response.content).hexdigest() + '"'
        bodies.add(response.content)
    assert len(bodies) == 1  # one signed response, then the cache


def test_get_with_a_nonce_is_not_cacheable(client, ca, alice):
    nonce = os.urandom(16)
    der = request_der(leaf(ca, alice.auth_serial), ca.auth_ca_cert, nonce=nonce)
    response = client.get("/ocsp/auth/" + base64.b64encode(der).decode())
    parsed = load(response)
    assert parsed.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    assert response.headers["cache-control"] == "no-store"


def test_revocation_reaches_http_clients_through_the_cache(client, ca, alice, home):
    url = "/ocsp/sign/" + base64.b64encode(request_der(leaf(ca, alice.sign_serial), ca.sign_ca_cert)).decode()
    first = client.get(url)
    assert client.get(url).content == first.content
    with CertificateDB(home / "ca" / "certs.db") as other:  # as `jpki ca revoke` would, elsewhere
        other.set_status(alice.sign_serial, "revoked", revoked_at=FIXED_NOW, reason="affiliationChanged")
    parsed = load(client.get(url))
    assert parsed.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert parsed.revocation_reason is x509.ReasonFlags.affiliation_changed


def test_responses_are_signed_by_the_served_responder(client, ca, alice, home):
    parsed = load(client.post("/ocsp/auth", content=request_der(leaf(ca, alice.auth_serial), ca.auth_ca_cert),
                              headers=OCSP_REQ))
    signer = parsed.certificates[0]
    assert signer == x509.load_pem_x509_certificate((home / "ca" / "auth_ocsp.pem").read_bytes())
    signer.public_key().verify(parsed.signature, parsed.tbs_response_bytes, padding.PKCS1v15(), hashes.SHA256())


# --------------------------------------------------------------------------- bad input


def test_bad_input_never_breaks_the_server_nor_the_db(client, ca, alice, home):
    before = db_snapshot(home / "ca" / "certs.db")
    good = request_der(leaf(ca, alice.auth_serial), ca.auth_ca_cert)
    sign_req = request_der(leaf(ca, alice.sign_serial), ca.sign_ca_cert)
    checks = [
        (client.get("/ocsp/auth/!!!not-base64!!!"), 200, MALFORMED),
        (client.get("/ocsp/auth/QUJD"), 200, MALFORMED),  # base64 of "ABC"
        (client.get("/ocsp/auth/"), 200, MALFORMED),
        (client.get("/ocsp/auth/" + "A" * 10_000), 414, None),
        (client.post("/ocsp/auth", content=b"garbage", headers=OCSP_REQ), 200, MALFORMED),
        (client.post("/ocsp/auth", content=b"", headers=OCSP_REQ), 200, MALFORMED),
        (client.post("/ocsp/auth", content=good[:-3], headers=OCSP_REQ), 200, MALFORMED),
        (client.post("/ocsp/auth", content=sign_req, headers=OCSP_REQ), 200, UNAUTHORIZED),
        (client.get("/ocsp/auth/" + base64.b64encode(sign_req).decode()), 200, UNAUTHORIZED),
        (client.post("/ocsp/auth", content=good, headers={"Content-Type": "text/plain"}), 415, None),
        (client.post("/ocsp/auth", content=good), 415, None),
        (client.post("/ocsp/auth", content=b"\x30" * (64 * 1024 + 1), headers=OCSP_REQ), 413, None),
        (client.post("/ocsp/other", content=good, headers=OCSP_REQ), 404, None),
        (client.get("/ocsp/other/" + base64.b64encode(good).decode()), 404, None),
        (client.get("/crl/other.crl"), 404, None),
        (client.put("/ocsp/auth", content=good, headers=OCSP_REQ), 405, None),
        (client.get("/ocsp/auth"), 405, None),
        (client.get("/nothing"), 404, None),
    ]
    for response, status, body in checks:
        assert response.status_code == status, (response.request.url, response.text)
        if body is not None:
            assert response.content == body
            assert response.headers["content-type"] == "application/ocsp-response"
            assert response.headers["cache-control"] == "no-store"
    assert load(client.post("/ocsp/auth", content=good, headers=OCSP_REQ)).certificate_status is \
        ocsp.OCSPCertStatus.GOOD
    assert db_snapshot(home / "ca" / "certs.db") == before


def test_streamed_body_over_the_limit_is_413(client):
    async def chunks():
        for _ in range(65):
            yield b"\x00" * 1024

    response = client.post("/ocsp/auth", content=chunks(), headers=OCSP_REQ)
    assert response.status_code == 413


def test_many_concurrent_clients_mixed_input(app, ca, alice):
    good = request_der(leaf(ca, alice.auth_serial), ca.auth_ca_cert)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            jobs = []
            for i in range(60):
                if i % 3 == 0:
                    jobs.append(c.post("/ocsp/auth", content=good, headers=OCSP_REQ))
                elif i % 3 == 1:
                    nonce_req = request_der(leaf(ca, alice.auth_serial), ca.auth_ca_cert, nonce=os.urandom(16))
                    jobs.append(c.post("/ocsp/auth", content=nonce_req, headers=OCSP_REQ))
                else:
                    jobs.append(c.post("/ocsp/auth", content=os.urandom(40), headers=OCSP_REQ))
            return await asyncio.gather(*jobs)

    responses = asyncio.run(run())
    for i, response in enumerate(responses):
        assert response.status_code == 200
        if i % 3 == 2:
            assert response.content == MALFORMED
        else:
            assert ocsp.load_der_ocsp_response(response.content).certificate_status is ocsp.OCSPCertStatus.GOOD
    # the 20 plain requests got one response (requests racing the first one may sign it too:
    # same clock, deterministic RSA signature, same bytes); the 20 nonce requests, 20 others
    assert len({r.content for i, r in enumerate(responses) if i % 3 == 0}) == 1
    assert len({r.content for i, r in enumerate(responses) if i % 3 == 1}) == 20
    stats = app.state.service.responder.stats
    assert stats["cache_hits"] >= 1 and stats["signed"] + stats["cache_hits"] == 40


# --------------------------------------------------------------------------- health, CRL, renewal


def test_healthz(client, home):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    for kind in ("sign", "auth"):
        cert = x509.load_pem_x509_certificate((home / "ca" / f"{kind}_ocsp.pem").read_bytes())
        assert body["responders"][kind]["serial"] == format(cert.serial_number, "x")


def test_crl_without_ca_support_is_503(monkeypatch, client):
    monkeypatch.delattr(TestCA, "crl", raising=False)
    response = client.get("/crl/auth.crl")
    assert response.status_code == 503
    assert "TestCA.crl" in response.text


def test_crl_is_served_from_the_ca(monkeypatch, client):
    calls = []

    def fake_crl(self, kind):
        calls.append(kind)
        if kind == "sign":
            raise RuntimeError("boom")
        return b"\x30\x00crl-of-" + kind.encode()

    monkeypatch.setattr(TestCA, "crl", fake_crl, raising=False)
    response = client.get("/crl/auth.crl")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pkix-crl"
    assert response.content == b"\x30\x00crl-of-auth"
    assert client.get("/crl/sign.crl").status_code == 500
    assert client.get("/healthz").status_code == 200  # still serving
    assert calls == ["auth", "sign"]


def test_crl_is_built_once_and_rebuilt_on_revocation_or_refresh(monkeypatch, home, clock, alice, ca):
    builds = []

    def fake_crl(self, kind):
        builds.append(kind)
        return b"crl-%d" % len(builds)

    monkeypatch.setattr(TestCA, "crl", fake_crl, raising=False)
    app = create_app(home / "ca", clock=clock, crl_refresh=dt.timedelta(hours=1))
    c = Client(app)
    try:
        first = c.get("/crl/auth.crl")
        assert first.content == b"crl-1"
        assert email.utils.parsedate_to_datetime(first.headers["last-modified"]) == FIXED_NOW
        assert c.get("/crl/auth.crl").content == b"crl-1"
        # a write that revokes nothing (another process supersedes a certificate): no rebuild
        with CertificateDB(home / "ca" / "certs.db") as other:
            other.set_status(alice.sign_serial, "superseded")
        assert c.get("/crl/auth.crl").content == b"crl-1"
        # a revocation of that CA, made elsewhere: rebuilt at once
        with CertificateDB(home / "ca" / "certs.db") as other:
            other.set_status(alice.auth_serial, "revoked", revoked_at=FIXED_NOW, reason="keyCompromise")
        assert c.get("/crl/auth.crl").content == b"crl-2"
        assert c.get("/crl/auth.crl").content == b"crl-2"
        clock.advance(hours=1)  # refresh period over
        assert c.get("/crl/auth.crl").content == b"crl-3"
        assert c.get("/crl/sign.crl").content == b"crl-4"
        assert builds == ["auth", "auth", "auth", "sign"]
    finally:
        app.state.service.close()


@pytest.mark.skipif(not hasattr(TestCA, "crl"), reason="TestCA.crl() not there yet")
def test_real_crl_when_the_ca_builds_one(client, ca, alice, home):  # pragma: no cover - needs TestCA.crl
    response = client.get("/crl/auth.crl")
    assert response.status_code == 200
    crl = x509.load_der_x509_crl(response.content)
    assert crl.issuer == ca.auth_ca_cert.subject
    assert crl.is_signature_valid(ca.auth_ca_cert.public_key())
    assert crl.get_revoked_certificate_by_serial_number(alice.auth_serial) is None
    with CertificateDB(home / "ca" / "certs.db") as other:
        other.set_status(alice.auth_serial, "revoked", revoked_at=FIXED_NOW, reason="keyCompromise")
    crl = x509.load_der_x509_crl(client.get("/crl/auth.crl").content)
    assert crl.get_revoked_certificate_by_serial_number(alice.auth_serial) is not None


def test_responder_certificate_is_renewed_before_it_expires(home, clock, ca, alice):
    app = create_app(home / "ca", clock=clock, responder_validity=dt.timedelta(days=1),
                     renew_before=dt.timedelta(hours=12))
    der = request_der(leaf(ca, alice.auth_serial), ca.auth_ca_cert)
    c = Client(app)
    try:
        first = load(c.post("/ocsp/auth", content=der, headers=OCSP_REQ)).certificates[0]
        clock.advance(hours=11)
        assert load(c.post("/ocsp/auth", content=der, headers=OCSP_REQ)).certificates[0] == first
        clock.advance(hours=2)  # 11 hours left: renew
        parsed = load(c.post("/ocsp/auth", content=der, headers=OCSP_REQ))
        second = parsed.certificates[0]
        assert second.serial_number != first.serial_number
        assert second.not_valid_before_utc == clock.now()
        second.public_key().verify(parsed.signature, parsed.tbs_response_bytes, padding.PKCS1v15(),
                                   hashes.SHA256())
    finally:
        app.state.service.close()
    responders = [r for r in ca.db.list(card=RESPONDER_CARD_ID)]
    assert len(responders) == 4  # sign and auth, twice


def test_a_failed_renewal_keeps_serving_and_is_retried(home, clock, ca, alice, monkeypatch):
    app = create_app(home / "ca", clock=clock, responder_validity=dt.timedelta(days=1),
                     renew_before=dt.timedelta(hours=12))
    service = app.state.service
    der = request_der(leaf(ca, alice.auth_serial), ca.auth_ca_cert)
    c = Client(app)
    try:
        first = load(c.post("/ocsp/auth", content=der, headers=OCSP_REQ)).certificates[0]
        clock.advance(hours=13)

        def broken(*args, **kwargs):
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(server_mod, "ensure_responder", broken)
        parsed = load(c.post("/ocsp/auth", content=der, headers=OCSP_REQ))
        assert parsed.certificates[0] == first  # still valid for 11 hours: still used
        assert not service.renewal_due()  # retry later, not on every request
        monkeypatch.undo()
        clock.advance(seconds=server_mod.RENEW_RETRY.total_seconds())
        assert load(c.post("/ocsp/auth", content=der, headers=OCSP_REQ)).certificates[0] != first
    finally:
        service.close()


def test_ec_responder_key_switch_and_renewal(home, clock, ca, alice):
    """create_app(responder_key='ec') on a CA directory whose responders are RSA re-issues them
    with P-256 keys; responses are ecdsa-with-SHA256; renewal keeps the EC key; going back to
    rsa re-issues again."""
    der = request_der(leaf(ca, alice.auth_serial), ca.auth_ca_cert)
    rsa_app = create_app(home / "ca", clock=clock)
    try:
        first = load(Client(rsa_app).post("/ocsp/auth", content=der, headers=OCSP_REQ))
        assert first.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSA_WITH_SHA256
        assert Client(rsa_app).get("/healthz").json()["responder_key"] == "rsa"
    finally:
        rsa_app.state.service.close()

    app = create_app(home / "ca", clock=clock, responder_key="ec", responder_validity=dt.timedelta(days=1),
                     renew_before=dt.timedelta(hours=12))
    c = Client(app)
    try:
        assert c.get("/healthz").json()["responder_key"] == "ec"
        parsed = load(c.post("/ocsp/auth", content=der, headers=OCSP_REQ))
        delegate = parsed.certificates[0]
        assert delegate != first.certificates[0]
        assert isinstance(delegate.public_key(), ec.EllipticCurvePublicKey)
        assert parsed.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
        delegate.public_key().verify(parsed.signature, parsed.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
        assert parsed.certificate_status is ocsp.OCSPCertStatus.GOOD
        for kind in ("sign", "auth"):
            assert load_responder(ca, kind).key_type == "ec"
        clock.advance(hours=13)  # 11 hours left: renewed, same P-256 key
        renewed = load(c.post("/ocsp/auth", content=der, headers=OCSP_REQ))
        assert renewed.certificates[0].serial_number != delegate.serial_number
        assert renewed.certificates[0].public_key() == delegate.public_key()
        assert renewed.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
    finally:
        app.state.service.close()

    back = create_app(home / "ca", clock=clock)  # the default, rsa, again
    try:
        parsed = load(Client(back).post("/ocsp/auth", content=der, headers=OCSP_REQ))
        assert isinstance(parsed.certificates[0].public_key(), rsa.RSAPublicKey)
        assert parsed.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSA_WITH_SHA256
    finally:
        back.state.service.close()
    with pytest.raises(UsageError):
        create_app(home / "ca", clock=clock, responder_key="dsa")  # type: ignore[arg-type]


def test_app_from_environment_takes_the_responder_key(home, monkeypatch):
    """What a worker process builds from the one variable serve() sets ($JPKI_SERVE_APP)."""
    factory = f"{server_mod.__name__}:app_from_settings"
    monkeypatch.setenv(ENV_APP, json.dumps(server_mod.app_spec(home / "ca", responder_key="ec").to_json()))
    app = app_from_environment()
    try:
        assert app.state.service.responder_key == "ec"
        assert isinstance(app.state.service.responder.responder_cert("auth").public_key(),
                          ec.EllipticCurvePublicKey)
    finally:
        app.state.service.close()
    monkeypatch.setenv(ENV_APP, json.dumps(AppSpec(factory, {"ca_dir": str(home / "ca")}).to_json()))  # no key type
    app = app_from_environment()
    try:
        assert app.state.service.responder_key == "rsa"
    finally:
        app.state.service.close()
    spec = AppSpec(factory, {"ca_dir": str(home / "ca"), "responder_key": "dsa"})
    monkeypatch.setenv(ENV_APP, json.dumps(spec.to_json()))
    with pytest.raises(UsageError):
        app_from_environment()


def test_create_app_on_a_missing_ca_fails_early(tmp_path):
    from jpki.pki import CANotFoundError

    with pytest.raises(CANotFoundError):
        create_app(tmp_path / "nothing")


# --------------------------------------------------------------------------- under uvicorn, with openssl


def _pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _openssl_ocsp(ca_pem: Path, leaf_pem: Path, url: str, *extra: str) -> str:
    """openssl ocsp at conftest's FIXED_NOW (the server's $JPKI_NOW clock), whatever today is:
    ``-attime`` for the certificate paths, a wide ``-validity_period`` for this/nextUpdate."""
    at = int(FIXED_NOW.timestamp()) + 60
    proc = subprocess.run(
        ["openssl", "ocsp", "-issuer", str(ca_pem), "-cert", str(leaf_pem), "-url", url,
         "-CAfile", str(ca_pem), "-resp_text", "-timeout", "20", "-attime", str(at),
         "-validity_period", str(20 * 365 * 86400), *extra],
        capture_output=True, text=True, timeout=60, check=False,
    )
    return proc.stdout + proc.stderr


@pytest.fixture
def live(home):
    """The app under uvicorn in a thread on a free port, on the clock of $JPKI_NOW."""
    srv = serve_in_thread(home / "ca", clock=clock_from_environment())
    try:
        yield srv
    finally:
        srv.stop()
    assert not srv._thread.is_alive()


def test_openssl_ocsp_good_then_revoked_after_jpki_card_lost(cli, live, home, tmp_path, alice):
    """openssl ocsp says good for both of alice's certificates; `jpki card lost alice`, run as
    another process while the server runs, revokes both; openssl then says revoked."""
    with TestCA.open(home / "ca") as ca:
        cases = [
            (kind, ca.ca_cert_path(kind), _pem(tmp_path / f"alice-{kind}.pem", leaf(ca, serial)))
            for kind, serial in (("auth", alice.auth_serial), ("sign", alice.sign_serial))
        ]
    for kind, ca_pem, leaf_pem in cases:
        url = f"{live.url}/ocsp/{kind}"
        out = _openssl_ocsp(ca_pem, leaf_pem, url)
        assert f"{leaf_pem}: good" in out, out
        assert "Response verify OK" in out, out
        assert "OCSP Nonce" in out, out
        out = _openssl_ocsp(ca_pem, leaf_pem, url, "-no_nonce")  # the cacheable kind
        assert f"{leaf_pem}: good" in out and "Response verify OK" in out, out

    lost = cli.process("card", "lost", "alice", card=None)
    assert lost.exit_code == 0, lost.stderr

    for kind, ca_pem, leaf_pem in cases:
        for extra in ((), ("-no_nonce",)):
            out = _openssl_ocsp(ca_pem, leaf_pem, f"{live.url}/ocsp/{kind}", *extra)
            assert f"{leaf_pem}: revoked" in out, out
            assert "Reason: keyCompromise" in out, out
            assert "Revocation Time:" in out, out
            assert "Response verify OK" in out, out


def test_openssl_ocsp_with_an_ec_responder(cli, home, tmp_path, alice):
    """`openssl ocsp -issuer … -url … -CAfile …` against a server run with responder_key='ec':
    Response verify OK and good, then revoked after `jpki card lost`."""
    with TestCA.open(home / "ca") as ca:
        cases = [
            (kind, ca.ca_cert_path(kind), _pem(tmp_path / f"alice-{kind}.pem", leaf(ca, serial)))
            for kind, serial in (("auth", alice.auth_serial), ("sign", alice.sign_serial))
        ]
    with serve_in_thread(home / "ca", clock=clock_from_environment(), responder_key="ec") as srv:
        with TestCA.open(home / "ca") as ca:
            for kind in ("sign", "auth"):
                assert load_responder(ca, kind).key_type == "ec"
        for kind, ca_pem, leaf_pem in cases:
            for extra in ((), ("-no_nonce",)):
                out = _openssl_ocsp(ca_pem, leaf_pem, f"{srv.url}/ocsp/{kind}", *extra)
                assert f"{leaf_pem}: good" in out, out
                assert "Response verify OK" in out, out
                assert "ecdsa-with-SHA256" in out, out
        lost = cli.process("card", "lost", "alice", card=None)
        assert lost.exit_code == 0, lost.stderr
        for kind, ca_pem, leaf_pem in cases:
            for extra in ((), ("-no_nonce",)):
                out = _openssl_ocsp(ca_pem, leaf_pem, f"{srv.url}/ocsp/{kind}", *extra)
                assert f"{leaf_pem}: revoked" in out, out
                assert "Reason: keyCompromise" in out, out
                assert "Response verify OK" in out, out


def test_openssl_ocsp_sign_ca_and_wrong_url(live, home, tmp_path, alice):
    ca = TestCA.open(home / "ca")
    try:
        sign_pem = _pem(tmp_path / "alice-sign.pem", leaf(ca, alice.sign_serial))
        out = _openssl_ocsp(ca.ca_cert_path("sign"), sign_pem, f"{live.url}/ocsp/sign")
        assert f"{sign_pem}: good" in out and "Response verify OK" in out, out
        # the signing certificate asked at the authentication CA's URL
        out = _openssl_ocsp(ca.ca_cert_path("sign"), sign_pem, f"{live.url}/ocsp/auth")
        assert "unauthorized" in out.lower(), out
    finally:
        ca.close()


def test_live_get_with_percent_encoding(live, home, alice):
    with TestCA.open(home / "ca") as ca:
        der = request_der(leaf(ca, alice.auth_serial), ca.auth_ca_cert, algorithm=hashes.SHA256())
    for path in (quote(base64.b64encode(der).decode(), safe=""),
                 base64.urlsafe_b64encode(der).decode().rstrip("=")):
        response = httpx.get(f"{live.url}/ocsp/auth/{path}", timeout=20)
        assert load(response).certificate_status is ocsp.OCSPCertStatus.GOOD
        assert response.headers["cache-control"].startswith("max-age=")
    assert httpx.get(f"{live.url}/healthz", timeout=20).json()["status"] == "ok"


def test_serve_in_thread_on_a_busy_port_fails_cleanly(home):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UsageError):
            serve_in_thread(home / "ca", port=port)


def test_serve_runs_until_interrupted(home):
    """serve() as `jpki ca serve` will call it: in the foreground, stopped by a signal."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = ("import sys; from jpki.pki.server import serve; "
            "serve(sys.argv[1], '127.0.0.1', int(sys.argv[2]), log_level='warning')")
    proc = subprocess.Popen([sys.executable, "-c", code, str(home / "ca"), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -signal.SIGINT, 130), proc.stderr.read() if proc.stderr else ""


@pytest.mark.slow
@pytest.mark.parametrize("responder_key", ["rsa", "ec"])
def test_serve_with_two_worker_processes(home, alice, responder_key):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = ("import sys; from jpki.pki.server import serve; "
            "serve(sys.argv[1], '127.0.0.1', int(sys.argv[2]), log_level='warning', workers=2,"
            " responder_key=sys.argv[3])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(home / "ca"), str(port), responder_key],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        with TestCA.open(home / "ca") as ca:
            der = request_der(leaf(ca, alice.auth_serial), ca.auth_ca_cert)
            expected = {"rsa": x509.SignatureAlgorithmOID.RSA_WITH_SHA256,
                        "ec": x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256}[responder_key]
            for _ in range(10):
                response = httpx.post(f"http://127.0.0.1:{port}/ocsp/auth", content=der, headers=OCSP_REQ,
                                      timeout=20)
                assert load(response).certificate_status is ocsp.OCSPCertStatus.GOOD
                assert load(response).signature_algorithm_oid == expected
            # the workers found the responder certificates the parent issued: one per kind
            assert len(ca.db.list(card=RESPONDER_CARD_ID)) == 2
            assert load_responder(ca, "auth").key_type == responder_key
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
            proc.wait()


def test_serve_argument_checks(home):
    from jpki.clock import FixedClock

    with pytest.raises(UsageError):
        server_mod.serve(home / "ca", workers=0)
    with pytest.raises(UsageError):
        server_mod.serve(home / "ca", workers=2, clock=FixedClock(FIXED_NOW))
    with pytest.raises(UsageError):
        server_mod.serve(home / "ca", responder_key="dsa")  # type: ignore[arg-type]


def test_module_exports():
    assert {"create_app", "serve", "serve_in_thread"} <= set(server_mod.__all__)
