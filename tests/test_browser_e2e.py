"""A real browser, end to end: headless Chromium goes from the example shop
(``examples/oidc_login/app.py``, Authlib's Starlette client) to the provider's authorization page,
follows "use the card on this computer" to the agent, where the PIN or the signature password is
typed into the agent's page, the card signs (in process, or behind pcscd + vpcd), and the browser
lands back on the shop: logged in under its pairwise sub, then after "verify my identity" showing
the verified name; a cancel, shown by the shop with the reason. And a sign transaction, which
the example shop has no button for, started by the tests' own relying party
(``browser_support.relying_party_app``): the text and the hash shown on the agent's page, the
result decrypted and verified by that relying party.

Needs Debian's ``chromium`` and ``chromium-driver`` and Selenium (``.ci/setup`` installs them):
without them these tests skip, and fail with ``CI=true``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from auth_support import credentials
from browser_support import SIGN_DOCUMENT, SIGN_TEXT, chromium, flow, missing_reason, wait_for

from jpki.identity import SAMPLE_PERSONAS
from jpki.testing.pcsc import unavailable

pytestmark = pytest.mark.browser


@pytest.fixture
def driver(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh headless Chromium asking for pages in English (or the language the test names
    with ``@pytest.mark.parametrize("driver", ["ja"], indirect=True)``)."""
    reason = missing_reason()
    if reason is not None:
        unavailable(reason)
    with chromium(getattr(request, "param", "en")) as browser:
        yield browser


def click(driver: Any, css: str) -> None:
    wait_for(driver, css).click()


def type_into(driver: Any, css: str, text: str) -> None:
    field = wait_for(driver, css)
    field.clear()
    field.send_keys(text)


def shop_button(driver: Any, path: str) -> None:
    """Press one of the example shop's buttons (its links: ``/login``, ``/verify``)."""
    click(driver, f'a[href="{path}"]')


def shown_info(driver: Any) -> dict[str, str]:
    """The verified basic 4 info the example shop shows (its ``#info`` table), by claim."""
    from selenium.webdriver.common.by import By

    rows = wait_for(driver, "#info").find_elements(By.CSS_SELECTOR, "tr")
    return {row.find_element(By.TAG_NAME, "th").text: row.find_element(By.TAG_NAME, "td").text for row in rows}


def test_login_then_verify_in_chromium_with_the_example_app_and_the_emulated_card(driver, home, clock, net):
    """examples/oidc_login/app.py as the relying party: "log in" (the PIN of the user-authentication
    key, the shop learns a sub and nothing else), then "verify my identity" (the signature
    password; the shop shows the name from userinfo under the same sub)."""
    with flow(home, clock, net, trust=False, app="example") as f:
        driver.get(f.rp_url + "/")
        assert "Not logged in." in wait_for(driver, "body").text
        shop_button(driver, "/login")
        wait_for(driver, "#use-card")                                    # the provider's page
        assert driver.current_url.startswith(f.issuer + "/api/realms/main/protocol/openid-connect/auth?")
        assert "Example Shop" in driver.page_source
        click(driver, "#use-card")
        issuer = wait_for(driver, "#issuer")                             # the agent: first use of this provider
        assert driver.current_url.startswith(f.agent_url + "/authorize?") and issuer.text == f.issuer
        click(driver, "#trust")
        type_into(driver, "#pin", "9999")                                 # a wrong PIN first
        click(driver, "#submit")
        assert "The PIN was wrong." in wait_for(driver, "#notice").text
        assert wait_for(driver, "#tries").text == "2 tries left."
        type_into(driver, "#pin", "1234")
        click(driver, "#submit")
        sub = wait_for(driver, "#sub").text                              # back at the shop: logged in
        assert driver.current_url == f.rp_url + "/"
        assert "(login #1)" in driver.page_source and "Identity not verified yet." in driver.page_source
        assert f.agent.is_trusted(f.issuer)
        shop_button(driver, "/verify")
        click(driver, "#use-card")
        assert "signature" in wait_for(driver, "#card-form").text.lower()
        type_into(driver, "#pin", "abc123")
        click(driver, "#submit")
        info = shown_info(driver)                                        # back at the shop: verified
        assert driver.current_url == f.rp_url + "/"
        assert wait_for(driver, "#sub").text == sub and "(login #2)" in driver.page_source
        alice = SAMPLE_PERSONAS["alice"]
        assert info == {"name": "山田　花子", "address": alice.address, "birthdate": alice.birth_date.isoformat(),
                        "gender": alice.sex.value}
        assert "ABC123" not in driver.page_source and "abc123" not in driver.page_source


