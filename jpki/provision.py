"""Provisioning: a persona becomes an emulated card, with fresh keys and certificates from the test CA.

Layout of a jpki home::

    HOME/ca/            the test CA (keys 0600, certificates, SQLite database)
    HOME/cards/NAME/    the emulated card (the emulator's own format, every file 0600)
    HOME/holders/NAME.json  what the municipality knows: persona, security code (0600)
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .clock import JST, Clock
from .errors import JpkiError, NoCardError, UsageError

# re-exported: a home and its default PINs are where cards are provisioned
from .home import DEFAULT_AUTH_PIN as DEFAULT_AUTH_PIN
from .home import DEFAULT_CARD_PIN as DEFAULT_CARD_PIN
from .home import DEFAULT_SIGN_PIN as DEFAULT_SIGN_PIN
from .home import Home as Home
from .identity import SAMPLE_PERSONAS, Persona, Sex, generate_mynumber
from .pki.profiles import root_generation
from .session import normalise_pin
from .transport import emu

if TYPE_CHECKING:
    from .pki import TestCA

PREFECTURES = {
    "北海道": "Hokkaido", "青森県": "Aomori", "岩手県": "Iwate", "宮城県": "Miyagi", "秋田県": "Akita",
    "山形県": "Yamagata", "福島県": "Fukushima", "茨城県": "Ibaraki", "栃木県": "Tochigi",
    "群馬県": "Gunma", "埼玉県": "Saitama", "千葉県": "Chiba", "東京都": "Tokyo",
    "神奈川県": "Kanagawa", "新潟県": "Niigata", "富山県": "Toyama", "石川県": "Ishikawa",
    "福井県": "Fukui", "山梨県": "Yamanashi", "長野県": "Nagano", "岐阜県": "Gifu",
    "静岡県": "Shizuoka", "愛知県": "Aichi", "三重県": "Mie", "滋賀県": "Shiga", "京都府": "Kyoto",
    "大阪府": "Osaka", "兵庫県": "Hyogo", "奈良県": "Nara", "和歌山県": "Wakayama",
    "鳥取県": "Tottori", "島根県": "Shimane", "岡山県": "Okayama", "広島県": "Hiroshima",
    "山口県": "Yamaguchi", "徳島県": "Tokushima", "香川県": "Kagawa", "愛媛県": "Ehime",
    "高知県": "Kochi", "福岡県": "Fukuoka", "佐賀県": "Saga", "長崎県": "Nagasaki",
    "熊本県": "Kumamoto", "大分県": "Oita", "宮崎県": "Miyazaki", "鹿児島県": "Kagoshima",
    "沖縄県": "Okinawa",
}


def romanised_prefecture(address: str) -> str:
    for kanji, roman in PREFECTURES.items():
        if address.startswith(kanji):
            return roman
    return "Unknown"


@dataclass(frozen=True)
class Holder:
    """What the issuing municipality records about a card (kept beside the emulated card)."""

    card: str
    persona: Persona
    security_code: str
    card_expiry: _dt.date
    issued_at: _dt.datetime
    auth_serial: int
    sign_serial: int
    #: ``active``, or ``lost`` once the holder reported the card lost (both certificates revoked)
    status: str = "active"

    def to_json(self) -> dict[str, Any]:
        p = asdict(self.persona)
        p["birth_date"] = self.persona.birth_date.isoformat()
        p["sex"] = self.persona.sex.name.lower()
        return {"card": self.card, "persona": p, "security_code": self.security_code,
                "card_expiry": self.card_expiry.isoformat(), "issued_at": self.issued_at.isoformat(),
                "auth_serial": f"{self.auth_serial:X}", "sign_serial": f"{self.sign_serial:X}",
                "status": self.status}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Holder:
        p = dict(obj["persona"])
        p["birth_date"] = _dt.date.fromisoformat(p["birth_date"])
        p["sex"] = Sex.parse(p["sex"])
        return cls(card=obj["card"], persona=Persona(**p), security_code=obj["security_code"],
                   card_expiry=_dt.date.fromisoformat(obj["card_expiry"]),
                   issued_at=_dt.datetime.fromisoformat(obj["issued_at"]),
                   auth_serial=int(obj["auth_serial"], 16), sign_serial=int(obj["sign_serial"], 16),
                   status=obj.get("status", "active"))


def write_holder(home: Home, holder: Holder, *, durable: bool = True) -> None:
    """Write the holder record atomically (``durable=False``: without fsync, for a throwaway home)."""
    path = home.holder_file(holder.card)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(holder.to_json(), fh, ensure_ascii=False, indent=1)
        fh.flush()
        if durable:
            os.fsync(fh.fileno())
    os.replace(tmp, path)


class HolderRecordError(JpkiError):
    """A holder record (HOME/holders/NAME.json) cannot be read: truncated, edited, not JSON."""

    code = "corrupt_holder_record"


def read_holder(home: Home, name: str) -> Holder:
    path = home.holder_file(name)
    if not path.is_file():
        raise NoCardError(f"no emulated card named {name!r} in {home.path}")
    try:
        return Holder.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # fail closed, never a traceback
        raise HolderRecordError(f"the holder record {path} is corrupt ({type(exc).__name__})") from None


def new_key(key_size: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


def sample_persona(name: str) -> Persona | None:
    return SAMPLE_PERSONAS.get(name)


def create_card(home: Home, name: str, persona: Persona, *, auth_pin: str = DEFAULT_AUTH_PIN,
                sign_pin: str = DEFAULT_SIGN_PIN, card_pin: str | None = None,
                security_code: str | None = None, clock: Clock | None = None,
                profile: str | dict[str, Any] | None = None,
                keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey] | None = None,
                ca: TestCA | None = None, card_expiry: _dt.date | None = None,
                durable: bool = True, pin_iterations: int | None = None) -> Holder:
    """Issue a card to ``persona``: two fresh key pairs, both certificates, the card-info AP filled.

    ``profile`` is a card profile's name (``card``, ``card-2015``, ``card-2023``,
    ``smartphone-android``: card_emulator.profile.PROFILES) or its settings. A profile that
    names a root generation needs a test CA whose roots are of that generation
    (``TestCA.init(generation=…)``).

    ``keys`` (auth, sign) replace the fresh key pairs; ``ca`` is the home's CA already open (a
    caller making many cards opens it once); ``card_expiry`` replaces the expiry the CA derives
    from the birth date (a card past its expiry, for tests). ``durable=False`` and a low
    ``pin_iterations`` make a throwaway test card cheap (no fsync; cheaper PIN hashes).
    """
    if home.card_dir(name).exists():  # card_dir checks the name (jpki.home.check_card_name)
        raise UsageError(f"a card named {name!r} already exists")
    settings = emu.card_profile(profile)
    card_pin = card_pin or auth_pin
    # the values the card compares (full-width digits NFKC-normalised, the password upper-cased)
    auth_pin = normalise_pin("auth", auth_pin).decode()
    sign_pin = normalise_pin("sign", sign_pin).decode()
    card_pin = normalise_pin("card", card_pin).decode()
    if security_code is not None and not (len(security_code) == 4 and security_code.isdigit()):
        raise UsageError("the security code is 4 digits")
    clock = clock or home.clock
    own_ca = ca is None
    if ca is None:
        ca = home.open_ca(clock)
    try:
        wanted = settings.get("root_generation") or ""
        if wanted and root_generation(ca.sign_ca_cert) != wanted:
            have = root_generation(ca.sign_ca_cert) or "no J-LIS"
            raise UsageError(f"card profile {settings['name']!r} holds {wanted} roots, but this test CA's "
                             f"roots are of the {have} generation (make one with 'jpki ca init "
                             f"--generation {wanted}')")
        if persona.my_number is None:
            persona = persona.replace(my_number=generate_mynumber())
        now = clock.now()
        expiry = card_expiry or ca.card_expiry_for(persona, now.astimezone(JST).date())
        auth_key, sign_key = keys or (new_key(), new_key())
        auth_cert = ca.issue_auth_cert(auth_key.public_key(), card_id=name, issued_at=now,
                                       card_expiry=expiry, birth_date=persona.birth_date)
        sign_cert = ca.issue_sign_cert(sign_key.public_key(), persona, card_id=name, issued_at=now,
                                       card_expiry=expiry)
        der = serialization.Encoding.DER
        code = security_code or f"{secrets.randbelow(10000):04d}"
        extra: dict[str, Any] = {} if pin_iterations is None else {"pin_iterations": pin_iterations}
        emu.create_emulated_card(
            home.card_dir(name), durable=durable, **extra,
            auth_key=auth_key, sign_key=sign_key,
            auth_cert=auth_cert.public_bytes(der), sign_cert=sign_cert.public_bytes(der),
            auth_ca_cert=ca.auth_ca_cert.public_bytes(der), sign_ca_cert=ca.sign_ca_cert.public_bytes(der),
            my_number=persona.my_number, name=persona.name, address=persona.address,
            birth_date=persona.birth_date, sex_code=persona.sex.card_code,
            auth_pin=auth_pin, sign_pin=sign_pin, card_pin=card_pin,
            security_code=code, card_expiry=expiry, issuer_key=ca.sign_ca_key, profile=settings)
        holder = Holder(name, persona, code, expiry, now, auth_cert.serial_number, sign_cert.serial_number)
        write_holder(home, holder, durable=durable)
        return holder
    finally:
        if own_ca:
            ca.close()


def load_certificate(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)
