"""The card profile: ATR and the behaviour switches for the points the public sources disagree on.

Every field marked UNCERTAIN in the spec is a switch here, with the spec's default. A profile is
plain data, stored in the card's ``card.json``.

:data:`PROFILES` names the kinds of card a tester picks from (``jpki card create --profile NAME``,
the test fixtures' ``profile=``): the plastic My Number Card, the same with the roots of a given
J-LIS generation, and the Android smartphone JPKI. The names are a public API.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

DEFAULT_ATR = bytes.fromhex("3BE000FF8131FE4514")

#: Other ATRs seen on real cards (spec §1), by name, for ``atr`` in a profile.
KNOWN_ATRS = {
    "default": DEFAULT_ATR,
    "jpki-2": bytes.fromhex("3BDA13FF8131FB468012392F31C173C601C03B"),
    "jpki-3": bytes.fromhex("3BC5FF8131FB458073C6010000"),
    "jpki-contactless": bytes.fromhex("3BF59100FF918171FE400042000100D1D6"),
}

TOKEN_LABELS = {
    "card": "JPKIAPICCTOKEN2",  # My Number Card
    "juki": "JPKIAPICCTOKEN",  # old Juki card
    "smartphone": "JPKIAPGPSETOKEN",  # smartphone JPKI
}


#: Generations of the J-LIS roots (spec §8) a card's CA EFs (0002, 000B) can hold: the root in
#: force when the card (or its certificates) was issued. The issuer must provide a root of that
#: generation; ``""`` takes whatever root the issuer has.
ROOT_GENERATIONS = ("", "2015", "2023")

_PROFILE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


@dataclass(frozen=True)
class CardProfile:
    #: what the card is (one of :data:`PROFILES` for the built-in kinds; any short name otherwise)
    name: str = "card"
    atr_hex: str = DEFAULT_ATR.hex().upper()
    #: which token label EF 0006 carries (``card``, ``juki`` or ``smartphone``)
    token_kind: str = "card"
    #: UNCERTAIN: one signature-password VERIFY allows several signatures until the AP is
    #: re-selected (False, default) or exactly one signature (True).
    one_signature_per_verify: bool = False
    #: UNCERTAIN: contents of EF 0008 when both certificates are present.
    ef0008_hex: str = "8F8F00"
    #: UNCERTAIN: SW for a secure-messaging CLA on SELECT, and on other commands.
    sm_select_sw: int = 0x6882
    sm_other_sw: int = 0x69FC
    #: Answer to an empty VERIFY of a blocked PIN (63C0 says "0 tries left").
    blocked_query_sw: int = 0x63C0
    #: READ BINARY that reaches the end of the EF before Le bytes: 9000 (default) or 6282.
    short_read_sw: int = 0x9000
    #: UNCERTAIN: BER long-length form in the card-info TLVs: "82" always (spec) or "ber" (81 for <256).
    long_length_form: str = "82"
    #: UNCERTAIN: year in 照合番号B: "era" (Japanese-era year, measured test card) or "gregorian".
    verification_b_year: str = "era"
    #: Minimum size of the certificate EFs; each grows (in 256-byte steps) to fit its certificate.
    certificate_ef_size: int = 2048
    #: Filler byte after a certificate in its EF.
    filler: int = 0xFF
    #: The card-face applications (券面事項入力補助AP, 券面事項確認AP, 住基AP, 共通AP) are on the
    #: card. A smartphone's JPKI has none: selecting them answers 6A82.
    card_face_aps: bool = True
    #: The user-authentication certificate (EF 000A) is read only after the auth PIN VERIFY
    #: (Android smartphone JPKI, jpki/myna ``cert_read``); a plastic card gives it freely.
    auth_cert_needs_pin: bool = False
    #: The generation of the J-LIS roots whose place the card's CA certificates take (see
    #: :data:`ROOT_GENERATIONS`).
    root_generation: str = ""
    #: UNCERTAIN: the tag of the common AP's record 1 (jpki/myna reads it as any BER TLV whose
    #: value holds the card manufacture number at characters 2..15).
    card_id_tag: int = 0x30

    @property
    def atr(self) -> bytes:
        return bytes.fromhex(self.atr_hex)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any] | None) -> CardProfile:
        obj = dict(obj or {})
        known = {f.name for f in fields(cls)}
        unknown = set(obj) - known
        if unknown:
            raise ValueError(f"unknown card profile settings: {', '.join(sorted(unknown))}")
        profile = cls(**obj)
        profile.validate()
        return profile

    def derive(self, **changes: Any) -> CardProfile:
        """This profile with some settings changed (checked)."""
        profile = replace(self, **changes)
        profile.validate()
        return profile

    def validate(self) -> None:
        for f in fields(self):  # card.json is data: a setting of the wrong type is refused here
            value, default = getattr(self, f.name), f.default
            if type(value) is not type(default):
                raise ValueError(f"{f.name} must be {type(default).__name__}, "
                                 f"not {type(value).__name__}")
        for name in ("sm_select_sw", "sm_other_sw", "blocked_query_sw", "short_read_sw"):
            if not 0x6100 <= getattr(self, name) <= 0x9FFF:
                raise ValueError(f"{name} must be a status word")
        if not 0 < self.certificate_ef_size <= 0x8000:
            raise ValueError("certificate_ef_size must be in 1..32768")
        if self.token_kind not in TOKEN_LABELS:
            raise ValueError(f"token_kind must be one of {sorted(TOKEN_LABELS)}")
        if self.long_length_form not in ("82", "ber"):
            raise ValueError("long_length_form must be '82' or 'ber'")
        if self.verification_b_year not in ("era", "gregorian"):
            raise ValueError("verification_b_year must be 'era' or 'gregorian'")
        if not 0 <= self.filler <= 0xFF:
            raise ValueError("filler must be a byte")
        if not _PROFILE_NAME.fullmatch(self.name):
            raise ValueError("name must be 1-32 lower-case letters, digits or '-'")
        if self.root_generation not in ROOT_GENERATIONS:
            raise ValueError(f"root_generation must be one of {', '.join(map(repr, ROOT_GENERATIONS))}")
        if not 0x01 <= self.card_id_tag <= 0xFE or self.card_id_tag & 0x1F == 0x1F:
            raise ValueError("card_id_tag must be a one-byte BER tag")
        try:
            atr = bytes.fromhex(self.atr_hex)
        except ValueError:
            raise ValueError("atr_hex is not hex") from None
        if not 2 <= len(atr) <= 33 or atr[0] not in (0x3B, 0x3F):
            raise ValueError("atr_hex is not a plausible ATR")


#: The built-in kinds of card, by name (a public API: ``jpki card create --profile NAME`` and the
#: test fixtures' ``profile=`` take these names).
PROFILES: dict[str, CardProfile] = {
    # The plastic My Number Card; its CA EFs hold the issuer's root, whatever its generation.
    "card": CardProfile(),
    # The same card issued under the first J-LIS roots (2015-10-20 .. 2025-10-19).
    "card-2015": CardProfile(name="card-2015", root_generation="2015"),
    # The same card issued under the current J-LIS roots (2023-07-16 .. 2033-07-15).
    "card-2023": CardProfile(name="card-2023", root_generation="2023"),
    # Android smartphone JPKI (2023-): a GlobalPlatform secure element reached over NFC; token
    # JPKIAPGPSETOKEN, the auth certificate behind the auth PIN, no card-face applications.
    "smartphone-android": CardProfile(name="smartphone-android", token_kind="smartphone",
                                      card_face_aps=False, auth_cert_needs_pin=True),
}


def profile_named(name: str) -> CardProfile:
    """The built-in profile ``name``; ``ValueError`` naming the ones there are otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown card profile {name!r}: use one of {', '.join(PROFILES)}") from None
