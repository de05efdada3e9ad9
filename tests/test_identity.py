"""jpki.identity: sex codes, era-coded dates, check digits, masking, personas."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jpki.identity import (
    ERAS,
    SAMPLE_PERSONAS,
    Persona,
    Sex,
    age_on,
    corporate_number_check_digit,
    decode_era_date,
    encode_era_date,
    era_of,
    generate_corporate_number,
    generate_mynumber,
    is_valid_corporate_number,
    is_valid_mynumber,
    japanese_era,
    mask_mynumber,
    mask_text,
    mynumber_check_digit,
    to_fullwidth_digits,
)

D = dt.date


# --------------------------------------------------------------------------- Sex


def test_sex_codes() -> None:
    assert [s.cert_code for s in Sex] == ["1", "2", "3"]
    assert [s.card_code for s in Sex] == ["1", "2", "9"]
    for sex in Sex:
        assert Sex.from_cert_code(sex.cert_code) is sex
        assert Sex.from_card_code(sex.card_code) is sex


@pytest.mark.parametrize(
    "text, expected",
    [
        ("male", Sex.MALE), ("Female", Sex.FEMALE), (" unknown ", Sex.UNKNOWN),
        ("1", Sex.MALE), ("2", Sex.FEMALE), ("3", Sex.UNKNOWN), ("9", Sex.UNKNOWN),
        ("m", Sex.MALE), ("f", Sex.FEMALE), ("女", Sex.FEMALE), (Sex.MALE, Sex.MALE),
    ],
)
def test_sex_parse(text: str, expected: Sex) -> None:
    assert Sex.parse(text) is expected


@pytest.mark.parametrize("bad", ["", "x", "0", "4", "males"])
def test_sex_parse_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        Sex.parse(bad)


def test_sex_code_rejects_cross_codes() -> None:
    with pytest.raises(ValueError):
        Sex.from_cert_code("9")  # a card code, not a certificate code
    with pytest.raises(ValueError):
        Sex.from_card_code("3")


# --------------------------------------------------------------------------- eras


@pytest.mark.parametrize(
    "day, code, era, year",
    [
        (D(1868, 10, 23), "118681023", "明治", 1),
        (D(1912, 7, 29), "119120729", "明治", 45),
        (D(1912, 7, 30), "219120730", "大正", 1),
        (D(1926, 12, 24), "219261224", "大正", 15),
        (D(1926, 12, 25), "319261225", "昭和", 1),
        (D(1975, 11, 3), "319751103", "昭和", 50),
        (D(1989, 1, 7), "319890107", "昭和", 64),
        (D(1989, 1, 8), "419890108", "平成", 1),
        (D(2019, 4, 30), "420190430", "平成", 31),
        (D(2019, 5, 1), "520190501", "令和", 1),
        (D(2025, 4, 1), "520250401", "令和", 7),
    ],
)
def test_era_boundaries(day: dt.date, code: str, era: str, year: int) -> None:
    assert encode_era_date(day) == code
    assert len(code) == 9
    assert decode_era_date(code) == day
    assert japanese_era(day) == (era, year)


def test_era_table_is_ordered() -> None:
    assert [e.code for e in ERAS] == [1, 2, 3, 4, 5]
    assert all(a.start < b.start for a, b in itertools.pairwise(ERAS))


def test_unknown_birth_date() -> None:
    assert encode_era_date(None) == "000000000"
    assert decode_era_date("000000000") is None
    assert decode_era_date("019800101") is None  # era 0 means unknown whatever follows


def test_before_meiji_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_era_date(D(1868, 10, 22))
    with pytest.raises(ValueError):
        era_of(D(1800, 1, 1))


@pytest.mark.parametrize(
    "bad",
    [
        "419890107",  # Heisei digit on the last day of Showa
        "319890108",  # Showa digit on the first day of Heisei
        "520190430",
        "619900101",  # no such era
        "320250230",  # 30 February
        "31975110",  # 8 characters
        "3197511030",  # 10 characters
        "3１975110３",  # full-width digits
        "S19751103",
        "",
    ],
)
def test_decode_era_date_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        decode_era_date(bad)


@given(st.dates(min_value=D(1868, 10, 23), max_value=D(2200, 12, 31)))
def test_era_round_trip(day: dt.date) -> None:
    code = encode_era_date(day)
    assert code[1:] == day.strftime("%Y%m%d")
    assert decode_era_date(code) == day
    name, year = japanese_era(day)
    assert year >= 1
    assert ERAS[int(code[0]) - 1].kanji == name


def test_age_on() -> None:
    assert age_on(D(2007, 4, 1), D(2025, 3, 31)) == 17
    assert age_on(D(2007, 4, 1), D(2025, 4, 1)) == 18
    # 29 February: the birthday is taken as 28 February in common years.
    assert age_on(D(2000, 2, 29), D(2001, 2, 27)) == 0
    assert age_on(D(2000, 2, 29), D(2001, 2, 28)) == 1
    assert age_on(D(2000, 2, 29), D(2004, 2, 28)) == 3
    assert age_on(D(2000, 2, 29), D(2004, 2, 29)) == 4


# --------------------------------------------------------------------------- My Number


def _mynumber_residue(first11: str) -> int:
    """r of spec §10, independently of the implementation's loop."""
    p = [int(c) for c in reversed(first11)]  # p[0] is P1
    q = [2, 3, 4, 5, 6, 7, 2, 3, 4, 5, 6]
    return sum(a * b for a, b in zip(p, q, strict=True)) % 11


