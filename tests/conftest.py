"""Shared fixtures: fixed clocks, a provisioned home (test CA + emulated cards) per test.

The jpki pytest plugin (jpki.testing.plugin) is loaded here, as any project would load it: its
key pool gives the keys of the template home below and its fixtures (``make_card``,
``jpki_reader``…) are at hand; ``jpki_clock`` is overridden to the fixed time of every test, so
``clock`` (the plugin's) is that too. One template home is built per session and copied for each
test that wants one (``shutil.copytree`` keeps the 0600 modes).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from cli_support import DEFAULT_CARD, Cli
from fixed import FIXED_NOW, TEMPLATE_BASE_URL

from jpki.clock import FixedClock
from jpki.identity import SAMPLE_PERSONAS
from jpki.pki import TestCA
from jpki.provision import Home, create_card
from jpki.testing.keypool import ENV_KEYPOOL, default_directory

# When the package is installed the entry point has loaded the plugin already (same name: no-op).
pytest_plugins = ["jpki.testing.plugin"]

CARDS = ("alice", "bob")
#: The machine's key pool, named before the tests move $HOME (test runs inside tests use it too).
KEYPOOL = default_directory()


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory, monkeypatch):
    """Never touch the user's home or inherit their card settings."""
    fake_home = tmp_path_factory.mktemp("userhome")
    monkeypatch.setenv("HOME", str(fake_home))
    monkeypatch.setenv(ENV_KEYPOOL, str(KEYPOOL))
    for var in ("JPKI_HOME", "JPKI_CARD", "JPKI_AUTH_PIN", "JPKI_SIGN_PIN", "JPKI_CARD_PIN"):
        monkeypatch.delenv(var, raising=False)
    # The CLI and the services (also as processes) start their clock where the fixtures' is.
    monkeypatch.setenv("JPKI_NOW", FIXED_NOW.isoformat())
    monkeypatch.setenv("JPKI_NOW_ANCHOR", repr(time.time()))


@pytest.fixture
def jpki_clock() -> FixedClock:
    """The plugin's clock (``clock``) at the time every test of this suite is written for."""
    return FixedClock(FIXED_NOW)


@pytest.fixture(scope="session")
def key_pool(jpki_keypool):
    """RSA-2048 keys from the machine's key pool, handed out in order (CA keys first)."""
    return jpki_keypool.keys(2 + 2 * len(CARDS))


@pytest.fixture(scope="session")
def template_home(tmp_path_factory, key_pool) -> Path:
    path = tmp_path_factory.mktemp("template") / "home"
    path.mkdir(mode=0o700)
    home = Home(path)
    fixed = FixedClock(FIXED_NOW)
    TestCA.init(home.ca_dir, clock=fixed, base_url=TEMPLATE_BASE_URL,
                keys={"sign": key_pool[0], "auth": key_pool[1]}).close()
    for i, name in enumerate(CARDS):
        create_card(home, name, SAMPLE_PERSONAS[name], clock=fixed, security_code="1357",
                    keys=(key_pool[2 + 2 * i], key_pool[3 + 2 * i]))
    return path


@pytest.fixture(scope="session")
def tsa_template(template_home, tmp_path_factory, jpki_keypool) -> Path:
    """A copy of the template home whose test TSA is made (``HOME/tsa``: an RSA key, a certificate
    from the template CA at FIXED_NOW, its URL). Read-only: take ``tsa_home`` (or copy it) to
    change anything."""
    from jpki.tsa.credentials import ensure_tsa

    path = tmp_path_factory.mktemp("tsa-template") / "home"
    shutil.copytree(template_home, path)
    with TestCA.open(path / "ca", clock=FixedClock(FIXED_NOW)) as ca:
        ensure_tsa(path, ca=ca, key=jpki_keypool.key())
    return path


@pytest.fixture
def tsa_home(tsa_template, tmp_path) -> Path:
    """A private copy of the provisioned home with its test TSA (``tsa_template``)."""
    dest = tmp_path / "tsa-home"
    shutil.copytree(tsa_template, dest)
    return dest


@pytest.fixture
def home(template_home, tmp_path) -> Path:
    """A private copy of the provisioned home: CA, cards ``alice`` and ``bob`` (default PINs)."""
    dest = tmp_path / "home"
    shutil.copytree(template_home, dest)
    return dest


@pytest.fixture
def cli(request) -> Cli:
    """The ``jpki`` command line on this test's ``home`` with alice's emulated card
    (tests/cli_support.py): ``cli("pin", "status")`` in process through ``jpki.cli.main``,
    ``cli.process(...)`` as ``python -m jpki``; ``home=``/``card=`` change them for one call.
    The home is taken when a run first needs it."""
    return Cli(lambda: request.getfixturevalue("home"), card=DEFAULT_CARD)


@pytest.fixture
def card_dir(home) -> Path:
    return home / "cards" / "alice"


@pytest.fixture
def emu_card(card_dir):
    """alice's emulated card, opened in process (card_emulator.MyNumberCard)."""
    from card_emulator import MyNumberCard

    card = MyNumberCard.open(card_dir)
    card.power_on()
    yield card
    card.close()


PCSC_FIXTURES = {"pcscd", "served_card"}


def pytest_collection_modifyitems(config, items):
    """Every test that needs pcscd + vpcd carries the ``pcsc`` marker (``-m "not pcsc"`` skips
    them on a machine without it), whichever way it gets the reader."""
    for item in items:
        if PCSC_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.pcsc)


def pytest_report_header(config):
    return f"CI={os.environ.get('CI', '')!r}"


# --- PC/SC: pcscd + vpcd (the plugin's jpki.testing.pcsc) -------------------------------------


@pytest.fixture(scope="session")
def pcscd(jpki_pcscd):
    """pcscd serving the vpcd reader (the plugin's ``jpki_pcscd``: skip, or fail when CI=true)."""
    return jpki_pcscd


@pytest.fixture
def served_card(jpki_vpcd_slot, card_dir):
    """alice's card (of this test's home) served through vpcd: yields the PC/SC reader name.
    The module keeps one slot (the plugin's ``jpki_vpcd_slot``); each test swaps its card in."""
    from jpki.transport.emu import EmulatorTransport

    return jpki_vpcd_slot.serve(EmulatorTransport(card_dir))


# --- shared fixtures of the jpki.auth tests (login, eKYC): net, links, rp, alice, live_home; ------
# --- the OpenID Provider in process, in test-card mode: idp; the provider served for real and ---
# --- the local agent before it: served_idp, agent_browser ---------------------------------------

from agent_support import agent_browser, served_idp  # noqa: E402,F401
from auth_support import alice, links, live_home, net, rp  # noqa: E402,F401
from idp_support import idp  # noqa: E402,F401

# --- the signing tests: the test timestamp authority (tsa), the revocation server on the port -----
# --- the home's certificates name (ca_server) -----------------------------------------------------
from sign_support import _test_tsa, ca_server, tsa  # noqa: E402,F401
