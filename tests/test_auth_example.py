"""examples/login_service: the shop that adds "log in with My Number Card" — a browser session
logged in by the card holder's `jpki login URL --challenge ID`, renewals keeping the account,
a lost card refused."""

from __future__ import annotations

import asyncio
import importlib.util
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from auth_support import AUTH_PIN, card_session, make_validator

from jpki.auth.client import login
from jpki.lifecycle import lost, renew
from jpki.provision import Home

REPO = Path(__file__).resolve().parents[1]
ORIGIN = "http://shop.test"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("login_service_app", REPO / "examples" / "login_service" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Browser:
    """A browser with a cookie jar, on the app in process."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.cookies = httpx.Cookies()

    def __call__(self, method: str, path: str) -> httpx.Response:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=ORIGIN,
                                         cookies=self.cookies, follow_redirects=True) as client:
                response = await client.request(method, path)
                self.cookies.update(client.cookies)
                return response

        return asyncio.run(go())


class Client:
    """The jpki client's HttpJson on the app in process."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=ORIGIN) as c:
                return await c.request(method, url, json=body)

        response = asyncio.run(go())
        return response.status_code, response.json()


@pytest.fixture
def shop(home, clock, net):
    module = load_example()
    app = module.build_app(home, ORIGIN, validator=make_validator(home, clock, net))
    yield app
    app.state.links.close()


def log_in(shop: Any, home: Path, clock: Any, browser: Browser) -> str:
    page = browser("POST", "/login")
    assert page.status_code == 200 and "jpki login http://shop.test --challenge" in page.text
    cid = re.search(r"--challenge ([A-Za-z0-9_-]+)", page.text).group(1)  # type: ignore[union-attr]
    with card_session(home) as session:
        return login(ORIGIN, session, pin=lambda: AUTH_PIN, challenge_id=cid, http=Client(shop), clock=clock).document


def test_the_shop_logs_a_browser_in_with_the_card(shop, home, clock):
    browser = Browser(shop)
    assert "You are not logged in" in browser("GET", "/").text
    answer = log_in(shop, home, clock, browser)
    assert answer["ok"] is True
    page = browser("GET", "/login")  # the waiting page redirects once logged in
    assert "Welcome back, customer" in page.text and answer["account"]["key"] in page.text
    assert "login #1" in page.text
    # another browser is not logged in by that
    assert "You are not logged in" in Browser(shop)("GET", "/").text
    browser("POST", "/logout")
    assert "You are not logged in" in browser("GET", "/").text


def test_a_renewed_card_keeps_the_account_and_a_lost_one_is_refused(shop, home, clock):
    browser = Browser(shop)
    first = log_in(shop, home, clock, browser)["account"]["key"]
    renew(Home(home), "alice", clock=clock)
    shop.state.rp.validator.invalidate()
    browser = Browser(shop)
    second = log_in(shop, home, clock, browser)
    assert second["account"]["key"] == first and "login #2" in browser("GET", "/").text
    lost(Home(home), "alice", clock=clock)
    shop.state.rp.validator.invalidate()
    browser = Browser(shop)
    refused = log_in(shop, home, clock, browser)
    assert refused["reason"] == "revoked"
    assert "Login refused: <b>revoked</b>" in browser("GET", "/login").text