def test_mynumber_known_values() -> None:
    assert mynumber_check_digit("12345678901") == 8
    assert is_valid_mynumber("123456789018")
    for wrong in "012345679":
        assert not is_valid_mynumber("12345678901" + wrong)


@pytest.mark.parametrize(
    "bad", ["", "12345678901", "1234567890180", "12345678901a", "１２３４５６７８９０１８",
            " 123456789018", "1234-5678-9018", None, 123456789018]
)
def test_mynumber_malformed(bad: object) -> None:
    assert not is_valid_mynumber(bad)  # type: ignore[arg-type]


def test_mynumber_check_digit_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        mynumber_check_digit("1234567890")
    with pytest.raises(ValueError):
        mynumber_check_digit("1234567890x")


def test_mynumber_check_digit_matches_spec_formula() -> None:
    rng = random.Random(7)
    for _ in range(500):
        body = "".join(rng.choice("0123456789") for _ in range(11))
        r = _mynumber_residue(body)
        assert mynumber_check_digit(body) == (0 if r <= 1 else 11 - r)


def test_generate_mynumber_deterministic_with_rng() -> None:
    a = generate_mynumber(random.Random(42))
    assert a == generate_mynumber(random.Random(42))
    assert is_valid_mynumber(a) and a[0] != "0"
    assert is_valid_mynumber(generate_mynumber())


@settings(max_examples=200)
@given(st.randoms(use_true_random=False), st.integers(0, 11), st.integers(1, 9))
def test_mynumber_single_digit_change(rng: random.Random, pos: int, delta: int) -> None:
    number = generate_mynumber(rng)
    assert is_valid_mynumber(number)
    changed = number[:pos] + str((int(number[pos]) + delta) % 10) + number[pos + 1 :]
    if pos == 11 or not (_mynumber_residue(number[:11]) <= 1 and _mynumber_residue(changed[:11]) <= 1):
        assert not is_valid_mynumber(changed)
    # else: r went 0 <-> 1, both of which map to check digit 0 (a blind spot of the scheme)


def test_mynumber_blind_spot_exists() -> None:
    """The scheme maps r = 0 and r = 1 to the same check digit, so a few single-digit errors
    go unnoticed; the property test above allows exactly those."""
    body = "00000000000"  # r = 0
    for pos in range(11):
        for digit in "123456789":
            changed = body[:pos] + digit + body[pos + 1 :]
            if _mynumber_residue(changed) == 1:
                assert is_valid_mynumber(body + "0") and is_valid_mynumber(changed + "0")
                return
    pytest.fail("no r == 1 neighbour found")


# --------------------------------------------------------------------------- corporate number


def test_corporate_number_known_values() -> None:
    assert corporate_number_check_digit("010401089998") == 5
    assert is_valid_corporate_number("5010401089998")
    for wrong in "012346789":
        assert not is_valid_corporate_number(wrong + "010401089998")
    assert not is_valid_corporate_number("501040108999")
    assert not is_valid_corporate_number("50104010899980")
    assert not is_valid_corporate_number("501040108999x")


def test_corporate_check_digit_never_zero() -> None:
    rng = random.Random(3)
    for _ in range(300):
        body = "".join(rng.choice("0123456789") for _ in range(12))
        assert 1 <= corporate_number_check_digit(body) <= 9


