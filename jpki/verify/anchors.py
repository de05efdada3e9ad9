"""Trust anchors per kind: the J-LIS roots shipped with jpki, a test CA's roots, any PEM.

JPKI has two hierarchies, one per kind of certificate: signing (署名用) and user authentication
(利用者証明用). Each is a single tier — every card certificate is issued directly by a
self-signed root — and the real roots come in generations (2015, expired 2025-10-19; 2023)
that share one distinguished name and differ in their keys. A :class:`TrustStore` therefore
keeps its anchors per kind and finds candidates for a certificate by issuer name, then by key
identifier.

```python
trust = TrustStore.jlis()                          # the real J-LIS roots (package data)
trust = TrustStore.from_ca_dir(home / "ca")        # the emulator's test CA
trust = TrustStore.jlis() + TrustStore.from_ca_dir(home / "ca")
trust = TrustStore.from_pem("roots/", "extra_auth_root.pem", kind="auth")
trust = TrustStore.for_home(home, extra_pem=["more_roots/"])   # what a jpki home trusts
```

Every anchor is checked when it is loaded: a CA certificate (basicConstraints CA) whose key
usage allows keyCertSign, and, when it is self-issued, whose self-signature verifies. A file
that is not such a certificate raises :class:`jpki.errors.UsageError`: a trust store is
configuration, and a broken one must not start a server that then fails every validation.
Expired anchors are kept (a past validation time may need them); the validator checks each
anchor's validity at the validation time.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path

from asn1crypto import keys as _keys
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtensionOID, NameOID

from jpki.errors import UsageError
from jpki.verify.result import KINDS, Kind

__all__ = ["Anchor", "TrustStore", "infer_kind", "key_hash", "public_key_bits"]

#: File names of a test CA directory's roots (``jpki.pki.TestCA`` layout).
_CA_DIR_FILES: dict[Kind, str] = {"sign": "sign_ca.pem", "auth": "auth_ca.pem"}
#: The test CA's folder in a jpki home (``jpki.home.Home.ca_dir``; not imported from there, as
#: jpki.home reaches the card layers that verification must not import).
HOME_CA_DIR = "ca"
#: Words of the OU that names a JPKI root's purpose (real and test roots alike).
_OU_WORDS: dict[Kind, str] = {"sign": "digital signature", "auth": "user authentication"}


def public_key_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING contents of ``cert`` (what OCSP CertIDs hash)."""
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return bytes(_keys.PublicKeyInfo.load(spki)["public_key"].contents[1:])


def key_hash(cert: x509.Certificate) -> bytes:
    """SHA-1 of the subjectPublicKey BIT STRING of ``cert``: the OCSP ``byKey`` responder id,
    the CertID issuerKeyHash and the usual (RFC 5280 §4.2.1.2 method 1) key identifier."""
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


