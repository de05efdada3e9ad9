"""The local agent over HTTP: a Starlette app built from a :class:`jpki.agent.service.Agent`,
served on loopback by :mod:`jpki.serving` (``jpki agent``).

===============================================  ===============================================
``GET /authorize?issuer=ISSUER&pending=ID``       the provider's "use the card on this computer"
                                                  link: "trust this provider?" the first time,
                                                  then the request and the PIN form
``POST /authorize``                               the form: ``do=answer`` (with ``pin``),
                                                  ``do=cancel``, ``do=retry``, ``do=blocked`` (a
                                                  blocked PIN: tell the provider); then 303 to the
                                                  provider's ``resume`` URL, or a page saying why not
``POST /trust``                                   the "trust this provider" button
``GET /``                                         the agent's status page
===============================================  ===============================================

Guards (:mod:`jpki.agent.guards`), every one tested in ``tests/test_agent_guards.py``:

- listens on a loopback address only (:func:`serve` refuses any other);
- every request: ``Host`` must be ``127.0.0.1:PORT``, ``localhost:PORT`` or ``[::1]:PORT`` with
  the port the server listens on, else 421 before routing (DNS rebinding);
- ``GET`` pages: a top-level navigation when the browser sends fetch metadata (no frame,
  image, script);
- every ``POST``: ``Origin`` equal to the agent's own origin, ``Sec-Fetch-Site: same-origin``
  when sent, a form body (``application/x-www-form-urlencoded``), and the token of the page the
  form was on (used once, 10 minutes);
- bodies of at most :data:`DEFAULT_MAX_BODY` bytes, arriving within ``body_timeout`` seconds
  (:func:`jpki.serving.http_app`); requests to the provider bounded in size and time;
- pages: no script, no framing (CSP ``frame-ancestors 'none'``, ``X-Frame-Options``), no
  referrer to other origins, not stored.

The PIN is read from the form, given to :meth:`Agent.answer` and dropped: never logged, never
echoed into a page. Card and provider work runs in the thread pool, never on the event loop.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from jpki.agent import pages
from jpki.agent.guards import GuardError, PageTokens, check_fetch_metadata, check_host, check_origin
from jpki.agent.service import (
    DEFAULT_PORT,
    Agent,
    AgentConfig,
    CardBusyError,
    CardStatus,
    PendingRequest,
    PinFormatError,
    ProviderError,
    RequestDecidedError,
    RequestGoneError,
    UntrustedProviderError,
)
from jpki.agent.trust import TrustStoreError, check_issuer
from jpki.auth.client import ChallengeRefusedError
from jpki.clock import Clock
from jpki.errors import (
    CardError,
    JpkiError,
    NoReaderError,
    PinBlockedError,
    PinIncorrectError,
    ProtocolError,
    TransportError,
    UsageError,
)
from jpki.serving import DEFAULT_BODY_TIMEOUT, DEFAULT_IDLE_TIMEOUT, AppSpec, Refusal, http_app, text_refusal
from jpki.serving import serve as _serve

__all__ = ["DEFAULT_MAX_BODY", "DEFAULT_PORT", "LoopbackHosts", "app_from_settings", "create_app", "serve"]

log = logging.getLogger("jpki.agent")

#: Largest request body: a form with a token, the issuer, the pending id and a PIN.
DEFAULT_MAX_BODY: Final = 8 * 1024

#: Headers of every page. ``Referrer-Policy: same-origin`` rather than ``no-referrer``: under
#: ``no-referrer`` a browser sends ``Origin: null`` with the page's own form POST (Fetch,
#: "serializing a request origin"), which the Origin guard must refuse; ``same-origin`` still
#: gives the provider no referrer when the browser goes back to it.
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
                               "base-uri 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store", "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_FORM: Final = "application/x-www-form-urlencoded"


class LoopbackHosts:
    """ASGI middleware: answer 421 to any request whose ``Host`` is not the agent's loopback
    name with the port it listens on (:func:`jpki.agent.guards.check_host`), before routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            server = scope.get("server")
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
            try:
                if not server or server[1] is None:
                    raise GuardError(421, "bad-host", "the agent does not know its own port")
                check_host(host, int(server[1]))
            except GuardError as exc:
                response = PlainTextResponse(str(exc) + "\n", status_code=exc.status,
                                             headers={"Cache-Control": "no-store"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _guard_refusal(exc: GuardError) -> Refusal:
    log.info("request refused: %s", exc.reason)
    return Refusal(exc.status, exc.reason, str(exc))


def create_app(agent: Agent, *, max_body: int = DEFAULT_MAX_BODY, body_timeout: float = DEFAULT_BODY_TIMEOUT,
               tokens: PageTokens | None = None) -> Starlette:
    """The ASGI app of ``agent`` (see the module docstring); ``app.state.close()`` closes the
    agent (also done by the lifespan)."""
    tokens = tokens if tokens is not None else PageTokens()

    def language(request: Request) -> str:
        return pages.choose_language(request.headers.get("accept-language"))

    def origin(request: Request) -> str:
        return "http://" + request.headers.get("host", "127.0.0.1").lower()

    def html(text: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(text, status_code=status, headers=dict(_PAGE_HEADERS))

    def message(request: Request, kind: str, status: int, **kwargs: Any) -> HTMLResponse:
        return html(pages.message_page(language(request), origin(request), kind, **kwargs), status)

    def navigation(request: Request) -> None:
        h = request.headers
        check_fetch_metadata(h.get("sec-fetch-site"), h.get("sec-fetch-mode"), h.get("sec-fetch-dest"),
                             navigation=True)

    async def form(request: Request) -> dict[str, str]:
        """The fields of a POST from the agent's own page (every guard of a state change)."""
        h = request.headers
        check_origin(h.get("origin"), h.get("host", "").lower())
        check_fetch_metadata(h.get("sec-fetch-site"), h.get("sec-fetch-mode"), h.get("sec-fetch-dest"),
                             navigation=False)
        if h.get("content-type", "").split(";")[0].strip().lower() != _FORM:
            raise Refusal(415, "not-a-form", f"the agent takes {_FORM} bodies only")
        try:
            text = (await request.body()).decode("utf-8")
            pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=10)
        except (UnicodeDecodeError, ValueError):
            raise Refusal(400, "malformed", "the form is not UTF-8 form data") from None
        return dict(pairs)

    def authorize_url(issuer: str, pending: str) -> str:
        return "/authorize?" + urllib.parse.urlencode({"issuer": issuer, "pending": pending})

    def trust_page(request: Request, issuer: str, pending: str) -> HTMLResponse:
        token = tokens.issue(("trust", issuer, pending), agent.clock.now())
        return html(pages.trust_page(language(request), origin(request), issuer=issuer, pending_id=pending,
                                     token=token))

    def failure_page(request: Request, exc: JpkiError) -> HTMLResponse:
        """The page for what went wrong with the request itself (not with the card or PIN)."""
        if isinstance(exc, RequestGoneError):
            return message(request, "gone", 410)
        if isinstance(exc, RequestDecidedError):
            return message(request, "decided", 200, link=exc.resume)
        if isinstance(exc, ChallengeRefusedError):
            return message(request, "challenge", 400, reason=exc.reason)
        if isinstance(exc, ProviderError):   # unreachable, or an answer that makes no sense: try again later
            log.warning("provider failed: %s", exc)
            again = authorize_url(request.query_params.get("issuer", ""), request.query_params.get("pending", ""))
            return message(request, "provider", 502, reason=exc.reason,
                           link=again if request.method == "GET" else None, link_text="again")
        return message(request, "bad_link", 400, reason=getattr(exc, "code", "error"))

    async def show(request: Request, issuer: str, pending: str,
                   notice: Callable[[str], tuple[str, str]] | None = None) -> Response:
        """The request page, fresh from the provider and the card."""

        def load() -> tuple[PendingRequest, CardStatus]:
            found = agent.fetch(issuer, pending)
            return found, agent.card_status(found.pin)

        try:
            found, card = await run_in_threadpool(load)
        except UntrustedProviderError:
            return trust_page(request, issuer, pending)
        except (RequestGoneError, RequestDecidedError, ChallengeRefusedError, ProviderError, UsageError) as exc:
            return failure_page(request, exc)
        lang = language(request)
        token = tokens.issue(("authorize", issuer, pending), agent.clock.now())
        return html(pages.request_page(lang, origin(request), found, token=token, card=card,
                                       notice=notice(lang) if notice is not None else None))

    # ---------------------------------------------------------------- routes

    async def index(request: Request) -> Response:
        navigation(request)
        trusted = await run_in_threadpool(agent.trusted.list)
        return html(pages.status_page(language(request), origin(request), card=agent.config.card,
                                      trusted=[p.issuer for p in trusted]))

    async def authorize_get(request: Request) -> Response:
        navigation(request)
        issuer, pending = request.query_params.get("issuer", ""), request.query_params.get("pending", "")
        try:
            check_issuer(issuer)
        except UsageError:
            return message(request, "bad_link", 400, reason="issuer")
        if not await run_in_threadpool(agent.is_trusted, issuer):
            return trust_page(request, issuer, pending)
        return await show(request, issuer, pending)

    async def trust_post(request: Request) -> Response:
        fields = await form(request)
        issuer, pending = fields.get("issuer", ""), fields.get("pending", "")
        try:
            tokens.take(fields.get("token"), ("trust", issuer, pending), agent.clock.now())
        except GuardError:
            return message(request, "expired_page", 403)
        try:
            await run_in_threadpool(agent.trust, issuer)
        except UsageError:
            return message(request, "bad_link", 400, reason="issuer")
        return RedirectResponse(authorize_url(issuer, pending), status_code=303)

    async def authorize_post(request: Request) -> Response:
        fields = await form(request)
        issuer, pending, do = fields.get("issuer", ""), fields.get("pending", ""), fields.get("do", "")
        try:
            tokens.take(fields.get("token"), ("authorize", issuer, pending), agent.clock.now())
        except GuardError:
            return message(request, "expired_page", 403)
        if do == "retry":
            return RedirectResponse(authorize_url(issuer, pending), status_code=303)
        if do not in ("answer", "cancel", "blocked"):
            return message(request, "bad_link", 400, reason="do")
        pin = fields.pop("pin", "")

        def run() -> Any:
            found = agent.fetch(issuer, pending)
            if do == "answer":
                return agent.answer(found, pin)
            return agent.cancel(found, "cancelled" if do == "cancel" else "pin-blocked")

        def say(key: str, level: str = "error", kind: str | None = None) -> Callable[[str], tuple[str, str]]:
            return lambda lang: pages.notice(lang, key, level, pin=kind)

        try:
            outcome = await run_in_threadpool(run)
        except UntrustedProviderError:
            return trust_page(request, issuer, pending)
        except PinFormatError as exc:
            return await show(request, issuer, pending, say("pin_format", kind=exc.kind))
        except PinIncorrectError as exc:
            return await show(request, issuer, pending, say("wrong_pin", kind=exc.pin))
        except NoReaderError:
            return await show(request, issuer, pending, say("no_reader"))
        except (TransportError, PinBlockedError) as exc:  # a blocked PIN is reported, not raised
            log.info("card unavailable: %s", exc.code)
            return await show(request, issuer, pending, say("no_card"))
        except CardBusyError:
            return await show(request, issuer, pending, say("busy", "warn"))
        except (CardError, ProtocolError) as exc:
            log.warning("the card could not answer: %s", exc.code)
            return await show(request, issuer, pending, say("card_error"))
        except ProviderError as exc:
            if exc.reason in ("unreachable", "timeout") or (exc.status or 0) >= 500:
                log.warning("provider failed: %s", exc)
                return await show(request, issuer, pending, say("provider_down"))
            return failure_page(request, exc)
        except (RequestGoneError, RequestDecidedError, ChallengeRefusedError, UsageError) as exc:
            return failure_page(request, exc)
        if outcome.state == "approved" or do != "answer":
            return RedirectResponse(outcome.resume, status_code=303, headers={"Cache-Control": "no-store"})
        return html(pages.refused_page(language(request), origin(request), reason=outcome.reason,
                                       resume=outcome.resume))

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/authorize", authorize_get, methods=["GET"]),
        Route("/authorize", authorize_post, methods=["POST"]),
        Route("/trust", trust_post, methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(agent.close)

    refusals: Mapping[type[Exception], Callable[[Any], Refusal]] = {
        GuardError: _guard_refusal,
        TrustStoreError: lambda exc: Refusal(500, "trust-store", str(exc)),
    }
    app = http_app(routes, lifespan=lifespan, max_body=max_body, body_timeout=body_timeout,
                   render=text_refusal, refusals=refusals)
    app.add_middleware(LoopbackHosts)
    app.state.agent = agent
    app.state.tokens = tokens
    app.state.close = agent.close
    return app


# --------------------------------------------------------------------------- building and serving


def app_from_settings(settings: dict[str, Any], *, clock: Clock,
                      progress: Callable[[str], None] | None = None) -> Starlette:
    """The app of an :class:`AgentConfig` given as a dict: the factory :func:`serve` names."""
    return create_app(Agent(AgentConfig.from_json(settings), clock=clock))


def check_loopback(host: str) -> str:
    """``host`` if it is a loopback address, else :class:`UsageError`: the agent has a card
    behind it and must never be reachable from another machine."""
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(f"the agent listens on a loopback address only (127.0.0.1 or ::1), not {host!r}")
    return host.strip("[]")


def serve(config: AgentConfig, port: int = DEFAULT_PORT, *, host: str = "127.0.0.1", log_level: str = "info",
          idle_timeout: float = DEFAULT_IDLE_TIMEOUT, on_ready: Callable[[], None] | None = None) -> None:
    """Serve the agent on ``host:port`` (a loopback address only) until interrupted, in one
    process (the page tokens and the card are this process's); see :func:`jpki.serving.serve`."""
    _serve(AppSpec(f"{__name__}:app_from_settings", config.to_json()), check_loopback(host), port, workers=1,
           log_level=log_level, idle_timeout=idle_timeout, on_ready=on_ready)
