"""Who a card belongs to: personas, sex codes, era-coded dates, My Number and masking.

A leaf module: it imports only the standard library, so the card emulator's provisioning, the
host and the verifiers can all share it.

Conventions (see the card spec, sections 4, 8 and 10):

* Names are kanji, family name and given name separated by U+3000 (IDEOGRAPHIC SPACE).
* Addresses are UTF-8 with full-width digits and no postal code.
* The signing certificate codes the birth date as ``EYYYYMMDD``: ``E`` is the era
  (1 明治, 2 大正, 3 昭和, 4 平成, 5 令和, 0 unknown) and ``YYYYMMDD`` is the **Gregorian**
  date, so 1975-11-03 (昭和50年) is ``319751103``.
* Sex is ``1``/``2``/``3`` (male/female/unknown) in the certificate and ``1``/``2``/``9`` on the
  card-info AP.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import random
import re
import secrets
from typing import Any, NamedTuple

__all__ = [
    "ERAS",
    "SAMPLE_PERSONAS",
    "Era",
    "Persona",
    "Sex",
    "age_on",
    "corporate_number_check_digit",
    "decode_era_date",
    "encode_era_date",
    "era_of",
    "generate_corporate_number",
    "generate_mynumber",
    "is_valid_corporate_number",
    "is_valid_mynumber",
    "japanese_era",
    "mask_mynumber",
    "mask_text",
    "mynumber_check_digit",
    "to_fullwidth_digits",
]

IDEOGRAPHIC_SPACE = "\u3000"
FULLWIDTH_ASTERISK = "\uff0a"


# --------------------------------------------------------------------------- sex


class Sex(enum.Enum):
    """The holder's sex as recorded on the card and in the signing certificate."""

    MALE = "male"
    FEMALE = "female"
    UNKNOWN = "unknown"

    @property
    def cert_code(self) -> str:
        """Code in the signing certificate SAN (OID 1.2.392.200149.8.5.5.3)."""
        return _CERT_CODES[self]

    @property
    def card_code(self) -> str:
        """Code in the card-info AP basic-4-info tag DF25."""
        return _CARD_CODES[self]

    @property
    def kanji(self) -> str:
        """Display form: 男 / 女 / 不明."""
        return _KANJI[self]

    @classmethod
    def from_cert_code(cls, code: str) -> Sex:
        """``'1'``/``'2'``/``'3'`` → Sex; ValueError on anything else."""
        for sex, value in _CERT_CODES.items():
            if value == code:
                return sex
        raise ValueError(f"not a certificate sex code: {code!r}")

    @classmethod
    def from_card_code(cls, code: str) -> Sex:
        """``'1'``/``'2'``/``'9'`` → Sex; ValueError on anything else."""
        for sex, value in _CARD_CODES.items():
            if value == code:
                return sex
        raise ValueError(f"not a card sex code: {code!r}")

    @classmethod
    def parse(cls, text: str | Sex) -> Sex:
        """Accept a name (``male``, ``female``, ``unknown``, ``m``, ``f``), a kanji form or a code
        (``1``, ``2``, ``3`` or ``9``)."""
        if isinstance(text, Sex):
            return text
        key = str(text).strip().lower()
        try:
            return _PARSE[key]
        except KeyError:
            raise ValueError(f"unknown sex: {text!r} (use male, female or unknown)") from None


_CERT_CODES = {Sex.MALE: "1", Sex.FEMALE: "2", Sex.UNKNOWN: "3"}
_CARD_CODES = {Sex.MALE: "1", Sex.FEMALE: "2", Sex.UNKNOWN: "9"}
_KANJI = {Sex.MALE: "男", Sex.FEMALE: "女", Sex.UNKNOWN: "不明"}
_PARSE = {
    "male": Sex.MALE, "m": Sex.MALE, "1": Sex.MALE, "男": Sex.MALE, "男性": Sex.MALE,
    "female": Sex.FEMALE, "f": Sex.FEMALE, "2": Sex.FEMALE, "女": Sex.FEMALE, "女性": Sex.FEMALE,
    "unknown": Sex.UNKNOWN, "3": Sex.UNKNOWN, "9": Sex.UNKNOWN, "不明": Sex.UNKNOWN,
}


