"""Bounded caches (jpki.verify.cache) and what the verification side keeps in them.

A client may send certificates of 16 KiB by the thousand: every cache is bounded by count and
by bytes (least recently used out first), and a certificate that does not chain to a trust
anchor leaves nothing behind (issue 9, item 2: 6,000 logins with fresh 15 KB self-signed
certificates grew the service by 217 MB).
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from auth_support import RP_ID, make_validator
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from fixed import FIXED_NOW, TEMPLATE_BASE_URL

from jpki.auth import CertRef, FollowPredecessors, MemoryStore, RelyingParty
from jpki.auth.client import answer_login
from jpki.auth.protocol import ClientData, LoginResponse
from jpki.certinfo import POLICY_AUTH
from jpki.errors import UsageError
from jpki.pki import TestCA, profiles
from jpki.verify import CrlCache, OcspCache, Reason, TrustStore, Validator
from jpki.verify.cache import LruCache

DER = serialization.Encoding.DER
PAD_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1")


# --------------------------------------------------------------------------- LruCache


def test_lru_cache_drops_the_least_recently_used_by_count():
    cache: LruCache[str, int] = LruCache(3)
    for key in "abc":
        cache.put(key, ord(key))
    assert cache.get("a") == ord("a")  # a is now the most recently used
    cache.put("d", 4)
    assert cache.keys() == ["c", "a", "d"] and "b" not in cache
    assert len(cache) == 3 and cache.total_bytes == 3  # one "byte" each without a size


def test_lru_cache_drops_entries_until_the_bytes_fit():
    cache: LruCache[str, bytes] = LruCache(100, 1000, size=lambda key, value: len(value))
    for key in "abcd":
        cache.put(key, bytes(300))
    assert cache.keys() == ["b", "c", "d"] and cache.total_bytes == 900
    cache.get("b")
    assert cache.put("e", bytes(250))  # 1150 > 1000: c (least recently used) goes
    assert cache.keys() == ["d", "b", "e"] and cache.total_bytes == 850
    assert not cache.put("b", bytes(1001))  # heavier than the whole bound: not kept, old one gone
    assert "b" not in cache and cache.total_bytes == 550
    assert cache.put("d", bytes(10), weight=700)  # an explicit weight wins over size()
    assert cache.total_bytes == 950
    assert cache.discard_where(lambda key: key in "de") == 2 and cache.total_bytes == 0
    cache.put("x", b"1")
    assert cache.clear() == 1 and len(cache) == 0 and cache.total_bytes == 0


def test_lru_cache_bounds_must_be_sane():
    assert not LruCache(0).put("a", 1)
    for bad in ((-1, None), (1, -1)):
        with pytest.raises(ValueError):
            LruCache(*bad)


# --------------------------------------------------------------------------- certificates


def big_certificate(serial: int, *, signer, public_key, issuer: x509.Name | None = None,
                    policy: bool = True, pad: int = 14_000) -> bytes:
    """A ~15 KB auth-looking certificate (self-signed unless ``issuer`` names another)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"client {serial}")])
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject)
        .public_key(public_key).serial_number(serial)
        .not_valid_before(FIXED_NOW - dt.timedelta(days=1)).not_valid_after(FIXED_NOW + dt.timedelta(days=30))
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.UnrecognizedExtension(PAD_OID, b"\x04\x82" + pad.to_bytes(2, "big") + bytes(pad)),
                       critical=False)
    )
    if policy:
        builder = builder.add_extension(x509.CertificatePolicies([x509.PolicyInformation(POLICY_AUTH, None)]),
                                        critical=False)
    return builder.sign(signer, hashes.SHA256()).public_bytes(DER)


@pytest.fixture
def test_ca(home, clock):
    with TestCA.open(home / "ca", clock=clock) as ca:
        yield ca


def issued_leaf(ca: TestCA, key: rsa.RSAPrivateKey) -> bytes:
    """A user-authentication certificate of the test CA (not recorded: revocation is not asked)."""
    return profiles.build_auth_certificate(
        key.public_key(), issuer_cert=ca.auth_ca_cert, issuer_key=ca.auth_ca_key,
        issuance_id=profiles.new_issuance_id(), serial=profiles.new_serial(),
        not_before=FIXED_NOW, not_after=FIXED_NOW + dt.timedelta(days=365), base_url=TEMPLATE_BASE_URL,  # a free port
    ).public_bytes(DER)


def test_certificates_that_do_not_chain_leave_nothing_in_the_validator(home, clock, test_ca, key_pool):
    key = ec.generate_private_key(ec.SECP256R1())
    validator = Validator(TrustStore.jlis() + TrustStore.from_ca_dir(home / "ca"), clock=clock, revocation="none")
    seen: dict[Reason | None, int] = {}
    for serial in range(1, 2001):
        kind = serial % 3
        der = big_certificate(
            serial, signer=key, public_key=key.public_key(),
            issuer=test_ca.auth_ca_cert.subject if kind == 1 else None,  # the test CA's name, forged
            policy=kind != 2,  # without the JPKI policy: not an auth certificate at all
        )
        assert len(der) > 14_000
        reason = validator.validate(der, kind="auth").reason
        seen[reason] = seen.get(reason, 0) + 1
    assert seen == {Reason.UNTRUSTED_ISSUER: 666, Reason.BAD_SIGNATURE: 667, Reason.WRONG_KIND: 667}
    cache = validator.certificate_cache
    assert len(cache) == 0 and cache.total_bytes == 0
    # a certificate the test CA issued is kept: its signature checks run once
    assert validator.validate(issued_leaf(test_ca, key_pool[2]), kind="auth").ok
    assert len(cache) == 1 and 4096 < cache.total_bytes < 8192


