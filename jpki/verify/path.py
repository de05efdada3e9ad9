"""The path from a card certificate to a trust anchor (the time-independent checks).

JPKI paths have one step: the leaf is issued directly by a self-signed root. :func:`examine`
runs every check that does not depend on the validation time, once per (certificate, kind):

1. the certificate parses, its extensions decode, and its serial number is positive and fits
   in 20 octets (``malformed-certificate``);
2. it is a JPKI certificate of the kind asked for, by policy and key usage
   (:func:`jpki.certinfo.cert_kind`; ``wrong-kind``) — or, for ``kind='tsa'``, a timestamp
   authority's certificate as RFC 3161 §2.3 wants it: one extended key usage, critical,
   id-kp-timeStamping only, and a key usage (if any) allowing digitalSignature or
   nonRepudiation (:func:`tsa_usage_problem`; ``wrong-kind``);
3. it has no critical extension outside those JPKI uses (``unsupported-critical-extension``);
4. an anchor of that kind (for a TSA: of either kind — the test CA certifies its TSA with one of
   its two roots) has the issuer's name as its subject, byte for byte, and — when the
   certificate has an authority key identifier — that anchor's key identifier
   (``untrusted-issuer``);
5. the signature verifies with that anchor's key (``bad-signature``);
6. ``cryptography.x509.verification`` agrees: an RFC 5280 path validation in Rust, with the
   CA profile of its Web PKI policy for the anchor and a JPKI profile for the leaf
   (``path-rejected`` if it refuses what the checks above accepted).

The result is cached by the validator, so the RSA operations run once per certificate. Validity
periods, which depend on the validation time, are checked by the validator on every call.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509 import verification as _xv
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, ExtensionOID

from jpki.certinfo import cert_kind
from jpki.verify.anchors import Anchor, TrustStore
from jpki.verify.result import KINDS, Reason

__all__ = ["KNOWN_EXTENSIONS", "Examined", "LeafFacts", "crl_url", "examine", "ocsp_url",
           "parse_certificate", "rfc5280_path", "tsa_usage_problem"]

_KIND_NAMES = {"sign": "signing", "auth": "user-authentication", "ca": "CA",
               "tsa": "timestamp authority"}
#: Serial numbers are positive and fit in 20 octets (RFC 5280 §4.1.2.2): below 2**159.
MAX_SERIAL = 1 << 159

#: Extensions a JPKI leaf may carry, critical or not (RFC 5280 §4.2): anything else marked
#: critical is refused.
KNOWN_EXTENSIONS = frozenset(
    {
        ExtensionOID.KEY_USAGE,
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.ISSUER_ALTERNATIVE_NAME,
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.EXTENDED_KEY_USAGE,
    }
)


def _leaf_is_not_a_ca(policy: object, cert: x509.Certificate, ext: object) -> None:
    """Extension validator for the library's leaf profile: a card certificate is no CA."""
    if isinstance(ext, x509.BasicConstraints) and ext.ca:
        raise ValueError("an end-entity certificate must not be a CA")


def _leaf_policy() -> _xv.ExtensionPolicy:
    """The JPKI leaf profile for ``cryptography.x509.verification``.

    Its Web PKI leaf profile does not fit JPKI certificates: it requires a subjectAltName (the
    user-authentication certificate has none), an authority key identifier, a non-critical SAN
    when the subject is not empty, and clientAuth in any extended key usage. ``permit_all``
    drops those requirements while still refusing unknown critical extensions; key usage and
    policy per kind are checked by :func:`jpki.certinfo.cert_kind` instead.
    """
    return _xv.ExtensionPolicy.permit_all().may_be_present(
        x509.BasicConstraints, _xv.Criticality.AGNOSTIC, _leaf_is_not_a_ca
    )


_LEAF_POLICY = _leaf_policy()
_CA_POLICY = _xv.ExtensionPolicy.webpki_defaults_ca()


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class LeafFacts:
    """What the validator keeps about a certificate after the first look at it."""

    cert: x509.Certificate
    fingerprint: str  # SHA-256 of the DER, hex
    serial: int
    subject: str
    issuer: str
    not_before: _dt.datetime
    not_after: _dt.datetime
    detected_kind: str | None
    ocsp_url: str | None
    crl_url: str | None


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Examined:
    """The outcome of :func:`examine`: the anchor when the path holds, else a failure."""

    facts: LeafFacts | None
    anchor: Anchor | None = None
    failure: tuple[Reason, str] | None = None


