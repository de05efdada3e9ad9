"""The test TSA's key, certificate and settings in a jpki home, and its certificate's profile.

Layout (``HOME/tsa``, made 0700)::

    tsa.json     format, the URL clients use (a port free when the TSA was made, as the CA's
                 base URL), the key type, when it was made (0644)
    tsa.key      the TSA's private key, PKCS#8 PEM, mode 0600 from creation
    tsa.pem      its certificate, issued by the test CA's signing root (0644)
    serials.db   the serial counter (:mod:`jpki.tsa.serials`, 0600)

The certificate (:func:`build_tsa_certificate`) is what RFC 3161 §2.3 and OpenSSL's
``timestampsign`` purpose ask of a TSA: the extended key usage ``id-kp-timeStamping`` alone and
critical; key usage digitalSignature and nonRepudiation (critical), nothing else; CA:FALSE. Its
CRL distribution point and OCSP URL are the test CA's (``/crl/sign.crl``, ``/ocsp/sign``) and
it is recorded in the CA database (card column :data:`TSA_CARD_ID`), so ``jpki ca serve``
answers for it, ``jpki ca revoke`` can revoke it, and a validator (openssl, pyHanko,
:func:`jpki.verify.timestamp.verify_token`) can check its path and its revocation like any
certificate of that CA.

It is made by :func:`ensure_tsa` the first time a TSA is wanted (``jpki tsa init`` or the first
``jpki tsa serve``), not by ``jpki ca init``: a CA that never time-stamps pays nothing, and
making the TSA key (RSA-2048 by default) is the slow part. A certificate is valid
:data:`DEFAULT_TSA_VALIDITY` and issued again (same key) at the next start once less than
:data:`DEFAULT_RENEW_BEFORE` remains, or when the CA's signing root changed.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from jpki.errors import JpkiError, UsageError
from jpki.fileio import write_atomic
from jpki.pki import TestCA, free_port, profiles
from jpki.pki.responder import ResponderKey, ResponderKeyType, check_key_type, key_type_of, new_responder_key
from jpki.verify.path import tsa_usage_problem

__all__ = [
    "DEFAULT_RENEW_BEFORE",
    "DEFAULT_TSA_VALIDITY",
    "TSA_CARD_ID",
    "TSA_CN",
    "TSA_DIR",
    "TsaCredentials",
    "TsaExistsError",
    "TsaNotFoundError",
    "build_tsa_certificate",
    "create_tsa",
    "ensure_tsa",
    "issue_tsa_certificate",
    "load_tsa",
    "tsa_dir",
]

#: Folder of a jpki home that holds the TSA.
TSA_DIR: Final = "tsa"
CONFIG_FILE: Final = "tsa.json"
KEY_FILE: Final = "tsa.key"
CERT_FILE: Final = "tsa.pem"
SERIALS_FILE: Final = "serials.db"
FORMAT_VERSION: Final = 1

#: The "card" column of TSA certificates in the CA database (no card name holds an ``@``).
TSA_CARD_ID: Final = "@tsa"
TSA_CN: Final = "Time-stamping authority (TEST - emulator CA, not J-LIS)"
#: The CA that certifies the TSA: the signing root (a timestamp is about signatures).
ISSUER_KIND: Final = "sign"
DEFAULT_TSA_VALIDITY: Final = _dt.timedelta(days=365)
DEFAULT_RENEW_BEFORE: Final = _dt.timedelta(days=30)
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class TsaExistsError(UsageError):
    """:func:`create_tsa` where a TSA already is (``path``)."""

    code = "tsa_exists"

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} already holds a TSA ('jpki tsa show' says where it answers)")
        self.path = path


class TsaNotFoundError(JpkiError):
    """No usable TSA in the home (``path``, ``problem``): run ``jpki tsa init``."""

    code = "no_tsa"

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"no usable TSA in {path}: {problem}")
        self.path = path
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class TsaCredentials:
    """A TSA as kept in its folder: key, certificate, the root that issued it, its URL."""

    directory: Path
    key: ResponderKey
    cert: x509.Certificate
    issuer_cert: x509.Certificate
    url: str

    @property
    def key_path(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def cert_path(self) -> Path:
        return self.directory / CERT_FILE

    @property
    def serials_path(self) -> Path:
        return self.directory / SERIALS_FILE

    @property
    def key_type(self) -> ResponderKeyType:
        found = key_type_of(self.key)
        assert found is not None  # only usable keys are loaded
        return found


def tsa_dir(home: Path | str) -> Path:
    """``HOME/tsa``."""
    return Path(home).expanduser() / TSA_DIR


def build_tsa_certificate(
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    *,
    issuer_cert: x509.Certificate,
    issuer_key: rsa.RSAPrivateKey,
    serial: int,
    not_before: _dt.datetime,
    not_after: _dt.datetime,
    base_url: str,
) -> x509.Certificate:
    """The TSA's certificate (see the module docstring); pure: no files, no database."""
    if key_type_of(public_key) is None:
        raise UsageError("a TSA key is RSA (at least 2048 bits) or ECDSA P-256")
    if not_after <= not_before:
        raise UsageError("a TSA certificate must end after it starts")
    issuer_ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    name = x509.Name([*profiles.ca_name(ISSUER_KIND), x509.NameAttribute(NameOID.COMMON_NAME, TSA_CN)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(profiles.key_usage(digital_signature=True, content_commitment=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(profiles.crl_url(base_url, ISSUER_KIND))], None, None, None)]),
            critical=False)
        .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP,
            x509.UniformResourceIdentifier(profiles.ocsp_url(base_url, ISSUER_KIND)))]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


