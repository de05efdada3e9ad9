"""Delegated OCSP responder certificates of the test CA (RFC 6960 §4.2.2.2).

Each root (``sign``, ``auth``) authorises one responder key to sign OCSP responses about the
certificates it issued. The responder certificate is issued by that root and carries:

* KeyUsage digitalSignature (critical), BasicConstraints CA:FALSE (critical);
* ExtendedKeyUsage ``id-kp-OCSPSigning`` — what makes a client accept it as a delegated
  responder for this CA;
* ``id-pkix-ocsp-nocheck`` — clients need not check the responder certificate's own status. That
  is only safe for short-lived certificates, so the default validity is
  :data:`DEFAULT_RESPONDER_VALIDITY` (7 days) and :func:`ensure_responder` renews the certificate
  once less than :data:`DEFAULT_RENEW_BEFORE` remains.

Files kept in the CA directory (beside ``{kind}_ca.pem``)::

    {kind}_ocsp.key   the responder's private key, PKCS#8 PEM, mode 0600 from creation
    {kind}_ocsp.pem   its certificate (0644)

Both are replaced atomically when a certificate is renewed. Every responder certificate is
recorded in the CA database (kind ``sign``/``auth``, card id :data:`RESPONDER_CARD_ID`), so a
CRL or an OCSP query can name it like any other certificate the CA issued.

```python
from jpki.pki import TestCA
from jpki.pki.responder import ensure_responder
ca = TestCA.open(path)
creds = ensure_responder(ca, "auth")     # load, or issue when missing or about to expire
creds.cert, creds.key
```
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jpki.errors import UsageError
from jpki.fileio import write_atomic
from jpki.pki import profiles
from jpki.pki.ca import TestCA
from jpki.pki.profiles import CaKind

__all__ = [
    "DEFAULT_RENEW_BEFORE",
    "DEFAULT_RESPONDER_VALIDITY",
    "RESPONDER_CARD_ID",
    "ResponderCredentials",
    "build_responder_certificate",
    "ensure_responder",
    "issue_responder_cert",
    "load_responder",
    "responder_cert_path",
    "responder_key_path",
]

#: Validity of a responder certificate (short: it carries ocsp-nocheck).
DEFAULT_RESPONDER_VALIDITY = _dt.timedelta(days=7)
#: :func:`ensure_responder` issues a new certificate when less than this remains.
DEFAULT_RENEW_BEFORE = _dt.timedelta(days=1)
#: The "card" column of responder certificates in the CA database. ``@`` cannot appear in a card
#: name, so no emulated card can collide with it.
RESPONDER_CARD_ID = "@ocsp-responder"
RESPONDER_CN = "OCSP responder (TEST - emulator CA, not J-LIS)"


@dataclasses.dataclass(frozen=True)
class ResponderCredentials:
    """A responder certificate, its key and where they are kept."""

    kind: CaKind
    cert: x509.Certificate
    key: rsa.RSAPrivateKey
    cert_path: Path
    key_path: Path

    @property
    def not_after(self) -> _dt.datetime:
        return self.cert.not_valid_after_utc


def responder_cert_path(ca_dir: Path | str, kind: CaKind) -> Path:
    """``{ca_dir}/{kind}_ocsp.pem``."""
    return Path(ca_dir) / f"{profiles._check_kind(kind)}_ocsp.pem"


def responder_key_path(ca_dir: Path | str, kind: CaKind) -> Path:
    """``{ca_dir}/{kind}_ocsp.key``."""
    return Path(ca_dir) / f"{profiles._check_kind(kind)}_ocsp.key"


def responder_name(kind: CaKind) -> x509.Name:
    """The CA's DN plus ``CN=OCSP responder (TEST …)``."""
    return x509.Name(
        list(profiles.ca_name(kind)) + [x509.NameAttribute(NameOID.COMMON_NAME, RESPONDER_CN)]
    )


def build_responder_certificate(
    kind: CaKind,
    public_key: rsa.RSAPublicKey,
    *,
    issuer_cert: x509.Certificate,
    issuer_key: rsa.RSAPrivateKey,
    serial: int,
    not_before: _dt.datetime,
    not_after: _dt.datetime,
) -> x509.Certificate:
    """A delegated OCSP responder certificate for the ``kind`` root (pure: no files, no DB)."""
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise UsageError(f"responder keys are RSA, got {type(public_key).__name__}")
    if not_after <= not_before:
        raise UsageError("a responder certificate must end after it starts")
    issuer_ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(responder_name(kind))
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return builder.sign(issuer_key, hashes.SHA256())


def _new_serial(ca: TestCA) -> int:
    while True:
        serial = profiles.new_serial()
        if ca.db.get(serial) is None:
            return serial


