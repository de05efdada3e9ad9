"""Certificate profiles of the test CA (card spec §8) and the validity rules.

Pure functions: keys, times, serials and identifiers come in as arguments, so the profiles can be
tested without files, a database or a clock.

Choices made where the spec is silent:

* Names: the test roots copy the real DN shape with ``O=JPKI-TEST`` and an OU that says
  "TEST - emulator CA, not J-LIS", so nobody mistakes them for J-LIS roots.
* Leaves carry one CRL distribution point whose full name holds both the CA's DirName (as real
  certificates do) and an HTTP URI, plus an OCSP URL (real certificates have neither).
* Certificate policies are non-critical and carry no qualifiers. Signing certificates use the
  J-LIS *test-card* policy ``1.2.392.200149.8.5.1.0.20``; authentication certificates use
  ``1.2.392.200149.8.5.1.3.30`` (no test variant is documented).
* A 29 February birthday falls on 28 February in common years.
* Validity ends at 23:59:59 JST and never outlasts the issuing CA.
"""

from __future__ import annotations

import datetime as _dt
import secrets
from typing import Literal

from asn1crypto import core as _core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from jpki.certinfo import (
    OID_ADDRESS,
    OID_ADDRESS_SUBSTITUTE,
    OID_BIRTH_DATE,
    OID_NAME,
    OID_NAME_SUBSTITUTE,
    OID_SEX,
    POLICY_AUTH,
    POLICY_SIGN_TEST,
)
from jpki.clock import JST
from jpki.errors import UsageError
from jpki.identity import Persona, age_on, encode_era_date

__all__ = [
    "AUTH_POLICY",
    "CA_KINDS",
    "JPKI_SERVICE_DIRNAME",
    "SIGN_POLICY",
    "CaKind",
    "birthday_in",
    "build_auth_certificate",
    "build_ca_certificate",
    "build_sign_certificate",
    "ca_name",
    "card_expiry_for",
    "crl_url",
    "end_of_day_jst",
    "leaf_not_after",
    "new_issuance_id",
    "new_serial",
    "nth_birthday_after",
    "ocsp_url",
    "root_generation",
]

CaKind = Literal["sign", "auth"]
CA_KINDS: tuple[CaKind, ...] = ("sign", "auth")

SIGN_POLICY = POLICY_SIGN_TEST
AUTH_POLICY = POLICY_AUTH

TEST_ORGANIZATION = "JPKI-TEST"
JLIS_OU = "Japan Agency for Local Authority Information Systems"
_PURPOSE_OU = {
    "sign": "JPKI for digital signature (TEST - emulator CA, not J-LIS)",
    "auth": "JPKI for user authentication (TEST - emulator CA, not J-LIS)",
}

#: ``C=JP, O=公的個人認証サービス`` (UTF8String): SAN and IssuerAltName of every JPKI certificate.
JPKI_SERVICE_DIRNAME = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "公的個人認証サービス"),
    ]
)

CA_VALIDITY_YEARS = 10

#: The generations of the J-LIS roots (spec §8) by the instant the real roots begin: a test root
#: made for a generation starts then (and so ends when the real one does: 2025-10-19 and
#: 2033-07-15, 23:59:59 JST). The 2019 roots signed other things and are not modelled.
ROOT_GENERATION_START: dict[str, _dt.datetime] = {
    "2015": _dt.datetime(2015, 10, 20, 2, 40, 28, tzinfo=_dt.UTC),
    "2023": _dt.datetime(2023, 7, 16, 0, 50, 27, tzinfo=_dt.UTC),
}


def root_generation(ca_cert: x509.Certificate) -> str | None:
    """The J-LIS root generation a (test) root stands for: the latest one that had begun when
    the root's validity began; None for a root older than the first."""
    start = ca_cert.not_valid_before_utc
    found = None
    for name, begins in sorted(ROOT_GENERATION_START.items(), key=lambda item: item[1]):
        if start >= begins:
            found = name
    return found
LEAF_VALIDITY_BIRTHDAYS = 5
ADULT_AGE = 18


def key_usage(*, digital_signature: bool = False, content_commitment: bool = False,
              key_cert_sign: bool = False, crl_sign: bool = False) -> x509.KeyUsage:
    """A KeyUsage with the given bits set (JPKI uses no other bits)."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )

def _check_kind(kind: str) -> CaKind:
    if kind not in CA_KINDS:
        raise UsageError(f"CA kind must be 'sign' or 'auth', not {kind!r}")
    return kind


def ca_name(kind: CaKind) -> x509.Name:
    """DN of the test root for ``kind``: the real J-LIS shape, visibly marked TEST."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, TEST_ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _PURPOSE_OU[_check_kind(kind)]),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, JLIS_OU),
        ]
    )


