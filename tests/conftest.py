"""Shared fixtures: fixed clocks, a provisioned home (test CA + emulated cards) per test.

RSA key generation is the slow part, so one template home is built per session and copied for
each test that wants one (``shutil.copytree`` keeps the 0600 modes).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from cli_support import DEFAULT_CARD, Cli
from cryptography.hazmat.primitives.asymmetric import rsa
from fixed import FIXED_NOW, TEMPLATE_BASE_URL

from jpki.clock import FixedClock
from jpki.identity import SAMPLE_PERSONAS
from jpki.pki import TestCA
from jpki.provision import Home, create_card

CARDS = ("alice", "bob")


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory, monkeypatch):
    """Never touch the user's home or inherit their card settings."""
    fake_home = tmp_path_factory.mktemp("userhome")
    monkeypatch.setenv("HOME", str(fake_home))
    for var in ("JPKI_HOME", "JPKI_CARD", "JPKI_AUTH_PIN", "JPKI_SIGN_PIN", "JPKI_CARD_PIN"):
        monkeypatch.delenv(var, raising=False)
    # The CLI and the services (also as processes) start their clock where the fixtures' is.
    monkeypatch.setenv("JPKI_NOW", FIXED_NOW.isoformat())
    monkeypatch.setenv("JPKI_NOW_ANCHOR", repr(time.time()))


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(FIXED_NOW)


@pytest.fixture(scope="session")
def key_pool():
    """Pre-generated RSA-2048 keys, handed out in order (CA keys first)."""
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2 + 2 * len(CARDS))]


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


PCSC_FIXTURES = {"pcscd", "served_card", "_served_slot"}


def pytest_collection_modifyitems(config, items):
    """Every test that needs pcscd + vpcd carries the ``pcsc`` marker (``-m "not pcsc"`` skips
    them on a machine without it), whichever way it gets the reader."""
    for item in items:
        if PCSC_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.pcsc)


def pytest_report_header(config):
    return f"CI={os.environ.get('CI', '')!r}"


# --- PC/SC: pcscd + vpcd ----------------------------------------------------------------------

from pcsc_env import pcscd, reader_has_card, reader_name, vpcd_slot, wait_for  # noqa: E402,F401


class _ServedSlot:
    """One vpcd slot and bridge kept for a test module: each test swaps its own card in.

    Starting a bridge and waiting for pcscd to see the card (and to see it gone) costs about
    0.8 s; a swap costs nothing. pcscd keeps seeing a card in the reader; the new card object
    starts powered on with a clear security state, as after a reset.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader = reader_name(port)
        self.bridge = None
        self.thread = None

    def serve(self, card) -> str:
        from card_emulator.vpcd import VpcdBridge

        card.power_on()
        if self.bridge is None:
            self.bridge = VpcdBridge(card, "127.0.0.1", self.port)
            self.thread = self.bridge.start()
            assert wait_for(lambda: reader_has_card(self.reader), timeout=15), f"{self.reader} shows no card"
        else:
            old, self.bridge.card = self.bridge.card, card
            old.close()
        return self.reader

    def close(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
            self.thread.join(10)
            self.bridge.close()
            self.bridge.card.close()
            wait_for(lambda: not reader_has_card(self.reader), timeout=5)


@pytest.fixture(scope="module")
def _served_slot(pcscd):
    with vpcd_slot() as port:
        slot = _ServedSlot(port)
        try:
            yield slot
        finally:
            slot.close()


@pytest.fixture
def served_card(_served_slot, card_dir):
    """alice's card (of this test's home) served through vpcd: yields the PC/SC reader name."""
    from card_emulator import MyNumberCard

    return _served_slot.serve(MyNumberCard.open(card_dir))


# --- shared fixtures of the jpki.auth tests (login, eKYC): net, links, rp, alice, live_home; ------
# --- the OpenID Provider in process, in test-card mode: idp; the provider served for real and ---
# --- the local agent before it: served_idp, agent_browser ---------------------------------------

from agent_support import agent_browser, served_idp  # noqa: E402,F401
from auth_support import alice, links, live_home, net, rp  # noqa: E402,F401
from idp_support import idp  # noqa: E402,F401

# --- the signing tests: the test timestamp authority (tsa), the revocation server on the port -----
# --- the home's certificates name (ca_server) -----------------------------------------------------
from sign_support import _test_tsa, ca_server, tsa  # noqa: E402,F401
