"""Login and eKYC with alice's card served through pcscd + vpcd (the ``served_card`` fixture):
the client library over the PC/SC transport, and ``jpki login`` / ``jpki ekyc`` as processes
(which ask before spending a PIN try on a card in a reader, unless --force)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from auth_support import AUTH_PIN, SIGN_PIN, InProcessFetch, card_session

from jpki.auth.client import HttpxJson, ekyc, login
from jpki.auth.service import ServiceConfig, create_service
from jpki.clock import clock_from_environment
from jpki.pki.server import create_app as revocation_app
from jpki.provision import Home, read_holder
from jpki.serving import serve_in_thread

pytestmark = pytest.mark.pcsc
REPO = Path(__file__).resolve().parents[1]


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


def jpki(home: Path, reader: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jpki", "--home", str(home), "--card", f"pcsc:{reader}", *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def test_cli_over_pcsc_asks_before_spending_a_try(served_card, home, service_url):
    r = jpki(home, served_card, "login", service_url, "--rp-id", "http://127.0.0.1", "--pin", AUTH_PIN)
    assert r.returncode == 2 and "--force" in r.stderr
    r = jpki(home, served_card, "--force", "--json", "login", service_url, "--rp-id", "http://127.0.0.1",
             "--pin", AUTH_PIN)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["account"]["key"].startswith("jpki1:")
    r = jpki(home, served_card, "--force", "ekyc", service_url, "--rp-id", "http://127.0.0.1",
             env={"JPKI_SIGN_PIN": SIGN_PIN})
    assert r.returncode == 0, r.stderr
    assert "Identity verified" in r.stdout
