"""RFC 3161 timestamp tokens: the one place that reads a TimeStampToken and judges it.

::

    from jpki.verify.timestamp import verify_token       # also jpki.tsa.verify_token
    check = verify_token(token_der, data=signature_value, trust=TrustStore.for_home(home),
                         revocation="ocsp", clock=clock)
    check.ok, check.reason, check.summary(), check.to_json(), check.token.gen_time

Three callers, one set of checks (:func:`check_token`):

* the RFC 3161 client (:mod:`jpki.tsa.client`) checks that a TSA's reply stamps what it asked
  for, echoes its nonce and is signed by the certificate it holds;
* CMS and PDF verification (:func:`jpki.sign.cms.check_timestamp_token`: signature, archive
  and document timestamps) checks the token over the signature or the bytes it covers; the
  TSA's certificate is then validated at the token's time by the validator (``kind='tsa'``,
  with the evidence the document embeds);
* :func:`verify_token` (signing code, the TSA's tests and benchmark) adds the TSA's path to a
  trust store at genTime and, when asked, its revocation now.

What a token must be, checked in this order; :func:`verify_token` answers a frozen
:class:`TokenCheck` whose ``reason`` (a :class:`TokenReason`) names the first check that failed,
:func:`check_token` raises :class:`jpki.errors.VerificationError` with that reason:

``malformed-token``
    not a SignedData holding a TSTInfo (version 1, genTime in UTC) with exactly one SignerInfo,
    or a part of it (the TSA's certificate included) that does not decode.
``imprint-mismatch`` / ``nonce-mismatch`` / ``policy-mismatch``
    the token stamps other data than asked (or hashes it with anything but SHA-256/384/512),
    or does not echo ``nonce``, or is not of ``policy`` (each checked when given).
``no-tsa-certificate``
    the certificate the SignerInfo names is neither in the token nor in ``certificates``.
``bad-signature``
    the content-type, message-digest or signingCertificate(V2) attribute is missing or wrong
    (RFC 3161 §2.4.1 and §2.4.2, RFC 5035: the attribute must name the signer's certificate),
    or the signature (RSA PKCS#1 v1.5 or PSS, ECDSA, EdDSA) does not verify with the
    certificate's key.
``not-a-tsa-certificate``
    the certificate is not a time-stamping one (:func:`jpki.verify.path.tsa_usage_problem`,
    the rule the validator's ``kind='tsa'`` applies too).
``tsa-certificate-not-valid``
    genTime is outside the certificate's validity.
``untrusted-tsa``
    no path from the certificate (through the token's other certificates) to an anchor of
    ``trust`` at genTime (``cryptography.x509.verification``, RFC 5280).
``tsa-revoked`` / ``revocation-unavailable``
    with ``revocation`` ``ocsp`` (OCSP, then the CRL) or ``crl``: the TSA's certificate is
    revoked now, or no source answered (fail closed). A certificate revoked *after* genTime for
    a reason that does not put earlier tokens in doubt (not keyCompromise, cACompromise or
    unspecified) is accepted with a warning: its tokens made before stay good.

``revocation="none"`` (the default) checks no revocation: validating the TSA at the time the
token proves, with the revocation data of that time, is the verifier's work (long-term
validation), which takes :attr:`TokenCheck.tsa_certificate` from here.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Literal

from asn1crypto import algos, cms, core, tsp
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification as _xv
from cryptography.x509.oid import ExtensionOID

from jpki.clock import Clock, SystemClock
from jpki.errors import UsageError, VerificationError
from jpki.verify.anchors import Anchor, TrustStore
from jpki.verify.fetch import Fetch, HttpFetcher
from jpki.verify.path import crl_url, ocsp_url, rfc5280_path, tsa_usage_problem
from jpki.verify.result import RevocationInfo
from jpki.verify.revocation_check import RevocationProblem, check_crl, check_ocsp

__all__ = [
    "TOKEN_DIGESTS",
    "TimestampToken",
    "TokenCheck",
    "TokenReason",
    "check_token",
    "signer_certificate",
    "verify_token",
]

#: Hashes a token may use for its imprint, its signature and its ESSCertIDv2 (what TSAs use and
#: jpki's TSA grants); SHA-1 only in a version 1 ESSCertID, which RFC 2634 defines with it.
TOKEN_DIGESTS: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
#: What asn1crypto and cryptography raise for bytes they cannot decode (as
#: :data:`jpki.sign.cms.DECODE_ERRORS`): a token that does not decode is ``malformed-token``.
_DECODE_ERRORS: Final = (ValueError, TypeError, LookupError, ArithmeticError, RecursionError,
                         UnsupportedAlgorithm, x509.InvalidVersion, x509.DuplicateExtension,
                         x509.UnsupportedGeneralNameType)
_SIGNED_DATA_OID: Final = "1.2.840.113549.1.7.2"
_TST_INFO_OID: Final = "1.2.840.113549.1.9.16.1.4"
#: Reasons for which a revocation puts every token of the certificate in doubt, whenever made.
_DOUBTFUL_REASONS: Final = frozenset({None, "unspecified", "keyCompromise", "cACompromise"})

RevocationMode = Literal["none", "ocsp", "crl"]
#: The imprint a token must carry, given the hash algorithm it names (None: no such imprint).
Imprint = Callable[[str], bytes | None]


class TokenReason(enum.StrEnum):
    """Why a token is refused (see the module docstring), or ``ok``."""

    OK = "ok"
    MALFORMED_TOKEN = "malformed-token"
    IMPRINT_MISMATCH = "imprint-mismatch"
    NONCE_MISMATCH = "nonce-mismatch"
    POLICY_MISMATCH = "policy-mismatch"
    NO_TSA_CERTIFICATE = "no-tsa-certificate"
    BAD_SIGNATURE = "bad-signature"
    NOT_A_TSA_CERTIFICATE = "not-a-tsa-certificate"
    TSA_CERTIFICATE_NOT_VALID = "tsa-certificate-not-valid"
    UNTRUSTED_TSA = "untrusted-tsa"
    TSA_REVOKED = "tsa-revoked"
    REVOCATION_UNAVAILABLE = "revocation-unavailable"


class _Bad(Exception):
    def __init__(self, reason: TokenReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclasses.dataclass(frozen=True)
class TimestampToken:
    """A TimeStampToken (DER ContentInfo) and what its TSTInfo says."""

    der: bytes
    gen_time: _dt.datetime
    serial: int
    policy: str
    hash_algorithm: str
    digest: bytes
    nonce: int | None
    accuracy: _dt.timedelta | None
    tsa_name: str | None
    certificates: tuple[x509.Certificate, ...]

    @classmethod
    def from_der(cls, der: bytes) -> TimestampToken:
        """Read a token; :class:`jpki.errors.VerificationError` (``malformed-token``) when it is
        not a SignedData of one signer holding a version 1 TSTInfo."""
        try:
            return _read(bytes(der))[0]
        except _Bad as bad:
            raise VerificationError(str(bad.reason), bad.message) from None

    def to_json(self) -> dict[str, Any]:
        return {"gen_time": self.gen_time.isoformat(), "serial": self.serial, "policy": self.policy,
                "hash_algorithm": self.hash_algorithm, "digest": self.digest.hex(),
                "nonce": None if self.nonce is None else format(self.nonce, "x"),
                "accuracy_seconds": None if self.accuracy is None else self.accuracy.total_seconds(),
                "tsa": self.tsa_name}


def _read(der: bytes) -> tuple[TimestampToken, cms.ContentInfo]:
    """The token and its ContentInfo (``_Bad``, ``malformed-token``, when it is no token)."""
    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].dotted != _SIGNED_DATA_OID:
            raise _Bad(TokenReason.MALFORMED_TOKEN, "the timestamp token is not a CMS SignedData")
        signed = info["content"]
        eci = signed["encap_content_info"]
        if eci["content_type"].dotted != _TST_INFO_OID:
            raise _Bad(TokenReason.MALFORMED_TOKEN, "the timestamp token does not hold a TSTInfo")
        if len(signed["signer_infos"]) != 1:
            raise _Bad(TokenReason.MALFORMED_TOKEN, "a timestamp token has exactly one signer")
        tst = tsp.TSTInfo.load(eci["content"].contents, strict=True)
        if tst["version"].native != "v1":
            raise _Bad(TokenReason.MALFORMED_TOKEN, "unsupported TSTInfo version")
        gen_time = tst["gen_time"].native
        if not isinstance(gen_time, _dt.datetime) or gen_time.utcoffset() is None:
            raise _Bad(TokenReason.MALFORMED_TOKEN, "the token's genTime is not a time in UTC")
        accuracy = tst["accuracy"]
        tsa = tst["tsa"]
        certificates = signed["certificates"]
        token = TimestampToken(
            der=der,
            gen_time=gen_time,
            serial=int(tst["serial_number"].native),
            policy=tst["policy"].dotted,
            hash_algorithm=str(tst["message_imprint"]["hash_algorithm"]["algorithm"].native),
            digest=bytes(tst["message_imprint"]["hashed_message"].native),
            nonce=tst["nonce"].native,
            accuracy=None if accuracy.native is None else _dt.timedelta(
                seconds=accuracy["seconds"].native or 0, milliseconds=accuracy["millis"].native or 0,
                microseconds=accuracy["micros"].native or 0),
            tsa_name=None if tsa.native is None else _general_name(tsa),
            certificates=() if isinstance(certificates, core.Void) else tuple(
                x509.load_der_x509_certificate(c.chosen.dump()) for c in certificates
                if c.name == "certificate"),
        )
    except _Bad:
        raise
    except _DECODE_ERRORS as exc:
        raise _Bad(TokenReason.MALFORMED_TOKEN, f"cannot decode the timestamp token: {_one_line(exc)}") from None
    return token, info


def _general_name(name: Any) -> str:
    """A GeneralName as text: a directory name as asn1crypto writes it, anything else as is."""
    if name.name == "directory_name":
        return str(name.chosen.human_friendly)
    return str(name.native)


def _one_line(exc: BaseException) -> str:
    """A decoder's message in one line of at most 160 characters (asn1crypto's span several)."""
    detail = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {detail[:157] + '...' if len(detail) > 160 else detail}"


# --------------------------------------------------------------------------- the token itself


def check_token(
    token: TimestampToken | bytes,
    *,
    imprint: Imprint | None = None,
    nonce: int | None = None,
    policy: str | None = None,
    certificates: Iterable[x509.Certificate] = (),
    signature: bool = True,
    profile: bool = True,
) -> tuple[TimestampToken, x509.Certificate | None]:
    """Check what a token says and who signed it, without trust: that it is a token, that it
    stamps ``imprint(its hash algorithm)``, echoes ``nonce`` and is of ``policy`` (each when
    given), that its signature and signed attributes hold (``signature``: with its own
    certificate or one of ``certificates``) and that the signer is a time-stamping certificate
    (``profile``). Returns the token and the signer's certificate (None without
    ``signature``); raises :class:`jpki.errors.VerificationError` whose ``reason`` is a
    :class:`TokenReason` (never another exception for bad bytes)."""
    try:
        parsed, info = _read(token.der if isinstance(token, TimestampToken) else bytes(token))
        return parsed, _check(parsed, info, imprint, nonce, policy, certificates, signature, profile)
    except _Bad as bad:
        raise VerificationError(str(bad.reason), bad.message) from None


def _check(parsed: TimestampToken, info: cms.ContentInfo, imprint: Imprint | None, nonce: int | None,
           policy: str | None, certificates: Iterable[x509.Certificate], signature: bool,
           profile: bool) -> x509.Certificate | None:
    """The checks of :func:`check_token` on a token read; the signer's certificate."""
    _check_claims(parsed, imprint, nonce, policy)
    if not signature:
        return None
    try:
        signer = _check_signature(info, [*parsed.certificates, *certificates])
    except _Bad:
        raise
    except _DECODE_ERRORS as exc:
        raise _Bad(TokenReason.MALFORMED_TOKEN,
                   f"cannot decode the timestamp token's signer: {_one_line(exc)}") from None
    if profile:
        _check_profile(signer)
    return signer


