"""Helpers of the signing tests (CMS, PDF, the fuzzer) and the test timestamp authority. Not a
test module.

``conftest.py`` makes the fixtures ``tsa`` (an RFC 3161 TSA over HTTP whose certificate the
home's test CA issued, recorded in its database so that its OCSP and CRL answer for it) and
``ca_server`` (the home's revocation server on the port its certificates name).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from fixed import FIXED_NOW

from jpki import der
from jpki.clock import FixedClock
from jpki.identity import SAMPLE_PERSONAS
from jpki.pki import TestCA
from jpki.pki.server import serve_in_thread
from jpki.session import JpkiSession
from jpki.sign import CardSigner, sign_file
from jpki.transport import open_transport
from jpki.verify import TrustStore, Validator

SIGNED_AT = FIXED_NOW + dt.timedelta(hours=1)


CHECKED_AT = FIXED_NOW + dt.timedelta(hours=2)


ALICE = SAMPLE_PERSONAS["alice"]


@contextlib.contextmanager
def card_signer(home: Path, key: str = "sign", card: str = "alice", pin: str | None = None):
    """A CardSigner on an emulated card of ``home`` (default PINs)."""
    value = pin or ("ABC123" if key == "sign" else "1234")
    with open_transport(f"emu:{card}", home=home) as t:
        yield CardSigner.from_session(JpkiSession(t), key, pin=lambda: value)


def asgi_fetch(app):
    """A jpki.verify Fetch that calls the revocation server's ASGI app in process."""
    def fetch(url: str, data: bytes | None = None, content_type: str | None = None) -> bytes:
        async def go() -> bytes:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport) as client:
                headers = {"Content-Type": content_type} if content_type else {}
                r = await client.request("GET" if data is None else "POST", url, content=data,
                                         headers=headers)
                if r.status_code != 200:
                    raise RuntimeError(f"HTTP {r.status_code}")
                return r.content
        return asyncio.run(go())
    return fetch


def validator(home: Path, *, revocation: str = "none", fetch=None, at: dt.datetime = CHECKED_AT,
              trust_test_ca: bool = True) -> Validator:
    trust = TrustStore.jlis()
    if trust_test_ca:
        trust = trust + TrustStore.from_ca_dir(home / "ca")
    return Validator(trust, clock=FixedClock(at), revocation=revocation, fetch=fetch)  # type: ignore[arg-type]


def sign_doc(home: Path, tmp_path: Path, content: bytes = b"contract: 1 yen\n", *, key: str = "sign",
             attached: bool = False, digest: str = "sha256", when: dt.datetime = SIGNED_AT,
             name: str = "doc.txt") -> tuple[Path, Path]:
    doc = tmp_path / name
    doc.write_bytes(content)
    with card_signer(home, key) as signer:
        done = sign_file(doc, None, signer, digest=digest, attached=attached, clock=FixedClock(when))
    return doc, done.output


