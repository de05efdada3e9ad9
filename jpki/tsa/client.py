"""Asking a TSA for a timestamp, and checking a timestamp token: the library side of RFC 3161.

::

    from jpki.tsa import request_timestamp, verify_token
    from jpki.verify import TrustStore
    token = request_timestamp("http://127.0.0.1:PORT/", data=signature_value)   # nonce, certReq
    token.der, token.gen_time, token.serial, token.policy
    check = verify_token(token, data=signature_value, trust=TrustStore.for_home(home),
                         revocation="ocsp", clock=clock)
    check.ok, check.reason, check.summary(), check.to_json()

:func:`request_timestamp` sends a TimeStampReq (a random 64-bit nonce, certReq, SHA-256 unless
told otherwise) through a :class:`jpki.verify.Fetch` (default :class:`~jpki.verify.fetch.HttpFetcher`:
an overall deadline, a size limit), and returns the token once the answer is granted, echoes the
nonce and stamps the imprint it was asked to: :class:`TimestampRefusedError` (the TSA's
PKIStatus, failInfo and statusString) or :class:`TimestampError` otherwise. It does not judge the
signature: that is :func:`verify_token`'s work, which never raises for a bad token and answers a
frozen :class:`TokenCheck` whose ``reason`` is one of :class:`TokenReason`, checked in this order:

``malformed-token``
    not a SignedData holding a TSTInfo (version 1) with exactly one SignerInfo.
``imprint-mismatch`` / ``nonce-mismatch`` / ``policy-mismatch``
    the token stamps other data than ``data``/``digest``, or does not echo ``nonce``, or is not
    of ``policy`` (each checked when given).
``no-tsa-certificate``
    the certificate the SignerInfo names is neither in the token nor in ``certificates``.
``bad-signature``
    the content-type, message-digest or signingCertificate(V2) attribute is missing or wrong
    (RFC 3161 §2.4.2, RFC 5035: the attribute must name the signer's certificate), or the
    signature does not verify with the certificate's key.
``not-a-tsa-certificate``
    the certificate's extended key usage is not ``id-kp-timeStamping`` alone and critical
    (RFC 3161 §2.3), its key usage allows more than digitalSignature/nonRepudiation, or it is a CA.
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
from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal

from asn1crypto import cms, tsp
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification as _xv
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from jpki.clock import Clock, SystemClock
from jpki.errors import JpkiError, UsageError, VerificationError
from jpki.tsa.protocol import (
    HASH_ALGORITHMS,
    QUERY_TYPE,
    TimeStampResp,
    make_query,
    new_nonce,
    rfc_name,
)
from jpki.verify.anchors import Anchor, TrustStore
from jpki.verify.fetch import Fetch, HttpFetcher
from jpki.verify.path import _crl_url, _ocsp_url  # where a certificate says its status is kept
from jpki.verify.result import RevocationInfo
from jpki.verify.revocation_check import RevocationProblem, check_crl, check_ocsp

__all__ = [
    "TimestampError",
    "TimestampRefusedError",
    "TimestampToken",
    "TokenCheck",
    "TokenReason",
    "request_timestamp",
    "verify_token",
]

#: Largest TSA answer read (a token with a certificate chain is a few KiB).
MAX_REPLY_SIZE: Final = 256 * 1024
#: Seconds a whole request to a TSA may take.
DEFAULT_DEADLINE: Final = 10.0
_DECODE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError)
_TST_INFO_OID: Final = "1.2.840.113549.1.9.16.1.4"
#: Reasons for which a revocation puts every token of the certificate in doubt, whenever made.
_DOUBTFUL_REASONS: Final = frozenset({None, "unspecified", "keyCompromise", "cACompromise"})

RevocationMode = Literal["none", "ocsp", "crl"]


class TimestampError(JpkiError):
    """No token from the TSA at ``url``: ``reason`` is ``unreachable`` (no HTTP 200 answer),
    ``bad-reply`` (not a TimeStampResp, or a token for another imprint or nonce) or
    ``refused`` (:class:`TimestampRefusedError`)."""

    code = "timestamp_failed"

    def __init__(self, url: str, reason: str, message: str) -> None:
        super().__init__(f"timestamp authority {url}: {message}")
        self.url = url
        self.reason = reason


class TimestampRefusedError(TimestampError):
    """The TSA answered but granted nothing: its PKIStatus (``status``), failInfo bits
    (``fail_info``, RFC 3161 names such as ``badAlg``) and statusString (``text``)."""

    code = "timestamp_refused"

    def __init__(self, url: str, status: str, fail_info: Sequence[str], text: str) -> None:
        detail = ", ".join(fail_info) or "no failInfo"
        super().__init__(url, "refused", f"refused ({status}: {detail})" + (f": {text}" if text else ""))
        self.status = status
        self.fail_info = tuple(fail_info)
        self.text = text


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
            return cls._read(cms.ContentInfo.load(bytes(der), strict=True), bytes(der))
        except _Bad as bad:
            raise VerificationError(str(bad.reason), bad.message) from None
        except _DECODE_ERRORS as exc:
            raise VerificationError(str(TokenReason.MALFORMED_TOKEN), f"not a timestamp token: {exc}") from None

    @classmethod
    def _read(cls, info: cms.ContentInfo, der: bytes) -> TimestampToken:
        try:
            if info["content_type"].dotted != "1.2.840.113549.1.7.2":
                raise _Bad(TokenReason.MALFORMED_TOKEN, "the token is not a CMS SignedData")
            signed = info["content"]
            eci = signed["encap_content_info"]
            if eci["content_type"].dotted != _TST_INFO_OID:
                raise _Bad(TokenReason.MALFORMED_TOKEN, "the token does not hold a TSTInfo")
            if len(signed["signer_infos"]) != 1:
                raise _Bad(TokenReason.MALFORMED_TOKEN, "a timestamp token has exactly one signer")
            tst = tsp.TSTInfo.load(eci["content"].contents, strict=True)
            if tst["version"].native != "v1":
                raise _Bad(TokenReason.MALFORMED_TOKEN, "unsupported TSTInfo version")
            gen_time = tst["gen_time"].native
            accuracy = tst["accuracy"]
            tsa = tst["tsa"]
            certs = tuple(x509.load_der_x509_certificate(c.chosen.dump()) for c in signed["certificates"]
                          if c.name == "certificate") if signed["certificates"].native is not None else ()
            token = cls(
                der=der,
                gen_time=gen_time if gen_time.tzinfo else gen_time.replace(tzinfo=_dt.UTC),
                serial=int(tst["serial_number"].native),
                policy=tst["policy"].dotted,
                hash_algorithm=str(tst["message_imprint"]["hash_algorithm"]["algorithm"].native),
                digest=bytes(tst["message_imprint"]["hashed_message"].native),
                nonce=tst["nonce"].native,
                accuracy=None if accuracy.native is None else _dt.timedelta(
                    seconds=accuracy["seconds"].native or 0, milliseconds=accuracy["millis"].native or 0,
                    microseconds=accuracy["micros"].native or 0),
                tsa_name=None if tsa.native is None else _general_name(tsa),
                certificates=certs,
            )
        except _Bad:
            raise
        except _DECODE_ERRORS as exc:
            raise _Bad(TokenReason.MALFORMED_TOKEN, f"cannot decode the timestamp token: {exc}") from None
        return token

    def to_json(self) -> dict[str, Any]:
        return {"gen_time": self.gen_time.isoformat(), "serial": self.serial, "policy": self.policy,
                "hash_algorithm": self.hash_algorithm, "digest": self.digest.hex(),
                "nonce": None if self.nonce is None else format(self.nonce, "x"),
                "accuracy_seconds": None if self.accuracy is None else self.accuracy.total_seconds(),
                "tsa": self.tsa_name}


def _general_name(name: Any) -> str:
    """A GeneralName as text: a directory name as asn1crypto writes it, anything else as is."""
    if name.name == "directory_name":
        return str(name.chosen.human_friendly)
    return str(name.native)


# --------------------------------------------------------------------------- requesting


def request_timestamp(url: str, data: bytes | None = None, *, digest: bytes | None = None,
                      hash_algorithm: str = "sha256", nonce: bool = True, cert_req: bool = True,
                      policy: str | None = None, fetch: Fetch | None = None) -> TimestampToken:
    """A timestamp token from the TSA at ``url`` for ``data`` (hashed here) or its ``digest``
    (of ``hash_algorithm``: sha256, sha384 or sha512). See the module docstring."""
    if (data is None) == (digest is None):
        raise UsageError("give the data to timestamp or its digest, not both")
    if hash_algorithm not in HASH_ALGORITHMS:
        raise UsageError(f"unsupported hash algorithm {hash_algorithm!r}: use one of {', '.join(HASH_ALGORITHMS)}")
    imprint = hashlib.new(hash_algorithm, data).digest() if data is not None else bytes(digest or b"")
    nonce_value = new_nonce() if nonce else None
    query = make_query(imprint, hash_algorithm, nonce=nonce_value, cert_req=cert_req, policy=policy)
    own = fetch is None
    fetcher: Fetch = fetch if fetch is not None else HttpFetcher(deadline=DEFAULT_DEADLINE, max_size=MAX_REPLY_SIZE)
    try:
        body = fetcher(url, query, QUERY_TYPE)
    except Exception as exc:  # noqa: BLE001 - any failure to fetch means "unreachable"
        raise TimestampError(url, "unreachable", f"{type(exc).__name__}: {exc}") from None
    finally:
        if own:
            closer = getattr(fetcher, "close", None)
            if callable(closer):
                closer()
    try:
        response = TimeStampResp.load(bytes(body), strict=True)
        status_info = response["status"]
        status = str(status_info["status"].native)
        fail_info = sorted(rfc_name(b) for b in (status_info["fail_info"].native or ()))
        text = "; ".join(status_info["status_string"].native or [])
        token_info = response["time_stamp_token"]
        granted = status in ("granted", "granted_with_mods")
        token_der = token_info.dump() if granted and token_info.native is not None else None
    except _DECODE_ERRORS as exc:
        raise TimestampError(url, "bad-reply", f"the answer is not a TimeStampResp ({exc})") from None
    if not granted:
        raise TimestampRefusedError(url, status, fail_info, text[:300])
    if token_der is None:
        raise TimestampError(url, "bad-reply", f"status {status} but no token")
    try:
        token = TimestampToken._read(cms.ContentInfo.load(token_der), token_der)
    except _Bad as bad:
        raise TimestampError(url, "bad-reply", bad.message) from None
    if token.hash_algorithm != hash_algorithm or not hmac.compare_digest(token.digest, imprint):
        raise TimestampError(url, "bad-reply", "the token stamps another imprint than the one asked for")
    if nonce_value is not None and token.nonce != nonce_value:
        raise TimestampError(url, "bad-reply", "the token does not echo the nonce")
    if cert_req and not token.certificates:
        raise TimestampError(url, "bad-reply", "certReq was set but the token holds no certificate")
    return token


# --------------------------------------------------------------------------- checking


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
    parsed: TimestampToken | None = token if isinstance(token, TimestampToken) else None
    signer: x509.Certificate | None = None
    try:
        info = cms.ContentInfo.load(token.der if isinstance(token, TimestampToken) else bytes(token), strict=True)
        if parsed is None:
            parsed = TimestampToken._read(info, bytes(token))  # type: ignore[arg-type]
        _check_claims(parsed, data, digest, nonce, policy)
        signer = _check_signature(info, [*parsed.certificates, *certificates])
        _check_profile(signer)
        if not signer.not_valid_before_utc <= parsed.gen_time <= signer.not_valid_after_utc:
            raise _Bad(TokenReason.TSA_CERTIFICATE_NOT_VALID,
                       f"genTime {parsed.gen_time.isoformat()} is outside the TSA certificate's validity "
                       f"({signer.not_valid_before_utc.isoformat()} .. {signer.not_valid_after_utc.isoformat()})")
        issuer = _check_path(signer, [*parsed.certificates, *certificates], trust, parsed.gen_time)
        status, warnings = (None, ()) if revocation == "none" else _check_revocation(
            signer, issuer, parsed.gen_time, revocation, fetch, clock or SystemClock())
    except _Bad as bad:
        return TokenCheck(False, bad.reason, bad.message, parsed, signer)
    except _DECODE_ERRORS as exc:
        return TokenCheck(False, TokenReason.MALFORMED_TOKEN, f"cannot decode the timestamp token: {exc}",
                          parsed, signer)
    return TokenCheck(True, TokenReason.OK, "the timestamp token is valid", parsed, signer, status, warnings)


def _check_claims(token: TimestampToken, data: bytes | None, digest: bytes | None, nonce: int | None,
                  policy: str | None) -> None:
    if data is not None or digest is not None:
        if token.hash_algorithm not in HASH_ALGORITHMS:
            raise _Bad(TokenReason.IMPRINT_MISMATCH, f"the token's imprint is of {token.hash_algorithm}, "
                                                     f"not one of {', '.join(HASH_ALGORITHMS)}")
        expected = hashlib.new(token.hash_algorithm, data).digest() if data is not None else bytes(digest or b"")
        if not hmac.compare_digest(expected, token.digest):
            raise _Bad(TokenReason.IMPRINT_MISMATCH, "the token stamps other data")
    if nonce is not None and token.nonce != nonce:
        raise _Bad(TokenReason.NONCE_MISMATCH, "the token does not echo the nonce")
    if policy is not None and token.policy != policy:
        raise _Bad(TokenReason.POLICY_MISMATCH, f"the token's policy is {token.policy}, not {policy}")


_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


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


def _check_signature(info: cms.ContentInfo, candidates: Sequence[x509.Certificate]) -> x509.Certificate:
    """The SignerInfo's certificate once its attributes and signature hold."""
    signed = info["content"]
    signer_info = signed["signer_infos"][0]
    sid = signer_info["sid"]
    signer = next((c for c in candidates if _matches_sid(c, sid)), None)
    if signer is None:
        raise _Bad(TokenReason.NO_TSA_CERTIFICATE,
                   "the TSA's certificate is not in the token (ask with certReq, or pass it as certificates=)")
    digest_name = signer_info["digest_algorithm"]["algorithm"].native
    if digest_name not in _HASHES:
        raise _Bad(TokenReason.BAD_SIGNATURE, f"unsupported digest algorithm {digest_name}")
    attrs = signer_info["signed_attrs"]
    if attrs.native is None:
        raise _Bad(TokenReason.BAD_SIGNATURE, "the signer has no signed attributes")
    if _attribute(attrs, "content_type").dotted != _TST_INFO_OID:
        raise _Bad(TokenReason.BAD_SIGNATURE, "the content-type attribute is not id-ct-TSTInfo")
    content = signed["encap_content_info"]["content"].contents
    if not hmac.compare_digest(_attribute(attrs, "message_digest").native,
                               hashlib.new(digest_name, content).digest()):
        raise _Bad(TokenReason.BAD_SIGNATURE, "the message-digest attribute does not match the TSTInfo")
    _check_ess(attrs, signer)
    to_verify = b"\x31" + attrs.dump()[1:]  # [0] IMPLICIT as sent, signed as a SET OF
    signature = signer_info["signature"].native
    algorithm = signer_info["signature_algorithm"]["algorithm"].native
    public_key = signer.public_key()
    chosen = _HASHES[digest_name]()
    try:
        if isinstance(public_key, rsa.RSAPublicKey) and algorithm in (
                "rsassa_pkcs1v15", f"{digest_name}_rsa"):
            public_key.verify(signature, to_verify, padding.PKCS1v15(), chosen)
        elif isinstance(public_key, ec.EllipticCurvePublicKey) and algorithm in (f"{digest_name}_ecdsa", "ecdsa"):
            public_key.verify(signature, to_verify, ec.ECDSA(chosen))
        else:
            raise _Bad(TokenReason.BAD_SIGNATURE, f"unsupported signature algorithm {algorithm} "
                                                  f"for a {type(public_key).__name__}")
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        raise _Bad(TokenReason.BAD_SIGNATURE, "the token's signature does not verify") from None
    return signer


