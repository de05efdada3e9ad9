"""Helpers for the card-emulator tests: alice's card made again with another profile.

Making a card costs no key generation here: the keys, certificates and holder data are alice's
(of a provisioned ``home``), so only the card files are written.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from card_emulator import CardProfile, MyNumberCard
from card_emulator.provision import CardData, create_card
from jpki.pki import TestCA
from jpki.transport.emu import EmulatorTransport

AUTH_PIN, SIGN_PIN, CARD_PIN = "1234", "ABC123", "1234"


def holder(home: Path, name: str = "alice") -> dict:
    return json.loads((home / "holders" / f"{name}.json").read_text(encoding="utf-8"))


def alice_card_data(home: Path, **changes) -> CardData:
    """Everything alice's card holds (keys, certificates, holder, PINs), from ``home``."""
    info = holder(home)
    card_dir = home / "cards" / "alice"
    keys = {k: serialization.load_pem_private_key((card_dir / "keys" / f"{k}.pem").read_bytes(), None,
                                                  unsafe_skip_rsa_key_validation=True)
            for k in ("auth", "sign")}
    ca = TestCA.open(home / "ca")
    try:
        der = serialization.Encoding.DER
        certs = {"auth": ca.db.get(int(info["auth_serial"], 16)).der,
                 "sign": ca.db.get(int(info["sign_serial"], 16)).der,
                 "auth_ca": ca.auth_ca_cert.public_bytes(der), "sign_ca": ca.sign_ca_cert.public_bytes(der)}
        issuer_key = ca.sign_ca_key
    finally:
        ca.close()
    p = info["persona"]
    fields = dict(auth_key=keys["auth"], sign_key=keys["sign"], auth_cert=certs["auth"],
                  sign_cert=certs["sign"], auth_ca_cert=certs["auth_ca"], sign_ca_cert=certs["sign_ca"],
                  my_number=p["my_number"], name=p["name"], address=p["address"],
                  birth_date=dt.date.fromisoformat(p["birth_date"]), sex_code="2", auth_pin=AUTH_PIN,
                  sign_pin=SIGN_PIN, card_pin=CARD_PIN, security_code=info["security_code"],
                  card_expiry=dt.date.fromisoformat(info["card_expiry"]), issuer_key=issuer_key)
    fields.update(changes)
    return CardData(**fields)


def make_card(home: Path, dest: Path, profile: CardProfile, **changes) -> MyNumberCard:
    """alice's card again, in ``dest``, with ``profile``; opened and powered on."""
    create_card(dest, alice_card_data(home, **changes), profile)
    card = MyNumberCard.open(dest)
    card.power_on()
    return card


def transport(card: MyNumberCard, name: str = "alice") -> EmulatorTransport:
    """The host's in-process transport to ``card`` (powers it on: a clear security state)."""
    return EmulatorTransport(Path(name), card=card)