def _check_profile(cert: x509.Certificate) -> None:
    problem = tsa_usage_problem(cert)
    if problem is not None:
        raise _Bad(TokenReason.NOT_A_TSA_CERTIFICATE, f"not a timestamp authority's certificate: {problem}")


def _check_claims(token: TimestampToken, imprint: Imprint | None, nonce: int | None,
                  policy: str | None) -> None:
    if imprint is not None:
        if token.hash_algorithm not in TOKEN_DIGESTS:
            raise _Bad(TokenReason.IMPRINT_MISMATCH, f"the token's imprint is of {token.hash_algorithm}, "
                                                     f"not one of {', '.join(TOKEN_DIGESTS)}")
        expected = imprint(token.hash_algorithm)
        if expected is None or not hmac.compare_digest(expected, token.digest):
            raise _Bad(TokenReason.IMPRINT_MISMATCH, "the token stamps other data")
    if nonce is not None and token.nonce != nonce:
        raise _Bad(TokenReason.NONCE_MISMATCH, "the token does not echo the nonce")
    if policy is not None and token.policy != policy:
        raise _Bad(TokenReason.POLICY_MISMATCH, f"the token's policy is {token.policy}, not {policy}")


def _attribute(attrs: cms.CMSAttributes, name: str) -> Any:
    values = [a["values"] for a in attrs if a["type"].native == name]
    if len(values) != 1 or len(values[0]) != 1:
        raise _Bad(TokenReason.BAD_SIGNATURE, f"the signer has no single {name.replace('_', '-')} attribute")
    return values[0][0]


