"""The relying party in the library (jpki.auth.rp): both flows with alice's emulated card in
process, and every refusal with its reason code, logged without personal data."""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from auth_support import (
    AUTH_PIN,
    CA_BASE,
    RP_ID,
    SIGN_PIN,
    assert_no_personal_data,
    card_session,
    credentials,
    forged_login,
    make_validator,
    served_revocation,
    served_revocation_with_outage,
)
from cryptography import x509
from redis_env import redis_url  # noqa: F401  (session fixture: a private redis-server)

from jpki.auth import (
    AuthReason,
    EkycResponse,
    FollowPredecessors,
    LoginResponse,
    MemoryStore,
    NoLinks,
    RedisStore,
    RelyingParty,
    SqliteStore,
)
from jpki.auth.client import answer_ekyc, answer_login
from jpki.auth.protocol import ClientData, b64url_encode
from jpki.auth.rp import DEFAULT_REVOCATION_MAX_AGE
from jpki.clock import FixedClock
from jpki.errors import UsageError
from jpki.lifecycle import lost, renew
from jpki.pki import TestCA
from jpki.provision import Home, read_holder
from jpki.sign import CardSigner, sign_file
from jpki.verify import HttpFetcher, TrustStore, Validator


def login(rp: RelyingParty, session, pin: str = AUTH_PIN):
    challenge = rp.begin_login()
    return challenge, answer_login(challenge, session, pin=lambda: pin)


def ekyc(rp: RelyingParty, session, text: str | None = None, clock=None):
    challenge = rp.begin_ekyc(text)
    return challenge, answer_ekyc(challenge, session, pin=lambda: SIGN_PIN, clock=clock)


# --------------------------------------------------------------------------- the good paths


def test_login_gives_the_stable_account(rp, alice, caplog):
    caplog.set_level(logging.DEBUG, logger="jpki.auth")
    challenge, response = login(rp, alice)
    assert challenge.purpose == "login" and challenge.rp_id == RP_ID
    result = rp.complete_login(response.to_json())
    assert result.ok and result.reason is None, result.message
    cert = x509.load_der_x509_certificate(alice.read_certificate("auth"))
    assert result.certificate.serial == cert.serial_number
    assert result.account.origin.serial == cert.serial_number and result.account.renewals == 0
    assert result.account.key == f"{result.account.key.rsplit(':', 1)[0]}:{cert.serial_number:X}"
    assert result.validation.ok and result.validation.revocation.method == "ocsp"
    assert "login OK" in result.summary()
    assert result.to_json()["account"]["key"] == result.account.key
    assert "login ok" in caplog.text


def test_login_accepts_the_response_object_dict_and_bytes(rp, alice):
    for form in ("object", "dict", "bytes"):
        _, response = login(rp, alice)
        given = {"object": response, "dict": response.to_json(), "bytes": json.dumps(response.to_json()).encode()}[form]
        assert rp.complete_login(given).ok, form


def test_ekyc_gives_the_verified_basic_4_info(rp, alice, home, caplog, clock):
    caplog.set_level(logging.DEBUG, logger="jpki.auth")
    _challenge, response = ekyc(rp, alice, "口座開設の本人確認\n金額: 0円", clock=clock)
    result = rp.complete_ekyc(response.to_json())
    assert result.ok, result.message
    expected = read_holder(Home(home), "alice").persona
    ident = result.identity
    assert (ident.name, ident.address, ident.birth_date, ident.sex) == (
        expected.name, expected.address, expected.birth_date, expected.sex.value)
    doc = result.to_json()
    assert doc["identity"] == {"name": expected.name, "address": expected.address,
                               "birth_date": expected.birth_date.isoformat(), "sex": expected.sex.value,
                               "substituted": False}
    assert result.transaction_text == "口座開設の本人確認\n金額: 0円"
    assert result.signed_at == clock.now()
    assert result.to_json(include_identity=False)["identity"] is None
    for text in (repr(result), result.summary(), caplog.text):
        assert_no_personal_data(text, home)


def test_ekyc_without_transaction_text(rp, alice):
    _, response = ekyc(rp, alice)
    result = rp.complete_ekyc(response)
    assert result.ok and result.transaction_text is None


# --------------------------------------------------------------------------- challenges


def test_replayed_login_is_refused(rp, alice):
    _, response = login(rp, alice)
    assert rp.complete_login(response).ok
    again = rp.complete_login(response)
    assert again.reason == AuthReason.REPLAYED == "replayed"