def _check_ess(attrs: cms.CMSAttributes, signer: x509.Certificate) -> None:
    """RFC 3161 §2.4.2 / RFC 5035: a signingCertificate(V2) attribute whose first ESSCertID is
    the signer's certificate (its hash, and its issuer and serial when given)."""
    der = signer.public_bytes(Encoding.DER)
    names = {a["type"].native for a in attrs}
    if "signing_certificate_v2" in names:
        first = _attribute(attrs, "signing_certificate_v2")["certs"][0]
        algorithm = first["hash_algorithm"]["algorithm"].native
        if algorithm not in _HASHES:
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


def _check_profile(cert: x509.Certificate) -> None:
    try:
        eku = cert.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE)
    except x509.ExtensionNotFound:
        raise _Bad(TokenReason.NOT_A_TSA_CERTIFICATE,
                   "the certificate has no extended key usage (a TSA's is id-kp-timeStamping)") from None
    if not eku.critical or list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:  # type: ignore[call-overload]
        raise _Bad(TokenReason.NOT_A_TSA_CERTIFICATE,
                   "the extended key usage must be id-kp-timeStamping alone, critical (RFC 3161 §2.3)")
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if ku is not None and (ku.key_encipherment or ku.data_encipherment or ku.key_agreement or ku.key_cert_sign
                           or ku.crl_sign or not (ku.digital_signature or ku.content_commitment)):
        raise _Bad(TokenReason.NOT_A_TSA_CERTIFICATE,
                   "the key usage must be digitalSignature and/or nonRepudiation only")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is not None and bc.ca:
        raise _Bad(TokenReason.NOT_A_TSA_CERTIFICATE, "a CA certificate is no TSA")


