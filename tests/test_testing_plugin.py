"""The jpki pytest plugin (jpki.testing.plugin), as a project that installs jpki uses it.

This suite loads the plugin itself (conftest.py), so its fixtures are used here directly; the
``pytester`` runs are small projects of their own that load it with ``-p`` (as the entry point
would), and the guide's complete test (docs/testing.md) runs as written.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import os
import re
import tomllib
from pathlib import Path

import pytest
from cryptography import x509

from jpki.certinfo import signing_identity
from jpki.clock import JST
from jpki.errors import UsageError
from jpki.testing import plugin
from jpki.testing.cards import MOVED_ADDRESS, PIN_ITERATIONS, STATES
from jpki.testing.pcsc import missing_reason, unavailable

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "testing.md"
GUIDE_MARK = "<!-- testing-guide:"
#: How the small projects below run: the plugin as the entry point would load it; none of the
#: plugins of this suite's environment they do not need (hypothesis' summary alone costs ~1 s).
PROJECT_RUN = ("-p", "jpki.testing.plugin", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:xdist")


# --------------------------------------------------------------------------- card states


def records(card) -> dict[str, list]:
    """The CA's records of a card, by kind: the ones replaced first, the card's current one last."""
    current = {"auth": card.holder.auth_serial, "sign": card.holder.sign_serial}
    found: dict[str, list] = {"auth": [], "sign": []}
    for record in card.factory.ca.db.list(card=card.name):
        found[record.kind].append(record)
    return {kind: sorted(rows, key=lambda r: r.serial_number == current[kind]) for kind, rows in found.items()}


def tries(card) -> dict[str, int]:
    with card.session() as jpki, card.card_info() as info:
        return {"auth": jpki.tries_left("auth"), "sign": jpki.tries_left("sign"), "card": info.tries_left("card")}


def valid_now(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now < cert.not_valid_after_utc


def check_active(card, now):
    assert card.holder.status == "active"
    assert all(valid_now(card.certificate(kind), now) for kind in ("auth", "sign"))
    assert tries(card) == {"auth": 3, "sign": 5, "card": 3}


def check_expired(card, now):
    assert all(card.certificate(kind).not_valid_after_utc < now for kind in ("auth", "sign"))
    assert card.holder.card_expiry > now.astimezone(JST).date(), "the card itself is still valid"


def check_card_expired(card, now):
    assert card.holder.card_expiry == now.astimezone(JST).date() - dt.timedelta(days=1)
    assert all(card.certificate(kind).not_valid_after_utc < now for kind in ("auth", "sign"))


def check_revoked(card, now):
    assert card.holder.status == "lost"
    assert {(r.kind, r.status, r.reason) for rows in records(card).values() for r in rows} \
        == {("auth", "revoked", "keyCompromise"), ("sign", "revoked", "keyCompromise")}


def check_renewed(card, now):
    rows = records(card)
    for kind in ("auth", "sign"):
        old, new = rows[kind]
        assert (old.status, old.reason, new.status) == ("revoked", "superseded", "good")
        assert card.factory.ca.db.successors(old.serial) == [new.serial]
        assert card.certificate(kind).serial_number == new.serial_number


def check_moved(card, now):
    rows = records(card)
    assert [r.status for r in rows["auth"]] == ["good"], "a move keeps the authentication certificate"
    old, new = rows["sign"]
    assert (old.status, old.reason, new.status) == ("revoked", "affiliationChanged", "good")
    assert card.persona.address == signing_identity(card.certificate("sign")).address == MOVED_ADDRESS
    with card.card_info() as info:
        info.verify("card", card.pins.card)
        assert info.read_basic_info().address == MOVED_ADDRESS


def blocked(pin):
    def check(card, now):
        assert tries(card) == {"auth": 3, "sign": 5, "card": 3} | {pin: 0}
    return check


CHECKS = {"active": check_active, "expired": check_expired, "card_expired": check_card_expired,
          "revoked": check_revoked, "lost": check_revoked, "renewed": check_renewed, "moved": check_moved,
          "blocked_pin": blocked("auth"), "blocked_sign_pin": blocked("sign"), "blocked_card_pin": blocked("card")}


def test_every_state_has_a_check():
    assert set(CHECKS) == set(STATES)


@pytest.mark.parametrize("state", STATES)
def test_each_state_makes_the_card_it_names(make_card, clock, state):
    card = make_card(state=state)
    assert card.states == (state,)
    CHECKS[state](card, clock.now())


def test_states_combine_in_order(make_card, clock):
    card = make_card(state=["moved", "blocked_sign_pin"])
    check_moved(card, clock.now())
    blocked("sign")(card, clock.now())


def test_names_personas_and_pins(make_card):
    first, second = make_card(), make_card()
    bob = make_card(persona="bob", pins={"auth": "4321", "sign": "xyz789"})
    named = make_card("shop-customer", persona="bob")
    assert [c.name for c in (first, second, bob, named)] == ["alice", "alice-2", "bob", "shop-customer"]
    assert first.persona.name == "山田　花子" and bob.persona.name == "鈴木　一郎"
    assert first.persona.my_number != second.persona.my_number, "every card has a My Number of its own"
    assert (bob.pins.auth, bob.pins.sign, bob.pins.card) == ("4321", "xyz789", "4321")
    with bob.session() as session:
        session.verify("auth", "4321")
        session.verify("sign", "XYZ789")  # the password as the card compares it
    with bob.card_info() as info:
        info.verify("card", "4321")
    assert first.uri == "emu:alice" and first.directory == first.home.card_dir("alice")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"state": "stolen"}, "unknown card state 'stolen'"),
    ({"state": ["expired", "card_expired"]}, "either 'expired' or 'card_expired'"),
    ({"persona": "mallory"}, "unknown persona 'mallory'"),
    ({"pins": {"puk": "1"}}, "unknown PIN 'puk'"),
])
def test_what_the_factory_refuses(make_card, kwargs, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        make_card(**kwargs)


def test_the_profile_goes_to_the_card(make_card):
    card = make_card(profile={"one_signature_per_verify": True})
    profile = json.loads((card.directory / "card.json").read_text(encoding="utf-8"))["profile"]
    assert profile["one_signature_per_verify"] is True


def test_a_test_card_waits_for_no_disk_and_hashes_its_pins_once(make_card, monkeypatch):
    """What makes a card cost milliseconds, besides the key pool (docs/testing.md)."""
    synced = []
    monkeypatch.setattr(os, "fsync", synced.append)
    card = make_card()
    assert synced == []
    state = json.loads((card.directory / "state.json").read_text(encoding="utf-8"))
    assert {record["iterations"] for record in state["pins"].values()} == {PIN_ITERATIONS}


def test_no_two_cards_share_a_key(make_card):
    cards = [make_card() for _ in range(8)]
    moduli = {c.certificate(kind).public_key().public_numbers().n for c in cards for kind in ("auth", "sign")}
    assert len(moduli) == 16


def test_one_clock_for_the_ca_the_cards_and_the_tests(make_card, clock, jpki_ca):
    assert jpki_ca.clock is clock
    before = make_card()
    clock.advance(days=400)
    after = make_card()
    assert after.certificate("auth").not_valid_before_utc == clock.now()
    assert before.certificate("auth").not_valid_before_utc == clock.now() - dt.timedelta(days=400)


# --------------------------------------------------------------------------- a project of its own

PROJECT_CONFTEST = '''
import datetime as dt
import pytest
from jpki.clock import FixedClock

pytest_plugins = ["jpki.testing.plugin"]   # besides -p on the command line: harmless


@pytest.fixture
def jpki_clock():
    """A start of the project's own: every fixture of the plugin follows it."""
    return FixedClock(dt.datetime(2027, 1, 10, tzinfo=dt.UTC))
