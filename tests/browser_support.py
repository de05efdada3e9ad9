"""A real browser for the end-to-end tests and the screenshots: headless Chromium (Debian's
``chromium`` and ``chromium-driver``) driven by Selenium, and the servers it visits. Not a test
module; ``tests/test_browser_e2e.py`` and ``docs/screenshots/make_screenshots.py`` use it.

- :func:`missing_reason` says why no browser can run here (None when one can);
  ``test_browser_e2e.py`` fails on it with ``CI=true`` and skips otherwise (``jpki.testing.pcsc.unavailable``).
- :func:`chromium` starts a fresh headless Chromium (its own ``--user-data-dir``, no network
  besides what the test serves: no sync, no component updates, no QUIC, no proxy) on
  ``/usr/bin/chromium`` through ``/usr/bin/chromedriver`` (Selenium Manager is never asked to
  download anything).
- :func:`relying_party_app` is a tiny relying party: a page with "log in with My Number Card",
  an Authlib client (authorization code, PKCE S256, ``private_key_jwt`` ES256) and a result page
  showing the verified name from userinfo (or the error the provider sent back); and "sign the
  contract": a sign transaction (``client_credentials`` token, ``POST /api/sign-transactions``
  with the hash of :data:`SIGN_DOCUMENT`, the browser sent to authorize it), whose result the
  callback decrypts (joserfc, the client's ``"use": "enc"`` key) and verifies (cryptography).
  Kept for the sign transaction, which the example has no button for.
- :func:`example_app` is the real example, ``examples/oidc_login/app.py`` (Authlib's Starlette
  client, nothing from jpki): "log in" (``openid``, the PIN) and "verify my identity" (the basic
  4 info, the signature password); ``flow(..., app="example")`` serves it as the relying party.
- :class:`Flow` runs the three servers (provider, agent, relying party) in threads on free
  ports, the provider's "use the card on this computer" link naming the agent.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import html
import importlib.util
import json
import os
import secrets
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from idp_support import ClockedPrivateKeyJWT
from joserfc import jwe, jwt
from joserfc.jwk import ECKey, KeySet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from jpki.agent.app import create_app as agent_app
from jpki.agent.service import Agent, AgentConfig
from jpki.clock import Clock
from jpki.idp.app import create_app as idp_app
from jpki.idp.provider import Provider, ProviderConfig, build_provider
from jpki.pki import free_port
from jpki.serving import ServerThread

with warnings.catch_warnings():  # Authlib 1.9 prefers httpx2 and warns when on httpx
    warnings.filterwarnings("ignore", message=".*httpx module is deprecated.*")
    from authlib.integrations.httpx_client import OAuth2Client

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "oidc_login" / "app.py"
CHROMIUM = Path(os.environ.get("JPKI_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("JPKI_CHROMEDRIVER", "/usr/bin/chromedriver"))
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-proxy-server", "--disable-dev-shm-usage", "--window-size=900,1000")
#: Seconds a page may take to appear (a card signing an eKYC CMS, OCSP in process).
PAGE_TIMEOUT = 30.0
#: What the relying party's "sign the contract" has the card holder sign: the text shown, and
#: the document whose SHA-256 the card signs.
SIGN_TEXT = "住宅ローン契約書（契約番号 2026-117）に署名します。"
SIGN_DOCUMENT = "住宅ローン契約書 2026-117 本文".encode()


def missing_reason() -> str | None:
    """Why Chromium cannot be driven here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)"
    if not CHROMEDRIVER.exists():
        return f"{CHROMEDRIVER} is missing (apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install 'jpki[test]')"
    return None


@contextlib.contextmanager
def chromium(language: str = "en") -> Iterator[Any]:
    """A fresh headless Chromium (Selenium WebDriver) asking for pages in ``language``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="jpki-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--lang={language}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"intl.accept_languages": language})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: Any, css: str, timeout: float = PAGE_TIMEOUT) -> Any:
    """The element ``css`` once the page shows it (Selenium's explicit wait: an event, not a
    sleep); else an AssertionError naming the page the browser is on and its text."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))
    except TimeoutException:
        text = driver.find_element(By.TAG_NAME, "body").text if driver.find_elements(By.TAG_NAME, "body") else ""
        raise AssertionError(f"no {css} within {timeout:g} s on {driver.current_url}: {text[:600]!r}") from None


# --------------------------------------------------------------------------- the relying party


def _rp_page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
                        '</title><style>body{font-family:system-ui,"IPAGothic",sans-serif;max-width:36rem;'
                        'margin:2rem auto;padding:0 1rem;line-height:1.6}.button{display:inline-block;'
                        'background:#0a5ad4;color:#fff;padding:.6rem 1.2rem;border-radius:4px;text-decoration:none}'
                        '.ok{background:#e6f4ea;border-left:4px solid #2e7d32;padding:.8rem 1rem}'
                        '.err{background:#fdecea;border-left:4px solid #c0392b;padding:.8rem 1rem}</style></head>'
                        f'<body><h1>{html.escape(title)}</h1>{body}</body></html>')


