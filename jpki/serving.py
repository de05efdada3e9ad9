"""The one way jpki serves HTTP: every app (the test CA's OCSP/CRL server, the relying party, and
the next ones: the OpenID provider, the TSA, the local agent) is built and run through here.

An app module (:mod:`jpki.pki.server`, :mod:`jpki.auth.service`) keeps its service object free
of HTTP and provides three things::

    create_app(...) -> Starlette     # routes over the service, made with http_app()
    app_from_settings(settings, *, clock, progress=None) -> Starlette
                                     # the factory an AppSpec names (JSON settings)
    app.state.close()                # releases what the app holds when no lifespan runs

and this module does the rest::

    serve(AppSpec("pkg.mod:app_from_settings", settings), host, port, workers=2, progress=note)
    with serve_in_thread(app) as server:      # port 0: a free port; for tests and the demo
        server.url                            # http://127.0.0.1:PORT

**Refusals** are raised, never built by an endpoint: :class:`Refusal` (status, reason code,
message) or a library exception that :func:`http_app` is told how to turn into one; the app's
exception handler renders it as the JSON document ``{"ok": false, "reason": …, "message": …}``
(:func:`json_refusal`) or as one line of text (:func:`text_refusal`, for protocols whose
clients read no JSON, like OCSP).

**Bodies**: :class:`BodyLimits` (installed by :func:`http_app`) refuses a body over
``max_body`` bytes, declared or counted as it arrives (413 ``too-large``), and a body not
complete within ``body_timeout`` seconds of the app's first read (408 ``timeout``, connection
closed): a slowloris sending a byte now and then would otherwise hold a connection for ever.

**Clients**: :func:`client_key` is the key per-client limits are kept under (an IPv4 address,
an IPv6 /64); :class:`RateLimiter` is a token bucket per client key, in one process (the TSA's
limit; the relying party keeps its buckets in its shared store, :mod:`jpki.auth.limits`).

**Connections**: uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``
seconds, but only once a response has been sent on it: a client that connects and sends
nothing, or half a request line, or its headers one byte at a time, holds a connection (and a
file descriptor) for as long as it likes. The protocol classes here
(``http="jpki.serving:HttpToolsProtocol"`` or ``"jpki.serving:H11Protocol"``, see
:func:`uvicorn_options`) give every connection ``idle_timeout`` seconds, from its opening and
again after each response, to deliver complete request headers; otherwise it is closed.

**Starting**: :func:`serve` checks the port before it builds anything and listens before it
says "serving": :class:`PortInUseError` (exit 1: "port N is in use (hint: --port)") rather than
uvicorn's own exit (status 3, the code for "verification failed") after the announcement. With
``workers`` > 1 the parent builds the app once (bad settings fail there, once; what the workers
share, like files and database rows, is made before they start), lets it go, and hands the
:class:`AppSpec` to the worker processes as JSON in ``$JPKI_SERVE_APP``; each builds its own app
with :func:`app_from_environment`, on the clock of ``$JPKI_NOW``
(:func:`jpki.clock.clock_from_environment`). The ``jpki`` loggers write to uvicorn's console.

Importing this module imports neither uvicorn nor any app: only :mod:`jpki.errors`,
:mod:`jpki.clock` and Starlette.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import errno
import functools
import importlib
import importlib.util
import ipaddress
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, Self

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Lifespan, Message, Receive, Scope, Send

from jpki.clock import Clock, clock_from_environment
from jpki.errors import JpkiError, UsageError

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "ENV_APP",
    "AppSpec",
    "BodyLimits",
    "PortInUseError",
    "RateLimiter",
    "Refusal",
    "ServerThread",
    "app_from_environment",
    "check_port",
    "client_key",
    "http_app",
    "http_url",
    "json_refusal",
    "listen",
    "log_config",
    "serve",
    "serve_in_thread",
    "text_refusal",
    "uvicorn_options",
]

_log = logging.getLogger(__name__)

#: Seconds a connection may stay without a complete request's headers (new or kept alive).
DEFAULT_IDLE_TIMEOUT: Final = 10.0
#: Seconds an app waits for a whole request body before answering 408.
DEFAULT_BODY_TIMEOUT: Final = 10.0
#: Environment variable through which :func:`serve` hands the app to worker processes.
ENV_APP: Final = "JPKI_SERVE_APP"
#: Listening backlog (connections the kernel queues before the server accepts them).
BACKLOG: Final = 2048

Progress = Callable[[str], None]


# --------------------------------------------------------------------------- ports


class PortInUseError(UsageError):
    """The address to listen on is taken by another program (or not available here).

    A usage error (choose another ``--port``), but exit 1 as documented for a busy port."""

    def __init__(self, host: str, port: int, detail: str) -> None:
        super().__init__(f"port {port} is in use (hint: --port)" if detail == "in use"
                         else f"cannot listen on {host}:{port}: {detail} (hint: --host, --port)")
        self.host = host
        self.port = port
        self.reason = "port_in_use" if detail == "in use" else "cannot_listen"


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (port 0: a free one), bound like uvicorn binds
    (SO_REUSEADDR, so a port in TIME_WAIT is not refused), for ``uvicorn.Server.run(sockets=[…])``;
    or :class:`PortInUseError`."""
    if not 0 <= port <= 65535:
        raise UsageError(f"port {port} is out of range")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except socket.gaierror as exc:
        sock.close()
        raise PortInUseError(host, port, f"unknown host ({exc.strerror})") from None
    except OSError as exc:
        sock.close()
        detail = "in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise PortInUseError(host, port, detail) from None
    sock.set_inheritable(True)
    return sock