'''

PROJECT_TESTS = '''
import asyncio
import datetime as dt

from cryptography.hazmat.primitives.serialization import Encoding

from jpki.home import Home
from jpki.session import JpkiSession

SELECT_JPKI_AP = bytes.fromhex("00A4040C0AD392F000260100000001")


def test_a_home_a_ca_and_a_card_in_process(jpki_home, jpki_ca, jpki_card, jpki_transport, clock):
    assert isinstance(jpki_home, Home) and jpki_ca.directory == jpki_home.path / "ca"
    assert jpki_card.directory.parent == jpki_home.path / "cards"
    assert clock.now() == dt.datetime(2027, 1, 10, tzinfo=dt.UTC)  # the conftest's clock, everywhere
    assert jpki_card.certificate("auth").not_valid_before_utc == clock.now()
    assert jpki_transport.transmit(SELECT_JPKI_AP) == bytes.fromhex("9000")
    der = JpkiSession(jpki_transport).read_certificate("auth")
    assert der == jpki_card.certificate("auth").public_bytes(Encoding.DER)


def test_the_validator_asks_the_running_server(make_card, jpki_validator, jpki_revocation_server, jpki_ca, clock):
    assert jpki_revocation_server.url == jpki_ca.base_url  # where the certificates point
    good, lost = make_card(), make_card(state="revoked")
    checked = jpki_validator.validate(good.certificate("auth"), kind="auth")
    assert checked.ok and checked.revocation.method == "ocsp"
    assert jpki_validator.validate(lost.certificate("sign"), kind="sign").reason == "revoked"
    clock.advance(days=1580)  # past alice's 5th birthday after issuance, the CA still valid
    assert jpki_validator.validate(good.certificate("auth"), kind="auth").reason == "expired"


def test_the_provider_knows_the_cards(jpki_idp, make_card):
    make_card(persona="bob")

    async def jwks():
        async with jpki_idp.http() as http:
            return await http.get("/api/realms/main/protocol/openid-connect/certs")

    assert "bob" in jpki_idp.cards.cards()
    assert asyncio.run(jwks()).json()["keys"][0]["alg"] == "ES256"