# --------------------------------------------------------------------------- eras


class Era(NamedTuple):
    code: int
    kanji: str
    romaji: str
    start: _dt.date  # first day of the era (Gregorian)


#: Eras since the Meiji restoration. Meiji starts on its proclamation day, 1868-10-23 (Keiō 4,
#: 9th month, 8th day), not the retroactive 1868-01-25.
ERAS: tuple[Era, ...] = (
    Era(1, "明治", "Meiji", _dt.date(1868, 10, 23)),
    Era(2, "大正", "Taisho", _dt.date(1912, 7, 30)),
    Era(3, "昭和", "Showa", _dt.date(1926, 12, 25)),
    Era(4, "平成", "Heisei", _dt.date(1989, 1, 8)),
    Era(5, "令和", "Reiwa", _dt.date(2019, 5, 1)),
)


def _as_date(value: _dt.date) -> _dt.date:
    if isinstance(value, _dt.datetime):
        return value.date()
    if not isinstance(value, _dt.date):
        raise TypeError(f"expected a datetime.date, got {type(value).__name__}")
    return value


def era_of(day: _dt.date) -> Era:
    """The era a Gregorian date falls in; ValueError before 明治 (1868-10-23)."""
    day = _as_date(day)
    for era in reversed(ERAS):
        if day >= era.start:
            return era
    raise ValueError(f"{day.isoformat()} is before the Meiji era")


def japanese_era(day: _dt.date) -> tuple[str, int]:
    """``(era name in kanji, year within the era)``: 1975-11-03 → ``('昭和', 50)``.

    The first year of an era (元年) is year 1.
    """
    era = era_of(day)
    return era.kanji, _as_date(day).year - era.start.year + 1


def encode_era_date(day: _dt.date | None) -> str:
    """``EYYYYMMDD`` as in the signing certificate: era digit + Gregorian date (9 characters).

    ``None`` (birth date unknown) encodes as ``000000000``.
    """
    if day is None:
        return "0" + "0" * 8
    day = _as_date(day)
    return f"{era_of(day).code}{day.year:04d}{day.month:02d}{day.day:02d}"


_ERA_DATE_RE = re.compile(r"[0-9]{9}", re.ASCII)


def decode_era_date(text: str) -> _dt.date | None:
    """Decode ``EYYYYMMDD``; ``None`` when the era digit is 0 (unknown).

    Raises ValueError on a malformed value, an impossible date, an unknown era digit or an era
    digit that does not match the date.
    """
    if not isinstance(text, str) or not _ERA_DATE_RE.fullmatch(text):
        raise ValueError(f"not an era-coded date (EYYYYMMDD): {text!r}")
    code = int(text[0])
    if code == 0:
        return None
    if code > len(ERAS):
        raise ValueError(f"unknown era digit {code} in {text!r}")
    try:
        day = _dt.date(int(text[1:5]), int(text[5:7]), int(text[7:9]))
    except ValueError as exc:
        raise ValueError(f"impossible date in {text!r}: {exc}") from None
    actual = era_of(day)
    if actual.code != code:
        raise ValueError(
            f"era digit {code} does not match {day.isoformat()} ({actual.kanji}, digit {actual.code})"
        )
    return day


def age_on(birth_date: _dt.date, day: _dt.date) -> int:
    """Completed years of age on ``day`` (a 29 February birthday counts on 28 February in
    common years)."""
    birth_date, day = _as_date(birth_date), _as_date(day)
    years = day.year - birth_date.year
    if (day.month, day.day) < (birth_date.month, birth_date.day):
        years -= 1
    if (birth_date.month, birth_date.day) == (2, 29) and (day.month, day.day) == (2, 28) and not _is_leap(day.year):
        years += 1
    return years


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


# --------------------------------------------------------------------------- numbers


def _digits(text: str, length: int, what: str) -> list[int]:
    if not isinstance(text, str) or len(text) != length or not (text.isascii() and text.isdigit()):
        raise ValueError(f"{what} must be {length} ASCII digits")
    return [int(c) for c in text]


