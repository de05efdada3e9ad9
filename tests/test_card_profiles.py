"""Card profiles (card_emulator.profile.PROFILES) and the common AP's record file.

The smartphone's JPKI, the plastic card with the roots of one J-LIS generation, and READ RECORD
of the card manufacture number (what jpki/myna's ``unknown`` and ``mpa`` read).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from card_support import make_card, transport
from cryptography import x509

from card_emulator import CardProfile
from card_emulator.content import card_id_record
from card_emulator.profile import PROFILES, profile_named
from jpki.clock import FixedClock
from jpki.errors import FileNotFoundOnCardError, SecurityStatusError, UsageError
from jpki.identity import SAMPLE_PERSONAS
from jpki.pki import TestCA, free_port
from jpki.pki.profiles import ROOT_GENERATION_START, root_generation
from jpki.provision import Home, create_card
from jpki.session import CardInfoSession, CommonSession, JpkiSession, SurfaceSession

SEL = {"jpki": "00A4040C0AD392F000260100000001", "text": "00A4040C0AD3921000310001010408",
       "surface": "00A4040C0AD3921000310001010402", "juki": "00A4040C0AD3921000310001010401",
       "common": "00A4040C0AD3921000310001010100"}


def tx(card, apdu: str) -> str:
    return card.transmit(bytes.fromhex(apdu.replace(" ", ""))).hex().upper()


# ----------------------------------------------------------------------------- the names
def test_profile_names_are_a_public_api():
    assert list(PROFILES) == ["card", "card-2015", "card-2023", "smartphone-android"]
    assert PROFILES["card"] == CardProfile()
    for name, profile in PROFILES.items():
        assert profile.name == name and profile_named(name) is profile
        assert CardProfile.from_json(profile.to_json()) == profile  # kept in card.json as data
    with pytest.raises(ValueError, match="unknown card profile 'iphone': use one of card, card-2015"):
        profile_named("iphone")


def test_a_card_json_of_before_the_profiles_still_opens():
    """Settings a card.json does not have take their defaults (a card made before they existed)."""
    old = {k: v for k, v in CardProfile().to_json().items()
           if k not in ("name", "card_face_aps", "auth_cert_needs_pin", "root_generation", "card_id_tag")}
    assert CardProfile.from_json(old) == CardProfile()


@pytest.mark.parametrize("changes, message", [
    ({"root_generation": "2019"}, "root_generation must be one of"),
    ({"name": "My Card"}, "name must be"),
    ({"card_id_tag": 0x1F}, "card_id_tag"),
    ({"card_face_aps": "no"}, "card_face_aps must be bool"),
])
def test_profile_settings_are_checked(changes, message):
    with pytest.raises(ValueError, match=message):
        CardProfile.from_json({**CardProfile().to_json(), **changes})


# ----------------------------------------------------------------------------- smartphone
@pytest.fixture
def phone(home, tmp_path):
    card = make_card(home, tmp_path / "phone", PROFILES["smartphone-android"])
    yield card
    card.close()


def test_smartphone_has_only_the_jpki_ap(phone):
    for ap in ("text", "surface", "juki", "common"):
        assert tx(phone, SEL[ap]) == "6A82", ap
    assert tx(phone, SEL["jpki"]) == "9000"
    assert set(phone.pin_status()) == {"auth", "sign"}


def test_smartphone_auth_certificate_needs_the_auth_pin(phone, home):
    j = JpkiSession(transport(phone))
    assert j.token_label() == "JPKIAPGPSETOKEN" and j.card_type() == "smartphone"
    with pytest.raises(SecurityStatusError):
        j.read_certificate("auth")
    ca_der = j.read_certificate("auth-ca")  # the CA certificates stay free
    j.verify("auth", "1234")
    cert = x509.load_der_x509_certificate(j.read_certificate("auth"))
    assert cert.issuer == x509.load_der_x509_certificate(ca_der).subject
    j.select_ap()  # logged out again
    with pytest.raises(SecurityStatusError):
        j.read_certificate("auth")


def test_host_commands_on_a_smartphone(cli, home):
    """``jpki info`` and ``pin status`` show the two PINs a phone has; ``cert read auth`` asks
    for the auth PIN first, as jpki/myna does."""
    done = cli("card", "create", "phone", "--profile", "smartphone-android", "--name", "鈴木　一郎",
               "--address", "大阪府大阪市北区梅田２丁目４番９号", "--birth", "1975-11-03", "--sex", "male",
               "--municipality", "Kita-ku")
    assert done.exit_code == 0, done.stderr
    assert json.loads((home / "cards" / "phone" / "card.json").read_text())["profile"]["name"] == \
        "smartphone-android"
    info = cli("--json", "info", card="emu:phone")
    assert info.exit_code == 0 and info.json()["pins"] == {"auth": 3, "sign": 5}
    assert info.json()["card_type"] == "smartphone"
    status = cli("--json", "pin", "status", card="emu:phone")
    assert set(status.json()) == {"auth", "sign"}
    read = cli("--json", "cert", "read", "auth", "--pin", "1234", card="emu:phone")
    assert read.exit_code == 0 and read.json()["kind"] == "auth"
    wrong = cli("cert", "read", "auth", "--pin", "9999", card="emu:phone")
    assert wrong.exit_code == 4 and "user-authentication PIN: wrong, 2 tries left" in wrong.stderr
    for command, ap in ((("visual", "basic-info"), "card-surface AP"), (("mynumber",), "card-info AP")):
        missing = cli(*command, card="emu:phone")
        assert missing.exit_code == 1 and f"this card has no {ap}" in missing.stderr, missing.stderr
        assert "smartphone" in missing.stderr and len(missing.stderr.strip().splitlines()) <= 2


def test_unknown_profile_is_a_usage_error(cli):
    done = cli("card", "create", "carol", "--profile", "iphone")
    assert done.exit_code == 2 and "iphone" in done.stderr


# ----------------------------------------------------------------------------- root generations
def test_roots_of_a_generation_are_dated_like_the_jlis_roots(tmp_path, key_pool):
    clock = FixedClock(dt.datetime(2022, 4, 1, 0, 0, tzinfo=dt.UTC))
    ca = TestCA.init(tmp_path / "ca", clock=clock, base_url=f"http://127.0.0.1:{free_port()}",
                     keys={"sign": key_pool[0], "auth": key_pool[1]}, generation="2015")
    try:
        for root in (ca.sign_ca_cert, ca.auth_ca_cert):
            assert root.not_valid_before_utc == ROOT_GENERATION_START["2015"]
            assert root.not_valid_after_utc == dt.datetime(2025, 10, 19, 14, 59, 59, tzinfo=dt.UTC)
            assert root_generation(root) == "2015"
    finally:
        ca.close()
    with pytest.raises(UsageError, match="root generation must be one of 2015, 2023"):
        TestCA.init(tmp_path / "ca2", clock=clock, base_url=f"http://127.0.0.1:{free_port()}", generation="2019")
    assert not (tmp_path / "ca2").exists()


def test_card_2015_needs_a_2015_ca_and_holds_its_roots(tmp_path, key_pool, home):
    """A 2015-era card is issued by a CA of 2015 roots, while they are valid; the default test CA
    (made in 2026) is of the 2023 generation."""
    persona = SAMPLE_PERSONAS["alice"]
    with pytest.raises(UsageError, match="holds 2015 roots, but this test CA's roots are of the 2023"):
        create_card(Home(home), "old", persona, profile="card-2015", keys=(key_pool[2], key_pool[3]))
    clock = FixedClock(dt.datetime(2022, 4, 1, 0, 0, tzinfo=dt.UTC))
    h = Home(tmp_path / "home-2015")
    TestCA.init(h.ca_dir, clock=clock, base_url=f"http://127.0.0.1:{free_port()}",
                keys={"sign": key_pool[0], "auth": key_pool[1]}, generation="2015").close()
    holder = create_card(h, "old", persona, profile="card-2015", clock=clock,
                         keys=(key_pool[2], key_pool[3]))
    content = json.loads((h.card_dir("old") / "card.json").read_text())
    assert content["profile"]["root_generation"] == "2015"
    from card_emulator import MyNumberCard

    with MyNumberCard.open(h.card_dir("old")) as card:
        j = JpkiSession(transport(card, "old"))
        root = x509.load_der_x509_certificate(j.read_certificate("sign-ca"))
        auth = x509.load_der_x509_certificate(j.read_certificate("auth"))
    assert root.not_valid_after_utc.date() == dt.date(2025, 10, 19)
    assert auth.not_valid_after_utc <= root.not_valid_after_utc  # never outlasts its root
    assert holder.card_expiry > dt.date(2025, 10, 19)  # the card itself lives on


# ----------------------------------------------------------------------------- the common AP
def test_common_ap_record_has_the_manufacture_number(home, tmp_path):
    card = make_card(home, tmp_path / "c", CardProfile(), manufacture_number="1234567890123")
    try:
        assert tx(card, SEL["common"]) == "9000"
        assert tx(card, "00B2010C00") == "300F" + b"001234567890123".hex().upper() + "9000"
        assert CommonSession(transport(card)).manufacture_number() == "1234567890123"
    finally:
        card.close()


@pytest.mark.parametrize("setup, apdu, sw", [
    ([SEL["common"]], "00B2020C00", "6A83"),          # one record only
    ([SEL["common"]], "00B2010D00", "6A86"),          # P2 mode 101: not supported
    ([SEL["common"]], "00B2FF0C00", "6A86"),
    ([SEL["common"]], "00B2011400", "6A82"),          # SFI 2: no such EF
    ([SEL["common"]], "00B2010400", "6986"),          # SFI 0 without a current EF
    ([SEL["common"]], "00B2010C", "6700"),            # no Le
    ([SEL["common"]], "00B2010C0100", "6700"),        # data
    ([SEL["common"]], "00B2010C04", "300F30309000"),  # Le cuts the record
    ([SEL["common"], "00A4020C020001"], "00B0000000", "6981"),  # READ BINARY of a record file
    ([SEL["jpki"]], "00B2015400", "6981"),            # READ RECORD of a binary file (EF 000A)
    ([], "00B2010C00", "6A82"),                       # no AP selected
])
def test_read_record_answers(emu_card, setup, apdu, sw):
    for command in setup:
        assert tx(emu_card, command) == "9000"
    assert tx(emu_card, apdu).startswith(sw)


def test_card_id_record_layout():
    assert card_id_record("ABC0000000001", 0x30) == b"\x30\x0f00ABC0000000001"
    with pytest.raises(ValueError):
        card_id_record("12345")


# ----------------------------------------------------------------------------- host sessions
def test_host_sessions_need_their_application(phone):
    t = transport(phone)
    for session in (CardInfoSession, SurfaceSession, CommonSession):
        with pytest.raises(FileNotFoundOnCardError):
            session(t)


# ----------------------------------------------------------------------------- host flows
def test_login_and_a_signature_with_a_smartphone(phone, rp, tmp_path):
    """The host's login and its card signer read the auth certificate after the PIN when the
    card gives it no sooner (a smartphone), as they did before on a card."""
    from jpki.auth.client import answer_login
    from jpki.sign import CardSigner

    session = JpkiSession(transport(phone))
    response = answer_login(rp.begin_login(), session, pin=lambda: "1234")
    result = rp.complete_login(response.to_json())
    assert result.ok, result.message
    session.select_ap()  # logged out
    signer = CardSigner.from_session(session, "auth", lambda: "1234")
    assert signer.certificate_der == response.certificate