def test_replayed_ekyc_is_refused(rp, alice):
    _, response = ekyc(rp, alice)
    assert rp.complete_ekyc(response).ok
    assert rp.complete_ekyc(response).reason == "replayed"


def test_unknown_challenge_is_refused_as_replayed(rp, home):
    other = RelyingParty(RP_ID, rp.validator, MemoryStore(), rp.clock)
    key, der = credentials(home, "alice", "auth")
    response = forged_login(other.begin_login(), key, der)
    assert rp.complete_login(response).reason == "replayed"


def test_expired_challenge_is_refused(rp, alice, clock):
    _, response = login(rp, alice)
    clock.advance(seconds=rp.challenge_ttl.total_seconds())
    assert rp.complete_login(response).reason == AuthReason.EXPIRED
    _, response = ekyc(rp, alice)
    clock.advance(minutes=10)
    assert rp.complete_ekyc(response).reason == "expired"


def test_a_challenge_just_before_expiry_is_accepted(rp, alice, clock):
    _, response = login(rp, alice)
    clock.advance(seconds=rp.challenge_ttl.total_seconds() - 1)
    assert rp.complete_login(response).ok


def test_wrong_rp_signed_for_another_relying_party(rp, home):
    key, der = credentials(home, "alice", "auth")
    response = forged_login(rp.begin_login(), key, der, rp_id="https://evil.example")
    assert rp.complete_login(response).reason == AuthReason.WRONG_RP


def test_wrong_rp_challenge_of_another_relying_party_in_a_shared_store(rp, home, clock):
    shared = MemoryStore()
    ours = RelyingParty(RP_ID, rp.validator, shared, clock)
    theirs = RelyingParty("https://other.example.jp", rp.validator, shared, clock)
    key, der = credentials(home, "alice", "auth")
    # The card signed our rp_id, but over a challenge the other relying party issued.
    response = forged_login(theirs.begin_login(), key, der, rp_id=RP_ID)
    assert ours.complete_login(response).reason == "wrong-rp"


def test_wrong_purpose_both_ways(rp, alice, home):
    _, login_answer = login(rp, alice)
    as_ekyc = EkycResponse(login_answer.challenge_id, login_answer.client_data, b"\x30\x00")
    assert rp.complete_ekyc(as_ekyc).reason == AuthReason.WRONG_PURPOSE
    # an eKYC challenge answered at the login endpoint (signed as if it were a login)
    key, der = credentials(home, "alice", "auth")
    challenge = rp.begin_ekyc()
    response = forged_login(challenge, key, der, purpose="login", transaction_text=None)
    assert rp.complete_login(response).reason == "wrong-purpose"
    # and the honest eKYC answer sent to complete_login
    _, ekyc_answer = ekyc(rp, alice)
    as_login = LoginResponse(ekyc_answer.challenge_id, ekyc_answer.client_data, der, b"\x00" * 256)
    assert rp.complete_login(as_login).reason == "wrong-purpose"


def test_challenge_mismatch_nonce_or_text(rp, home, alice):
    key, der = credentials(home, "alice", "auth")
    response = forged_login(rp.begin_login(), key, der, nonce=b"\x00" * 32)
    assert rp.complete_login(response).reason == AuthReason.CHALLENGE_MISMATCH
    challenge = rp.begin_ekyc("transfer 10,000 yen")
    forged = replace(challenge, transaction_text="transfer 1,000,000 yen")
    response = answer_ekyc(forged, alice, pin=lambda: SIGN_PIN)
    assert rp.complete_ekyc(response).reason == "challenge-mismatch"


# --------------------------------------------------------------------------- signatures and keys


def test_bad_login_signature(rp, home):
    key, der = credentials(home, "alice", "auth")
    response = forged_login(rp.begin_login(), key, der)
    flipped = bytes([response.signature[0] ^ 1]) + response.signature[1:]
    result = rp.complete_login(replace(response, signature=flipped))
    assert result.reason == AuthReason.BAD_SIGNATURE
    assert result.certificate is not None  # the serial is known (and logged), nothing else
    # bob's certificate with alice's signature
    _, bob_der = credentials(home, "bob", "auth")
    response = forged_login(rp.begin_login(), key, bob_der)
    assert rp.complete_login(response).reason == "bad-signature"