def check_port(host: str, port: int) -> None:
    """Raise :class:`PortInUseError` unless a server could listen on ``host:port`` now."""
    listen(host, port).close()


def http_url(host: str, port: int) -> str:
    """``http://HOST:PORT`` (an IPv6 address in brackets)."""
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


# --------------------------------------------------------------------------- refusals


class Refusal(JpkiError):
    """A request refused: HTTP ``status``, a machine-readable ``reason`` (``too-large``,
    ``timeout``, ``rate-limited``, …) and a one-line ``message`` for people (never personal
    data). ``retry_after`` (seconds) becomes ``Retry-After``; ``close`` closes the connection
    after the answer. Raised by endpoints and :class:`BodyLimits`, rendered by the app's
    exception handler (see :func:`http_app`)."""

    def __init__(self, status: int, reason: str, message: str, *, retry_after: float | None = None,
                 close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.reason = str(reason)
        self.message = message
        self.retry_after = retry_after
        self.close = close

    def headers(self) -> dict[str, str]:
        """The headers the refusal asks for (``Retry-After``, ``Connection``)."""
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        if self.close:
            headers["Connection"] = "close"
        return headers


def json_refusal(refusal: Refusal) -> Response:
    """``{"ok": false, "reason": …, "message": …}``, not to be stored by caches."""
    return JSONResponse({"ok": False, "reason": refusal.reason, "message": refusal.message},
                        status_code=refusal.status, headers={"Cache-Control": "no-store", **refusal.headers()})


def text_refusal(refusal: Refusal) -> Response:
    """The message as one line of ``text/plain``."""
    return PlainTextResponse(refusal.message + "\n", status_code=refusal.status, headers=refusal.headers())


def _too_large(limit: int) -> Refusal:
    return Refusal(413, "too-large", f"the body is larger than {limit} bytes")


_HTTP1 = frozenset(("1.0", "1.1"))


def _bodiless(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return all(name not in (b"content-length", b"transfer-encoding") for name, _ in headers)


class BodyLimits:
    """ASGI middleware: the app's ``receive`` refuses (raises :class:`Refusal`) a request body
    larger than ``max_body`` bytes — by its Content-Length (400 when that is not a number) or
    counted as it arrives, whatever Content-Length said — and one not complete within
    ``timeout`` seconds of the app's first read. Apps that do not read the body pay nothing;
    once the body is complete, ``receive`` is the server's again (a disconnect is passed on).
    An HTTP/1 request with neither Content-Length nor Transfer-Encoding has no body (RFC 9112
    §6.3) and goes through untouched: the OCSP GETs, most of what a responder serves."""

    def __init__(self, app: ASGIApp, *, max_body: int, timeout: float) -> None:
        if max_body < 0:
            raise UsageError("max_body must not be negative")
        if not timeout > 0:
            raise UsageError("body_timeout must be positive")
        self.app = app
        self.max_body = max_body
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope.get("http_version") in _HTTP1 and _bodiless(scope["headers"])):
            await self.app(scope, receive, send)
            return
        max_body, timeout = self.max_body, self.timeout
        size = 0
        deadline: float | None = None
        reading = True

        async def limited() -> Message:
            nonlocal size, deadline, reading
            if not reading:
                return await receive()
            if deadline is None:  # the app's first read
                for name, value in scope["headers"]:
                    if name == b"content-length":
                        try:
                            declared = int(value)
                        except ValueError:
                            raise Refusal(400, "malformed", "bad Content-Length") from None
                        if declared > max_body:
                            raise _too_large(max_body)
                deadline = asyncio.get_running_loop().time() + timeout
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise Refusal(408, "timeout", f"the body did not arrive within {timeout:g} s", close=True) from None
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > max_body:
                    raise _too_large(max_body)
                reading = bool(message.get("more_body", False))
            else:  # http.disconnect: the app sees it and stops reading
                reading = False
            return message

        await self.app(scope, limited, send)


async def _gone(request: Request, exc: Exception) -> Response:
    # The client went away mid-body: nobody reads this answer; one debug line, no traceback.
    _log.debug("client disconnected before sending its whole body")
    return Response(status_code=400)


class Ticking(Protocol):
    """What :func:`summarising_lifespan` ticks: a refusal log (``jpki.auth.limits.RefusalLog``)."""

    interval: float

    def tick(self) -> Any: ...


def summarising_lifespan(refusals: Ticking, shutdown: Callable[[], None]) -> Lifespan[Any]:
    """A lifespan that ticks ``refusals`` every ``refusals.interval`` seconds (the last refusals
    of a flood are summarised even when no request follows) and, at the end, stops ticking and
    runs ``shutdown`` in the thread pool (it may close stores)."""

    async def summarise() -> None:
        while True:
            await asyncio.sleep(refusals.interval)
            refusals.tick()

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        from starlette.concurrency import run_in_threadpool

        ticker = asyncio.create_task(summarise())
        try:
            yield
        finally:
            ticker.cancel()
            await run_in_threadpool(shutdown)

    return lifespan


def http_app(
    routes: Sequence[BaseRoute],
    *,
    max_body: int,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    lifespan: Lifespan[Starlette] | None = None,
    render: Callable[[Refusal], Response] = json_refusal,
    refusals: Mapping[type[Exception], Callable[[Any], Refusal]] | None = None,
) -> Starlette:
    """A Starlette app of ``routes`` with what every jpki app shares: :class:`BodyLimits`
    (``max_body`` bytes within ``body_timeout`` seconds) and exception handlers that answer a
    :class:`Refusal` through ``render``, and each library exception listed in ``refusals``
    (class → function making the :class:`Refusal` from it) the same way; a client gone mid-body
    costs one debug line."""
    if max_body < 0:
        raise UsageError("max_body must not be negative")
    if not body_timeout > 0:
        raise UsageError("body_timeout must be positive")

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refusal)
        return render(exc)

    def converting(convert: Callable[[Any], Refusal]) -> Callable[[Request, Exception], Any]:
        async def handler(request: Request, exc: Exception) -> Response:
            return render(convert(exc))

        return handler

    handlers: dict[Any, Callable[[Request, Exception], Any]] = {
        Refusal: refused, ClientDisconnect: _gone,
        **{cls: converting(convert) for cls, convert in (refusals or {}).items()},
    }
    return Starlette(routes=list(routes), lifespan=lifespan, exception_handlers=handlers,
                     middleware=[Middleware(BodyLimits, max_body=max_body, timeout=body_timeout)])