def crl_url(base_url: str, kind: CaKind) -> str:
    """``{base_url}/crl/{kind}.crl``."""
    return f"{base_url.rstrip('/')}/crl/{_check_kind(kind)}.crl"


def ocsp_url(base_url: str, kind: CaKind) -> str:
    """``{base_url}/ocsp/{kind}``."""
    return f"{base_url.rstrip('/')}/ocsp/{_check_kind(kind)}"


def new_serial() -> int:
    """A random positive serial number of at most 159 bits."""
    return x509.random_serial_number()


def new_issuance_id() -> str:
    """An opaque certificate CN such as ``JPKI-TEST-3F9A…`` (80 random bits)."""
    return f"{TEST_ORGANIZATION}-{secrets.token_hex(10).upper()}"


# --------------------------------------------------------------------------- dates


def _utc(when: _dt.datetime) -> _dt.datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise UsageError("times must be timezone-aware")
    return when.astimezone(_dt.UTC).replace(microsecond=0)


def birthday_in(birth_date: _dt.date, year: int) -> _dt.date:
    """The birthday in ``year``; 29 February becomes 28 February in common years."""
    try:
        return birth_date.replace(year=year)
    except ValueError:  # 29 February in a common year
        return _dt.date(year, 2, 28)


def nth_birthday_after(birth_date: _dt.date, day: _dt.date, n: int) -> _dt.date:
    """The ``n``-th birthday strictly after ``day`` (a birthday on ``day`` itself does not count)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    first = birthday_in(birth_date, day.year)
    if first <= day:
        first = birthday_in(birth_date, day.year + 1)
    return birthday_in(birth_date, first.year + n - 1)


def card_expiry_for(birth_date: _dt.date, issued_on: _dt.date) -> _dt.date:
    """Card expiry: the 10th birthday after issuance for holders aged 18 or more on
    ``issued_on``, the 5th for younger ones."""
    if issued_on < birth_date:
        raise UsageError("a card cannot be issued before its holder is born")
    n = 10 if age_on(birth_date, issued_on) >= ADULT_AGE else 5
    return nth_birthday_after(birth_date, issued_on, n)


def end_of_day_jst(day: _dt.date) -> _dt.datetime:
    """23:59:59 JST of ``day``, as an aware UTC datetime."""
    return _dt.datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=JST).astimezone(
        _dt.UTC
    )


def leaf_not_after(
    birth_date: _dt.date | None,
    issued_at: _dt.datetime,
    card_expiry: _dt.date,
    ca_not_after: _dt.datetime | None = None,
) -> _dt.datetime:
    """End of validity of a card certificate: 23:59:59 JST of the holder's 5th birthday after
    issuance, capped at the end of the card-expiry day (JST) and at the CA's own end.

    Without a birth date only the caps apply.
    """
    issued_at = _utc(issued_at)
    candidates = [end_of_day_jst(card_expiry)]
    if birth_date is not None:
        issued_on = issued_at.astimezone(JST).date()
        candidates.append(end_of_day_jst(nth_birthday_after(birth_date, issued_on, LEAF_VALIDITY_BIRTHDAYS)))
    if ca_not_after is not None:
        candidates.append(_utc(ca_not_after))
    not_after = min(candidates)
    if not_after <= issued_at:
        raise UsageError(
            f"certificate would be void: it would end at {not_after.isoformat()}, "
            f"not after its issuance at {issued_at.isoformat()}"
        )
    return not_after


# --------------------------------------------------------------------------- builders


def _key_id(public_key: rsa.RSAPublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def _require_rsa(public_key: object) -> rsa.RSAPublicKey:
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise UsageError(f"JPKI keys are RSA, got {type(public_key).__name__}")
    return public_key


def build_ca_certificate(
    kind: CaKind,
    private_key: rsa.RSAPrivateKey,
    *,
    not_before: _dt.datetime,
    serial: int | None = None,
    years: int = CA_VALIDITY_YEARS,
) -> x509.Certificate:
    """A self-signed test root: KU keyCertSign+cRLSign (critical), CA (critical), SKI, SAN and
    IssuerAltName ``C=JP, O=公的個人認証サービス``, CRL DP = its own DirName. Valid for ``years``
    years, ending at 23:59:59 JST the day before the anniversary (like the J-LIS roots)."""
    name = ca_name(kind)
    not_before = _utc(not_before)
    start_jst = not_before.astimezone(JST).date()
    not_after = end_of_day_jst(birthday_in(start_jst, start_jst.year + years) - _dt.timedelta(days=1))
    public_key = private_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(serial if serial is not None else new_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            key_usage(key_cert_sign=True, crl_sign=True),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.DirectoryName(JPKI_SERVICE_DIRNAME)]), critical=False
        )
        .add_extension(
            x509.IssuerAlternativeName([x509.DirectoryName(JPKI_SERVICE_DIRNAME)]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.CRLDistributionPoints(
                [x509.DistributionPoint([x509.DirectoryName(name)], None, None, None)]
            ),
            critical=False,
        )
        .add_extension(_key_id(public_key), critical=False)
    )
    return builder.sign(private_key, hashes.SHA256())


def _leaf_builder(
    kind: CaKind,
    public_key: rsa.RSAPublicKey,
    subject: x509.Name,
    *,
    issuer_cert: x509.Certificate,
    serial: int,
    not_before: _dt.datetime,
    not_after: _dt.datetime,
    base_url: str,
    key_usage: x509.KeyUsage,
    policy: x509.ObjectIdentifier,
) -> x509.CertificateBuilder:
    issuer_ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(_utc(not_before))
        .not_valid_after(_utc(not_after))
        .add_extension(key_usage, critical=True)
        .add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(policy, None)]), critical=False
        )
        .add_extension(
            x509.IssuerAlternativeName([x509.DirectoryName(JPKI_SERVICE_DIRNAME)]), critical=False
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [
                            x509.DirectoryName(issuer_cert.subject),
                            x509.UniformResourceIdentifier(crl_url(base_url, kind)),
                        ],
                        None,
                        None,
                        None,
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(ocsp_url(base_url, kind)),
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
        .add_extension(_key_id(public_key), critical=False)
    )


def _utf8_other_name(oid: x509.ObjectIdentifier, text: str) -> x509.OtherName:
    """otherName whose value is ``[0] EXPLICIT UTF8String`` (cryptography adds the ``[0]``)."""
    return x509.OtherName(oid, _core.UTF8String(text).dump())


def signing_san(persona: Persona) -> x509.SubjectAlternativeName:
    """The signing certificate's SAN: name, birth date, sex, address, name substitutes,
    address substitutes, in that order (all substitute flags ``0``)."""
    return x509.SubjectAlternativeName(
        [
            _utf8_other_name(OID_NAME, persona.name),
            _utf8_other_name(OID_BIRTH_DATE, encode_era_date(persona.birth_date)),
            _utf8_other_name(OID_SEX, persona.sex.cert_code),
            _utf8_other_name(OID_ADDRESS, persona.address),
            _utf8_other_name(OID_NAME_SUBSTITUTE, "0" * len(persona.name)),
            _utf8_other_name(OID_ADDRESS_SUBSTITUTE, "0" * len(persona.address)),
        ]
    )


def build_sign_certificate(
    public_key: rsa.RSAPublicKey,
    persona: Persona,
    *,
    issuer_cert: x509.Certificate,
    issuer_key: rsa.RSAPrivateKey,
    issuance_id: str,
    serial: int,
    not_before: _dt.datetime,
    not_after: _dt.datetime,
    base_url: str,
) -> x509.Certificate:
    """A signing certificate (署名用電子証明書) with the 4 info of ``persona`` in its SAN."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, persona.prefecture),
            x509.NameAttribute(NameOID.LOCALITY_NAME, persona.municipality),
            x509.NameAttribute(NameOID.COMMON_NAME, issuance_id),
        ]
    )
    ku = key_usage(digital_signature=True, content_commitment=True)
    builder = _leaf_builder(
        "sign",
        _require_rsa(public_key),
        subject,
        issuer_cert=issuer_cert,
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        base_url=base_url,
        key_usage=ku,
        policy=SIGN_POLICY,
    ).add_extension(signing_san(persona), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def build_auth_certificate(
    public_key: rsa.RSAPublicKey,
    *,
    issuer_cert: x509.Certificate,
    issuer_key: rsa.RSAPrivateKey,
    issuance_id: str,
    serial: int,
    not_before: _dt.datetime,
    not_after: _dt.datetime,
    base_url: str,
) -> x509.Certificate:
    """A user-authentication certificate (利用者証明用電子証明書): ``C=JP, CN=<opaque id>``, no
    personal data."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
            x509.NameAttribute(NameOID.COMMON_NAME, issuance_id),
        ]
    )
    ku = key_usage(digital_signature=True)
    builder = _leaf_builder(
        "auth",
        _require_rsa(public_key),
        subject,
        issuer_cert=issuer_cert,
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        base_url=base_url,
        key_usage=ku,
        policy=AUTH_POLICY,
    )
    return builder.sign(issuer_key, hashes.SHA256())
