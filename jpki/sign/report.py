"""What verifying a signed document returns, and where certificate validation plugs in.

A :class:`VerificationReport` covers one file (a ``.p7s``/``.p7m`` or a PDF) and holds one
:class:`SignatureReport` per signature in it. Both are frozen; ``ok`` is True only when every
check passed, otherwise ``reason`` is one of :data:`REASONS` and ``message`` says it in words.

Certificate path and revocation checks are not done here: :func:`check_certificate` hands the
signer's certificate to a validator (``jpki.verify.Validator`` or anything with the same
``validate(cert, kind=..., at=..., evidence=...)`` method) and maps its answer to the reasons
below. The same validator checks the certificates of the timestamp authorities
(``kind='tsa'``) at the times their tokens state.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
from typing import Any, Literal, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..certinfo import cert_kind, signing_identity
from ..errors import VerificationError
from ..verify.evidence import RevocationEvidence

__all__ = [
    "REASONS",
    "CertificateCheck",
    "CertificateValidator",
    "SignatureReport",
    "ValidatorAnswer",
    "VerificationReport",
    "certificate_summary",
    "check_certificate",
    "check_key_usage",
    "identity_of",
]

#: Reason codes of a failed verification (``SignatureReport.reason``).
REASONS: dict[str, str] = {
    "tampered": "the signature or the signed content was changed after signing",
    "wrong-data": "the data given is not the data that was signed",
    "untrusted": "the signer's certificate does not lead to a trusted JPKI root",
    "revoked": "the signer's certificate is revoked",
    "expired-at-signing-time": "the signer's certificate was not valid at the signing time",
    "wrong-key-usage": "the key that signed is not the one the signature claims to be "
                       "(e.g. a user-authentication key presented as a legal signature)",
    "malformed": "the signature cannot be decoded or uses something unsupported",
    "no-signer": "the file holds no signature",
    "several-signers": "a CMS file holds several signers (only one is accepted)",
    "bad-byte-range": "a PDF signature's /ByteRange does not cover its revision of the file minus "
                      "exactly its /Contents value (a gap, an overlap, not from byte 0, or short "
                      "of the revision's end)",
    "not-signed": "a PDF signature field holds a signature dictionary without a signature value",
    "signer-mismatch": "the signer identifier does not designate exactly one certificate of the "
                       "signature, or the signing-certificate attribute names another one "
                       "(a swapped certificate)",
    "ca-certificate": "the signer's certificate is a CA certificate (BasicConstraints cA=TRUE)",
}

Kind = Literal["sign", "auth"]
#: What a validator is asked to check: a card certificate's kind, or a timestamp authority's.
CheckKind = Literal["sign", "auth", "tsa"]

#: ``jpki.verify`` reason → our reason (anything else that fails maps to ``untrusted``).
_VALIDATOR_REASONS: dict[str, str] = {
    "wrong-kind": "wrong-key-usage",
    "not-yet-valid": "expired-at-signing-time",
    "expired": "expired-at-signing-time",
    "revoked": "revoked",
}


class ValidatorAnswer(Protocol):
    """What a validator returns (``jpki.verify.ValidationResult`` fits): read-only fields."""

    @property
    def ok(self) -> bool: ...

    @property
    def reason(self) -> object: ...

    @property
    def message(self) -> str: ...


class CertificateValidator(Protocol):
    """Path and revocation validation of a JPKI certificate (``jpki.verify.Validator`` fits)."""

    def validate(self, cert: x509.Certificate, *, kind: CheckKind, at: _dt.datetime,
                 evidence: RevocationEvidence | None = None) -> ValidatorAnswer:
        """Validate ``cert`` as a ``kind`` certificate at time ``at``, with the revocation
        answers of ``evidence`` (embedded in the document or given by the user)."""
        ...


@dataclasses.dataclass(frozen=True)
class CertificateCheck:
    """The outcome of :func:`check_certificate`: ``checked`` is False without a validator."""

    checked: bool
    ok: bool
    reason: str | None
    message: str
    at: _dt.datetime | None
    details: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"checked": self.checked, "ok": self.ok, "reason": self.reason,
                "message": self.message, "at": _iso(self.at), "validator": self.details}


def check_certificate(cert: x509.Certificate, validator: CertificateValidator | None, *,
                      kind: CheckKind, at: _dt.datetime, time_proven: bool = False,
                      evidence: RevocationEvidence | None = None) -> CertificateCheck:
    """The integration point with ``jpki.verify``: validate the signer's certificate.

    ``validator.validate(cert, kind=kind, at=at, evidence=evidence)`` checks the path to the
    trust anchors, the validity at ``at`` (the signing time) and the revocation status (with
    the answers of ``evidence`` too); its reason is mapped to ours (``wrong-kind`` →
    ``wrong-key-usage``, ``expired``/``not-yet-valid`` → ``expired-at-signing-time``,
    ``revoked`` → ``revoked``, anything else → ``untrusted``).

    Unless ``time_proven`` (the signing time is vouched for by a trusted timestamp), a
    certificate revoked *after* ``at`` is refused too: a signing time the signer claims could
    have been back-dated with a card reported lost. Without a validator nothing is checked and
    the result says so.
    """
    if validator is None:
        return CertificateCheck(False, True, None,
                                "certificate path and revocation not checked (no validator)", at)
    answer = validator.validate(cert, kind=kind, at=at, evidence=evidence)
    to_json = getattr(answer, "to_json", None)
    details = to_json() if callable(to_json) else None
    summary = getattr(answer, "summary", None)
    message = summary() if callable(summary) else str(answer.message)
    if answer.ok:
        revocation = getattr(answer, "revocation", None)
        if not time_proven and getattr(revocation, "status", None) == "revoked":
            revoked_at = getattr(revocation, "revoked_at", None)
            when = f" at {_iso(revoked_at)}" if revoked_at is not None else ""
            return CertificateCheck(
                True, False, "revoked",
                f"the certificate was revoked{when} (reason {getattr(revocation, 'reason', None)}), "
                f"after the claimed signing time {_iso(at)}; no timestamp proves the signature "
                "was made before the revocation", at, details)
        return CertificateCheck(True, True, None, message, at, details)
    raw = None if answer.reason is None else str(answer.reason)
    reason = _VALIDATOR_REASONS.get(raw or "", "untrusted")
    return CertificateCheck(True, False, reason, f"{answer.message} ({raw})", at, details)


def check_key_usage(cert: x509.Certificate, expected: Kind) -> None:
    """Raise ``VerificationError('wrong-key-usage')`` unless ``cert`` fits the expected key.

    A legal signature (``expected='sign'``) must come from a signing certificate: a JPKI
    user-authentication certificate, or any certificate without nonRepudiation, is refused.
    ``expected='auth'`` accepts the user-authentication certificate (digitalSignature).
    """
    kind = cert_kind(cert)
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    except ValueError as exc:
        raise VerificationError("malformed", f"unreadable certificate extensions: {exc}") from None
    if expected == "sign":
        if kind == "auth":
            raise VerificationError(
                "wrong-key-usage",
                "signed with the user-authentication key (利用者証明用): that is not a legal "
                "signature; check it with --key auth if an authentication signature is meant")
        if ku is not None and not ku.content_commitment:
            raise VerificationError(
                "wrong-key-usage",
                "the signer's certificate does not allow non-repudiation signatures")
    else:
        if kind == "sign":
            raise VerificationError(
                "wrong-key-usage",
                "signed with the signing key (署名用), not the user-authentication key")
        if ku is not None and not ku.digital_signature:
            raise VerificationError("wrong-key-usage",
                                    "the signer's certificate does not allow digital signatures")


def identity_of(cert: x509.Certificate) -> dict[str, str | None] | None:
    """The holder's name, address, sex and ISO birth date from a signing certificate, or None
    when the certificate carries no JPKI basic 4 info (an authentication or foreign one)."""
    try:
        ident = signing_identity(cert)
    except VerificationError:
        return None
    return {"name": ident.name, "address": ident.address, "sex": ident.sex.value,
            "birth_date": ident.birth_date.isoformat() if ident.birth_date else None,
            "birth_date_raw": ident.birth_date_raw}


def certificate_summary(cert: x509.Certificate) -> dict[str, Any]:
    """Subject, issuer, serial, validity, fingerprint and JPKI kind of a certificate."""
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:X}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256_fingerprint": hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
        "kind": cert_kind(cert),
    }


def _iso(when: _dt.datetime | None) -> str | None:
    return None if when is None else when.astimezone(_dt.UTC).isoformat()


@dataclasses.dataclass(frozen=True)
class SignatureReport:
    """One signature: verdict, signer, identity, times and the certificate check.

    ``signing_time`` is the time the certificate was validated at; ``time_source`` says where
    it came from (a timestamp token, or a time the signer claims). ``details`` holds what is
    particular to the format (the data file and its size; the PDF field, coverage, changes).
    ``level`` is the baseline level found (``B-B``, ``B-T``, ``B-LT``, ``B-LTA``);
    ``proven_time`` the time a timestamp whose TSA certificate validated proves (None: the time
    is a claim); ``revocation_source`` where the signer's revocation answer came from
    (``fetched``, ``embedded``, ``given``; ``none`` when not checked); ``archive_timestamps``
    the archive or document timestamps over the signature, each checked.
    """

    ok: bool
    reason: str | None
    message: str
    signer: dict[str, Any] | None = None
    identity: dict[str, str | None] | None = None
    key: Kind | None = None
    digest_algorithm: str | None = None
    signature_algorithm: str | None = None
    profile: str | None = None
    signing_time: _dt.datetime | None = None
    time_source: str | None = None
    timestamp: dict[str, Any] | None = None
    certificate: CertificateCheck | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    level: str | None = None
    proven_time: _dt.datetime | None = None
    revocation_source: str | None = None
    archive_timestamps: tuple[dict[str, Any], ...] = ()

    @classmethod
    def failure(cls, reason: str, message: str, **fields: Any) -> SignatureReport:
        """A failed signature (``reason`` must be one of :data:`REASONS`)."""
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        return cls(False, reason, message, **fields)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "reason": self.reason, "message": self.message,
            "key": self.key, "profile": self.profile,
            "digest_algorithm": self.digest_algorithm,
            "signature_algorithm": self.signature_algorithm,
            "level": self.level, "proven_time": _iso(self.proven_time),
            "signing_time": _iso(self.signing_time), "time_source": self.time_source,
            "timestamp": self.timestamp, "archive_timestamps": list(self.archive_timestamps),
            "revocation_source": self.revocation_source,
            "signer": self.signer, "identity": self.identity,
            "certificate_validation": None if self.certificate is None else self.certificate.to_json(),
            **self.details,
        }

    def lines(self) -> list[str]:
        """The human report of this signature, one item per line."""
        out = []
        verdict = "VALID" if self.ok else f"INVALID ({self.reason})"
        what = ", ".join(x for x in (self.profile, self.digest_algorithm) if x)
        out.append(f"{verdict}{f' [{what}]' if what else ''}: {self.message}")
        for key in ("field", "data", "coverage", "changes"):
            if self.details.get(key) is not None:
                out.append(f"  {key + ':':<14}{self.details[key]}")
        if self.identity:
            i = self.identity
            out.append(f"  {'signer:':<14}{i['name']}")
            out.append(f"  {'address:':<14}{i['address']}")
            out.append(f"  {'birth date:':<14}{i['birth_date'] or 'unknown'}")
            out.append(f"  {'sex:':<14}{i['sex']}")
        if self.key:
            key = "signing key (署名用)" if self.key == "sign" else "user-authentication key (利用者証明用)"
            out.append(f"  {'key:':<14}{key}")
        if self.signing_time is not None:
            out.append(f"  {'signing time:':<14}{_iso(self.signing_time)} ({self.time_source})")
        if self.level is not None:
            out.append(f"  {'level:':<14}{self.level}")
        if self.timestamp is not None:
            checked = self.timestamp.get("tsa_certificate_validated")
            note = "" if checked is None else (
                "; TSA certificate valid" if checked else "; TSA certificate NOT validated")
            out.append(f"  {'timestamp:':<14}{self.timestamp['time']} by {self.timestamp['tsa']}{note}")
        for ats in self.archive_timestamps:
            checked = ats.get("tsa_certificate_validated")
            note = "" if checked is None else (
                "; TSA certificate valid" if checked else "; TSA certificate NOT validated")
            kind = ats.get("kind", "archive timestamp")
            out.append(f"  {'archived:':<14}{ats['time']} by {ats['tsa']} ({kind}{note})")
        if self.revocation_source is not None:
            out.append(f"  {'revocation:':<14}{self.revocation_source}")
        if self.signer:
            s = self.signer
            out.append(f"  {'certificate:':<14}{s['subject']} (serial {s['serial']})")
            out.append(f"  {'issuer:':<14}{s['issuer']}")
            out.append(f"  {'valid:':<14}{s['not_before']} .. {s['not_after']}")
        if self.certificate is not None:
            out.append(f"  {'path:':<14}{self.certificate.message}")
            for warning in (self.certificate.details or {}).get("warnings", ()):
                out.append(f"  {'warning:':<14}{warning}")
        return out


@dataclasses.dataclass(frozen=True)
class VerificationReport:
    """The verdict on a file: valid only if it holds a signature and every signature is valid.

    ``reason`` and ``message`` are those of the first failed signature (or of the file as a
    whole: ``malformed``, ``no-signer``, ``several-signers``).
    """

    file: str
    format: Literal["cms", "pdf"]
    ok: bool
    reason: str | None
    message: str
    signatures: tuple[SignatureReport, ...] = ()

    @classmethod
    def of(cls, file: str, format: Literal["cms", "pdf"],
           signatures: tuple[SignatureReport, ...]) -> VerificationReport:
        """The report of a file from its signatures' reports."""
        if not signatures:
            return cls(file, format, False, "no-signer", "the file holds no signature")
        bad = next((s for s in signatures if not s.ok), None)
        if bad is not None:
            return cls(file, format, False, bad.reason, bad.message, signatures)
        n = len(signatures)
        return cls(file, format, True, None,
                   "the signature is valid" if n == 1 else f"all {n} signatures are valid",
                   signatures)

    @classmethod
    def failure(cls, file: str, format: Literal["cms", "pdf"], reason: str,
                message: str) -> VerificationReport:
        """A file that could not be verified at all (no signature report to give)."""
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        return cls(file, format, False, reason, message)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "reason": self.reason, "message": self.message, "file": self.file,
                "format": self.format, "signatures": [s.to_json() for s in self.signatures]}

    def summary(self) -> str:
        """The human report: a verdict line, then each signature."""
        head = f"{self.file}: {'VALID' if self.ok else 'INVALID'}" + (
            "" if self.ok else f" ({self.reason})")
        if not self.signatures or len(self.signatures) > 1:
            head += f": {self.message}"
        lines = [head]
        for i, sig in enumerate(self.signatures, 1):
            body = sig.lines()
            if len(self.signatures) > 1:
                body[0] = f"signature {i}: {body[0]}"
            lines += body
        return "\n".join(lines)
