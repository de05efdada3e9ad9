"""The test CA's revocation server: OCSP (RFC 6960 Appendix A, RFC 5019) and CRLs over HTTP.

An ASGI app (Starlette) and the code to run it under uvicorn::

    app = create_app(ca_dir)                  # for any ASGI server or httpx.ASGITransport
    serve(ca_dir, "127.0.0.1", 8470)          # blocks; for ``jpki ca serve``
    with serve_in_thread(ca_dir) as srv:      # port 0: a free port; for the demo and tests
        srv.url                               # http://127.0.0.1:PORT

Routes:

``GET /ocsp/{kind}/{request}``
    ``request`` is the DER OCSPRequest in base64 (standard or URL-safe alphabet, padding
    optional, percent-encoded or not). ``kind`` is ``sign`` or ``auth``.
``POST /ocsp/{kind}``
    Body: the DER OCSPRequest, ``Content-Type: application/ocsp-request``.
``GET /crl/{kind}.crl``
    The CA's current CRL (DER, ``application/pkix-crl``), built by ``TestCA.crl(kind)`` (503
    when the CA has no CRL support). A built CRL is served again until the revocations of that
    CA change or ``crl_refresh`` has passed: building signs and numbers a new CRL, which at
    JPKI scale takes seconds, so it must not happen per request. Changes are noticed through
    SQLite's ``PRAGMA data_version`` (microseconds; it moves when any connection, in any process,
    commits) and, when it moved, a query over the revoked rows of that CA.
``GET /healthz``
    200 ``{"status": "ok", …}`` when the database answers, else 503.

How bad input is answered (the choice RFC 6960 Appendix A.1 leaves open, made so that an OCSP
client always gets something it can parse when it did reach the OCSP layer):

* a request that arrives intact as HTTP but is not a valid OCSP request — bad base64 in the
  URL, garbage DER, too many CertIDs, a bad nonce — gets **HTTP 200** with an OCSPResponse of
  status ``malformedRequest`` (``unauthorized`` for CertIDs of a CA not served at that URL);
* HTTP-level faults get HTTP errors with a short text body: an unknown ``kind`` → 404, a POST
  without ``Content-Type: application/ocsp-request`` → 415, a body larger than 64 KiB → 413, a
  GET request text longer than ``MAX_GET_LENGTH`` (8 KiB) → 414.

Responses to GET carry RFC 5019 §6.2 caching headers (``Cache-Control: max-age=<seconds until
nextUpdate>, public, no-transform, must-revalidate``, ``Last-Modified``, ``Expires``, ``ETag``)
unless they hold a nonce or an error (``no-store``); POST responses are ``no-store``.

The OCSP responder reads the database through read-only connections: nothing a client sends can
change it. The only writes are the server's own: issuing the delegated responder certificates
at start and renewing them before they expire (:mod:`jpki.pki.responder`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import datetime as _dt
import email.utils
import hashlib
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self
from urllib.parse import unquote

from cryptography.hazmat.primitives.serialization import Encoding
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from jpki.clock import Clock, SystemClock
from jpki.errors import UsageError
from jpki.pki.ca import TestCA
from jpki.pki.profiles import CA_KINDS, CaKind
from jpki.pki.responder import (
    DEFAULT_RENEW_BEFORE,
    DEFAULT_RESPONDER_VALIDITY,
    ResponderCredentials,
    ensure_responder,
)
from jpki.revocation.ocsp import (
    DEFAULT_CACHE_SIZE,
    DEFAULT_FRESHNESS,
    MAX_REQUEST_SIZE,
    OcspResponder,
    OcspResult,
    ResponseStatus,
    SqliteStatusLookup,
)

__all__ = [
    "MAX_GET_LENGTH",
    "OCSP_REQUEST_TYPE",
    "OCSP_RESPONSE_TYPE",
    "RevocationService",
    "ServerThread",
    "create_app",
    "serve",
    "serve_in_thread",
]

_log = logging.getLogger(__name__)

OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"
CRL_TYPE = "application/pkix-crl"
#: Longest request text accepted in a GET URL (a request of about 6 KiB). RFC 5019 §5 keeps GET
#: for small requests; bigger ones go by POST (up to ``MAX_REQUEST_SIZE``).
MAX_GET_LENGTH = 8192


#: A served CRL is rebuilt at least this often (TestCA.crl's nextUpdate is a day later).
DEFAULT_CRL_REFRESH = _dt.timedelta(hours=1)


@dataclasses.dataclass
class _CachedCrl:
    der: bytes
    built_at: _dt.datetime
    fingerprint: tuple[Any, ...]  # of the revoked rows, read before the build
    data_version: int  # of the database, read before the build or at the last check


class RevocationService:
    """The state behind the app: the CA, the OCSP responder and its delegated certificates,
    the CRLs last built.

    Renews a responder certificate (same key) when it gets within ``renew_before`` of its end.
    """

    def __init__(
        self,
        ca_dir: Path | str,
        *,
        clock: Clock | None = None,
        freshness: _dt.timedelta = DEFAULT_FRESHNESS,
        cache_size: int = DEFAULT_CACHE_SIZE,
        responder_validity: _dt.timedelta = DEFAULT_RESPONDER_VALIDITY,
        renew_before: _dt.timedelta = DEFAULT_RENEW_BEFORE,
        crl_refresh: _dt.timedelta = DEFAULT_CRL_REFRESH,
    ) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._crl_refresh = crl_refresh
        self._crls: dict[str, _CachedCrl] = {}
        self._crl_locks: dict[str, threading.Lock] = {kind: threading.Lock() for kind in CA_KINDS}
        self._watch: sqlite3.Connection | None = None
        self._watch_lock = threading.Lock()
        self.ca = TestCA.open(ca_dir, clock=self.clock)
        self._validity = responder_validity
        self._renew_before = renew_before
        self._renew_lock = threading.Lock()
        self._closed = False
        try:
            creds = {kind: self._ensure(kind) for kind in CA_KINDS}
            self.lookup = SqliteStatusLookup(self.ca.db.path)
            self.responder = OcspResponder(
                self.lookup,
                {kind: (self.ca.ca_cert(kind), c.cert, c.key) for kind, c in creds.items()},
                self.clock,
                freshness=freshness,
                cache_size=cache_size,
            )
        except BaseException:
            self.ca.close()
            raise
        self._renew_at = min(c.not_after for c in creds.values()) - renew_before

    def _ensure(self, kind: CaKind) -> ResponderCredentials:
        return ensure_responder(
            self.ca, kind, validity=self._validity, renew_before=self._renew_before
        )

    def renewal_due(self) -> bool:
        """Whether a responder certificate is within ``renew_before`` of its end."""
        return self.clock.now() >= self._renew_at

    def renew(self) -> None:
        """Renew the responder certificates that need it (blocking; call from a thread)."""
        with self._renew_lock:
            if not self.renewal_due():
                return
            ends = []
            for kind in CA_KINDS:
                creds = self._ensure(kind)
                if creds.cert != self.responder.responder_cert(kind):
                    self.responder.set_signer(kind, self.ca.ca_cert(kind), creds.cert, creds.key)
                    _log.info("renewed the %s OCSP responder certificate (until %s)", kind, creds.not_after)
                ends.append(creds.not_after)
            self._renew_at = min(ends) - self._renew_before

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
        """One row from the service's own read-only connection (made on first use)."""
        with self._watch_lock:
            if self._watch is None:
                self._watch = sqlite3.connect(
                    f"{self.ca.db.path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    timeout=5.0,
                    check_same_thread=False,
                )
            return tuple(self._watch.execute(sql, params).fetchone())

    def _revocation_fingerprint(self, kind: str) -> tuple[Any, ...]:
        """Changes whenever a certificate of ``kind`` is revoked, put on or taken off hold."""
        return self._query(
            "SELECT count(*), max(revoked_at), total(reason = 'certificateHold')"
            " FROM certificates WHERE kind = ? AND status = 'revoked'",
            (kind,),
        )

    def crl(self, kind: str) -> tuple[bytes, _dt.datetime] | None:
        """The current CRL of ``kind`` (DER) and when it was built, or None when the CA cannot
        build CRLs. Blocking (call from a thread); one build at a time per kind."""
        build = getattr(self.ca, "crl", None)
        if build is None:
            return None
        with self._crl_locks[kind]:
            cached = self._crls.get(kind)
            now = self.clock.now()
            version = self._query("PRAGMA data_version")[0]
            if cached is not None and cached.built_at <= now < cached.built_at + self._crl_refresh:
                if version == cached.data_version:
                    return cached.der, cached.built_at
                fingerprint = self._revocation_fingerprint(kind)
                if fingerprint == cached.fingerprint:  # something else changed (or our build)
                    cached.data_version = version
                    return cached.der, cached.built_at
            else:
                fingerprint = self._revocation_fingerprint(kind)
            # Both read before building: a revocation landing during the build moves
            # data_version past the stored one, so the next request looks again.
            crl_obj = build(kind)
            der = crl_obj if isinstance(crl_obj, bytes) else crl_obj.public_bytes(Encoding.DER)
            self._crls[kind] = _CachedCrl(der, now, fingerprint, version)
            return der, now

    def healthy(self) -> bool:
        """Whether the database answers a look-up."""
        try:
            self.lookup(1)
        except Exception:  # noqa: BLE001 - any failure means unhealthy
            return False
        return True

    def close(self) -> None:
        """Close the database connections (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.lookup.close()
        with self._watch_lock:
            if self._watch is not None:
                self._watch.close()
        self.ca.close()


# --------------------------------------------------------------------------- helpers


def _http_date(when: _dt.datetime) -> str:
    return email.utils.format_datetime(when.astimezone(_dt.UTC), usegmt=True)


def _decode_get_request(text: str) -> bytes | None:
    """The DER in a GET URL's last segment(s), or None when it is not base64."""
    if "%" in text:  # percent-encoded twice by some clients
        text = unquote(text)
    text = text.strip().replace(" ", "+").replace("-", "+").replace("_", "/").rstrip("=")
    if not text:
        return None
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _ocsp_response(result: OcspResult, *, now: _dt.datetime, get: bool) -> Response:
    headers = {"Cache-Control": "no-store"}
    if (
        get
        and result.status is ResponseStatus.SUCCESSFUL
        and not result.nonce
        and result.this_update is not None
        and result.next_update is not None
    ):
        max_age = max(0, int((result.next_update - now).total_seconds()))
        headers = {
            "Cache-Control": f"max-age={max_age}, public, no-transform, must-revalidate",
            "Last-Modified": _http_date(result.this_update),
            "Expires": _http_date(result.next_update),
            "ETag": '"' + hashlib.sha1(result.der).hexdigest() + '"',
        }
    return Response(result.der, status_code=200, media_type=OCSP_RESPONSE_TYPE, headers=headers)