'''


def test_a_project_uses_the_fixtures(pytester):
    pytester.makeconftest(PROJECT_CONFTEST)
    pytester.makepyfile(test_app=PROJECT_TESTS)
    result = pytester.runpytest(*PROJECT_RUN, "-q")
    result.assert_outcomes(passed=3)


def test_an_unusable_key_pool_is_one_line_not_a_traceback(pytester, monkeypatch):
    in_the_way = pytester.path / "pool"
    in_the_way.write_text("a file")
    monkeypatch.setenv("JPKI_KEYPOOL", str(in_the_way))
    pytester.makepyfile(test_app="def test_card(jpki_card):\n    pass\n")
    result = pytester.runpytest(*PROJECT_RUN)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*key pool {in_the_way}: not a directory (set $JPKI_KEYPOOL*"])
    assert "Traceback" not in result.stdout.str() and "keypool.py" not in result.stdout.str()


@pytest.mark.pcsc
def test_a_card_in_a_pcsc_reader(pytester):
    reason = missing_reason()
    if reason:
        unavailable(reason)
    pytester.makepyfile(test_reader='''
from cryptography.hazmat.primitives.serialization import Encoding

from jpki.session import JpkiSession
from jpki.transport import open_transport


def test_read_over_pcsc(jpki_reader, jpki_card):
    with open_transport(f"pcsc:{jpki_reader}") as transport:
        der = JpkiSession(transport).read_certificate("auth")
    assert der == jpki_card.certificate("auth").public_bytes(Encoding.DER)
''')
    result = pytester.runpytest(*PROJECT_RUN, "-m", "pcsc")
    result.assert_outcomes(passed=1)  # the plugin marked it pcsc


# --------------------------------------------------------------------------- the guide


def guide_test() -> str:
    """The complete test of docs/testing.md: the python block after its marker."""
    text = GUIDE.read_text(encoding="utf-8")
    after = text[text.index(GUIDE_MARK):]
    match = re.search(r"```python\n(.*?)```", after, re.S)
    assert match, "docs/testing.md: no python block after the testing-guide marker"
    return match.group(1)


def readme_example() -> str:
    """The plugin's example in README.md (its section "Testing your application")."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Testing your application"):]
    match = re.search(r"```python\n(.*?)```", section[:section.index("\n## ", 3)], re.S)
    assert match, "README.md: no python block in 'Testing your application'"
    return match.group(1)


def test_the_guides_complete_test_runs_as_written(pytester):
    code = guide_test()
    assert len(code.splitlines()) < 40, "the guide promises a complete test in under 40 lines"
    imported = {n.module if isinstance(n, ast.ImportFrom) else a.name
                for n in ast.walk(ast.parse(code)) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in n.names}
    assert imported == {"pytest", "jpki.auth", "jpki.auth.client", "jpki.errors", "jpki.sign"}, \
        "the plugin's fixtures only"
    pytester.makepyfile(test_shop=code, test_readme_example=readme_example())
    result = pytester.runpytest(*PROJECT_RUN, "-rs")
    result.assert_outcomes(passed=6)


def test_the_guide_lists_every_fixture():
    tree = ast.parse(Path(plugin.__file__).read_text(encoding="utf-8"))
    fixtures = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)
                and any("fixture" in ast.unparse(d) for d in node.decorator_list)}
    assert {"make_card", "clock", "jpki_reader"} <= fixtures
    guide = GUIDE.read_text(encoding="utf-8")
    assert [name for name in sorted(fixtures) if f"`{name}`" not in guide] == []
    assert [name for name in sorted(fixtures) if f"``{name}``" not in plugin.__doc__] == []


def test_the_entry_point_is_named_after_the_module():
    """pytest skips a plugin whose name is already registered: with the entry point named like
    the module, ``-p jpki.testing.plugin`` and ``pytest_plugins`` do nothing once it is installed."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["entry-points"]["pytest11"] == {"jpki.testing.plugin": "jpki.testing.plugin"}


FAULT_TESTS = '''
import os

import pytest

from jpki.errors import CardRemovedError
from jpki.transport import emu

made = []


def test_a_fault_fires_in_the_test_that_set_it(make_card):
    card = make_card()
    card.faults.remove_after(1)
    made.append(os.path.abspath(card.directory))
    with card.transport() as transport:
        transport.transmit(bytes.fromhex("00A4040C0AD3921000310001010408"))
        with pytest.raises(CardRemovedError):
            transport.transmit(bytes.fromhex("00A4020C020006"))


def test_and_ends_with_it():
    assert made and made[0] not in emu._PLANS
'''


def test_faults_set_on_a_card_end_with_the_test(pytester):
    pytester.makepyfile(test_shop_faults=FAULT_TESTS)   # not test_faults: this suite has one
    pytester.runpytest(*PROJECT_RUN, "-q").assert_outcomes(passed=2)