@dataclasses.dataclass(frozen=True, eq=False)
class Anchor:
    """One trusted root, with what the validator needs from it precomputed."""

    cert: x509.Certificate
    kind: Kind
    source: str
    fingerprint: bytes  # SHA-256 of the DER
    subject: str  # RFC 4514
    subject_der: bytes
    key_id: bytes  # subjectKeyIdentifier, or the SHA-1 key hash when absent
    key_hash: bytes  # SHA-1 of the subjectPublicKey bits
    key_bits: bytes  # the subjectPublicKey BIT STRING contents (OCSP CertID key hashes)
    public_key: CertificatePublicKeyTypes
    not_before: _dt.datetime
    not_after: _dt.datetime

    @classmethod
    def from_certificate(cls, cert: x509.Certificate, kind: Kind, source: str) -> Anchor:
        """Check ``cert`` as a trust anchor of ``kind`` and wrap it (UsageError if unfit)."""
        if kind not in KINDS:
            raise UsageError(f"anchor kind must be 'sign' or 'auth', not {kind!r}")
        try:
            bc = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
        except x509.ExtensionNotFound:
            bc = None
        except ValueError as exc:
            raise UsageError(f"{source}: unreadable extensions: {exc}") from None
        if not isinstance(bc, x509.BasicConstraints) or not bc.ca:
            raise UsageError(f"{source}: not a CA certificate (no basicConstraints CA:TRUE)")
        try:
            ku = cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
        except x509.ExtensionNotFound:
            ku = None
        if not isinstance(ku, x509.KeyUsage) or not ku.key_cert_sign:
            raise UsageError(f"{source}: the key usage does not allow certificate signing")
        if cert.issuer == cert.subject:
            try:
                cert.verify_directly_issued_by(cert)
            except Exception as exc:  # noqa: BLE001 - InvalidSignature, ValueError, TypeError
                raise UsageError(
                    f"{source}: the self-signature does not verify ({type(exc).__name__})"
                ) from None
        try:
            ski = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER).value
            key_id = ski.digest if isinstance(ski, x509.SubjectKeyIdentifier) else key_hash(cert)
        except x509.ExtensionNotFound:
            key_id = key_hash(cert)
        return cls(
            cert=cert,
            kind=kind,
            source=source,
            fingerprint=hashlib.sha256(cert.public_bytes(Encoding.DER)).digest(),
            subject=cert.subject.rfc4514_string(),
            subject_der=cert.subject.public_bytes(),
            key_id=key_id,
            key_hash=key_hash(cert),
            key_bits=public_key_bits(cert),
            public_key=cert.public_key(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )

    def __repr__(self) -> str:
        return f"Anchor({self.kind}, {self.subject!r}, until {self.not_after.date()}, {self.source})"


def infer_kind(cert: x509.Certificate, filename: str | None = None) -> Kind | None:
    """The kind of a JPKI root: from a ``sign_``/``auth_`` file-name prefix, else from the
    purpose the OU names ("JPKI for digital signature" / "JPKI for user authentication")."""
    if filename is not None:
        by_name = infer_kind_from_name(Path(filename).name)
        if by_name is not None:
            return by_name
    found: set[Kind] = set()
    for attr in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME):
        text = str(attr.value).lower()
        found.update(kind for kind, words in _OU_WORDS.items() if words in text)
    return found.pop() if len(found) == 1 else None


def _pem_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".pem", ".crt") and p.is_file())
    if path.is_file():
        return [path]
    raise UsageError(f"no such trust-anchor file or directory: {path}")