def test_bad_ekyc_cms(rp, alice):
    _, response = ekyc(rp, alice)
    cms = bytearray(response.cms)
    cms[-5] ^= 0xFF  # inside the signature value
    assert rp.complete_ekyc(replace(response, cms=bytes(cms))).reason == "bad-signature"


def test_login_with_the_signing_key_is_wrong_key_kind(rp, home, net):
    key, der = credentials(home, "alice", "sign")
    response = forged_login(rp.begin_login(), key, der)
    calls = net.calls
    result = rp.complete_login(response)
    assert result.reason == AuthReason.WRONG_KEY_KIND == "wrong-key-kind"
    assert result.validation.reason == "wrong-kind" and net.calls == calls  # no OCSP asked


def test_ekyc_with_the_auth_key_is_wrong_key_kind(rp, home, alice):
    """A CMS made with the user-authentication key (4-digit PIN) proves no identity."""
    challenge = rp.begin_ekyc()
    data = ClientData.for_challenge(challenge).encode()
    signer = CardSigner.from_session(alice, "auth", pin=lambda: AUTH_PIN)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "d"
        path.write_bytes(data)
        cms = sign_file(path, None, signer).output.read_bytes()
    result = rp.complete_ekyc(EkycResponse(challenge.id, data, cms))
    assert result.reason == "wrong-key-kind"


# --------------------------------------------------------------------------- certificates


def test_lost_card_is_revoked_with_the_revocation_server(home, clock, links, alice, caplog):
    """jpki.lifecycle.lost, then the revocation server under uvicorn answers OCSP."""
    with served_revocation(home, clock) as fetch:
        rp = RelyingParty(RP_ID, make_validator(home, clock, fetch), MemoryStore(), clock,
                          account_resolver=FollowPredecessors(links.predecessor))
        _, response = login(rp, alice)
        assert rp.complete_login(response).ok
        lost(Home(home), "alice", clock=clock)
        rp.validator.invalidate()  # the good OCSP answer above would stand until its nextUpdate
        caplog.set_level(logging.INFO, logger="jpki.auth")
        _, response = login(rp, alice)
        result = rp.complete_login(response)
        assert result.reason == AuthReason.REVOKED == "revoked"
        assert result.validation.revocation_reason == "keyCompromise"
        _, answer = ekyc(rp, alice)
        assert rp.complete_ekyc(answer).reason == "revoked"
        assert "reason=revoked" in caplog.text
        assert_no_personal_data(caplog.text, home)


def test_a_cached_good_answer_is_trusted_only_up_to_revocation_max_age(home, clock, net, alice):
    rp = RelyingParty(RP_ID, make_validator(home, clock, net), MemoryStore(), clock,
                      revocation_max_age=dt.timedelta(minutes=1))
    _, response = login(rp, alice)
    assert rp.complete_login(response).ok
    lost(Home(home), "alice", clock=clock)
    _, response = login(rp, alice)
    result = rp.complete_login(response)
    assert result.ok and result.validation.revocation.cached  # the good answer is seconds old
    clock.advance(seconds=61)
    _, response = login(rp, alice)
    assert rp.complete_login(response).reason == "revoked"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("max_age", [dt.timedelta(0), None], ids=["max-age-0", "default-max-age"])
@pytest.mark.parametrize("failure", ["http-503", "unreachable"])
def test_lost_card_is_refused_while_its_ocsp_responder_is_down(home, clock, alice, failure, max_age):
    """The CRL alone speaks while OCSP fails: a cached CRL must not outlive the max age, or a
    lost card keeps logging in until the CRL's nextUpdate (a day)."""
    with served_revocation_with_outage(home, clock) as (fetch, outage):
        if failure == "http-503":
            outage.status = 503
            use = fetch
        else:
            dead = HttpFetcher(timeout=2, connect_timeout=1)
            port = _closed_port()

            def use(url, data=None, content_type=None):
                if "/ocsp/" in url:
                    return dead(url.replace(CA_BASE, f"http://127.0.0.1:{port}"), data, content_type)
                return fetch(url, data, content_type)

        options = {} if max_age is None else {"revocation_max_age": max_age}
        rp = RelyingParty(RP_ID, make_validator(home, clock, use), MemoryStore(), clock, **options)
        _, response = login(rp, alice)
        before = rp.complete_login(response)
        assert before.ok and before.validation.revocation.method == "crl"
        assert before.validation.warnings[0].startswith("ocsp-fallback:")
        lost(Home(home), "alice", clock=clock)
        if max_age is None:
            _, response = login(rp, alice)  # within the max age the CRL fetched above still speaks
            assert rp.complete_login(response).validation.revocation.cached
            clock.advance(seconds=DEFAULT_REVOCATION_MAX_AGE.total_seconds() + 1)
        _, response = login(rp, alice)
        result = rp.complete_login(response)
        assert result.reason == AuthReason.REVOKED
        assert result.validation.revocation.method == "crl" and not result.validation.revocation.cached
        assert result.validation.revocation_reason == "keyCompromise"
        _, answer = ekyc(rp, alice)  # the signing certificate is on the signing CA's CRL
        assert rp.complete_ekyc(answer).reason == "revoked"
        if failure == "http-503":
            assert outage.refused >= 2
        else:
            dead.close()


