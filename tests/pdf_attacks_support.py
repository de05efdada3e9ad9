"""Builders of hostile signed PDFs (tests/test_sign_pdf_hostile.py). Not a test module.

Every attack starts from a PDF that verifies, signed with alice's real key: by her emulated card,
or in software with the same key and certificate (:class:`KeySigner`, loaded from her card
directory) where the attack must re-sign what the card would refuse to lay out (a byte range of
the attacker's choice). So what the verifier refuses is the attack, never a broken signature.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes
from sign_support import SIGNED_AT

from jpki.sign.pdf import CardPdfSigner

HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


class KeySigner:
    """A software ``DigestSigner`` (what ``jpki.sign.pdf.sign_pdf`` takes): a private key and a
    certificate, signing PKCS#1 v1.5 as the card does."""

    def __init__(self, key: rsa.RSAPrivateKey, certificate: x509.Certificate) -> None:
        self.key = key
        self.certificate = certificate

    @property
    def key_size(self) -> int:
        return (self.key.key_size + 7) // 8

    @property
    def asn1_certificate(self) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(self.certificate.public_bytes(serialization.Encoding.DER))

    def sign_digest(self, algorithm: str, digest: bytes) -> bytes:
        return self.key.sign(digest, padding.PKCS1v15(), Prehashed(HASHES[algorithm]()))


def card_key(home: Path, card: str = "alice", key: str = "sign") -> rsa.RSAPrivateKey:
    """The private key of an emulated card (its key file)."""
    loaded = serialization.load_pem_private_key(
        (home / "cards" / card / "keys" / f"{key}.pem").read_bytes(), password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    return loaded


def reissued(cert: x509.Certificate, issuer_key: rsa.RSAPrivateKey, *,
             key_usage: x509.KeyUsage | None, public_key: rsa.RSAPublicKey | None = None,
             serial: int | None = None) -> x509.Certificate:
    """``cert`` again, signed by ``issuer_key``, with another KeyUsage (None: none at all),
    and optionally another key or serial number."""
    builder = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
               .public_key(public_key or cert.public_key())  # type: ignore[arg-type]
               .serial_number(serial or cert.serial_number)
               .not_valid_before(cert.not_valid_before_utc).not_valid_after(cert.not_valid_after_utc))
    for ext in cert.extensions:
        if isinstance(ext.value, x509.KeyUsage):
            continue
        builder = builder.add_extension(ext.value, critical=ext.critical)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


# --------------------------------------------------------------------------- byte surgery

def signature_spans(pdf: bytes) -> list[tuple[re.Match[bytes], re.Match[bytes]]]:
    """(the /ByteRange array, the /Contents hex string) of each signature dictionary, in file
    order (pyHanko writes /ByteRange with padding spaces, then /Contents)."""
    ranges = list(re.finditer(rb"/ByteRange \[([0-9 ]*)\] *", pdf))
    contents = list(re.finditer(rb"/Contents <([0-9a-fA-F]*)>", pdf))
    assert ranges and len(ranges) == len(contents), (len(ranges), len(contents))
    return list(zip(ranges, contents, strict=True))


def byte_range(pdf: bytes, index: int = -1) -> list[int]:
    found, _ = signature_spans(pdf)[index]
    return [int(v) for v in found.group(1).split()]


def cms_of(pdf: bytes, index: int = -1) -> cms.ContentInfo:
    """The CMS in a signature's /Contents (without the zeros that pad its slot)."""
    _, contents = signature_spans(pdf)[index]
    der = bytes.fromhex(contents.group(1).decode())
    return cms.ContentInfo.load(der[:_der_length(der)])


def _der_length(der: bytes) -> int:
    first = der[1]
    if first < 0x80:
        return 2 + first
    size = first & 0x7F
    return 2 + size + int.from_bytes(der[2:2 + size], "big")


def with_cms(pdf: bytes, signed: cms.ContentInfo, index: int = -1) -> bytes:
    """``pdf`` with another CMS in a signature's /Contents slot (padded with zeros): the signed
    bytes do not change."""
    _, contents = signature_spans(pdf)[index]
    lo, hi = contents.span(1)
    new = signed.dump().hex().encode()
    assert len(new) <= hi - lo, "the CMS does not fit the slot"
    return pdf[:lo] + new + b"0" * (hi - lo - len(new)) + pdf[hi:]


