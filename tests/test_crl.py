"""CRLs: the DER encoder (jpki.revocation.crl.build_crl), the verifying loader (LoadedCRL),
TestCA.revoke / TestCA.crl and the revocation additions to the certificate DB.

Cross-checks against tools nobody here wrote: cryptography (load, signature, byte-for-byte
equality with its own builder), asn1crypto (DER primitives) and ``openssl crl``.
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from asn1crypto import core as acore
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID, NameOID, SignatureAlgorithmOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jpki.cli._fail import fail_for
from jpki.clock import JST, FixedClock
from jpki.errors import UsageError, VerificationError
from jpki.pki import TestCA
from jpki.pki.db import _SCHEMA as OLD_SCHEMA
from jpki.pki.db import (
    AlreadyRevokedError,
    CertificateDB,
    CertificateStatusError,
    RevokedRow,
    UnknownCertificateError,
)
from jpki.revocation import (
    CRL_REASONS,
    MAX_SERIAL,
    CRLError,
    LoadedCRL,
    RevokedEntry,
    build_crl,
)
from jpki.revocation.crl import der_integer, der_length, der_time

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 27, 3, 0, 0, tzinfo=UTC)
NEXT = NOW + dt.timedelta(days=1)
R = x509.ReasonFlags
#: Every reason a certificate can be revoked for (removeFromCRL belongs to delta CRLs).
REVOKE_REASONS = [flag for flag in R if flag is not R.remove_from_crl]
EDGE_SERIALS = [0, 1, 127, 128, 255, 256, 2**64, 2**152, 2**152 + 1, 2**159 - 1]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def ca(tmp_path: Path, clock: FixedClock, key_pool: list[rsa.RSAPrivateKey]) -> Iterator[TestCA]:
    test_ca = TestCA.init(tmp_path / "ca", clock=clock, keys={"sign": key_pool[0], "auth": key_pool[1]})
    yield test_ca
    test_ca.close()


@pytest.fixture
def other_key(key_pool: list[rsa.RSAPrivateKey]) -> rsa.RSAPrivateKey:
    return key_pool[2]


@pytest.fixture
def leaf_key(key_pool: list[rsa.RSAPrivateKey]) -> rsa.RSAPublicKey:
    return key_pool[3].public_key()


def _entries(n: int, *, seed: int = 1, start: dt.datetime = NOW - dt.timedelta(days=900)) -> list[RevokedEntry]:
    """``n`` entries with random 159-bit serials, dates, reasons and some invalidity dates."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        revoked = start + dt.timedelta(seconds=rnd.randrange(86400 * 899))
        invalid = revoked - dt.timedelta(hours=rnd.randrange(1, 100)) if i % 3 == 0 else None
        out.append(RevokedEntry(rnd.getrandbits(159), revoked, rnd.choice(REVOKE_REASONS), invalid))
    return out


def _build(ca: TestCA, entries: list[RevokedEntry], *, kind: str = "sign", number: int = 1,
           this_update: dt.datetime = NOW, next_update: dt.datetime = NEXT) -> bytes:
    return build_crl(ca.ca_cert(kind), ca.ca_key(kind), entries,  # type: ignore[arg-type]
                     crl_number=number, this_update=this_update, next_update=next_update)


def _utc(when: dt.datetime | None) -> dt.datetime | None:
    return None if when is None else when.astimezone(UTC).replace(microsecond=0)


def _normalised(entry: RevokedEntry) -> RevokedEntry:
    return RevokedEntry(entry.serial, _utc(entry.revoked_at), entry.reason, _utc(entry.invalidity_date))  # type: ignore[arg-type]


def _reason_of(revoked: x509.RevokedCertificate) -> x509.ReasonFlags:
    try:
        return revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return R.unspecified


def _invalidity_of(revoked: x509.RevokedCertificate) -> dt.datetime | None:
    try:
        return revoked.extensions.get_extension_for_class(x509.InvalidityDate).value.invalidity_date_utc
    except x509.ExtensionNotFound:
        return None


def _reject(der: bytes, issuer: x509.Certificate, **kw: object) -> str:
    with pytest.raises(CRLError) as info:
        LoadedCRL.from_der(der, issuer, **kw)  # type: ignore[arg-type]
    assert info.value.reason in CRL_REASONS
    return info.value.reason


def _openssl_crl(der: bytes, tmp_path: Path, ca_pem: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "test.crl"
    path.write_bytes(der)
    return subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(path), "-CAfile", str(ca_pem), "-noout", *extra],
        capture_output=True, text=True, timeout=120, check=False,
    )


def _self_signed(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, name: x509.Name, *,
                 ski: bool = True, crl_sign: bool = True) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=crl_sign,
            encipher_only=False, decipher_only=False), critical=True)
    )
    if ski:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)  # type: ignore[arg-type]
    return builder.sign(key, hashes.SHA256())


