"""Screenshots of every page of "log in with My Number Card" through the local agent, into this folder.

    python docs/screenshots/make_screenshots.py [--out DIR]

Needs what the browser tests need (Debian's ``chromium`` and ``chromium-driver``, Selenium:
``.ci/setup`` installs them) and a Japanese font (``fonts-ipafont-gothic``), or the Japanese
pages show boxes. It builds a throw-away home (test CA, cards alice and bob) at a fixed time,
serves the provider, the agent and a small relying party (``tests/browser_support.py``, the same
as the end-to-end tests) and drives headless Chromium through each state, writing one PNG per
page (cut to the page's height):

========================  ===========================================================
``rp-start``              the relying party's "log in with My Number Card"
``idp-auth-{ja,en}``      the provider's authorization page (eKYC: name)
``agent-trust``           the agent's first use of a provider: "trust this provider?"
``agent-request-{ja,en}`` who asks, what, the password field, tries left
``agent-login``           a login (openid only): no personal data, the 4-digit PIN
``idp-sign``              the provider's page of a sign transaction the relying party started
``agent-sign``            the agent's page of it: the text and the hash to be signed
``rp-signed``             the relying party with the result: decrypted, the signature verified
``agent-wrong-pin``       after a wrong password
``agent-last-try``        one try left
``agent-blocked``         the last try blocked the PIN: what to do, the way back
``agent-card-missing``    no card on the reader
``agent-revoked``         the provider refused a revoked card (bob's, reported lost)
``idp-refused``           the provider's own refusal page (after cancel), back to the site
``rp-error``              the relying party receiving access_denied
``rp-result``             back at the relying party: the verified name
========================  ===========================================================
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from auth_support import InProcessFetch  # noqa: E402
from browser_support import chromium, flow, missing_reason, wait_for  # noqa: E402

from jpki.clock import FixedClock  # noqa: E402
from jpki.home import Home  # noqa: E402
from jpki.identity import SAMPLE_PERSONAS  # noqa: E402
from jpki.lifecycle import lost  # noqa: E402
from jpki.pki import TestCA  # noqa: E402
from jpki.pki.server import create_app as revocation_app  # noqa: E402
from jpki.provision import create_card  # noqa: E402

NOW = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.UTC)


def shoot(driver: Any, out: Path, name: str) -> None:
    """The whole page (as tall as its content) as ``out/name.png``."""
    width = driver.execute_script("return document.documentElement.clientWidth")
    bottom = driver.execute_script("return Math.max(...Array.from(document.body.children, "
                                   "e => e.getBoundingClientRect().bottom + window.scrollY))")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": int(bottom) + 32, "scale": 1}})
    (out / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))
    print(f"  {name}.png")


def click(driver: Any, css: str) -> None:
    wait_for(driver, css).click()


def type_pin(driver: Any, pin: str) -> None:
    field = wait_for(driver, "#pin")
    field.clear()
    field.send_keys(pin)
    click(driver, "#submit")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    reason = missing_reason()
    if reason is not None:
        print(f"cannot take screenshots: {reason}", file=sys.stderr)
        return 1
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    clock = FixedClock(NOW)
    with tempfile.TemporaryDirectory(prefix="jpki-screenshots-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir(mode=0o700)
        TestCA.init(home / "ca", clock=clock, base_url="http://127.0.0.1:8470").close()
        for name in ("alice", "bob"):
            create_card(Home(home), name, SAMPLE_PERSONAS[name], clock=clock)
        revocation = revocation_app(home / "ca", clock=clock)
        fetch = InProcessFetch(revocation)
        try:
            take_all(home, clock, fetch, out)
        finally:
            revocation.state.service.close()
    return 0


def take_all(home: Path, clock: FixedClock, fetch: Any, out: Path) -> None:
    # Japanese pages: the provider's authorization page and the agent's request
    with chromium("ja") as driver, flow(home, clock, fetch) as f:
        driver.get(f.rp_url + "/")
        click(driver, "#login")
        wait_for(driver, "#use-card")
        shoot(driver, out, "idp-auth-ja")
        click(driver, "#use-card")
        wait_for(driver, "#pin")
        shoot(driver, out, "agent-request-ja")
    # English: the whole way, with the trust step and a wrong password first
    with chromium("en") as driver, flow(home, clock, fetch, trust=False) as f:
        driver.get(f.rp_url + "/")
        wait_for(driver, "#login")
        shoot(driver, out, "rp-start")
        click(driver, "#login")
        wait_for(driver, "#use-card")
        shoot(driver, out, "idp-auth-en")
        click(driver, "#use-card")
        wait_for(driver, "#trust")
        shoot(driver, out, "agent-trust")
        click(driver, "#trust")
        wait_for(driver, "#pin")
        shoot(driver, out, "agent-request-en")
        type_pin(driver, "WRONG999")
        wait_for(driver, "#notice")
        shoot(driver, out, "agent-wrong-pin")
        type_pin(driver, "ABC123")
        wait_for(driver, "#name")
        shoot(driver, out, "rp-result")
    # a login: the PIN, two wrong tries (one left), then the last one blocks it
    with chromium("en") as driver, flow(home, clock, fetch, scope="openid") as f:
        driver.get(f.rp_url + "/login")
        click(driver, "#use-card")
        wait_for(driver, "#pin")
        shoot(driver, out, "agent-login")
        for pin in ("0000", "0001"):
            type_pin(driver, pin)
            wait_for(driver, "#notice")
        shoot(driver, out, "agent-last-try")
        type_pin(driver, "0002")
        wait_for(driver, "#back")
        shoot(driver, out, "agent-blocked")
    # a sign transaction (ja) the relying party starts: the provider's page, the agent's, the result
    with chromium("ja") as driver, flow(home, clock, fetch) as f:
        driver.get(f.rp_url + "/sign")
        wait_for(driver, "#use-card")
        shoot(driver, out, "idp-sign")
        click(driver, "#use-card")
        wait_for(driver, "#sign-hash")
        shoot(driver, out, "agent-sign")
        type_pin(driver, "ABC123")
        wait_for(driver, "#signed")
        shoot(driver, out, "rp-signed")
    # no card on the reader
    with chromium("en") as driver, flow(home, clock, fetch, card="emu:nobody") as f:
        driver.get(f.rp_url + "/login")
        click(driver, "#use-card")
        wait_for(driver, "#retry")
        shoot(driver, out, "agent-card-missing")
    # a revoked card: bob reports his card lost, then tries to log in with it
    lost(Home(home, clock=clock), "bob", clock=clock)
    with chromium("en") as driver, flow(home, clock, fetch, card="emu:bob", scope="openid") as f:
        driver.get(f.rp_url + "/login")
        click(driver, "#use-card")
        type_pin(driver, "1234")
        wait_for(driver, "#reason")
        shoot(driver, out, "agent-revoked")
    # cancel: the provider's refusal page, then the relying party gets access_denied
    with chromium("en") as driver, flow(home, clock, fetch) as f:
        driver.get(f.rp_url + "/login")
        click(driver, "#use-card")
        click(driver, "#cancel")
        wait_for(driver, "#back")
        shoot(driver, out, "idp-refused")
        click(driver, "#back")
        wait_for(driver, "#error")
        shoot(driver, out, "rp-error")


if __name__ == "__main__":
    sys.exit(main())
