"""The OpenID Provider over HTTP: a Starlette app built from a :class:`jpki.idp.provider.Provider`.

Endpoints (``ISSUER`` is the issuer URL; its path, if any, prefixes every route):

===================================================================  ===============================
``GET ISSUER/.well-known/openid-configuration``                       discovery (also under the
                                                                      realm path below)
``GET …/api/realms/main/protocol/openid-connect/certs``               the JWKS (ES256 key)
``GET|POST …/api/realms/main/protocol/openid-connect/auth``           the authorization page
``GET …/auth/resume?pending=ID``                                      back from the card → client
``POST …/auth/cancel``                                                the page's cancel button
``POST …/auth/test-card``                                             the page's test-card form
``POST …/api/realms/main/protocol/openid-connect/token``              codes, refresh tokens and
                                                                      client credentials
``POST …/api/realms/main/protocol/openid-connect/revoke``             RFC 7009 revocation
``GET|POST …/api/realms/main/protocol/openid-connect/userinfo``       the granted claims
``GET ISSUER/api/pending/{id}``                                       for the agent: who, what, the
                                                                      challenge
``POST ISSUER/api/pending/{id}/complete``                             the card's answer (jpki.auth
                                                                      wire format) or a cancel
``POST ISSUER/api/sign-transactions``                                  a sign transaction (client
                                                                      credentials, scope sign)
``GET ISSUER/api/sign-transactions/{id}/result``                      its result: a JWE to the
                                                                      client's encryption key
``GET ISSUER/api/test-cards``, ``POST ISSUER/api/test-cards/authenticate``   test-card mode only
===================================================================  ===============================

The auth page sets a cookie (``jpki_idp_browser``: HttpOnly, SameSite=Lax, Secure on https)
that binds the authorization to the browser: ``resume``, ``cancel`` and the test-card form
need it, so a pending id seen elsewhere cannot finish someone else's login in another browser.
The page's response also carries the pending id in ``X-JPKI-Pending`` (for scripts and CI).
Pages are sent with a CSP that allows no script, no framing (``frame-ancestors 'none'``) and
no referrer. Card answers (their checks fetch OCSP responses and CRLs) and the test cards run
in the thread pool; so does all provider work when a store is a SQLite file (writes wait on the
disk). With a memory or Redis store the endpoints that only use the store (authorize, resume,
token, userinfo) run on the event loop: a Redis round trip costs less than a trip to the thread
pool, and the store's socket timeout (5 s) bounds a stall; a token request that must fetch a
client's ``jwks_uri`` goes to the thread pool (:class:`~jpki.idp.provider.WouldBlockError`).

Errors: the token, userinfo and sign-transaction endpoints answer RFC 6749 JSON (``{"error": …,
"error_description": …}``, with ``WWW-Authenticate`` where RFC 6750 wants it) through the app's
exception handler for :class:`~jpki.idp.provider.OAuthError`; the agent's and the test cards' JSON
API answer jpki's refusal document ``{"ok": false, "reason": …, "message": …}`` through
:mod:`jpki.serving`'s handlers (404 ``not-found``, 409 ``not-pending``, 400 ``malformed``, 503
``store-unavailable``); the pages answer HTML. Bodies are limited by :mod:`jpki.serving`
(``max_body`` bytes within ``body_timeout`` seconds): the token endpoint says so as an
``invalid_request``, a page as an error page.

Limits (:mod:`jpki.idp.limits`): the authorization page and its forms, the test-card API and
the token and revocation endpoints each take a token from the client address's bucket before
anything else (429 with ``Retry-After``: the "too many requests" page, jpki's refusal document,
RFC 6749 JSON); the provider adds the client's own bucket at the token endpoint and the cap on
unfinished authorizations. A task summarises the refusals once a minute.

Serving: :func:`serve` (``jpki idp serve``) hands :func:`app_from_settings` and the
configuration to :func:`jpki.serving.serve` as an :class:`~jpki.serving.AppSpec` (the port
checked first, the key, salt and store made once in the parent, listening before "serving",
uvicorn workers sharing a SQLite or Redis store); tests run :func:`create_app` under
:func:`jpki.serving.serve_in_thread`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from jpki.auth.limits import client_key
from jpki.auth.store import ChallengeStoreError
from jpki.clock import Clock
from jpki.errors import JpkiError, UsageError
from jpki.idp import pages
from jpki.idp.clients import ClientRegistryError
from jpki.idp.pending import PendingAuthorization, PendingState, StateError
from jpki.idp.provider import (
    REALM_PATH,
    MalformedAnswerError,
    OAuthError,
    PendingNotFoundError,
    Provider,
    ProviderConfig,
    ProviderUnavailableError,
    WouldBlockError,
    build_provider,
    network_forbidden,
)
from jpki.idp.signtx import SignTransactions
from jpki.serving import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    AppSpec,
    Refusal,
    http_app,
    summarising_lifespan,
)
from jpki.serving import serve as _serve
from jpki.verify import Fetch

__all__ = ["COOKIE", "DEFAULT_MAX_BODY", "DEFAULT_PORT", "TestCardsPlugin", "app_from_settings", "create_app",
           "create_service", "serve"]

log = logging.getLogger("jpki.idp")

#: Port of ``jpki idp serve``.
DEFAULT_PORT: Final = 8600
#: The browser-binding cookie.
COOKIE: Final = "jpki_idp_browser"
#: Largest request body (the card's answer, a token request) in bytes.
DEFAULT_MAX_BODY: Final = 64 * 1024

_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
                               "base-uri 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class TestCardsPlugin(Protocol):
    """What the app needs of :class:`jpki.idp.testcards.TestCards`."""

    def cards(self) -> list[str]: ...

    def authenticate(self, pending_id: str, card: str, outcome: str,
                     pin: str | None = None) -> PendingAuthorization: ...


def _form_pairs(raw: bytes) -> list[tuple[str, str]]:
    try:
        text = raw.decode("utf-8")
        return urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the body is not application/x-www-form-urlencoded UTF-8") from None


def _answer_by(pending: PendingAuthorization) -> _dt.datetime:
    """When the card must have answered: the challenge's expiry if the action has one (it is
    shorter than the authorization's own lifetime), else the authorization's."""
    try:
        return min(pending.expires_at, _dt.datetime.fromisoformat(str(pending.data["expires_at"])))
    except (KeyError, TypeError, ValueError):
        return pending.expires_at


async def _oauth_error(request: Request, exc: Exception) -> Response:
    """The app's handler of :class:`OAuthError`: RFC 6749 §5.2's error document, exactly
    ``error`` and ``error_description`` (RFC 6750's ``WWW-Authenticate`` where the error has one)."""
    assert isinstance(exc, OAuthError)
    return JSONResponse(exc.to_json(), status_code=exc.status, headers={**_NO_STORE, **exc.headers})


def _unavailable(exc: JpkiError) -> Refusal:
    log.warning("the provider's store failed: %s", exc)
    return Refusal(503, "store-unavailable", "the store is unavailable: try again shortly", retry_after=1)


#: How the library's exceptions become jpki refusal documents (the agent's and test cards' API).
_REFUSALS: Final[Mapping[type[Exception], Callable[[Any], Refusal]]] = {
    PendingNotFoundError: lambda exc: Refusal(404, "not-found", str(exc)),
    StateError: lambda exc: Refusal(409, "not-pending", str(exc)),
    MalformedAnswerError: lambda exc: Refusal(400, "malformed", str(exc)),
    ProviderUnavailableError: _unavailable,
    ChallengeStoreError: _unavailable,
    ClientRegistryError: _unavailable,
}


def create_app(provider: Provider, *, test_cards: TestCardsPlugin | None = None, max_body: int = DEFAULT_MAX_BODY,
               body_timeout: float = DEFAULT_BODY_TIMEOUT,
               on_shutdown: Sequence[Callable[[], None]] = ()) -> Starlette:
    """The ASGI app of ``provider`` (``test_cards``: the test-card plug-in, else none), made by
    :func:`jpki.serving.http_app` (bodies of at most ``max_body`` bytes within ``body_timeout``
    seconds); ``app.state.close()`` closes the provider (also done by the lifespan)."""
    prefix = urllib.parse.urlsplit(provider.issuer).path.rstrip("/")
    oidc = prefix + REALM_PATH + "/protocol/openid-connect"   # the routes' paths
    oidc_url = provider.issuer + REALM_PATH + "/protocol/openid-connect"   # and their URLs
    secure = provider.issuer.startswith("https://")
    testing = test_cards is not None

    inline = provider.fast_store

    async def store_work(fn: Callable[..., Any], *args: Any) -> Any:
        """Provider work that only reads and writes the store (authorize, resume, token,
        userinfo): on the event loop when the store is in memory or Redis — a trip to the thread
        pool costs more CPU than such a call (a quarter of a token request's) —, else, or when it
        needs the network after all (a client's jwks_uri), in the thread pool."""
        if inline:
            try:
                with network_forbidden():
                    return fn(*args)
            except WouldBlockError:
                pass
        return await run_in_threadpool(fn, *args)

    async def oauth_work(what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """:func:`store_work` for an OAuth endpoint: its own errors pass as they are, a store
        or service failure becomes RFC 6749's ``temporarily_unavailable`` (503)."""
        try:
            return await store_work(fn, *args)
        except OAuthError:
            raise
        except JpkiError as exc:
            log.warning("%s failed: %s", what, exc)
            raise OAuthError("temporarily_unavailable", "try again shortly", status=503) from None

    throttle = provider.throttle

    def address_of(request: Request) -> str:
        return client_key(request.client.host if request.client is not None else None)

    def limited_page(request: Request) -> Response | None:
        """The page endpoints' bucket of the client address: None when admitted, else the
        "too many requests" page (429, Retry-After)."""
        wait = throttle.admit("auth", address_of(request))
        if not wait:
            return None
        seconds = max(1, math.ceil(wait))
        return message(request, "too_many", 429, reason=str(seconds), headers={"Retry-After": str(seconds)})

    def limit_oauth(request: Request) -> None:
        """The token and revocation endpoints' bucket of the client address: 429 as RFC 6749 JSON."""
        wait = throttle.admit("token", address_of(request))
        if wait:
            seconds = max(1, math.ceil(wait))
            raise OAuthError("temporarily_unavailable", f"too many requests from this address: retry in {seconds} s",
                             status=429, headers={"Retry-After": str(seconds)})

    def limit_api(request: Request) -> None:
        """The test-card API's bucket of the client address: 429 as jpki's refusal document."""
        address = address_of(request)
        wait = throttle.admit("test-cards", address)
        if wait:
            raise Refusal(429, "rate-limited", f"too many requests from {address}: retry in {math.ceil(wait)} s",
                          retry_after=wait)

    def language(request: Request, ui_locales: Sequence[str] = ()) -> str:
        return pages.choose_language(request.headers.get("accept-language"), ui_locales)

    def html(text: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
        return HTMLResponse(text, status_code=status, headers={**_PAGE_HEADERS, **(headers or {})})

    def message(request: Request, kind: str, status: int, *, retry: str | None = None, reason: str | None = None,
                ui_locales: Sequence[str] = (), headers: dict[str, str] | None = None) -> HTMLResponse:
        return html(pages.message_page(language(request, ui_locales), kind, test_cards=testing, retry_url=retry,
                                       reason=reason), status, headers)

    # ---------------------------------------------------------------- discovery, JWKS

    async def discovery(request: Request) -> Response:
        return JSONResponse(provider.discovery(), headers={"Access-Control-Allow-Origin": "*",
                                                           "Cache-Control": "max-age=60"})

    async def certs(request: Request) -> Response:
        return JSONResponse(provider.key.jwks(), headers={"Access-Control-Allow-Origin": "*",
                                                          "Cache-Control": "max-age=60"})

    async def index(request: Request) -> Response:
        return html(pages.index_page(language(request), test_cards=testing,
                                     discovery_url=provider.issuer + "/.well-known/openid-configuration"))

    # ---------------------------------------------------------------- the authorization page

    def auth_page(request: Request, pending: PendingAuthorization) -> str:
        action = provider.actions.get(pending.action)
        return pages.authorization_page(
            language(request, pending.ui_locales), client_name=pending.client_name, claims=pending.claims,
            pin=action.pin if action is not None else None, pending_id=pending.id,
            agent_link=provider.agent_link(pending.id), agent_url=provider.config.agent_url,
            resume_url=provider.resume_url(pending.id), cancel_url=oidc_url + "/auth/cancel",
            expires=_answer_by(pending).astimezone(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            test_cards=test_cards.cards() if test_cards is not None else None,
            test_card_url=oidc_url + "/auth/test-card" if testing else None,
            sign=pending.data if pending.action == "sign" else None)

    def authorized(request: Request, pairs: list[tuple[str, str]]) -> tuple[PendingAuthorization, str, str]:
        # one trip to the thread pool for both: a trip costs more CPU than rendering the page
        pending, cookie = provider.authorize(pairs, request.cookies.get(COOKIE), address=address_of(request))
        return pending, cookie, auth_page(request, pending)

    async def authorize(request: Request) -> Response:
        limited = limited_page(request)
        if limited is not None:
            return limited
        try:
            if request.method == "POST":
                pairs = _form_pairs(await request.body())
            else:
                pairs = urllib.parse.parse_qsl(request.url.query, keep_blank_values=True, max_num_fields=100)
            pending, cookie, page = await store_work(authorized, request, pairs)
        except Refusal as exc:  # the body: too large, too slow (then the connection is closed)
            return message(request, "error", exc.status, reason=exc.reason, headers=exc.headers())
        except ValueError:
            return message(request, "error", 400, reason="invalid_request")
        except OAuthError as exc:
            if exc.redirect:
                return RedirectResponse(provider.error_redirect(exc), status_code=302, headers=_NO_STORE)
            return message(request, "error", exc.status, reason=exc.error, ui_locales=exc.ui_locales)
        except JpkiError as exc:
            log.warning("authorization failed: %s", exc)
            return message(request, "error", 503, reason="temporarily_unavailable")
        response = html(page, headers={"X-JPKI-Pending": pending.id})
        response.set_cookie(COOKIE, cookie, httponly=True, samesite="lax", secure=secure, path=prefix or "/")
        return response

    async def resume(request: Request) -> Response:
        pending_id = request.query_params.get("pending", "")
        try:
            outcome = await store_work(provider.resume, pending_id, request.cookies.get(COOKIE))
        except JpkiError as exc:
            log.warning("resume failed: %s", exc)
            return message(request, "error", 503, reason="temporarily_unavailable")
        locales = outcome.pending.ui_locales if outcome.pending is not None else ()
        if outcome.kind == "redirect":
            assert outcome.url is not None and outcome.pending is not None
            if outcome.pending.status is PendingState.REFUSED:
                return html(pages.refused_page(language(request, locales), reason=outcome.pending.reason,
                                               client_name=outcome.pending.client_name, back_url=outcome.url,
                                               test_cards=testing))
            return RedirectResponse(outcome.url, status_code=302, headers=_NO_STORE)
        if outcome.kind == "waiting":
            return message(request, "waiting", 200, retry=provider.resume_url(pending_id), ui_locales=locales)
        if outcome.kind == "wrong-browser":
            return message(request, "wrong_browser", 403, ui_locales=locales)
        return message(request, "gone", 400, ui_locales=locales)

    async def own_pending(request: Request) -> tuple[dict[str, str], PendingAuthorization | Response]:
        """A form POST of the page: its fields and the pending authorization, if this browser's."""
        limited = limited_page(request)
        if limited is not None:
            return {}, limited
        try:
            fields = dict(_form_pairs(await request.body()))
        except Refusal as exc:
            return {}, message(request, "error", 400, reason="invalid_request", headers=exc.headers())
        except OAuthError:
            return {}, message(request, "error", 400, reason="invalid_request")
        try:
            pending = await run_in_threadpool(provider.pending, fields.get("pending", ""))
        except JpkiError as exc:
            log.warning("page action failed: %s", exc)
            return fields, message(request, "error", 503, reason="temporarily_unavailable")
        if pending is None:
            return fields, message(request, "gone", 400)
        if not provider.browser_matches(pending, request.cookies.get(COOKIE)):
            return fields, message(request, "wrong_browser", 403, ui_locales=pending.ui_locales)
        return fields, pending

    async def cancel(request: Request) -> Response:
        _, found = await own_pending(request)
        if isinstance(found, Response):
            return found
        with contextlib.suppress(StateError, PendingNotFoundError):
            await run_in_threadpool(provider.cancel, found.id, "cancelled")
        return RedirectResponse(provider.resume_url(found.id), status_code=303, headers=_NO_STORE)

    async def test_card_form(request: Request) -> Response:
        assert test_cards is not None
        fields, found = await own_pending(request)
        if isinstance(found, Response):
            return found
        try:
            await run_in_threadpool(test_cards.authenticate, found.id, fields.get("card", ""),
                                    fields.get("outcome", ""))
        except (StateError, PendingNotFoundError):
            pass  # decided meanwhile: resume tells
        except JpkiError as exc:
            return message(request, "error", 400, reason=str(exc)[:200], ui_locales=found.ui_locales)
        return RedirectResponse(provider.resume_url(found.id), status_code=303, headers=_NO_STORE)

    # ---------------------------------------------------------------- token, userinfo (OAuthError: RFC 6749)

    async def oauth_form(request: Request) -> list[tuple[str, str]]:
        """The form of a token or revocation request, once its address's bucket admits it."""
        limit_oauth(request)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
        try:
            raw = await request.body()
        except Refusal as exc:  # too large, too slow: still an OAuth error document
            raise OAuthError("invalid_request", exc.message, status=exc.status, headers=exc.headers()) from None
        return _form_pairs(raw)

    async def token(request: Request) -> Response:
        pairs = await oauth_form(request)
        document = await oauth_work("token request", provider.token, pairs, request.headers.get("authorization"))
        return JSONResponse(document, headers=_NO_STORE)

    async def revoke(request: Request) -> Response:
        pairs = await oauth_form(request)
        await oauth_work("revocation", provider.revoke, pairs, request.headers.get("authorization"))
        return Response(status_code=200, headers=_NO_STORE)

    async def userinfo(request: Request) -> Response:
        claims = await oauth_work("userinfo", provider.userinfo, request.headers.get("authorization"))
        return JSONResponse(claims, headers=_NO_STORE)

    # ---------------------------------------------------------------- the agent's API (refusals: jpki.serving)

    async def pending_get(request: Request) -> Response:
        pending = await run_in_threadpool(provider.pending, request.path_params["pending_id"])
        if pending is None:
            raise PendingNotFoundError("no such pending authorization (unknown, finished or expired)")
        return JSONResponse(provider.pending_document(pending), headers=_NO_STORE)

    def decided(pending: PendingAuthorization) -> JSONResponse:
        refused = pending.status is PendingState.REFUSED
        return JSONResponse({"ok": not refused, "state": str(pending.status), "reason": pending.reason,
                             "message": pending.message, "resume": provider.resume_url(pending.id)},
                            status_code=403 if refused else 200, headers=_NO_STORE)

    async def pending_complete(request: Request) -> Response:
        raw = await request.body()
        pending = await run_in_threadpool(provider.complete, request.path_params["pending_id"], raw)
        return decided(pending)

    # ---------------------------------------------------------------- sign transactions (OAuthError: RFC 6750)

    sign = provider.actions.get("sign")

    async def sign_call(call: Callable[..., Any], *args: Any) -> Any:
        try:
            return await run_in_threadpool(call, *args)
        except OAuthError:
            raise
        except JpkiError as exc:
            log.warning("sign transaction request failed: %s", exc)
            raise OAuthError("temporarily_unavailable", "try again shortly", status=503) from None

    async def sign_create(request: Request) -> Response:
        assert isinstance(sign, SignTransactions)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise OAuthError("invalid_request", "the body must be application/json")
        try:
            raw = await request.body()
        except Refusal as exc:  # too large, too slow: still an OAuth error document
            raise OAuthError("invalid_request", exc.message, status=exc.status, headers=exc.headers()) from None
        document = await sign_call(sign.create, request.headers.get("authorization"), raw)
        return JSONResponse(document, status_code=201, headers=_NO_STORE)

    async def sign_result(request: Request) -> Response:
        assert isinstance(sign, SignTransactions)
        token = await sign_call(sign.result, request.headers.get("authorization"), request.path_params["tx_id"])
        return Response(token, media_type="application/jose", headers=_NO_STORE)

    # ---------------------------------------------------------------- test cards

    async def test_card_list(request: Request) -> Response:
        assert test_cards is not None
        limit_api(request)
        cards = await run_in_threadpool(test_cards.cards)
        return JSONResponse({"cards": cards, "outcomes": list(pages.OUTCOMES)}, headers=_NO_STORE)

    async def test_card_api(request: Request) -> Response:
        assert test_cards is not None
        limit_api(request)
        try:
            data = json.loads(await request.body())
        except ValueError:
            raise Refusal(400, "malformed", "the body must be a JSON object") from None
        if not isinstance(data, dict) or set(data) - {"pending", "card", "outcome", "pin"} \
                or not all(isinstance(data.get(k), str) for k in ("pending", "card", "outcome")) \
                or not isinstance(data.get("pin", ""), str):
            raise Refusal(400, "malformed", 'expected {"pending": ID, "card": NAME, "outcome": OUTCOME}')
        try:
            pending = await run_in_threadpool(test_cards.authenticate, data["pending"], data["card"],
                                              data["outcome"], data.get("pin"))
            url = provider.resume_url(pending.id) if pending.status is PendingState.APPROVED else \
                await run_in_threadpool(provider.refusal_redirect, pending.id)
        except tuple(_REFUSALS):
            raise  # jpki.serving's handlers answer them
        except JpkiError as exc:  # an unknown card or outcome, a card that cannot do it
            raise Refusal(400, getattr(exc, "code", "error"), str(exc)) from None
        return JSONResponse({"redirect": url, "state": str(pending.status), "reason": pending.reason},
                            headers=_NO_STORE)

    routes = [
        Route(prefix + "/", index, methods=["GET"]),
        Route(prefix + "/.well-known/openid-configuration", discovery, methods=["GET"]),
        Route(prefix + REALM_PATH + "/.well-known/openid-configuration", discovery, methods=["GET"]),
        Route(oidc + "/certs", certs, methods=["GET"]),
        Route(oidc + "/auth", authorize, methods=["GET", "POST"]),
        Route(oidc + "/auth/resume", resume, methods=["GET"]),
        Route(oidc + "/auth/cancel", cancel, methods=["POST"]),
        Route(oidc + "/token", token, methods=["POST"]),
        Route(oidc + "/revoke", revoke, methods=["POST"]),
        Route(oidc + "/userinfo", userinfo, methods=["GET", "POST"]),
        Route(prefix + "/api/pending/{pending_id}", pending_get, methods=["GET"]),
        Route(prefix + "/api/pending/{pending_id}/complete", pending_complete, methods=["POST"]),
    ]
    if isinstance(sign, SignTransactions):
        routes += [
            Route(prefix + "/api/sign-transactions", sign_create, methods=["POST"]),
            Route(prefix + "/api/sign-transactions/{tx_id}/result", sign_result, methods=["GET"]),
        ]
    if testing:
        routes += [
            Route(oidc + "/auth/test-card", test_card_form, methods=["POST"]),
            Route(prefix + "/api/test-cards", test_card_list, methods=["GET"]),
            Route(prefix + "/api/test-cards/authenticate", test_card_api, methods=["POST"]),
        ]

    closed = False

    def close() -> None:
        nonlocal closed
        if closed:
            return
        closed = True
        for step in [*on_shutdown, provider.close]:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - shutting down: report and go on
                log.warning("shutdown step failed: %s", exc)

    app = http_app(routes, lifespan=summarising_lifespan(throttle.refusals, close), max_body=max_body,
                   body_timeout=body_timeout, refusals=_REFUSALS)
    app.add_exception_handler(OAuthError, _oauth_error)
    app.state.provider = provider
    app.state.test_cards = test_cards
    app.state.close = close
    return app


# --------------------------------------------------------------------------- building and serving


def create_service(config: ProviderConfig, *, clock: Clock | None = None, fetch: Fetch | None = None) -> Starlette:
    """The app for ``config``: :func:`jpki.idp.provider.build_provider`, plus the test cards
    when ``config.test_cards`` (the one place :mod:`jpki.idp.testcards` is imported, lazily:
    it drives emulated cards, which a provider of real cards never loads)."""
    provider = build_provider(config, clock=clock, fetch=fetch)
    try:
        plugin: TestCardsPlugin | None = None
        if config.test_cards:
            from jpki.idp.testcards import TestCards

            plugin = TestCards(provider, config.home)
        return create_app(provider, test_cards=plugin)
    except BaseException:
        provider.close()
        raise


def app_from_settings(settings: dict[str, Any], *, clock: Clock,
                      progress: Callable[[str], None] | None = None) -> Starlette:
    """The app of a :class:`ProviderConfig` given as a dict (:meth:`ProviderConfig.to_json`):
    the factory :func:`serve` names for :func:`jpki.serving.serve` and its worker processes."""
    return create_service(ProviderConfig.from_json(settings), clock=clock)


def serve(config: ProviderConfig, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, workers: int = 1,
          log_level: str = "info", idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
          on_ready: Callable[[], None] | None = None) -> None:
    """Serve under uvicorn until interrupted (blocks; see :func:`jpki.serving.serve`).
    ``workers`` > 1 runs that many processes on the port; they share the store of pending
    authorizations, codes, tokens and assertion ids, so a ``memory`` store is refused then.

    The port is checked first (:class:`jpki.serving.PortInUseError`); then the app is built
    once in this process, so that the provider's key and pairwise salt are made before any
    worker reads them and a store that cannot be opened fails here, not in every worker; then
    ``on_ready`` says "serving". A connection must deliver a request's headers within
    ``idle_timeout`` seconds."""
    if workers > 1 and config.store.strip() == "memory":
        raise UsageError("several workers need a shared store: use --store sqlite:PATH or --store "
                         "redis://HOST:PORT/DB (memory is per process)")
    _serve(AppSpec(f"{__name__}:app_from_settings", config.to_json()), host, port, workers=workers,
           log_level=log_level, idle_timeout=idle_timeout, on_ready=on_ready)