# --------------------------------------------------------------------------- per-client limits


@functools.lru_cache(maxsize=4096)   # asked on every limited request; parsing costs more than the lookup
def client_key(host: str | None) -> str:
    """The key a client's limits are kept under: its IPv4 address, or its IPv6 /64 network
    (a host holds a whole /64 and could otherwise take a fresh address per request)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class RateLimiter:
    """A token bucket per client key, in this process: ``burst`` requests at once, then
    ``rate`` per second (``rate`` 0: no limit). Remembers at most ``max_clients`` buckets (the
    least recently seen are forgotten: a full bucket again). Thread-safe; ``timer`` is
    monotonic seconds. With several worker processes each keeps its own buckets, so a client
    spread over them gets up to that many times the rate."""

    def __init__(self, rate: float, burst: int, *, timer: Callable[[], float] = time.monotonic,
                 max_clients: int = 100_000) -> None:
        if not (rate >= 0 and math.isfinite(rate)):
            raise UsageError("the rate limit must be a non-negative number of requests per second")
        if rate and (not isinstance(burst, int) or burst < 1):
            raise UsageError("a rate limit needs a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._timer = timer
        self._max = max_clients
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> float:
        """Take a token from ``client``'s bucket: 0 when admitted, else the seconds until one is
        there (nothing taken)."""
        if not self.rate:
            return 0.0
        now = self._timer()
        with self._lock:
            tokens, at = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[client] = (tokens - 1 if wait == 0 else tokens, now)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        return wait


# --------------------------------------------------------------------------- running apps


@dataclasses.dataclass(frozen=True)
class AppSpec:
    """An app as a worker process builds it: ``factory`` names a function by import path
    (``package.module:function``), ``settings`` are its settings (JSON-able). The function is
    called as ``factory(settings, clock=…, progress=…)`` and returns the ASGI app, whose
    ``app.state.close()`` (when it has one) releases what it holds when no lifespan ran."""

    factory: str
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        module, colon, name = self.factory.partition(":")
        if not (module and colon and name.isidentifier()):
            raise UsageError(f"an app factory is named package.module:function, not {self.factory!r}")

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict (its text is how :func:`serve` hands it to worker
        processes); :class:`UsageError` if the settings are not JSON."""
        out = {"factory": self.factory, "settings": dict(self.settings)}
        try:
            json.dumps(out)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"the settings of {self.factory} are not JSON: {exc}") from None
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> AppSpec:
        """Read :meth:`to_json`'s output (the dict, or its JSON text)."""
        try:
            obj = json.loads(data) if isinstance(data, str) else data
            return cls(str(obj["factory"]), dict(obj["settings"]))
        except (ValueError, TypeError, KeyError) as exc:
            raise UsageError(f"${ENV_APP} does not hold an app spec: {exc}") from None

    def build(self, *, clock: Clock, progress: Progress | None = None) -> Any:
        """Import the factory and make the app."""
        module, _, name = self.factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise UsageError(f"cannot import the app factory {self.factory}: {exc}") from None
        return factory(dict(self.settings), clock=clock, progress=progress)


