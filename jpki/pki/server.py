"""The test CA's revocation server: OCSP (RFC 6960 Appendix A, RFC 5019) and CRLs over HTTP.

An ASGI app (Starlette) over a :class:`RevocationService` (the CA, its OCSP responder and
CRLs; no HTTP), run by :mod:`jpki.serving` like every jpki app::

    app = create_app(ca_dir)                  # for any ASGI server or httpx.ASGITransport
    serve(ca_dir, "127.0.0.1", port)          # blocks; for ``jpki ca serve`` (workers=N too)
    with serve_in_thread(ca_dir) as srv:      # port 0: a free port; for the demo and tests
        srv.url                               # http://127.0.0.1:PORT

It sits above both :mod:`jpki.pki` (the CA, an issuer) and :mod:`jpki.revocation` (the CRL
codec and the OCSP responder core, which know no CA and no HTTP).

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
    200 ``{"status": "ok", …}`` when the database answers, else 503; ``crls`` tells when each
    served CRL was built and how many builds this process made.

At start, :func:`serve` builds the CRLs (or loads the ones a previous start left in
``ca_dir/crl-cache`` when they are recent and the revocations have not changed) *before* it
listens: at JPKI scale a build takes seconds (11.5 s at a million entries), which the first CRL
client would otherwise wait for and time out on. Worker processes load what the parent built.

How bad input is answered (the choice RFC 6960 Appendix A.1 leaves open, made so that an OCSP
client always gets something it can parse when it did reach the OCSP layer):

* a request that arrives intact as HTTP but is not a valid OCSP request — bad base64 in the
  URL, garbage DER, too many CertIDs, a bad nonce — gets **HTTP 200** with an OCSPResponse of
  status ``malformedRequest`` (``unauthorized`` for CertIDs of a CA not served at that URL);
* HTTP-level faults get HTTP errors with a short text body: an unknown ``kind`` → 404, a POST
  without ``Content-Type: application/ocsp-request`` → 415, a body larger than 64 KiB → 413, a
  GET request text longer than ``MAX_GET_LENGTH`` (8 KiB) → 414, a body not complete within
  ``body_timeout`` seconds → 408 (and the connection closed); a client that disconnects
  mid-body gets nothing and costs no log line. Connections must complete a request's headers
  within ``idle_timeout`` (see :mod:`jpki.serving`, which also renders these refusals).

Responses to GET carry RFC 5019 §6.2 caching headers (``Cache-Control: max-age=<seconds until
nextUpdate>, public, no-transform, must-revalidate``, ``Last-Modified``, ``Expires``, ``ETag``)
unless they hold a nonce or an error (``no-store``); POST responses are ``no-store``.

The OCSP responder reads the database through read-only connections: nothing a client sends can
change it. The only writes are the server's own: issuing the delegated responder certificates
at start and renewing them before they expire (:mod:`jpki.pki.responder`).

``responder_key`` (``rsa``, the default, or ``ec``) chooses the delegated responders' key type.
Every response that is not served from the cache is signed: about 0.9 ms with RSA-2048, about
40 µs with ECDSA P-256, which is what bounds the rate when most requests name a certificate not
asked about within the freshness window. A stored responder of the other type is replaced at
start (a new key and certificate).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime as _dt
import email.utils
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cryptography.hazmat.primitives.serialization import Encoding
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from jpki.clock import Clock, SystemClock
from jpki.errors import UsageError
from jpki.fileio import write_atomic
from jpki.pki.ca import TestCA
from jpki.pki.profiles import CA_KINDS, CaKind
from jpki.pki.responder import (
    DEFAULT_RENEW_BEFORE,
    DEFAULT_RESPONDER_KEY_TYPE,
    DEFAULT_RESPONDER_VALIDITY,
    ResponderCredentials,
    ResponderKeyType,
    check_key_type,
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
    unsuccessful_response,
)
from jpki.serving import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    AppSpec,
    Refusal,
    ServerThread,
    http_app,
    http_url,
    text_refusal,
)
from jpki.serving import serve as _serve
from jpki.serving import serve_in_thread as _serve_in_thread

__all__ = [
    "MAX_GET_LENGTH",
    "OCSP_REQUEST_TYPE",
    "OCSP_RESPONSE_TYPE",
    "RevocationService",
    "app_from_settings",
    "app_spec",
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


#: Wait after a failed renewal of the responder certificates before trying again.
RENEW_RETRY = _dt.timedelta(minutes=1)
#: A served CRL is rebuilt at least this often (TestCA.crl's nextUpdate is a day later).
DEFAULT_CRL_REFRESH = _dt.timedelta(hours=1)


#: Folder of ``ca_dir`` where the served CRLs are kept between starts and for worker processes.
CRL_CACHE_DIR = "crl-cache"


@dataclasses.dataclass
class _CachedCrl:
    der: bytes
    built_at: _dt.datetime
    fingerprint: tuple[Any, ...]  # of the revoked rows, read before the build
    data_version: int | None  # of the database (this connection's), read before the build or at
    # the last check; None for a CRL loaded from the disk cache (its fingerprint decides)


class RevocationService:
    """The state behind the app: the CA, the OCSP responder and its delegated certificates,
    the CRLs last built.

    The delegated responders have keys of ``responder_key`` (``rsa`` or ``ec``): stored
    credentials of the other type are replaced at start. Renews a responder certificate (same
    key) when it gets within ``renew_before`` of its end.
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
        responder_key: ResponderKeyType = DEFAULT_RESPONDER_KEY_TYPE,
    ) -> None:
        self.responder_key: ResponderKeyType = check_key_type(responder_key)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._crl_refresh = crl_refresh
        self._crls: dict[str, _CachedCrl] = {}
        self.crl_builds: Counter[str] = Counter()
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
            self.ca,
            kind,
            key_type=self.responder_key,
            validity=self._validity,
            renew_before=self._renew_before,
        )

    def renewal_due(self) -> bool:
        """Whether a responder certificate is within ``renew_before`` of its end."""
        return self.clock.now() >= self._renew_at

    def renew(self) -> None:
        """Renew the responder certificates that need it (blocking; call from a thread).

        A failure (database busy, disk full…) is logged and retried a minute later; meanwhile
        the current certificates, still valid, go on signing.
        """
        with self._renew_lock:
            if not self.renewal_due():
                return
            try:
                ends = []
                for kind in CA_KINDS:
                    creds = self._ensure(kind)
                    if creds.cert != self.responder.responder_cert(kind):
                        self.responder.set_signer(kind, self.ca.ca_cert(kind), creds.cert, creds.key)
                        _log.info("renewed the %s OCSP responder certificate (until %s)",
                                  kind, creds.not_after)
                    ends.append(creds.not_after)
            except Exception:  # noqa: BLE001 - keep serving with the current certificates
                _log.exception("renewing the OCSP responder certificates failed; retrying later")
                self._renew_at = self.clock.now() + RENEW_RETRY
                return
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
            self._crls[kind] = cached = _CachedCrl(der, now, fingerprint, version)
            self.crl_builds[kind] += 1
            self._save_crl(kind, cached)
            return der, now

    def _cache_paths(self, kind: str) -> tuple[Path, Path]:
        folder = Path(self.ca.directory) / CRL_CACHE_DIR
        return folder / f"{kind}.crl", folder / f"{kind}.json"

    def _save_crl(self, kind: str, cached: _CachedCrl) -> None:
        """Keep the CRL for the next start and for worker processes (best effort)."""
        der_path, meta_path = self._cache_paths(kind)
        try:
            der_path.parent.mkdir(mode=0o700, exist_ok=True)
            write_atomic(der_path, cached.der)
            write_atomic(meta_path, json.dumps({"built_at": cached.built_at.isoformat(),
                                                "fingerprint": list(cached.fingerprint),
                                                "sha256": hashlib.sha256(cached.der).hexdigest()}).encode())
        except OSError as exc:
            _log.warning("cannot keep the %s CRL in %s: %s", kind, der_path.parent, exc)

    def _load_crl(self, kind: str) -> _CachedCrl | None:
        """The CRL a previous build left on disk, if intact, recent (``crl_refresh``) and of the
        revocations the database holds now."""
        der_path, meta_path = self._cache_paths(kind)
        try:
            meta = json.loads(meta_path.read_text())
            der = der_path.read_bytes()
            built_at = _dt.datetime.fromisoformat(meta["built_at"])
            fingerprint = tuple(meta["fingerprint"])
            intact = hashlib.sha256(der).hexdigest() == meta["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        now = self.clock.now()
        if not intact or not built_at <= now < built_at + self._crl_refresh:
            return None
        if fingerprint != self._revocation_fingerprint(kind):
            return None
        return _CachedCrl(der, built_at, fingerprint, None)

    def prepare_crls(self, progress: Callable[[str], None] | None = None) -> None:
        """Build (or load from ``ca_dir/crl-cache``) every CRL now, before serving, so that no
        client waits for a build. ``progress`` receives one line per CRL. Blocking."""
        if getattr(self.ca, "crl", None) is None:
            return
        for kind in CA_KINDS:
            with self._crl_locks[kind]:
                loaded = self._load_crl(kind) if kind not in self._crls else None
                if loaded is not None:
                    self._crls[kind] = loaded
            if loaded is not None:
                if progress:
                    progress(f"loaded the {kind} CRL built at {loaded.built_at.isoformat()}")
                continue
            started = time.monotonic()
            if progress:
                progress(f"building the {kind} CRL ({self.ca.db.count_revoked(kind)} revoked)…")
            self.crl(kind)
            if progress:
                progress(f"built the {kind} CRL in {time.monotonic() - started:.1f} s")

    def crl_state(self) -> dict[str, dict[str, Any]]:
        """When each served CRL was built, and how many builds this process made."""
        return {kind: {"built_at": None if kind not in self._crls else self._crls[kind].built_at.isoformat(),
                       "builds": self.crl_builds[kind]} for kind in CA_KINDS}

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


_NO_STORE = [(b"cache-control", b"no-store")]
_MALFORMED = unsuccessful_response(ResponseStatus.MALFORMED_REQUEST)


def _ocsp_headers(result: OcspResult, *, now: _dt.datetime, get: bool) -> list[tuple[bytes, bytes]]:
    """RFC 5019 §6.2 caching headers for a cacheable GET answer; ``no-store`` otherwise."""
    if (
        not get
        or result.status is not ResponseStatus.SUCCESSFUL
        or result.nonce
        or result.this_update is None
        or result.next_update is None
    ):
        return _NO_STORE
    max_age = max(0, int((result.next_update - now).total_seconds()))
    return [
        (b"cache-control", f"max-age={max_age}, public, no-transform, must-revalidate".encode()),
        (b"last-modified", _http_date(result.this_update).encode()),
        (b"expires", _http_date(result.next_update).encode()),
        (b"etag", b'"' + hashlib.sha1(result.der).hexdigest().encode() + b'"'),
    ]


async def _send(
    send: Send, status: int, body: bytes, content_type: str, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _AsgiEndpoint:
    """Marks an ``async (scope, receive, send)`` function as a raw ASGI endpoint for Starlette
    (which would otherwise call a plain function with a Request)."""

    def __init__(self, handler: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handler(scope, receive, send)


def _kind(kind: Any) -> str:
    """``kind`` when it names a CA, else the 404 refusal."""
    if kind not in CA_KINDS:
        raise Refusal(404, "unknown-kind", "unknown CA kind (use sign or auth)")
    return str(kind)


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
    responder_key: ResponderKeyType = DEFAULT_RESPONDER_KEY_TYPE,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    prepare_crls: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Starlette:
    """The revocation server for the test CA in ``ca_dir`` (see the module docstring).

    Opens the CA and issues (or loads) the delegated OCSP responder certificates at once, with
    keys of ``responder_key`` (``rsa`` or ``ec``), so errors in ``ca_dir`` surface here;
    ``app.state.service`` is the :class:`RevocationService`. ``prepare_crls`` builds (or loads)
    the CRLs here too, telling ``progress``. A POST body must arrive within ``body_timeout``
    seconds (else 408).
    The CA is closed when the ASGI lifespan ends (or call ``app.state.service.close()`` when no
    lifespan runs, or ``app.state.close()``).
    """
    if not body_timeout > 0:
        raise UsageError("body_timeout must be positive")
    service = RevocationService(
        ca_dir,
        clock=clock,
        freshness=freshness,
        cache_size=cache_size,
        responder_validity=responder_validity,
        renew_before=renew_before,
        crl_refresh=crl_refresh,
        responder_key=responder_key,
    )
    if prepare_crls:
        try:
            service.prepare_crls(progress)
        except BaseException:
            service.close()
            raise
    responder = service.responder

    # The two OCSP routes are plain ASGI callables: on the hot path Starlette's Request and
    # Response objects cost more than answering from the cache does.

    async def answer(send: Send, der: bytes, kind: str, *, get: bool) -> None:
        if service.renewal_due():
            await run_in_threadpool(service.renew)
        # Cached answers and refusals cost microseconds: answer them on the event loop; only
        # a response that must be signed goes to a worker thread.
        result = responder.respond_cached(der, kind=kind)
        if result is None:
            result = await run_in_threadpool(responder.process, der, kind=kind)
        if result.status is not ResponseStatus.SUCCESSFUL:  # the client's fault: not logged at info
            _log.debug("OCSP %s %s: %s", "GET" if get else "POST", kind, result.detail)
        await _send(send, 200, result.der, OCSP_RESPONSE_TYPE,
                    _ocsp_headers(result, now=service.clock.now(), get=get))

    async def ocsp_get(scope: Scope, receive: Receive, send: Send) -> None:
        kind = _kind(scope["path_params"].get("kind"))
        encoded = scope["path_params"].get("request", "")
        if len(encoded) > MAX_GET_LENGTH:
            raise Refusal(414, "too-long", "request URL too long")
        der = _decode_get_request(encoded)
        if der is None:
            _log.debug("OCSP GET %s: the URL does not hold base64", kind)
            await _send(send, 200, _MALFORMED, OCSP_RESPONSE_TYPE, _NO_STORE)
            return
        await answer(send, der, kind, get=True)

    async def ocsp_post(scope: Scope, receive: Receive, send: Send) -> None:
        kind = _kind(scope["path_params"].get("kind"))
        content_type = b""
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
        if content_type.split(b";")[0].strip().lower() != OCSP_REQUEST_TYPE.encode():
            raise Refusal(415, "unsupported-media-type", f"Content-Type must be {OCSP_REQUEST_TYPE}")
        chunks: list[bytes] = []
        while True:  # receive() refuses a body too large or too slow (jpki.serving.BodyLimits)
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # gone mid-body: nothing to answer, nothing to log
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await answer(send, b"".join(chunks), kind, get=False)

    async def crl(request: Request) -> Response:
        kind = _kind(request.path_params.get("kind"))
        try:
            built = await run_in_threadpool(service.crl, kind)
        except Exception:  # noqa: BLE001 - reported as a 500, the server keeps serving
            _log.exception("building the %s CRL failed", kind)
            raise Refusal(500, "internal-error", "the CRL could not be built") from None
        if built is None:
            raise Refusal(503, "unavailable",
                          "CRLs are not available: this version of the test CA has no TestCA.crl()")
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
            "responder_key": service.responder_key,
            "responders": {
                kind: {
                    "serial": format(responder.responder_cert(kind).serial_number, "x"),
                    "not_after": responder.responder_cert(kind).not_valid_after_utc.isoformat(),
                }
                for kind in responder.kinds
            },
            "cached_responses": responder.cache_len,
            "stats": dict(responder.stats),
            "crls": service.crl_state(),
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            service.close()

    routes = [
        Route("/ocsp/{kind}/{request:path}", _AsgiEndpoint(ocsp_get), methods=["GET"]),
        Route("/ocsp/{kind}", _AsgiEndpoint(ocsp_post), methods=["POST"]),
        Route("/crl/{kind}.crl", crl, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    # OCSP clients read no error documents: refusals are a line of text.
    app = http_app(routes, lifespan=lifespan, max_body=MAX_REQUEST_SIZE, body_timeout=body_timeout,
                   render=text_refusal)
    app.state.service = service
    app.state.close = service.close
    return app


# --------------------------------------------------------------------------- running it


def app_spec(ca_dir: Path | str, *, freshness: _dt.timedelta = DEFAULT_FRESHNESS,
             responder_key: ResponderKeyType = DEFAULT_RESPONDER_KEY_TYPE) -> AppSpec:
    """The server of the CA in ``ca_dir`` as :func:`jpki.serving.serve` (and its worker
    processes) builds it: :func:`app_from_settings` with these settings."""
    return AppSpec(f"{__name__}:app_from_settings",
                   {"ca_dir": str(Path(ca_dir).resolve()), "freshness": freshness.total_seconds(),
                    "responder_key": check_key_type(responder_key)})


def app_from_settings(settings: dict[str, Any], *, clock: Clock,
                      progress: Callable[[str], None] | None = None) -> Starlette:
    """The app of :func:`app_spec`'s settings (``ca_dir``; ``freshness`` in seconds and
    ``responder_key``, both optional), its CRLs built or loaded at once (``progress`` is told):
    in worker processes, loaded from the CA's crl-cache folder where the parent left them."""
    try:
        ca_dir = settings["ca_dir"]
        freshness = _dt.timedelta(seconds=float(settings.get("freshness", DEFAULT_FRESHNESS.total_seconds())))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"bad revocation server settings: {exc!r}") from None
    key_type = check_key_type(settings.get("responder_key") or DEFAULT_RESPONDER_KEY_TYPE)
    return create_app(ca_dir, clock=clock, freshness=freshness, responder_key=key_type, prepare_crls=True,
                      progress=progress)


def serve(
    ca_dir: Path | str,
    host: str = "127.0.0.1",
    port: int = 8470,
    *,
    clock: Clock | None = None,
    freshness: _dt.timedelta = DEFAULT_FRESHNESS,
    workers: int = 1,
    log_level: str = "info",
    responder_key: ResponderKeyType = DEFAULT_RESPONDER_KEY_TYPE,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Serve OCSP and CRLs for the CA in ``ca_dir`` under uvicorn until interrupted (blocks);
    see :func:`jpki.serving.serve`.

    ``responder_key`` is the delegated responders' key type: ``rsa`` (RSA-2048, about 0.9 ms per
    signed response) or ``ec`` (ECDSA P-256, about 40 µs); stored responders of the other type
    are replaced. ``workers`` > 1 runs that many processes on the same port. They share
    nothing but the database, the responder certificates and the CRLs, which the parent issues
    and builds first so that the workers find them; each keeps its own response cache. Workers
    take their clock from the environment (``$JPKI_NOW``, see
    :func:`jpki.clock.clock_from_environment`), so ``clock`` must be None then.

    In order: the port is checked (:class:`jpki.serving.PortInUseError`), the CRLs are built
    or loaded, then ``progress`` is told ``serving … on http://HOST:PORT`` and the server
    listens. ``progress`` gets these lines (for stderr); None: silent.
    """
    spec = app_spec(ca_dir, freshness=freshness, responder_key=responder_key)
    serving = (f"serving OCSP ({spec.settings['responder_key']} responder key) and CRLs for {ca_dir} on "
               f"{http_url(host, port)}")
    # OCSP clients keep their connections, and a worker's response cache serves them: never closed.
    _serve(spec, host, port, workers=workers, log_level=log_level, idle_timeout=idle_timeout,
           keepalive_requests=None, clock=clock, progress=progress,
           on_ready=(lambda: progress(serving)) if progress else None)


def serve_in_thread(
    ca_dir: Path | str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: Clock | None = None,
    freshness: _dt.timedelta = DEFAULT_FRESHNESS,
    log_level: str = "warning",
    responder_key: ResponderKeyType = DEFAULT_RESPONDER_KEY_TYPE,
) -> ServerThread:
    """The server of the CA in ``ca_dir`` in a background thread (``port=0``: any free port),
    returned once it listens (:func:`jpki.serving.serve_in_thread`). Use as a context manager,
    or call ``stop()``."""
    app = create_app(ca_dir, clock=clock, freshness=freshness, responder_key=responder_key)
    try:
        return _serve_in_thread(app, host, port, log_level=log_level, keepalive_requests=None)
    except BaseException:
        app.state.close()
        raise