def _matches_sid(cert: x509.Certificate, sid: cms.SignerIdentifier) -> bool:
    if sid.name == "issuer_and_serial_number":
        return bool(cert.issuer.public_bytes() == sid.chosen["issuer"].dump()
                    and cert.serial_number == sid.chosen["serial_number"].native)
    try:
        ski = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER).value
    except x509.ExtensionNotFound:
        return False
    return isinstance(ski, x509.SubjectKeyIdentifier) and ski.digest == sid.chosen.native


def signer_certificate(token: TimestampToken | bytes,
                       certificates: Iterable[x509.Certificate] = ()) -> x509.Certificate | None:
    """The certificate the token's SignerInfo names, from the token or ``certificates``
    (None when neither holds it); VerificationError (``malformed-token``) for a bad token."""
    try:
        parsed, info = _read(token.der if isinstance(token, TimestampToken) else bytes(token))
        sid = info["content"]["signer_infos"][0]["sid"]
        return next((c for c in (*parsed.certificates, *certificates) if _matches_sid(c, sid)), None)
    except _Bad as bad:
        raise VerificationError(str(bad.reason), bad.message) from None
    except _DECODE_ERRORS as exc:
        raise VerificationError(str(TokenReason.MALFORMED_TOKEN),
                                f"cannot decode the timestamp token's signer: {_one_line(exc)}") from None


