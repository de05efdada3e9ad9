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
``POST …/api/realms/main/protocol/openid-connect/token``              codes and client credentials
``GET|POST …/api/realms/main/protocol/openid-connect/userinfo``       the granted claims
``GET ISSUER/api/pending/{id}``                                       for the agent: who, what, the
                                                                      challenge
``POST ISSUER/api/pending/{id}/complete``                             the card's answer (jpki.auth
                                                                      wire format) or a cancel
``GET ISSUER/api/test-cards``, ``POST ISSUER/api/test-cards/authenticate``   test-card mode only
===================================================================  ===============================

The auth page sets a cookie (``jpki_idp_browser``: HttpOnly, SameSite=Lax, Secure on https)
that binds the authorization to the browser: ``resume``, ``cancel`` and the test-card form
need it, so a pending id seen elsewhere cannot finish someone else's login in another browser.
The page's response also carries the pending id in ``X-JPKI-Pending`` (for scripts and CI).
Pages are sent with a CSP that allows no script, no framing (``frame-ancestors 'none'``) and
no referrer. Provider work (stores, card checks, OCSP) runs in the thread pool, never on the
event loop.

Serving: :func:`serve` (``jpki idp serve``: port check, listening before "serving", uvicorn
workers sharing a SQLite or Redis store) and :func:`serve_in_thread` for tests, through
:mod:`jpki.serving`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import logging
import os
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final, Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from jpki.clock import Clock, clock_from_environment
from jpki.errors import JpkiError, UsageError
from jpki.idp import pages
from jpki.idp.pending import PendingAuthorization, PendingState, StateError
from jpki.idp.provider import (
    REALM_PATH,
    MalformedAnswerError,
    OAuthError,
    PendingNotFoundError,
    Provider,
    ProviderConfig,
    ProviderUnavailableError,
    build_provider,
)
from jpki.serving import DEFAULT_BODY_TIMEOUT, DEFAULT_IDLE_TIMEOUT, check_port, listen
from jpki.verify import Fetch

__all__ = ["COOKIE", "DEFAULT_PORT", "ENV_CONFIG", "TestCardsPlugin", "app_from_environment", "create_app",
           "create_service", "serve", "serve_in_thread"]

log = logging.getLogger("jpki.idp")

#: Port of ``jpki idp serve``.
DEFAULT_PORT: Final = 8600
#: The browser-binding cookie.
COOKIE: Final = "jpki_idp_browser"
#: Environment variable through which :func:`serve` hands the configuration to workers.
ENV_CONFIG: Final = "JPKI_IDP_CONFIG"
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

    def authenticate(self, pending_id: str, card: str, outcome: str, pin: str | None = None) -> PendingAuthorization: ...


class _BodyError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, at most ``limit`` bytes, complete within ``timeout`` seconds."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _BodyError(413, "too-large", f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _BodyError(413, "too-large", f"the body is larger than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise _BodyError(408, "timeout", "the body did not arrive in time") from None
    except ClientDisconnect:
        raise _BodyError(400, "gone", "the client went away") from None
    return b"".join(chunks)


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


def _json_refusal(reason: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"ok": False, "reason": reason, "message": message}, status_code=status, headers=_NO_STORE)