def mynumber_check_digit(first11: str) -> int:
    """Check digit of a My Number (個人番号) from its first 11 digits (spec §10)."""
    digits = _digits(first11, 11, "the first part of a My Number")
    total = 0
    for n in range(1, 12):
        p = digits[11 - n]  # P1 is the digit next to the check digit
        q = n + 1 if n <= 6 else n - 5
        total += p * q
    r = total % 11
    return 0 if r <= 1 else 11 - r


def is_valid_mynumber(text: str) -> bool:
    """True for exactly 12 ASCII digits whose last one is the right check digit."""
    if not isinstance(text, str) or len(text) != 12 or not (text.isascii() and text.isdigit()):
        return False
    return mynumber_check_digit(text[:11]) == int(text[11])


def generate_mynumber(rng: random.Random | None = None) -> str:
    """A random valid My Number (first digit 1–9). Uses ``secrets`` unless ``rng`` is given."""
    randbelow = rng.randrange if rng is not None else secrets.randbelow
    body = str(1 + randbelow(9)) + "".join(str(randbelow(10)) for _ in range(10))
    return body + str(mynumber_check_digit(body))


def corporate_number_check_digit(last12: str) -> int:
    """Check digit (the **first** digit) of a corporate number (法人番号) from the other 12."""
    digits = _digits(last12, 12, "the body of a corporate number")
    total = 0
    for n in range(1, 13):
        p = digits[12 - n]  # P1 is the least significant digit
        total += p * (1 if n % 2 else 2)
    return 9 - total % 9


def is_valid_corporate_number(text: str) -> bool:
    """True for exactly 13 ASCII digits whose first one is the right check digit."""
    if not isinstance(text, str) or len(text) != 13 or not (text.isascii() and text.isdigit()):
        return False
    return corporate_number_check_digit(text[1:]) == int(text[0])


def generate_corporate_number(rng: random.Random | None = None) -> str:
    """A random valid corporate number. Uses ``secrets`` unless ``rng`` is given."""
    randbelow = rng.randrange if rng is not None else secrets.randbelow
    body = "".join(str(randbelow(10)) for _ in range(12))
    return str(corporate_number_check_digit(body)) + body


# --------------------------------------------------------------------------- masking


def mask_mynumber(text: str) -> str:
    """Hide a My Number completely: ``**** **** ****`` for 12 digits, else one ``*`` per
    character. Nothing of the number survives, not even its last digits."""
    text = "" if text is None else str(text)
    if sum(c.isdigit() for c in text) == 12:
        return "**** **** ****"
    return "*" * len(text)


def mask_text(text: str) -> str:
    """Hide personal text (a name, an address) for traces and logs: the first character, then
    ``＊`` for each other one. A one-character text becomes ``＊``."""
    text = "" if text is None else str(text)
    if len(text) <= 1:
        return FULLWIDTH_ASTERISK * len(text)
    return text[0] + FULLWIDTH_ASTERISK * (len(text) - 1)


_FULLWIDTH_DIGITS = str.maketrans("0123456789", "０１２３４５６７８９")


def to_fullwidth_digits(text: str) -> str:
    """ASCII digits → full-width digits (the card and the certificate use full-width ones)."""
    return text.translate(_FULLWIDTH_DIGITS)


# --------------------------------------------------------------------------- persona


_ROMAN_RE = re.compile(r"[A-Za-z][A-Za-z0-9 .'\-]*", re.ASCII)