def test_revocation_unavailable_fails_closed(home, clock, alice):
    def down(url, data=None, content_type=None):
        raise OSError("connection refused")

    rp = RelyingParty(RP_ID, make_validator(home, clock, down), MemoryStore(), clock)
    _, response = login(rp, alice)
    assert rp.complete_login(response).reason == AuthReason.REVOCATION_UNAVAILABLE


def test_expired_certificate_with_the_clock_far_ahead(home, net, alice):
    ahead = FixedClock(dt.datetime(2040, 1, 1, tzinfo=dt.UTC))
    rp = RelyingParty(RP_ID, make_validator(home, ahead, net), MemoryStore(), ahead)
    _, response = login(rp, alice)
    assert rp.complete_login(response).reason == AuthReason.EXPIRED_CERTIFICATE == "expired-certificate"


def test_certificate_not_yet_valid(home, net, alice):
    before = FixedClock(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    rp = RelyingParty(RP_ID, make_validator(home, before, net), MemoryStore(), before)
    _, response = login(rp, alice)
    assert rp.complete_login(response).reason == "certificate-not-yet-valid"


def test_untrusted_issuer(home, clock, net, tmp_path, alice):
    """A relying party that trusts another CA (and the J-LIS roots) refuses alice."""
    other = TestCA.init(tmp_path / "other-ca", clock=clock)
    other.close()
    validator = Validator(TrustStore.jlis() + TrustStore.from_ca_dir(tmp_path / "other-ca"),
                          clock=clock, fetch=net)
    rp = RelyingParty(RP_ID, validator, MemoryStore(), clock)
    _, response = login(rp, alice)
    assert rp.complete_login(response).reason == AuthReason.UNTRUSTED == "untrusted"
    _, answer = ekyc(rp, alice)
    assert rp.complete_ekyc(answer).reason == "untrusted"


def test_renewal_keeps_the_account(rp, home, clock, alice):
    old_key, old_der = credentials(home, "alice", "auth")
    _, response = login(rp, alice)
    first = rp.complete_login(response)
    assert first.ok
    renew(Home(home), "alice", clock=clock)
    rp.validator.invalidate()
    with card_session(home, "alice") as renewed:  # the card's files changed: open it again
        _, response = login(rp, renewed)
        second = rp.complete_login(response)
    assert second.ok, second.message
    assert second.certificate.serial != first.certificate.serial
    assert second.account.key == first.account.key and second.account.renewals == 1
    # without the links the renewed card would be a stranger
    plain = RelyingParty(RP_ID, rp.validator, MemoryStore(), clock, account_resolver=NoLinks())
    with card_session(home, "alice") as renewed:
        _, response = login(plain, renewed)
        assert plain.complete_login(response).account.key != first.account.key
    # the old certificate is superseded: an answer made with the old key is refused
    assert rp.complete_login(forged_login(rp.begin_login(), old_key, old_der)).reason == "revoked"


# --------------------------------------------------------------------------- malformed


@pytest.mark.parametrize("body", [
    b"", b"{", b"[]", b'"x"', b"\xff\xfe", b'{"challenge_id": "x"}', b"null", b"NaN",
    b'{"v":1,"challenge_id":"AAAAAAAAAAAAAAAAAAAAAAAA","client_data":"!!","certificate":"","signature":""}',
    b'{"v":1,"challenge_id":"AAAAAAAAAAAAAAAAAAAAAAAA","client_data":"AA==","certificate":"","signature":""}',
    b'{"v":2,"challenge_id":"AAAAAAAAAAAAAAAAAAAAAAAA","client_data":"","certificate":"","signature":""}',
    b'{"v":1,"challenge_id":"AAAAAAAAAAAAAAAAAAAAAAAA","client_data":"","certificate":"","signature":"","x":1}',
    b'{"challenge_id":"A","challenge_id":"B"}',
])
def test_malformed_login_bodies(rp, body, caplog):
    caplog.set_level(logging.INFO, logger="jpki.auth")
    result = rp.complete_login(body)
    assert result.reason == AuthReason.MALFORMED == "malformed"
    assert not result.ok and "login refused: reason=malformed" in caplog.text


def test_malformed_certificate_and_cms(rp, home, alice):
    key, der = credentials(home, "alice", "auth")
    response = forged_login(rp.begin_login(), key, der)
    assert rp.complete_login(replace(response, certificate=b"\x30\x03\x02\x01\x01")).reason == "malformed"
    challenge = rp.begin_ekyc()
    data = ClientData.for_challenge(challenge).encode()
    doc = {"v": 1, "challenge_id": challenge.id, "client_data": b64url_encode(data), "cms": "MAA"}
    assert rp.complete_ekyc(doc).reason == "malformed"


def test_transaction_text_rules(rp):
    assert rp.begin_ekyc("ok\tand\nnewlines").transaction_text == "ok\tand\nnewlines"
    for bad in ("\x00", "a" * 2001, "\udc80", 5):
        with pytest.raises(UsageError):
            rp.begin_ekyc(bad)  # type: ignore[arg-type]


def test_challenge_tags(rp, alice):
    tagged = rp.begin_login(tag="page")
    assert tagged.id.startswith("page-") and len(tagged.id) > 30
    response = answer_login(tagged, alice, pin=lambda: AUTH_PIN)
    assert rp.complete_login(response).ok
    assert rp.begin_ekyc("x", tag="A1").id.startswith("A1-")
    for bad in ("", "page-", "x" * 17, "ページ"):
        with pytest.raises(UsageError):
            rp.begin_login(tag=bad)


def test_the_relying_party_needs_sane_arguments(rp):
    with pytest.raises(UsageError):
        RelyingParty("", rp.validator)
    with pytest.raises(UsageError):
        RelyingParty(RP_ID, object())  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        RelyingParty(RP_ID, rp.validator, challenge_ttl=dt.timedelta(0))
    default = RelyingParty(RP_ID, rp.validator)
    assert isinstance(default.store, MemoryStore) and default.clock is rp.validator.clock


def test_a_broken_validator_fails_closed(rp, alice, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(rp.validator, "validate", explode)
    _, response = login(rp, alice)
    assert rp.complete_login(response).reason == AuthReason.INTERNAL_ERROR


def test_the_store_failing_is_store_unavailable(rp, alice, home):
    _, response = login(rp, alice)
    rp.store.close()
    assert rp.complete_login(response).reason == AuthReason.STORE_UNAVAILABLE


def test_expired_challenges_are_purged_from_begin(rp, clock):
    for _ in range(5):
        rp.begin_login()
    assert len(rp.store._items) == 5  # type: ignore[attr-defined]
    clock.advance(minutes=30)
    rp.begin_login()
    assert len(rp.store._items) == 1  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- shared stores


def test_both_flows_with_the_sqlite_store(home, clock, net, tmp_path, alice):
    one = RelyingParty(RP_ID, make_validator(home, clock, net), SqliteStore(tmp_path / "c.db"), clock)
    two = RelyingParty(RP_ID, one.validator, SqliteStore(tmp_path / "c.db"), clock)  # another process
    _, response = login(one, alice)
    assert two.complete_login(response).ok
    assert one.complete_login(response).reason == "replayed"
    _, answer = ekyc(two, alice)
    assert one.complete_ekyc(answer).ok


def test_both_flows_with_the_redis_store(home, clock, net, alice, redis_url):
    prefix = f"test:{id(alice)}:"
    one = RelyingParty(RP_ID, make_validator(home, clock, net), RedisStore(redis_url, prefix=prefix), clock)
    two = RelyingParty(RP_ID, one.validator, RedisStore(redis_url, prefix=prefix), clock)
    try:
        _, response = login(one, alice)
        assert two.complete_login(response).ok
        assert one.complete_login(response).reason == "replayed"
        assert two.complete_login(response).reason == "replayed"
        _, answer = ekyc(one, alice)
        assert two.complete_ekyc(answer).ok
        _, response = login(one, alice)
        clock.advance(minutes=5)
        assert two.complete_login(response).reason == "expired"
    finally:
        one.store.close()
        two.store.close()