def create_app(provider: Provider, *, test_cards: TestCardsPlugin | None = None, max_body: int = DEFAULT_MAX_BODY,
               body_timeout: float = DEFAULT_BODY_TIMEOUT,
               on_shutdown: Sequence[Callable[[], None]] = ()) -> Starlette:
    """The ASGI app of ``provider`` (``test_cards``: the test-card plug-in, else none);
    ``app.state.close()`` closes the provider (also done by the lifespan)."""
    prefix = urllib.parse.urlsplit(provider.issuer).path.rstrip("/")
    oidc = prefix + REALM_PATH + "/protocol/openid-connect"
    secure = provider.issuer.startswith("https://")
    testing = test_cards is not None

    def language(request: Request, ui_locales: Sequence[str] = ()) -> str:
        return pages.choose_language(request.headers.get("accept-language"), ui_locales)

    def html(text: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
        return HTMLResponse(text, status_code=status, headers={**_PAGE_HEADERS, **(headers or {})})

    def message(request: Request, kind: str, status: int, *, retry: str | None = None, reason: str | None = None,
                ui_locales: Sequence[str] = ()) -> HTMLResponse:
        return html(pages.message_page(language(request, ui_locales), kind, test_cards=testing, retry_url=retry,
                                       reason=reason), status)

    async def body(request: Request) -> bytes:
        return await _read_body(request, max_body, body_timeout)

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
            resume_url=provider.resume_url(pending.id), cancel_url=provider.issuer + REALM_PATH
            + "/protocol/openid-connect/auth/cancel",
            expires=_answer_by(pending).astimezone(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            test_cards=test_cards.cards() if test_cards is not None else None,
            test_card_url=provider.issuer + REALM_PATH + "/protocol/openid-connect/auth/test-card"
            if testing else None)

    async def authorize(request: Request) -> Response:
        try:
            if request.method == "POST":
                pairs = _form_pairs(await body(request))
            else:
                pairs = urllib.parse.parse_qsl(request.url.query, keep_blank_values=True, max_num_fields=100)
            pending, cookie = await run_in_threadpool(provider.authorize, pairs, request.cookies.get(COOKIE))
            page = await run_in_threadpool(auth_page, request, pending)
        except _BodyError as exc:
            return message(request, "error", exc.status, reason=exc.reason)
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
            outcome = await run_in_threadpool(provider.resume, pending_id, request.cookies.get(COOKIE))
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
        try:
            fields = dict(_form_pairs(await body(request)))
        except (_BodyError, OAuthError):
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

    # ---------------------------------------------------------------- token, userinfo

    def oauth_error(exc: OAuthError) -> JSONResponse:
        return JSONResponse(exc.as_dict(), status_code=exc.status, headers={**_NO_STORE, **exc.headers})

    async def token(request: Request) -> Response:
        try:
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != "application/x-www-form-urlencoded":
                raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
            pairs = _form_pairs(await body(request))
            document = await run_in_threadpool(provider.token, pairs, request.headers.get("authorization"))
        except _BodyError as exc:
            return oauth_error(OAuthError("invalid_request", exc.message, status=exc.status))
        except OAuthError as exc:
            return oauth_error(exc)
        except JpkiError as exc:
            log.warning("token request failed: %s", exc)
            return oauth_error(OAuthError("temporarily_unavailable", "try again shortly", status=503))
        return JSONResponse(document, headers=_NO_STORE)

    async def userinfo(request: Request) -> Response:
        try:
            claims = await run_in_threadpool(provider.userinfo, request.headers.get("authorization"))
        except OAuthError as exc:
            return oauth_error(exc)
        except JpkiError as exc:
            log.warning("userinfo failed: %s", exc)
            return oauth_error(OAuthError("temporarily_unavailable", "try again shortly", status=503))
        return JSONResponse(claims, headers=_NO_STORE)

    # ---------------------------------------------------------------- the agent's API

    async def pending_get(request: Request) -> Response:
        try:
            pending = await run_in_threadpool(provider.pending, request.path_params["pending_id"])
        except JpkiError:
            return _json_refusal("store-unavailable", "the store is unavailable", 503)
        if pending is None:
            return _json_refusal("not-found", "no such pending authorization (unknown, finished or expired)", 404)
        return JSONResponse(provider.pending_document(pending), headers=_NO_STORE)

    def decided(pending: PendingAuthorization) -> JSONResponse:
        refused = pending.status is PendingState.REFUSED
        return JSONResponse({"ok": not refused, "state": str(pending.status), "reason": pending.reason,
                             "message": pending.message, "resume": provider.resume_url(pending.id)},
                            status_code=403 if refused else 200, headers=_NO_STORE)

    async def pending_complete(request: Request) -> Response:
        try:
            raw = await body(request)
            pending = await run_in_threadpool(provider.complete, request.path_params["pending_id"], raw)
        except _BodyError as exc:
            return _json_refusal(exc.reason, exc.message, exc.status)
        except MalformedAnswerError as exc:
            return _json_refusal("malformed", str(exc), 400)
        except PendingNotFoundError as exc:
            return _json_refusal("not-found", str(exc), 404)
        except StateError as exc:
            return _json_refusal("not-pending", str(exc), 409)
        except ProviderUnavailableError as exc:
            log.warning("completion failed: %s", exc)
            return _json_refusal("store-unavailable", "try again shortly", 503)
        return decided(pending)

    # ---------------------------------------------------------------- test cards

    async def test_card_list(request: Request) -> Response:
        assert test_cards is not None
        cards = await run_in_threadpool(test_cards.cards)
        return JSONResponse({"cards": cards, "outcomes": list(pages.OUTCOMES)}, headers=_NO_STORE)

    async def test_card_api(request: Request) -> Response:
        assert test_cards is not None
        try:
            data = json.loads(await body(request))
        except _BodyError as exc:
            return _json_refusal(exc.reason, exc.message, exc.status)
        except ValueError:
            return _json_refusal("malformed", "the body must be a JSON object", 400)
        if not isinstance(data, dict) or set(data) - {"pending", "card", "outcome", "pin"} \
                or not all(isinstance(data.get(k), str) for k in ("pending", "card", "outcome")) \
                or not isinstance(data.get("pin", ""), str):
            return _json_refusal("malformed", 'expected {"pending": ID, "card": NAME, "outcome": OUTCOME}', 400)
        try:
            pending = await run_in_threadpool(test_cards.authenticate, data["pending"], data["card"],
                                              data["outcome"], data.get("pin"))
            url = provider.resume_url(pending.id) if pending.status is PendingState.APPROVED else \
                await run_in_threadpool(provider.refusal_redirect, pending.id)
        except PendingNotFoundError as exc:
            return _json_refusal("not-found", str(exc), 404)
        except StateError as exc:
            return _json_refusal("not-pending", str(exc), 409)
        except ProviderUnavailableError as exc:
            return _json_refusal("store-unavailable", str(exc), 503)
        except JpkiError as exc:
            return _json_refusal(getattr(exc, "code", "error"), str(exc), 400)
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
        Route(oidc + "/userinfo", userinfo, methods=["GET", "POST"]),
        Route(prefix + "/api/pending/{pending_id}", pending_get, methods=["GET"]),
        Route(prefix + "/api/pending/{pending_id}/complete", pending_complete, methods=["POST"]),
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

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(close)

    app = Starlette(routes=routes, lifespan=lifespan)
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


def app_from_environment() -> Starlette:
    """The app for ``$JPKI_IDP_CONFIG``: what uvicorn workers import."""
    text = os.environ.get(ENV_CONFIG)
    if not text:
        raise UsageError(f"${ENV_CONFIG} is not set")
    return create_service(ProviderConfig.from_json(text), clock=clock_from_environment())


def serve(config: ProviderConfig, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, workers: int = 1,
          log_level: str = "info", idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
          on_ready: Callable[[], None] | None = None) -> None:
    """Serve under uvicorn until interrupted (blocks), like :func:`jpki.auth.service.serve`:
    the port checked first, the key and salt made and the store opened in this process, the
    socket listening before ``on_ready`` says "serving"; ``workers`` > 1 need a shared store."""
    import uvicorn

    from jpki.auth.service import _log_config, _uvicorn_config
    from jpki.idp.keys import ProviderKey, load_salt
    from jpki.idp.kv import open_kv
    from jpki.serving import uvicorn_options

    if workers < 1:
        raise UsageError("workers must be at least 1")
    if workers > 1 and config.store.strip() == "memory":
        raise UsageError("several workers need a shared store: use --store sqlite:PATH or --store "
                         "redis://HOST:PORT/DB (memory is per process)")
    check_port(host, port)
    ProviderKey.load_or_create(config.home)  # made once, here, before any worker reads it
    load_salt(config.home)
    if workers == 1:
        app = create_service(config, clock=clock_from_environment())
        try:
            sock = listen(host, port)
        except BaseException:
            app.state.close()
            raise
        with sock:
            if on_ready is not None:
                on_ready()
            uvicorn.Server(_uvicorn_config(app, host, port, log_level, idle_timeout)).run(sockets=[sock])
        return
    open_kv(config.store).close()  # fail here, not in every worker
    os.environ[ENV_CONFIG] = config.to_json()
    if on_ready is not None:
        on_ready()
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, log_config=_log_config(log_level), **uvicorn_options(idle_timeout=idle_timeout))


def serve_in_thread(app: Starlette, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning") -> Any:
    """Run ``app`` under uvicorn in a background thread (``port=0``: a free port); returns a
    started :class:`jpki.revocation.server.ServerThread` (``.url``, ``.stop()``, a context
    manager)."""
    from jpki.revocation.server import ServerThread

    return ServerThread(app, host, port, log_level=log_level).start()