def _kind_or_404(request: Request) -> str | None:
    kind = request.path_params.get("kind")
    return kind if kind in CA_KINDS else None


# --------------------------------------------------------------------------- the app


def create_app(
    ca_dir: Path | str,
    *,
    clock: Clock | None = None,
    freshness: _dt.timedelta = DEFAULT_FRESHNESS,
    cache_size: int = DEFAULT_CACHE_SIZE,
    responder_validity: _dt.timedelta = DEFAULT_RESPONDER_VALIDITY,
    renew_before: _dt.timedelta = DEFAULT_RENEW_BEFORE,
    crl_refresh: _dt.timedelta = DEFAULT_CRL_REFRESH,
) -> Starlette:
    """The revocation server for the test CA in ``ca_dir`` (see the module docstring).

    Opens the CA and issues (or loads) the delegated OCSP responder certificates at once, so
    errors in ``ca_dir`` surface here; ``app.state.service`` is the :class:`RevocationService`.
    The CA is closed when the ASGI lifespan ends (or call ``app.state.service.close()`` when no
    lifespan runs).
    """
    service = RevocationService(
        ca_dir,
        clock=clock,
        freshness=freshness,
        cache_size=cache_size,
        responder_validity=responder_validity,
        renew_before=renew_before,
        crl_refresh=crl_refresh,
    )
    responder = service.responder

    async def answer(request: Request, der: bytes, kind: str, *, get: bool) -> Response:
        if service.renewal_due():
            await run_in_threadpool(service.renew)
        # Cached answers and refusals cost microseconds: answer them on the event loop; only
        # a response that must be signed goes to a worker thread.
        result = responder.respond_cached(der, kind=kind)
        if result is None:
            result = await run_in_threadpool(responder.process, der, kind=kind)
        if result.status is not ResponseStatus.SUCCESSFUL:
            _log.info("OCSP %s %s: %s", request.method, kind, result.detail)
        return _ocsp_response(result, now=service.clock.now(), get=get)

    async def ocsp_get(request: Request) -> Response:
        kind = _kind_or_404(request)
        if kind is None:
            return PlainTextResponse("unknown CA kind (use sign or auth)\n", status_code=404)
        encoded = request.path_params.get("request", "")
        if len(encoded) > MAX_GET_LENGTH:
            return PlainTextResponse("request URL too long\n", status_code=414)
        der = _decode_get_request(encoded)
        if der is None:
            result = OcspResult(
                bytes([0x30, 0x03, 0x0A, 0x01, ResponseStatus.MALFORMED_REQUEST]),
                ResponseStatus.MALFORMED_REQUEST,
                detail="the URL does not hold base64",
            )
            _log.info("OCSP GET %s: %s", kind, result.detail)
            return _ocsp_response(result, now=service.clock.now(), get=True)
        return await answer(request, der, kind, get=True)

    async def ocsp_post(request: Request) -> Response:
        kind = _kind_or_404(request)
        if kind is None:
            return PlainTextResponse("unknown CA kind (use sign or auth)\n", status_code=404)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != OCSP_REQUEST_TYPE:
            return PlainTextResponse(
                f"Content-Type must be {OCSP_REQUEST_TYPE}\n", status_code=415
            )
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > MAX_REQUEST_SIZE:
                    return PlainTextResponse("request too large\n", status_code=413)
            except ValueError:
                return PlainTextResponse("bad Content-Length\n", status_code=400)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_REQUEST_SIZE:
                return PlainTextResponse("request too large\n", status_code=413)
        return await answer(request, bytes(body), kind, get=False)

    async def crl(request: Request) -> Response:
        kind = _kind_or_404(request)
        if kind is None:
            return PlainTextResponse("unknown CA kind (use sign or auth)\n", status_code=404)
        try:
            built = await run_in_threadpool(service.crl, kind)
        except Exception:  # noqa: BLE001 - reported as a 500, the server keeps serving
            _log.exception("building the %s CRL failed", kind)
            return PlainTextResponse("the CRL could not be built\n", status_code=500)
        if built is None:
            return PlainTextResponse(
                "CRLs are not available: this version of the test CA has no TestCA.crl()\n",
                status_code=503,
            )
        der, built_at = built
        return Response(
            der,
            media_type=CRL_TYPE,
            headers={"Cache-Control": "no-cache", "Last-Modified": _http_date(built_at)},
        )

    async def healthz(request: Request) -> Response:
        ok = await run_in_threadpool(service.healthy)
        body = {
            "status": "ok" if ok else "database unavailable",
            "responders": {
                kind: {
                    "serial": format(responder.responder_cert(kind).serial_number, "x"),
                    "not_after": responder.responder_cert(kind).not_valid_after_utc.isoformat(),
                }
                for kind in responder.kinds
            },
            "cached_responses": responder.cache_len,
            "stats": dict(responder.stats),
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            service.close()

    app = Starlette(
        routes=[
            Route("/ocsp/{kind}/{request:path}", ocsp_get, methods=["GET"]),
            Route("/ocsp/{kind}", ocsp_post, methods=["POST"]),
            Route("/crl/{kind}.crl", crl, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.service = service
    return app


# --------------------------------------------------------------------------- running it


def _config(app: Starlette, host: str, port: int, log_level: str) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_keep_alive=30,
        backlog=2048,
    )


def serve(
    ca_dir: Path | str,
    host: str = "127.0.0.1",
    port: int = 8470,
    *,
    clock: Clock | None = None,
    freshness: _dt.timedelta = DEFAULT_FRESHNESS,
    log_level: str = "info",
) -> None:
    """Serve OCSP and CRLs for the CA in ``ca_dir`` under uvicorn until interrupted (blocks)."""
    import uvicorn

    app = create_app(ca_dir, clock=clock, freshness=freshness)
    uvicorn.Server(_config(app, host, port, log_level)).run()


class ServerThread:
    """A uvicorn server running the app in a background thread (see :func:`serve_in_thread`)."""

    def __init__(self, app: Starlette, host: str, port: int, *, log_level: str = "warning") -> None:
        import uvicorn

        self.app = app
        self.host = host
        self._server = uvicorn.Server(_config(app, host, port, log_level))
        self._thread = threading.Thread(target=self._run, name="jpki-revocation-server", daemon=True)
        self._error: BaseException | None = None
        self.port = port

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve())
        except BaseException as exc:  # noqa: BLE001 - reported by start() (uvicorn may sys.exit)
            self._error = exc

    def start(self, timeout: float = 10.0) -> Self:
        """Start and wait until the server listens; raises UsageError if it cannot."""
        self._thread.start()
        deadline = _dt.datetime.now() + _dt.timedelta(seconds=timeout)
        while not self._server.started:
            if not self._thread.is_alive() or _dt.datetime.now() > deadline:
                self.stop()
                raise UsageError(
                    f"the revocation server did not start on {self.host}:{self.port}"
                    + (f": {self._error}" if self._error else "")
                )
            self._thread.join(0.01)
        for server in getattr(self._server, "servers", []):
            for sock in server.sockets:
                self.port = sock.getsockname()[1]
                break
        return self

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (the base URL the CA's certificates should name)."""
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to exit and wait for the thread (the lifespan closes the CA)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_thread(
    ca_dir: Path | str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: Clock | None = None,
    freshness: _dt.timedelta = DEFAULT_FRESHNESS,
    log_level: str = "warning",
) -> ServerThread:
    """Start the server in a background thread (``port=0``: any free port) and return it once
    it listens. Use as a context manager, or call ``stop()``."""
    app = create_app(ca_dir, clock=clock, freshness=freshness)
    try:
        return ServerThread(app, host, port, log_level=log_level).start()
    except BaseException:
        app.state.service.close()
        raise