def relying_party_app(*, issuer: str, client_id: str, key: ECKey, redirect_uri: str, clock: Clock,
                      scope: str = "openid name", enc_key: ECKey | None = None) -> Starlette:
    """A relying party using Authlib and nothing of jpki: ``/`` (the buttons), ``/login`` (to the
    provider), ``/sign`` (a sign transaction, then to the provider; needs ``enc_key``, the private
    half of the client's encryption key), ``/callback`` (code → tokens → ID token checked →
    userinfo → the name; for a sign transaction also its result, decrypted and verified)."""
    oidc = issuer + "/api/realms/main/protocol/openid-connect"
    transactions = issuer + "/api/sign-transactions"
    started: dict[str, tuple[str, str, str | None]] = {}   # state -> (PKCE verifier, nonce, sign transaction)
    lock = threading.Lock()

    def client(asked: str = scope) -> OAuth2Client:
        made = OAuth2Client(client_id, key, token_endpoint_auth_method="private_key_jwt", scope=asked,
                            redirect_uri=redirect_uri, code_challenge_method="S256", trust_env=False)
        made.register_client_auth_method(ClockedPrivateKeyJWT(clock, "ES256", lifetime=60))  # type: ignore[arg-type]
        return made

    def index(request: Request) -> Response:
        return _rp_page("Example Shop", '<p>Welcome to the Example Shop.</p>'
                                        '<p><a class="button" id="login" href="/login">Log in with My Number Card'
                                        '</a></p><p><a class="button" id="sign" href="/sign">Sign the contract'
                                        ' with My Number Card</a></p>')

    def to_provider(asked: str, transaction: str | None = None) -> Response:
        verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
        extra = {} if transaction is None else {"sign_transaction_id": transaction}
        with client(asked) as oauth:
            url, state = oauth.create_authorization_url(oidc + "/auth", code_verifier=verifier, nonce=nonce, **extra)
        with lock:
            started[state] = (verifier, nonce, transaction)
        return RedirectResponse(url, status_code=302)

    def login(request: Request) -> Response:
        return to_provider(scope)

    def sign(request: Request) -> Response:
        with client("sign") as api:
            api.fetch_token(oidc + "/token", grant_type="client_credentials")
            created = api.post(transactions, json={
                "hash": base64.b64encode(hashlib.sha256(SIGN_DOCUMENT).digest()).decode(), "display_text": SIGN_TEXT})
        if created.status_code != 201:
            return _rp_page("Example Shop", f'<p class="err" id="error">{html.escape(created.text)}</p>')
        return to_provider("openid sign", created.json()["id"])

    def signed(oauth: OAuth2Client, transaction: str) -> str:
        """The sign transaction's result: decrypted with the client's key, the signature verified
        over the document's hash with the certificate inside."""
        assert enc_key is not None
        result = oauth.get(f"{transactions}/{transaction}/result")
        if result.status_code != 200:
            return f'<p class="err" id="error">{html.escape(result.text)}</p>'
        payload = json.loads(jwe.decrypt_compact(result.content, enc_key,
                                                 algorithms=["ECDH-ES+A256KW", "A256GCM"]).plaintext)
        der = base64.b64decode(payload["certificate"])
        public = x509.load_der_x509_certificate(der).public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        public.verify(base64.b64decode(payload["signature"]), hashlib.sha256(SIGN_DOCUMENT).digest(),
                      padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        return (f'<p class="ok" id="signed">Signed with My Number Card: {html.escape(SIGN_TEXT)}</p>'
                f'<p>Signing certificate (SHA-256): <code id="signer">{hashlib.sha256(der).hexdigest()}</code></p>')

    def callback(request: Request) -> Response:
        params = request.query_params
        with lock:
            found = started.pop(params.get("state", ""), None)
        if found is None:
            return _rp_page("Example Shop", '<p class="err" id="error">unknown state</p>')
        if "error" in params:
            return _rp_page("Example Shop", f'<p class="err" id="error">{html.escape(params["error"])}: '
                                            f'{html.escape(params.get("error_description", ""))}</p>')
        verifier, nonce, transaction = found
        with client() as oauth:
            token = oauth.fetch_token(oidc + "/token", code=params["code"], code_verifier=verifier)
            keys = KeySet.import_key_set(oauth.get(oidc + "/certs").json())
            id_token = jwt.decode(token["id_token"], keys, algorithms=["ES256"])
            jwt.JWTClaimsRegistry(now=int(clock.now().timestamp()), iss={"essential": True, "value": issuer},
                                  aud={"essential": True, "value": client_id},
                                  nonce={"essential": True, "value": nonce}).validate(id_token.claims)
            info = oauth.get(oidc + "/userinfo").json()
            body = signed(oauth, transaction) if transaction is not None else ""
        name = info.get("name")
        if transaction is None:
            body = (f'<p class="ok">Logged in with My Number Card.</p><p>Verified name: <strong id="name">'
                    f'{html.escape(name or "")}</strong></p>' if name else '<p class="ok">Logged in.</p>')
        return _rp_page("Example Shop", body + f'<p>Your id here: <code id="sub">{html.escape(info["sub"])}</code></p>')

    return Starlette(routes=[Route("/", index), Route("/login", login), Route("/sign", sign),
                             Route("/callback", callback)])


def example_app(*, issuer: str, client_id: str, key: ECKey, app_url: str) -> Starlette:
    """``examples/oidc_login/app.py``'s shop, loaded from its file as a user runs it (it is no
    package) and built as its ``main`` builds it from OIDC_BASE_URL, OIDC_CLIENT_ID, the key and
    APP_URL. Authlib and joserfc read the system time: :func:`flow` gives them the test clock's."""
    spec = importlib.util.spec_from_file_location("oidc_login_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app: Starlette = module.build_app(base_url=issuer, client_id=client_id, key=key, app_url=app_url)
    return app


@contextlib.contextmanager
def _authlib_on(clock: Clock) -> Iterator[None]:
    """Authlib's client assertions (``iat``/``exp``) and joserfc's ID token checks on ``clock``,
    the provider's, instead of the system time (as ``tests/test_oidc_example.py`` does)."""
    import authlib.oauth2.rfc7523.assertion
    import joserfc._rfc7519.claims

    shim = type("ClockTime", (), {"time": staticmethod(lambda: clock.now().timestamp())})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(authlib.oauth2.rfc7523.assertion, "time", shim)
        patch.setattr(joserfc._rfc7519.claims, "time", shim)
        yield


# --------------------------------------------------------------------------- the three servers


@dataclasses.dataclass
class Flow:
    """Provider, agent and relying party under uvicorn on free ports (see :func:`flow`)."""

    issuer: str
    agent_url: str
    rp_url: str
    provider: Provider
    agent: Agent
    client_id: str


@contextlib.contextmanager
def flow(home: Path, clock: Clock, fetch: Callable[..., bytes] | None, *, card: str = "emu:alice",
         trust: bool = True, scope: str = "openid name", test_cards: bool = False,
         app: Literal["test", "example"] = "test") -> Iterator[Flow]:
    """Serve the provider of ``home`` (``fetch``: its revocation fetch), the agent on ``card``
    (``trust``: the provider approved beforehand) and the relying party: ``app="test"`` the one
    above, asking for ``scope``; ``app="example"`` the example shop (:func:`example_app`), whose
    buttons choose the scope."""
    idp_port, agent_port, rp_port = free_port(), free_port(), free_port()
    issuer, agent_url, rp_url = (f"http://127.0.0.1:{p}" for p in (idp_port, agent_port, rp_port))
    provider = build_provider(ProviderConfig(home=home, issuer=issuer, agent_url=agent_url, revocation_max_age=0.0,
                                             test_cards=test_cards), clock=clock, fetch=fetch)
    key = ECKey.generate_key("P-256", auto_kid=True)
    enc_key = ECKey.generate_key("P-256", auto_kid=True)   # sign transactions' results are encrypted to it
    client, _ = provider.clients.add("Example Shop", [rp_url + "/callback"], now=clock.now(),
                                     jwks={"keys": [key.as_dict(private=False),
                                                    {**enc_key.as_dict(private=False), "use": "enc"}]})
    plugin = None
    if test_cards:
        from jpki.idp.testcards import TestCards

        plugin = TestCards(provider, home)
    agent = Agent(AgentConfig(home=home, card=card), clock=clock)
    if trust:
        agent.trust(issuer)
    if app == "example":
        rp = example_app(issuer=issuer, client_id=client.client_id, key=key, app_url=rp_url)
    else:
        rp = relying_party_app(issuer=issuer, client_id=client.client_id, key=key,
                               redirect_uri=rp_url + "/callback", clock=clock, scope=scope, enc_key=enc_key)
    with (_authlib_on(clock) if app == "example" else contextlib.nullcontext()), \
            ServerThread(idp_app(provider, test_cards=plugin), port=idp_port).start(), \
            ServerThread(agent_app(agent), port=agent_port).start(), \
            ServerThread(rp, port=rp_port).start():
        yield Flow(issuer, agent_url, rp_url, provider, agent, client.client_id)
