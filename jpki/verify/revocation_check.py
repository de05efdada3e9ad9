"""Revocation status of one certificate: an OCSP client, a CRL check, and their caches.

Both checks return a :class:`~jpki.verify.result.RevocationInfo` whose status is ``good``,
``revoked`` or (OCSP only) ``unknown``, or raise :class:`RevocationProblem`: ``unavailable``
when the source could not be reached or would not answer (no URL, network error, HTTP error,
an unsigned OCSP error status such as ``tryLater``), otherwise an integrity failure of an answer
that did arrive, with its reason code.

OCSP (RFC 6960, RFC 5019 profile), :func:`check_ocsp`:

* the request names the certificate by a SHA-1 CertID and, unless disabled, carries a 32-byte
  random nonce (RFC 9654); it is POSTed to the first http(s) OCSP URL of the certificate's
  authority information access;
* the response must be ``successful`` and parse (``ocsp-malformed``), and hold a SingleResponse
  whose CertID — hash algorithm, issuer name hash, issuer key hash, serial — is this certificate's
  (``ocsp-certid-mismatch``);
* it must be signed by the issuing root itself, or by a delegated responder whose certificate is
  in the response, is issued (and signed) by that root, carries id-kp-OCSPSigning, allows
  digitalSignature when it has a key usage, and is valid at producedAt
  (``ocsp-unauthorised-responder``); the signature algorithm must fit the signer's key — RSA
  PKCS#1 v1.5, ECDSA (a delegate with a P-256 key signs ``ecdsa-with-SHA256``) or EdDSA — and
  the signature must verify (``ocsp-bad-signature``);
* the nonce must come back unchanged when one was sent (``ocsp-nonce-mismatch``);
* thisUpdate must not lie ahead of the validator's clock by more than the tolerance
  (``ocsp-not-yet-valid``), and the validation time must not lie after nextUpdate plus the
  tolerance (``ocsp-stale``); a response without nextUpdate is only good for the tolerance
  after its thisUpdate.

CRL, :func:`check_crl`: the first http(s) URI of a distribution point without reasons or CRL
issuer; :meth:`jpki.revocation.crl.LoadedCRL.from_der` checks shape, issuer, signature and
critical extensions (``crl-malformed``, ``crl-issuer-mismatch``, ``crl-signature-invalid``,
``crl-unsupported-extension``); the same time rules as OCSP give ``crl-not-yet-valid`` and
``crl-expired``; then one look-up of the serial. A certificate on hold is reported revoked
(reason ``certificateHold``), as RFC 5280 asks.

Caches (:class:`OcspCache`, :class:`CrlCache`) keep verified answers only, with the moment
each speaks for (:func:`young`): an OCSP answer from its producedAt (or when it was fetched, if
that is earlier), a CRL from when it was fetched — a CRL's thisUpdate says when the CA signed
it, not when it was last seen to be current, and a CA that publishes daily would otherwise
have every CRL look old. A cached answer is used only while fresh at the validation time and,
under a maximum age, no older than that age. They are bounded by count and by bytes (least
recently used out first, :class:`~jpki.verify.cache.LruCache`) and thread-safe.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hmac
import secrets
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, SignatureAlgorithmOID

from jpki.revocation.crl import CRLError, LoadedCRL
from jpki.verify.anchors import Anchor, key_hash
from jpki.verify.cache import LruCache
from jpki.verify.fetch import Fetch
from jpki.verify.result import Reason, RevocationInfo, RevocationOrigin, RevocationStatus

__all__ = [
    "DEFAULT_TOLERANCE",
    "NONCE_LENGTH",
    "CachedCrl",
    "CrlCache",
    "OcspCache",
    "OcspEntry",
    "RevocationProblem",
    "check_crl",
    "check_ocsp",
    "load_crl",
    "ocsp_request",
    "verify_ocsp_response",
    "young",
]

#: Clock skew allowed around thisUpdate / nextUpdate.
DEFAULT_TOLERANCE = _dt.timedelta(minutes=5)
#: Nonce length sent in OCSP requests (RFC 9654 recommends 32 octets).
NONCE_LENGTH = 32
OCSP_REQUEST_TYPE = "application/ocsp-request"

_HASHES: dict[type[hashes.HashAlgorithm], type[hashes.HashAlgorithm]] = {
    hashes.SHA1: hashes.SHA1,
    hashes.SHA224: hashes.SHA224,
    hashes.SHA256: hashes.SHA256,
    hashes.SHA384: hashes.SHA384,
    hashes.SHA512: hashes.SHA512,
}


class RevocationProblem(Exception):
    """A revocation source gave no usable answer. ``unavailable`` is True when it could not be
    reached or would not answer; False when an answer arrived and failed a check (``reason``)."""

    def __init__(self, reason: Reason, message: str, *, unavailable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.unavailable = unavailable


def _unavailable(message: str) -> RevocationProblem:
    return RevocationProblem(Reason.REVOCATION_UNAVAILABLE, message, unavailable=True)


def _check_times(
    this_update: _dt.datetime,
    next_update: _dt.datetime | None,
    *,
    at: _dt.datetime,
    now: _dt.datetime,
    tolerance: _dt.timedelta,
    what: str,
    not_yet: Reason,
    stale: Reason,
) -> None:
    """The freshness rules shared by OCSP responses and CRLs (``what`` prefixes the message)."""
    if this_update > now + tolerance:
        raise RevocationProblem(
            not_yet, f"{what}: thisUpdate {this_update.isoformat()} is ahead of the clock ({now.isoformat()})"
        )
    edge = next_update if next_update is not None else this_update
    if at > edge + tolerance:
        name = "nextUpdate" if next_update is not None else "thisUpdate (no nextUpdate)"
        raise RevocationProblem(
            stale, f"{what}: too old: {name} {edge.isoformat()} is before the validation time {at.isoformat()}"
        )


def fresh_at(info: RevocationInfo, at: _dt.datetime, tolerance: _dt.timedelta) -> bool:
    """Whether a verified answer still speaks for validation time ``at``."""
    edge = info.next_update if info.next_update is not None else info.this_update
    return edge is not None and at <= edge + tolerance


def young(as_of: _dt.datetime, now: _dt.datetime, max_age: _dt.timedelta | None) -> bool:
    """Whether a cached answer that speaks as of ``as_of`` may still be relied on at ``now``
    under ``max_age`` (None: no bound; zero: never — every check asks the source again)."""
    return max_age is None or (bool(max_age) and now - as_of <= max_age)


# --------------------------------------------------------------------------- OCSP


#: Signature algorithms by the family of key that may make them (PKCS#1 v1.5 only for RSA: the
#: PSS parameters are not read, so a PSS signature is refused rather than half-checked).
_RSA_SIGNATURES = frozenset({
    SignatureAlgorithmOID.RSA_WITH_SHA1, SignatureAlgorithmOID.RSA_WITH_SHA224,
    SignatureAlgorithmOID.RSA_WITH_SHA256, SignatureAlgorithmOID.RSA_WITH_SHA384,
    SignatureAlgorithmOID.RSA_WITH_SHA512,
})
_ECDSA_SIGNATURES = frozenset({
    SignatureAlgorithmOID.ECDSA_WITH_SHA1, SignatureAlgorithmOID.ECDSA_WITH_SHA224,
    SignatureAlgorithmOID.ECDSA_WITH_SHA256, SignatureAlgorithmOID.ECDSA_WITH_SHA384,
    SignatureAlgorithmOID.ECDSA_WITH_SHA512,
})


def _verify_signature(
    key: object,
    signature: bytes,
    data: bytes,
    algorithm: hashes.HashAlgorithm | None,
    oid: x509.ObjectIdentifier,
) -> None:
    """Raise InvalidSignature (or UnsupportedAlgorithm) unless ``signature`` is ``key``'s over
    ``data`` made with the signature algorithm ``oid`` (hash ``algorithm``). An algorithm of
    another family than the key's (an ECDSA signature labelled sha256WithRSAEncryption…) is
    UnsupportedAlgorithm, even when the key would verify the bytes."""
    if isinstance(key, rsa.RSAPublicKey):
        if oid not in _RSA_SIGNATURES or algorithm is None:
            raise UnsupportedAlgorithm(f"signature algorithm {oid.dotted_string} does not fit an RSA key")
        key.verify(signature, data, padding.PKCS1v15(), algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if oid not in _ECDSA_SIGNATURES or algorithm is None:
            raise UnsupportedAlgorithm(f"signature algorithm {oid.dotted_string} does not fit an EC key")
        key.verify(signature, data, ec.ECDSA(algorithm))
    elif isinstance(key, ed25519.Ed25519PublicKey):
        if oid != SignatureAlgorithmOID.ED25519:
            raise UnsupportedAlgorithm(f"signature algorithm {oid.dotted_string} does not fit an Ed25519 key")
        key.verify(signature, data)
    elif isinstance(key, ed448.Ed448PublicKey):
        if oid != SignatureAlgorithmOID.ED448:
            raise UnsupportedAlgorithm(f"signature algorithm {oid.dotted_string} does not fit an Ed448 key")
        key.verify(signature, data)
    else:
        raise UnsupportedAlgorithm(f"unsupported responder key type {type(key).__name__}")


def _has_nocheck(cert: x509.Certificate) -> bool:
    try:
        cert.extensions.get_extension_for_oid(ExtensionOID.OCSP_NO_CHECK)
    except x509.ExtensionNotFound:
        return False
    return True


def _authorise_delegate(cert: x509.Certificate, anchor: Anchor, produced_at: _dt.datetime) -> str | None:
    """Why ``cert`` may not sign OCSP responses for ``anchor``'s certificates, or None."""
    try:
        cert.verify_directly_issued_by(anchor.cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return f"the responder certificate {cert.subject.rfc4514_string()} is not issued by {anchor.subject}"
    try:
        eku = cert.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    except x509.ExtensionNotFound:
        eku = None
    if not isinstance(eku, x509.ExtendedKeyUsage) or ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        return "the responder certificate lacks the id-kp-OCSPSigning extended key usage"
    try:
        ku = cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
    except x509.ExtensionNotFound:
        ku = None
    if isinstance(ku, x509.KeyUsage) and not ku.digital_signature:
        return "the responder certificate's key usage does not allow digitalSignature"
    if not cert.not_valid_before_utc <= produced_at <= cert.not_valid_after_utc:
        return (
            f"the responder certificate is not valid at producedAt {produced_at.isoformat()}"
            f" ({cert.not_valid_before_utc.isoformat()} .. {cert.not_valid_after_utc.isoformat()})"
        )
    return None


def _matches(single: ocsp.OCSPSingleResponse, cert: x509.Certificate, anchor: Anchor) -> bool:
    """Whether a SingleResponse's CertID names ``cert`` as issued by ``anchor`` (any of the
    SHA-1/SHA-2 CertID hash algorithms)."""
    if single.serial_number != cert.serial_number:
        return False
    algorithm = _HASHES.get(type(single.hash_algorithm))
    if algorithm is None:
        return False
    name_hash = hashes.Hash(algorithm())
    name_hash.update(anchor.subject_der)
    key_digest = hashes.Hash(algorithm())
    key_digest.update(anchor.key_bits)
    return hmac.compare_digest(single.issuer_name_hash, name_hash.finalize()) and hmac.compare_digest(
        single.issuer_key_hash, key_digest.finalize()
    )


def verify_ocsp_response(
    der: bytes,
    cert: x509.Certificate,
    anchor: Anchor,
    *,
    nonce: bytes | None,
    at: _dt.datetime,
    now: _dt.datetime,
    tolerance: _dt.timedelta = DEFAULT_TOLERANCE,
    source: str | None = None,
    origin: RevocationOrigin = "fetched",
) -> tuple[RevocationInfo, tuple[str, ...]]:
    """Check an OCSP response about ``cert`` (issued by ``anchor``); the answer and warnings.
    ``origin`` is recorded in the answer (``fetched``, or ``embedded``/``given`` evidence).

    Raises :class:`RevocationProblem` (see the module docstring for the checks and reasons).
    """
    try:
        response = ocsp.load_der_ocsp_response(der)
        status = response.response_status
    except ValueError as exc:
        raise RevocationProblem(Reason.OCSP_MALFORMED, f"the OCSP response does not parse: {exc}") from None
    if status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        # Unsigned: evidence of nothing, so the source counts as unavailable.
        raise _unavailable(f"the OCSP responder answered {status.name}")
    try:
        singles = list(response.responses)
        produced_at = response.produced_at_utc
        responder_hash = response.responder_key_hash
        responder_name = response.responder_name
        included = list(response.certificates)
        tbs = response.tbs_response_bytes
        signature = response.signature
        signature_oid = response.signature_algorithm_oid
        extensions = response.extensions
    except ValueError as exc:
        raise RevocationProblem(Reason.OCSP_MALFORMED, f"the OCSP response does not parse: {exc}") from None
    try:
        algorithm: hashes.HashAlgorithm | None = response.signature_hash_algorithm
    except UnsupportedAlgorithm as exc:
        raise RevocationProblem(Reason.OCSP_BAD_SIGNATURE, f"unsupported OCSP signature algorithm: {exc}") from None

    single = next((s for s in singles if _matches(s, cert, anchor)), None)
    if single is None:
        raise RevocationProblem(
            Reason.OCSP_CERTID_MISMATCH,
            f"the OCSP response does not speak of serial {cert.serial_number:X} of {anchor.subject}",
        )

    # Who signed: the issuing root itself, or a delegate it certified.
    warnings: list[str] = []
    signer_key: object
    if (responder_hash is not None and hmac.compare_digest(responder_hash, anchor.key_hash)) or (
        responder_name is not None and responder_name == anchor.cert.subject
    ):
        signer_key = anchor.public_key
        signer_subject = anchor.subject
    else:
        delegate = next(
            (
                c
                for c in included
                if (responder_hash is not None and key_hash(c) == responder_hash)
                or (responder_name is not None and c.subject == responder_name)
            ),
            None,
        )
        if delegate is None:
            raise RevocationProblem(
                Reason.OCSP_UNAUTHORISED_RESPONDER,
                "the OCSP response is signed by a responder that is neither the issuer nor certified"
                " in the response",
            )
        refusal = _authorise_delegate(delegate, anchor, produced_at)
        if refusal is not None:
            raise RevocationProblem(Reason.OCSP_UNAUTHORISED_RESPONDER, refusal)
        if not _has_nocheck(delegate):
            warnings.append(
                "ocsp-responder-not-checked: the delegated responder certificate has no"
                " id-pkix-ocsp-nocheck; its own status was not checked"
            )
        signer_key = delegate.public_key()
        signer_subject = delegate.subject.rfc4514_string()
    try:
        _verify_signature(signer_key, signature, tbs, algorithm, signature_oid)
    except InvalidSignature:
        raise RevocationProblem(Reason.OCSP_BAD_SIGNATURE, "the OCSP response signature does not verify") from None
    except UnsupportedAlgorithm as exc:
        raise RevocationProblem(Reason.OCSP_BAD_SIGNATURE, f"unsupported OCSP signature: {exc}") from None

    if nonce is not None:
        try:
            echoed = extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            raise RevocationProblem(
                Reason.OCSP_NONCE_MISMATCH, "the OCSP response does not echo the request's nonce"
            ) from None
        if not hmac.compare_digest(echoed, nonce):
            raise RevocationProblem(
                Reason.OCSP_NONCE_MISMATCH, "the OCSP response carries another nonce than the request's"
            )

    this_update = single.this_update_utc
    next_update = single.next_update_utc
    _check_times(
        this_update,
        next_update,
        at=at,
        now=now,
        tolerance=tolerance,
        what=f"OCSP {source}" if source else "OCSP response",
        not_yet=Reason.OCSP_NOT_YET_VALID,
        stale=Reason.OCSP_STALE,
    )
    cert_status = single.certificate_status
    revoked_at = reason = None
    status_text: RevocationStatus
    if cert_status is ocsp.OCSPCertStatus.GOOD:
        status_text = "good"
    elif cert_status is ocsp.OCSPCertStatus.REVOKED:
        status_text = "revoked"
        revoked_at = single.revocation_time_utc
        flag = single.revocation_reason
        reason = (flag or x509.ReasonFlags.unspecified).value
    else:
        status_text = "unknown"
    info = RevocationInfo(
        method="ocsp",
        status=status_text,
        source=source,
        responder=signer_subject,
        produced_at=produced_at,
        this_update=this_update,
        next_update=next_update,
        revoked_at=revoked_at,
        reason=reason,
        origin=origin,
    )
    return info, tuple(warnings)


def ocsp_request(cert: x509.Certificate, anchor: Anchor, *, nonce: bool = True) -> tuple[bytes, bytes | None]:
    """The DER OCSP request about ``cert`` (a SHA-1 CertID) and the nonce it carries (None
    without one)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, anchor.cert, hashes.SHA1())
    nonce_value = secrets.token_bytes(NONCE_LENGTH) if nonce else None
    if nonce_value is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce_value), critical=False)
    return builder.build().public_bytes(Encoding.DER), nonce_value


def check_ocsp(
    cert: x509.Certificate,
    anchor: Anchor,
    url: str,
    *,
    fetch: Fetch,
    at: _dt.datetime,
    now: _dt.datetime,
    tolerance: _dt.timedelta = DEFAULT_TOLERANCE,
    nonce: bool = True,
) -> tuple[RevocationInfo, tuple[str, ...]]:
    """Ask the OCSP responder at ``url`` about ``cert`` and check the answer (see the module
    docstring). Raises :class:`RevocationProblem`."""
    request, nonce_value = ocsp_request(cert, anchor, nonce=nonce)
    try:
        body = fetch(url, request, OCSP_REQUEST_TYPE)
    except Exception as exc:  # noqa: BLE001 - any failure to fetch means "unavailable"
        raise _unavailable(f"OCSP {url}: {type(exc).__name__}: {exc}") from None
    return verify_ocsp_response(
        bytes(body), cert, anchor, nonce=nonce_value, at=at, now=now, tolerance=tolerance, source=url
    )


# --------------------------------------------------------------------------- CRL


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class CachedCrl:
    """A verified CRL, where it came from and when it was fetched (by the validator's clock)."""

    crl: LoadedCRL
    source: str
    this_update: _dt.datetime
    next_update: _dt.datetime | None
    issuer: str  # RFC 4514
    fetched_at: _dt.datetime

    def fresh_at(self, at: _dt.datetime, tolerance: _dt.timedelta) -> bool:
        edge = self.next_update if self.next_update is not None else self.this_update
        return at <= edge + tolerance


def load_crl(
    der: bytes,
    anchor: Anchor,
    *,
    source: str,
    at: _dt.datetime,
    now: _dt.datetime,
    tolerance: _dt.timedelta = DEFAULT_TOLERANCE,
) -> CachedCrl:
    """Verify a CRL of ``anchor`` and its times (raises :class:`RevocationProblem`)."""
    try:
        crl = LoadedCRL.from_der(der, anchor.cert)
    except CRLError as exc:
        raise RevocationProblem(_crl_reason(exc.reason), f"CRL {source}: {exc}") from None
    _check_times(
        crl.this_update,
        crl.next_update,
        at=at,
        now=now,
        tolerance=tolerance,
        what=f"CRL {source}",
        not_yet=Reason.CRL_NOT_YET_VALID,
        stale=Reason.CRL_EXPIRED,
    )
    return CachedCrl(crl, source, crl.this_update, crl.next_update, crl.issuer.rfc4514_string(), now)


def _crl_reason(reason: str) -> Reason:
    try:
        return Reason(reason)
    except ValueError:
        return Reason.CRL_MALFORMED


def crl_answer(cached: CachedCrl, serial: int, *, from_cache: bool,
               origin: RevocationOrigin = "fetched") -> RevocationInfo:
    """Look ``serial`` up on a verified CRL (raises :class:`RevocationProblem` for a bad entry)."""
    try:
        entry = cached.crl.lookup(serial)
    except CRLError as exc:
        raise RevocationProblem(_crl_reason(exc.reason), f"CRL {cached.source}: {exc}") from None
    if entry is None:
        status: RevocationStatus = "good"
        revoked_at = reason = None
    else:
        status, revoked_at, reason = "revoked", entry.revoked_at, entry.reason.value
    return RevocationInfo(
        method="crl",
        status=status,
        source=cached.source,
        responder=cached.issuer,
        this_update=cached.this_update,
        next_update=cached.next_update,
        revoked_at=revoked_at,
        reason=reason,
        crl_number=cached.crl.crl_number,
        cached=from_cache,
        origin=origin,
    )


def check_crl(
    cert: x509.Certificate,
    anchor: Anchor,
    url: str,
    *,
    fetch: Fetch,
    at: _dt.datetime,
    now: _dt.datetime,
    tolerance: _dt.timedelta = DEFAULT_TOLERANCE,
    cache: CrlCache | None = None,
    max_age: _dt.timedelta | None = None,
) -> RevocationInfo:
    """The status of ``cert`` on the CRL at ``url``: from ``cache`` while fresh at ``at`` and
    fetched no longer than ``max_age`` before ``now`` (see :func:`young`), else fetched.
    Raises :class:`RevocationProblem`."""
    key = (url, anchor.fingerprint)
    cached = cache.get(key) if cache is not None else None
    if cached is not None and cached.fresh_at(at, tolerance) and young(cached.fetched_at, now, max_age):
        return crl_answer(cached, cert.serial_number, from_cache=True)
    try:
        body = fetch(url, None, None)
    except Exception as exc:  # noqa: BLE001 - any failure to fetch means "unavailable"
        raise _unavailable(f"CRL {url}: {type(exc).__name__}: {exc}") from None
    loaded = load_crl(bytes(body), anchor, source=url, at=at, now=now, tolerance=tolerance)
    if cache is not None:
        cache.put(key, loaded)
    return crl_answer(loaded, cert.serial_number, from_cache=False)


# --------------------------------------------------------------------------- caches

#: What an entry of each cache is reckoned to weigh beyond its variable parts (measured: a
#: RevocationInfo with its datetimes and strings is some 700 bytes; a CRL's index costs about
#: 150 bytes per revoked serial on top of its DER).
_OCSP_ENTRY_BYTES = 1024
_CRL_ENTRY_BYTES = 160


class OcspEntry(NamedTuple):
    """A verified OCSP answer (marked ``cached``) and the moment it speaks for: its producedAt,
    or when it was fetched if that is earlier."""

    info: RevocationInfo
    as_of: _dt.datetime


def _ocsp_weight(key: tuple[bytes, int], entry: OcspEntry) -> int:
    return _OCSP_ENTRY_BYTES + len(entry.info.source or "") + len(entry.info.responder or "")


def _crl_weight(key: tuple[str, bytes], entry: CachedCrl) -> int:
    return len(entry.crl.der) + _CRL_ENTRY_BYTES * len(entry.crl) + len(key[0])


class OcspCache(LruCache[tuple[bytes, int], OcspEntry]):
    """Verified OCSP answers by (issuing anchor's SHA-256, serial), used while fresh at the
    validation time (and young enough, under a maximum age). Share one between validators to
    share answers. Bounded by count and by bytes (about 1 KiB an answer)."""

    def __init__(self, max_entries: int = 100_000, max_bytes: int | None = 64 * 1024 * 1024) -> None:
        super().__init__(max_entries, max_bytes, size=_ocsp_weight)

    def invalidate(self, serial: int | None = None) -> int:
        """Drop the answers about ``serial`` (every answer when None); how many were dropped."""
        if serial is None:
            return self.clear()
        return self.discard_where(lambda key: key[1] == serial)


class CrlCache(LruCache[tuple[str, bytes], CachedCrl]):
    """Verified CRLs by (URL, issuing anchor's SHA-256), used until their nextUpdate (and while
    young enough, under a maximum age). A J-LIS CRL is tens of MiB and its index more, hence
    the small count and a byte bound (a CRL heavier than the bound is used but not kept)."""

    def __init__(self, max_entries: int = 8, max_bytes: int | None = 512 * 1024 * 1024) -> None:
        super().__init__(max_entries, max_bytes, size=_crl_weight)