def app_from_environment() -> Any:
    """The app of the :class:`AppSpec` in ``$JPKI_SERVE_APP``, on the clock of ``$JPKI_NOW``:
    the factory uvicorn worker processes import."""
    text = os.environ.get(ENV_APP)
    if not text:
        raise UsageError(f"${ENV_APP} is not set")
    return AppSpec.from_json(text).build(clock=clock_from_environment())


#: Requests a keep-alive connection serves before the server closes it (``Connection: close`` on
#: the last response), like Apache's MaxKeepAliveRequests (100 there). Workers share the
#: listening socket and a worker takes every connection waiting when it wakes, so connections
#: opened together can all land on one worker and stay there; a connection that comes back is
#: taken by the worker that is free. 20 rebalances within a second under load, for one new
#: connection (a handshake on loopback or from the proxy in front) per 20 requests.
KEEPALIVE_REQUESTS = 20
#: (A server whose clients keep their connections to use a worker's caches, like the OCSP
#: responder, passes ``keepalive_requests=None``.)


def uvicorn_options(*, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                    keepalive_requests: int | None = KEEPALIVE_REQUESTS) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` / ``uvicorn.run`` shared by the servers: the
    idle deadline (``timeout_keep_alive`` and the header deadline of the protocol classes), the
    requests a keep-alive connection serves (None: no limit; see :data:`KEEPALIVE_REQUESTS`),
    no access log, the lifespan on, a deep backlog."""
    if not idle_timeout > 0:
        raise UsageError("the idle timeout must be positive")
    if keepalive_requests is not None and keepalive_requests < 1:
        raise UsageError("a connection serves at least one request")
    return {"http": _protocol_name(keepalive_requests), "timeout_keep_alive": idle_timeout, "access_log": False,
            "lifespan": "on", "backlog": BACKLOG}


def log_config(log_level: str) -> dict[str, Any]:
    """uvicorn's logging configuration plus the ``jpki`` loggers on its console handler, so that
    the apps' lines (outcomes, renewals, refusal summaries; no personal data) appear beside
    uvicorn's, in worker processes too."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["jpki"] = {"handlers": ["default"], "level": log_level.upper(), "propagate": False}
    return config


def _close(app: Any) -> None:
    close = getattr(getattr(app, "state", None), "close", None)
    if callable(close):
        close()


def serve(
    app: AppSpec | ASGIApp,
    host: str,
    port: int,
    *,
    workers: int = 1,
    log_level: str = "info",
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    keepalive_requests: int | None = KEEPALIVE_REQUESTS,
    clock: Clock | None = None,
    progress: Progress | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` under uvicorn until interrupted (blocks).

    ``app`` is an :class:`AppSpec` (built here with ``clock``, default the one of ``$JPKI_NOW``,
    telling ``progress`` what takes time) or, for one process, an ASGI app already built (the
    caller's to close). ``workers`` > 1 runs that many processes on the port (one Python
    process uses one core); they take their clock from ``$JPKI_NOW``, so ``clock`` must be
    None then. uvicorn picks httptools and uvloop when they are installed
    (``uvicorn[standard]``), which cuts the HTTP cost per request about five-fold against h11.

    In order: the arguments and the port are checked (:class:`PortInUseError`), the app is
    built, the port is bound, ``on_ready`` is called (to say "serving"), requests are served.
    A connection must deliver a request's headers within ``idle_timeout`` seconds.
    """
    import uvicorn

    if workers < 1:
        raise UsageError("workers must be at least 1")
    spec = app if isinstance(app, AppSpec) else None
    if workers > 1 and spec is None:
        raise UsageError("worker processes build their own app: give an AppSpec with workers > 1")
    if workers > 1 and clock is not None:
        raise UsageError("worker processes take their clock from $JPKI_NOW: pass no clock with workers > 1")
    spec_json = json.dumps(spec.to_json()) if spec is not None else None
    options = {**uvicorn_options(idle_timeout=idle_timeout, keepalive_requests=keepalive_requests),
               "log_level": log_level,
               "log_config": log_config(log_level)}
    check_port(host, port)
    built: Any = spec.build(clock=clock or clock_from_environment(), progress=progress) if spec is not None else app
    if workers == 1:
        try:
            sock = listen(host, port)  # listening before "serving" is said
        except BaseException:
            if spec is not None:
                _close(built)
            raise
        with sock:
            if on_ready is not None:
                on_ready()
            uvicorn.Server(uvicorn.Config(built, host=host, port=port, **options)).run(sockets=[sock])
        return
    # The parent built the app once (bad settings failed here, shared state is ready for the
    # workers); each worker builds its own from the spec.
    _close(built)
    assert spec_json is not None
    os.environ[ENV_APP] = spec_json
    if on_ready is not None:
        on_ready()
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, host=host, port=port, workers=workers,
                **options)


@functools.cache
def _thread_server_class() -> type[Any]:
    """uvicorn's Server, telling an event when its start-up is over (done or failed)."""
    import uvicorn

    class _Server(uvicorn.Server):
        up: threading.Event

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            try:
                await super().startup(sockets=sockets)
            finally:
                self.up.set()

    return _Server