def _load_pem(data: bytes, source: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise UsageError(f"{source}: not a PEM certificate file ({exc})") from None
    return certs


class TrustStore:
    """An immutable set of trust anchors, each for one kind (``'sign'`` or ``'auth'``).

    Combine stores with ``+``; the same certificate is kept once per kind.
    """

    def __init__(self, anchors: Iterable[Anchor] = ()) -> None:
        seen: set[tuple[str, bytes]] = set()
        kept: list[Anchor] = []
        for anchor in anchors:
            if not isinstance(anchor, Anchor):
                raise UsageError("a TrustStore holds Anchor objects")
            if (anchor.kind, anchor.fingerprint) not in seen:
                seen.add((anchor.kind, anchor.fingerprint))
                kept.append(anchor)
        self._anchors: tuple[Anchor, ...] = tuple(kept)
        self._by_name: dict[tuple[str, bytes], tuple[Anchor, ...]] = {}
        for anchor in kept:
            key = (anchor.kind, anchor.subject_der)
            self._by_name[key] = (*self._by_name.get(key, ()), anchor)

    # -- construction

    @classmethod
    def from_certificates(
        cls, certs: Iterable[x509.Certificate], *, kind: Kind | None = None, source: str = "memory"
    ) -> TrustStore:
        """Anchors from certificate objects; ``kind`` is inferred from each OU when None."""
        anchors = []
        for cert in certs:
            k = kind or infer_kind(cert)
            if k is None:
                raise UsageError(
                    f"{source}: cannot tell whether {cert.subject.rfc4514_string()} is a signing "
                    "or an authentication root; pass kind='sign' or kind='auth'"
                )
            anchors.append(Anchor.from_certificate(cert, k, source))
        return cls(anchors)

    @classmethod
    def from_pem(cls, *paths: Path | str, kind: Kind | None = None) -> TrustStore:
        """Anchors from PEM files, or directories of ``*.pem``/``*.crt`` files (a file may hold
        several certificates). ``kind`` applies to all; when None it comes from a ``sign_`` /
        ``auth_`` file-name prefix, else from the root's OU."""
        anchors: list[Anchor] = []
        for path in paths:
            for file in _pem_files(Path(path)):
                try:
                    data = file.read_bytes()
                except OSError as exc:
                    raise UsageError(f"cannot read {file}: {exc}") from None
                for cert in _load_pem(data, str(file)):
                    k = kind or infer_kind(cert, file.name)
                    if k is None:
                        raise UsageError(
                            f"{file}: cannot tell the kind of {cert.subject.rfc4514_string()};"
                            " name the file sign_*.pem / auth_*.pem or pass kind="
                        )
                    anchors.append(Anchor.from_certificate(cert, k, str(file)))
        return cls(anchors)

    @classmethod
    def jlis(cls) -> TrustStore:
        """The real J-LIS roots shipped in ``jpki/roots`` (every generation, both kinds)."""
        anchors: list[Anchor] = []
        roots = resources.files("jpki") / "roots"
        for entry in sorted(roots.iterdir(), key=lambda e: e.name):
            name = entry.name
            if not name.endswith(".pem"):
                continue
            kind = infer_kind_from_name(name)
            if kind is None:
                continue
            for cert in _load_pem(entry.read_bytes(), f"jpki/roots/{name}"):
                anchors.append(Anchor.from_certificate(cert, kind, f"jpki/roots/{name}"))
        if not anchors:
            raise UsageError("the J-LIS roots are missing from this installation (jpki/roots)")
        return cls(anchors)

    @classmethod
    def from_ca_dir(cls, path: Path | str) -> TrustStore:
        """The two roots of a test CA directory (``sign_ca.pem``, ``auth_ca.pem``), e.g.
        ``home / "ca"``. The delegated OCSP responder certificates beside them are not anchors."""
        directory = Path(path)
        anchors: list[Anchor] = []
        for kind, name in _CA_DIR_FILES.items():
            file = directory / name
            try:
                data = file.read_bytes()
            except OSError as exc:
                raise UsageError(f"no test CA root in {directory}: {exc}") from None
            anchors += [Anchor.from_certificate(c, kind, str(file)) for c in _load_pem(data, str(file))]
        return cls(anchors)

    @classmethod
    def for_home(cls, home: Path | str, extra_pem: Iterable[Path | str] = ()) -> TrustStore:
        """What a jpki home trusts, the one rule of ``jpki cert verify``, ``jpki verify`` and the
        relying party (``jpki rp serve``): the J-LIS roots, the home's test CA (``home/ca``)
        when it has one, and ``extra_pem`` (files or folders, as :meth:`from_pem`).

        A test CA folder holding only one of its two roots is a UsageError (a damaged home), not
        a smaller store that would refuse the other kind for a reason nobody could find.
        """
        store = cls.jlis()
        ca_dir = Path(home).expanduser() / HOME_CA_DIR
        if any((ca_dir / name).exists() for name in _CA_DIR_FILES.values()):
            store = store + cls.from_ca_dir(ca_dir)
        extra = tuple(extra_pem)
        if extra:
            store = store + cls.from_pem(*extra)
        return store

    # -- use

    def __add__(self, other: object) -> TrustStore:
        if not isinstance(other, TrustStore):
            return NotImplemented
        return TrustStore(self._anchors + other._anchors)

    def __iter__(self) -> Iterator[Anchor]:
        return iter(self._anchors)

    def __len__(self) -> int:
        return len(self._anchors)

    def __repr__(self) -> str:
        counts = {k: len(self.anchors(k)) for k in KINDS}
        return f"TrustStore(sign={counts['sign']}, auth={counts['auth']})"

    def anchors(self, kind: Kind | None = None) -> tuple[Anchor, ...]:
        """Every anchor, or those of ``kind``."""
        return self._anchors if kind is None else tuple(a for a in self._anchors if a.kind == kind)

    def candidates(self, kind: str, issuer_der: bytes) -> tuple[Anchor, ...]:
        """Anchors of ``kind`` whose subject is ``issuer_der`` (a DER Name), byte for byte."""
        return self._by_name.get((kind, issuer_der), ())


def infer_kind_from_name(filename: str) -> Kind | None:
    """``'sign'`` / ``'auth'`` from a ``sign_…`` / ``auth_…`` file name, else None."""
    for kind in KINDS:
        if filename.startswith(f"{kind}_"):
            return kind
    return None
