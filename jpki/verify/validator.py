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

Evidence (``validate(..., evidence=RevocationEvidence)``, :mod:`jpki.verify.evidence`): OCSP
responses and CRLs that came with a signed document (``embedded``) or from the user (``given``),
checked like fetched answers. A verified *revoked* answer in it wins over any other; a verified
*good* one counts only when issued at or after the validation time (minus the tolerance). Online,
the sources are still asked (so that a revocation after the signature can be reported); the
evidence answers when they cannot be reached. ``offline=True`` never fetches: the evidence
alone decides, and a result without a usable answer fails with ``revocation-unavailable``
("offline: …"), soft-fail excusing it as for an unreachable source.

``kind='tsa'`` validates a timestamp authority's certificate (RFC 3161 §2.3: the critical
id-kp-timeStamping extended key usage alone), issued by any trusted root, with the same validity
and revocation rules. :meth:`Validator.gather` validates a certificate and returns the DER of the
revocation answers the result rests on, for a long-term signature to embed.

A ``revoked`` answer wins over a ``good`` (or ``unknown``) one: before a result rests on one
source's answer, the other source's cached answer is looked at, and when it is fresh (and young
enough, see below) and says revoked, the result is revoked. So a CRL fetched while the OCSP
responder was down, which lists a certificate, refuses it even while a good OCSP answer about
it is still cached (and the other way round).

Any exception inside a validation becomes a failed result (``internal-error``); nothing but a
misuse of the API (a bad ``kind``, a naive ``at``, a certificate that is neither bytes nor a
``Certificate``) raises.

Caching, for a hot path of a few microseconds: the time-independent checks of a certificate
(parse, kind, path, signatures) are kept per (SHA-256 of the DER, kind) — only for certificates
whose signature verified with a trust anchor: a refusal of anything else (malformed, another
kind, an unknown issuer, a bad signature) is what a client can make up by the million, so it
is worked out again each time rather than kept; verified OCSP answers per (root, serial) while
fresh at the validation time; verified CRLs per (URL, root) until their nextUpdate. Every cache
is bounded by count and by bytes, least recently used out first (:mod:`jpki.verify.cache`).

``revocation_max_age`` (of the validator, or of one :meth:`Validator.validate` call; the
stricter applies) bounds how old a cached revocation answer may be — every source alike: an
OCSP answer counts from its producedAt (or its fetching, if earlier), a CRL from when it was
fetched. An older one is fetched again (zero: every validation asks the source). It is how
long a lost card may still pass after its revocation, whichever source answered; without it
(None, the default) an answer stands until its nextUpdate, which for a CRL may be a day.
:meth:`Validator.invalidate` forgets revocation answers (after a revocation you know of),
:meth:`Validator.clear_caches` everything.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from jpki.clock import Clock, SystemClock
from jpki.errors import UsageError
from jpki.verify.anchors import Anchor, TrustStore
from jpki.verify.cache import LruCache
from jpki.verify.evidence import EvidenceItem, RevocationEvidence
from jpki.verify.fetch import Fetch, HttpFetcher
from jpki.verify.path import Examined, LeafFacts, examine, parse_certificate
from jpki.verify.result import (
    INTEGRITY_REASONS,
    VALIDATION_KINDS,
    Reason,
    RevocationInfo,
    ValidationResult,
)
from jpki.verify.revocation_check import (
    DEFAULT_TOLERANCE,
    OCSP_REQUEST_TYPE,
    CrlCache,
    OcspCache,
    OcspEntry,
    RevocationProblem,
    check_crl,
    check_ocsp,
    crl_answer,
    fresh_at,
    load_crl,
    ocsp_request,
    verify_ocsp_response,
    young,
)

__all__ = ["DEFAULT_OCSP_RETRY_AFTER", "Gathered", "RevocationMode", "Validator"]

