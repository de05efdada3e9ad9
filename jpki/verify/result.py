"""What a validation returns: reason codes, the revocation evidence and the frozen result.

Every failure carries one machine-readable :class:`Reason` (a ``str`` enum: it compares equal to,
and serialises as, its text). See :mod:`jpki.verify` for the list with what each code means.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
from typing import Any, Literal

__all__ = [
    "INTEGRITY_REASONS",
    "KINDS",
    "VALIDATION_KINDS",
    "Kind",
    "Reason",
    "RevocationInfo",
    "RevocationMethod",
    "RevocationOrigin",
    "RevocationStatus",
    "ValidationResult",
]

Kind = Literal["sign", "auth"]
KINDS: tuple[Kind, ...] = ("sign", "auth")

RevocationMethod = Literal["ocsp", "crl", "none"]
RevocationStatus = Literal["good", "revoked", "unknown", "unavailable", "not-checked"]

#: What :meth:`jpki.verify.Validator.validate` may be asked to check: a card certificate of one
#: kind, or a timestamp authority's certificate (``'tsa'``: the critical id-kp-timeStamping EKU,
#: issued by any trusted root).
VALIDATION_KINDS: tuple[str, ...] = ("sign", "auth", "tsa")
#: How a revocation answer reached the validator (see :class:`RevocationInfo`).
RevocationOrigin = Literal["fetched", "embedded", "given"]

_KIND_NAMES = {"sign": "signing", "auth": "user-authentication", "ca": "CA", "tsa": "timestamp authority"}


class Reason(enum.StrEnum):
    """Why a validation failed (``ValidationResult.reason``)."""

    # the certificate and its path
    MALFORMED_CERTIFICATE = "malformed-certificate"
    WRONG_KIND = "wrong-kind"
    UNSUPPORTED_CRITICAL_EXTENSION = "unsupported-critical-extension"
    UNTRUSTED_ISSUER = "untrusted-issuer"
    BAD_SIGNATURE = "bad-signature"
    PATH_REJECTED = "path-rejected"
    NOT_YET_VALID = "not-yet-valid"
    EXPIRED = "expired"
    # revocation
    REVOKED = "revoked"
    REVOCATION_UNAVAILABLE = "revocation-unavailable"
    OCSP_MALFORMED = "ocsp-malformed"
    OCSP_BAD_SIGNATURE = "ocsp-bad-signature"
    OCSP_UNAUTHORISED_RESPONDER = "ocsp-unauthorised-responder"
    OCSP_CERTID_MISMATCH = "ocsp-certid-mismatch"
    OCSP_NONCE_MISMATCH = "ocsp-nonce-mismatch"
    OCSP_STALE = "ocsp-stale"
    OCSP_NOT_YET_VALID = "ocsp-not-yet-valid"
    OCSP_UNKNOWN = "ocsp-unknown"
    CRL_MALFORMED = "crl-malformed"
    CRL_ISSUER_MISMATCH = "crl-issuer-mismatch"
    CRL_SIGNATURE_INVALID = "crl-signature-invalid"
    CRL_UNSUPPORTED_EXTENSION = "crl-unsupported-extension"
    CRL_NOT_YET_VALID = "crl-not-yet-valid"
    CRL_EXPIRED = "crl-expired"
    # the validator itself
    INTERNAL_ERROR = "internal-error"


#: Reasons that mean a revocation answer was received but could not be trusted. Soft-fail never
#: excuses them (it only excuses a revocation source that could not be reached at all).
INTEGRITY_REASONS: frozenset[Reason] = frozenset(
    r for r in Reason if r.value.startswith(("ocsp-", "crl-")) and r is not Reason.OCSP_UNKNOWN
)


def _iso(when: _dt.datetime | None) -> str | None:
    return None if when is None else when.astimezone(_dt.UTC).isoformat()


@dataclasses.dataclass(frozen=True, slots=True)
class RevocationInfo:
    """The revocation evidence a result rests on.

    ``method`` is how the status was learnt (``'ocsp'``, ``'crl'``, or ``'none'`` when it was not
    checked); ``status`` is ``good``, ``revoked``, ``unknown`` (OCSP only), ``unavailable`` (no
    source answered; only in soft-fail results) or ``not-checked``. ``source`` is the URL asked;
    ``responder`` the subject of the OCSP responder or CRL issuer whose signature was checked.
    ``produced_at`` (OCSP), ``this_update`` and ``next_update`` come from the response or CRL;
    ``revoked_at`` and ``reason`` (an RFC 5280 CRLReason name such as ``keyCompromise``) are set
    when revoked. ``cached`` tells whether the answer came from the validator's cache;
    ``crl_number`` is the CRL's number when the answer came from a CRL. ``origin`` says how the
    answer reached the validator: ``fetched`` from the source (or its cache), ``embedded`` in
    the signed document, ``given`` by the user (:class:`jpki.verify.evidence.RevocationEvidence`);
    None when nothing was checked.
    """

    method: RevocationMethod
    status: RevocationStatus
    source: str | None = None
    responder: str | None = None
    produced_at: _dt.datetime | None = None
    this_update: _dt.datetime | None = None
    next_update: _dt.datetime | None = None
    revoked_at: _dt.datetime | None = None
    reason: str | None = None
    crl_number: int | None = None
    cached: bool = False
    origin: RevocationOrigin | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times in ISO 8601, UTC)."""
        return {
            "method": self.method,
            "status": self.status,
            "source": self.source,
            "responder": self.responder,
            "produced_at": _iso(self.produced_at),
            "this_update": _iso(self.this_update),
            "next_update": _iso(self.next_update),
            "revoked_at": _iso(self.revoked_at),
            "reason": self.reason,
            "crl_number": self.crl_number,
            "cached": self.cached,
            "origin": self.origin,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class ValidationResult:
    """The outcome of :meth:`jpki.verify.Validator.validate`.

    ``ok`` is True only when every check passed; then ``reason`` is None. Otherwise ``reason`` is
    the :class:`Reason` of the first check that failed and ``message`` says it in words.
    ``kind`` is the kind asked for, ``detected_kind`` what the certificate is (``'sign'``,
    ``'auth'``, ``'ca'`` or None). ``subject`` and ``issuer`` are RFC 4514 strings, ``serial``
    the serial number (``serial_hex`` in upper-case hex), ``fingerprint`` the SHA-256 of the DER
    in hex; they are None when the certificate could not be parsed. ``anchor`` is the subject of
    the trust anchor the path ends at. ``checked_at`` is the validation time. ``revocation`` is
    the evidence (None when validation stopped before revocation was checked);
    ``revocation_reason`` repeats its reason when the certificate is revoked. ``warnings`` are
    lines a human should see even on success (soft-fail, a fallback to the CRL, revocation not
    checked…), each starting with a code and a colon.
    """

    ok: bool
    reason: Reason | None
    message: str
    kind: str
    checked_at: _dt.datetime
    subject: str | None = None
    serial: int | None = None
    issuer: str | None = None
    fingerprint: str | None = None
    detected_kind: str | None = None
    anchor: str | None = None
    not_before: _dt.datetime | None = None
    not_after: _dt.datetime | None = None
    revocation: RevocationInfo | None = None
    revocation_reason: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def serial_hex(self) -> str | None:
        """The serial number in upper-case hex (as CAs print it), or None."""
        return None if self.serial is None else format(self.serial, "X")

    def summary(self) -> str:
        """One human line: verdict, what was checked, and the revocation evidence."""
        what = f"{_KIND_NAMES.get(self.kind, self.kind)} certificate"
        if self.subject is not None:
            what += f" {self.subject} (serial {self.serial_hex})"
        when = self.checked_at.astimezone(_dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        if self.ok:
            line = f"OK: {what} is valid at {when}"
            rev = self.revocation
            if rev is not None:
                if rev.method == "none":
                    line += "; revocation not checked"
                elif rev.status == "unavailable":
                    line += "; revocation status unavailable (soft-fail)"
                else:
                    line += f"; {rev.method.upper()} says {rev.status}"
                    if rev.this_update is not None:
                        line += f" as of {_iso(rev.this_update)}"
            if self.warnings:
                line += f" [{len(self.warnings)} warning{'s' if len(self.warnings) > 1 else ''}]"
            return line
        return f"FAILED ({self.reason}): {what} at {when}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: times in ISO 8601 (UTC), the serial in upper-case hex."""
        return {
            "ok": self.ok,
            "reason": None if self.reason is None else str(self.reason),
            "message": self.message,
            "kind": self.kind,
            "detected_kind": self.detected_kind,
            "subject": self.subject,
            "serial": self.serial_hex,
            "issuer": self.issuer,
            "anchor": self.anchor,
            "fingerprint": self.fingerprint,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "checked_at": _iso(self.checked_at),
            "revocation": None if self.revocation is None else self.revocation.to_json(),
            "revocation_reason": self.revocation_reason,
            "warnings": list(self.warnings),
        }
