"""The test TSA over HTTP (RFC 3161 §3.4): a Starlette app over a
:class:`~jpki.tsa.authority.TimeStampAuthority`, served by :mod:`jpki.serving` like every jpki app.

Routes:

``POST /``
    Body: a DER TimeStampReq, ``Content-Type: application/timestamp-query``. Answer: HTTP 200,
    ``application/timestamp-reply``, the TimeStampResp: a token, or a ``rejection`` with the
    RFC 3161 failure bit (badAlg, badRequest, badDataFormat, unacceptedPolicy,
    unacceptedExtension, systemFailure) and a statusString saying why. A request that reached
    the TSA is always answered in RFC 3161's own terms, so that openssl, pyHanko and any other
    client can show the reason.
``GET /tsa.pem``
    The TSA's certificate (PEM), for ``openssl ts -verify -untrusted``.
``GET /healthz``
    200 ``{"status": "ok", "policy": …, "certificate": {…}, "last_serial": N, "answers": {…}}``.

HTTP-level faults get an HTTP error with one line of text (TSA clients read no JSON; see
:func:`jpki.serving.text_refusal`): a POST without ``Content-Type:
application/timestamp-query`` → 415, a body over :data:`~jpki.tsa.protocol.MAX_REQUEST_SIZE`
(4 KiB) → 413, a body not complete within ``body_timeout`` → 408 (connection closed), more
than ``rate_burst`` requests at once or ``rate_limit`` per second from one client address →
429 with ``Retry-After`` (per worker process: :class:`jpki.serving.RateLimiter`). A connection
must complete a request's headers within ``idle_timeout`` (:mod:`jpki.serving`).

Signing and the serial counter's commit run in the thread pool; the rest on the event loop.
Serving (``jpki tsa serve``): :func:`serve` makes (or renews) the TSA in the home first, in this
process, then hands :func:`app_from_settings` to :func:`jpki.serving.serve`; worker processes
only load what it made, and share the serial counter (:mod:`jpki.tsa.serials`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import logging
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.serialization import Encoding
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from jpki.clock import Clock
from jpki.errors import UsageError
from jpki.serving import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    AppSpec,
    RateLimiter,
    Refusal,
    ServerThread,
    client_key,
    http_app,
    text_refusal,
)
from jpki.serving import serve as _serve
from jpki.serving import serve_in_thread as _serve_in_thread
from jpki.settings import settings_from_json, settings_to_json
from jpki.tsa.authority import DEFAULT_ACCURACY, TimeStampAuthority
from jpki.tsa.protocol import MAX_REQUEST_SIZE, QUERY_TYPE, REPLY_TYPE

__all__ = ["DEFAULT_RATE_BURST", "DEFAULT_RATE_LIMIT", "TsaSettings", "app_from_settings", "create_app",
           "create_service", "serve", "serve_in_thread"]

_log = logging.getLogger(__name__)

#: Tokens per second one client address may ask for (each costs a signature and a disk commit).
DEFAULT_RATE_LIMIT: Final = 20.0
#: Requests one client address may send at once before the rate applies.
DEFAULT_RATE_BURST: Final = 100


@dataclasses.dataclass(frozen=True)
class TsaSettings:
    """What ``jpki tsa serve`` runs: the home holding the TSA (``HOME/tsa``, made beforehand by
    :func:`jpki.tsa.credentials.ensure_tsa`), the per-client limits and the token accuracy."""

    home: Path
    rate_limit: float = DEFAULT_RATE_LIMIT
    rate_burst: int = DEFAULT_RATE_BURST
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    accuracy: float = DEFAULT_ACCURACY.total_seconds()

    def __post_init__(self) -> None:
        RateLimiter(self.rate_limit, self.rate_burst)  # the same checks, once, before serving
        if not (math.isfinite(self.body_timeout) and self.body_timeout > 0):
            raise UsageError("body_timeout must be positive")
        if not (math.isfinite(self.accuracy) and 1e-6 <= self.accuracy <= 86400):
            raise UsageError("the accuracy must be between a microsecond and a day (in seconds)")

    def to_json(self) -> dict[str, Any]:
        return settings_to_json(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> TsaSettings:
        return settings_from_json(cls, data, what="TSA", required=("home",))


class _AsgiEndpoint:
    """Marks an ``async (scope, receive, send)`` function as a raw ASGI endpoint for Starlette."""

    def __init__(self, handler: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handler(scope, receive, send)


_REPLY_HEADERS: Final = [(b"content-type", REPLY_TYPE.encode()), (b"cache-control", b"no-store")]


def create_app(authority: TimeStampAuthority, *, rate_limit: float = DEFAULT_RATE_LIMIT,
               rate_burst: int = DEFAULT_RATE_BURST, body_timeout: float = DEFAULT_BODY_TIMEOUT,
               max_body: int = MAX_REQUEST_SIZE) -> Starlette:
    """The app over ``authority`` (see the module docstring), closed with it by the ASGI
    lifespan or ``app.state.close()``; ``app.state.authority`` is the authority."""
    limiter = RateLimiter(rate_limit, rate_burst)
    refused: Counter[str] = Counter()
    pem = authority.cert.public_bytes(Encoding.PEM)

    async def timestamp(scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        wait = limiter.take(client_key(client[0] if client else None))
        if wait:
            refused["rate-limited"] += 1
            raise Refusal(429, "rate-limited", f"too many requests: retry in {math.ceil(wait)} s", retry_after=wait)
        content_type = b""
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
        if content_type.split(b";")[0].strip().lower() != QUERY_TYPE.encode():
            refused["unsupported-media-type"] += 1
            raise Refusal(415, "unsupported-media-type", f"Content-Type must be {QUERY_TYPE}")
        chunks: list[bytes] = []
        while True:  # receive() refuses a body too large or too slow (jpki.serving.BodyLimits)
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # gone mid-body: nothing to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        answer = await run_in_threadpool(authority.respond, b"".join(chunks))
        if not answer.granted:  # the client's fault (or logged by the authority): not at info
            _log.debug("TSA request refused: %s", answer.detail)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*_REPLY_HEADERS, (b"content-length", str(len(answer.der)).encode())]})
        await send({"type": "http.response.body", "body": answer.der})

    async def certificate(request: Request) -> Response:
        return Response(pem, media_type="application/x-pem-file")

    async def healthz(request: Request) -> Response:
        status = await run_in_threadpool(authority.status)
        return JSONResponse({"status": "ok", **status, "refused": dict(refused)})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            authority.close()

    routes = [
        Route("/", _AsgiEndpoint(timestamp), methods=["POST"]),
        Route("/tsa.pem", certificate, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    app = http_app(routes, lifespan=lifespan, max_body=max_body, body_timeout=body_timeout, render=text_refusal)
    app.state.authority = authority
    app.state.close = authority.close
    return app


def create_service(settings: TsaSettings, *, clock: Clock | None = None) -> Starlette:
    """The app of ``settings``: the TSA of ``settings.home`` loaded (nothing is made here)."""
    authority = TimeStampAuthority.open(settings.home, clock=clock,
                                        accuracy=_dt.timedelta(seconds=settings.accuracy))
    try:
        return create_app(authority, rate_limit=settings.rate_limit, rate_burst=settings.rate_burst,
                          body_timeout=settings.body_timeout)
    except BaseException:
        authority.close()
        raise


def app_from_settings(settings: dict[str, Any], *, clock: Clock,
                      progress: Callable[[str], None] | None = None) -> Starlette:
    """The factory :func:`serve` names for :func:`jpki.serving.serve` and its worker processes."""
    return create_service(TsaSettings.from_json(settings), clock=clock)


def serve(settings: TsaSettings, host: str = "127.0.0.1", port: int = 0, *, workers: int = 1,
          log_level: str = "info", idle_timeout: float = DEFAULT_IDLE_TIMEOUT, clock: Clock | None = None,
          on_ready: Callable[[], None] | None = None) -> None:
    """Serve the TSA of ``settings.home`` under uvicorn until interrupted (blocks; see
    :func:`jpki.serving.serve`): the port checked, the app built (once in this process with
    workers), ``on_ready`` called, then requests served. The TSA must exist
    (:func:`jpki.tsa.credentials.ensure_tsa`; ``jpki tsa serve`` makes it first)."""
    _serve(AppSpec(f"{__name__}:app_from_settings", settings.to_json()), host, port, workers=workers,
           log_level=log_level, idle_timeout=idle_timeout, clock=clock, on_ready=on_ready)


def serve_in_thread(home: Path | str, *, clock: Clock | None = None, host: str = "127.0.0.1", port: int = 0,
                    rate_limit: float = DEFAULT_RATE_LIMIT, rate_burst: int = DEFAULT_RATE_BURST,
                    log_level: str = "warning") -> ServerThread:
    """The TSA of ``home`` in a background thread (``port=0``: a free port), returned once it
    answers (:func:`jpki.serving.serve_in_thread`); stopping it closes the TSA. For tests and
    the demo."""
    app = create_service(TsaSettings(Path(home), rate_limit=rate_limit, rate_burst=rate_burst), clock=clock)
    try:
        return _serve_in_thread(app, host, port, log_level=log_level)
    except BaseException:
        app.state.close()
        raise