def _crypto_builder(issuer: x509.Certificate, entries: list[RevokedEntry], *, number: int = 1,
                    aki: bool = True) -> x509.CertificateRevocationListBuilder:
    """cryptography's builder loaded with the same content build_crl writes, in the same order."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject).last_update(NOW).next_update(NEXT)
    )
    if aki:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    for e in entries:
        rb = x509.RevokedCertificateBuilder().serial_number(e.serial).revocation_date(e.revoked_at)
        if e.reason is not R.unspecified:
            rb = rb.add_extension(x509.CRLReason(e.reason), critical=False)
        if e.invalidity_date is not None:
            rb = rb.add_extension(x509.InvalidityDate(e.invalidity_date.astimezone(UTC).replace(tzinfo=None)),
                                  critical=False)
        builder = builder.add_revoked_certificate(rb.build())
    return builder


def _split(der: bytes) -> tuple[bytes, bytes, bytes]:
    """(TBSCertList, signatureAlgorithm, signatureValue) of a CRL, as DER."""
    seq = acore.Sequence.load(der)
    return seq[0].dump(), seq[1].dump(), seq[2].dump()


def _resign(der: bytes, key: rsa.RSAPrivateKey, edit) -> bytes:  # type: ignore[no-untyped-def]
    """Apply ``edit`` to the TBSCertList bytes, then sign and wrap again (a well-signed CRL)."""
    from cryptography.hazmat.primitives.asymmetric import padding

    tbs, alg, _ = _split(der)
    tbs = edit(tbs)
    signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    body = tbs + alg + b"\x03" + der_length(len(signature) + 1) + b"\x00" + signature
    return b"\x30" + der_length(len(body)) + body


def _revoked_body(entries_der: bytes, tbs_head: bytes, exts: bytes) -> bytes:
    content = tbs_head + b"\x30" + der_length(len(entries_der)) + entries_der + exts
    return b"\x30" + der_length(len(content)) + content


# --------------------------------------------------------------------------- DER primitives


@pytest.mark.parametrize(
    "value, expected",
    [
        (0, "020100"), (1, "020101"), (127, "02017f"), (128, "02020080"), (255, "020200ff"),
        (256, "02020100"), (-1, "0201ff"), (-128, "020180"), (-129, "0202ff7f"),
        (2**159 - 1, "0214" + "7f" + "ff" * 19), (2**152, "0214" + "01" + "00" * 19),
        (2**159, "0215" + "0080" + "00" * 19),
    ],
)
def test_der_integer_is_minimal_twos_complement(value: int, expected: str) -> None:
    assert der_integer(value).hex() == expected


@given(st.integers(min_value=-(2**200), max_value=2**200))
def test_der_integer_matches_asn1crypto(value: int) -> None:
    encoded = der_integer(value)
    assert encoded == acore.Integer(value).dump()
    assert acore.Integer.load(encoded).native == value


@pytest.mark.parametrize(
    "n, expected",
    [(0, "00"), (127, "7f"), (128, "8180"), (255, "81ff"), (256, "820100"), (65535, "82ffff"),
     (65536, "83010000"), (60_000_000, "84039387" + "00")],
)
def test_der_length_short_and_long_form(n: int, expected: str) -> None:
    assert der_length(n).hex() == expected


@pytest.mark.parametrize(
    "when, expected",
    [
        (dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC), b"\x17\x0d491231235959Z"),
        (dt.datetime(2050, 1, 1, 0, 0, 0, tzinfo=UTC), b"\x18\x0f20500101000000Z"),
        (dt.datetime(1950, 1, 1, 0, 0, 0, tzinfo=UTC), b"\x17\x0d500101000000Z"),
        (dt.datetime(1949, 12, 31, 23, 59, 59, tzinfo=UTC), b"\x18\x0f19491231235959Z"),
        (dt.datetime(2026, 4, 1, 9, 0, 0, 999_999, tzinfo=JST), b"\x17\x0d260401000000Z"),  # JST, fraction dropped
        (dt.datetime(2050, 1, 1, 8, 59, 59, tzinfo=JST), b"\x17\x0d491231235959Z"),  # still 2049 in UTC
    ],
)
def test_der_time_utctime_before_2050(when: dt.datetime, expected: bytes) -> None:
    assert der_time(when) == expected


@given(st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1),
                    timezones=st.just(UTC)))
def test_der_time_matches_asn1crypto(when: dt.datetime) -> None:
    encoded = der_time(when)
    whole = when.replace(microsecond=0)
    if 1950 <= when.year < 2050:
        assert acore.UTCTime.load(encoded).native == whole
    else:
        assert acore.GeneralizedTime.load(encoded).native == whole


def test_der_time_rejects_naive() -> None:
    with pytest.raises(UsageError):
        der_time(dt.datetime(2026, 1, 1))


# --------------------------------------------------------------------------- build_crl


def test_build_crl_round_trips_through_cryptography(ca: TestCA) -> None:
    entries = _entries(300)
    entries += [RevokedEntry(s, NOW - dt.timedelta(days=1), REVOKE_REASONS[i % len(REVOKE_REASONS)])
                for i, s in enumerate(EDGE_SERIALS)]
    entries += [
        RevokedEntry(2**100 + 1, dt.datetime(2051, 3, 4, 5, 6, 7, tzinfo=UTC), R.key_compromise,
                     dt.datetime(2051, 3, 1, tzinfo=UTC)),  # GeneralizedTime from 2050
        RevokedEntry(2**100 + 2, dt.datetime(2026, 11, 27, 12, 0, tzinfo=JST), R.unspecified,
                     dt.datetime(1949, 12, 31, tzinfo=UTC)),
        RevokedEntry(2**100 + 3, dt.datetime(2026, 1, 1, 0, 0, 0, 123_456, tzinfo=UTC)),
    ]
    der = _build(ca, entries, number=42)
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(ca.sign_ca_cert.public_key())  # type: ignore[arg-type]
    assert not crl.is_signature_valid(ca.auth_ca_cert.public_key())  # type: ignore[arg-type]
    assert crl.signature_algorithm_oid == SignatureAlgorithmOID.RSA_WITH_SHA256
    assert isinstance(crl.signature_hash_algorithm, hashes.SHA256)
    assert crl.issuer == ca.sign_ca_cert.subject
    assert crl.last_update_utc == NOW and crl.next_update_utc == NEXT
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 42
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    ski = ca.sign_ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.value.key_identifier == ski.digest and not aki.critical
    assert aki.value.authority_cert_issuer is None
    assert [e.oid for e in crl.extensions] == [ExtensionOID.AUTHORITY_KEY_IDENTIFIER, ExtensionOID.CRL_NUMBER]
    assert not any(e.critical for e in crl.extensions)
    assert len(crl) == len(entries)
    for want, got in zip(entries, crl, strict=True):  # order kept
        want = _normalised(want)
        assert got.serial_number == want.serial
        assert got.revocation_date_utc == want.revoked_at
        assert _reason_of(got) is want.reason
        assert _invalidity_of(got) == want.invalidity_date
        if want.reason is R.unspecified:  # RFC 5280 §5.3.1: absent rather than unspecified
            with pytest.raises(x509.ExtensionNotFound):
                got.extensions.get_extension_for_class(x509.CRLReason)


def test_entry_without_reason_or_invalidity_has_no_extensions(ca: TestCA) -> None:
    der = _build(ca, [RevokedEntry(5, NOW)])
    crl = x509.load_der_x509_crl(der)
    assert len(crl[0].extensions) == 0
    # The entry is exactly SEQUENCE { INTEGER 5, UTCTime }.
    assert b"\x30\x12\x02\x01\x05\x17\x0d261127030000Z" in der


def test_build_crl_equals_cryptography_builder_byte_for_byte(ca: TestCA) -> None:
    """PKCS#1 v1.5 is deterministic: same content, same DER, same signature."""
    entries = [e for e in _entries(60, seed=7) if e.serial > 0]
    entries += [RevokedEntry(s, NOW, R.affiliation_changed) for s in EDGE_SERIALS if s > 0]
    entries.append(RevokedEntry(77, dt.datetime(2050, 1, 1, tzinfo=UTC), R.key_compromise, NOW))
    ours = _build(ca, entries, number=2**64)
    theirs = _crypto_builder(ca.sign_ca_cert, entries, number=2**64).sign(ca.sign_ca_key, hashes.SHA256())
    assert ours == theirs.public_bytes(serialization.Encoding.DER)


