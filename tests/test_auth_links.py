"""The renewal-link resolvers the relying party relies on (NoLinks, FollowPredecessors,
FollowSuccessors, TestCALinks) and the test helpers that sign like the card."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from auth_support import AUTH_PIN, card_session, credentials, sign_with_key
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from jpki.auth import (
    Account,
    CertRef,
    FollowPredecessors,
    FollowSuccessors,
    LinkError,
    NoLinks,
    TestCALinks,
)
from jpki.provision import Home, read_holder

# --------------------------------------------------------------------------- resolver tests


ISSUER = "CN=Test Root,C=JP"


def chain_of(*serials: int) -> dict[CertRef, CertRef]:
    """new -> old links of one renewal chain."""
    refs = [CertRef(ISSUER, s) for s in serials]
    return {new: old for old, new in itertools.pairwise(refs)}


def test_no_links_every_certificate_is_its_own_account():
    ref = CertRef(ISSUER, 0x1234)
    assert NoLinks().account_for(ref) == Account(ref)
    assert Account(ref).key.startswith("jpki1:") and Account(ref).key.endswith(":1234")


def test_follow_predecessors_walks_back_to_the_first_certificate():
    back = chain_of(1, 2, 3)
    resolver = FollowPredecessors(back.get)
    account = resolver.account_for(CertRef(ISSUER, 3))
    assert account.origin == CertRef(ISSUER, 1) and account.renewals == 2
    assert resolver.account_for(CertRef(ISSUER, 1)).key == account.key


def test_follow_predecessors_refuses_cycles_and_failures():
    loop = {CertRef(ISSUER, 1): CertRef(ISSUER, 2), CertRef(ISSUER, 2): CertRef(ISSUER, 1)}
    with pytest.raises(LinkError, match="cycle"):
        FollowPredecessors(loop.get).account_for(CertRef(ISSUER, 1))

    def broken(ref: CertRef) -> CertRef | None:
        raise OSError("linkage service down")

    with pytest.raises(LinkError, match="linkage service down"):
        FollowPredecessors(broken).account_for(CertRef(ISSUER, 1))
    endless = FollowPredecessors(lambda ref: CertRef(ISSUER, ref.serial + 1), max_hops=5)
    with pytest.raises(LinkError, match="longer than 5"):
        endless.account_for(CertRef(ISSUER, 1))


def test_follow_successors_learns_the_account_of_a_renewed_certificate():
    forward = {CertRef(ISSUER, 1): [CertRef(ISSUER, 2)], CertRef(ISSUER, 2): [CertRef(ISSUER, 3)]}
    resolver = FollowSuccessors(lambda ref: forward.get(ref, []))
    first = resolver.account_for(CertRef(ISSUER, 1))         # a new account, remembered
    assert first.origin == CertRef(ISSUER, 1) and first.renewals == 0
    third = resolver.account_for(CertRef(ISSUER, 3))         # learnt by walking forward
    assert third.key == first.key and third.renewals == 2
    assert resolver.aliases[CertRef(ISSUER, 2)] == CertRef(ISSUER, 1)
    other = resolver.account_for(CertRef(ISSUER, 99))
    assert other.origin == CertRef(ISSUER, 99)
    assert resolver.sync() == 0


def test_test_ca_links_follow_jpki_lifecycle_renew(home, clock):
    from jpki.lifecycle import renew

    before = read_holder(Home(home), "alice").auth_serial
    issuer = x509.load_pem_x509_certificate((home / "ca" / "auth_ca.pem").read_bytes()).subject.rfc4514_string()
    renew(Home(home), "alice", clock=clock)
    after = read_holder(Home(home), "alice").auth_serial
    links = TestCALinks(home / "ca")
    try:
        assert links.predecessor(CertRef(issuer, after)) == CertRef(issuer, before)
        assert links.successors(CertRef(issuer, before)) == [CertRef(issuer, after)]
        assert links.predecessor(CertRef("CN=Someone else", after)) is None
        by_back = FollowPredecessors(links.predecessor).account_for(CertRef(issuer, after))
        by_forward = FollowSuccessors(links.successors)
        by_forward.account_for(CertRef(issuer, before))
        assert by_forward.account_for(CertRef(issuer, after)).key == by_back.key == Account(CertRef(issuer, before)).key
    finally:
        links.close()


def test_helpers_sign_like_the_card(home):
    key, der = credentials(home, "alice", "auth")
    cert = x509.load_der_x509_certificate(der)
    signature = sign_with_key(key, b"x")
    cert.public_key().verify(signature, b"x", padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
    with card_session(home) as session:
        session.verify("auth", AUTH_PIN)
        assert session.sign_digest("auth", "sha256", hashlib.sha256(b"x").digest()) == signature
