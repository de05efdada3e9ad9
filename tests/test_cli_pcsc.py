"""The CLI as real processes against alice's card served through pcscd + vpcd."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

pytestmark = pytest.mark.pcsc


def jpki(home, reader, *args, input=None, env=None):
    return subprocess.run([sys.executable, "-m", "jpki", "--home", str(home), "--card", f"pcsc:{reader}", *args],
                          capture_output=True, text=input is None or isinstance(input, str), input=input,
                          timeout=120, env={**os.environ, **(env or {})})


def test_info_and_pin_status(served_card, home):
    r = jpki(home, served_card, "--json", "info")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["card_type"] == "my-number-card" and doc["atr"] == "3BE000FF8131FE4514"
    assert served_card in doc["reader"]
    assert doc["pins"] == {"auth": 3, "sign": 5, "card": 3}


def test_spending_a_try_on_a_reader_needs_force_when_not_interactive(served_card, home):
    r = jpki(home, served_card, "pin", "verify", "auth", "--pin", "1234")
    assert r.returncode == 2 and "--force" in r.stderr
    r = jpki(home, served_card, "--force", "pin", "verify", "auth", "--pin", "1234")
    assert r.returncode == 0, r.stderr


def test_wrong_pin_exit_4_and_tries_left(served_card, home):
    r = jpki(home, served_card, "--force", "--json", "pin", "verify", "auth", "--pin", "9999")
    assert r.returncode == 4
    assert json.loads(r.stdout)["tries_left"] == 2
    r = jpki(home, served_card, "--json", "pin", "status")
    assert json.loads(r.stdout)["auth"]["tries_left"] == 2


def test_mynumber_masked_and_revealed(served_card, home):
    number = json.loads((home / "holders" / "alice.json").read_text())["persona"]["my_number"]
    r = jpki(home, served_card, "--force", "mynumber", env={"JPKI_CARD_PIN": "1234"})
    assert r.returncode == 0, r.stderr
    assert number not in r.stdout and "****" in r.stdout
    r = jpki(home, served_card, "--force", "mynumber", "--reveal", input="1234\n")
    assert r.stdout.strip() == number


def test_pkey_sign_and_cert_read(served_card, home, tmp_path):
    data = tmp_path / "doc.txt"
    data.write_bytes(b"signed over PC/SC\n")
    sig = tmp_path / "doc.sig"
    r = jpki(home, served_card, "--force", "pkey", "sign", "sign", str(data), "-o", str(sig), "--pin", "abc123")
    assert r.returncode == 0, r.stderr
    der = tmp_path / "sign.der"
    r = jpki(home, served_card, "--force", "cert", "read", "sign", "-o", str(der), "--pin", "ABC123")
    assert r.returncode == 0, r.stderr
    cert = x509.load_der_x509_certificate(der.read_bytes())
    cert.public_key().verify(sig.read_bytes(), data.read_bytes(), padding.PKCS1v15(), hashes.SHA256())


def test_unknown_reader_exits_5(served_card, home):
    r = jpki(home, "No Such Reader 42", "info")
    assert r.returncode == 5
    assert "No Such Reader 42" in r.stderr or "reader" in r.stderr.lower()


def test_exclusive_access(served_card, home):
    r = jpki(home, served_card, "--exclusive", "--json", "pin", "status")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["sign"]["tries_left"] == 5
