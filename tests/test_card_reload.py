"""A card that stays open (served through vpcd) picks up what the issuer rewrote, at the next power-on."""

from __future__ import annotations

import json

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from card_emulator.provision import replace_credentials

SELECT_JPKI = bytes.fromhex("00A4040C0AD392F000260100000001")


def _read_sign_cert(card) -> bytes:
    t = card.transmit
    assert t(SELECT_JPKI) == b"\x90\x00"
    assert t(bytes.fromhex("00A4020C02001B")) == b"\x90\x00"
    assert t(bytes.fromhex("0020008006") + b"ABC123") == b"\x90\x00"
    assert t(bytes.fromhex("00A4020C020001")) == b"\x90\x00"
    head = t(bytes.fromhex("00B0000004"))
    total = 4 + int.from_bytes(head[2:4], "big")
    out = bytearray()
    while len(out) < total:
        r = t(bytes([0, 0xB0, len(out) >> 8, len(out) & 0xFF, min(256, total - len(out)) % 256]))
        assert r[-2:] == b"\x90\x00"
        out += r[:-2]
    return bytes(out[:total])


def test_open_card_sees_new_sign_credentials_after_power_cycle(emu_card, card_dir, home):
    before = _read_sign_cert(emu_card)
    # The "municipality" writes a new key and certificate while the card stays open elsewhere.
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    old_cert = x509.load_der_x509_certificate(before)
    new_cert = (x509.CertificateBuilder().subject_name(old_cert.subject).issuer_name(old_cert.issuer)
                .public_key(new_key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(old_cert.not_valid_before_utc).not_valid_after(old_cert.not_valid_after_utc)
                .sign(new_key, hashes.SHA256()))
    old_key_file = card_dir / json.loads((card_dir / "card.json").read_text())["keys"]["sign"]
    replace_credentials(card_dir, {"sign": (new_key, new_cert.public_bytes(serialization.Encoding.DER))})
    assert not old_key_file.exists(), "the old signing key is gone from the card"
    new_key_file = card_dir / json.loads((card_dir / "card.json").read_text())["keys"]["sign"]
    assert new_key_file.stat().st_mode & 0o777 == 0o600
    assert _read_sign_cert(emu_card) == before  # no power cycle yet: same content
    emu_card.power_off()
    emu_card.power_on()
    assert _read_sign_cert(emu_card) == new_cert.public_bytes(serialization.Encoding.DER)


def test_open_removes_stale_temporaries_but_not_fresh_ones(card_dir):
    import os
    import time

    from card_emulator import MyNumberCard

    stale = card_dir / ".state.json.abc.tmp"
    fresh = card_dir / ".state.json.def.tmp"
    stale.write_bytes(b"{partial")
    fresh.write_bytes(b"{partial")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    MyNumberCard.open(card_dir).close()
    assert not stale.exists()
    assert fresh.exists(), "a temporary file that may belong to a live writer is kept"