@dataclasses.dataclass(frozen=True)
class Persona:
    """A (fictional) card holder: the basic 4 info plus what the certificates need.

    ``address`` is normalised to full-width digits; ``sex`` may be given as a string and is
    parsed with :meth:`Sex.parse`. ``prefecture`` and ``municipality`` are the romanised names
    used in the signing certificate subject (``L=Tokyo, L=Chiyoda-ku``).
    """

    name: str
    address: str
    birth_date: _dt.date
    sex: Sex
    prefecture: str
    municipality: str
    my_number: str | None = None
    name_kana: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("persona name must not be empty")
        if self.name != self.name.strip() or any(ord(c) < 0x20 for c in self.name):
            raise ValueError("persona name has surrounding whitespace or control characters")
        if not isinstance(self.address, str) or not self.address.strip():
            raise ValueError("persona address must not be empty")
        if any(ord(c) < 0x20 for c in self.address):
            raise ValueError("persona address has control characters")
        object.__setattr__(self, "address", to_fullwidth_digits(self.address.strip()))
        if isinstance(self.birth_date, _dt.datetime) or not isinstance(self.birth_date, _dt.date):
            raise TypeError("birth_date must be a datetime.date")
        era_of(self.birth_date)  # before Meiji cannot be era-coded
        object.__setattr__(self, "sex", Sex.parse(self.sex))
        for field in ("prefecture", "municipality"):
            value = getattr(self, field)
            if not isinstance(value, str) or not _ROMAN_RE.fullmatch(value):
                raise ValueError(f"persona {field} must be romanised ASCII, got {value!r}")
        if self.my_number is not None and not is_valid_mynumber(self.my_number):
            raise ValueError("persona my_number is not a valid My Number (12 digits, check digit)")
        if self.name_kana is not None and not self.name_kana.strip():
            raise ValueError("persona name_kana must not be blank")

    def __repr__(self) -> str:
        # Never let a My Number reach a log through repr().
        mn = "None" if self.my_number is None else repr(mask_mynumber(self.my_number))
        return (
            f"Persona(name={self.name!r}, address={self.address!r}, "
            f"birth_date={self.birth_date!r}, sex={self.sex}, prefecture={self.prefecture!r}, "
            f"municipality={self.municipality!r}, my_number={mn}, name_kana={self.name_kana!r})"
        )

    @property
    def family_name(self) -> str:
        """The part of ``name`` before U+3000 (the whole name if there is none)."""
        return self.name.split(IDEOGRAPHIC_SPACE, 1)[0]

    @property
    def given_name(self) -> str:
        """The part of ``name`` after U+3000 (empty if there is none)."""
        parts = self.name.split(IDEOGRAPHIC_SPACE, 1)
        return parts[1] if len(parts) == 2 else ""

    def age_on(self, day: _dt.date) -> int:
        """Completed years of age on ``day``."""
        return age_on(self.birth_date, day)

    def replace(self, **changes: Any) -> Persona:
        """A copy with some fields changed (moving, marriage…), validated again."""
        return dataclasses.replace(self, **changes)


#: Fictional personas for tests and demos. Names and addresses are made up; My Numbers are left
#: ``None`` and generated at provisioning.
SAMPLE_PERSONAS: dict[str, Persona] = {
    # Heisei-born adult, Tokyo.
    "alice": Persona(
        name="山田　花子",
        name_kana="ヤマダ　ハナコ",
        address="東京都千代田区神田神保町３丁目２番地１",
        birth_date=_dt.date(1990, 4, 15),
        sex=Sex.FEMALE,
        prefecture="Tokyo",
        municipality="Chiyoda-ku",
    ),
    # Showa-born adult, Osaka.
    "bob": Persona(
        name="鈴木　一郎",
        name_kana="スズキ　イチロウ",
        address="大阪府大阪市北区梅田２丁目４番９号",
        birth_date=_dt.date(1975, 11, 3),
        sex=Sex.MALE,
        prefecture="Osaka",
        municipality="Osaka-shi Kita-ku",
    ),
    # Sex not recorded; born on 29 February (Heisei 12).
    "carol": Persona(
        name="佐藤　みのり",
        name_kana="サトウ　ミノリ",
        address="福岡県福岡市中央区天神１丁目８番１号",
        birth_date=_dt.date(2000, 2, 29),
        sex=Sex.UNKNOWN,
        prefecture="Fukuoka",
        municipality="Fukuoka-shi Chuo-ku",
    ),
    # Under 18 until 2030 (Heisei 24): 5-year card.
    "dave": Persona(
        name="田中　翔太",
        name_kana="タナカ　ショウタ",
        address="神奈川県横浜市中区日本大通１番地",
        birth_date=_dt.date(2012, 6, 10),
        sex=Sex.MALE,
        prefecture="Kanagawa",
        municipality="Yokohama-shi Naka-ku",
    ),
}
