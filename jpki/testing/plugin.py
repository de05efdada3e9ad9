"""The jpki pytest plugin: fixtures for testing an application against My Number Cards.

Installed with ``jpki`` and loaded by pytest through the ``pytest11`` entry point
``jpki.testing.plugin`` (``-p no:jpki.testing.plugin`` turns it off; ``-p jpki.testing.plugin``
or ``pytest_plugins = ["jpki.testing.plugin"]`` loads it where the package is on the path but not
installed). The guide is docs/testing.md. The fixtures:

==========================  ========  ===========================================================
fixture                     scope     what
==========================  ========  ===========================================================
``jpki_clock``, ``clock``   function  a :class:`~jpki.clock.FixedClock` at :data:`START`, shared by
                                      the CA, the cards, the servers and the validator;
                                      ``clock.advance(days=400)``
``jpki_keypool``            session   the machine's :class:`~jpki.testing.keypool.KeyPool`
``jpki_ca``                 function  the open test CA of a new home (dated years back, see
                                      :func:`~jpki.testing.cards.new_test_ca`)
``jpki_home``               function  that home, a :class:`jpki.home.Home` on the clock
``make_card``               function  the :class:`~jpki.testing.cards.CardFactory`:
                                      ``make_card(persona=…, profile=…, pins=…, state=…)``
``jpki_card``               function  ``make_card()``: alice's card, active, default PINs
``jpki_transport``          function  ``jpki_card`` in this process (``jpki.transport.emu``)
``jpki_revocation_server``  function  the CA's OCSP/CRL server under uvicorn, on the port its
                                      certificates name
``jpki_validator``          function  a :class:`jpki.verify.Validator`: J-LIS roots + the test CA,
                                      OCSP (then CRL) from that server, on the clock
``jpki_idp``                function  the OpenID Provider in test-card mode, in process
                                      (:class:`~jpki.testing.idp.TestProvider`)
``jpki_pcscd``              session   pcscd with the vpcd driver (skip without it; fail if CI=true)
``jpki_vpcd_slot``          module    a vpcd slot for the module's tests
                                      (:class:`~jpki.testing.pcsc.VpcdSlot`)
``jpki_reader``             function  ``jpki_card`` served in that PC/SC reader: its name
                                      (``pcsc:NAME`` reaches it)
==========================  ========  ===========================================================

Tests that use the PC/SC fixtures get the ``pcsc`` marker (``-m "not pcsc"`` deselects them).
Every fixture is overridable the pytest way: a ``jpki_clock`` fixture of your own (another
start) is what every other fixture then uses. The plugin imports nothing heavy until a fixture
runs, and defines no autouse fixture: a project that installs jpki without using it pays nothing.
"""

from __future__ import annotations

import datetime as _dt
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

if TYPE_CHECKING:
    from jpki.clock import FixedClock
    from jpki.home import Home
    from jpki.pki import TestCA
    from jpki.serving import ServerThread
    from jpki.testing.cards import CardFactory, TestCard
    from jpki.testing.idp import TestProvider
    from jpki.testing.keypool import KeyPool
    from jpki.testing.pcsc import PcscdEnv, VpcdSlot
    from jpki.transport.emu import EmulatorTransport
    from jpki.verify import Validator