class ServerThread:
    """An app under uvicorn in a background thread, for tests and the demo (see
    :func:`serve_in_thread`): ``start()`` binds the port (0: a free one; a busy one raises
    :class:`PortInUseError` at once) and returns once the server answers; ``stop()`` (or the
    end of a ``with`` block) shuts it down, running the app's lifespan shutdown."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning",
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 keepalive_requests: int | None = KEEPALIVE_REQUESTS) -> None:
        import uvicorn

        self.app = app
        self.host = host
        self.port = port
        self._server = _thread_server_class()(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                                             **uvicorn_options(idle_timeout=idle_timeout,
                                                                               keepalive_requests=keepalive_requests)))
        self._server.up = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _run(self, sock: socket.socket) -> None:
        try:
            with sock:
                asyncio.run(self._server.serve(sockets=[sock]))
        except BaseException as exc:  # noqa: BLE001 - reported by start() (uvicorn may sys.exit)
            self._error = exc
        finally:
            self._server.up.set()

    def start(self, timeout: float = 10.0) -> Self:
        """Bind, start, and wait until the server answers; :class:`PortInUseError` when the port
        is taken, UsageError when the server does not start within ``timeout`` seconds."""
        sock = listen(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, args=(sock,), name=f"jpki-server-{self.port}",
                                        daemon=True)
        self._thread.start()
        if not self._server.up.wait(timeout) or not self._server.started:
            self.stop()
            raise UsageError(f"the server did not start on {self.host}:{self.port}"
                             + (f": {self._error!r}" if self._error else ""))
        return self

    @property
    def url(self) -> str:
        """``http://HOST:PORT``."""
        return http_url(self.host, self.port)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to exit and wait for the thread (the lifespan shutdown runs)."""
        self._server.should_exit = True
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_thread(app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning",
                    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                    keepalive_requests: int | None = KEEPALIVE_REQUESTS) -> ServerThread:
    """Run ``app`` under uvicorn in a background thread (``port=0``: a free port) and return the
    started :class:`ServerThread` (``.url``, ``.port``, ``.stop()``, a context manager)."""
    return ServerThread(app, host, port, log_level=log_level, idle_timeout=idle_timeout,
                        keepalive_requests=keepalive_requests).start()


# --------------------------------------------------------------------------- header deadline


def _protocol_name(keepalive_requests: int | None = None) -> str:
    """The protocol class uvicorn's ``http="auto"`` would pick, with the idle deadline and a
    connection closed after ``keepalive_requests`` requests (None: never)."""
    base = "HttpToolsProtocol" if importlib.util.find_spec("httptools") is not None else "H11Protocol"
    return f"{__name__}:{base}" + (f"_{keepalive_requests}" if keepalive_requests is not None else "")




def _closing_connection(app: Any) -> Any:
    """``app`` answering with ``Connection: close`` (uvicorn then closes after the response)."""

    async def closing(scope: Any, receive: Any, send: Any) -> None:
        async def send_closing(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        await app(scope, receive, send_closing)

    return closing


class _OneSendPerTick:
    """A transport that sends what one turn of the event loop wrote as one segment.

    uvicorn writes a response's head and its body with two ``write`` calls, and each is a
    ``send`` of its own on a keep-alive connection with ``TCP_NODELAY``: two segments, and two
    wake-ups of the client, for every small response. Here the writes of one turn are joined
    and sent when the loop gets back to its callbacks (a ``call_soon``), before it waits for
    anything; ``close`` sends what is pending first. Everything else is the transport's own."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._send)
        else:
            self._pending.append(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(bytes(data))

    def _send(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        waiting = sum(map(len, self._pending)) if self._pending else 0
        return waiting + self._transport.get_write_buffer_size()

    def close(self) -> None:
        self._send()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


if TYPE_CHECKING:  # the mixin goes in front of one of uvicorn's protocols (see __getattr__)
    from uvicorn.protocols.http.h11_impl import H11Protocol as _UvicornProtocol
else:
    _UvicornProtocol = object


class _HeaderDeadline(_UvicornProtocol):
    """Mixin for uvicorn's HTTP protocols: close a connection that has not completed a request's
    headers within ``timeout_keep_alive`` seconds of opening or of its last response.

    A new request is noticed by uvicorn replacing ``self.cycle`` once the headers are parsed;
    the timer fires harmlessly when that happened."""

    _header_timer: asyncio.TimerHandle | None = None
    _responses = 0
    #: requests a connection serves before it is closed (None: no limit); set by the class name
    keepalive_requests: int | None = None

    def _arm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.timeout_keep_alive, self._header_deadline_passed,
                                                  self.cycle)

    def _header_deadline_passed(self, cycle: Any) -> None:
        self._header_timer = None
        if self.cycle is cycle and self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # uvicorn's protocols narrow asyncio's BaseTransport to a Transport (and ignore the same error)
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneSendPerTick(transport, asyncio.get_running_loop()))  # type: ignore[arg-type]
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._responses += 1
        limit = self.keepalive_requests
        if limit is not None and self._responses == limit - 1:   # the next request is this connection's last
            self.app = _closing_connection(self.app)
        if self.transport is not None and not self.transport.is_closing():
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)


def __getattr__(name: str) -> Any:
    # The protocol classes are made on first use (uvicorn imports them by name, also in worker
    # processes), so that importing this module does not import uvicorn.
    # "HttpToolsProtocol_20": the class that closes a connection after 20 requests.
    match = re.fullmatch(r"(H11Protocol|HttpToolsProtocol)(?:_([1-9][0-9]{0,6}))?", name)
    if match is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    base: type[Any]
    if match[1] == "H11Protocol":
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol
    else:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    limit = int(match[2]) if match[2] else None
    cls = type(name, (_HeaderDeadline, base), {
        "__module__": __name__, "keepalive_requests": limit,
        "__doc__": f"uvicorn's {match[1]} with the header deadline"
                   + (f", closing a connection after {limit} requests." if limit else ".")})
    globals()[name] = cls
    return cls