@settings(max_examples=200)
@given(st.randoms(use_true_random=False), st.integers(0, 12), st.integers(1, 9))
def test_corporate_single_digit_change(rng: random.Random, pos: int, delta: int) -> None:
    number = generate_corporate_number(rng)
    assert is_valid_corporate_number(number)
    old = int(number[pos])
    new = (old + delta) % 10
    changed = number[:pos] + str(new) + number[pos + 1 :]
    if pos == 0 or {old, new} != {0, 9}:
        assert not is_valid_corporate_number(changed)
    # else: weights are 1 and 2 mod 9, so a 0 <-> 9 change is invisible to the check digit


# --------------------------------------------------------------------------- masking


def test_mask_mynumber_hides_everything() -> None:
    for text in ("123456789018", "1234 5678 9018", "1234-5678-9018"):
        masked = mask_mynumber(text)
        assert masked == "**** **** ****"
        assert not any(c.isdigit() for c in masked)
    assert mask_mynumber("12345") == "*****"
    assert mask_mynumber("") == ""


def test_mask_text() -> None:
    assert mask_text("山田　花子") == "山＊＊＊＊"
    assert mask_text("東京都千代田区") == "東＊＊＊＊＊＊"
    assert mask_text("A") == "＊"
    assert mask_text("") == ""


def test_to_fullwidth_digits() -> None:
    assert to_fullwidth_digits("1丁目2-3") == "１丁目２-３"


# --------------------------------------------------------------------------- Persona


def _persona(**changes: object) -> Persona:
    base = dict(
        name="山田　太郎",
        address="東京都千代田区1丁目2番3号",
        birth_date=D(1980, 1, 2),
        sex="male",
        prefecture="Tokyo",
        municipality="Chiyoda-ku",
    )
    base.update(changes)
    return Persona(**base)  # type: ignore[arg-type]


def test_persona_normalises() -> None:
    p = _persona()
    assert p.sex is Sex.MALE
    assert p.address == "東京都千代田区１丁目２番３号"
    assert p.family_name == "山田" and p.given_name == "太郎"
    assert p.age_on(D(2025, 1, 1)) == 44


def test_persona_is_frozen_and_replace_validates() -> None:
    p = _persona()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "x"  # type: ignore[misc]
    moved = p.replace(address="大阪府大阪市北区1番", prefecture="Osaka", municipality="Osaka-shi Kita-ku")
    assert moved.address == "大阪府大阪市北区１番" and p.prefecture == "Tokyo"
    with pytest.raises(ValueError):
        p.replace(my_number="123456789017")


@pytest.mark.parametrize(
    "changes",
    [
        {"name": ""},
        {"name": "   "},
        {"name": " 山田"},
        {"address": ""},
        {"my_number": "123456789017"},
        {"my_number": "12345678901"},
        {"prefecture": "東京都"},
        {"municipality": ""},
        {"sex": "x"},
        {"birth_date": D(1800, 1, 1)},
        {"name_kana": " "},
    ],
)
def test_persona_validation(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _persona(**changes)


def test_persona_birth_date_type() -> None:
    with pytest.raises(TypeError):
        _persona(birth_date=dt.datetime(1980, 1, 2))
    with pytest.raises(TypeError):
        _persona(birth_date="1980-01-02")


def test_persona_repr_masks_my_number() -> None:
    p = _persona(my_number="123456789018")
    assert "123456789018" not in repr(p)
    assert "**** **** ****" in repr(p)


def test_sample_personas() -> None:
    assert len(SAMPLE_PERSONAS) == 4
    on = D(2025, 4, 1)
    eras = {japanese_era(p.birth_date)[0] for p in SAMPLE_PERSONAS.values()}
    assert {"昭和", "平成"} <= eras
    assert any(p.sex is Sex.UNKNOWN for p in SAMPLE_PERSONAS.values())
    assert any(p.age_on(on) < 18 for p in SAMPLE_PERSONAS.values())
    assert any(p.birth_date.month == 2 and p.birth_date.day == 29 for p in SAMPLE_PERSONAS.values())
    for key, p in SAMPLE_PERSONAS.items():
        assert key.isascii() and key.islower()
        assert p.name.count("\u3000") == 1
        assert not any(c in "0123456789" for c in p.address)
        assert p.prefecture.isascii() and p.municipality.isascii()
        assert p.my_number is None or is_valid_mynumber(p.my_number)
