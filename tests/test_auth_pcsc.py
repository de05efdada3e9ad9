"""Login and eKYC with alice's card served through pcscd + vpcd (the ``served_card`` fixture):
the client library over the PC/SC transport, and ``jpki login`` / ``jpki ekyc`` as processes
(the ``cli`` fixture; they ask before spending a PIN try on a card in a reader, unless --force)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from auth_support import AUTH_PIN, SIGN_PIN, InProcessFetch, card_session

from jpki.auth.client import HttpxJson, ekyc, login
from jpki.auth.service import ServiceConfig, create_service
from jpki.clock import clock_from_environment
from jpki.pki.server import create_app as revocation_app
from jpki.provision import Home, read_holder
from jpki.serving import serve_in_thread

pytestmark = pytest.mark.pcsc


@pytest.fixture
def service_url(home) -> Iterator[str]:
    """The relying party of the home under uvicorn, on the clock of $JPKI_NOW (the client
    processes check expiry with theirs, from the same variables); OCSP answered in process by the
    CA's revocation server."""
    revocation = revocation_app(home / "ca", clock=clock_from_environment())
    fetch = InProcessFetch(revocation)
    app = create_service(ServiceConfig(home=home, rp_id="http://127.0.0.1"), clock=clock_from_environment(),
                         fetch=fetch)
    with serve_in_thread(app) as server:
        yield server.url
    app.state.close()
    revocation.state.service.close()


def test_both_flows_over_pcsc(served_card, home, service_url):
    with card_session(home, uri=f"pcsc:{served_card}") as session:
        answer = login(service_url, session, pin=lambda: AUTH_PIN, http=HttpxJson(),
                       expected_rp_id="http://127.0.0.1", clock=clock_from_environment())
        assert answer.ok, answer.document
        asked: list[tuple[str, int]] = []
        answer = ekyc(service_url, session, pin=lambda: SIGN_PIN, http=HttpxJson(),
                      expected_rp_id="http://127.0.0.1", transaction_text="PC/SC", clock=clock_from_environment(),
                      confirm=lambda kind, tries: asked.append((kind, tries)))
        assert answer.ok, answer.document
        assert asked == [("sign", 5)]
        assert answer.document["identity"]["name"] == read_holder(Home(home), "alice").persona.name


def test_cli_over_pcsc_asks_before_spending_a_try(cli, served_card, service_url):
    reader = cli.bind(card=f"pcsc:{served_card}")  # as processes: stdin is not a terminal
    r = reader.process("login", service_url, "--rp-id", "http://127.0.0.1", "--pin", AUTH_PIN)
    assert r.exit_code == 2 and "--force" in r.stderr
    r = reader.process("--force", "--json", "login", service_url, "--rp-id", "http://127.0.0.1",
                       "--pin", AUTH_PIN)
    assert r.exit_code == 0, r.stderr
    assert r.json()["account"]["key"].startswith("jpki1:")
    r = reader.process("--force", "ekyc", service_url, "--rp-id", "http://127.0.0.1",
                       env={"JPKI_SIGN_PIN": SIGN_PIN})
    assert r.exit_code == 0, r.stderr
    assert "Identity verified" in r.stdout
