"""jpki.certinfo: certificate kind and the signing certificate's 4 info.

Certificates here are built by hand with cryptography (not by jpki.pki), so the decoder is checked
against the encoding the spec describes rather than against our own issuer.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

import jpki
from jpki.certinfo import (
    OID_ADDRESS,
    OID_ADDRESS_SUBSTITUTE,
    OID_BIRTH_DATE,
    OID_NAME,
    OID_NAME_SUBSTITUTE,
    OID_SEX,
    POLICY_AUTH,
    POLICY_SIGN,
    POLICY_SIGN_TEST,
    SIGNING_SAN_ORDER,
    SigningIdentity,
    cert_kind,
    policy_oids,
    signing_identity,
)
from jpki.cli._fail import fail_for
from jpki.errors import VerificationError
from jpki.identity import Sex

ROOTS = Path(jpki.__file__).parent / "roots"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def _utf8(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 0x10000
    if len(data) < 0x80:
        return bytes([0x0C, len(data)]) + data
    if len(data) < 0x100:
        return bytes([0x0C, 0x81, len(data)]) + data
    return bytes([0x0C, 0x82]) + len(data).to_bytes(2, "big") + data


def _ku(*, ds: bool = True, nr: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(ds, nr, False, False, False, cert_sign, cert_sign, False, False)


def _cert(
    key: rsa.RSAPrivateKey,
    *,
    ku: x509.KeyUsage | None = None,
    policies: list[ObjectIdentifier] | None = None,
    san: list[x509.GeneralName] | None = None,
    ca: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    )
    if ku is not None:
        builder = builder.add_extension(ku, critical=True)
    if policies:
        builder = builder.add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(p, None) for p in policies]), False
        )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), False)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(True, None), True)
    return builder.sign(key, hashes.SHA256())


def _identity_san(
    *,
    name: str = "山田　花子",
    birth: str = "419900415",
    sex: str = "2",
    address: str = "東京都千代田区神田神保町３丁目２番地１",
    extra: list[x509.GeneralName] | None = None,
) -> list[x509.GeneralName]:
    values = {
        OID_NAME: name,
        OID_BIRTH_DATE: birth,
        OID_SEX: sex,
        OID_ADDRESS: address,
        OID_NAME_SUBSTITUTE: "0" * len(name),
        OID_ADDRESS_SUBSTITUTE: "0" * len(address),
    }
    names: list[x509.GeneralName] = [x509.OtherName(oid, _utf8(values[oid])) for oid in SIGNING_SAN_ORDER]
    return names + (extra or [])


# --------------------------------------------------------------------------- OIDs


def test_oid_constants() -> None:
    assert OID_NAME.dotted_string == "1.2.392.200149.8.5.5.1"
    assert OID_NAME_SUBSTITUTE.dotted_string == "1.2.392.200149.8.5.5.2"
    assert OID_SEX.dotted_string == "1.2.392.200149.8.5.5.3"
    assert OID_BIRTH_DATE.dotted_string == "1.2.392.200149.8.5.5.4"
    assert OID_ADDRESS.dotted_string == "1.2.392.200149.8.5.5.5"
    assert OID_ADDRESS_SUBSTITUTE.dotted_string == "1.2.392.200149.8.5.5.6"
    assert POLICY_SIGN.dotted_string == "1.2.392.200149.8.5.1.1.20"
    assert POLICY_SIGN_TEST.dotted_string == "1.2.392.200149.8.5.1.0.20"
    assert POLICY_AUTH.dotted_string == "1.2.392.200149.8.5.1.3.30"
    assert [o.dotted_string[-1] for o in SIGNING_SAN_ORDER] == list("143526")


# --------------------------------------------------------------------------- cert_kind


@pytest.mark.parametrize("path", sorted(ROOTS.glob("*.pem")), ids=lambda p: p.name)
def test_real_jlis_roots_are_ca(path: Path) -> None:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    assert cert_kind(cert) == "ca"
    with pytest.raises(VerificationError) as info:
        signing_identity(cert)
    assert info.value.reason == "not-a-signing-certificate"


@pytest.mark.parametrize("policy", [POLICY_SIGN, POLICY_SIGN_TEST])
def test_kind_sign(key: rsa.RSAPrivateKey, policy: ObjectIdentifier) -> None:
    cert = _cert(key, ku=_ku(nr=True), policies=[policy], san=_identity_san())
    assert cert_kind(cert) == "sign"
    assert policy_oids(cert) == {policy}


def test_kind_sign_needs_non_repudiation(key: rsa.RSAPrivateKey) -> None:
    assert cert_kind(_cert(key, ku=_ku(), policies=[POLICY_SIGN])) is None


def test_kind_sign_without_policy_by_personal_data(key: rsa.RSAPrivateKey) -> None:
    assert cert_kind(_cert(key, ku=_ku(nr=True), san=_identity_san())) == "sign"
    assert cert_kind(_cert(key, ku=_ku(nr=True))) is None


def test_kind_auth(key: rsa.RSAPrivateKey) -> None:
    assert cert_kind(_cert(key, ku=_ku(), policies=[POLICY_AUTH])) == "auth"


def test_kind_conflicting_policies(key: rsa.RSAPrivateKey) -> None:
    assert cert_kind(_cert(key, ku=_ku(nr=True), policies=[POLICY_SIGN, POLICY_AUTH])) is None


def test_kind_unrelated(key: rsa.RSAPrivateKey) -> None:
    assert cert_kind(_cert(key)) is None  # no key usage
    assert cert_kind(_cert(key, ku=_ku())) is None  # no policy, no 4 info
    assert cert_kind(_cert(key, ku=_ku(ds=False, nr=True), policies=[POLICY_SIGN])) is None
    other = ObjectIdentifier("1.3.6.1.4.1.99999.1")
    assert cert_kind(_cert(key, ku=_ku(nr=True), policies=[other])) is None


def test_kind_ca(key: rsa.RSAPrivateKey) -> None:
    assert cert_kind(_cert(key, ku=_ku(ds=False, cert_sign=True), ca=True)) == "ca"
    assert cert_kind(_cert(key, ku=_ku(), ca=True)) is None  # CA without keyCertSign


# --------------------------------------------------------------------------- signing_identity


def test_signing_identity(key: rsa.RSAPrivateKey) -> None:
    extra = [x509.RFC822Name("someone@example.jp"),
             x509.OtherName(ObjectIdentifier("1.2.3.4"), _utf8("ignored"))]
    cert = _cert(key, ku=_ku(nr=True), policies=[POLICY_SIGN], san=_identity_san(extra=extra))
    ident = signing_identity(cert)
    assert ident == SigningIdentity(
        name="山田　花子",
        birth_date=dt.date(1990, 4, 15),
        birth_date_raw="419900415",
        sex=Sex.FEMALE,
        address="東京都千代田区神田神保町３丁目２番地１",
        name_substitute="00000",
        address_substitute="0" * 19,
    )
    assert not ident.has_substitutes
    masked = ident.masked()
    assert masked == {"name": "山＊＊＊＊", "address": "東" + "＊" * 18, "birth_year": "1990",
                      "sex": "female"}


def test_signing_identity_long_address(key: rsa.RSAPrivateKey) -> None:
    address = "北海道札幌市中央区" + "大通西" * 40  # > 255 UTF-8 bytes: long-form length
    ident = signing_identity(_cert(key, ku=_ku(nr=True), san=_identity_san(address=address)))
    assert ident.address == address
    assert ident.address_substitute == "0" * len(address)


def test_signing_identity_unknown_birth_and_sex(key: rsa.RSAPrivateKey) -> None:
    ident = signing_identity(_cert(key, ku=_ku(nr=True), san=_identity_san(birth="000000000", sex="3")))
    assert ident.birth_date is None and ident.birth_date_raw == "000000000"
    assert ident.sex is Sex.UNKNOWN
    assert ident.masked()["birth_year"] == "unknown"


def test_signing_identity_substitutes(key: rsa.RSAPrivateKey) -> None:
    names = _identity_san()
    names[4] = x509.OtherName(OID_NAME_SUBSTITUTE, _utf8("01000"))
    ident = signing_identity(_cert(key, ku=_ku(nr=True), san=names))
    assert ident.name_substitute == "01000" and ident.has_substitutes


def test_signing_identity_without_optional_substitutes(key: rsa.RSAPrivateKey) -> None:
    ident = signing_identity(_cert(key, ku=_ku(nr=True), san=_identity_san()[:4]))
    assert ident.name_substitute is None and ident.address_substitute is None


def test_not_a_signing_certificate(key: rsa.RSAPrivateKey) -> None:
    for cert in (
        _cert(key, ku=_ku(), policies=[POLICY_AUTH]),  # no SAN at all
        _cert(key, ku=_ku(), san=[x509.DNSName("example.jp")]),  # SAN without the 4 info
        _cert(key, ku=_ku(nr=True), san=_identity_san()[:3]),  # address missing
    ):
        with pytest.raises(VerificationError) as info:
            signing_identity(cert)
        assert info.value.reason == "not-a-signing-certificate"
        assert fail_for(info.value).exit_code == 3


@pytest.mark.parametrize(
    "changes",
    [
        {"sex": "9"},  # a card code, not a certificate code
        {"sex": "male"},
        {"birth": "419890107"},  # era digit does not match the date
        {"birth": "1990-04-15"},
        {"birth": "320250230"},
        {"name": ""},
    ],
)
def test_malformed_identity(key: rsa.RSAPrivateKey, changes: dict[str, str]) -> None:
    with pytest.raises(VerificationError) as info:
        signing_identity(_cert(key, ku=_ku(nr=True), san=_identity_san(**changes)))
    assert info.value.reason == "malformed-signing-identity"


def test_duplicate_other_name(key: rsa.RSAPrivateKey) -> None:
    san = _identity_san(extra=[x509.OtherName(OID_NAME, _utf8("別人　太郎"))])
    with pytest.raises(VerificationError) as info:
        signing_identity(_cert(key, ku=_ku(nr=True), san=san))
    assert info.value.reason == "malformed-signing-identity"
    assert "別人" not in str(info.value)  # no personal data in error messages


def test_value_must_be_utf8string(key: rsa.RSAPrivateKey) -> None:
    names = _identity_san()
    names[2] = x509.OtherName(OID_SEX, b"\x13\x011")  # PrintableString "1"
    with pytest.raises(VerificationError) as info:
        signing_identity(_cert(key, ku=_ku(nr=True), san=names))
    assert info.value.reason == "malformed-signing-identity"