def make_pdf(pages: int = 1, text: str = "Contract") -> bytes:
    """A minimal PDF (Helvetica text on A4 pages) with a correct cross-reference table."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            f"<< /Type /Pages /Kids [{' '.join(f'{3 + 2 * i} 0 R' for i in range(pages))}] "
            f"/Count {pages} >>".encode()]
    font = 3 + 2 * pages
    for i in range(pages):
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources "
                    f"<< /Font << /F1 {font} 0 R >> >> /Contents {4 + 2 * i} 0 R >>".encode())
        stream = f"BT /F1 24 Tf 72 720 Td ({text}, page {i + 1}) Tj ET".encode()
        objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


# --------------------------------------------------------------------------- the test TSA

#: The "card" column of the test TSA's certificate in the CA database (``@``: never a card name).
TSA_CARD_ID = "@tsa-test"
TSA_NAME = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "jpki tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "jpki test TSA")])


def issue_tsa_certificate(ca: TestCA, key: rsa.RSAPrivateKey, *, not_before: dt.datetime,
                          days: int = 3650) -> x509.Certificate:
    """A TSA certificate issued by the test CA's signing root, as RFC 3161 §2.3 wants it (the
    critical id-kp-timeStamping EKU alone), naming the CA's OCSP responder and CRL; recorded in
    the CA database (kind ``sign``) so that both answer for it."""
    root = ca.sign_ca_cert
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder().subject_name(TSA_NAME).issuer_name(root.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_before + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ca.ocsp_url("sign")))]),
                critical=False)
            .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier(ca.crl_url("sign"))], None, None, None)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(ca.sign_ca_key, hashes.SHA256()))
    ca.db.record(cert, "sign", TSA_CARD_ID, issued_at=not_before)
    return cert


def clocked_stamper(cert: x509.Certificate, key: rsa.RSAPrivateKey, at: dt.datetime):
    """pyHanko's DummyTimeStamper stamping the time of its ``at`` (not today's; moved on by
    ``tick`` after each token), counting the tokens it made (``issued``), and a
    jpki.tsa.Timestamper in process (``stamp``). (pyHanko is imported here, not when
    conftest loads this module.)"""
    from pyhanko.sign.timestamps import DummyTimeStamper

    class ClockedTimeStamper(DummyTimeStamper):
        name = "in-process test TSA"

        def request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
            self.fixed_dt = self.at
            self.issued += 1
            self.at += self.tick
            return super().request_tsa_response(req)

        def stamp(self, algorithm: str, digest: bytes) -> bytes:
            req = tsp.TimeStampReq({"version": "v1", "message_imprint": {
                "hash_algorithm": {"algorithm": algorithm}, "hashed_message": digest},
                "cert_req": True})
            return self.request_tsa_response(req)["time_stamp_token"].dump()

    stamper = ClockedTimeStamper(
        tsa_cert=asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)),
        tsa_key=asn1_keys.PrivateKeyInfo.load(key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())))
    stamper.at = at
    stamper.tick = dt.timedelta(0)
    stamper.issued = 0
    return stamper


class _TsaHandler(http.server.BaseHTTPRequestHandler):
    """RFC 3161 over HTTP: POST a TimeStampReq, get a TimeStampResp."""

    stamper: Any

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            answer = self.stamper.request_tsa_response(tsp.TimeStampReq.load(body)).dump()
        except ValueError:  # a request that does not parse: a refusal (no token)
            answer = der.seq(tsp.PKIStatusInfo({"status": "rejection", "fail_info": {"bad_data_format"}}).dump())
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        return


class TestTsa:
    """The test TSA: ``url`` (RFC 3161 over HTTP on a free port), ``at`` (the time it stamps;
    set it to move its clock), ``cert`` (issued by the home's test CA), ``stamper`` (the same
    TSA in process, a jpki.tsa.Timestamper)."""

    __test__ = False

    def __init__(self, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
        self.cert = cert
        self.key = key
        self.stamper = clocked_stamper(cert, key, SIGNED_AT)
        handler = type("Handler", (_TsaHandler,), {"stamper": self.stamper})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tsr"

    @property
    def at(self) -> dt.datetime:
        return self.stamper.at

    @at.setter
    def at(self, when: dt.datetime) -> None:
        self.stamper.at = when

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="session")
def _test_tsa(template_home, key_pool) -> Iterator[TestTsa]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with TestCA.open(template_home / "ca", clock=FixedClock(FIXED_NOW)) as ca:
        cert = issue_tsa_certificate(ca, key, not_before=FIXED_NOW - dt.timedelta(days=1))
    service = TestTsa(cert, key)
    yield service
    service.close()


@pytest.fixture
def tsa(_test_tsa, home) -> TestTsa:
    """The test TSA (stamping SIGNED_AT unless ``tsa.at`` is set), its certificate recorded in
    this test's home (homes copied before the TSA was made lack it)."""
    with TestCA.open(home / "ca", clock=FixedClock(FIXED_NOW)) as ca:
        if ca.db.get(_test_tsa.cert.serial_number) is None:
            ca.db.record(_test_tsa.cert, "sign", TSA_CARD_ID,
                         issued_at=_test_tsa.cert.not_valid_before_utc)
    _test_tsa.at = SIGNED_AT
    _test_tsa.stamper.tick = dt.timedelta(0)
    return _test_tsa


@pytest.fixture
def ca_server(home, clock) -> Iterator[FixedClock]:
    """The home's revocation server (OCSP, CRLs) on the port its certificates name, on a clock
    the test moves (yielded; it starts at SIGNED_AT)."""
    moving = FixedClock(SIGNED_AT)
    with TestCA.open(home / "ca") as ca:
        port = int(ca.base_url.rsplit(":", 1)[1])
    with serve_in_thread(home / "ca", "127.0.0.1", port, clock=moving):
        yield moving
