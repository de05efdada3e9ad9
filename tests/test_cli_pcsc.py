"""The CLI as real processes (``cli.process``) against alice's card served through pcscd + vpcd."""

from __future__ import annotations

import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

pytestmark = pytest.mark.pcsc


@pytest.fixture
def reader(cli, served_card):
    """``jpki --card pcsc:READER`` (alice's card served through vpcd), run as processes."""
    return cli.bind(card=f"pcsc:{served_card}")


def test_info_and_pin_status(reader, served_card):
    r = reader.process("--json", "info")
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert doc["card_type"] == "my-number-card" and doc["atr"] == "3BE000FF8131FE4514"
    assert served_card in doc["reader"]
    assert doc["pins"] == {"auth": 3, "sign": 5, "card": 3}


def test_spending_a_try_on_a_reader_needs_force_when_not_interactive(reader):
    r = reader.process("pin", "verify", "auth", "--pin", "1234")
    assert r.exit_code == 2 and "--force" in r.stderr
    r = reader.process("--force", "pin", "verify", "auth", "--pin", "1234")
    assert r.exit_code == 0, r.stderr


def test_wrong_pin_exit_4_and_tries_left(reader):
    r = reader.process("--force", "--json", "pin", "verify", "auth", "--pin", "9999")
    assert r.exit_code == 4
    assert r.json()["tries_left"] == 2
    r = reader.process("--json", "pin", "status")
    assert r.json()["auth"]["tries_left"] == 2


def test_mynumber_masked_and_revealed(reader, home):
    number = json.loads((home / "holders" / "alice.json").read_text())["persona"]["my_number"]
    r = reader.process("--force", "mynumber", env={"JPKI_CARD_PIN": "1234"})
    assert r.exit_code == 0, r.stderr
    assert number not in r.stdout and "****" in r.stdout
    r = reader.process("--force", "mynumber", "--reveal", input="1234\n")
    assert r.stdout.strip() == number


def test_pkey_sign_and_cert_read(reader, tmp_path):
    data = tmp_path / "doc.txt"
    data.write_bytes(b"signed over PC/SC\n")
    sig = tmp_path / "doc.sig"
    r = reader.process("--force", "pkey", "sign", "sign", str(data), "-o", str(sig), "--pin", "abc123")
    assert r.exit_code == 0, r.stderr
    der = tmp_path / "sign.der"
    r = reader.process("--force", "cert", "read", "sign", "-o", str(der), "--pin", "ABC123")
    assert r.exit_code == 0, r.stderr
    cert = x509.load_der_x509_certificate(der.read_bytes())
    cert.public_key().verify(sig.read_bytes(), data.read_bytes(), padding.PKCS1v15(), hashes.SHA256())


def test_unknown_reader_exits_5(reader):
    r = reader.process("info", card="pcsc:No Such Reader 42")
    assert r.exit_code == 5
    assert "No Such Reader 42" in r.stderr or "reader" in r.stderr.lower()


def test_exclusive_access(reader):
    r = reader.process("--exclusive", "--json", "pin", "status")
    assert r.exit_code == 0, r.stderr
    assert r.json()["sign"]["tries_left"] == 5