def _not_a_ca(policy: object, cert: x509.Certificate, ext: object) -> None:
    if isinstance(ext, x509.BasicConstraints) and ext.ca:
        raise ValueError("an end-entity certificate must not be a CA")


_LEAF_POLICY = _xv.ExtensionPolicy.permit_all().may_be_present(
    x509.BasicConstraints, _xv.Criticality.AGNOSTIC, _not_a_ca)
_CA_POLICY = _xv.ExtensionPolicy.webpki_defaults_ca()


def _check_path(cert: x509.Certificate, others: Sequence[x509.Certificate], trust: TrustStore,
                at: _dt.datetime) -> x509.Certificate:
    """RFC 5280 path validation at ``at`` (``cryptography.x509.verification``: the leaf's own
    profile, which its extended key usage does not fit, is checked by :func:`_check_profile`);
    the certificate that issued ``cert``."""
    anchors = [a.cert for a in trust]
    if not anchors:
        raise _Bad(TokenReason.UNTRUSTED_TSA, "no trust anchors were given")
    verifier = (_xv.PolicyBuilder().store(_xv.Store(anchors)).time(at).max_chain_depth(4)
                .extension_policies(ca_policy=_CA_POLICY, ee_policy=_LEAF_POLICY).build_client_verifier())
    intermediates = [c for c in others if c != cert]
    try:
        chain = verifier.verify(cert, intermediates).chain
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
        ocsp_url = _ocsp_url(cert) if mode == "ocsp" else None
        if ocsp_url is not None:
            try:
                info, warnings = check_ocsp(cert, anchor, ocsp_url, fetch=fetcher, at=now, now=now)
            except RevocationProblem as exc:
                problems.append(str(exc))
        crl_url = _crl_url(cert)
        if (info is None or info.status == "unknown") and crl_url is not None:
            try:
                info = check_crl(cert, anchor, crl_url, fetch=fetcher, at=now, now=now)
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
