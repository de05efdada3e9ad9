"""jpki.pki: the test CA, the certificate profiles of spec §8, validity rules and the DB."""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from asn1crypto import x509 as ax
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtensionOID,
    NameOID,
    SignatureAlgorithmOID,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import jpki.pki
from jpki.certinfo import (
    POLICY_AUTH,
    POLICY_SIGN_TEST,
    SIGNING_SAN_ORDER,
    cert_kind,
    policy_oids,
    signing_identity,
)
from jpki.clock import JST, FixedClock
from jpki.errors import JpkiError, UsageError, VerificationError
from jpki.identity import SAMPLE_PERSONAS, Persona, encode_era_date
from jpki.pki import (
    CAExistsError,
    CANotFoundError,
    CertificateDB,
    CertificateStatusError,
    TestCA,
    UnknownCertificateError,
    card_expiry_for,
    end_of_day_jst,
    leaf_not_after,
    nth_birthday_after,
    serial_hex,
)
from jpki.pki.profiles import JPKI_SERVICE_DIRNAME, ca_name

UTC = dt.UTC
D = dt.date
NOW = dt.datetime(2025, 4, 1, 12, 0, tzinfo=JST)  # 03:00 UTC
BOB = SAMPLE_PERSONAS["bob"]  # born 1975-11-03
CAROL = SAMPLE_PERSONAS["carol"]  # born 2000-02-29
DAVE = SAMPLE_PERSONAS["dave"]  # born 2012-06-10


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def rsa_keys() -> dict[str, rsa.RSAPrivateKey]:
    """RSA-2048 keys generated once for the whole module (generation is the slow part)."""
    return {name: rsa.generate_private_key(65537, 2048) for name in ("sign", "auth", "leaf", "leaf2")}


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def ca(tmp_path: Path, clock: FixedClock, rsa_keys: dict[str, rsa.RSAPrivateKey]) -> Iterator[TestCA]:
    test_ca = TestCA.init(
        tmp_path / "ca", clock=clock, keys={"sign": rsa_keys["sign"], "auth": rsa_keys["auth"]}
    )
    yield test_ca
    test_ca.close()


@pytest.fixture
def leaf_key(rsa_keys: dict[str, rsa.RSAPrivateKey]) -> rsa.RSAPublicKey:
    return rsa_keys["leaf"].public_key()


def _issue_sign(ca: TestCA, key: rsa.RSAPublicKey, persona: Persona = BOB, **kw: object) -> x509.Certificate:
    kw.setdefault("card_expiry", card_expiry_for(persona.birth_date, NOW.date()))
    return ca.issue_sign_cert(key, persona, card_id="card-1", **kw)  # type: ignore[arg-type]


def _issue_auth(ca: TestCA, key: rsa.RSAPublicKey, **kw: object) -> x509.Certificate:
    kw.setdefault("card_expiry", card_expiry_for(BOB.birth_date, NOW.date()))
    return ca.issue_auth_cert(key, card_id="card-1", **kw)  # type: ignore[arg-type]


def _ext(cert: x509.Certificate, cls: type) -> x509.Extension:  # type: ignore[type-arg]
    return cert.extensions.get_extension_for_class(cls)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _pem(tmp_path: Path, name: str, cert: x509.Certificate) -> Path:
    path = tmp_path / name
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)


# --------------------------------------------------------------------------- the roots


