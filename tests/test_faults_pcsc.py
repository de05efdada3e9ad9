"""Faults on a card served through pcscd + vpcd by ``jpki emulator serve``, set with ``jpki emulator
fault``: what a PC/SC client (jpki's CLI over ``pcsc:READER``) sees, and the card afterwards."""

from __future__ import annotations

import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from jpki.errors import TransportError
from jpki.testing.pcsc import reader_has_card, reader_name, vpcd_slot, wait_for
from jpki.transport.pcsc import PcscTransport

pytestmark = pytest.mark.pcsc


def card_answers(reader: str) -> bool:
    """pcscd has powered the card up and it answers (right after an insertion it may not yet)."""
    try:
        with PcscTransport(reader) as t:
            return t.transmit(bytes.fromhex("00A4040C0AD392F000260100000001")) == b"\x90\x00"
    except TransportError:
        return False


@pytest.fixture
def served(cli, home, pcscd):
    """alice's card served by ``jpki emulator serve`` (a process) in a free vpcd slot."""
    with vpcd_slot() as port:
        reader = reader_name(port)
        server = cli.spawn("emulator", "serve", "alice", "--vpcd", f"127.0.0.1:{port}",
                           stderr=subprocess.PIPE)
        try:
            assert wait_for(lambda: (home / "run" / "alice.pid").exists() and reader_has_card(reader),
                            timeout=15), f"{reader} shows no card"
            yield reader, server
        finally:
            server.terminate()
            server.communicate(timeout=10)
            wait_for(lambda: not reader_has_card(reader), timeout=5)


def test_served_card_leaves_mid_signature_and_is_torn_mid_verify(cli, served, tmp_path):
    reader, server = served
    host = cli.bind(card=f"pcsc:{reader}")
    doc, sig = tmp_path / "doc.txt", tmp_path / "doc.sig"
    doc.write_bytes(b"signed over PC/SC\n")

    assert cli("emulator", "fault", "alice", "remove-on-signature").exit_code == 0
    r = host("--json", "--force", "pkey", "sign", "sign", str(doc), "-o", str(sig), "--pin", "ABC123")
    assert r.exit_code == 5, r
    assert r.json()["error"] == "card_removed" and reader in r.json()["message"]
    assert wait_for(lambda: not reader_has_card(reader))  # pcscd shows an empty reader
    listing = cli("--json", "emulator", "fault", "alice", "list").json()
    assert listing["present"] is False and listing["faults"] == []
    assert [f["kind"] for f in listing["fired"]] == ["remove_on_signature"]

    assert cli("emulator", "insert", "alice").exit_code == 0
    assert wait_for(lambda: card_answers(reader), timeout=10)
    r = host("--force", "pkey", "sign", "sign", str(doc), "-o", str(sig), "--pin", "ABC123")
    assert r.exit_code == 0, r
    der = tmp_path / "sign.der"
    assert host("--force", "cert", "read", "sign", "-o", str(der), "--pin", "ABC123").exit_code == 0
    x509.load_der_x509_certificate(der.read_bytes()).public_key().verify(
        sig.read_bytes(), doc.read_bytes(), padding.PKCS1v15(), hashes.SHA256())

    assert cli("emulator", "fault", "alice", "tear", "verify").exit_code == 0
    r = host("--json", "--force", "pin", "verify", "auth", "--pin", "1234")
    assert r.exit_code == 5 and r.json()["error"] == "card_removed", r
    assert cli("emulator", "insert", "alice").exit_code == 0
    assert wait_for(lambda: card_answers(reader), timeout=10)
    assert host("--json", "pin", "status").json()["auth"]["tries_left"] == 2  # spent before the tear
    assert host("--force", "pin", "verify", "auth", "--pin", "1234").exit_code == 0
    assert host("--json", "pin", "status").json()["auth"]["tries_left"] == 3

    server.terminate()
    _, log = server.communicate(timeout=10)
    assert "fault remove_on_signature#1: the card left the reader before answering" in log
    assert "fault tear#2: power lost during VERIFY, after the card's write" in log
