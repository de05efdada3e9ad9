"""Card life events, as the municipality handles them (spec §9), on emulated cards.

- **move / change of name** (any change of the basic 4 info): the signing certificate is
  revoked (affiliationChanged), a new signing key and certificate are written to the card and the
  card-info AP is updated; the user-authentication certificate stays valid.
- **lost card**: both certificates are revoked (keyCompromise).
- **renewal**: new keys and certificates for both; the old ones are revoked (superseded) and the
  old user-authentication certificate is linked to the new one (like the platform's linkage
  service), so that a relying party keeps the holder's account.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .clock import JST, Clock
from .errors import UsageError
from .home import Home
from .provision import Holder, new_key, read_holder, romanised_prefecture, write_holder
from .transport import emu

DER = serialization.Encoding.DER


@dataclass(frozen=True)
class LifeEvent:
    """What an event did: the serials revoked (with reason) and issued."""

    card: str
    event: str
    revoked: tuple[tuple[int, str], ...]
    issued: tuple[tuple[str, int], ...]

    def to_json(self) -> dict[str, Any]:
        return {"card": self.card, "event": self.event,
                "revoked": [{"serial": f"{s:X}", "reason": r} for s, r in self.revoked],
                "issued": [{"kind": k, "serial": f"{s:X}"} for k, s in self.issued]}


def _active(home: Home, name: str) -> Holder:
    holder = read_holder(home, name)
    if holder.status != "active":
        raise UsageError(f"card {name!r} is {holder.status}: its certificates are revoked")
    return holder


def move(home: Home, name: str, *, address: str | None = None, holder_name: str | None = None,
         prefecture: str | None = None, municipality: str | None = None,
         clock: Clock | None = None, key: rsa.RSAPrivateKey | None = None) -> LifeEvent:
    """A change of the basic 4 info: new signing certificate, card-info AP updated.

    ``key`` is the new signing key (default: a fresh one; tests hand one from their key pool)."""
    if address is None and holder_name is None:
        raise UsageError("a move needs a new address or a new name")
    clock = clock or home.clock
    holder = _active(home, name)
    old = holder.persona
    try:
        persona = old.replace(
            address=address if address is not None else old.address,
            name=holder_name if holder_name is not None else old.name,
            prefecture=prefecture or (romanised_prefecture(address) if address else old.prefecture),
            municipality=municipality or ("Unknown" if address and not municipality else old.municipality))
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    with home.open_ca(clock) as ca:
        now = clock.now()
        ca.revoke(holder.sign_serial, x509.ReasonFlags.affiliation_changed, revoked_at=now)
        key = key or new_key()
        cert = ca.issue_sign_cert(key.public_key(), persona, card_id=name, issued_at=now,
                                  card_expiry=holder.card_expiry)
        directory = home.card_dir(name)
        emu.replace_emulated_credentials(directory, {"sign": (key, cert.public_bytes(DER))})
        emu.update_emulated_basic_info(directory, name=persona.name, address=persona.address,
                                       birth_date=persona.birth_date, sex_code=persona.sex.card_code,
                                       issuer_key=ca.sign_ca_key)
    write_holder(home, dataclasses.replace(holder, persona=persona, sign_serial=cert.serial_number))
    return LifeEvent(name, "move", ((holder.sign_serial, "affiliationChanged"),),
                     (("sign", cert.serial_number),))


def lost(home: Home, name: str, *, clock: Clock | None = None) -> LifeEvent:
    """The holder reports the card lost: its certificates are revoked (keyCompromise).

    A certificate revoked before (e.g. the signing certificate at a death or emigration report)
    stays revoked with its first reason; the event lists what this report revoked.
    """
    clock = clock or home.clock
    holder = _active(home, name)
    revoked: list[tuple[int, str]] = []
    with home.open_ca(clock) as ca:
        now = clock.now()
        for serial in (holder.auth_serial, holder.sign_serial):
            record = ca.db.get(serial)
            if record is not None and record.status == "revoked":
                continue
            ca.revoke(serial, x509.ReasonFlags.key_compromise, revoked_at=now)
            revoked.append((serial, "keyCompromise"))
    write_holder(home, dataclasses.replace(holder, status="lost"))
    return LifeEvent(name, "lost", tuple(revoked), ())


def renew(home: Home, name: str, *, clock: Clock | None = None,
          keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey] | None = None) -> LifeEvent:
    """New keys and certificates for both; the old ones superseded and linked to the new ones.

    ``keys`` (auth, sign) are the new keys (default: fresh ones; tests hand them from a key pool)."""
    clock = clock or home.clock
    holder = _active(home, name)
    with home.open_ca(clock) as ca:
        now = clock.now()
        expiry = max(holder.card_expiry, ca.card_expiry_for(holder.persona, now.astimezone(JST).date()))
        auth_key, sign_key = keys or (new_key(), new_key())
        auth = ca.issue_auth_cert(auth_key.public_key(), card_id=name, issued_at=now,
                                  card_expiry=expiry, birth_date=holder.persona.birth_date)
        sign = ca.issue_sign_cert(sign_key.public_key(), holder.persona, card_id=name, issued_at=now,
                                  card_expiry=expiry)
        for old, new in ((holder.auth_serial, auth.serial_number), (holder.sign_serial, sign.serial_number)):
            ca.revoke(old, x509.ReasonFlags.superseded, revoked_at=now)
            ca.db.link(old, new, linked_at=now)
        emu.replace_emulated_credentials(home.card_dir(name), {
            "auth": (auth_key, auth.public_bytes(DER)), "sign": (sign_key, sign.public_bytes(DER))})
    write_holder(home, dataclasses.replace(holder, card_expiry=expiry, auth_serial=auth.serial_number,
                                           sign_serial=sign.serial_number))
    return LifeEvent(name, "renew", ((holder.auth_serial, "superseded"), (holder.sign_serial, "superseded")),
                     (("auth", auth.serial_number), ("sign", sign.serial_number)))
