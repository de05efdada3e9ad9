"""Write a card directory from plain values: keys, certificates, PINs and the holder's data.

This is the card factory's side of provisioning; choosing the values (a persona, issuing the
certificates) is the host's job.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import hashlib
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from . import content as C
from .card import CARD_FILE, FORMAT_VERSION, LOCK_FILE, PIN_ITERATIONS, STATE_FILE, new_pin_record
from .profile import CardProfile
from .state import (
    MAX_TRIES,
    PIN_FORMATS,
    CardStateError,
    check_content,
    load_json,
    pin_names,
    pin_record_problem,
)
from .storage import atomic_write, locked, make_private_dir, write_json


@dataclass(frozen=True)
class CardData:
    """Everything a new card holds. Certificates are DER; keys are RSA private keys."""

    auth_key: rsa.RSAPrivateKey
    sign_key: rsa.RSAPrivateKey
    auth_cert: bytes
    sign_cert: bytes
    auth_ca_cert: bytes
    sign_ca_cert: bytes
    my_number: str
    name: str
    address: str
    birth_date: _dt.date
    sex_code: str  # card-info code: 1 male, 2 female, 9 not applicable
    auth_pin: str
    sign_pin: str
    card_pin: str
    security_code: str
    card_expiry: _dt.date
    #: key that signs the card-info integrity record (EF 0003); J-LIS's card-issuer key in reality
    issuer_key: rsa.RSAPrivateKey | None = None
    #: the 13-character card manufacture number of the common AP (random digits if None)
    manufacture_number: str | None = None
    #: PBKDF2 rounds of the PIN records (test cards lower it: see ``new_pin_record``)
    pin_iterations: int = PIN_ITERATIONS


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _binary(data: bytes, read: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"kind": "binary", "data": _b64(data), "read": list(read)}


def _card_info_files(my_number: str, name: str, address: str, birth: _dt.date, sex_code: str,
                     profile: CardProfile, issuer_key: rsa.RSAPrivateKey | None
                     ) -> tuple[dict[str, Any], bytes]:
    """Card-info EFs 0001 (My Number), 0002 (basic 4 info), 0003 (integrity record, signed by
    ``issuer_key``), and the integrity signature."""
    form, fill = profile.long_length_form, profile.filler
    ef1 = C.mynumber_ef(my_number)
    b4_value = C.basic4_value(name, address, birth.strftime("%Y%m%d"), sex_code, form)
    ef2 = C.basic4_ef(name, address, birth.strftime("%Y%m%d"), sex_code,
                      form=form, size=max(512, len(b4_value) + 16), filler=fill)
    signature = (issuer_key.sign(C.integrity_signed_part(ef1, b4_value), padding.PKCS1v15(),
                                 hashes.SHA256())
                 if issuer_key is not None else bytes(256))
    return {
        "0001": _binary(ef1, ("card", "card_a")),
        "0002": _binary(ef2, ("card", "card_b")),
        "0003": _binary(C.integrity_record(ef1, b4_value, signature), ("card", "card_a", "card_b")),
    }, signature


def photo_seed(name: str, birth: _dt.date) -> bytes:
    """What the synthetic face photo is drawn from: the same holder gets the same face (and the
    images, rendered lazily, are cached per holder)."""
    return hashlib.sha256(f"{name}|{birth.isoformat()}".encode()).digest()[:16]


def _surface_files(data: CardData, profile: CardProfile, signature: bytes) -> dict[str, Any]:
    """券面事項確認AP: EF 0002 (built by the card when first read, from this recipe), EF 0003 (AP
    basic info, free) and the two verification-number PIN EFs."""
    # DF24: the public key that goes with DF28's signature (the issuer's; the card's auth key
    # when no issuer key is given, where DF28 is zeros too)
    public = (data.issuer_key or data.auth_key).public_key().public_numbers()
    key = C.rsa_public_key_value(public.n, public.e, profile.long_length_form)
    recipe = {"birth": data.birth_date.strftime("%Y%m%d"), "sex": data.sex_code,
              "expiry": data.card_expiry.strftime("%Y%m%d"), "name": data.name,
              "address": data.address, "security_code": data.security_code, "key": key.hex(),
              "signature": signature.hex(), "photo_seed": photo_seed(data.name, data.birth_date).hex()}
    return {
        "0002": {**_binary(b"", ("surface_a", "surface_b")), "surface": recipe},
        "0003": _binary(C.surface_basic_info(os.urandom(16), C.municipality_of(data.address))),
        "0012": {"kind": "pin", "pin": "surface_b"},
        "0013": {"kind": "pin", "pin": "surface_a"},
    }


def _read_content(directory: Path) -> dict[str, Any]:
    """card.json, checked: an admin command never rewrites a card file it cannot trust."""
    return check_content(load_json(directory / CARD_FILE), directory / CARD_FILE)


def update_basic_info(directory: str | os.PathLike[str], *, name: str, address: str,
                      birth_date: _dt.date, sex_code: str,
                      issuer_key: rsa.RSAPrivateKey | None = None) -> None:
    """Rewrite the card-info AP's basic 4 info and integrity record (a move, a new name).

    The card-surface AP keeps the images of the face as printed at issuance (a move is written
    on the back of a real card, not reprinted on its face). A card without card-face
    applications (a smartphone) has nothing to rewrite.
    """
    directory = Path(directory)
    with locked(directory / LOCK_FILE):
        doc = _read_content(directory)
        profile = CardProfile.from_json(doc["profile"])
        if not profile.card_face_aps and "text" not in doc["applications"]:
            return
        files = doc["applications"].get("text", {}).get("files", {})
        if "0001" not in files or files["0001"]["kind"] != "binary":
            raise CardStateError(directory / CARD_FILE, "no card-info AP with a My Number EF")
        my_number = base64.b64decode(files["0001"]["data"])[3:15].decode("ascii")
        new_files, _ = _card_info_files(my_number, name, address, birth_date, sex_code, profile,
                                        issuer_key)
        files.update(new_files)
        write_json(directory / CARD_FILE, doc)


def build_content(data: CardData, profile: CardProfile, serial: str) -> dict[str, Any]:
    """The card.json document (without PIN state): the JPKI AP, and the card-face APs when the
    profile has them."""
    size, fill = profile.certificate_ef_size, profile.filler
    jpki_files = {
        "0001": _binary(C.certificate_ef(data.sign_cert, size, fill), ("sign",)),
        "0002": _binary(C.certificate_ef(data.sign_ca_cert, size, fill)),
        "0006": _binary(C.token_info(profile.token_kind, serial)),
        "0008": _binary(bytes.fromhex(profile.ef0008_hex)),
        "000A": _binary(C.certificate_ef(data.auth_cert, size, fill),
                        ("auth",) if profile.auth_cert_needs_pin else ()),
        "000B": _binary(C.certificate_ef(data.auth_ca_cert, size, fill)),
        "0017": {"kind": "key", "key": "auth", "pin": "auth"},
        "0018": {"kind": "pin", "pin": "auth"},
        "001A": {"kind": "key", "key": "sign", "pin": "sign"},
        "001B": {"kind": "pin", "pin": "sign"},
    }
    applications: dict[str, Any] = {"jpki": {"aid": C.JPKI_AID.hex().upper(), "files": jpki_files}}
    if profile.card_face_aps:
        text_files, signature = _card_info_files(data.my_number, data.name, data.address,
                                                 data.birth_date, data.sex_code, profile,
                                                 data.issuer_key)
        text_files.update({
            "0005": _binary(C.ap_basic_info(os.urandom(16))),
            "0011": {"kind": "pin", "pin": "card"},
            "0014": {"kind": "pin", "pin": "card_a"},
            "0015": {"kind": "pin", "pin": "card_b"},
        })
        number = data.manufacture_number or f"{secrets.randbelow(10 ** 13):013d}"
        applications.update({
            "text": {"aid": C.TEXT_AID.hex().upper(), "files": text_files},
            "surface": {"aid": C.SURFACE_AID.hex().upper(),
                        "files": _surface_files(data, profile, signature)},
            "juki": {"aid": C.JUKI_AID.hex().upper(), "files": {}},
            "common": {"aid": C.COMMON_AID.hex().upper(), "files": {
                "0001": {"kind": "record",
                         "records": [_b64(C.card_id_record(number, profile.card_id_tag))]}}},
        })
    return {
        "format": FORMAT_VERSION,
        "serial": serial,
        "profile": profile.to_json(),
        "card_expiry": data.card_expiry.isoformat(),
        "keys": {"auth": "keys/auth.pem", "sign": "keys/sign.pem"},
        "applications": applications,
    }


def build_pins(data: CardData, profile: CardProfile) -> dict[str, Any]:
    n = data.pin_iterations
    pins = {
        "auth": new_pin_record(data.auth_pin, "digits4", 3, n),
        "sign": new_pin_record(data.sign_pin.upper(), "password", 5, n),
    }
    if profile.card_face_aps:
        b = C.verification_number_b(data.birth_date, data.card_expiry.year, data.security_code,
                                    profile.verification_b_year)
        pins.update({
            "card": new_pin_record(data.card_pin, "digits4", 3, n),
            "card_a": new_pin_record(data.my_number, "digits12", 3, n),
            "card_b": new_pin_record(b, "digits14", 3, n),
            "surface_a": new_pin_record(data.my_number, "digits12", 3, n),
            "surface_b": new_pin_record(b, "digits14", 3, n),
        })
    return {"pins": pins}


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def create_card(directory: str | os.PathLike[str], data: CardData,
                profile: CardProfile | None = None, *, serial: str | None = None,
                durable: bool = True) -> Path:
    """Create a card directory (refuses to overwrite one). Every file is 0600.

    ``durable=False`` writes without fsync (a throwaway card; see ``storage.atomic_write``).
    """
    directory = Path(directory)
    if (directory / CARD_FILE).exists():
        raise FileExistsError(f"a card already exists in {directory}")
    profile = profile or CardProfile()
    profile.validate()
    serial = serial or os.urandom(8).hex().upper()
    make_private_dir(directory)
    make_private_dir(directory / "keys")
    atomic_write(directory / "keys" / "auth.pem", _key_pem(data.auth_key), durable=durable)
    atomic_write(directory / "keys" / "sign.pem", _key_pem(data.sign_key), durable=durable)
    write_json(directory / STATE_FILE, build_pins(data, profile), durable=durable)
    # card.json last: its presence marks a complete card.
    write_json(directory / CARD_FILE, build_content(data, profile, serial), durable=durable)
    return directory


def replace_credentials(directory: str | os.PathLike[str],
                        new: dict[str, tuple[rsa.RSAPrivateKey, bytes]]) -> None:
    """Write new keys and certificates (``{"sign"|"auth": (key, cert DER)}``), as the
    municipality does after a change of the basic 4 info (sign) or a renewal (both).

    Crash-safe: each new key goes to a new file first; rewriting ``card.json`` (atomic) is the
    single point where the card switches to the new keys and certificates; the old key files
    are removed afterwards. A crash at any point leaves either the old or the new pair.
    """
    directory = Path(directory)
    cert_fids = {"sign": "0001", "auth": "000A"}
    with locked(directory / LOCK_FILE):
        doc = _read_content(directory)
        profile = CardProfile.from_json(doc["profile"])
        jpki_files = doc["applications"].get("jpki", {}).get("files", {})
        if not all(fid in jpki_files for fid in cert_fids.values()):
            raise CardStateError(directory / CARD_FILE, "no JPKI AP with both certificate EFs")
        doc.setdefault("keys", {})
        old_files = []
        for kind, (key, cert) in new.items():
            if kind not in cert_fids:
                raise KeyError(f"no key named {kind!r}")
            rel = f"keys/{kind}-{os.urandom(6).hex()}.pem"
            atomic_write(directory / rel, _key_pem(key))
            if kind in doc["keys"]:
                old_files.append(doc["keys"][kind])
            doc["keys"][kind] = rel
            doc["applications"]["jpki"]["files"][cert_fids[kind]]["data"] = _b64(
                C.certificate_ef(cert, profile.certificate_ef_size, profile.filler))
        write_json(directory / CARD_FILE, doc)
        for rel in old_files:
            with contextlib.suppress(FileNotFoundError):
                (directory / rel).unlink()


def reset_pin(directory: str | os.PathLike[str], pin: str, value: str | None = None) -> None:
    """The municipal office's unblock: restore the tries (and optionally set a new value).

    Also the repair of one damaged PIN record: a wrong counter is restored, and a damaged hash or
    salt is replaced when a new value is given. Anything it cannot repair (an unreadable file, a
    record without a sound format and maximum) raises :class:`CardStateError`. The record's
    generation moves on, which ends the PIN's verified state in every session that had it.
    """
    directory = Path(directory)
    path = directory / STATE_FILE
    with locked(directory / LOCK_FILE):
        state = load_json(path)
        pins = state.get("pins") if isinstance(state, dict) else None
        if not isinstance(pins, dict):
            raise CardStateError(path, "no 'pins' object")
        if pin not in pins:
            if pin in pin_names(_read_content(directory)):
                raise CardStateError(path, f"no record for PIN {pin!r}", pin=pin)
            raise KeyError(f"no PIN named {pin!r}")
        rec = pins[pin]
        if not isinstance(rec, dict) or rec.get("format") not in PIN_FORMATS \
                or type(rec.get("max")) is not int or not 1 <= rec["max"] <= MAX_TRIES:
            raise CardStateError(path, f"PIN {pin!r}: {pin_record_problem(rec)}", pin=pin)
        generation = rec.get("generation", 0)
        if value is not None:
            rec.update(new_pin_record(value.upper() if rec["format"] == "password" else value,
                                      rec["format"], rec["max"]))
        rec["remaining"] = rec["max"]
        rec["generation"] = generation + 1 if type(generation) is int and generation >= 0 else 1
        problem = pin_record_problem(rec)
        if problem is not None:
            raise CardStateError(path, f"PIN {pin!r}: {problem} (a new value repairs it)", pin=pin)
        write_json(path, state)


def delete_card(directory: str | os.PathLike[str]) -> None:
    shutil.rmtree(directory)
