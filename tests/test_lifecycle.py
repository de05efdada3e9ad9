"""Card life events with the real revocation rules (spec §9), and the CA commands of the CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from jpki import lifecycle
from jpki.certinfo import signing_identity
from jpki.errors import UsageError
from jpki.pki import TestCA
from jpki.provision import Home, read_holder
from jpki.session import CardInfoSession, JpkiSession
from jpki.transport import open_transport

NEW_ADDRESS = "大阪府大阪市北区梅田１丁目１番３号"


def records(home, card):
    with TestCA.open(home / "ca") as ca:
        return {r.serial_number: r for r in ca.db.list(card=card)}


def card_certs(home, name="alice"):
    with open_transport(f"emu:{name}", home=home) as t:
        j = JpkiSession(t)
        j.verify("sign", "ABC123")
        return (x509.load_der_x509_certificate(j.read_certificate("auth")),
                x509.load_der_x509_certificate(j.read_certificate("sign")))


def sign_with_card(home, key, message, name="alice"):
    with open_transport(f"emu:{name}", home=home) as t:
        j = JpkiSession(t)
        j.verify(key, "1234" if key == "auth" else "ABC123")
        return j.sign_digest(key, "sha256", hashlib.sha256(message).digest())


def test_move_revokes_only_the_signing_certificate(home, clock):
    before = read_holder(Home(home), "alice")
    old_auth, old_sign = card_certs(home)
    event = lifecycle.move(Home(home), "alice", address=NEW_ADDRESS, clock=clock)
    assert event.revoked == ((before.sign_serial, "affiliationChanged"),)
    rows = records(home, "alice")
    assert rows[before.sign_serial].status == "revoked"
    assert rows[before.sign_serial].reason == "affiliationChanged"
    assert rows[before.auth_serial].status == "good", "a move does not revoke the auth certificate"
    auth, sign = card_certs(home)
    assert auth == old_auth and sign != old_sign
    assert sign.serial_number == event.issued[0][1] == read_holder(Home(home), "alice").sign_serial
    assert signing_identity(sign).address == NEW_ADDRESS
    assert sign.subject.get_attributes_for_oid(x509.NameOID.LOCALITY_NAME)[0].value == "Osaka"
    # the card now signs with the new key
    msg = b"after the move"
    sig = sign_with_card(home, "sign", msg)
    sign.public_key().verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        old_sign.public_key().verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())
    # and the card-info AP says the same as the certificate
    with open_transport("emu:alice", home=home) as t:
        info = CardInfoSession(t)
        info.verify("card", "1234")
        assert info.read_basic_info().address == NEW_ADDRESS
        assert info.read_my_number() == before.persona.my_number


def test_name_change(home, clock):
    lifecycle.move(Home(home), "alice", holder_name="佐藤　花子", clock=clock)
    _, sign = card_certs(home)
    assert signing_identity(sign).name == "佐藤　花子"
    assert read_holder(Home(home), "alice").persona.name == "佐藤　花子"


def test_move_needs_a_change(home, clock):
    with pytest.raises(UsageError):
        lifecycle.move(Home(home), "alice", clock=clock)


def test_lost_revokes_both_and_blocks_further_events(home, clock):
    h = read_holder(Home(home), "alice")
    event = lifecycle.lost(Home(home), "alice", clock=clock)
    assert set(event.revoked) == {(h.auth_serial, "keyCompromise"), (h.sign_serial, "keyCompromise")}
    rows = records(home, "alice")
    assert {rows[h.auth_serial].status, rows[h.sign_serial].status} == {"revoked"}
    assert read_holder(Home(home), "alice").status == "lost"
    for action in (lifecycle.lost, lifecycle.renew):
        with pytest.raises(UsageError, match="lost"):
            action(Home(home), "alice", clock=clock)
    assert records(home, "bob")[read_holder(Home(home), "bob").auth_serial].status == "good"


def test_lost_after_a_revocation_by_the_ca_revokes_the_rest(home, clock):
    """`jpki ca revoke` of the signing certificate (death, emigration…), then the card is lost:
    the auth certificate is revoked, the signing one keeps its first reason (was: an error)."""
    h = read_holder(Home(home), "alice")
    with TestCA.open(home / "ca", clock=clock) as ca:
        ca.revoke(h.sign_serial, x509.ReasonFlags.cessation_of_operation)
    clock.advance(minutes=5)
    event = lifecycle.lost(Home(home), "alice", clock=clock)
    assert event.revoked == ((h.auth_serial, "keyCompromise"),)
    rows = records(home, "alice")
    assert rows[h.auth_serial].reason == "keyCompromise"
    assert rows[h.sign_serial].reason == "cessationOfOperation"
    assert read_holder(Home(home), "alice").status == "lost"


def test_renew_supersedes_and_links(home, clock):
    h = read_holder(Home(home), "alice")
    clock.advance(days=30)
    event = lifecycle.renew(Home(home), "alice", clock=clock)
    new = dict(event.issued)
    rows = records(home, "alice")
    for old in (h.auth_serial, h.sign_serial):
        assert rows[old].status == "revoked" and rows[old].reason == "superseded"
    assert rows[new["auth"]].status == rows[new["sign"]].status == "good"
    with TestCA.open(home / "ca") as ca:
        assert [int(s, 16) for s in ca.db.successors(h.auth_serial)] == [new["auth"]]
    auth, sign = card_certs(home)
    assert (auth.serial_number, sign.serial_number) == (new["auth"], new["sign"])
    msg = b"renewed"
    auth.public_key().verify(sign_with_card(home, "auth", msg), msg, padding.PKCS1v15(), hashes.SHA256())


def test_cli_revoke_list_and_crl(cli, home, tmp_path):
    h = read_holder(Home(home), "bob")
    r = cli("--json", "ca", "revoke", f"{h.auth_serial:X}", "--reason", "cessationOfOperation")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["reason"] == "cessationOfOperation"
    r = cli("--json", "ca", "revoke", f"{h.auth_serial:X}")
    assert r.exit_code != 0  # already revoked
    listed = json.loads(cli("--json", "ca", "list", "--revoked").stdout)
    assert [int(d["serial"], 16) for d in listed] == [h.auth_serial]
    out = tmp_path / "auth.crl"
    r = cli("--json", "ca", "crl", "--kind", "auth", "-o", str(out))
    assert r.exit_code == 0, r.output
    crl = x509.load_der_x509_crl(out.read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(h.auth_serial)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason \
        is x509.ReasonFlags.cessation_of_operation
    v = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(out), "-noout",
                        "-CAfile", str(home / "ca" / "auth_ca.pem")], capture_output=True, text=True)
    assert "verify OK" in v.stderr + v.stdout, v.stderr


def test_cli_life_events(cli):
    r = cli("--json", "card", "move", "alice", "--address", NEW_ADDRESS)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["revoked"][0]["reason"] == "affiliationChanged"
    r = cli("--json", "card", "lost", "bob")
    assert r.exit_code == 0 and len(json.loads(r.stdout)["revoked"]) == 2
    r = cli("card", "renew", "bob")
    assert r.exit_code == 2 and "lost" in r.output
    r = cli("card", "renew", "alice")
    assert r.exit_code == 0 and "superseded" in r.stdout
    r = cli("card", "move", "nobody", "--address", NEW_ADDRESS)
    assert r.exit_code == 5