RevocationMode = Literal["ocsp", "crl", "none"]
_MODES = ("ocsp", "crl", "none")
#: How long an unreachable OCSP responder is left alone (the CRL answers meanwhile).
DEFAULT_OCSP_RETRY_AFTER = _dt.timedelta(seconds=60)
_SHA256 = hashes.SHA256()
_ZERO = _dt.timedelta(0)
_DER = Encoding.DER
_NOT_CHECKED = RevocationInfo(method="none", status="not-checked")
_WARN_NOT_CHECKED = ("revocation-not-checked: revocation was not checked (revocation='none')",)
#: What a kept examination is reckoned to weigh besides the certificate's DER (measured: a parsed
#: certificate with its facts holds some 3.6 KiB more than its DER).
_EXAMINED_ENTRY_BYTES = 4096
_NO_EVIDENCE = RevocationEvidence()


@dataclasses.dataclass(frozen=True)
class Gathered:
    """What :meth:`Validator.gather` returns: the validation result, the revocation answers
    (DER) it rests on, and the trust anchor's certificate that ends the path (None when the
    path did not hold)."""

    result: ValidationResult
    evidence: RevocationEvidence
    anchor: x509.Certificate | None


class Validator:
    """Validates JPKI card certificates against a :class:`TrustStore` (see the module docstring).

    ``clock`` gives the default validation time and the "now" against which response times are
    judged. ``revocation`` is ``'ocsp'`` (OCSP, then the CRL), ``'crl'`` or ``'none'``.
    ``soft_fail`` accepts a certificate whose revocation sources could not be reached (with a
    warning). ``fetch`` does the HTTP (default :class:`~jpki.verify.fetch.HttpFetcher`: short
    timeouts). ``ocsp_freshness_tolerance`` is the clock skew allowed around thisUpdate and
    nextUpdate of OCSP responses and CRLs. ``crl_cache`` and ``ocsp_cache`` may be shared
    between validators; ``max_cached_certificates`` and ``max_cached_certificate_bytes`` bound
    the per-certificate cache (only certificates that chain to an anchor are kept). An OCSP
    responder that could not be reached is not asked again for ``ocsp_retry_after`` (by the
    clock; the CRL answers meanwhile), so that a dead responder does not cost a timeout per
    validation; ``timedelta(0)`` asks every time. ``revocation_max_age`` bounds the age of any
    cached revocation answer relied on, OCSP or CRL (None: until its nextUpdate; zero: never
    cached); see the module docstring. ``offline`` never fetches anything: revocation rests on
    the evidence handed to :meth:`validate` alone.

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
        max_cached_certificate_bytes: int | None = 128 * 1024 * 1024,
        ocsp_retry_after: _dt.timedelta = DEFAULT_OCSP_RETRY_AFTER,
        revocation_max_age: _dt.timedelta | None = None,
        offline: bool = False,
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
        self.revocation_max_age = _check_max_age(revocation_max_age)
        self.offline = bool(offline)
        #: OCSP URL -> (until when it is not asked again, why)
        self._ocsp_down: dict[str, tuple[_dt.datetime, str]] = {}
        try:
            self._examined: LruCache[tuple[bytes, str], Examined] = LruCache(
                max_cached_certificates, max_cached_certificate_bytes)
        except ValueError as exc:
            raise UsageError(f"per-certificate cache: {exc}") from None

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
        self._examined.clear()
        self.invalidate()

    @property
    def certificate_cache(self) -> LruCache[tuple[bytes, str], Examined]:
        """The per-certificate cache (to watch its size; :meth:`clear_caches` empties it)."""
        return self._examined

    def _remember(self, key: tuple[bytes, str], examined: Examined, der_size: int) -> None:
        """Keep an examination only when the certificate chains to an anchor (see the module
        docstring): the others cost a parse to redo, and would cost memory to keep."""
        if examined.anchor is not None:
            self._examined.put(key, examined, weight=der_size + _EXAMINED_ENTRY_BYTES)

    # -- validation

    def validate(
        self,
        cert: x509.Certificate | bytes | bytearray | memoryview,
        *,
        kind: str,
        at: _dt.datetime | None = None,
        nonce: bool = True,
        revocation_max_age: _dt.timedelta | None = None,
        evidence: RevocationEvidence | None = None,
    ) -> ValidationResult:
        """Validate ``cert`` (a ``Certificate``, or DER / PEM bytes) as a ``kind`` (``'sign'``,
        ``'auth'``, or ``'tsa'`` for a timestamp authority) certificate at ``at`` (default: the
        clock's now). ``nonce`` puts a nonce in OCSP requests (the answer must echo it;
        responders then sign afresh instead of serving a pre-produced response).
        ``revocation_max_age`` bounds the age of cached revocation answers for this call (the
        stricter of it and the validator's applies). ``evidence`` holds OCSP responses and CRLs
        that came with a document or from the user (see the module docstring). Never raises
        for a bad certificate or a bad revocation answer: the result says what failed."""
        if kind not in VALIDATION_KINDS:
            raise UsageError(f"kind must be 'sign', 'auth' or 'tsa', not {kind!r}")
        if evidence is not None and not isinstance(evidence, RevocationEvidence):
            raise UsageError("evidence must be a RevocationEvidence")
        given = at
        if at is None:
            at = self.clock.now()
        elif not isinstance(at, _dt.datetime) or at.tzinfo is None or at.utcoffset() is None:
            raise UsageError("at must be a timezone-aware datetime")
        if not isinstance(cert, (x509.Certificate, bytes, bytearray, memoryview)):
            raise UsageError(f"cert must be an x509.Certificate or bytes, not {type(cert).__name__}")
        max_age = self.revocation_max_age
        if revocation_max_age is not None and revocation_max_age is not max_age:
            _check_max_age(revocation_max_age)
            if max_age is None or revocation_max_age < max_age:
                max_age = revocation_max_age
        try:
            # Answers are judged against now, also when validating for another time.
            now = at if given is None else self.clock.now()
            return self._validate(cert, kind, at, now, max_age, nonce, evidence or _NO_EVIDENCE,
                                  self.offline)
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
                der = cert.public_bytes(_DER)
                examined = examine(cert, der, kind, self.trust)
                self._remember(key, examined, len(der))
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
                self._remember(key, examined, len(data))
        return examined

    def _validate(
        self,
        cert: x509.Certificate | bytes | bytearray | memoryview,
        kind: str,
        at: _dt.datetime,
        now: _dt.datetime,
        max_age: _dt.timedelta | None,
        nonce: bool,
        evidence: RevocationEvidence,
        offline: bool,
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
        if evidence:
            found, notes = self._from_evidence(facts, anchor, at, now, evidence)
        else:
            found, notes = None, ()
        if offline:
            if found is not None:
                return self._decide(kind, at, facts, anchor, found, ())
            return self._offline_failure(kind, at, facts, anchor, evidence, notes)
        result = self._online(kind, at, now, max_age, facts, anchor, nonce)
        if found is None:
            return result
        return self._with_evidence(result, found, kind, at, facts, anchor)

    def _online(
        self,
        kind: str,
        at: _dt.datetime,
        now: _dt.datetime,
        max_age: _dt.timedelta | None,
        facts: LeafFacts,
        anchor: Anchor,
        nonce: bool,
    ) -> ValidationResult:
        # The hot path: a verified OCSP answer still fresh at ``at`` and young enough.
        if self.revocation == "ocsp":
            entry = self.ocsp_cache.get((anchor.fingerprint, facts.serial))
            if entry is not None and fresh_at(entry.info, at, self.tolerance) and young(entry.as_of, now, max_age):
                if entry.info.status == "good" and not len(self.crl_cache):
                    return _passed(kind, at, facts, anchor, entry.info, ())  # no CRL could say revoked
                return self._settle(kind, at, now, max_age, facts, anchor, entry.info, ())
        return self._check_revocation(kind, at, now, max_age, facts, anchor, nonce)

    # -- evidence (answers embedded in a document or given by the user)

    def _from_evidence(
        self,
        facts: LeafFacts,
        anchor: Anchor,
        at: _dt.datetime,
        now: _dt.datetime,
        evidence: RevocationEvidence,
    ) -> tuple[RevocationInfo | None, tuple[str, ...]]:
        """The answer the evidence gives about ``facts`` at ``at`` (a verified revoked answer
        first, else a verified good one issued at or after ``at``), and why the other answers
        about this certificate could not be used."""
        revoked: RevocationInfo | None = None
        good: RevocationInfo | None = None
        notes: list[str] = []
        for item in evidence.items:
            what = f"{item.origin} {'OCSP response' if item.kind == 'ocsp' else 'CRL'}"
            if item.source:
                what += f" {item.source}"
            try:
                info = self._evidence_answer(item, what, facts, anchor, at, now)
            except RevocationProblem as problem:
                if problem.reason in (Reason.OCSP_CERTID_MISMATCH, Reason.CRL_ISSUER_MISMATCH):
                    continue  # an answer about another certificate, or of another CA
                notes.append(problem.message)
                continue
            if info.status == "revoked":
                if revoked is None or (info.revoked_at or at) < (revoked.revoked_at or at):
                    revoked = info
            elif info.status == "good":
                issued = info.this_update if info.this_update is not None else info.produced_at
                if issued is not None and issued >= at - self.tolerance:
                    good = good or info
                else:
                    notes.append(f"{what}: good as of {_iso(issued)}, before {_iso(at)}: it cannot "
                                 "prove the status at that time")
            else:
                notes.append(f"{what}: the responder does not know serial {facts.serial:X}")
        return (revoked or good), tuple(notes)

    def _evidence_answer(
        self,
        item: EvidenceItem,
        what: str,
        facts: LeafFacts,
        anchor: Anchor,
        at: _dt.datetime,
        now: _dt.datetime,
    ) -> RevocationInfo:
        """One evidence item checked as a fetched answer would be (raises RevocationProblem)."""
        origin = item.origin
        if item.kind == "ocsp":
            info, _ = verify_ocsp_response(item.der, facts.cert, anchor, nonce=None, at=at, now=now,
                                           tolerance=self.tolerance, source=what, origin=origin)
            return info
        loaded = load_crl(item.der, anchor, source=what, at=at, now=now, tolerance=self.tolerance)
        return crl_answer(loaded, facts.serial, from_cache=False, origin=origin)

    def _offline_failure(
        self,
        kind: str,
        at: _dt.datetime,
        facts: LeafFacts,
        anchor: Anchor,
        evidence: RevocationEvidence,
        notes: tuple[str, ...],
    ) -> ValidationResult:
        """No network, and the evidence does not answer: revocation-unavailable (or soft-fail)."""
        detail = "; ".join(notes) or (
            "no OCSP response or CRL about this certificate" if evidence
            else "no revocation data was embedded or given")
        message = (f"offline: the embedded or given revocation data does not prove the status of "
                   f"serial {facts.serial:X} at {_iso(at)} ({detail})")
        if self.soft_fail:
            unavailable = RevocationInfo(method=self.revocation, status="unavailable")
            return _passed(kind, at, facts, anchor, unavailable, (f"soft-fail: {message}",))
        return _failed(kind, at, facts, anchor, Reason.REVOCATION_UNAVAILABLE, message)

    def _with_evidence(
        self,
        result: ValidationResult,
        found: RevocationInfo,
        kind: str,
        at: _dt.datetime,
        facts: LeafFacts,
        anchor: Anchor,
    ) -> ValidationResult:
        """Combine what the sources said with what the evidence says: a revoked answer of the
        evidence wins; the evidence answers when no source could be reached."""
        online = result.revocation
        if found.status == "revoked" and (online is None or online.status != "revoked"):
            return self._decide(kind, at, facts, anchor, found, result.warnings)
        unreachable = (not result.ok and result.reason is Reason.REVOCATION_UNAVAILABLE) or (
            result.ok and online is not None and online.status == "unavailable")
        if unreachable:
            kept = tuple(w for w in result.warnings if not w.startswith("soft-fail:"))
            note = (f"revocation-evidence: no revocation source answered; the {found.origin} "
                    f"{found.method.upper()} answer was used")
            return self._decide(kind, at, facts, anchor, found, (*kept, note))
        return result

    # -- gathering validation data for a long-term signature

    def gather(
        self,
        cert: x509.Certificate,
        *,
        kind: str,
        at: _dt.datetime | None = None,
        evidence: RevocationEvidence | None = None,
    ) -> Gathered:
        """Validate ``cert`` as a ``kind`` certificate at ``at`` on revocation answers a signer can
        embed, and return them (DER) with the result and the trust anchor.

        With ``evidence`` (files the user handed in) those are used; otherwise the certificate's
        OCSP responder is asked for a fresh (nonced) response and, when it gives no usable one
        (or ``revocation='crl'``), its CRL is fetched. The caches are not used: the bytes are
        what is wanted. The result rests on those answers alone (as offline); ``revocation='none'``
        gathers nothing, so the result fails.
        """
        if kind not in VALIDATION_KINDS:
            raise UsageError(f"kind must be 'sign', 'auth' or 'tsa', not {kind!r}")
        now = self.clock.now()
        at = now if at is None else at
        if at.tzinfo is None or at.utcoffset() is None:
            raise UsageError("at must be a timezone-aware datetime")
        examined = self._examine(cert, kind)
        if examined.failure is not None or examined.anchor is None or examined.facts is None:
            result = self.validate(cert, kind=kind, at=at)
            return Gathered(result, _NO_EVIDENCE, None)
        if self.revocation == "none":  # nothing to gather: a long-term signature needs answers
            result = _failed(kind, at, examined.facts, examined.anchor, Reason.REVOCATION_UNAVAILABLE,
                             "revocation='none' gathers no revocation data")
            return Gathered(result, _NO_EVIDENCE, examined.anchor.cert)
        if evidence is None or not evidence:
            evidence = self._fetch_evidence(examined.facts, examined.anchor, at, now)
        try:
            result = self._validate(cert, kind, at, now, None, False, evidence, True)
        except Exception as exc:  # noqa: BLE001 - fail closed, as validate does
            result = ValidationResult(False, Reason.INTERNAL_ERROR,
                                      f"validation failed unexpectedly: {type(exc).__name__}: {exc}",
                                      kind, at)
        return Gathered(result, evidence, examined.anchor.cert)

    def _fetch_evidence(self, facts: LeafFacts, anchor: Anchor, at: _dt.datetime,
                        now: _dt.datetime) -> RevocationEvidence:
        """A fresh OCSP response about ``facts`` (verified), else its CRL; nothing when neither
        answers (the offline check then says why)."""
        if self.revocation == "none" or self.offline:
            return _NO_EVIDENCE
        if self.revocation == "ocsp" and facts.ocsp_url is not None:
            request, nonce = ocsp_request(facts.cert, anchor)
            try:
                body = bytes(self.fetch(facts.ocsp_url, request, OCSP_REQUEST_TYPE))
                verify_ocsp_response(body, facts.cert, anchor, nonce=nonce, at=at, now=now,
                                     tolerance=self.tolerance, source=facts.ocsp_url)
            except RevocationProblem:
                pass
            except Exception:  # noqa: BLE001 - unreachable: try the CRL
                pass
            else:
                return RevocationEvidence.of(ocsp=[body], origin="fetched", source=facts.ocsp_url)
        if facts.crl_url is not None:
            try:
                body = bytes(self.fetch(facts.crl_url, None, None))
                load_crl(body, anchor, source=facts.crl_url, at=at, now=now, tolerance=self.tolerance)
            except Exception:  # noqa: BLE001 - unreachable or refused: nothing to embed
                return _NO_EVIDENCE
            return RevocationEvidence.of(crls=[body], origin="fetched", source=facts.crl_url)
        return _NO_EVIDENCE

    def _check_revocation(
        self,
        kind: str,
        at: _dt.datetime,
        now: _dt.datetime,
        max_age: _dt.timedelta | None,
        facts: LeafFacts,
        anchor: Anchor,
        nonce: bool,
    ) -> ValidationResult:
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
                    as_of = now if info.produced_at is None else min(now, info.produced_at)
                    self.ocsp_cache.put((anchor.fingerprint, facts.serial), OcspEntry(_as_cached(info), as_of))
        if info is None:
            if facts.crl_url is None:
                problems.append(("CRL", RevocationProblem(
                    Reason.REVOCATION_UNAVAILABLE, "the certificate names no http(s) CRL distribution point",
                    unavailable=True)))
            else:
                try:
                    info = check_crl(facts.cert, anchor, facts.crl_url, fetch=self.fetch, at=at, now=now,
                                     tolerance=self.tolerance, cache=self.crl_cache, max_age=max_age)
                except RevocationProblem as problem:
                    problems.append(("CRL", problem))
            if info is not None and problems:
                warnings += [f"ocsp-fallback: {source} gave no usable answer ({p.reason}: {p.message});"
                             " the CRL was used" for source, p in problems]
        if info is not None:
            return self._settle(kind, at, now, max_age, facts, anchor, info, tuple(warnings))
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

    def _settle(
        self,
        kind: str,
        at: _dt.datetime,
        now: _dt.datetime,
        max_age: _dt.timedelta | None,
        facts: LeafFacts,
        anchor: Anchor,
        info: RevocationInfo,
        warnings: tuple[str, ...],
    ) -> ValidationResult:
        """The result for ``info``, unless the other source's cached answer, fresh and young
        enough, says revoked: a revocation from any source wins."""
        if info.status != "revoked":
            try:
                revoked = self._revoked_elsewhere(info.method, at, now, max_age, facts, anchor)
            except RevocationProblem as problem:  # a listed serial whose CRL entry is malformed
                return _failed(kind, at, facts, anchor, problem.reason, problem.message, warnings=warnings)
            if revoked is not None:
                info = revoked
        return self._decide(kind, at, facts, anchor, info, warnings)

    def _revoked_elsewhere(
        self,
        method: str,
        at: _dt.datetime,
        now: _dt.datetime,
        max_age: _dt.timedelta | None,
        facts: LeafFacts,
        anchor: Anchor,
    ) -> RevocationInfo | None:
        """A cached ``revoked`` answer about ``facts`` from the source other than ``method``,
        if one is fresh at ``at`` and young enough at ``now`` (no fetch: one or two look-ups)."""
        if method == "ocsp":
            url = facts.crl_url
            if url is None or not len(self.crl_cache):  # the usual case while OCSP answers
                return None
            cached = self.crl_cache.get((url, anchor.fingerprint))
            if (cached is None or facts.serial not in cached.crl or not cached.fresh_at(at, self.tolerance)
                    or not young(cached.fetched_at, now, max_age)):
                return None
            return crl_answer(cached, facts.serial, from_cache=True)
        entry = self.ocsp_cache.get((anchor.fingerprint, facts.serial))
        if (entry is None or entry.info.status != "revoked" or not fresh_at(entry.info, at, self.tolerance)
                or not young(entry.as_of, now, max_age)):
            return None
        return entry.info

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


def _iso(when: _dt.datetime | None) -> str:
    return "an unknown time" if when is None else when.astimezone(_dt.UTC).isoformat()


def _check_max_age(max_age: _dt.timedelta | None) -> _dt.timedelta | None:
    if max_age is not None and (not isinstance(max_age, _dt.timedelta) or max_age < _ZERO):
        raise UsageError("revocation_max_age must be a non-negative timedelta or None")
    return max_age


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