def _decoded(cert: x509.Certificate) -> x509.Certificate:
    """``cert`` with every field decoded now: cryptography decodes on first use, and a field
    that does not decode must refuse the token here, not raise later in a report."""
    _ = (cert.version, cert.serial_number, cert.not_valid_before_utc, cert.not_valid_after_utc,
         cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), list(cert.extensions),
         cert.public_key())
    return cert


def _check_signature(info: cms.ContentInfo, candidates: Sequence[x509.Certificate]) -> x509.Certificate:
    """The SignerInfo's certificate once its attributes and signature hold."""
    signed = info["content"]
    signer_info = signed["signer_infos"][0]
    sid = signer_info["sid"]
    signer = next((c for c in candidates if _matches_sid(c, sid)), None)
    if signer is None:
        raise _Bad(TokenReason.NO_TSA_CERTIFICATE,
                   "the TSA's certificate is not in the token (ask with certReq, or pass it as certificates=)")
    _decoded(signer)
    digest_name = signer_info["digest_algorithm"]["algorithm"].native
    if digest_name not in TOKEN_DIGESTS:
        raise _Bad(TokenReason.BAD_SIGNATURE, f"unsupported digest algorithm {digest_name}")
    attrs = signer_info["signed_attrs"]
    if isinstance(attrs, core.Void):
        raise _Bad(TokenReason.BAD_SIGNATURE, "the signer has no signed attributes")
    # the encoding as received, taken before its children are looked at; signed as a SET OF
    to_verify = b"\x31" + attrs.dump()[1:]
    if _attribute(attrs, "content_type").dotted != _TST_INFO_OID:
        raise _Bad(TokenReason.BAD_SIGNATURE, "the content-type attribute is not id-ct-TSTInfo")
    content = signed["encap_content_info"]["content"].contents
    if not hmac.compare_digest(_attribute(attrs, "message_digest").native,
                               hashlib.new(digest_name, content).digest()):
        raise _Bad(TokenReason.BAD_SIGNATURE, "the message-digest attribute does not match the TSTInfo")
    _check_ess(attrs, signer)
    try:
        _verify(signer.public_key(), signer_info["signature_algorithm"], digest_name, to_verify,
                signer_info["signature"].native)
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        raise _Bad(TokenReason.BAD_SIGNATURE, "the token's signature does not verify") from None
    return signer


