"""Helpers of the local agent's tests (``jpki agent``), and their fixtures. Not a test module.

The provider runs for real under uvicorn on a free port (``served_idp``: the agent reaches it
over HTTP, as it would in use), on the ``home`` fixture's test CA and cards, the fixed clock,
and the test CA's revocation server in process (``net``). The agent's app is driven through
Starlette's ``TestClient`` under the agent's own origin, ``http://127.0.0.1:24780``, with the
headers a browser sends (:class:`AgentBrowser`); ``browser_support`` drives it with Chromium.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import urllib.parse
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 and warns when on httpx
    warnings.filterwarnings("ignore", message=".*httpx.*deprecated.*")
    from starlette.testclient import TestClient

from jpki.agent.app import create_app as agent_app
from jpki.agent.service import Agent, AgentConfig
from jpki.clock import FixedClock
from jpki.idp.app import create_app as idp_app
from jpki.idp.provider import Provider, ProviderConfig, build_provider
from jpki.pki import free_port
from jpki.serving import ServerThread

AGENT = "http://127.0.0.1:24780"
REDIRECT = "http://127.0.0.1:8000/callback"
#: A PKCE pair (RFC 7636's example): the provider needs a challenge; these tests never redeem codes.
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
#: What a browser sends with a form its own page submits, and with a link followed from another site.
SAME_ORIGIN = {"Origin": AGENT, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate",
               "Sec-Fetch-Dest": "document"}
NAVIGATION = {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


@dataclasses.dataclass
class ServedIdp:
    """The provider under uvicorn: its issuer URL, the service object, a registered client."""

    issuer: str
    provider: Provider
    client_id: str
    clock: FixedClock
    home: Path

    @property
    def oidc(self) -> str:
        return self.issuer + "/api/realms/main/protocol/openid-connect"

    def begin(self, scope: str = "openid", **extra: str) -> tuple[httpx.Client, str]:
        """A browser (a cookie jar) opens the authorization page: (browser, pending id)."""
        browser = httpx.Client(base_url=self.issuer, trust_env=False)
        page = browser.get(self.oidc + "/auth", params={
            "response_type": "code", "client_id": self.client_id, "redirect_uri": REDIRECT, "scope": scope,
            "state": "st-" + secrets.token_urlsafe(6), "nonce": "n-" + secrets.token_urlsafe(6),
            "code_challenge": CHALLENGE, "code_challenge_method": "S256", **extra})
        assert page.status_code == 200, page.text
        return browser, page.headers["x-jpki-pending"]

    def state(self, pending: str) -> Mapping[str, Any]:
        """The pending authorization as the provider's API shows it."""
        answer = httpx.get(f"{self.issuer}/api/pending/{pending}", trust_env=False)
        return answer.json()


@pytest.fixture
def served_idp(home: Path, clock: FixedClock, net: Any) -> Iterator[ServedIdp]:
    """The provider of ``home`` (no test cards) on a free port, its agent link naming :data:`AGENT`."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    provider = build_provider(ProviderConfig(home=home, issuer=issuer, agent_url=AGENT, revocation_max_age=0.0),
                              clock=clock, fetch=net)
    client, _ = provider.clients.add("Example Shop", [REDIRECT], now=clock.now(), secret=True)
    app = idp_app(provider)
    with ServerThread(app, port=port).start():
        yield ServedIdp(issuer, provider, client.client_id, clock, home)
    app.state.close()


class AgentBrowser:
    """The agent's app seen by a browser at :data:`AGENT` (no redirects followed)."""

    def __init__(self, agent: Agent, **create: Any) -> None:
        self.agent = agent
        self.app = agent_app(agent, **create)
        self.client = TestClient(self.app, base_url=AGENT, follow_redirects=False)

    def open(self, issuer: str, pending: str, headers: Mapping[str, str] | None = None,
             lang: str = "en") -> httpx.Response:
        """``GET /authorize`` as the provider page's link opens it."""
        return self.client.get("/authorize", params={"issuer": issuer, "pending": pending},
                               headers={**NAVIGATION, "Accept-Language": lang, **(headers or {})})

    def submit(self, page: httpx.Response, headers: Mapping[str, str] | None = None, path: str = "/authorize",
               lang: str = "en", **fields: str) -> httpx.Response:
        """Submit the form of ``page`` (its hidden fields, plus ``fields``) from the agent's origin."""
        data = {**hidden_fields(page.text), **fields}
        return self.client.post(path, data=data, headers={**SAME_ORIGIN, "Accept-Language": lang, **(headers or {})})

    def close(self) -> None:
        self.app.state.close()


def hidden_fields(text: str) -> dict[str, str]:
    """The hidden inputs of a page's form."""
    import html

    return {name: html.unescape(value)
            for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', text)}


def make_agent(home: Path, clock: FixedClock, *, card: str = "emu:alice", trust: tuple[str, ...] = (),
               **kwargs: Any) -> Agent:
    agent = Agent(AgentConfig(home=home, card=card), clock=clock, **kwargs)
    for issuer in trust:
        agent.trust(issuer)
    return agent


@pytest.fixture
def agent_browser(served_idp: ServedIdp) -> Iterator[AgentBrowser]:
    """The agent on alice's emulated card, trusting the served provider."""
    browser = AgentBrowser(make_agent(served_idp.home, served_idp.clock, trust=(served_idp.issuer,)))
    yield browser
    browser.close()


def query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def text_of(page: httpx.Response) -> str:
    """The page's text without tags (to read what a person reads)."""
    import html

    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.text.split("</style>")[-1])).split())
