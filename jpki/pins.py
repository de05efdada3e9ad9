"""The card's PINs as the host knows them: one table of kind → name, AP and EF, maximum tries,
format rule and environment variable.

A leaf module (standard library only) so that the CLI can name PINs in its help and messages
without loading the card session; :mod:`jpki.session` uses the same table for the EFs and the
format checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["PINS", "USER_PINS", "PinSpec"]


@dataclass(frozen=True)
class PinSpec:
    """One PIN of the card as the host knows it (card spec §7).

    The host cannot ask a card for a PIN's maximum (VERIFY only tells the tries left), so
    ``max_tries`` is the spec's; ``tests/test_session.py`` checks it against what the emulator
    provisions.
    """

    #: ``auth``, ``sign``, ``card``… (what the CLI and ``PinError.pin`` call it)
    kind: str
    #: what it is called in messages ("user-authentication PIN")
    name: str
    #: the AP it belongs to and its EF
    application: Literal["jpki", "text", "surface"]
    fid: int
    max_tries: int
    #: the value the card compares (after NFKC, upper-case for the password), and the rule in words
    pattern: re.Pattern[str]
    rule: str
    #: the format in a few words ("4 digits"), for help texts and prompts
    form: str
    #: the environment variable the CLI reads it from (None: never from the environment)
    env: str | None = None

    @property
    def label(self) -> str:
        """``user-authentication PIN (4 digits)``."""
        return f"{self.name} ({self.form})"


PINS: dict[str, PinSpec] = {spec.kind: spec for spec in (
    PinSpec("auth", "user-authentication PIN", "jpki", 0x0018, 3, re.compile(r"[0-9]{4}"),
            "the user-authentication PIN is 4 digits", "4 digits", "JPKI_AUTH_PIN"),
    PinSpec("sign", "signature password", "jpki", 0x001B, 5, re.compile(r"[A-Z0-9]{6,16}"),
            "the signature password is 6-16 letters A-Z and digits", "6-16 characters",
            "JPKI_SIGN_PIN"),
    PinSpec("card", "card-info PIN", "text", 0x0011, 3, re.compile(r"[0-9]{4}"),
            "the card-info PIN is 4 digits", "4 digits", "JPKI_CARD_PIN"),
    PinSpec("card_a", "照合番号A", "text", 0x0014, 3, re.compile(r"[0-9]{12}"),
            "照合番号A is the 12-digit My Number", "12 digits"),
    PinSpec("card_b", "照合番号B", "text", 0x0015, 3, re.compile(r"[0-9]{14}"),
            "照合番号B is 14 digits", "14 digits"),
    # the card-surface AP (券面事項確認AP) has its own two, with their own counters
    PinSpec("surface_a", "card-surface 照合番号A", "surface", 0x0013, 3, re.compile(r"[0-9]{12}"),
            "照合番号A is the 12-digit My Number", "12 digits"),
    PinSpec("surface_b", "card-surface 照合番号B", "surface", 0x0012, 3, re.compile(r"[0-9]{14}"),
            "照合番号B is 14 digits", "14 digits"),
)}
#: The PINs the user has and the CLI asks for (``jpki pin …``, ``--pin``).
USER_PINS: tuple[str, ...] = ("auth", "sign", "card")