def _verify(key: object, algorithm: algos.SignedDigestAlgorithm, digest_name: str, data: bytes,
            signature: bytes) -> None:
    """Raise InvalidSignature unless ``signature`` is ``key``'s over ``data``; ``_Bad`` for an
    algorithm that does not fit the key or the SignerInfo's digest algorithm."""
    try:
        mech = algorithm.signature_algo
    except ValueError:
        raise _Bad(TokenReason.BAD_SIGNATURE,
                   f"unsupported signature algorithm {algorithm['algorithm'].dotted}") from None
    try:
        implied: str | None = algorithm.hash_algo
    except ValueError:
        implied = None
    if implied is not None and mech != "rsassa_pss" and implied != digest_name:
        raise _Bad(TokenReason.BAD_SIGNATURE, f"the signature algorithm uses {implied}, the digest is {digest_name}")
    chosen = TOKEN_DIGESTS[digest_name]()
    if mech == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, data, padding.PKCS1v15(), chosen)
    elif mech == "rsassa_pss" and isinstance(key, rsa.RSAPublicKey):
        params = algorithm["parameters"]
        pss_hash = params["hash_algorithm"]["algorithm"].native
        mgf_hash = params["mask_gen_algorithm"]["parameters"]["algorithm"].native
        if pss_hash not in TOKEN_DIGESTS or mgf_hash not in TOKEN_DIGESTS:
            raise _Bad(TokenReason.BAD_SIGNATURE, f"unsupported RSASSA-PSS hash {pss_hash}/{mgf_hash}")
        key.verify(signature, data, padding.PSS(padding.MGF1(TOKEN_DIGESTS[mgf_hash]()),
                                                params["salt_length"].native), TOKEN_DIGESTS[pss_hash]())
    elif mech == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(chosen))
    elif mech in ("ed25519", "ed448") and isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        key.verify(signature, data)
    else:
        raise _Bad(TokenReason.BAD_SIGNATURE, f"unsupported signature algorithm {mech} for a {type(key).__name__}")


def _check_ess(attrs: cms.CMSAttributes, signer: x509.Certificate) -> None:
    """RFC 3161 §2.4.1 / RFC 5035: a signingCertificate(V2) attribute whose first ESSCertID is
    the signer's certificate (its hash, and its issuer and serial when given)."""
    der = signer.public_bytes(Encoding.DER)
    names = {a["type"].native for a in attrs}
    if "signing_certificate_v2" in names:
        first = _attribute(attrs, "signing_certificate_v2")["certs"][0]
        algorithm = first["hash_algorithm"]["algorithm"].native
        if algorithm not in TOKEN_DIGESTS:
            raise _Bad(TokenReason.BAD_SIGNATURE, f"unsupported ESSCertIDv2 hash {algorithm}")
        expected = hashlib.new(algorithm, der).digest()
    elif "signing_certificate" in names:
        first = _attribute(attrs, "signing_certificate")["certs"][0]
        expected = hashlib.sha1(der).digest()  # RFC 2634's ESSCertID is SHA-1
    else:
        raise _Bad(TokenReason.BAD_SIGNATURE, "no signingCertificate(V2) attribute names the TSA's certificate")
    if not hmac.compare_digest(first["cert_hash"].native, expected):
        raise _Bad(TokenReason.BAD_SIGNATURE, "the signingCertificate attribute names another certificate")
    issuer_serial = first["issuer_serial"]
    if issuer_serial.native is not None:
        names_ok = any(n.name == "directory_name" and n.chosen.untag().dump() == signer.issuer.public_bytes()
                       for n in issuer_serial["issuer"])
        if not names_ok or issuer_serial["serial_number"].native != signer.serial_number:
            raise _Bad(TokenReason.BAD_SIGNATURE, "the signingCertificate attribute names another issuer or serial")