def _relaid(pdf: bytes, new_range: list[int], index: int) -> tuple[bytes, int, bytes]:
    """``pdf`` whose signature dictionary says ``/ByteRange new_range`` (written in the space of
    the old one) with its /Contents slot as before signing (zeros); where the slot starts, and
    the SHA-256 digest of exactly the bytes ``new_range`` names."""
    found, contents = signature_spans(pdf)[index]
    text = b"/ByteRange [" + b" ".join(b"%d" % v for v in new_range) + b"]"
    width = found.end() - found.start()
    assert len(text) <= width
    pdf = pdf[:found.start()] + text.ljust(width) + pdf[found.end():]
    lo, hi = contents.span(1)
    pdf = pdf[:lo] + b"0" * (hi - lo) + pdf[hi:]
    start1, len1, start2, len2 = new_range
    return pdf, lo, hashlib.sha256(pdf[start1:start1 + len1] + pdf[start2:start2 + len2]).digest()


def resigned(pdf: bytes, signer: KeySigner, new_range: list[int], index: int = -1) -> bytes:
    """``pdf`` whose signature dictionary says ``/ByteRange new_range`` and whose CMS is a valid
    signature, by ``signer``, over exactly those bytes: a signing tool that lays out the byte
    range as an attacker wants."""
    pdf, lo, digest = _relaid(pdf, new_range, index)
    signed = asyncio.run(CardPdfSigner(signer).async_sign(
        digest, "sha256", use_pades=True,
        signed_attr_settings=PdfCMSSignedAttributes(signing_time=SIGNED_AT)))
    new = signed.dump().hex().encode()
    # the slot's tail stays zeros: a range that overlaps it signed those zeros
    return pdf[:lo] + new + pdf[lo + len(new):]


def restamped(pdf: bytes, stamper: Any, new_range: list[int], index: int = -1) -> bytes:
    """The same for a document timestamp: ``/ByteRange new_range`` and a genuine token from
    ``stamper`` (a ``jpki.tsa.Timestamper``: the test TSA) over exactly those bytes."""
    pdf, lo, digest = _relaid(pdf, new_range, index)
    new = stamper.stamp("sha256", digest).hex().encode()
    return pdf[:lo] + new + pdf[lo + len(new):]


def updated(pdf: bytes, change: Callable[[IncrementalPdfFileWriter], None]) -> bytes:
    """``pdf`` with an incremental update made by ``change`` (pyHanko's writer)."""
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    change(writer)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def name(value: str) -> generic.NameObject:
    return generic.NameObject(value)


def fake_signature_field(writer: IncrementalPdfFileWriter, title: str,
                         value: generic.DictionaryObject, *, listed: bool = True) -> None:
    """Add a visible signature widget ``title`` on page 1 whose /V is ``value``, listed in the
    form's /Fields or (``listed=False``) only in the page's /Annots."""
    page_ref = writer.root["/Pages"]["/Kids"][0]
    page = page_ref.get_object()
    appearance = writer.add_object(generic.StreamObject(
        {name("/Type"): name("/XObject"), name("/Subtype"): name("/Form"),
         name("/BBox"): generic.ArrayObject([generic.NumberObject(v) for v in (0, 0, 200, 40)])},
        stream_data=b"0 0 200 40 re S"))
    widget = writer.add_object(generic.DictionaryObject({
        name("/Type"): name("/Annot"), name("/Subtype"): name("/Widget"), name("/FT"): name("/Sig"),
        name("/T"): generic.TextStringObject(title), name("/F"): generic.NumberObject(4),
        name("/Rect"): generic.ArrayObject([generic.NumberObject(v) for v in (50, 50, 250, 90)]),
        name("/P"): page_ref, name("/V"): writer.add_object(value),
        name("/AP"): generic.DictionaryObject({name("/N"): appearance})}))
    annots = page.get("/Annots")
    page[name("/Annots")] = generic.ArrayObject([*(annots or []), widget])
    writer.update_container(page)
    if listed:
        form = writer.root["/AcroForm"]
        form["/Fields"].append(widget)
        writer.update_container(form)


def unsigned_value(subfilter: str = "/ETSI.CAdES.detached", *, contents: bytes = bytes(64),
                   byte_range: tuple[int, ...] = (0, 0, 0, 0)) -> generic.DictionaryObject:
    """A signature dictionary that was never signed (zeros in /Contents by default)."""
    return generic.DictionaryObject({
        name("/Type"): name("/Sig"), name("/Filter"): name("/Adobe.PPKLite"),
        name("/SubFilter"): name(subfilter),
        name("/ByteRange"): generic.ArrayObject([generic.NumberObject(v) for v in byte_range]),
        name("/Contents"): generic.ByteStringObject(contents)})