@pytest.mark.parametrize("kind, purpose", [("sign", "digital signature"), ("auth", "user authentication")])
def test_root_profile(ca: TestCA, kind: str, purpose: str) -> None:
    cert = ca.ca_cert(kind)  # type: ignore[arg-type]
    assert cert is (ca.sign_ca_cert if kind == "sign" else ca.auth_ca_cert)
    assert cert.subject == cert.issuer == ca_name(kind)  # type: ignore[arg-type]
    attrs = [(a.oid, a.value) for a in cert.subject]
    assert attrs[0] == (NameOID.COUNTRY_NAME, "JP")
    assert attrs[1] == (NameOID.ORGANIZATION_NAME, "JPKI-TEST")
    assert attrs[2][0] == NameOID.ORGANIZATIONAL_UNIT_NAME
    assert attrs[2][1].startswith(f"JPKI for {purpose}") and "TEST" in attrs[2][1]
    assert attrs[3] == (NameOID.ORGANIZATIONAL_UNIT_NAME, "Japan Agency for Local Authority Information Systems")
    assert all(len(str(v)) <= 64 for _, v in attrs)

    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not (ku.value.digital_signature or ku.value.content_commitment)
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ski = _ext(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())  # type: ignore[arg-type]
    assert _ext(cert, x509.SubjectAlternativeName).value == x509.SubjectAlternativeName(
        [x509.DirectoryName(JPKI_SERVICE_DIRNAME)]
    )
    assert _ext(cert, x509.IssuerAlternativeName).value == x509.IssuerAlternativeName(
        [x509.DirectoryName(JPKI_SERVICE_DIRNAME)]
    )
    dp = _ext(cert, x509.CRLDistributionPoints).value
    assert [p.full_name for p in dp] == [[x509.DirectoryName(cert.subject)]]
    assert cert.signature_algorithm_oid == SignatureAlgorithmOID.RSA_WITH_SHA256
    cert.verify_directly_issued_by(cert)
    assert cert_kind(cert) == "ca"
    # about 10 years, ending at 23:59:59 JST like the J-LIS roots
    assert cert.not_valid_before_utc == NOW.astimezone(UTC)
    assert cert.not_valid_after_utc == end_of_day_jst(D(2035, 3, 31))
    assert cert.public_key().key_size == 2048  # type: ignore[union-attr]


def test_root_service_name_is_utf8string(ca: TestCA) -> None:
    """O=公的個人認証サービス is a UTF8String in the SAN/IAN DirName, as in the real roots."""
    der = _ext(ca.sign_ca_cert, x509.IssuerAlternativeName).value.public_bytes()
    value = "公的個人認証サービス".encode()
    assert bytes([0x0C, len(value)]) + value in der


def test_init_generates_keys(tmp_path: Path, clock: FixedClock) -> None:
    with TestCA.init(tmp_path / "fresh", clock=clock, base_url="https://ca.example.test/") as fresh:
        assert fresh.sign_ca_key.key_size == 2048
        assert fresh.sign_ca_key.public_key().public_numbers() != fresh.auth_ca_key.public_key().public_numbers()
        assert fresh.base_url == "https://ca.example.test"
        assert fresh.crl_url("auth") == "https://ca.example.test/crl/auth.crl"
        assert fresh.ocsp_url("sign") == "https://ca.example.test/ocsp/sign"


def test_files_and_modes(ca: TestCA) -> None:
    d = ca.directory
    assert _mode(d) == 0o700
    for kind in ("sign", "auth"):
        key_path = d / f"{kind}_ca.key"
        assert _mode(key_path) == 0o600
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert loaded.public_key().public_numbers() == ca.ca_key(kind).public_key().public_numbers()  # type: ignore[union-attr,arg-type]
        assert ca.ca_cert_path(kind) == d / f"{kind}_ca.pem"  # type: ignore[arg-type]
        assert x509.load_pem_x509_certificate(ca.ca_cert_path(kind).read_bytes()) == ca.ca_cert(kind)  # type: ignore[arg-type]
    assert _mode(d / "certs.db") == 0o600
    assert (d / "ca.json").is_file()


def test_modes_do_not_depend_on_umask(tmp_path: Path, clock: FixedClock,
                                      rsa_keys: dict[str, rsa.RSAPrivateKey]) -> None:
    old = os.umask(0)
    try:
        with TestCA.init(tmp_path / "ca", clock=clock, keys={"sign": rsa_keys["sign"], "auth": rsa_keys["auth"]}) as c:
            _issue_auth(c, rsa_keys["leaf"].public_key())
            for name in ("sign_ca.key", "auth_ca.key", "certs.db", "certs.db-wal"):
                assert _mode(c.directory / name) == 0o600, name
    finally:
        os.umask(old)