def test_empty_crl_omits_revoked_certificates(ca: TestCA, tmp_path: Path) -> None:
    der = _build(ca, [], kind="auth", number=0)
    crl = x509.load_der_x509_crl(der)
    assert len(crl) == 0 and crl.is_signature_valid(ca.auth_ca_cert.public_key())  # type: ignore[arg-type]
    assert der == _crypto_builder(ca.auth_ca_cert, [], number=0).sign(
        ca.auth_ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    loaded = LoadedCRL.from_der(der, ca.auth_ca_cert, now=NOW)
    assert len(loaded) == 0 and loaded.lookup(1) is None and loaded.crl_number == 0
    assert "verify OK" in _openssl_crl(der, tmp_path, ca.ca_cert_path("auth")).stderr


def test_build_crl_consumes_a_generator_once(ca: TestCA) -> None:
    entries = _entries(50)
    der = _build(ca, (e for e in entries))  # type: ignore[arg-type]
    assert [r.serial_number for r in x509.load_der_x509_crl(der)] == [e.serial for e in entries]


@pytest.mark.parametrize(
    "entries",
    [
        [RevokedEntry(7, NOW), RevokedEntry(7, NOW + dt.timedelta(seconds=1))],  # listed twice
        [RevokedEntry(-1, NOW)],
        [RevokedEntry(MAX_SERIAL, NOW)],  # 21 octets
        [RevokedEntry(True, NOW)],  # type: ignore[arg-type]
        [RevokedEntry("12", NOW)],  # type: ignore[arg-type]
        [RevokedEntry(1.0, NOW)],  # type: ignore[arg-type]
        [RevokedEntry(1, dt.datetime(2026, 1, 1))],  # naive
        [RevokedEntry(1, dt.date(2026, 1, 1))],  # type: ignore[arg-type]
        [RevokedEntry(1, NOW, R.key_compromise, dt.datetime(2026, 1, 1))],  # naive invalidity date
        [RevokedEntry(1, NOW, "keyCompromise")],  # type: ignore[arg-type]
        [RevokedEntry(1, NOW, R.remove_from_crl)],  # delta CRLs only
    ],
)
def test_build_crl_rejects_bad_entries(ca: TestCA, entries: list[RevokedEntry]) -> None:
    with pytest.raises(UsageError):
        _build(ca, entries)


def test_build_crl_rejects_bad_arguments(ca: TestCA, other_key: rsa.RSAPrivateKey) -> None:
    cert, key = ca.sign_ca_cert, ca.sign_ca_key
    ok = {"crl_number": 1, "this_update": NOW, "next_update": NEXT}
    for bad in ({"crl_number": -1}, {"crl_number": 2**159}, {"crl_number": True}, {"crl_number": "1"},
                {"next_update": NOW}, {"next_update": NOW - dt.timedelta(seconds=1)},
                {"this_update": dt.datetime(2026, 1, 1)}, {"next_update": dt.datetime(2027, 1, 1)}):
        with pytest.raises(UsageError):
            build_crl(cert, key, [], **{**ok, **bad})  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        build_crl(cert, other_key, [], **ok)  # type: ignore[arg-type]  # not the certificate's key
    with pytest.raises(UsageError):
        build_crl(cert, ec.generate_private_key(ec.SECP256R1()), [], **ok)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        build_crl(cert.public_bytes(serialization.Encoding.DER), key, [], **ok)  # type: ignore[arg-type]
    assert build_crl(cert, key, [], crl_number=2**159 - 1, this_update=NOW, next_update=NEXT)


def test_openssl_verifies_and_reads_our_crls(ca: TestCA, tmp_path: Path) -> None:
    entries = [RevokedEntry(s, NOW - dt.timedelta(hours=1), R.key_compromise, NOW - dt.timedelta(days=3))
               for s in EDGE_SERIALS]
    der = _build(ca, entries, number=9)
    checked = _openssl_crl(der, tmp_path, ca.ca_cert_path("sign"))
    assert checked.returncode == 0 and "verify OK" in checked.stderr, checked.stderr
    text = _openssl_crl(der, tmp_path, ca.ca_cert_path("sign"), "-text").stdout
    assert text.count("Serial Number:") == len(EDGE_SERIALS)
    assert "Serial Number: 00\n" in text and "Serial Number: 7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF" in text
    assert "Key Compromise" in text and "Invalidity Date" in text and "CRL Number" in text
    assert "Version 2" in text and "sha256WithRSAEncryption" in text
    wrong = _openssl_crl(der, tmp_path, ca.ca_cert_path("auth"))
    assert "verify OK" not in wrong.stderr


@pytest.mark.slow
def test_openssl_verifies_a_20k_entry_crl(ca: TestCA, tmp_path: Path) -> None:
    der = _build(ca, _entries(20_000, seed=3), kind="auth", number=3)
    checked = _openssl_crl(der, tmp_path, ca.ca_cert_path("auth"))
    assert checked.returncode == 0 and "verify OK" in checked.stderr, checked.stderr


# --------------------------------------------------------------------------- LoadedCRL


@pytest.mark.parametrize("eager", [False, True])
def test_loaded_crl_round_trip(ca: TestCA, eager: bool) -> None:
    entries = _entries(2_000) + [RevokedEntry(s, NOW, R.superseded) for s in EDGE_SERIALS]
    entries += [RevokedEntry(2**70 + i, NOW + dt.timedelta(seconds=i), R.key_compromise,
                             dt.datetime(2050, 2, 3, 4, 5, 6, tzinfo=UTC)) for i in range(3)]
    entries += [RevokedEntry(2**71, dt.datetime(2050, 1, 1, tzinfo=UTC), R.unspecified, NOW)]
    der = _build(ca, entries, number=12)
    crl = LoadedCRL.from_der(der, ca.sign_ca_cert, now=NOW, eager=eager)
    assert len(crl) == len(entries)
    assert (crl.this_update, crl.next_update, crl.crl_number) == (NOW, NEXT, 12)
    assert crl.issuer == ca.sign_ca_cert.subject and crl.der == der
    ski = ca.sign_ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert crl.authority_key_identifier == ski.digest
    assert list(crl.serials()) == [e.serial for e in entries]
    assert list(crl) == [_normalised(e) for e in entries]
    for e in entries:
        assert e.serial in crl and crl.is_revoked(e.serial)
        assert crl.lookup(e.serial) == _normalised(e)
    again = crl.lookup(entries[0].serial)
    assert again is crl.lookup(entries[0].serial)  # decoded once
    for missing in (2, 2**159, -1, 10**60):
        assert crl.lookup(missing) is None and missing not in crl
    assert len(crl.fingerprint()) == 64


def test_loaded_crl_reads_other_encoders(ca: TestCA) -> None:
    """cryptography's CRLs: explicit 'unspecified', other extension orders, unknown non-critical
    entry and CRL extensions, GeneralizedTime dates, serials cryptography allows."""
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.auth_ca_cert.subject).last_update(NOW).next_update(NEXT)
        .add_extension(x509.CRLNumber(5), critical=False)
        .add_extension(unknown, critical=False)
    )
    when = dt.datetime(2055, 6, 7, 8, 9, 10, tzinfo=UTC)
    specs = [
        (1, [x509.InvalidityDate(dt.datetime(2026, 1, 2, 3, 4, 5)), x509.CRLReason(R.key_compromise)]),
        (2, [x509.CRLReason(R.unspecified)]),
        (3, [unknown, x509.CRLReason(R.certificate_hold)]),
        (2**159 - 1, []),
    ]
    for serial, exts in specs:
        rb = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
        for ext in exts:
            rb = rb.add_extension(ext, critical=False)
        builder = builder.add_revoked_certificate(rb.build())
    der = builder.sign(ca.auth_ca_key, hashes.SHA384()).public_bytes(serialization.Encoding.DER)
    crl = LoadedCRL.from_der(der, ca.auth_ca_cert, now=NOW)
    assert crl.crl_number == 5 and crl.authority_key_identifier is None
    assert crl.lookup(1) == RevokedEntry(1, when, R.key_compromise, dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert crl.lookup(2) == RevokedEntry(2, when, R.unspecified, None)
    assert crl.lookup(3) == RevokedEntry(3, when, R.certificate_hold, None)
    assert crl.lookup(2**159 - 1) == RevokedEntry(2**159 - 1, when)


def test_loaded_crl_with_an_ecdsa_issuer() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EC test CA")])
    cert = _self_signed(key, name)
    der = _crypto_builder(cert, [RevokedEntry(9, NOW, R.ca_compromise)]).sign(
        key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    assert LoadedCRL.from_der(der, cert).lookup(9) == RevokedEntry(9, NOW, R.ca_compromise)
    other = _self_signed(ec.generate_private_key(ec.SECP256R1()), name, ski=False)
    assert _reject(der, other) == "crl-signature-invalid"


def test_freshness(ca: TestCA) -> None:
    der = _build(ca, _entries(10))
    assert LoadedCRL.from_der(der, ca.sign_ca_cert, now=NOW)
    assert LoadedCRL.from_der(der, ca.sign_ca_cert, now=NEXT)  # nextUpdate itself is still fresh
    assert LoadedCRL.from_der(der, ca.sign_ca_cert, now=NEXT.astimezone(JST))
    assert _reject(der, ca.sign_ca_cert, now=NEXT + dt.timedelta(seconds=1)) == "crl-expired"
    assert _reject(der, ca.sign_ca_cert, now=NOW - dt.timedelta(seconds=1)) == "crl-not-yet-valid"
    crl = LoadedCRL.from_der(der, ca.sign_ca_cert)  # no time given: no freshness check
    with pytest.raises(CRLError) as info:
        crl.check_time(NEXT + dt.timedelta(days=30))
    assert info.value.reason == "crl-expired"
    assert isinstance(info.value, VerificationError) and fail_for(info.value).exit_code == 3
    with pytest.raises(UsageError):
        LoadedCRL.from_der(der, ca.sign_ca_cert, now=dt.datetime(2026, 11, 27))


def test_wrong_issuer_is_a_mismatch(ca: TestCA, other_key: rsa.RSAPrivateKey) -> None:
    der = _build(ca, _entries(10))
    assert _reject(der, ca.auth_ca_cert) == "crl-issuer-mismatch"
    # Same name, another key: the authority key identifier tells them apart ...
    impostor = _self_signed(other_key, ca.sign_ca_cert.subject)
    assert _reject(der, impostor) == "crl-issuer-mismatch"
    # ... and without a subject key identifier to compare, the signature does.
    impostor = _self_signed(other_key, ca.sign_ca_cert.subject, ski=False)
    assert _reject(der, impostor) == "crl-signature-invalid"
    # The right key in a certificate that may not sign CRLs.
    no_crl_sign = _self_signed(ca.sign_ca_key, ca.sign_ca_cert.subject, crl_sign=False)
    assert _reject(der, no_crl_sign) == "crl-issuer-mismatch"
    # Names compare as RFC 5280 says: case and spaces folded.
    folded = x509.Name([x509.NameAttribute(a.oid, a.value.upper() if isinstance(a.value, str) else a.value)
                        for a in ca.sign_ca_cert.subject])
    same = _self_signed(ca.sign_ca_key, folded)
    assert LoadedCRL.from_der(der, same).crl_number == 1


def test_bad_signatures(ca: TestCA, other_key: rsa.RSAPrivateKey) -> None:
    der = bytearray(_build(ca, _entries(10)))
    der[-1] ^= 0x01
    assert _reject(bytes(der), ca.sign_ca_cert) == "crl-signature-invalid"
    forged = _crypto_builder(ca.sign_ca_cert, _entries(3)).sign(other_key, hashes.SHA256())
    assert _reject(forged.public_bytes(serialization.Encoding.DER), ca.sign_ca_cert) == "crl-signature-invalid"
    # A signature of the wrong length for the key.
    good = _build(ca, [])
    tbs, alg, _ = _split(good)
    short = b"\x03\x05\x00" + b"\x01" * 4
    body = tbs + alg + short
    assert _reject(b"\x30" + der_length(len(body)) + body, ca.sign_ca_cert) == "crl-signature-invalid"
    # SHA-1 is not accepted, even correctly signed.
    from cryptography.hazmat.primitives.asymmetric import padding

    sha1_alg = b"\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x05\x05\x00"
    tbs_sha1 = tbs.replace(alg, sha1_alg, 1)  # same length
    signature = ca.sign_ca_key.sign(tbs_sha1, padding.PKCS1v15(), hashes.SHA1())
    body = tbs_sha1 + sha1_alg + b"\x03\x82\x01\x01\x00" + signature
    assert _reject(b"\x30" + der_length(len(body)) + body, ca.sign_ca_cert) == "crl-signature-invalid"


def test_unsupported_critical_extensions(ca: TestCA) -> None:
    delta = _crypto_builder(ca.sign_ca_cert, _entries(3)).add_extension(x509.DeltaCRLIndicator(1), critical=True)
    der = delta.sign(ca.sign_ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    assert _reject(der, ca.sign_ca_cert) == "crl-unsupported-extension"
    # An indirect CRL entry (certificateIssuer is critical) cannot be trusted to be ours.
    builder = _crypto_builder(ca.sign_ca_cert, _entries(200, seed=5))
    rb = (x509.RevokedCertificateBuilder().serial_number(1234).revocation_date(NOW)
          .add_extension(x509.CertificateIssuer([x509.DNSName("other.example")]), critical=True))
    builder = builder.add_revoked_certificate(rb.build())
    der = builder.sign(ca.sign_ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    assert _reject(der, ca.sign_ca_cert) == "crl-unsupported-extension"


def test_every_truncation_is_malformed(ca: TestCA) -> None:
    der = _build(ca, _entries(5), number=3)
    for size in range(len(der)):
        assert _reject(der[:size], ca.sign_ca_cert) == "crl-malformed", size
    assert _reject(der + b"\x00", ca.sign_ca_cert) == "crl-malformed"
    assert _reject(b"", ca.sign_ca_cert) == "crl-malformed"
    with pytest.raises(UsageError):
        LoadedCRL.from_der("not bytes", ca.sign_ca_cert)  # type: ignore[arg-type]
    assert LoadedCRL.from_der(memoryview(der), ca.sign_ca_cert).crl_number == 3


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: b"\x31" + d[1:],  # a SET, not a SEQUENCE
        lambda d: d[:1] + b"\x80" + d[2:],  # indefinite length
        lambda d: d[:1] + b"\x84" + len(d[4:]).to_bytes(4, "big") + d[4:],  # non-minimal length
    ],
)
def test_bad_outer_framing_is_malformed(ca: TestCA, edit) -> None:  # type: ignore[no-untyped-def]
    der = _build(ca, _entries(5))
    assert _reject(edit(der), ca.sign_ca_cert) == "crl-malformed"


def test_signature_algorithms_must_agree(ca: TestCA) -> None:
    der = _build(ca, _entries(5))
    tbs, _, sig = _split(der)
    alg384 = b"\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0c\x05\x00"
    body = tbs + alg384 + sig
    assert _reject(b"\x30" + der_length(len(body)) + body, ca.sign_ca_cert) == "crl-malformed"
    assert sig[:5] == b"\x03\x82\x01\x01\x00"  # BIT STRING, 257 octets, 0 unused bits
    tail = bytearray(sig)
    tail[4] = 0x01  # one unused bit
    body = tbs + _split(der)[1] + bytes(tail)
    assert _reject(b"\x30" + der_length(len(body)) + body, ca.sign_ca_cert) == "crl-malformed"


def test_well_signed_but_malformed_content(ca: TestCA) -> None:
    """Only the signer could write these; the loader still refuses them (or the bad entry)."""
    key = ca.sign_ca_key
    base = _build(ca, [RevokedEntry(10, NOW), RevokedEntry(11, NOW)])
    entry10 = b"\x30\x12\x02\x01\x0a\x17\x0d261127030000Z"
    entry11 = b"\x30\x12\x02\x01\x0b\x17\x0d261127030000Z"
    assert entry10 + entry11 in base
    # A serial listed twice.
    twice = _resign(base, key, lambda t: t.replace(entry11, entry10))
    assert _reject(twice, ca.sign_ca_cert) == "crl-malformed"
    # A month 13: the framing is fine, so the CRL loads, but the entry is refused on lookup
    # (or at once when decoding eagerly).
    bad_date = _resign(base, key, lambda t: t.replace(entry11, entry11.replace(b"261127", b"261327")))
    assert _reject(bad_date, ca.sign_ca_cert, eager=True) == "crl-malformed"
    for clock_ in (b"250000", b"036000", b"030060", b"03000x"):
        bad_clock = _resign(base, key, lambda t, c=clock_: t.replace(entry11, entry11.replace(b"030000Z", c + b"Z")))
        assert _reject(bad_clock, ca.sign_ca_cert, eager=True) == "crl-malformed"
    crl = LoadedCRL.from_der(bad_date, ca.sign_ca_cert)
    assert crl.lookup(10) == RevokedEntry(10, NOW)
    with pytest.raises(CRLError) as info:
        crl.lookup(11)
    assert info.value.reason == "crl-malformed"
    with pytest.raises(CRLError):
        list(crl)
    # A reason code that does not exist (7).
    kc = _build(ca, [RevokedEntry(12, NOW, R.key_compromise)])
    seven = _resign(kc, key, lambda t: t.replace(b"\x04\x03\x0a\x01\x01", b"\x04\x03\x0a\x01\x07"))
    with pytest.raises(CRLError):
        LoadedCRL.from_der(seven, ca.sign_ca_cert).lookup(12)
    assert _reject(seven, ca.sign_ca_cert, eager=True) == "crl-malformed"
    # An entry whose time is neither UTCTime nor GeneralizedTime.
    not_time = _resign(base, key, lambda t: t.replace(entry11, entry11.replace(b"\x17\x0d", b"\x04\x0d")))
    assert _reject(not_time, ca.sign_ca_cert) == "crl-malformed"
    # nextUpdate before thisUpdate.
    swapped = _resign(base, key, lambda t: t.replace(b"\x17\x0d261128030000Z", b"\x17\x0d261126030000Z"))
    assert _reject(swapped, ca.sign_ca_cert) == "crl-malformed"


_FUZZ_CRL: dict[str, object] = {}


def _fuzz_material(key_pool: list[rsa.RSAPrivateKey],
                   tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, x509.Certificate]:
    if not _FUZZ_CRL:
        ca = TestCA.init(tmp_path_factory.mktemp("fuzzca") / "ca", clock=FixedClock(NOW),
                         keys={"sign": key_pool[0], "auth": key_pool[1]})
        entries = _entries(150, seed=11) + [RevokedEntry(s, NOW) for s in EDGE_SERIALS]
        _FUZZ_CRL["der"] = _build(ca, entries)
        _FUZZ_CRL["cert"] = ca.sign_ca_cert
        ca.close()
    return _FUZZ_CRL["der"], _FUZZ_CRL["cert"]  # type: ignore[return-value]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_truncations_and_byte_flips(data: st.DataObject, key_pool: list[rsa.RSAPrivateKey],
                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    der, cert = _fuzz_material(key_pool, tmp_path_factory)
    size = data.draw(st.integers(0, len(der) - 1), label="truncate at")
    assert _reject(der[:size], cert) == "crl-malformed"
    garbled = bytearray(der)
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        where = data.draw(st.integers(0, len(der) - 1), label="where")
        garbled[where] ^= data.draw(st.integers(1, 255), label="xor")
    cut = data.draw(st.integers(0, len(der)), label="and maybe truncate")
    try:
        crl = LoadedCRL.from_der(bytes(garbled[:cut]), cert, now=NOW)
    except CRLError as exc:
        assert exc.reason in CRL_REASONS
    else:  # only possible if the flips cancelled out
        assert bytes(garbled[:cut]) == der and len(crl) == 160


# --------------------------------------------------------------------------- TestCA.revoke and the DB


def _issue(ca: TestCA, key: rsa.RSAPublicKey, kind: str = "sign", card: str = "card-1") -> x509.Certificate:
    if kind == "sign":
        from jpki.identity import SAMPLE_PERSONAS

        return ca.issue_sign_cert(key, SAMPLE_PERSONAS["bob"], card_id=card, card_expiry=dt.date(2031, 1, 1))
    return ca.issue_auth_cert(key, card_id=card, card_expiry=dt.date(2031, 1, 1))


def test_revoke_records_time_reason_and_invalidity(ca: TestCA, leaf_key: rsa.RSAPublicKey, clock: FixedClock) -> None:
    a, b, c = (_issue(ca, leaf_key).serial_number for _ in range(3))
    clock.advance(hours=5, microseconds=250)
    rec = ca.revoke(a, "keyCompromise", invalidity_date=dt.datetime(2026, 11, 20, 9, 0, 0, 5, tzinfo=JST))
    assert (rec.status, rec.reason) == ("revoked", "keyCompromise")
    assert rec.revoked_at == (NOW + dt.timedelta(hours=5))  # the clock, whole seconds
    assert rec.invalidity_date == dt.datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
    rec = ca.revoke(b, R.affiliation_changed, revoked_at=dt.datetime(2026, 12, 1, 12, 0, tzinfo=JST))
    assert (rec.reason, rec.revoked_at, rec.invalidity_date) == (
        "affiliationChanged", dt.datetime(2026, 12, 1, 3, 0, tzinfo=UTC), None)
    assert ca.revoke(c, "cessation_of_operation").reason == "cessationOfOperation"  # enum name
    assert [r.serial for r in ca.db.revoked_entries("sign")] == [a, b, c]


def test_revoke_refusals_change_nothing(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    a = _issue(ca, leaf_key).serial_number
    b = _issue(ca, leaf_key).serial_number
    ca.revoke(a, R.key_compromise)
    before = ca.db.list()
    with pytest.raises(UnknownCertificateError):
        ca.revoke(123456789, R.key_compromise)
    with pytest.raises(AlreadyRevokedError) as info:
        ca.revoke(a, R.superseded)
    assert isinstance(info.value, CertificateStatusError)
    for bad_reason in ("bored", "removeFromCRL", R.remove_from_crl, None):
        with pytest.raises(UsageError):
            ca.revoke(b, bad_reason)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        ca.revoke(b, R.key_compromise, revoked_at=dt.datetime(2026, 1, 1))
    with pytest.raises(UsageError):
        ca.revoke(b, R.key_compromise, invalidity_date=dt.datetime(2026, 1, 1))
    assert ca.db.list() == before


def test_hold_can_be_made_permanent_or_released(ca: TestCA, leaf_key: rsa.RSAPublicKey, clock: FixedClock) -> None:
    a = _issue(ca, leaf_key).serial_number
    b = _issue(ca, leaf_key).serial_number
    ca.revoke(a, R.certificate_hold, invalidity_date=NOW - dt.timedelta(days=1))
    with pytest.raises(AlreadyRevokedError):
        ca.revoke(a, R.certificate_hold)
    clock.advance(days=2)
    rec = ca.revoke(a, R.key_compromise)
    assert (rec.reason, rec.revoked_at, rec.invalidity_date) == ("keyCompromise", NOW + dt.timedelta(days=2), None)
    ca.revoke(b, R.certificate_hold, invalidity_date=NOW - dt.timedelta(days=1))
    rec = ca.db.set_status(b, "good")  # release of the hold clears everything
    assert (rec.status, rec.revoked_at, rec.reason, rec.invalidity_date) == ("good", None, None, None)
    crl = LoadedCRL.from_der(ca.crl("sign"), ca.sign_ca_cert, now=clock.now())
    assert crl.lookup(b) is None and crl.lookup(a).reason is R.key_compromise  # type: ignore[union-attr]


def test_superseded_is_revocable(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    a = _issue(ca, leaf_key).serial_number
    ca.db.set_status(a, "superseded")
    assert ca.revoke(a, R.superseded).status == "revoked"


def test_migration_adds_the_invalidity_date_column(tmp_path: Path, ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    cert = _issue(ca, leaf_key, "auth")
    der = cert.public_bytes(serialization.Encoding.DER)
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)  # the schema before revocation support
    assert "invalidity_date" not in {r[1] for r in conn.execute("PRAGMA table_info(certificates)")}
    conn.execute(
        "INSERT INTO certificates (serial, kind, card, subject, not_before, not_after, status, revoked_at,"
        " reason, der, issued_at) VALUES (?, 'auth', 'c', 's', ?, ?, 'revoked', ?, 'keyCompromise', ?, ?)",
        (format(cert.serial_number, "x"), NOW.isoformat(), NEXT.isoformat(), NOW.isoformat(), der, NOW.isoformat()),
    )
    conn.commit()
    conn.close()
    for _ in range(2):  # the second open finds nothing to migrate
        with CertificateDB(path) as db:
            rec = db.get(cert.serial_number)
            assert rec is not None and rec.invalidity_date is None and rec.reason == "keyCompromise"
            assert db.revoked_entries("auth") == [RevokedRow(cert.serial_number, "auth", NOW, "keyCompromise", None)]
    with CertificateDB(path) as db:
        assert db.next_crl_number("auth", this_update=NOW) == 1
    conn = sqlite3.connect(path)
    try:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(certificates)")}
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert "invalidity_date" in columns and "crl_numbers" in tables


def test_bulk_insert_revoked(ca: TestCA, leaf_key: rsa.RSAPublicKey) -> None:
    good = _issue(ca, leaf_key, "sign").serial_number
    rnd = random.Random(4)
    rows = [
        RevokedRow(rnd.getrandbits(159) | 1, "sign" if i % 4 else "auth", NOW - dt.timedelta(minutes=i),
                   REVOKE_REASONS[i % len(REVOKE_REASONS)].value, NOW - dt.timedelta(days=1) if i % 5 == 0 else None)
        for i in range(10_000)
    ]
    rows.append((2**159 - 1, "sign", NOW))  # a plain tuple, reason unspecified  # type: ignore[arg-type]
    assert ca.db.bulk_insert_revoked(rows) == len(rows)
    signs = [r for r in rows if r[1] == "sign"]
    assert ca.db.count_revoked("sign") == len(signs) and ca.db.count_revoked("auth") == len(rows) - len(signs)
    listed = ca.db.revoked_entries("sign")
    assert [r.serial for r in listed] == [r[0] for r in signs]
    assert listed[-1] == RevokedRow(2**159 - 1, "sign", NOW, "unspecified", None)
    assert list(ca.db.iter_revoked("sign", page=7)) == listed  # paged reads see every row once
    rec = ca.db.get(signs[0][0])
    assert rec is not None and rec.card == "bulk" and rec.der == b"" and rec.status == "revoked"
    crl = LoadedCRL.from_der(ca.crl("sign"), ca.sign_ca_cert, now=NOW)
    assert len(crl) == len(signs) and crl.lookup(good) is None
    for row in signs[:2000]:
        got = crl.lookup(row[0])
        assert got is not None and got.revoked_at == row[2]
        assert got.reason.value == (row[3] if len(row) > 3 else "unspecified")
        assert got.invalidity_date == (row[4] if len(row) > 4 else None)

    # A bad batch inserts nothing.
    count = ca.db.count_revoked("sign")
    for bad in ([(5, "sign", NOW), (5, "sign", NOW)],  # duplicate within the batch
                [(7, "sign", NOW), (signs[0][0], "sign", NOW)],  # duplicate of a stored one
                [(8, "sign", NOW), (9, "ca", NOW)],  # bad kind
                [(10, "sign", NOW), (0, "sign", NOW)],  # serials are positive
                [(11, "sign", NOW), (12, "sign", dt.datetime(2026, 1, 1))],  # naive
                [(13, "sign", NOW, "bored")]):
        with pytest.raises(UsageError):
            ca.db.bulk_insert_revoked(bad)  # type: ignore[arg-type]
        assert ca.db.count_revoked("sign") == count
    with pytest.raises(UsageError):
        ca.db.bulk_insert_revoked([], card="")
    assert ca.db.bulk_insert_revoked([], not_after=NEXT) == 0


# --------------------------------------------------------------------------- TestCA.crl


def test_ca_crl_lists_the_revoked_certificates_of_its_kind(ca: TestCA, leaf_key: rsa.RSAPublicKey,
                                                          clock: FixedClock, tmp_path: Path) -> None:
    sign_revoked = _issue(ca, leaf_key, "sign").serial_number
    sign_good = _issue(ca, leaf_key, "sign").serial_number
    sign_superseded = _issue(ca, leaf_key, "sign").serial_number
    auth_revoked = _issue(ca, leaf_key, "auth").serial_number
    ca.revoke(sign_revoked, R.affiliation_changed)
    ca.db.set_status(sign_superseded, "superseded")
    ca.revoke(auth_revoked, R.key_compromise, invalidity_date=NOW - dt.timedelta(days=2))
    clock.advance(minutes=30, microseconds=7)

    sign = LoadedCRL.from_der(ca.crl("sign"), ca.sign_ca_cert, now=clock.now())
    assert list(sign) == [RevokedEntry(sign_revoked, NOW, R.affiliation_changed)]
    assert sign.lookup(sign_good) is None and sign.lookup(sign_superseded) is None
    assert sign.this_update == NOW + dt.timedelta(minutes=30)
    assert sign.next_update == sign.this_update + dt.timedelta(days=1)
    auth_der = ca.crl("auth", next_update_in=dt.timedelta(hours=6))
    auth = LoadedCRL.from_der(auth_der, ca.auth_ca_cert, now=clock.now())
    assert list(auth) == [RevokedEntry(auth_revoked, NOW, R.key_compromise, NOW - dt.timedelta(days=2))]
    assert auth.next_update == auth.this_update + dt.timedelta(hours=6)
    with pytest.raises(CRLError):
        LoadedCRL.from_der(auth_der, ca.sign_ca_cert)
    checked = _openssl_crl(auth_der, tmp_path, ca.ca_cert_path("auth"))
    assert checked.returncode == 0 and "verify OK" in checked.stderr


def test_ca_crl_numbers_increase_and_persist(ca: TestCA, clock: FixedClock) -> None:
    def number(der: bytes, kind: str) -> int:
        return x509.load_der_x509_crl(der).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    assert [number(ca.crl("sign"), "sign") for _ in range(3)] == [1, 2, 3]
    assert number(ca.crl("auth"), "auth") == 1
    directory = ca.directory
    ca.close()
    with TestCA.open(directory, clock=clock) as reopened:
        assert reopened.db.last_crl_number("sign") == 3
        assert number(reopened.crl("sign"), "sign") == 4
        assert number(reopened.crl("auth"), "auth") == 2


def test_ca_crl_rejects_bad_arguments(ca: TestCA) -> None:
    for bad in (dt.timedelta(0), dt.timedelta(seconds=-5), 3600):
        with pytest.raises(UsageError):
            ca.crl("sign", next_update_in=bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        ca.crl("root")  # type: ignore[arg-type]
    assert ca.db.last_crl_number("sign") is None  # refused before a number was spent


# --------------------------------------------------------------------------- scale


@pytest.mark.slow
def test_200k_entries_parse_and_look_up(ca: TestCA) -> None:
    """Correctness at size (no timing: benchmarks/revocation.py measures)."""
    entries = _entries(200_000, seed=200)
    der = _build(ca, entries, number=200)
    crl = LoadedCRL.from_der(der, ca.sign_ca_cert, now=NOW)
    assert len(crl) == len(entries) and crl.crl_number == 200
    for e in entries:
        assert crl.lookup(e.serial) == e
    rnd = random.Random(0)
    assert all(crl.lookup(rnd.getrandbits(159)) is None for _ in range(1000))
    eager = LoadedCRL.from_der(der, ca.sign_ca_cert, now=NOW, eager=True)
    assert len(eager) == len(entries) and list(eager) == entries
    theirs = x509.load_der_x509_crl(der)
    assert len(theirs) == len(entries) and theirs.is_signature_valid(ca.sign_ca_cert.public_key())  # type: ignore[arg-type]