def _utc_seconds(when: _dt.datetime) -> _dt.datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise UsageError("times must be timezone-aware")
    return when.astimezone(_dt.UTC).replace(microsecond=0)


def issue_tsa_certificate(ca: TestCA, public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, *,
                          validity: _dt.timedelta = DEFAULT_TSA_VALIDITY,
                          issued_at: _dt.datetime | None = None) -> x509.Certificate:
    """Issue and record (card :data:`TSA_CARD_ID`) a TSA certificate for ``public_key``, valid
    from ``issued_at`` (default: the CA clock's now) for ``validity``, capped at the root's end."""
    if validity <= _dt.timedelta(0):
        raise UsageError("validity must be positive")
    when = _utc_seconds(issued_at if issued_at is not None else ca.clock.now())
    issuer = ca.ca_cert(ISSUER_KIND)
    if not issuer.not_valid_before_utc <= when < issuer.not_valid_after_utc:
        raise UsageError(f"the {ISSUER_KIND} CA is not valid at {when.isoformat()}")
    while True:
        serial = profiles.new_serial()
        if ca.db.get(serial) is None:
            break
    cert = build_tsa_certificate(public_key, issuer_cert=issuer, issuer_key=ca.ca_key(ISSUER_KIND), serial=serial,
                                 not_before=when, not_after=min(when + validity, issuer.not_valid_after_utc),
                                 base_url=ca.base_url)
    ca.db.record(cert, ISSUER_KIND, TSA_CARD_ID, issued_at=when)
    return cert


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TsaNotFoundError(directory, f"{CONFIG_FILE} is missing (run 'jpki tsa init')") from None
    except (OSError, ValueError) as exc:
        raise TsaNotFoundError(directory, f"unreadable {CONFIG_FILE}: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT_VERSION or not isinstance(config.get("url"), str):
        raise TsaNotFoundError(directory, f"{CONFIG_FILE} is not a TSA configuration of format {FORMAT_VERSION}")
    return config


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def load_tsa(directory: Path | str, issuer_cert: x509.Certificate) -> TsaCredentials:
    """The TSA kept in ``directory`` (``HOME/tsa``), checked: its key usable and matching the
    certificate, the certificate issued by ``issuer_cert`` (the CA's signing root) with the
    timeStamping usage. Dates are not checked here (see :func:`ensure_tsa`). Raises
    :class:`TsaNotFoundError` saying what is wrong."""
    directory = Path(directory)
    config = _read_config(directory)
    try:
        cert = x509.load_pem_x509_certificate((directory / CERT_FILE).read_bytes())
        # written by jpki itself (0600): skip OpenSSL's RSA check (~30 ms per load)
        key = serialization.load_pem_private_key((directory / KEY_FILE).read_bytes(), password=None,
                                                 unsafe_skip_rsa_key_validation=True)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise TsaNotFoundError(directory, f"unreadable key or certificate: {exc}") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)) or key_type_of(key) is None:
        raise TsaNotFoundError(directory, f"{KEY_FILE} is not an RSA (>= 2048 bits) or ECDSA P-256 key")
    if cert.public_key().public_bytes(*_SPKI) != key.public_key().public_bytes(*_SPKI):
        raise TsaNotFoundError(directory, f"{KEY_FILE} does not match {CERT_FILE}")
    if not _issued_by(cert, issuer_cert):
        raise TsaNotFoundError(directory, f"{CERT_FILE} was not issued by the test CA's signing root")
    problem = tsa_usage_problem(cert)  # the one rule of a TSA's certificate (jpki.verify.path)
    if problem is not None:
        raise TsaNotFoundError(directory, f"{CERT_FILE} is not a time-stamping certificate: {problem}")
    return TsaCredentials(directory, key, cert, issuer_cert, str(config["url"]))