def test_init_refuses_existing_ca(ca: TestCA, clock: FixedClock) -> None:
    with pytest.raises(CAExistsError) as info:
        TestCA.init(ca.directory, clock=clock)
    assert isinstance(info.value, JpkiError)
    assert ca.sign_ca_cert == x509.load_pem_x509_certificate((ca.directory / "sign_ca.pem").read_bytes())


def test_init_refuses_partial_ca(tmp_path: Path, clock: FixedClock) -> None:
    d = tmp_path / "partial"
    d.mkdir()
    (d / "auth_ca.key").write_text("leftover")
    with pytest.raises(CAExistsError):
        TestCA.init(d, clock=clock)
    assert (d / "auth_ca.key").read_text() == "leftover"
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CAExistsError):
        TestCA.init(f, clock=clock)


def test_init_into_empty_existing_directory(tmp_path: Path, clock: FixedClock,
                                            rsa_keys: dict[str, rsa.RSAPrivateKey]) -> None:
    d = tmp_path / "empty"
    d.mkdir()
    with TestCA.init(d, clock=clock, keys={"sign": rsa_keys["sign"], "auth": rsa_keys["auth"]}) as c:
        assert (c.directory / "sign_ca.pem").exists()


def test_init_rejects_bad_arguments(tmp_path: Path, clock: FixedClock) -> None:
    with pytest.raises(UsageError):
        TestCA.init(tmp_path / "a", clock=clock, base_url="ftp://x")
    with pytest.raises(UsageError):
        TestCA.init(tmp_path / "b", clock=clock, key_size=1024)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_open_round_trip(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    cert = _issue_sign(ca, leaf_key)
    ca.close()
    clock = FixedClock(NOW + dt.timedelta(days=1))
    with TestCA.open(ca.directory, clock=clock) as again:
        assert again.sign_ca_cert == ca.sign_ca_cert and again.auth_ca_cert == ca.auth_ca_cert
        assert again.base_url == ca.base_url and again.base_url.startswith("http://127.0.0.1:")
        assert again.db.get(cert.serial_number) is not None
        later = _issue_auth(again, leaf_key)
        assert later.not_valid_before_utc == clock.now().astimezone(UTC)


def test_open_missing_or_broken(tmp_path: Path, ca: TestCA, rsa_keys: dict[str, rsa.RSAPrivateKey]) -> None:
    with pytest.raises(CANotFoundError):
        TestCA.open(tmp_path / "nothing")
    (ca.directory / "sign_ca.key").unlink()
    fd = os.open(ca.directory / "sign_ca.key", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, rsa_keys["leaf"].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.close(fd)
    with pytest.raises(CANotFoundError, match="does not match"):
        TestCA.open(ca.directory)


# --------------------------------------------------------------------------- signing certificate


def test_sign_cert_profile(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    cert = _issue_sign(ca, leaf_key)
    assert cert.version == x509.Version.v3
    assert cert.issuer == ca.sign_ca_cert.subject
    attrs = [(a.oid, a.value) for a in cert.subject]
    assert attrs[:3] == [
        (NameOID.COUNTRY_NAME, "JP"),
        (NameOID.LOCALITY_NAME, "Osaka"),
        (NameOID.LOCALITY_NAME, "Osaka-shi Kita-ku"),
    ]
    assert attrs[3][0] == NameOID.COMMON_NAME and re.fullmatch(r"JPKI-TEST-[0-9A-F]{20}", attrs[3][1])
    assert len(attrs) == 4
    assert 0 < cert.serial_number < 2**159

    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature and ku.value.content_commitment
    assert not (ku.value.key_encipherment or ku.value.data_encipherment or ku.value.key_agreement
                or ku.value.key_cert_sign or ku.value.crl_sign)
    assert policy_oids(cert) == {POLICY_SIGN_TEST}
    assert _ext(cert, x509.IssuerAlternativeName).value == x509.IssuerAlternativeName(
        [x509.DirectoryName(JPKI_SERVICE_DIRNAME)]
    )
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert cert.public_key().public_numbers() == leaf_key.public_numbers()  # type: ignore[union-attr]
    assert cert_kind(cert) == "sign"


def test_sign_cert_san_order_and_values(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    cert = _issue_sign(ca, leaf_key)
    san = _ext(cert, x509.SubjectAlternativeName)
    assert not san.critical
    others = list(san.value)
    assert all(isinstance(o, x509.OtherName) for o in others)
    assert [o.type_id for o in others] == list(SIGNING_SAN_ORDER)
    assert all(o.value[0] == 0x0C for o in others)  # UTF8String inside the [0] EXPLICIT
    values = [ax.GeneralName.load(x509.SubjectAlternativeName([o]).public_bytes()[2:]).chosen["value"].parsed.native
              for o in others]
    assert values == [BOB.name, "319751103", "1", BOB.address, "0" * 5, "0" * len(BOB.address)]

    ident = signing_identity(cert)
    assert ident.name == BOB.name
    assert ident.birth_date == BOB.birth_date and ident.birth_date_raw == encode_era_date(BOB.birth_date)
    assert ident.sex is BOB.sex
    assert ident.address == BOB.address
    assert ident.name_substitute == "0" * len(BOB.name)
    assert ident.address_substitute == "0" * len(BOB.address)


@pytest.mark.parametrize("key", sorted(SAMPLE_PERSONAS))
def test_sign_cert_round_trips_every_persona(ca: TestCA, leaf_key: rsa.RSAPublicKey, key: str) -> None:
    persona = SAMPLE_PERSONAS[key]
    cert = _issue_sign(ca, leaf_key, persona)
    ident = signing_identity(cert)
    assert (ident.name, ident.birth_date, ident.sex, ident.address) == (
        persona.name, persona.birth_date, persona.sex, persona.address)
    locs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.LOCALITY_NAME)]
    assert locs == [persona.prefecture, persona.municipality]


@pytest.mark.parametrize("kind", ["sign", "auth"])
def test_leaf_pointers(ca: TestCA, leaf_key: rsa.RSAPublicKey, kind: str) -> None:
    cert = _issue_sign(ca, leaf_key) if kind == "sign" else _issue_auth(ca, leaf_key)
    issuer = ca.ca_cert(kind)  # type: ignore[arg-type]
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(issuer, x509.SubjectKeyIdentifier).value.digest
    assert _ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(leaf_key)
    dps = list(_ext(cert, x509.CRLDistributionPoints).value)
    assert len(dps) == 1
    assert dps[0].full_name == [
        x509.DirectoryName(issuer.subject),
        x509.UniformResourceIdentifier(f"{ca.base_url}/crl/{kind}.crl"),
    ]
    aia = list(_ext(cert, x509.AuthorityInformationAccess).value)
    assert [(a.access_method, a.access_location) for a in aia] == [
        (AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(f"{ca.base_url}/ocsp/{kind}"))
    ]
    assert cert.signature_algorithm_oid == SignatureAlgorithmOID.RSA_WITH_SHA256
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    cert.verify_directly_issued_by(issuer)
    other = ca.ca_cert("auth" if kind == "sign" else "sign")
    with pytest.raises(ValueError):
        cert.verify_directly_issued_by(other)


# --------------------------------------------------------------------------- auth certificate


def test_auth_cert_profile(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    cert = _issue_auth(ca, leaf_key)
    assert cert.issuer == ca.auth_ca_cert.subject
    attrs = [(a.oid, a.value) for a in cert.subject]
    assert attrs[0] == (NameOID.COUNTRY_NAME, "JP")
    assert attrs[1][0] == NameOID.COMMON_NAME and attrs[1][1].startswith("JPKI-TEST-")
    assert len(attrs) == 2
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    assert not (ku.value.content_commitment or ku.value.key_encipherment or ku.value.key_cert_sign)
    assert policy_oids(cert) == {POLICY_AUTH}
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    assert cert_kind(cert) == "auth"
    with pytest.raises(VerificationError):
        signing_identity(cert)


def test_issuance_ids_are_unique(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    certs = [_issue_sign(ca, leaf_key), _issue_sign(ca, leaf_key), _issue_auth(ca, leaf_key)]
    cns = {c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value for c in certs}
    assert len(cns) == 3
    assert len({c.serial_number for c in certs}) == 3


def test_issue_rejects_non_rsa_key(ca: TestCA) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    with pytest.raises(UsageError):
        _issue_sign(ca, ec.generate_private_key(ec.SECP256R1()).public_key())  # type: ignore[arg-type]
    assert ca.db.list() == []


# --------------------------------------------------------------------------- validity


def test_sign_validity_fifth_birthday_jst(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    cert = _issue_sign(ca, leaf_key)  # issued 2025-04-01, bob's birthday 11-03
    assert cert.not_valid_before_utc == dt.datetime(2025, 4, 1, 3, 0, tzinfo=UTC)
    assert cert.not_valid_after_utc == dt.datetime(2029, 11, 3, 14, 59, 59, tzinfo=UTC)
    assert cert.not_valid_after_utc.astimezone(JST).time() == dt.time(23, 59, 59)


def test_auth_validity_with_and_without_birth_date(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    expiry = card_expiry_for(BOB.birth_date, NOW.date())
    assert expiry == D(2034, 11, 3)
    with_birth = _issue_auth(ca, leaf_key, birth_date=BOB.birth_date)
    assert with_birth.not_valid_after_utc == end_of_day_jst(D(2029, 11, 3))
    without = _issue_auth(ca, leaf_key)
    assert without.not_valid_after_utc == end_of_day_jst(expiry)


def test_issuance_day_is_taken_in_jst(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    # 2025-11-02 16:00 UTC is already bob's birthday (11-03) in Japan: it does not count.
    on_birthday = dt.datetime(2025, 11, 2, 16, 0, tzinfo=UTC)
    cert = _issue_sign(ca, leaf_key, issued_at=on_birthday)
    assert cert.not_valid_after_utc == end_of_day_jst(D(2030, 11, 3))
    # Two hours earlier (23:00 JST) it is still 11-02 in Japan: 2025-11-03 is the first
    # birthday after, although it is 11-02 in UTC either way.
    day_before = on_birthday - dt.timedelta(hours=2)
    cert = _issue_sign(ca, leaf_key, issued_at=day_before)
    assert cert.not_valid_after_utc == end_of_day_jst(D(2029, 11, 3))
    assert cert.not_valid_before_utc == day_before


def test_validity_capped_by_card_expiry(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    cert = _issue_sign(ca, leaf_key, card_expiry=D(2027, 1, 31))
    assert cert.not_valid_after_utc == dt.datetime(2027, 1, 31, 14, 59, 59, tzinfo=UTC)


def test_minor_card_and_certificate(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    expiry = card_expiry_for(DAVE.birth_date, NOW.date())  # 12 years old: 5th birthday
    assert expiry == D(2029, 6, 10)
    assert ca.card_expiry_for(DAVE) == expiry
    cert = _issue_sign(ca, leaf_key, DAVE, card_expiry=expiry)
    assert cert.not_valid_after_utc == end_of_day_jst(D(2029, 6, 10))


def test_feb29_birthday(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    # birthdays after 2025-04-01: 2026-02-28, 2027-02-28, 2028-02-29, 2029-02-28, 2030-02-28
    assert card_expiry_for(CAROL.birth_date, NOW.date()) == D(2035, 2, 28)
    cert = _issue_sign(ca, leaf_key, CAROL)
    assert cert.not_valid_after_utc == end_of_day_jst(D(2030, 2, 28))
    issued = dt.datetime(2027, 3, 1, 10, 0, tzinfo=JST)
    cert = _issue_sign(ca, leaf_key, CAROL, issued_at=issued,
                       card_expiry=card_expiry_for(CAROL.birth_date, issued.date()))
    assert cert.not_valid_after_utc == end_of_day_jst(D(2032, 2, 29))  # leap year: the real day
    # 2027-02-28 is carol's birthday that year (common year), so it does not count on the day.
    assert nth_birthday_after(CAROL.birth_date, D(2027, 2, 28), 1) == D(2028, 2, 29)
    assert nth_birthday_after(CAROL.birth_date, D(2027, 2, 27), 1) == D(2027, 2, 28)


@pytest.mark.parametrize(
    "birth, issued, expected",
    [
        (D(2007, 4, 1), D(2025, 4, 1), D(2035, 4, 1)),  # 18 on the day: adult, 10th birthday
        (D(2007, 4, 2), D(2025, 4, 1), D(2029, 4, 2)),  # 17: 5th birthday (the 1st is tomorrow)
        (D(1950, 1, 1), D(2025, 1, 1), D(2035, 1, 1)),
        (D(2025, 3, 1), D(2025, 4, 1), D(2030, 3, 1)),  # a baby
    ],
)
def test_card_expiry_for(birth: dt.date, issued: dt.date, expected: dt.date) -> None:
    assert card_expiry_for(birth, issued) == expected


def test_card_expiry_for_rejects_unborn() -> None:
    with pytest.raises(UsageError):
        card_expiry_for(D(2025, 4, 2), D(2025, 4, 1))


def test_void_certificate_refused(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    with pytest.raises(UsageError):
        _issue_sign(ca, leaf_key, card_expiry=D(2025, 3, 31))
    assert ca.db.list() == []


def test_issuance_outside_ca_validity_refused(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    with pytest.raises(UsageError):
        _issue_sign(ca, leaf_key, issued_at=NOW - dt.timedelta(seconds=1))
    with pytest.raises(UsageError):
        _issue_auth(ca, leaf_key, issued_at=dt.datetime(2036, 1, 1, tzinfo=UTC), card_expiry=D(2040, 1, 1))
    with pytest.raises(UsageError):
        _issue_sign(ca, leaf_key, issued_at=dt.datetime(2025, 5, 1))  # naive


def test_validity_capped_by_ca(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    issued = dt.datetime(2033, 1, 1, tzinfo=UTC)
    cert = _issue_auth(ca, leaf_key, issued_at=issued, card_expiry=D(2043, 1, 1))
    assert cert.not_valid_after_utc == ca.auth_ca_cert.not_valid_after_utc


@settings(max_examples=300, deadline=None)
@given(
    birth=st.dates(min_value=D(1900, 1, 1), max_value=D(2024, 12, 31)),
    offset_minutes=st.integers(0, 60 * 24 * 365 * 3),
)
def test_leaf_not_after_property(birth: dt.date, offset_minutes: int) -> None:
    issued_at = dt.datetime(2025, 1, 1, tzinfo=UTC) + dt.timedelta(minutes=offset_minutes)
    issued_on = issued_at.astimezone(JST).date()
    expiry = card_expiry_for(birth, issued_on)
    not_after = leaf_not_after(birth, issued_at, expiry)
    local = not_after.astimezone(JST)
    assert local.time() == dt.time(23, 59, 59)
    assert issued_on < local.date() <= expiry
    # The end falls on a birthday (28 February standing in for 29 February in common years).
    assert (local.month, local.day) == (birth.month, birth.day) or (
        (birth.month, birth.day) == (2, 29) and (local.month, local.day) == (2, 28)
    )
    # Between four and five years away: the 5th birthday strictly after the issuance day.
    assert 4 * 365 < (local.date() - issued_on).days <= 5 * 365 + 2


# --------------------------------------------------------------------------- interoperability


def test_openssl_parses_sign_cert(ca: TestCA, leaf_key: rsa.RSAPublicKey, tmp_path: Path) -> None:
    path = _pem(tmp_path, "sign.pem", _issue_sign(ca, leaf_key))
    out = _openssl("x509", "-in", str(path), "-text", "-noout")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "X509v3 Key Usage: critical" in text
    assert "Digital Signature, Non Repudiation" in text
    assert "1.2.392.200149.8.5.1.0.20" in text
    assert "1.2.392.200149.8.5.5.1" in text and "1.2.392.200149.8.5.5.6" in text
    assert f"{ca.base_url}/crl/sign.crl" in text
    assert f"OCSP - URI:{ca.base_url}/ocsp/sign" in text
    assert "sha256WithRSAEncryption" in text


def test_openssl_parses_auth_cert_and_root(ca: TestCA, leaf_key: rsa.RSAPublicKey, tmp_path: Path) -> None:
    text = _openssl("x509", "-in", str(_pem(tmp_path, "auth.pem", _issue_auth(ca, leaf_key))), "-text", "-noout").stdout
    assert "X509v3 Key Usage: critical" in text
    assert re.search(r"Key Usage: critical\s+Digital Signature\s*\n", text)
    assert "Non Repudiation" not in text
    root = _openssl("x509", "-in", str(ca.ca_cert_path("sign")), "-text", "-noout").stdout
    assert "Certificate Sign, CRL Sign" in root
    assert re.search(r"Basic Constraints: critical\s+CA:TRUE", root)


@pytest.mark.parametrize("kind", ["sign", "auth"])
def test_openssl_verify_chain(ca: TestCA, leaf_key: rsa.RSAPublicKey, tmp_path: Path, kind: str) -> None:
    cert = _issue_sign(ca, leaf_key) if kind == "sign" else _issue_auth(ca, leaf_key)
    path = _pem(tmp_path, f"{kind}.pem", cert)
    at = str(int(NOW.timestamp()) + 3600)
    ok = _openssl("verify", "-attime", at, "-CAfile", str(ca.ca_cert_path(kind)), str(path))  # type: ignore[arg-type]
    assert ok.returncode == 0 and ": OK" in ok.stdout, ok.stdout + ok.stderr
    wrong = "auth" if kind == "sign" else "sign"
    bad = _openssl("verify", "-attime", at, "-CAfile", str(ca.ca_cert_path(wrong)), str(path))  # type: ignore[arg-type]
    assert bad.returncode != 0
    late = str(int(cert.not_valid_after_utc.timestamp()) + 1)
    expired = _openssl("verify", "-attime", late, "-CAfile", str(ca.ca_cert_path(kind)), str(path))  # type: ignore[arg-type]
    assert expired.returncode != 0


# --------------------------------------------------------------------------- database


def test_issuance_is_recorded(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    sign = _issue_sign(ca, leaf_key)
    auth = ca.issue_auth_cert(leaf_key, card_id="card-2", card_expiry=D(2030, 1, 1))
    rec = ca.db.get(sign.serial_number)
    assert rec is not None
    assert rec.serial == format(sign.serial_number, "x") and rec.serial_number == sign.serial_number
    assert (rec.kind, rec.card, rec.status, rec.revoked_at, rec.reason) == ("sign", "card-1", "good", None, None)
    assert rec.subject == sign.subject.rfc4514_string()
    assert rec.not_before == sign.not_valid_before_utc and rec.not_after == sign.not_valid_after_utc
    assert rec.issued_at == NOW.astimezone(UTC)
    assert rec.certificate() == sign
    assert rec.issuance_id == sign.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert "der=" not in repr(rec)
    assert [r.serial_number for r in ca.db.list()] == sorted(
        [sign.serial_number, auth.serial_number], key=lambda s: format(s, "x"))
    assert [r.serial_number for r in ca.db.list(kind="auth")] == [auth.serial_number]
    assert [r.serial_number for r in ca.db.list(card="card-1")] == [sign.serial_number]
    assert ca.db.list(card="card-2", kind="sign") == []
    assert len(ca.db.list(status="good")) == 2


def test_db_raw_storage(tmp_path: Path, ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    cert = _issue_sign(ca, leaf_key)
    conn = sqlite3.connect(ca.directory / "certs.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        row = conn.execute("SELECT serial, not_before, not_after, issued_at, der FROM certificates").fetchone()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert row[0] == format(cert.serial_number, "x")
    assert row[1] == "2025-04-01T03:00:00+00:00"
    assert row[2] == "2029-11-03T14:59:59+00:00"
    assert row[3] == "2025-04-01T03:00:00+00:00"
    assert bytes(row[4]) == cert.public_bytes(serialization.Encoding.DER)
    assert {"certificates", "links"} <= tables


def test_db_status_transitions(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    db = ca.db
    a = _issue_sign(ca, leaf_key).serial_number
    b = _issue_sign(ca, leaf_key).serial_number
    c = _issue_auth(ca, leaf_key).serial_number
    when = NOW + dt.timedelta(days=10)

    with pytest.raises(UsageError):
        db.set_status(a, "revoked")  # needs revoked_at
    rec = db.set_status(a, "revoked", revoked_at=when, reason=x509.ReasonFlags.key_compromise)
    assert (rec.status, rec.revoked_at, rec.reason) == ("revoked", when.astimezone(UTC), "keyCompromise")
    with pytest.raises(CertificateStatusError):
        db.set_status(a, "good")
    with pytest.raises(CertificateStatusError):
        db.set_status(a, "superseded")

    assert db.set_status(b, "superseded").status == "superseded"
    rec = db.set_status(b, "revoked", revoked_at=when)
    assert rec.reason == "unspecified"

    rec = db.set_status(c, "revoked", revoked_at=when, reason="certificate_hold")
    assert rec.reason == "certificateHold"
    rec = db.set_status(c, "good")
    assert (rec.status, rec.revoked_at, rec.reason) == ("good", None, None)

    with pytest.raises(UsageError):
        db.set_status(c, "revoked", revoked_at=when, reason="bored")
    with pytest.raises(UsageError):
        db.set_status(c, "lost")  # type: ignore[arg-type]
    with pytest.raises(UnknownCertificateError):
        db.set_status(12345, "revoked", revoked_at=when)
    assert [r.serial_number for r in db.list(status="revoked")] == sorted([a, b], key=lambda s: format(s, "x"))


def test_db_links(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    old = _issue_auth(ca, leaf_key).serial_number
    new = _issue_auth(ca, leaf_key, issued_at=NOW + dt.timedelta(days=30)).serial_number
    ca.db.link(old, new, linked_at=NOW + dt.timedelta(days=30))
    ca.db.link(old, new, linked_at=NOW + dt.timedelta(days=31))  # idempotent
    assert ca.db.successors(old) == [serial_hex(new)]
    assert ca.db.predecessors(new) == [serial_hex(old)]
    assert ca.db.successors(new) == []
    with pytest.raises(UnknownCertificateError):
        ca.db.link(old, 999, linked_at=NOW)
    with pytest.raises(UsageError):
        ca.db.link(old, old, linked_at=NOW)


def test_db_standalone(tmp_path: Path, ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    cert = _issue_auth(ca, leaf_key)
    path = tmp_path / "other.db"
    with CertificateDB(path) as db:
        assert _mode(path) == 0o600
        rec = db.record(cert, "auth", "card-9", issued_at=NOW)
        assert rec.card == "card-9"
        with pytest.raises(UsageError):
            db.record(cert, "auth", "card-9")  # duplicate serial
        with pytest.raises(UsageError):
            db.record(cert, "ca", "card-9")  # type: ignore[arg-type]
        with pytest.raises(UsageError):
            db.record(cert, "auth", "")
        with pytest.raises(UsageError):
            db.record(cert, "auth", "x", issued_at=dt.datetime(2025, 1, 1))  # naive
    with CertificateDB(path) as db:  # persisted
        assert db.get(serial_hex(cert.serial_number).upper()) == rec
        assert db.get(1) is None


@pytest.mark.parametrize(
    "given_, expected",
    [(255, "ff"), ("0xFF", "ff"), ("00ff", "ff"), ("0A:BC", "abc"), (" 1f ", "1f")],
)
def test_serial_hex(given_: int | str, expected: str) -> None:
    assert serial_hex(given_) == expected


@pytest.mark.parametrize("bad", [0, -1, "xyz", "", True, 1.5])
def test_serial_hex_rejects(bad: object) -> None:
    with pytest.raises(UsageError):
        serial_hex(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- hygiene


def test_library_takes_time_from_the_clock() -> None:
    root = Path(jpki.pki.__file__).parent
    sources = [*root.glob("*.py"), root.parent / "identity.py", root.parent / "certinfo.py"]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for banned in (r"datetime\.now\(", r"date\.today\(", r"\btime\.time\(", r"(?<![\w.])print\(",
                       r"basicConfig", r"\bsys\.exit"):
            assert not re.search(banned, text), f"{path.name} uses {banned}"
        for line in text.splitlines():
            assert not re.match(r"\s*(from|import) jpki\.(session|transport|apdu)", line), path.name
