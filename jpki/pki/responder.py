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

The responder key type is a setting (:data:`RESPONDER_KEY_TYPES`):

* ``rsa`` (the default): RSA-2048, like every other key of JPKI; signing a response takes about
  0.9 ms;
* ``ec``: ECDSA P-256, certified by the RSA root (RFC 6960 §4.2.2.2 puts no constraint on the
  delegate's key type; responses are signed ``ecdsa-with-SHA256``); signing takes about 40 µs
  (some twenty times less), so a responder that must sign a fresh response for most requests
  answers more than twice as many of them (``benchmarks/revocation.py --section ocsp``).

:func:`ensure_responder` given a ``key_type`` replaces a stored responder whose key is of the
other type (a new key, a new certificate): switching the setting on an existing CA directory
takes effect at the next start.

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
creds = ensure_responder(ca, "auth", key_type="ec")   # an ECDSA P-256 responder (re-issued if RSA)
```
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jpki.errors import UsageError
from jpki.fileio import write_atomic
from jpki.pki import profiles
from jpki.pki.ca import TestCA
from jpki.pki.profiles import CaKind

__all__ = [
    "DEFAULT_RENEW_BEFORE",
    "DEFAULT_RESPONDER_KEY_TYPE",
    "DEFAULT_RESPONDER_VALIDITY",
    "RESPONDER_CARD_ID",
    "RESPONDER_KEY_TYPES",
    "ResponderCredentials",
    "ResponderKey",
    "ResponderKeyType",
    "build_responder_certificate",
    "check_key_type",
    "ensure_responder",
    "issue_responder_cert",
    "key_type_of",
    "load_responder",
    "new_responder_key",
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

#: ``rsa``: RSA-2048 (or the ``key_size`` asked for); ``ec``: ECDSA on NIST P-256.
ResponderKeyType: TypeAlias = Literal["rsa", "ec"]
RESPONDER_KEY_TYPES: tuple[ResponderKeyType, ...] = ("rsa", "ec")
DEFAULT_RESPONDER_KEY_TYPE: ResponderKeyType = "rsa"
#: A responder's private key.
ResponderKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_MIN_RSA_BITS = 2048


def check_key_type(key_type: str) -> ResponderKeyType:
    """``key_type`` if it is one of :data:`RESPONDER_KEY_TYPES`, else UsageError."""
    if key_type == "rsa":
        return "rsa"
    if key_type == "ec":
        return "ec"
    raise UsageError(f"unknown responder key type {key_type!r} (use rsa or ec)")


def key_type_of(key: object) -> ResponderKeyType | None:
    """The responder key type of a private or public ``key``: ``rsa`` for an RSA key of at least
    2048 bits, ``ec`` for a P-256 key; None for anything else (not a usable responder key)."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "rsa" if key.key_size >= _MIN_RSA_BITS else None
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return "ec" if isinstance(key.curve, ec.SECP256R1) else None
    return None


def new_responder_key(key_type: ResponderKeyType = DEFAULT_RESPONDER_KEY_TYPE, *,
                      key_size: int = 2048) -> ResponderKey:
    """A fresh responder key: RSA of ``key_size`` bits (at least 2048), or ECDSA P-256."""
    if check_key_type(key_type) == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_size < _MIN_RSA_BITS:
        raise UsageError(f"responder keys must have at least {_MIN_RSA_BITS} bits")
    return rsa.generate_private_key(65537, key_size)


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclasses.dataclass(frozen=True)
class ResponderCredentials:
    """A responder certificate, its key and where they are kept."""

    kind: CaKind
    cert: x509.Certificate
    key: ResponderKey
    cert_path: Path
    key_path: Path

    @property
    def not_after(self) -> _dt.datetime:
        return self.cert.not_valid_after_utc

    @property
    def key_type(self) -> ResponderKeyType:
        """``rsa`` or ``ec``."""
        found = key_type_of(self.key)
        assert found is not None  # only usable keys are loaded or issued
        return found


def responder_cert_path(ca_dir: Path | str, kind: CaKind) -> Path:
    """``{ca_dir}/{kind}_ocsp.pem``."""
    return Path(ca_dir) / f"{profiles._check_kind(kind)}_ocsp.pem"


def responder_key_path(ca_dir: Path | str, kind: CaKind) -> Path:
    """``{ca_dir}/{kind}_ocsp.key``."""
    return Path(ca_dir) / f"{profiles._check_kind(kind)}_ocsp.key"


def responder_name(kind: CaKind) -> x509.Name:
    """The CA's DN plus ``CN=OCSP responder (TEST …)``."""
    return x509.Name(
        [*profiles.ca_name(kind), x509.NameAttribute(NameOID.COMMON_NAME, RESPONDER_CN)]
    )


def build_responder_certificate(
    kind: CaKind,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    *,
    issuer_cert: x509.Certificate,
    issuer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    serial: int,
    not_before: _dt.datetime,
    not_after: _dt.datetime,
) -> x509.Certificate:
    """A delegated OCSP responder certificate for the ``kind`` root (pure: no files, no DB).

    ``public_key`` is the responder's: RSA (at least 2048 bits) or ECDSA P-256. The certificate
    is signed by ``issuer_key`` with SHA-256 whatever the responder's key type.
    """
    if key_type_of(public_key) is None:
        raise UsageError(
            f"responder keys are RSA (>= {_MIN_RSA_BITS} bits) or ECDSA P-256,"
            f" got {type(public_key).__name__}"
        )
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
            profiles.key_usage(digital_signature=True),
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
    key: ResponderKey | None = None,
    *,
    key_type: ResponderKeyType | None = None,
    validity: _dt.timedelta = DEFAULT_RESPONDER_VALIDITY,
    issued_at: _dt.datetime | None = None,
    key_size: int = 2048,
) -> ResponderCredentials:
    """Issue a responder certificate for ``ca``'s ``kind`` root, record it, write key and cert.

    ``key`` is the responder's key: RSA (at least 2048 bits) or ECDSA P-256. Without one, a new
    key of ``key_type`` is made (default ``rsa``: ``key_size`` bits; ``ec``: P-256); a ``key``
    of another type than ``key_type`` is a UsageError. The certificate is valid from
    ``issued_at`` (default: the CA clock's now) for ``validity``, capped at the root's end. The
    key is written first (0600 from creation), then the certificate, each atomically; both
    replace an earlier responder's files. Returns the new credentials.
    """
    kind = profiles._check_kind(kind)
    if key_type is not None:
        key_type = check_key_type(key_type)
    if validity <= _dt.timedelta(0):
        raise UsageError("validity must be positive")
    if key is None:
        key = new_responder_key(key_type or DEFAULT_RESPONDER_KEY_TYPE, key_size=key_size)
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)) or key_type_of(key) is None:
        raise UsageError("the responder key must be an RSA (>= 2048 bits) or ECDSA P-256 private key")
    if key_type is not None and key_type_of(key) != key_type:
        raise UsageError(f"the responder key is {key_type_of(key)}, not {key_type}")
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
    unreadable, not a usable responder key (RSA of at least 2048 bits or ECDSA P-256),
    mismatched (key vs certificate), not issued by the current root, or lack the OCSPSigning EKU.
    Either key type is loaded; validity dates are not checked here (see
    :func:`ensure_responder`)."""
    kind = profiles._check_kind(kind)
    cert_path = responder_cert_path(ca.directory, kind)
    key_path = responder_key_path(ca.directory, kind)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        # written by the CA itself (0600): skip OpenSSL's RSA check (~30 ms per load)
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None,
                                                 unsafe_skip_rsa_key_validation=True)
    except (OSError, ValueError):
        return None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)) or key_type_of(key) is None:
        return None
    try:
        if cert.public_key().public_bytes(*_SPKI) != key.public_key().public_bytes(*_SPKI):
            return None
    except (ValueError, TypeError, UnsupportedAlgorithm):  # a key cryptography cannot represent
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
    key: ResponderKey | None = None,
    *,
    key_type: ResponderKeyType | None = None,
    at: _dt.datetime | None = None,
    validity: _dt.timedelta = DEFAULT_RESPONDER_VALIDITY,
    renew_before: _dt.timedelta = DEFAULT_RENEW_BEFORE,
) -> ResponderCredentials:
    """The current responder credentials for ``kind``, issuing new ones when needed.

    ``key_type`` (``rsa`` or ``ec``; default: that of ``key`` when one is given, else whatever
    is stored, ``rsa`` for a first responder) is the key type wanted. The stored credentials are
    kept when they load (see :func:`load_responder`), their key is of the wanted type, they are
    already valid at ``at`` (default: the CA clock's now) and stay valid for at least
    ``renew_before``. Otherwise a new certificate is issued with ``key`` (default: the stored key
    if it is still usable and of the wanted type, else a fresh key of that type).
    """
    kind = profiles._check_kind(kind)
    if key_type is not None:
        key_type = check_key_type(key_type)
    if key is not None:
        given = key_type_of(key)
        if given is None:
            raise UsageError("the responder key must be an RSA (>= 2048 bits) or ECDSA P-256 private key")
        if key_type is not None and given != key_type:
            raise UsageError(f"the responder key is {given}, not {key_type}")
        key_type = given
    now = at if at is not None else ca.clock.now()
    current = load_responder(ca, kind)
    if current is not None and (key_type is None or current.key_type == key_type):
        cert = current.cert
        lasts = (
            now + renew_before < cert.not_valid_after_utc
            or cert.not_valid_after_utc >= ca.ca_cert(kind).not_valid_after_utc
        )
        if cert.not_valid_before_utc <= now < cert.not_valid_after_utc and lasts:
            return current
        if key is None:
            key = current.key
    return issue_responder_cert(ca, kind, key, key_type=key_type, validity=validity, issued_at=now)
