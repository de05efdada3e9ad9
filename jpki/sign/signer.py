"""A card-backed signer: the card's key, its certificate and the PIN, behind one small object.

The signer asks for the key's PIN once per signature and sends the VERIFY right before the
COMPUTE DIGITAL SIGNATURE, as the real card requires of the signature password (a card may
allow one signature per VERIFY, and re-selecting the AP logs the PIN out). It checks every
signature the card returns against the certificate before handing it on, so a card whose key
does not match the certificate it holds is caught at signing time, not by the recipient.

This module does not import the card layers: it takes any object with the three methods of
:class:`CardKeySession` (``jpki.session.JpkiSession`` has them).

```python
with open_transport("emu:alice", home=home) as t:
    signer = CardSigner.from_session(JpkiSession(t), "sign", pin=lambda: "ABC123")
    signature = signer.sign_digest("sha256", hashlib.sha256(b"data").digest())
```
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Literal, Protocol

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import JpkiError, SecurityStatusError, UsageError

__all__ = ["DIGESTS", "CardKeySession", "CardSigner", "KeyKind", "SignerMismatchError"]

KeyKind = Literal["sign", "auth"]

#: Digest algorithms the card signs (as a DigestInfo) and CMS/PDF signatures may use.
DIGESTS: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class SignerMismatchError(JpkiError):
    """The card's signature does not verify with the certificate the signer presents."""


class CardKeySession(Protocol):
    """What the signer needs from a JPKI AP session (``jpki.session.JpkiSession``)."""

    def verify(self, pin: str, value: str) -> None:
        """VERIFY the PIN of ``pin`` (``'auth'`` or ``'sign'``)."""
        ...

    def read_certificate(self, kind: KeyKind) -> bytes:
        """The DER of a certificate on the card (``'sign'`` needs the password verified)."""
        ...

    def sign_digest(self, key: KeyKind, algorithm: str, digest: bytes) -> bytes:
        """COMPUTE DIGITAL SIGNATURE over the DigestInfo of ``digest``."""
        ...


class CardSigner:
    """Signs digests with one key of a card; the certificate is the key's own.

    ``pin`` is called once per signature; its value is verified right before the card signs.
    ``signatures`` counts the signatures made.
    """

    def __init__(self, session: CardKeySession, key: KeyKind, certificate: x509.Certificate,
                 pin: Callable[[], str]) -> None:
        if key not in ("sign", "auth"):
            raise UsageError(f"unknown key {key!r}: use 'sign' or 'auth'")
        public_key = certificate.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise UsageError("JPKI keys are RSA: the certificate holds another kind of key")
        self.session = session
        self.key: KeyKind = key
        self.certificate = certificate
        self._public_key = public_key
        self._pin = pin
        self.signatures = 0

    @classmethod
    def from_session(cls, session: CardKeySession, key: KeyKind,
                     pin: Callable[[], str]) -> CardSigner:
        """Read the key's certificate from the card and make a signer.

        The signing certificate can only be read after the signature password is verified:
        for ``key='sign'`` the PIN is asked (``pin()``) and verified first.
        """
        if key == "sign":
            session.verify("sign", pin())
        elif key != "auth":
            raise UsageError(f"unknown key {key!r}: use 'sign' or 'auth'")
        try:
            der = session.read_certificate(key)
        except SecurityStatusError:
            if key != "auth":
                raise
            session.verify("auth", pin())  # a smartphone's JPKI: the auth certificate after the PIN
            der = session.read_certificate(key)
        return cls(session, key, x509.load_der_x509_certificate(der), pin)

    # ------------------------------------------------------------------ the certificate
    @property
    def key_size(self) -> int:
        """Bytes in a signature (the RSA modulus length)."""
        return (self._public_key.key_size + 7) // 8

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(Encoding.DER)

    @property
    def asn1_certificate(self) -> asn1_x509.Certificate:
        """The certificate as an asn1crypto object (what CMS and pyHanko structures hold)."""
        return asn1_x509.Certificate.load(self.certificate_der)

    # ------------------------------------------------------------------ signing
    def sign_digest(self, algorithm: str, digest: bytes) -> bytes:
        """A PKCS#1 v1.5 signature over ``digest`` (made with ``algorithm``) by the card.

        Asks for the PIN, VERIFYs it, signs, and checks the signature against the certificate.
        """
        if algorithm not in DIGESTS:
            raise UsageError(f"unsupported digest {algorithm!r}: use one of {sorted(DIGESTS)}")
        value = self._pin()
        self.session.verify(self.key, value)
        signature = self.session.sign_digest(self.key, algorithm, digest)
        try:
            self._public_key.verify(signature, digest, padding.PKCS1v15(),
                                    Prehashed(DIGESTS[algorithm]()))
        except InvalidSignature:
            raise SignerMismatchError(
                f"the card's {self.key} key made a signature that its certificate does not verify "
                "(the card holds a certificate for another key)") from None
        self.signatures += 1
        return signature

    def sign_data(self, algorithm: str, data: bytes) -> bytes:
        """Hash ``data`` with ``algorithm`` and sign the digest with the card."""
        if algorithm not in DIGESTS:
            raise UsageError(f"unsupported digest {algorithm!r}: use one of {sorted(DIGESTS)}")
        return self.sign_digest(algorithm, hashlib.new(algorithm, data).digest())