# --------------------------------------------------------------------------- trust


@dataclasses.dataclass(frozen=True)
class TokenCheck:
    """The outcome of :func:`verify_token`."""

    ok: bool
    reason: TokenReason
    message: str
    token: TimestampToken | None = None
    tsa_certificate: x509.Certificate | None = None
    revocation: RevocationInfo | None = None
    warnings: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line for people."""
        if not self.ok:
            return f"timestamp INVALID ({self.reason}): {self.message}"
        assert self.token is not None and self.tsa_certificate is not None
        return (f"timestamp valid: {self.token.gen_time.isoformat()} by "
                f"{self.tsa_certificate.subject.rfc4514_string()} (serial {self.token.serial})")

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "reason": str(self.reason), "message": self.message,
                "token": None if self.token is None else self.token.to_json(),
                "tsa_certificate": None if self.tsa_certificate is None else {
                    "subject": self.tsa_certificate.subject.rfc4514_string(),
                    "serial": format(self.tsa_certificate.serial_number, "X"),
                    "not_before": self.tsa_certificate.not_valid_before_utc.isoformat(),
                    "not_after": self.tsa_certificate.not_valid_after_utc.isoformat()},
                "revocation": None if self.revocation is None else self.revocation.to_json(),
                "warnings": list(self.warnings)}


def verify_token(
    token: TimestampToken | bytes,
    *,
    trust: TrustStore,
    data: bytes | None = None,
    digest: bytes | None = None,
    nonce: int | None = None,
    policy: str | None = None,
    certificates: Iterable[x509.Certificate] = (),
    revocation: RevocationMode = "none",
    fetch: Fetch | None = None,
    clock: Clock | None = None,
) -> TokenCheck:
    """Check ``token`` (see the module docstring for the order and the reasons): that it stamps
    ``data`` (or ``digest``, of the token's hash algorithm), echoes ``nonce`` and is of
    ``policy`` when given, that its signature holds, and that its TSA is a time-stamping
    certificate with a path to ``trust`` at genTime (``certificates`` may supply the TSA's
    certificate and intermediates the token lacks), not revoked per ``revocation``, asked now
    (``clock``) through ``fetch``. Never raises for a bad token."""
    if data is not None and digest is not None:
        raise UsageError("give the data the token stamps or its digest, not both")
    if revocation not in ("none", "ocsp", "crl"):
        raise UsageError(f"revocation must be none, ocsp or crl, not {revocation!r}")
    if not isinstance(trust, TrustStore):
        raise UsageError("trust must be a jpki.verify.TrustStore")
    imprint: Imprint | None = None
    if data is not None:
        imprint = lambda algorithm: hashlib.new(algorithm, data).digest()  # noqa: E731
    elif digest is not None:
        imprint = lambda algorithm: bytes(digest)  # noqa: E731
    parsed: TimestampToken | None = token if isinstance(token, TimestampToken) else None
    signer: x509.Certificate | None = None
    others = list(certificates)
    try:
        parsed, info = _read(token.der if isinstance(token, TimestampToken) else bytes(token))
        signer = _check(parsed, info, imprint, nonce, policy, others, True, False)
        assert signer is not None
        _check_profile(signer)
        if not signer.not_valid_before_utc <= parsed.gen_time <= signer.not_valid_after_utc:
            raise _Bad(TokenReason.TSA_CERTIFICATE_NOT_VALID,
                       f"genTime {parsed.gen_time.isoformat()} is outside the TSA certificate's validity "
                       f"({signer.not_valid_before_utc.isoformat()} .. {signer.not_valid_after_utc.isoformat()})")
        issuer = _check_path(signer, [*parsed.certificates, *others], trust, parsed.gen_time)
        status, warnings = (None, ()) if revocation == "none" else _check_revocation(
            signer, issuer, parsed.gen_time, revocation, fetch, clock or SystemClock())
    except _Bad as bad:
        return TokenCheck(False, bad.reason, bad.message, parsed, signer)
    except _DECODE_ERRORS as exc:
        return TokenCheck(False, TokenReason.MALFORMED_TOKEN,
                          f"cannot decode the timestamp token: {_one_line(exc)}", parsed, signer)
    return TokenCheck(True, TokenReason.OK, "the timestamp token is valid", parsed, signer, status, warnings)


def _check_path(cert: x509.Certificate, others: Sequence[x509.Certificate], trust: TrustStore,
                at: _dt.datetime) -> x509.Certificate:
    """RFC 5280 path validation at ``at`` (the leaf's own profile, which its extended key usage
    does not fit, is :func:`~jpki.verify.path.tsa_usage_problem`'s); the certificate that
    issued ``cert``."""
    anchors = [a.cert for a in trust]
    if not anchors:
        raise _Bad(TokenReason.UNTRUSTED_TSA, "no trust anchors were given")
    try:
        chain = rfc5280_path(cert, anchors, [c for c in others if c != cert], at, max_depth=4)
    except _xv.VerificationError as exc:
        raise _Bad(TokenReason.UNTRUSTED_TSA, f"no trusted path for the TSA's certificate "
                                              f"{cert.subject.rfc4514_string()}: {exc}") from None
    return chain[1]


def _check_revocation(cert: x509.Certificate, issuer: x509.Certificate, gen_time: _dt.datetime,
                      mode: RevocationMode, fetch: Fetch | None,
                      clock: Clock) -> tuple[RevocationInfo, tuple[str, ...]]:
    """The TSA certificate's status now, by OCSP (then the CRL) or the CRL alone."""
    try:
        anchor = Anchor.from_certificate(issuer, "sign", "the TSA's issuer")
    except UsageError as exc:
        raise _Bad(TokenReason.UNTRUSTED_TSA, str(exc)) from None
    own = fetch is None
    fetcher: Fetch = fetch if fetch is not None else HttpFetcher()
    now = clock.now()
    problems: list[str] = []
    info: RevocationInfo | None = None
    warnings: tuple[str, ...] = ()
    try:
        responder = ocsp_url(cert) if mode == "ocsp" else None
        if responder is not None:
            try:
                info, warnings = check_ocsp(cert, anchor, responder, fetch=fetcher, at=now, now=now)
            except RevocationProblem as exc:
                problems.append(str(exc))
        distribution_point = crl_url(cert)
        if (info is None or info.status == "unknown") and distribution_point is not None:
            try:
                info = check_crl(cert, anchor, distribution_point, fetch=fetcher, at=now, now=now)
            except RevocationProblem as exc:
                problems.append(str(exc))
    finally:
        if own:
            closer = getattr(fetcher, "close", None)
            if callable(closer):
                closer()
    if info is None or info.status not in ("good", "revoked"):
        raise _Bad(TokenReason.REVOCATION_UNAVAILABLE, "the TSA certificate's status could not be learnt: "
                   + ("; ".join(problems) or "it names no OCSP responder or CRL"))
    if info.status == "revoked":
        when = info.revoked_at
        if when is None or when <= gen_time or info.reason in _DOUBTFUL_REASONS:
            raise _Bad(TokenReason.TSA_REVOKED, "the TSA certificate was revoked"
                       + (f" on {when.isoformat()}" if when else "") + f" ({info.reason or 'no reason'})")
        warnings = (*warnings, f"the TSA certificate was revoked on {when.isoformat()} ({info.reason}), "
                               f"after this token's time")
    return info, tuple(warnings)
