"""Decode JPKI certificates: which kind they are, and the signing certificate's 4 info.

The one place for JPKI object identifiers: import them from here. A leaf module (standard
library, cryptography, asn1crypto, jpki.identity, jpki.errors); usable with no card library.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import Literal

from asn1crypto import core as _core
from asn1crypto import x509 as _ax
from cryptography import x509
from cryptography.x509.oid import ExtensionOID, ObjectIdentifier

from jpki.errors import VerificationError
from jpki.identity import Sex, decode_era_date, mask_text

__all__ = [
    "AUTH_POLICY_OIDS",
    "OID_ADDRESS",
    "OID_ADDRESS_SUBSTITUTE",
    "OID_BIRTH_DATE",
    "OID_NAME",
    "OID_NAME_SUBSTITUTE",
    "OID_SEX",
    "POLICY_AUTH",
    "POLICY_SIGN",
    "POLICY_SIGN_TEST",
    "SIGN_POLICY_OIDS",
    "CertKind",
    "SigningIdentity",
    "cert_kind",
    "policy_oids",
    "signing_identity",
]

# --------------------------------------------------------------------------- OIDs

#: JPKI private arc (J-LIS): 1.2.392.200149.8.5
JPKI_ARC = "1.2.392.200149.8.5"

# Subject-alternative-name otherName types of the signing certificate (jpki-personalData).
OID_NAME = ObjectIdentifier("1.2.392.200149.8.5.5.1")
OID_NAME_SUBSTITUTE = ObjectIdentifier("1.2.392.200149.8.5.5.2")
OID_SEX = ObjectIdentifier("1.2.392.200149.8.5.5.3")
OID_BIRTH_DATE = ObjectIdentifier("1.2.392.200149.8.5.5.4")
OID_ADDRESS = ObjectIdentifier("1.2.392.200149.8.5.5.5")
OID_ADDRESS_SUBSTITUTE = ObjectIdentifier("1.2.392.200149.8.5.5.6")

#: The order real signing certificates list their otherNames in.
SIGNING_SAN_ORDER: tuple[ObjectIdentifier, ...] = (
    OID_NAME,
    OID_BIRTH_DATE,
    OID_SEX,
    OID_ADDRESS,
    OID_NAME_SUBSTITUTE,
    OID_ADDRESS_SUBSTITUTE,
)

# Certificate policies.
POLICY_SIGN = ObjectIdentifier("1.2.392.200149.8.5.1.1.20")  # signing, production cards
POLICY_SIGN_TEST = ObjectIdentifier("1.2.392.200149.8.5.1.0.20")  # signing, J-LIS test cards
#: User authentication (spec: UNCERTAIN). The emulator's test CA uses the same OID: no test
#: variant is documented anywhere, and verifiers tell test from production by the trust root.
POLICY_AUTH = ObjectIdentifier("1.2.392.200149.8.5.1.3.30")

SIGN_POLICY_OIDS: frozenset[ObjectIdentifier] = frozenset({POLICY_SIGN, POLICY_SIGN_TEST})
AUTH_POLICY_OIDS: frozenset[ObjectIdentifier] = frozenset({POLICY_AUTH})

CertKind = Literal["sign", "auth", "ca"]


# --------------------------------------------------------------------------- kind


def _ext_value(cert: x509.Certificate, oid: ObjectIdentifier) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None


def policy_oids(cert: x509.Certificate) -> frozenset[ObjectIdentifier]:
    """The certificate-policy OIDs of ``cert`` (empty without the extension)."""
    policies = _ext_value(cert, ExtensionOID.CERTIFICATE_POLICIES)
    if policies is None:
        return frozenset()
    assert isinstance(policies, x509.CertificatePolicies)
    return frozenset(p.policy_identifier for p in policies)


def _has_personal_data(cert: x509.Certificate) -> bool:
    san = _ext_value(cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    if san is None:
        return False
    assert isinstance(san, x509.SubjectAlternativeName)
    return any(o.type_id == OID_NAME for o in san.get_values_for_type(x509.OtherName))


def cert_kind(cert: x509.Certificate) -> CertKind | None:
    """``'sign'``, ``'auth'``, ``'ca'`` or ``None`` (not a JPKI certificate we recognise).

    A CA is a certificate with basicConstraints CA and keyCertSign. A leaf is classified by its
    certificate policy (production or test signing policy, or the user-authentication policy)
    and must carry the matching key usage: digitalSignature + nonRepudiation for signing,
    digitalSignature for authentication. Without a policy extension, a leaf with nonRepudiation
    and the JPKI name otherName counts as a signing certificate.
    """
    ku = _ext_value(cert, ExtensionOID.KEY_USAGE)
    bc = _ext_value(cert, ExtensionOID.BASIC_CONSTRAINTS)
    if isinstance(bc, x509.BasicConstraints) and bc.ca:
        if isinstance(ku, x509.KeyUsage) and ku.key_cert_sign:
            return "ca"
        return None
    if not isinstance(ku, x509.KeyUsage) or not ku.digital_signature:
        return None
    policies = policy_oids(cert)
    if policies & SIGN_POLICY_OIDS:
        return "sign" if ku.content_commitment and not policies & AUTH_POLICY_OIDS else None
    if policies & AUTH_POLICY_OIDS:
        return "auth"
    if not policies and ku.content_commitment and _has_personal_data(cert):
        return "sign"
    return None


# --------------------------------------------------------------------------- identity


@dataclasses.dataclass(frozen=True)
class SigningIdentity:
    """The basic 4 info in a signing certificate (署名用電子証明書).

    ``birth_date`` is ``None`` when the certificate codes it as unknown (era digit 0);
    ``birth_date_raw`` is the ``EYYYYMMDD`` text as found. The substitute strings hold one
    ``0``/``1`` per character of the name / address: ``1`` marks a character the issuer replaced
    by a substitute (a kanji outside JIS levels 1 and 2).
    """

    name: str
    birth_date: _dt.date | None
    birth_date_raw: str
    sex: Sex
    address: str
    name_substitute: str | None = None
    address_substitute: str | None = None

    @property
    def has_substitutes(self) -> bool:
        """True if any character of the name or address was substituted."""
        return "1" in (self.name_substitute or "") + (self.address_substitute or "")

    def masked(self) -> dict[str, str]:
        """A form safe for logs and traces: name and address masked, birth year only."""
        return {
            "name": mask_text(self.name),
            "address": mask_text(self.address),
            "birth_year": "unknown" if self.birth_date is None else str(self.birth_date.year),
            "sex": self.sex.value,
        }


_REQUIRED = (OID_NAME, OID_BIRTH_DATE, OID_SEX, OID_ADDRESS)
_KNOWN = frozenset(SIGNING_SAN_ORDER)


def _other_names(cert: x509.Certificate) -> dict[str, str]:
    """JPKI otherName values of the SAN by dotted OID; VerificationError when malformed."""
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        raise VerificationError(
            "not-a-signing-certificate", "the certificate has no subject alternative name"
        ) from None
    except ValueError as exc:  # cryptography refuses to parse the extension
        raise VerificationError("malformed-certificate", f"unreadable extensions: {exc}") from None
    try:
        names = _ax.GeneralNames.load(ext.value.public_bytes())
        found: dict[str, str] = {}
        for general_name in names:
            if general_name.name != "other_name":
                continue
            other = general_name.chosen
            oid = other["type_id"].dotted
            if ObjectIdentifier(oid) not in _KNOWN:
                continue
            value = other["value"].parse(_core.UTF8String).native
            if oid in found:
                raise VerificationError(
                    "malformed-signing-identity", f"otherName {oid} appears twice"
                )
            found[oid] = value
    except VerificationError:
        raise
    except (ValueError, TypeError) as exc:
        raise VerificationError(
            "malformed-signing-identity", f"cannot decode the subject alternative name: {exc}"
        ) from None
    return found


def signing_identity(cert: x509.Certificate) -> SigningIdentity:
    """Name, birth date, sex and address from a signing certificate's SAN otherNames.

    Each value is ``[0] EXPLICIT UTF8String`` inside its otherName. Raises
    ``VerificationError('not-a-signing-certificate')`` when the 4 info are absent and
    ``VerificationError('malformed-signing-identity')`` when they are present but unusable.
    """
    found = _other_names(cert)
    missing = [oid.dotted_string for oid in _REQUIRED if oid.dotted_string not in found]
    if missing:
        raise VerificationError(
            "not-a-signing-certificate",
            "the certificate does not carry the JPKI basic 4 info (missing "
            + ", ".join(missing)
            + ")",
        )
    raw_birth = found[OID_BIRTH_DATE.dotted_string]
    try:
        birth = decode_era_date(raw_birth)
    except ValueError as exc:
        raise VerificationError("malformed-signing-identity", f"birth date: {exc}") from None
    try:
        sex = Sex.from_cert_code(found[OID_SEX.dotted_string])
    except ValueError as exc:
        raise VerificationError("malformed-signing-identity", str(exc)) from None
    name = found[OID_NAME.dotted_string]
    address = found[OID_ADDRESS.dotted_string]
    if not name:
        raise VerificationError("malformed-signing-identity", "empty name")
    return SigningIdentity(
        name=name,
        birth_date=birth,
        birth_date_raw=raw_birth,
        sex=sex,
        address=address,
        name_substitute=found.get(OID_NAME_SUBSTITUTE.dotted_string),
        address_substitute=found.get(OID_ADDRESS_SUBSTITUTE.dotted_string),
    )