def parse_certificate(data: bytes) -> x509.Certificate:
    """A certificate from DER or PEM bytes (ValueError when it is neither)."""
    if data.lstrip()[:11] == b"-----BEGIN ":
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _first_http(names: list[x509.GeneralName]) -> str | None:
    for name in names:
        if isinstance(name, x509.UniformResourceIdentifier) and name.value.lower().startswith(
            ("http://", "https://")
        ):
            return str(name.value)
    return None


def ocsp_url(cert: x509.Certificate) -> str | None:
    """The first HTTP URI of the certificate's OCSP responder (authority information access)."""
    try:
        aia = cert.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_INFORMATION_ACCESS).value
    except x509.ExtensionNotFound:
        return None
    assert isinstance(aia, x509.AuthorityInformationAccess)
    return _first_http(
        [d.access_location for d in aia if d.access_method == AuthorityInformationAccessOID.OCSP]
    )


def crl_url(cert: x509.Certificate) -> str | None:
    """The first HTTP URI of a distribution point that covers every reason and is not indirect."""
    try:
        dps = cert.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS).value
    except x509.ExtensionNotFound:
        return None
    assert isinstance(dps, x509.CRLDistributionPoints)
    for dp in dps:
        if dp.full_name and dp.reasons is None and dp.crl_issuer is None:
            url = _first_http(list(dp.full_name))
            if url is not None:
                return url
    return None


def tsa_usage_problem(cert: x509.Certificate) -> str | None:
    """Why ``cert`` is not a timestamp authority's certificate (RFC 3161 §2.3), or None: the one
    rule, for the validator (``kind='tsa'``) and for :mod:`jpki.verify.timestamp`.

    It must carry exactly one extended key usage, marked critical: id-kp-timeStamping. A key
    usage, when present, must allow digitalSignature or nonRepudiation and nothing else (as
    OpenSSL's ``timestampsign`` purpose wants), and the certificate is no CA.
    """
    try:
        eku = cert.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE)
    except x509.ExtensionNotFound:
        return "no extended key usage: a timestamp authority's certificate needs id-kp-timeStamping"
    usages = list(eku.value) if isinstance(eku.value, x509.ExtendedKeyUsage) else []
    if usages != [ExtendedKeyUsageOID.TIME_STAMPING]:
        return "the extended key usage is not id-kp-timeStamping alone (RFC 3161 §2.3)"
    if not eku.critical:
        return "the id-kp-timeStamping extended key usage is not marked critical (RFC 3161 §2.3)"
    try:
        ku = cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
    except x509.ExtensionNotFound:
        ku = None
    if isinstance(ku, x509.KeyUsage):
        if not (ku.digital_signature or ku.content_commitment):
            return "the key usage allows neither digitalSignature nor nonRepudiation"
        if ku.key_encipherment or ku.data_encipherment or ku.key_agreement or ku.key_cert_sign or ku.crl_sign:
            return "the key usage allows more than digitalSignature and nonRepudiation"
    try:
        bc = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
    except x509.ExtensionNotFound:
        bc = None
    if isinstance(bc, x509.BasicConstraints) and bc.ca:
        return "a CA certificate is no timestamp authority"
    return None


def _facts(cert: x509.Certificate, der: bytes) -> LeafFacts:
    """Read everything the hot path needs (ValueError when an extension does not decode)."""
    list(cert.extensions)  # decode them all now: a malformed one fails here, not later
    return LeafFacts(
        cert=cert,
        fingerprint=hashlib.sha256(der).hexdigest(),
        serial=cert.serial_number,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        detected_kind=cert_kind(cert),
        ocsp_url=ocsp_url(cert),
        crl_url=crl_url(cert),
    )


def _authority_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        aki = cert.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value
    except x509.ExtensionNotFound:
        return None
    assert isinstance(aki, x509.AuthorityKeyIdentifier)
    return aki.key_identifier


def rfc5280_path(cert: x509.Certificate, anchors: list[x509.Certificate],
                 intermediates: list[x509.Certificate], at: _dt.datetime, *,
                 max_depth: int = 1) -> list[x509.Certificate]:
    """``cryptography.x509.verification``'s path from ``cert`` to one of ``anchors`` at ``at``
    (the leaf first), with the JPKI leaf profile and the Web PKI CA profile; raises its
    ``VerificationError`` with the refusal."""
    verifier = (
        _xv.PolicyBuilder()
        .store(_xv.Store(anchors))
        .time(at)
        .max_chain_depth(max_depth)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_LEAF_POLICY)
        .build_client_verifier()
    )
    return list(verifier.verify(cert, intermediates).chain)


