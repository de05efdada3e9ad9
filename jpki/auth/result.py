"""What a completed login or eKYC returns: reason codes, the account, the verified identity.

Every outcome is a frozen result object, never an exception: ``ok`` and, when not ok, one
machine-readable :class:`AuthReason` (a ``str`` enum: it compares equal to, and serialises as,
its text) plus a message. ``summary()`` and the log lines never contain personal data (name,
address, birth date, sex, My Number); certificate serial numbers and issuer names do appear.
The verified basic 4 info is only in :attr:`EkycResult.identity`, whose ``repr`` is masked.

Reason codes, in the order the relying party checks them (see ``docs/auth-protocol.md``):

``malformed``
    the response is not a valid document: JSON, base64url, a field, the signed encoding, the
    CMS or the certificate cannot be decoded.
``too-large``
    the HTTP body exceeds the service's limit (only from :mod:`jpki.auth.service`).
``wrong-purpose``
    a login answered with an eKYC challenge or the reverse.
``wrong-rp``
    the card signed for another relying party, or the challenge was issued by another one.
``replayed``
    the challenge is not pending: it was already used (or never issued by this relying party).
``expired``
    the challenge expired before the response arrived.
``challenge-mismatch``
    the signed data does not match the stored challenge (nonce, expiry or transaction text).
``bad-signature``
    the signature (or the CMS) does not verify with the certificate's key.
``wrong-key-kind``
    a signing certificate used for login or a user-authentication certificate for eKYC (the
    card's other key), or no JPKI certificate at all.
``untrusted``
    the certificate was not issued by a trusted root (unknown issuer, bad certificate
    signature, refused path, unknown critical extension).
``certificate-not-yet-valid`` / ``expired-certificate``
    the certificate (or its root) is not valid at the time of the check.
``revoked``
    OCSP or the CRL says the certificate is revoked (a lost card, a renewed one).
``revocation-unavailable``
    no revocation source could be reached (hard-fail).
``revocation-check-failed``
    a revocation answer arrived and failed a check, or OCSP answered ``unknown``.
``identity-unreadable``
    eKYC: the signing certificate does not carry a readable basic 4 info.
``store-unavailable``
    the challenge store could not be reached (the HTTP service answers 503).
``account-unavailable``
    login: the renewal-link source failed while resolving the account.
``internal-error``
    anything unexpected: the relying party fails closed.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import hashlib
from typing import Any, Literal

from cryptography import x509

from jpki.certinfo import SigningIdentity
from jpki.identity import mask_text
from jpki.verify.result import Reason, ValidationResult

__all__ = [
    "Account",
    "AuthReason",
    "AuthResult",
    "CertRef",
    "EkycResult",
    "LoginResult",
    "VerifiedIdentity",
    "reason_from_validation",
]


class AuthReason(enum.StrEnum):
    """Why a login or eKYC was refused (see the module docstring)."""

    MALFORMED = "malformed"
    TOO_LARGE = "too-large"
    WRONG_PURPOSE = "wrong-purpose"
    WRONG_RP = "wrong-rp"
    REPLAYED = "replayed"
    EXPIRED = "expired"
    CHALLENGE_MISMATCH = "challenge-mismatch"
    BAD_SIGNATURE = "bad-signature"
    WRONG_KEY_KIND = "wrong-key-kind"
    UNTRUSTED = "untrusted"
    CERTIFICATE_NOT_YET_VALID = "certificate-not-yet-valid"
    EXPIRED_CERTIFICATE = "expired-certificate"
    REVOKED = "revoked"
    REVOCATION_UNAVAILABLE = "revocation-unavailable"
    REVOCATION_CHECK_FAILED = "revocation-check-failed"
    IDENTITY_UNREADABLE = "identity-unreadable"
    STORE_UNAVAILABLE = "store-unavailable"
    ACCOUNT_UNAVAILABLE = "account-unavailable"
    INTERNAL_ERROR = "internal-error"


_FROM_VALIDATION: dict[Reason, AuthReason] = {
    Reason.MALFORMED_CERTIFICATE: AuthReason.MALFORMED,
    Reason.WRONG_KIND: AuthReason.WRONG_KEY_KIND,
    Reason.UNSUPPORTED_CRITICAL_EXTENSION: AuthReason.UNTRUSTED,
    Reason.UNTRUSTED_ISSUER: AuthReason.UNTRUSTED,
    Reason.BAD_SIGNATURE: AuthReason.UNTRUSTED,
    Reason.PATH_REJECTED: AuthReason.UNTRUSTED,
    Reason.NOT_YET_VALID: AuthReason.CERTIFICATE_NOT_YET_VALID,
    Reason.EXPIRED: AuthReason.EXPIRED_CERTIFICATE,
    Reason.REVOKED: AuthReason.REVOKED,
    Reason.REVOCATION_UNAVAILABLE: AuthReason.REVOCATION_UNAVAILABLE,
    Reason.INTERNAL_ERROR: AuthReason.INTERNAL_ERROR,
}


def reason_from_validation(reason: Reason | str | None) -> AuthReason:
    """The :class:`AuthReason` for a failed certificate validation's :class:`Reason`
    (OCSP and CRL integrity failures and ``ocsp-unknown`` become ``revocation-check-failed``)."""
    if reason is None:
        return AuthReason.INTERNAL_ERROR
    try:
        return _FROM_VALIDATION[Reason(reason)]
    except (KeyError, ValueError):
        return AuthReason.REVOCATION_CHECK_FAILED if str(reason).startswith(("ocsp-", "crl-")) \
            else AuthReason.INTERNAL_ERROR


def _iso(when: _dt.datetime | None) -> str | None:
    return None if when is None else when.astimezone(_dt.UTC).isoformat()


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class CertRef:
    """A certificate named by its issuer (RFC 4514 text of the issuer's DN) and serial number:
    what renewal links connect."""

    issuer: str
    serial: int

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertRef:
        """The reference of ``cert``."""
        return cls(cert.issuer.rfc4514_string(), cert.serial_number)

    @property
    def serial_hex(self) -> str:
        """The serial number in upper-case hex."""
        return format(self.serial, "X")

    def __str__(self) -> str:
        return f"{self.serial_hex} ({self.issuer})"


@dataclasses.dataclass(frozen=True, slots=True)
class Account:
    """The stable account of a card holder: the first user-authentication certificate of its
    renewal chain (issuer + serial).

    ``key`` is the text to store in a user table: ``jpki1:`` + 16 hex digits of the SHA-256 of
    the issuer name + ``:`` + the serial in upper-case hex. A renewed card (new certificate,
    linked to the old one) gets the same key; ``renewals`` says how many links were followed
    back from the certificate that logged in.
    """

    origin: CertRef
    renewals: int = 0

    @property
    def key(self) -> str:
        """The account key (see the class docstring)."""
        digest = hashlib.sha256(self.origin.issuer.encode("utf-8")).hexdigest()[:16]
        return f"jpki1:{digest}:{self.origin.serial_hex}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"key": self.key, "issuer": self.origin.issuer, "serial": self.origin.serial_hex,
                "renewals": self.renewals}


@dataclasses.dataclass(frozen=True, slots=True)
class VerifiedIdentity:
    """The basic 4 info (基本4情報) of a verified signing certificate.

    ``birth_date`` is None when the certificate codes it as unknown. ``sex`` is ``'male'``,
    ``'female'`` or ``'unknown'``. ``substituted`` is True when the issuer replaced a character
    of the name or address by a substitute (the certificate holds a substitute map). The
    ``repr`` masks the name and address and shows only the birth year, so that an identity
    that ends up in a log line or a traceback does not leak.
    """

    name: str
    address: str
    birth_date: _dt.date | None
    sex: Literal["male", "female", "unknown"]
    substituted: bool = False

    @classmethod
    def from_signing_identity(cls, ident: SigningIdentity) -> VerifiedIdentity:
        """From :func:`jpki.certinfo.signing_identity`'s result."""
        return cls(name=ident.name, address=ident.address, birth_date=ident.birth_date,
                   sex=ident.sex.value, substituted=ident.has_substitutes)

    def to_json(self) -> dict[str, Any]:
        """The 4 info as JSON: ``name``, ``address``, ``birth_date`` (ISO 8601 or None), ``sex``."""
        return {"name": self.name, "address": self.address,
                "birth_date": None if self.birth_date is None else self.birth_date.isoformat(),
                "sex": self.sex, "substituted": self.substituted}

    def masked(self) -> dict[str, str]:
        """A form safe for logs: name and address masked, the birth year only."""
        return {"name": mask_text(self.name), "address": mask_text(self.address),
                "birth_year": "unknown" if self.birth_date is None else str(self.birth_date.year),
                "sex": self.sex}

    def __repr__(self) -> str:
        m = self.masked()
        return (f"VerifiedIdentity(name={m['name']!r}, address={m['address']!r}, "
                f"birth_year={m['birth_year']}, sex={self.sex!r})")


def _validation_dict(validation: ValidationResult | None) -> dict[str, Any] | None:
    """The validation evidence without the subject (which may name a municipality)."""
    if validation is None:
        return None
    return {
        "ok": validation.ok,
        "reason": None if validation.reason is None else str(validation.reason),
        "kind": validation.kind,
        "detected_kind": validation.detected_kind,
        "anchor": validation.anchor,
        "not_after": _iso(validation.not_after),
        "revocation": None if validation.revocation is None else validation.revocation.to_json(),
        "warnings": list(validation.warnings),
    }


@dataclasses.dataclass(frozen=True, slots=True)
class AuthResult:
    """Fields common to :class:`LoginResult` and :class:`EkycResult`.

    ``ok`` is True only when every check passed (then ``reason`` is None). ``purpose`` is
    ``'login'`` or ``'ekyc'``; ``challenge_id`` the challenge answered (when the response named
    one); ``checked_at`` the relying party's clock at the check. ``certificate`` is the
    presented certificate's issuer and serial (when it could be parsed); ``validation`` the
    certificate validation's result (when it ran).
    """

    ok: bool
    reason: AuthReason | None
    message: str
    purpose: Literal["login", "ekyc"]
    checked_at: _dt.datetime
    challenge_id: str | None = None
    certificate: CertRef | None = None
    validation: ValidationResult | None = dataclasses.field(default=None, repr=False)

    def _head(self) -> str:
        what = "login" if self.purpose == "login" else "eKYC"
        return f"{what} OK" if self.ok else f"{what} FAILED ({self.reason})"

    def _common(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reason": None if self.reason is None else str(self.reason),
            "message": self.message,
            "purpose": self.purpose,
            "challenge_id": self.challenge_id,
            "checked_at": _iso(self.checked_at),
            "certificate": None if self.certificate is None else
            {"issuer": self.certificate.issuer, "serial": self.certificate.serial_hex},
            "validation": _validation_dict(self.validation),
        }

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields common to both results (each subclass adds its own)."""
        return self._common()


@dataclasses.dataclass(frozen=True, slots=True)
class LoginResult(AuthResult):
    """The outcome of :meth:`jpki.auth.rp.RelyingParty.complete_login`: on success ``account``
    is the card holder's stable :class:`Account`."""

    account: Account | None = None

    def summary(self) -> str:
        """One line without personal data."""
        if self.ok and self.account is not None and self.certificate is not None:
            renewed = f", {self.account.renewals} renewal(s) followed" if self.account.renewals else ""
            return (f"{self._head()}: account {self.account.key} (certificate {self.certificate.serial_hex}"
                    f"{renewed})")
        return f"{self._head()}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (no personal data: a login carries none)."""
        out = self._common()
        out["account"] = None if self.account is None else self.account.to_json()
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class EkycResult(AuthResult):
    """The outcome of :meth:`jpki.auth.rp.RelyingParty.complete_ekyc`: on success ``identity``
    is the verified basic 4 info and ``transaction_text`` the text the holder signed."""

    identity: VerifiedIdentity | None = None
    transaction_text: str | None = None
    signed_at: _dt.datetime | None = None

    def summary(self) -> str:
        """One line without personal data."""
        if self.ok and self.certificate is not None:
            return f"{self._head()}: basic 4 info verified (signing certificate {self.certificate.serial_hex})"
        return f"{self._head()}: {self.message}"

    def to_json(self, *, include_identity: bool = True) -> dict[str, Any]:
        """A JSON-ready dict; the identity (personal data) only with ``include_identity``."""
        out = self._common()
        out["identity"] = (self.identity.to_json() if include_identity and self.identity is not None
                           else None)
        out["transaction_text"] = self.transaction_text
        out["signed_at"] = _iso(self.signed_at)
        return out
