"""The validator: path, validity, kind and revocation of a card certificate, as one result.

```python
validator = Validator(TrustStore.from_ca_dir(home / "ca"), clock=SystemClock())
result = validator.validate(der, kind="auth")
if not result.ok:
    print(result.summary())      # FAILED (revoked): …
```

Order of the checks (the first failure is the result's reason): the certificate parses; it is
of the kind asked for; no unknown critical extension; the issuer is a trusted root of that
kind; the signature verifies; ``cryptography.x509.verification`` accepts the path; the leaf and
then the root are valid at the validation time; revocation.

Revocation by mode:

``'ocsp'`` (default)
    OCSP first; when it gives no usable answer (no URL, unreachable, an error status, or an
    answer that fails a check), the CRL. A verified ``good`` from either is final, so is a
    verified ``revoked``, so is an OCSP ``unknown`` (``ocsp-unknown``: the responder does not
    know a certificate its CA signed — no fallback hides that). A failure of OCSP followed by
    a good CRL answer gives ok with an ``ocsp-fallback`` warning.
``'crl'``
    The CRL only.
``'none'``
    No revocation check: ok results carry a ``revocation-not-checked`` warning.

When no source gave a verified answer: by default (hard-fail) the result fails — with the
integrity reason of an answer that failed a check (OCSP's first) if there was one, else
``revocation-unavailable``. With ``soft_fail=True`` a result whose sources were all merely
unreachable is ok with a ``soft-fail`` warning; an answer that arrived and failed a check is
never excused.

A certificate revoked after the validation time was not revoked at that time: the result is ok,
with a ``revoked-later`` warning naming the revocation.

Any exception inside a validation becomes a failed result (``internal-error``); nothing but a
misuse of the API (a bad ``kind``, a naive ``at``, a certificate that is neither bytes nor a
``Certificate``) raises.

Caching, for a hot path of a few microseconds: the time-independent checks of a certificate
(parse, kind, path, signatures) are kept per (SHA-256 of the DER, kind); verified OCSP answers
per (root, serial) while fresh at the validation time; verified CRLs per (URL, root) until their
nextUpdate. :meth:`Validator.invalidate` forgets revocation answers (after a revocation you know
of), :meth:`Validator.clear_caches` everything.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import threading
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from jpki.clock import Clock, SystemClock
from jpki.errors import UsageError
from jpki.verify.anchors import Anchor, TrustStore
from jpki.verify.fetch import Fetch, HttpFetcher
from jpki.verify.path import Examined, LeafFacts, examine, parse_certificate
from jpki.verify.result import (
    INTEGRITY_REASONS,
    KINDS,
    Reason,
    RevocationInfo,
    ValidationResult,
)
from jpki.verify.revocation_check import (
    DEFAULT_TOLERANCE,
    CrlCache,
    OcspCache,
    RevocationProblem,
    check_crl,
    check_ocsp,
    fresh_at,
)

__all__ = ["DEFAULT_OCSP_RETRY_AFTER", "RevocationMode", "Validator"]

RevocationMode = Literal["ocsp", "crl", "none"]
_MODES = ("ocsp", "crl", "none")
#: How long an unreachable OCSP responder is left alone (the CRL answers meanwhile).
DEFAULT_OCSP_RETRY_AFTER = _dt.timedelta(seconds=60)
_SHA256 = hashes.SHA256()
_DER = Encoding.DER
_NOT_CHECKED = RevocationInfo(method="none", status="not-checked")
_WARN_NOT_CHECKED = ("revocation-not-checked: revocation was not checked (revocation='none')",)


class Validator:
    """Validates JPKI card certificates against a :class:`TrustStore` (see the module docstring).

    ``clock`` gives the default validation time and the "now" against which response times are
    judged. ``revocation`` is ``'ocsp'`` (OCSP, then the CRL), ``'crl'`` or ``'none'``.
    ``soft_fail`` accepts a certificate whose revocation sources could not be reached (with a
    warning). ``fetch`` does the HTTP (default :class:`~jpki.verify.fetch.HttpFetcher`: short
    timeouts). ``ocsp_freshness_tolerance`` is the clock skew allowed around thisUpdate and
    nextUpdate of OCSP responses and CRLs. ``crl_cache`` and ``ocsp_cache`` may be shared
    between validators; ``max_cached_certificates`` bounds the per-certificate cache. An OCSP
    responder that could not be reached is not asked again for ``ocsp_retry_after`` (by the
    clock; the CRL answers meanwhile), so that a dead responder does not cost a timeout per
    validation; ``timedelta(0)`` asks every time.

    Thread-safe: the caches take a lock to write, reads are single dict look-ups.
    """

    def __init__(
        self,
        trust: TrustStore,
        *,
        clock: Clock | None = None,
        revocation: RevocationMode = "ocsp",
        soft_fail: bool = False,
        fetch: Fetch | None = None,
        ocsp_freshness_tolerance: _dt.timedelta = DEFAULT_TOLERANCE,
        crl_cache: CrlCache | None = None,
        ocsp_cache: OcspCache | None = None,
        max_cached_certificates: int = 100_000,
        ocsp_retry_after: _dt.timedelta = DEFAULT_OCSP_RETRY_AFTER,
    ) -> None:
        if not isinstance(trust, TrustStore):
            raise UsageError("trust must be a TrustStore")
        if revocation not in _MODES:
            raise UsageError(f"revocation must be one of {', '.join(_MODES)}, not {revocation!r}")
        if not isinstance(ocsp_freshness_tolerance, _dt.timedelta) or ocsp_freshness_tolerance < _dt.timedelta(0):
            raise UsageError("ocsp_freshness_tolerance must be a non-negative timedelta")
        self.trust = trust
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.revocation: RevocationMode = revocation
        self.soft_fail = soft_fail
        self.fetch: Fetch = fetch if fetch is not None else HttpFetcher()
        self.tolerance = ocsp_freshness_tolerance
        self.crl_cache = crl_cache if crl_cache is not None else CrlCache()
        self.ocsp_cache = ocsp_cache if ocsp_cache is not None else OcspCache()
        if not isinstance(ocsp_retry_after, _dt.timedelta) or ocsp_retry_after < _dt.timedelta(0):
            raise UsageError("ocsp_retry_after must be a non-negative timedelta")
        self.ocsp_retry_after = ocsp_retry_after
        #: OCSP URL -> (until when it is not asked again, why)
        self._ocsp_down: dict[str, tuple[_dt.datetime, str]] = {}
        self._max_examined = max_cached_certificates
        self._examined: dict[tuple[bytes, str], Examined] = {}
        self._lock = threading.Lock()

    # -- caches

    def invalidate(self, cert: x509.Certificate | bytes | int | None = None) -> None:
        """Forget revocation answers: the OCSP answers about one certificate (given as a
        certificate, its DER or its serial), or, with no argument, every OCSP answer and every
        cached CRL (a CRL speaks for all its CA's certificates, so it is only dropped whole), and
        forget which OCSP responders were unreachable."""
        if cert is None:
            self.ocsp_cache.invalidate()
            self.crl_cache.clear()
            self._ocsp_down.clear()
            return
        if isinstance(cert, int):
            serial = cert
        elif isinstance(cert, x509.Certificate):
            serial = cert.serial_number
        else:
            try:
                serial = parse_certificate(bytes(cert)).serial_number
            except ValueError as exc:
                raise UsageError(f"not a certificate: {exc}") from None
        self.ocsp_cache.invalidate(serial)

    def clear_caches(self) -> None:
        """Forget everything: examined certificates, OCSP answers, CRLs."""
        with self._lock:
            self._examined.clear()
        self.invalidate()

    def _remember(self, key: tuple[bytes, str], examined: Examined) -> None:
        if self._max_examined == 0:
            return
        with self._lock:
            while len(self._examined) >= self._max_examined:
                self._examined.pop(next(iter(self._examined)))
            self._examined[key] = examined

    # -- validation

    def validate(
        self,
        cert: x509.Certificate | bytes | bytearray | memoryview,
        *,
        kind: str,
        at: _dt.datetime | None = None,
        nonce: bool = True,
    ) -> ValidationResult:
        """Validate ``cert`` (a ``Certificate``, or DER / PEM bytes) as a ``kind`` (``'sign'``
        or ``'auth'``) certificate at ``at`` (default: the clock's now). ``nonce`` puts a nonce in
        OCSP requests (the answer must echo it; responders then sign afresh instead of serving
        a pre-produced response). Never raises for a bad certificate or a bad revocation
        answer: the result says what failed."""
        if kind not in KINDS:
            raise UsageError(f"kind must be 'sign' or 'auth', not {kind!r}")
        if at is None:
            at = self.clock.now()
        elif not isinstance(at, _dt.datetime) or at.tzinfo is None or at.utcoffset() is None:
            raise UsageError("at must be a timezone-aware datetime")
        if not isinstance(cert, (x509.Certificate, bytes, bytearray, memoryview)):
            raise UsageError(f"cert must be an x509.Certificate or bytes, not {type(cert).__name__}")
        try:
            return self._validate(cert, kind, at, nonce)
        except Exception as exc:  # noqa: BLE001 - fail closed, whatever happened
            return ValidationResult(
                ok=False,
                reason=Reason.INTERNAL_ERROR,
                message=f"validation failed unexpectedly: {type(exc).__name__}: {exc}",
                kind=kind,
                checked_at=at,
            )

    def _examine(self, cert: x509.Certificate | bytes | bytearray | memoryview, kind: str) -> Examined:
        if isinstance(cert, x509.Certificate):
            key = (cert.fingerprint(_SHA256), kind)
            examined = self._examined.get(key)
            if examined is None:
                examined = examine(cert, cert.public_bytes(_DER), kind, self.trust)
                self._remember(key, examined)
            return examined
        data = bytes(cert)
        key = (hashlib.sha256(data).digest(), kind)
        examined = self._examined.get(key)
        if examined is None:
            try:
                parsed = parse_certificate(data)
                der = data if data[:1] == b"\x30" else parsed.public_bytes(_DER)
            except ValueError as exc:
                examined = Examined(None, failure=(Reason.MALFORMED_CERTIFICATE, f"not a certificate: {exc}"))
            else:
                examined = examine(parsed, der, kind, self.trust)
            self._remember(key, examined)
        return examined

    def _validate(
        self, cert: x509.Certificate | bytes | bytearray | memoryview, kind: str, at: _dt.datetime, nonce: bool
    ) -> ValidationResult:
        examined = self._examine(cert, kind)
        facts = examined.facts
        if examined.failure is not None:
            return _failed(kind, at, facts, examined.anchor, *examined.failure)
        anchor = examined.anchor
        assert facts is not None and anchor is not None
        if at < facts.not_before:
            return _failed(kind, at, facts, anchor, Reason.NOT_YET_VALID,
                           f"the certificate is valid from {facts.not_before.isoformat()}")
        if at > facts.not_after:
            return _failed(kind, at, facts, anchor, Reason.EXPIRED,
                           f"the certificate expired at {facts.not_after.isoformat()}")
        if at < anchor.not_before:
            return _failed(kind, at, facts, anchor, Reason.NOT_YET_VALID,
                           f"the root {anchor.subject} is valid from {anchor.not_before.isoformat()}")
        if at > anchor.not_after:
            return _failed(kind, at, facts, anchor, Reason.EXPIRED,
                           f"the root {anchor.subject} expired at {anchor.not_after.isoformat()}")
        if self.revocation == "none":
            return _passed(kind, at, facts, anchor, _NOT_CHECKED, _WARN_NOT_CHECKED)
        # The hot path: a verified OCSP answer still fresh at ``at``.
        if self.revocation == "ocsp":
            info = self.ocsp_cache.get((anchor.fingerprint, facts.serial))
            if info is not None and fresh_at(info, at, self.tolerance):
                return self._decide(kind, at, facts, anchor, info, ())
        return self._check_revocation(kind, at, facts, anchor, nonce)

    def _check_revocation(
        self, kind: str, at: _dt.datetime, facts: LeafFacts, anchor: Anchor, nonce: bool
    ) -> ValidationResult:
        now = self.clock.now()
        problems: list[tuple[str, RevocationProblem]] = []
        warnings: list[str] = []
        info: RevocationInfo | None = None
        if self.revocation == "ocsp":
            url = facts.ocsp_url
            down = None if url is None else self._ocsp_down.get(url)
            if url is None:
                problems.append(("OCSP", RevocationProblem(
                    Reason.REVOCATION_UNAVAILABLE, "the certificate names no http(s) OCSP responder",
                    unavailable=True)))
            elif down is not None and now < down[0]:
                problems.append(("OCSP", RevocationProblem(
                    Reason.REVOCATION_UNAVAILABLE,
                    f"{down[1]} (not asked again before {down[0].isoformat()})", unavailable=True)))
            else:
                try:
                    info, extra = check_ocsp(facts.cert, anchor, url, fetch=self.fetch, at=at,
                                             now=now, tolerance=self.tolerance, nonce=nonce)
                except RevocationProblem as problem:
                    problems.append(("OCSP", problem))
                    if problem.unavailable and self.ocsp_retry_after:
                        self._ocsp_down[url] = (now + self.ocsp_retry_after, problem.message)
                else:
                    if down is not None:
                        self._ocsp_down.pop(url, None)
                    warnings += extra
                    self.ocsp_cache.put((anchor.fingerprint, facts.serial), _as_cached(info))
        if info is None:
            if facts.crl_url is None:
                problems.append(("CRL", RevocationProblem(
                    Reason.REVOCATION_UNAVAILABLE, "the certificate names no http(s) CRL distribution point",
                    unavailable=True)))
            else:
                try:
                    info = check_crl(facts.cert, anchor, facts.crl_url, fetch=self.fetch, at=at, now=now,
                                     tolerance=self.tolerance, cache=self.crl_cache)
                except RevocationProblem as problem:
                    problems.append(("CRL", problem))
            if info is not None and problems:
                warnings += [f"ocsp-fallback: {source} gave no usable answer ({p.reason}: {p.message});"
                             " the CRL was used" for source, p in problems]
        if info is not None:
            return self._decide(kind, at, facts, anchor, info, tuple(warnings))
        detail = "; ".join(p.message for _, p in problems)
        integrity = [p for _, p in problems if not p.unavailable and p.reason in INTEGRITY_REASONS]
        if integrity:
            first = integrity[0]
            others = "; ".join(p.message for _, p in problems if p is not first)
            message = first.message if not others else f"{first.message} (and {others})"
            return _failed(kind, at, facts, anchor, first.reason, message, warnings=tuple(warnings))
        if self.soft_fail:
            unavailable = RevocationInfo(method=self.revocation, status="unavailable")
            return _passed(kind, at, facts, anchor, unavailable,
                           (*warnings, f"soft-fail: revocation status unavailable ({detail})"))
        return _failed(kind, at, facts, anchor, Reason.REVOCATION_UNAVAILABLE,
                       f"no revocation source answered: {detail}", warnings=tuple(warnings))

    def _decide(
        self,
        kind: str,
        at: _dt.datetime,
        facts: LeafFacts,
        anchor: Anchor,
        info: RevocationInfo,
        warnings: tuple[str, ...],
    ) -> ValidationResult:
        status = info.status
        if status == "good":
            return _passed(kind, at, facts, anchor, info, warnings)
        if status == "revoked":
            revoked_at = info.revoked_at
            if revoked_at is not None and revoked_at > at:
                return _passed(kind, at, facts, anchor, info, (
                    *warnings,
                    (
                        f"revoked-later: revoked at {revoked_at.isoformat()} ({info.reason}),"
                        " after the validation time"
                    ),
                ))
            when = "" if revoked_at is None else f" at {revoked_at.isoformat()}"
            return _failed(kind, at, facts, anchor, Reason.REVOKED,
                           f"the certificate was revoked{when} (reason {info.reason}; {info.method.upper()})",
                           revocation=info, revocation_reason=info.reason, warnings=warnings)
        return _failed(kind, at, facts, anchor, Reason.OCSP_UNKNOWN,
                       f"the OCSP responder does not know serial {facts.serial:X} of {anchor.subject}",
                       revocation=info, warnings=warnings)


def _as_cached(info: RevocationInfo) -> RevocationInfo:
    """The form of ``info`` kept in the cache (marked ``cached``)."""
    return dataclasses.replace(info, cached=True)


def _passed(
    kind: str,
    at: _dt.datetime,
    facts: LeafFacts,
    anchor: Anchor,
    info: RevocationInfo,
    warnings: tuple[str, ...],
) -> ValidationResult:
    return ValidationResult(
        True, None, "valid", kind, at, facts.subject, facts.serial, facts.issuer, facts.fingerprint,
        facts.detected_kind, anchor.subject, facts.not_before, facts.not_after, info, None, warnings,
    )


def _failed(
    kind: str,
    at: _dt.datetime,
    facts: LeafFacts | None,
    anchor: Anchor | None,
    reason: Reason,
    message: str,
    *,
    revocation: RevocationInfo | None = None,
    revocation_reason: str | None = None,
    warnings: tuple[str, ...] = (),
) -> ValidationResult:
    if facts is None:
        return ValidationResult(False, reason, message, kind, at, warnings=warnings)
    return ValidationResult(
        False, reason, message, kind, at, facts.subject, facts.serial, facts.issuer, facts.fingerprint,
        facts.detected_kind, None if anchor is None else anchor.subject, facts.not_before, facts.not_after,
        revocation, revocation_reason, warnings,
    )