def _library_check(cert: x509.Certificate, anchor: Anchor) -> str | None:
    """Run ``cryptography.x509.verification`` on the one-step path; the refusal text or None.

    The library checks validity periods too; it is asked at a moment inside both the leaf's and
    the anchor's (the validator checks the validation time itself, on every call). When the two
    periods do not overlap no validation time can pass, so there is nothing to ask.
    """
    start = max(cert.not_valid_before_utc, anchor.not_before)
    end = min(cert.not_valid_after_utc, anchor.not_after)
    if start > end:
        return None
    try:
        rfc5280_path(cert, [anchor.cert], [], start)
    except _xv.VerificationError as exc:
        return str(exc)
    return None


def examine(cert: x509.Certificate, der: bytes, kind: str, trust: TrustStore) -> Examined:
    """Every time-independent check of ``cert`` as a ``kind`` certificate against ``trust``.

    Never raises for a bad certificate: the failure is returned (see the module docstring).
    """
    try:
        facts = _facts(cert, der)
    except ValueError as exc:
        return Examined(None, failure=(Reason.MALFORMED_CERTIFICATE, f"unreadable extension: {exc}"))
    if not 0 < facts.serial < MAX_SERIAL:
        return Examined(
            facts,
            failure=(
                Reason.MALFORMED_CERTIFICATE,
                (
                    f"serial number {facts.serial} is not a positive integer of at most 20 octets"
                    " (RFC 5280 §4.1.2.2)"
                ),
            ),
        )
    detected = facts.detected_kind
    if kind == "tsa":
        problem = tsa_usage_problem(cert)
        if problem is not None:
            return Examined(facts, failure=(Reason.WRONG_KIND, f"not a timestamp authority's certificate: {problem}"))
    elif detected != kind:
        other = "not a JPKI card certificate" if detected is None else f"a {_KIND_NAMES[detected]} certificate"
        return Examined(
            facts,
            failure=(
                Reason.WRONG_KIND,
                f"{other}, not a {_KIND_NAMES[kind]} certificate (policy and key usage decide)",
            ),
        )
    for ext in cert.extensions:
        if ext.critical and ext.oid not in KNOWN_EXTENSIONS:
            return Examined(
                facts,
                failure=(
                    Reason.UNSUPPORTED_CRITICAL_EXTENSION,
                    f"critical extension {ext.oid.dotted_string} is not one JPKI certificates use",
                ),
            )
    issuer_der = cert.issuer.public_bytes()
    if kind == "tsa":
        candidates = tuple(a for k in KINDS for a in trust.candidates(k, issuer_der))
    else:
        candidates = trust.candidates(kind, issuer_der)
    if not candidates:
        others = [k for k in KINDS if k != kind and trust.candidates(k, issuer_der)]
        hint = f" (it is a trusted {_KIND_NAMES[others[0]]} root)" if others else ""
        return Examined(
            facts,
            failure=(
                Reason.UNTRUSTED_ISSUER,
                f"the issuer {facts.issuer} is not a trusted {_KIND_NAMES[kind]} root{hint}",
            ),
        )
    aki = _authority_key_id(cert)
    if aki is not None:
        candidates = tuple(a for a in candidates if a.key_id == aki)
        if not candidates:
            return Examined(
                facts,
                failure=(
                    Reason.UNTRUSTED_ISSUER,
                    (
                        f"no trusted root named {facts.issuer} has the key identifier {aki.hex()}"
                        " the certificate names"
                    ),
                ),
            )
    anchor = None
    problem = "the signature does not verify with the issuer's key"
    for candidate in candidates:
        try:
            cert.verify_directly_issued_by(candidate.cert)
        except InvalidSignature:
            continue
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            problem = f"the signature cannot be checked: {exc}"
            continue
        anchor = candidate
        break
    if anchor is None:
        return Examined(facts, failure=(Reason.BAD_SIGNATURE, problem))
    refusal = _library_check(cert, anchor)
    if refusal is not None:
        return Examined(
            facts, anchor, failure=(Reason.PATH_REJECTED, f"RFC 5280 path validation: {refusal}")
        )
    return Examined(facts, anchor)