def ensure_tsa(
    home: Path | str,
    *,
    ca: TestCA,
    key: ResponderKey | None = None,
    key_type: ResponderKeyType | None = None,
    url: str | None = None,
    at: _dt.datetime | None = None,
    validity: _dt.timedelta = DEFAULT_TSA_VALIDITY,
    renew_before: _dt.timedelta = DEFAULT_RENEW_BEFORE,
) -> tuple[TsaCredentials, bool]:
    """The TSA of ``home``, made or renewed when needed, and whether anything was written.

    A home without a TSA gets one: ``key`` (tests hand a pre-made one; else a new key of
    ``key_type``, default RSA-2048), a certificate from ``ca`` and ``url`` (default
    ``http://127.0.0.1:PORT`` with a port free now) kept in ``tsa.json``. An existing TSA
    keeps its key and URL (``url``/``key_type`` given and different: UsageError, since tokens
    and clients rely on them); its certificate is issued again when it is not valid at ``at``
    (default: the CA clock's now), ends within ``renew_before``, or the CA's signing root
    changed. The key is written first (0600 from creation), then the certificate, then the
    configuration that marks the TSA complete.
    """
    directory = tsa_dir(home)
    if key_type is not None:
        key_type = check_key_type(key_type)
    if url is not None and not url.startswith(("http://", "https://")):
        raise UsageError(f"the TSA URL must be http(s), not {url!r}")
    now = at if at is not None else ca.clock.now()
    issuer = ca.ca_cert(ISSUER_KIND)
    config: dict[str, Any] | None = None
    if (directory / CONFIG_FILE).exists():
        config = _read_config(directory)
        if url is not None and url.rstrip("/") != str(config["url"]).rstrip("/"):
            raise UsageError(f"the TSA of {home} is at {config['url']}; its URL is kept (not {url})")
        url = str(config["url"])
        try:
            existing: TsaCredentials | None = load_tsa(directory, issuer)
        except TsaNotFoundError:
            existing = None  # a certificate of an earlier root, or none: issued again below
        new_key = existing.key if existing is not None else _stored_key(directory)
        if key_type is not None and key_type_of(new_key) != key_type:
            raise UsageError(f"the TSA of {home} has an {key_type_of(new_key)} key, not {key_type}")
        if existing is not None:
            cert = existing.cert
            lasts = (now + renew_before < cert.not_valid_after_utc
                     or cert.not_valid_after_utc >= issuer.not_valid_after_utc)
            if cert.not_valid_before_utc <= now < cert.not_valid_after_utc and lasts:
                return existing, False
    else:
        new_key = key if key is not None else new_responder_key(key_type or "rsa")
        if key_type_of(new_key) is None:
            raise UsageError("a TSA key is RSA (at least 2048 bits) or ECDSA P-256")
        if key_type is not None and key_type_of(new_key) != key_type:
            raise UsageError(f"the TSA key is {key_type_of(new_key)}, not {key_type}")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(directory / KEY_FILE, new_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), mode=0o600)
    cert = issue_tsa_certificate(ca, new_key.public_key(), validity=validity, issued_at=now)
    write_atomic(directory / CERT_FILE, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    if config is None:
        config = {"format": FORMAT_VERSION, "url": (url or f"http://127.0.0.1:{free_port()}").rstrip("/"),
                  "key_type": key_type_of(new_key), "created_at": _utc_seconds(now).isoformat()}
        write_atomic(directory / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode(), mode=0o644)
    return TsaCredentials(directory, new_key, cert, issuer, str(config["url"])), True


def create_tsa(home: Path | str, *, ca: TestCA, key: ResponderKey | None = None,
               key_type: ResponderKeyType | None = None, url: str | None = None) -> TsaCredentials:
    """Make the TSA of ``home`` (see :func:`ensure_tsa`); :class:`TsaExistsError` when it has one."""
    if (tsa_dir(home) / CONFIG_FILE).exists():
        raise TsaExistsError(tsa_dir(home))
    return ensure_tsa(home, ca=ca, key=key, key_type=key_type, url=url)[0]


def _stored_key(directory: Path) -> ResponderKey:
    """The key of an existing TSA (its certificate is to be issued again)."""
    try:
        key = serialization.load_pem_private_key((directory / KEY_FILE).read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise TsaNotFoundError(directory, f"unreadable {KEY_FILE} ({exc}); remove {directory} to make a new TSA"
                               ) from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)) or key_type_of(key) is None:
        raise TsaNotFoundError(directory, f"{KEY_FILE} is not an RSA (>= 2048 bits) or ECDSA P-256 key")
    return key