def test_login_then_verify_in_chromium_with_the_example_app_over_pcsc(driver, home, clock, net, served_card):
    with flow(home, clock, net, card=f"pcsc:{served_card}", app="example") as f:
        driver.get(f.rp_url + "/")
        shop_button(driver, "/login")
        click(driver, "#use-card")
        assert wait_for(driver, "#tries").text == "3 tries left."           # read from the card in the reader
        type_into(driver, "#pin", "1234")
        click(driver, "#submit")
        sub = wait_for(driver, "#sub").text
        shop_button(driver, "/verify")
        click(driver, "#use-card")
        assert wait_for(driver, "#tries").text == "5 tries left."
        type_into(driver, "#pin", "ABC123")
        click(driver, "#submit")
        assert shown_info(driver)["name"] == "山田　花子"
        assert wait_for(driver, "#sub").text == sub and driver.current_url == f.rp_url + "/"


@pytest.mark.parametrize("driver", ["ja"], indirect=True)
def test_cancel_in_chromium_goes_back_to_the_relying_party_with_the_reason(driver, home, clock, net):
    with flow(home, clock, net, app="example") as f:
        driver.get(f.rp_url + "/")
        shop_button(driver, "/login")
        click(driver, "#use-card")
        assert "利用者証明用電子証明書の暗証番号（数字4桁）" in wait_for(driver, "#card-form").text
        click(driver, "#cancel")
        wait_for(driver, "#back")                                         # the provider's refusal page
        assert driver.current_url.startswith(f.issuer) and "認証はキャンセルされました。" in driver.page_source
        click(driver, "#back")
        error = wait_for(driver, "#error")
        assert driver.current_url.startswith(f.rp_url + "/callback?")
        assert error.text.startswith("Not logged in: access_denied: cancelled")
        driver.get(f.rp_url + "/")                                        # and nobody is logged in
        assert "Not logged in." in wait_for(driver, "body").text


def test_a_sign_transaction_in_chromium_with_the_emulated_card(driver, home, clock, net):
    with flow(home, clock, net) as f:
        driver.get(f.rp_url + "/")
        click(driver, "#sign")                                           # the RP creates the transaction
        wait_for(driver, "#use-card")                                    # the provider's page
        assert SIGN_TEXT in wait_for(driver, "#display-text").text
        continue_, cancel = wait_for(driver, "#continue"), wait_for(driver, "#cancel")
        assert abs(continue_.rect["y"] - cancel.rect["y"]) < 2          # the choices on one line
        assert cancel.rect["x"] > continue_.rect["x"] + continue_.rect["width"]
        shown = wait_for(driver, "#sign-hash").text
        click(driver, "#use-card")
        assert wait_for(driver, "#sign-text").text == SIGN_TEXT          # the agent: what is signed
        digest = hashlib.sha256(SIGN_DOCUMENT).hexdigest()
        assert wait_for(driver, "#sign-hash").text == shown              # as the provider showed it
        assert shown.replace(" ", "").replace("\n", "") == digest
        assert "your signing certificate" in wait_for(driver, "#sign-receives").text
        assert wait_for(driver, "#submit").text == "Sign with the card"
        type_into(driver, "#pin", "abc123")
        click(driver, "#submit")
        done = wait_for(driver, "#signed")                               # back at the RP: decrypted, verified
        assert driver.current_url.startswith(f.rp_url + "/callback?")
        assert done.text == f"Signed with My Number Card: {SIGN_TEXT}"
        signer = hashlib.sha256(credentials(home, "alice", "sign")[1]).hexdigest()
        assert wait_for(driver, "#signer").text == signer
        assert "ABC123" not in driver.page_source and "abc123" not in driver.page_source
