"""Revocation evidence that travels with a document or is handed in: OCSP responses and CRLs.

A long-term signature (CAdES-LT, PAdES B-LT) carries the OCSP responses or CRLs that proved its
signer's certificate (and its timestamp authority's) unrevoked when it was made; a verifier may
also be given such files (``jpki verify --crl FILE --ocsp-response FILE``). A
:class:`RevocationEvidence` holds those answers as DER, each marked with where it came from
(``embedded``, ``given``, or ``fetched`` when gathered for a signature to embed);
:meth:`jpki.verify.Validator.validate` checks them like answers it fetched — the responder's or
CRL issuer's signature, the CertID or issuer, the times — and
:meth:`jpki.verify.Validator.gather` returns one for a signer to embed.

An answer in the evidence is only relied on when it is verified and either says *revoked* (a
revocation from any source wins) or says *good* and was issued at or after the time it is to
speak for (minus the clock-skew tolerance): a "good" issued before the signature proves nothing
about the moment of signing. Answers about other certificates are skipped, not refused.

:func:`evidence_from_files` reads the files of ``--crl`` and ``--ocsp-response``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp as _ocsp

from jpki.errors import UsageError

__all__ = ["EVIDENCE_ORIGINS", "EvidenceItem", "EvidenceOrigin", "RevocationEvidence",
           "evidence_from_files"]

#: ``fetched``: gathered from the source for a signature to embed (:meth:`Validator.gather`);
#: ``embedded``: read from a signed document; ``given``: files the user handed in.
EvidenceOrigin = Literal["fetched", "embedded", "given"]
EVIDENCE_ORIGINS: tuple[EvidenceOrigin, ...] = ("fetched", "embedded", "given")


@dataclasses.dataclass(frozen=True, slots=True)
class EvidenceItem:
    """One OCSP response (``kind='ocsp'``, a DER OCSPResponse) or CRL (``kind='crl'``)."""

    kind: Literal["ocsp", "crl"]
    der: bytes
    origin: EvidenceOrigin
    source: str | None = None  # where it was fetched from, or the file it was read from


@dataclasses.dataclass(frozen=True, slots=True)
class RevocationEvidence:
    """OCSP responses and CRLs (DER), each with its origin; combine with ``+``."""

    items: tuple[EvidenceItem, ...] = ()

    @classmethod
    def of(cls, *, ocsp: tuple[bytes, ...] | list[bytes] = (), crls: tuple[bytes, ...] | list[bytes] = (),
           origin: EvidenceOrigin = "embedded", source: str | None = None) -> RevocationEvidence:
        """Evidence from lists of DER OCSP responses and CRLs, all of one ``origin`` (and
        ``source``: a URL or a file name)."""
        if origin not in EVIDENCE_ORIGINS:
            raise ValueError(f"origin must be one of {EVIDENCE_ORIGINS}, not {origin!r}")
        return cls(tuple(EvidenceItem("ocsp", bytes(d), origin, source) for d in ocsp)
                   + tuple(EvidenceItem("crl", bytes(d), origin, source) for d in crls))

    def __add__(self, other: object) -> RevocationEvidence:
        if not isinstance(other, RevocationEvidence):
            return NotImplemented
        seen = {item.der for item in self.items}
        return RevocationEvidence(self.items + tuple(i for i in other.items if i.der not in seen))

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ocsp(self) -> tuple[bytes, ...]:
        """The OCSP responses (DER)."""
        return tuple(i.der for i in self.items if i.kind == "ocsp")

    @property
    def crls(self) -> tuple[bytes, ...]:
        """The CRLs (DER)."""
        return tuple(i.der for i in self.items if i.kind == "crl")


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror or exc}") from None


def evidence_from_files(crls: Iterable[str | os.PathLike[str]] = (),
                        ocsp: Iterable[str | os.PathLike[str]] = ()) -> RevocationEvidence:
    """``given`` evidence from CRL files (DER or PEM) and OCSP response files (DER). A file
    that is not what its option says is a UsageError naming it (nothing is checked beyond the
    shape here: the validator checks signatures and times)."""
    items: list[EvidenceItem] = []
    for name in crls:
        path = Path(name)
        data = _read(path, "--crl")
        try:
            crl = (x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----BEGIN")
                   else x509.load_der_x509_crl(data))
        except ValueError as exc:
            raise UsageError(f"--crl {path}: not a CRL (DER or PEM): {exc}") from None
        items.append(EvidenceItem("crl", crl.public_bytes(Encoding.DER), "given", str(path)))
    for name in ocsp:
        path = Path(name)
        data = _read(path, "--ocsp-response")
        try:
            response = _ocsp.load_der_ocsp_response(data)
        except ValueError as exc:
            raise UsageError(f"--ocsp-response {path}: not a DER OCSP response: {exc}") from None
        if response.response_status is not _ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise UsageError(f"--ocsp-response {path}: the responder answered "
                             f"{response.response_status.name}, not a status")
        items.append(EvidenceItem("ocsp", data, "given", str(path)))
    return RevocationEvidence(tuple(items))