def test_the_certificate_cache_is_bounded_by_bytes(home, clock, test_ca, key_pool):
    bound = 40_000  # some eight certificates of the test CA (about 1 KB of DER + 4 KiB each)
    validator = Validator(TrustStore.from_ca_dir(home / "ca"), clock=clock, revocation="none",
                          max_cached_certificate_bytes=bound)
    leaves = [issued_leaf(test_ca, key_pool[2]) for _ in range(20)]
    for der in leaves:
        assert validator.validate(der, kind="auth").ok
        assert validator.certificate_cache.total_bytes <= bound
    kept = len(validator.certificate_cache)
    assert 5 <= kept < 20
    oldest_kept = leaves[-kept]
    assert validator.validate(oldest_kept, kind="auth").ok  # a hit: now the most recently used
    assert validator.validate(leaves[0], kind="auth").ok  # examined again: evicts the next oldest
    assert len(validator.certificate_cache) == kept
    assert validator.certificate_cache.keys()[-2:] == [
        (hashlib.sha256(oldest_kept).digest(), "auth"), (hashlib.sha256(leaves[0]).digest(), "auth")]
    assert (hashlib.sha256(leaves[-kept + 1]).digest(), "auth") not in validator.certificate_cache
    with pytest.raises(UsageError):
        Validator(TrustStore.jlis(), max_cached_certificates=-1)


# --------------------------------------------------------------------------- relying party


def test_logins_with_fresh_self_signed_certificates_leave_nothing_behind(rp, alice, key_pool):
    """Each answer passes the challenge and signature checks (the client signs with the key of
    its own certificate) and is refused as untrusted; nothing of it is kept."""
    key = key_pool[4]
    signer = ec.generate_private_key(ec.SECP256R1())
    for serial in range(1, 201):
        challenge = rp.begin_login()
        data = ClientData.for_challenge(challenge).encode()
        der = big_certificate(serial, signer=signer, public_key=key.public_key())
        result = rp.complete_login(LoginResponse(challenge.id, data, der,
                                                 key.sign(data, padding.PKCS1v15(), hashes.SHA256())))
        assert result.reason == "untrusted"
    assert len(rp.certificate_cache) == 0 and rp.certificate_cache.total_bytes == 0
    assert len(rp.validator.certificate_cache) == 0
    answer = answer_login(rp.begin_login(), alice, pin=lambda: "1234")
    assert rp.complete_login(answer).ok
    assert len(rp.certificate_cache) == 1 and len(rp.validator.certificate_cache) == 1


def test_the_relying_party_certificate_cache_is_bounded_by_bytes(home, clock, net, alice):
    relying = RelyingParty(RP_ID, make_validator(home, clock, net), MemoryStore(), clock,
                           certificate_cache_bytes=1000)  # less than one certificate
    answer = answer_login(relying.begin_login(), alice, pin=lambda: "1234")
    assert relying.complete_login(answer).ok
    assert len(relying.certificate_cache) == 0  # heavier than the bound: used, not kept
    with pytest.raises(UsageError):
        RelyingParty(RP_ID, make_validator(home, clock, net), certificate_cache=-1)


# --------------------------------------------------------------------------- revocation caches


def test_revocation_caches_are_bounded_by_bytes(home, clock, net, test_ca):
    trust = TrustStore.from_ca_dir(home / "ca")
    alice_auth = test_ca.db.list(kind="auth", card="alice")[0].der
    crls = CrlCache(max_bytes=100)  # lighter than any CRL: each is used, none kept
    validator = Validator(trust, clock=clock, fetch=net, revocation="crl", crl_cache=crls)
    for _ in range(2):
        assert validator.validate(alice_auth, kind="auth").ok
    assert len(crls) == 0 and crls.total_bytes == 0 and net.calls == 2
    answers = OcspCache(max_bytes=2500)  # two answers of some 1.1 KiB
    validator = Validator(trust, clock=clock, fetch=net, ocsp_cache=answers)
    records = [r for r in test_ca.db.list(kind="auth") if r.card in ("alice", "bob")]
    assert len(records) == 2
    for record in [*records, records[0]]:
        assert validator.validate(record.der, kind="auth").ok
        assert answers.total_bytes <= 2500
    assert len(answers) == 2


def test_renewal_link_accounts_are_bounded_by_bytes():
    issuer = "CN=" + "x" * 2000
    resolver = FollowPredecessors(lambda ref: None, cache_bytes=10_000)
    for serial in range(1, 50):
        resolver.account_for(CertRef(issuer, serial))
        assert resolver.cache.total_bytes <= 10_000
    assert 0 < len(resolver.cache) < 5
    with pytest.raises(UsageError):
        FollowPredecessors(lambda ref: None, cache_bytes=-1)
