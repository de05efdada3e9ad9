"""Helpers of the signing tests (CMS, PDF, the fuzzer). Not a test module."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from pathlib import Path

import httpx
from fixed import FIXED_NOW

from jpki.clock import FixedClock
from jpki.identity import SAMPLE_PERSONAS
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