def issue_responder_cert(
    ca: TestCA,
    kind: CaKind,
    key: rsa.RSAPrivateKey | None = None,
    *,
    validity: _dt.timedelta = DEFAULT_RESPONDER_VALIDITY,
    issued_at: _dt.datetime | None = None,
    key_size: int = 2048,
) -> ResponderCredentials:
    """Issue a responder certificate for ``ca``'s ``kind`` root, record it, write key and cert.

    ``key`` is the responder's RSA key (default: a new ``key_size``-bit key). The certificate is
    valid from ``issued_at`` (default: the CA clock's now) for ``validity``, capped at the root's
    end. The key is written first (0600 from creation), then the certificate, each atomically;
    both replace an earlier responder's files. Returns the new credentials.
    """
    kind = profiles._check_kind(kind)
    if validity <= _dt.timedelta(0):
        raise UsageError("validity must be positive")
    if key is None:
        if key_size < 2048:
            raise UsageError("responder keys must have at least 2048 bits")
        key = rsa.generate_private_key(65537, key_size)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UsageError("the responder key must be an RSA private key")
    when = issued_at if issued_at is not None else ca.clock.now()
    if when.tzinfo is None or when.utcoffset() is None:
        raise UsageError("issued_at must be timezone-aware")
    when = when.astimezone(_dt.UTC).replace(microsecond=0)
    issuer = ca.ca_cert(kind)
    if not issuer.not_valid_before_utc <= when < issuer.not_valid_after_utc:
        raise UsageError(f"{kind} CA is not valid at {when.isoformat()}")
    not_after = min(when + validity, issuer.not_valid_after_utc)
    cert = build_responder_certificate(
        kind,
        key.public_key(),
        issuer_cert=issuer,
        issuer_key=ca.ca_key(kind),
        serial=_new_serial(ca),
        not_before=when,
        not_after=not_after,
    )
    ca.db.record(cert, kind, RESPONDER_CARD_ID, issued_at=when)
    key_path = responder_key_path(ca.directory, kind)
    cert_path = responder_cert_path(ca.directory, kind)
    write_atomic(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        mode=0o600,
    )
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return ResponderCredentials(kind, cert, key, cert_path, key_path)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    public_key = issuer.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey) or cert.signature_hash_algorithm is None:
        return False
    try:
        public_key.verify(
            cert.signature,
            cert.tbs_certificate_bytes,
            padding.PKCS1v15(),
            cert.signature_hash_algorithm,
        )
    except InvalidSignature:
        return False
    return True


def load_responder(ca: TestCA, kind: CaKind) -> ResponderCredentials | None:
    """The responder credentials kept in ``ca``'s directory, or None when they are missing,
    unreadable, mismatched (key vs certificate), not issued by the current root, or lack the
    OCSPSigning EKU. Validity dates are not checked here (see :func:`ensure_responder`)."""
    kind = profiles._check_kind(kind)
    cert_path = responder_cert_path(ca.directory, kind)
    key_path = responder_key_path(ca.directory, kind)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, rsa.RSAPrivateKey):
        return None
    cert_key = cert.public_key()
    if not isinstance(cert_key, rsa.RSAPublicKey):
        return None
    if cert_key.public_numbers() != key.public_key().public_numbers():
        return None
    if not _issued_by(cert, ca.ca_cert(kind)):
        return None
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        return None
    return ResponderCredentials(kind, cert, key, cert_path, key_path)


def ensure_responder(
    ca: TestCA,
    kind: CaKind,
    key: rsa.RSAPrivateKey | None = None,
    *,
    at: _dt.datetime | None = None,
    validity: _dt.timedelta = DEFAULT_RESPONDER_VALIDITY,
    renew_before: _dt.timedelta = DEFAULT_RENEW_BEFORE,
) -> ResponderCredentials:
    """The current responder credentials for ``kind``, issuing new ones when needed.

    The stored credentials are kept when they load (see :func:`load_responder`), are already
    valid at ``at`` (default: the CA clock's now) and stay valid for at least ``renew_before``.
    Otherwise a new certificate is issued with ``key`` (default: the stored key if it is still
    usable, else a fresh one).
    """
    kind = profiles._check_kind(kind)
    now = at if at is not None else ca.clock.now()
    current = load_responder(ca, kind)
    if current is not None:
        cert = current.cert
        lasts = (
            now + renew_before < cert.not_valid_after_utc
            or cert.not_valid_after_utc >= ca.ca_cert(kind).not_valid_after_utc
        )
        if cert.not_valid_before_utc <= now < cert.not_valid_after_utc and lasts:
            return current
        if key is None:
            key = current.key
    return issue_responder_cert(ca, kind, key, validity=validity, issued_at=now)