#: Where ``jpki_clock`` starts: a fixed instant, so that no test depends on today's date.
START: Final = _dt.datetime(2026, 11, 27, 3, 0, 0, tzinfo=_dt.UTC)
#: The fixtures that need pcscd + vpcd (their tests get the ``pcsc`` marker).
PCSC_FIXTURES: Final = frozenset({"jpki_pcscd", "jpki_vpcd_slot", "jpki_reader"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pcsc: needs pcscd + vpcd (skipped without them unless CI=true)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if PCSC_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.pcsc)


# --- time and keys ------------------------------------------------------------------------------


@pytest.fixture
def jpki_clock() -> FixedClock:
    """The test's clock, at :data:`START`; ``jpki_clock.advance(days=…)`` moves every party."""
    from jpki.clock import FixedClock

    return FixedClock(START)


@pytest.fixture
def clock(jpki_clock: FixedClock) -> FixedClock:
    """``jpki_clock`` by its short name."""
    return jpki_clock


@pytest.fixture(scope="session")
def jpki_keypool() -> KeyPool:
    """The machine's key pool ($JPKI_KEYPOOL, else ~/.cache/jpki/keypool), filled as cards need."""
    from jpki.testing.keypool import KeyPool, KeyPoolError

    try:
        return KeyPool()
    except KeyPoolError as exc:
        pytest.fail(str(exc), pytrace=False)


# --- the PKI and the cards ----------------------------------------------------------------------


@pytest.fixture
def jpki_ca(tmp_path: Path, jpki_clock: FixedClock, jpki_keypool: KeyPool) -> Iterator[TestCA]:
    """The test CA of a new home (``tmp_path/jpki-home``), open, on the clock."""
    from jpki.testing.cards import new_test_ca

    ca = new_test_ca(tmp_path / "jpki-home", jpki_clock, jpki_keypool)
    yield ca
    ca.close()


@pytest.fixture
def jpki_home(jpki_ca: TestCA, jpki_clock: FixedClock) -> Home:
    """The home of ``jpki_ca``: where ``make_card`` puts the cards (``emu:NAME`` with ``home=``)."""
    from jpki.home import Home

    return Home(jpki_ca.directory.parent, clock=jpki_clock)


@pytest.fixture
def make_card(jpki_home: Home, jpki_ca: TestCA, jpki_keypool: KeyPool, jpki_clock: FixedClock
              ) -> Iterator[CardFactory]:
    """Makes test cards: ``make_card(persona="bob", pins={"auth": "4321"}, state="expired")``;
    the faults set on them (``card.faults``) end with the test."""
    from jpki.testing.cards import CardFactory
    from jpki.transport.emu import forget_card_faults

    factory = CardFactory(jpki_home, jpki_ca, jpki_keypool, jpki_clock)
    yield factory
    for card in factory.cards:
        forget_card_faults(card.directory)


@pytest.fixture
def jpki_card(make_card: CardFactory) -> TestCard:
    """alice's card: active, PINs 1234 / ABC123."""
    return make_card()


@pytest.fixture
def jpki_transport(jpki_card: TestCard) -> Iterator[EmulatorTransport]:
    """``jpki_card`` in this process: ``transmit(apdu) -> response``."""
    with jpki_card.transport() as transport:
        yield transport


# --- servers ------------------------------------------------------------------------------------


@pytest.fixture
def jpki_revocation_server(jpki_ca: TestCA, jpki_clock: FixedClock, jpki_keypool: KeyPool
                           ) -> Iterator[ServerThread]:
    """The test CA's OCSP and CRL server (``jpki.pki.server``) in a thread, listening where the
    certificates' URLs point; ``.url``."""
    from jpki.pki.responder import issue_responder_cert
    from jpki.pki.server import serve_in_thread

    for kind in ("sign", "auth"):  # its delegated responders, keyed from the pool (the server
        issue_responder_cert(jpki_ca, kind, jpki_keypool.key())  # would generate two RSA keys)
    where = urllib.parse.urlsplit(jpki_ca.base_url)
    with serve_in_thread(jpki_ca.directory, where.hostname or "127.0.0.1", where.port or 80,
                         clock=jpki_clock) as server:
        yield server


@pytest.fixture
def jpki_validator(jpki_home: Home, jpki_clock: FixedClock, jpki_revocation_server: ServerThread
                   ) -> Iterator[Validator]:
    """Validates certificates as a relying party of the home would: J-LIS roots + the test CA,
    revocation by OCSP (then CRL) over HTTP, at the clock's time."""
    from jpki.verify import HttpFetcher, TrustStore, Validator

    fetcher = HttpFetcher()
    try:
        yield Validator(TrustStore.for_home(jpki_home.path), clock=jpki_clock, fetch=fetcher)
    finally:
        fetcher.close()


@pytest.fixture
def jpki_idp(jpki_home: Home, jpki_clock: FixedClock, jpki_revocation_server: ServerThread
             ) -> Iterator[TestProvider]:
    """The OpenID Provider of the home in test-card mode, in process: ``.app``, ``.http()``,
    ``.cards`` (the cards of ``make_card`` are its test cards)."""
    from jpki.testing.idp import build_test_provider

    provider = build_test_provider(jpki_home.path, jpki_clock)
    yield provider
    provider.close()


# --- PC/SC: pcscd + vpcd ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def jpki_pcscd() -> Iterator[PcscdEnv]:
    """A running pcscd that serves the vpcd reader (started if needed and allowed). Skips the
    test when there is none, or fails it when the environment says ``CI=true``."""
    from jpki.testing.pcsc import pcscd_fixture

    yield from pcscd_fixture()


@pytest.fixture(scope="module")
def jpki_vpcd_slot(jpki_pcscd: PcscdEnv) -> Iterator[VpcdSlot]:
    """A vpcd slot locked for this module's tests (each test serves its card in it)."""
    from jpki.testing.pcsc import VpcdSlot, vpcd_slot

    with vpcd_slot() as port:
        slot = VpcdSlot(port)
        try:
            yield slot
        finally:
            slot.close()


@pytest.fixture
def jpki_reader(jpki_vpcd_slot: VpcdSlot, jpki_card: TestCard) -> str:
    """``jpki_card`` in a PC/SC reader (pcscd + vpcd): the reader's name (``pcsc:NAME``)."""
    return jpki_vpcd_slot.serve(jpki_card.transport())


# --- faults ---------------------------------------------------------------------------------------
# Fault injection is ``card.faults`` of a card made by ``make_card`` (in process: every transport of
# the card carries it out; cleared at the end of the test by ``make_card``), and
# ``card_emulator.faults.ServedFaults`` / ``jpki emulator fault`` for a card served by
# ``jpki emulator serve`` (docs/faults.md).
