"""The relying party as an HTTP service: an ASGI (Starlette) app for card login and eKYC.

```python
app = create_service(ServiceConfig(home=Path("~/.jpki").expanduser(), store="memory",
                                   rp_id="http://127.0.0.1:8480"))
# uvicorn: serve(config, "127.0.0.1", 8480, workers=2)   (workers > 1 need sqlite: or redis://)
```

The :class:`RelyingParty` knows no HTTP; this module maps it onto routes, and
:mod:`jpki.serving` runs them (body limits, refusals rendered by exception handlers, uvicorn,
workers, a thread for tests).

Endpoints (JSON unless said otherwise; ``GET /openapi.json`` describes them):

=====================================  ==========================================================
``POST /api/login/begin``              a login challenge (``{"display": true}`` also shows it on
                                       the page's board)
``POST /api/login/complete``           check a login response → ``{"ok": true, "account": …}``
``POST /api/ekyc/begin``               an eKYC challenge (``{"transaction_text": "…"}`` optional)
``POST /api/ekyc/complete``            check an eKYC response → ``{"ok": true, "identity": …}``
``GET /api/challenges/{id}``           a displayed challenge while it is pending
``GET /api/challenges/{id}/result``    ``{"state": "pending"}`` or ``{"state": "done", …}``
``GET /api/info``                      the relying-party id and the limits
``GET /api/stats``                     refusals counted by reason, verifications in flight
``GET /openapi.json``                  the OpenAPI 3.1 document
``GET /``, ``GET /page.js``            the HTML page that starts a login and shows its result
=====================================  ==========================================================

Status codes: 200 ok; 400 ``malformed`` (JSON, base64url, fields, a bad transaction text);
403 any other refusal (the body's ``reason``: ``replayed``, ``revoked``, …); 408 ``timeout``
(the body did not arrive within ``body_timeout``); 413 ``too-large`` (body over ``max_body``
bytes); 429 ``rate-limited`` or ``too-many-challenges`` (with ``Retry-After``); 404 unknown
challenge on the board; 503 ``store-unavailable`` or ``busy`` (every verification slot taken;
with ``Retry-After``); 500 ``internal-error``. Refusals are JSON documents
``{"ok": false, "reason": …, "message": …}``.

Under attack (issue 9): each client address (IPv4, or an IPv6 /64) has a token bucket for the POST
endpoints and a cap on its unanswered challenges, and its own quota on the page's board, so
that one client cannot fill the store or push others' challenges off the board
(:mod:`jpki.auth.limits`; shared by the worker processes through the SQLite file or Redis
server of the store). Refusals are counted (``GET /api/stats``) and summarised in one log line
per minute, never logged one by one.

The checks that may wait on I/O run in thread pools, never on the event loop, and in two of
them: verifications (which may wait on an OCSP responder) in a bounded pool of their own, so
that slow responders never hold up ``begin`` or the board; when every verification slot is
taken a ``complete`` is answered 503 ``busy`` at once rather than queued without end. Every
revocation fetch has an overall deadline (``fetch_deadline``, see :mod:`jpki.verify.fetch`).
Trust for :func:`create_service`: the J-LIS roots plus the test CA of ``home/ca``; revocation
by OCSP with CRL fallback (hard-fail); renewal links from the test CA's database.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import socket
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jpki.auth.board import DEFAULT_PER_OWNER, RESULT_TTL, Board, board_for_store
from jpki.auth.limits import (
    ClientLimits,
    Limiter,
    MemoryLimiter,
    RefusalLog,
    client_key,
    limiter_for_store,
)
from jpki.auth.links import AccountResolver, FollowPredecessors, NoLinks, TestCALinks
from jpki.auth.page import INDEX_HTML, PAGE_JS
from jpki.auth.protocol import (
    MAX_TRANSACTION_TEXT,
    MalformedMessageError,
    parse_json_object,
)
from jpki.auth.result import AuthReason, AuthResult, LoginResult
from jpki.auth.rp import (
    DEFAULT_CHALLENGE_TTL,
    DEFAULT_REVOCATION_MAX_AGE,
    RelyingParty,
    check_transaction_text,
)
from jpki.auth.store import ChallengeStore, ChallengeStoreError, RedisStore, open_store
from jpki.clock import Clock
from jpki.errors import UsageError
from jpki.serving import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    AppSpec,
    Refusal,
    http_app,
    serve_in_thread,
    summarising_lifespan,
)
from jpki.serving import serve as _serve
from jpki.settings import settings_from_json, settings_to_json
from jpki.verify import Fetch, HttpFetcher, TrustStore, Validator
from jpki.verify.fetch import DEFAULT_DEADLINE
from jpki.verify.validator import RevocationMode

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_PORT",
    "DEFAULT_VERIFY_THREADS",
    "RunningService",
    "ServiceConfig",
    "app_from_settings",
    "build_relying_party",
    "create_app",
    "create_service",
    "openapi_document",
    "running_service",
    "serve",
    "status_for",
]

log = logging.getLogger("jpki.auth")

#: Largest request body accepted (a login response is about 3 KB, an eKYC CMS about 5 KB).
DEFAULT_MAX_BODY: Final = 64 * 1024
#: Port of ``jpki rp serve`` (the test CA serves its revocation data on the port its home chose).
DEFAULT_PORT: Final = 8480
#: Threads issuing challenges and reading the board in each server process.
DEFAULT_THREADS: Final = 4
#: Threads verifying answers (possibly waiting on OCSP responders) in each server process; at
#: most twice as many verifications are admitted at a time (the rest: 503 ``busy``).
DEFAULT_VERIFY_THREADS: Final = 4

#: Tag of the challenges displayed on the page's board (``page-…`` ids).
DISPLAY_TAG: Final = "page"
_NO_STORE = {"Cache-Control": "no-store"}
#: The challenge store failed (outside the token bucket, whose failures count as refusals).
_STORE_UNAVAILABLE = "the challenge store is unavailable"
_STATUS: dict[AuthReason, int] = {
    AuthReason.MALFORMED: 400,
    AuthReason.TOO_LARGE: 413,
    AuthReason.STORE_UNAVAILABLE: 503,
    AuthReason.INTERNAL_ERROR: 500,
}


def status_for(reason: AuthReason | str | None) -> int:
    """The HTTP status for a result's reason (None: 200; refusals not listed above: 403)."""
    if reason is None:
        return 200
    try:
        return _STATUS.get(AuthReason(reason), 403)
    except ValueError:
        return 403


def _store_unavailable(exc: ChallengeStoreError) -> Refusal:
    log.warning("the challenge store failed: %s", exc)
    return Refusal(503, AuthReason.STORE_UNAVAILABLE, _STORE_UNAVAILABLE)


#: Library exceptions an endpoint lets through, and the refusal each becomes.
_REFUSALS: dict[type[Exception], Callable[[Any], Refusal]] = {
    MalformedMessageError: lambda exc: Refusal(400, AuthReason.MALFORMED, str(exc)),
    ChallengeStoreError: _store_unavailable,
}


def _board_entry(result: AuthResult) -> dict[str, Any]:
    """What the board keeps of a result: no personal data."""
    out: dict[str, Any] = {"ok": result.ok, "reason": None if result.reason is None else str(result.reason),
                           "message": result.message, "purpose": result.purpose,
                           "serial": None if result.certificate is None else result.certificate.serial_hex}
    if isinstance(result, LoginResult):
        out["account"] = None if result.account is None else result.account.key
    return out


# --------------------------------------------------------------------------- OpenAPI


def openapi_document(rp_id: str, max_body: int) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the service's JSON endpoints."""
    b64 = {"type": "string", "pattern": "^[A-Za-z0-9_-]*$", "description": "unpadded base64url"}
    def schema(name: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}

    id_parameter = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
    refusal = {"description": "refused", "content": schema("Refusal")}
    retry_after = {"Retry-After": {"description": "seconds to wait before trying again",
                                   "schema": {"type": "integer"}}}
    responses = {
        "400": {**refusal, "description": "malformed request (reason `malformed`)"},
        "403": {**refusal, "description": "refused (reason: replayed, expired, wrong-rp, wrong-purpose, "
                "challenge-mismatch, bad-signature, wrong-key-kind, untrusted, expired-certificate, "
                "certificate-not-yet-valid, revoked, revocation-unavailable, revocation-check-failed, "
                "identity-unreadable, account-unavailable)"},
        "408": {**refusal, "description": "the body did not arrive in time (reason `timeout`)"},
        "413": {**refusal, "description": f"body larger than {max_body} bytes (reason `too-large`)"},
        "429": {**refusal, "headers": retry_after,
                "description": "too many requests from this client address (reason `rate-limited`), or "
                "too many of its challenges unanswered (reason `too-many-challenges`)"},
        "503": {**refusal, "description": "the challenge store is unavailable (reason `store-unavailable`)"},
    }
    busy = {**refusal, "headers": retry_after,
            "description": "the challenge store is unavailable (reason `store-unavailable`), or every "
            "verification slot is taken (reason `busy`)"}

    def challenge_op(summary: str, body_schema: str) -> dict[str, Any]:
        return {"summary": summary,
                "requestBody": {"required": False, "content": schema(body_schema)},
                "responses": {"200": {"description": "the challenge to sign", "content": schema("Challenge")},
                              **{k: v for k, v in responses.items() if k in ("400", "408", "413", "429", "503")}}}

    def complete_op(summary: str, body_schema: str, result_schema: str) -> dict[str, Any]:
        return {"summary": summary,
                "requestBody": {"required": True, "content": schema(body_schema)},
                "responses": {"200": {"description": "accepted", "content": schema(result_schema)},
                              **responses, "503": busy}}

    return {
        "openapi": "3.1.0",
        "info": {"title": "jpki relying party: My Number Card login and eKYC", "version": "1",
                 "description": f"Relying party `{rp_id}`. The protocol is described in docs/auth-protocol.md."},
        "paths": {
            "/api/login/begin": {"post": challenge_op("Begin a login", "LoginBegin")},
            "/api/login/complete": {"post": complete_op("Complete a login", "LoginResponse", "LoginResult")},
            "/api/ekyc/begin": {"post": challenge_op("Begin an eKYC", "EkycBegin")},
            "/api/ekyc/complete": {"post": complete_op("Complete an eKYC", "EkycResponse", "EkycResult")},
            "/api/challenges/{id}": {"get": {
                "summary": "A displayed challenge while pending",
                "parameters": id_parameter,
                "responses": {"200": {"description": "the challenge", "content": schema("Challenge")},
                              "404": {"description": "not displayed, finished or expired"}}}},
            "/api/challenges/{id}/result": {"get": {
                "summary": "The state of a displayed challenge",
                "parameters": id_parameter,
                "responses": {"200": {"description": "pending or done", "content": schema("BoardEntry")},
                              "404": {"description": "unknown or expired"}}}},
            "/api/info": {"get": {"summary": "The relying-party id and limits",
                                  "responses": {"200": {"description": "info"}}}},
            "/api/stats": {"get": {"summary": "Refusals counted by reason (rate limits, quotas, timeouts, busy) "
                                              "and verifications in flight, for this server process",
                                   "responses": {"200": {"description": "the counters", "content": schema("Stats")}}}},
        },
        "components": {"schemas": {
            "Challenge": {"type": "object",
                          "required": ["v", "id", "nonce", "rp_id", "purpose", "created_at", "expires_at"],
                          "properties": {"v": {"const": 1},
                                         "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{22,128}$"},
                                         "nonce": {**b64, "description": "32 random bytes, base64url"},
                                         "rp_id": {"type": "string"}, "purpose": {"enum": ["login", "ekyc"]},
                                         "created_at": {"type": "string", "format": "date-time"},
                                         "expires_at": {"type": "string", "format": "date-time"},
                                         "transaction_text": {"type": "string", "maxLength": MAX_TRANSACTION_TEXT}}},
            "LoginBegin": {"type": "object", "additionalProperties": False,
                           "properties": {"display": {"type": "boolean",
                                                      "description": "show the challenge on the page's board"}}},
            "EkycBegin": {"type": "object", "additionalProperties": False,
                          "properties": {"display": {"type": "boolean"},
                                         "transaction_text": {"type": "string", "maxLength": MAX_TRANSACTION_TEXT}}},
            "LoginResponse": {"type": "object", "additionalProperties": False,
                              "required": ["challenge_id", "client_data", "certificate", "signature"],
                              "properties": {"v": {"const": 1}, "challenge_id": {"type": "string"},
                                             "client_data": {**b64,
                                                             "description": "the canonical encoding the card signed"},
                                             "certificate": {**b64,
                                                             "description": "user-authentication certificate, DER"},
                                             "signature": {**b64, "description":
                                                           "RSASSA-PKCS1-v1_5 SHA-256 over client_data"}}},
            "EkycResponse": {"type": "object", "additionalProperties": False, "required": ["challenge_id", "cms"],
                             "properties": {"v": {"const": 1}, "challenge_id": {"type": "string"},
                                            "cms": {**b64, "description":
                                                    "CMS SignedData (CAdES-BES), content = client data, DER"}}},
            "Account": {"type": "object",
                        "properties": {"key": {"type": "string"}, "issuer": {"type": "string"},
                                       "serial": {"type": "string"}, "renewals": {"type": "integer"}}},
            "Identity": {"type": "object",
                         "properties": {"name": {"type": "string"}, "address": {"type": "string"},
                                        "birth_date": {"type": ["string", "null"], "format": "date"},
                                        "sex": {"enum": ["male", "female", "unknown"]},
                                        "substituted": {"type": "boolean"}}},
            "LoginResult": {"type": "object",
                            "properties": {"ok": {"const": True}, "account": {"$ref": "#/components/schemas/Account"},
                                           "challenge_id": {"type": "string"}, "certificate": {"type": "object"},
                                           "checked_at": {"type": "string", "format": "date-time"}}},
            "EkycResult": {"type": "object",
                           "properties": {"ok": {"const": True}, "identity": {"$ref": "#/components/schemas/Identity"},
                                          "transaction_text": {"type": ["string", "null"]},
                                          "challenge_id": {"type": "string"}, "certificate": {"type": "object"}}},
            "Refusal": {"type": "object", "required": ["ok", "reason", "message"],
                        "properties": {"ok": {"const": False}, "reason": {"type": "string"},
                                       "message": {"type": "string"}}},
            "BoardEntry": {"type": "object",
                           "properties": {"state": {"enum": ["pending", "done"]}, "result": {"type": "object"}}},
            "Stats": {"type": "object", "required": ["pid", "refused", "verifications", "limits"],
                      "properties": {"pid": {"type": "integer", "description": "the server process counting"},
                                     "refused": {"type": "object", "additionalProperties": {"type": "integer"},
                                                 "description": "refusals since start, by reason"},
                                     "verifications": {"type": "object", "properties": {
                                         "in_flight": {"type": "integer"}, "capacity": {"type": "integer"},
                                         "threads": {"type": "integer"}}},
                                     "limits": {"type": "object", "properties": {
                                         "rate": {"type": "number"}, "burst": {"type": "integer"},
                                         "max_pending": {"type": "integer"}, "board_quota": {"type": "integer"}}}}},
        }},
    }


# --------------------------------------------------------------------------- the app


def create_app(rp: RelyingParty, *, board: Board | None = None, max_body: int = DEFAULT_MAX_BODY,
               on_shutdown: list[Callable[[], None]] | None = None, threads: int = DEFAULT_THREADS,
               verify_threads: int = DEFAULT_VERIFY_THREADS, max_verifications: int | None = None,
               limits: ClientLimits | None = None, limiter: Limiter | None = None,
               refusals: RefusalLog | None = None, body_timeout: float = DEFAULT_BODY_TIMEOUT) -> Starlette:
    """The ASGI app serving ``rp`` (see the module docstring). ``board`` holds displayed
    challenges (default: in memory); ``on_shutdown`` callables run when the lifespan ends.

    Challenges are issued and the board read on a pool of ``threads`` threads; answers are
    verified on another of ``verify_threads``, with at most ``max_verifications`` (default:
    twice the threads) admitted at a time, so that verifications waiting on a slow OCSP
    responder never hold up ``begin``. Both pools are the app's own rather than Starlette's
    (anyio's, up to 40): under load a few busy threads take queued work without being woken one
    by one, which costs far less CPU per request than a hand-off to an idle thread each time.

    ``limits`` are the per-client limits (default :class:`ClientLimits`), kept by ``limiter``
    (default: in this process); ``refusals`` counts what they refuse. ``body_timeout`` is how
    long a request body may take to arrive (then 408).
    """
    if max_body < 1024:
        raise UsageError("max_body must be at least 1024 bytes")
    if threads < 1 or verify_threads < 1:
        raise UsageError("threads must be at least 1")
    if not body_timeout > 0:
        raise UsageError("body_timeout must be positive")
    capacity = 2 * verify_threads if max_verifications is None else max_verifications
    if capacity < 1:
        raise UsageError("max_verifications must be at least 1")
    limits = limits if limits is not None else ClientLimits()
    limiter = limiter if limiter is not None else MemoryLimiter()
    refusals = refusals if refusals is not None else RefusalLog()
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="jpki-rp")
    verifier = concurrent.futures.ThreadPoolExecutor(max_workers=verify_threads, thread_name_prefix="jpki-rp-verify")
    in_flight = 0  # verifications admitted and not finished (touched on the event loop only)

    async def offload(function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, function, *args)

    board = board if board is not None else board_for_store(rp.store, per_owner=limits.board_quota)
    result_ttl = rp.challenge_ttl + RESULT_TTL
    openapi = json.dumps(openapi_document(rp.rp_id, max_body)).encode()

    def client_of(request: Request) -> str:
        return client_key(request.client.host if request.client is not None else None)

    def refuse(reason: str, client: str, message: str, status: int, retry_after: float | None = None) -> Refusal:
        """A refusal of a per-client limit (counted for ``/api/stats`` and the log summary)."""
        refusals.refused(reason, client)
        return Refusal(status, reason, message, retry_after=retry_after)

    async def admit(client: str) -> None:
        """Take a token from the bucket of ``client``, or refuse (429)."""
        if not limits.rate:
            return
        try:
            if limiter.blocking:
                wait = await offload(limiter.take, client, limits.rate, limits.burst)
            else:
                wait = limiter.take(client, limits.rate, limits.burst)
        except ChallengeStoreError:
            raise refuse(str(AuthReason.STORE_UNAVAILABLE), client, _STORE_UNAVAILABLE, 503) from None
        if wait:
            raise refuse("rate-limited", client, f"too many requests from {client}: retry in {math.ceil(wait)} s",
                         429, retry_after=wait)

    async def body_object(request: Request, allowed: set[str]) -> dict[str, Any]:
        raw = await request.body()  # limited in size and time by jpki.serving.BodyLimits
        if not raw.strip():
            return {}
        data = dict(parse_json_object(raw, "request body"))
        unknown = set(data) - allowed
        if unknown:
            raise MalformedMessageError(f"unknown field(s): {', '.join(sorted(k[:40] for k in unknown))}")
        return data

    def begin(purpose: str) -> Callable[[Request], Awaitable[Response]]:
        allowed = {"display"} | ({"transaction_text"} if purpose == "ekyc" else set())

        async def endpoint(request: Request) -> Response:
            client = client_of(request)
            await admit(client)
            data = await body_object(request, allowed)
            display = data.get("display", False)
            if not isinstance(display, bool):
                raise MalformedMessageError("display must be true or false")
            try:
                text = check_transaction_text(data.get("transaction_text"))
            except UsageError as exc:
                raise MalformedMessageError(str(exc)) from None

            def issue() -> dict[str, Any] | None:
                """The challenge document, or None when ``client`` has too many pending."""
                tag = DISPLAY_TAG if display else None
                challenge = rp.begin_login(tag=tag) if purpose == "login" else rp.begin_ekyc(text, tag=tag)
                if limits.max_pending and not limiter.reserve(
                        client, challenge.id, now=challenge.created_at.timestamp(),
                        until=challenge.expires_at.timestamp(), cap=limits.max_pending):
                    rp.store.take(challenge.id, now=challenge.created_at)  # withdrawn: never sent
                    return None
                document = challenge.to_json()
                if display:
                    board.show(challenge.id, {"state": "pending", "challenge": document}, result_ttl, owner=client)
                return document

            document = await offload(issue)
            if document is None:
                raise refuse("too-many-challenges", client,
                             f"{limits.max_pending} challenges issued to {client} are still unanswered: "
                             "answer or let them expire first", 429, retry_after=rp.challenge_ttl.total_seconds())
            return JSONResponse(document, headers=_NO_STORE)

        return endpoint

    # Refusals made before the challenge was taken from the store: it is still pending and
    # still counts against its client.
    still_pending = {AuthReason.MALFORMED, AuthReason.CHALLENGE_MISMATCH, AuthReason.WRONG_PURPOSE,
                     AuthReason.WRONG_RP, AuthReason.STORE_UNAVAILABLE, AuthReason.INTERNAL_ERROR}

    def complete(purpose: str) -> Callable[[Request], Awaitable[Response]]:
        check = rp.complete_login if purpose == "login" else rp.complete_ekyc

        def run(raw: bytes) -> AuthResult:
            result = check(raw)
            if result.challenge_id is not None and result.reason not in still_pending:
                try:
                    limiter.release(result.challenge_id)
                except ChallengeStoreError as exc:
                    log.warning("pending-challenge count not updated: %s", exc)
            # Only challenges the page displayed (tagged) are on the board: no board round trip
            # for the others.
            if result.challenge_id is not None and result.challenge_id.startswith(DISPLAY_TAG + "-") \
                    and result.reason not in (AuthReason.REPLAYED, AuthReason.MALFORMED):
                try:
                    board.finish(result.challenge_id, {"state": "done", "result": _board_entry(result)}, result_ttl)
                except ChallengeStoreError as exc:
                    log.warning("board update failed: %s", exc)
            return result

        async def endpoint(request: Request) -> Response:
            nonlocal in_flight
            client = client_of(request)
            await admit(client)
            raw = await request.body()  # limited in size and time by jpki.serving.BodyLimits
            if in_flight >= capacity:
                raise refuse("busy", client, "every verification slot is taken: retry shortly", 503, retry_after=1)
            in_flight += 1
            try:
                result = await asyncio.get_running_loop().run_in_executor(verifier, run, raw)
            finally:
                in_flight -= 1
            # A verdict (ok or refused) is a result document, not a Refusal: it says more.
            return JSONResponse(result.to_json(), status_code=status_for(result.reason), headers=_NO_STORE)

        return endpoint

    async def displayed(request: Request) -> Response:
        entry = await offload(board.get, request.path_params["challenge_id"])
        if entry is None or entry.get("state") != "pending":
            raise Refusal(404, "not-found", "no such pending challenge")
        return JSONResponse(entry["challenge"], headers=_NO_STORE)

    async def displayed_result(request: Request) -> Response:
        entry = await offload(board.get, request.path_params["challenge_id"])
        if entry is None:
            raise Refusal(404, "not-found", "unknown or expired challenge")
        if entry.get("state") == "pending":
            return JSONResponse({"state": "pending"}, headers=_NO_STORE)
        return JSONResponse({"state": "done", "result": entry.get("result")}, headers=_NO_STORE)

    limits_doc = dataclasses.asdict(limits)

    async def info(request: Request) -> Response:
        return JSONResponse({"rp_id": rp.rp_id, "challenge_ttl": rp.challenge_ttl.total_seconds(),
                             "max_body": max_body, "protocol": 1, "limits": limits_doc})

    async def stats(request: Request) -> Response:
        return JSONResponse({"pid": os.getpid(), "refused": dict(sorted(refusals.counts.items())),
                             "verifications": {"in_flight": in_flight, "capacity": capacity,
                                               "threads": verify_threads},
                             "limits": limits_doc}, headers=_NO_STORE)

    async def openapi_json(request: Request) -> Response:
        return Response(openapi, media_type="application/json")

    page_headers = {"Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'",
                    "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

    async def index(request: Request) -> Response:
        return Response(INDEX_HTML, media_type="text/html; charset=utf-8", headers=page_headers)

    async def page_js(request: Request) -> Response:
        return Response(PAGE_JS, media_type="text/javascript; charset=utf-8", headers=page_headers)

    def shutdown() -> None:
        refusals.flush()
        executor.shutdown(wait=False, cancel_futures=True)
        verifier.shutdown(wait=False, cancel_futures=True)
        for callback in [limiter.close, *(on_shutdown or ())]:
            try:
                callback()
            except Exception as exc:  # noqa: BLE001 - shutting down: report and go on
                log.warning("shutdown step failed: %s", exc)

    routes = [
        Route("/api/login/begin", begin("login"), methods=["POST"]),
        Route("/api/login/complete", complete("login"), methods=["POST"]),
        Route("/api/ekyc/begin", begin("ekyc"), methods=["POST"]),
        Route("/api/ekyc/complete", complete("ekyc"), methods=["POST"]),
        Route("/api/challenges/{challenge_id}", displayed, methods=["GET"]),
        Route("/api/challenges/{challenge_id}/result", displayed_result, methods=["GET"]),
        Route("/api/info", info, methods=["GET"]),
        Route("/api/stats", stats, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/", index, methods=["GET"]),
        Route("/page.js", page_js, methods=["GET"]),
    ]

    app = http_app(routes, lifespan=summarising_lifespan(refusals, shutdown), max_body=max_body,
                   body_timeout=body_timeout, refusals=_REFUSALS)
    app.state.rp = rp
    app.state.board = board
    app.state.limiter = limiter
    app.state.refusals = refusals
    app.state.close = shutdown
    return app


# --------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """Settings of :func:`create_service` (and of ``jpki rp serve``).

    ``home`` is the jpki home whose test CA (``home/ca``) is trusted beside the J-LIS roots and
    whose renewal links are followed. ``store`` is a challenge-store spec (``memory``,
    ``sqlite:PATH``, ``redis://…``). ``rp_id`` names the relying party (the origin clients use).
    ``revocation`` is ``ocsp`` (then the CRL), ``crl`` or ``none``; ``revocation_max_age`` the
    age in seconds of the oldest cached revocation answer (OCSP or CRL) relied on;
    ``fetch_deadline`` the seconds one OCSP or CRL fetch may take in all.

    Per client address (see :class:`jpki.auth.limits.ClientLimits`; 0 turns one off):
    ``rate_limit`` requests per second after a ``rate_burst``, ``max_pending`` unanswered
    challenges, ``board_quota`` entries on the page's board. ``body_timeout`` is how long a
    request body may take to arrive; ``verify_threads`` verify answers in each process.
    """

    home: Path
    rp_id: str
    store: str = "memory"
    challenge_ttl: float = DEFAULT_CHALLENGE_TTL.total_seconds()
    max_body: int = DEFAULT_MAX_BODY
    revocation: RevocationMode = "ocsp"
    revocation_max_age: float = DEFAULT_REVOCATION_MAX_AGE.total_seconds()
    fetch_deadline: float = DEFAULT_DEADLINE
    rate_limit: float = ClientLimits.rate
    rate_burst: int = ClientLimits.burst
    max_pending: int = ClientLimits.max_pending
    board_quota: int = DEFAULT_PER_OWNER
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    verify_threads: int = DEFAULT_VERIFY_THREADS

    @property
    def limits(self) -> ClientLimits:
        """The per-client limits these settings name."""
        return ClientLimits(rate=self.rate_limit, burst=self.rate_burst, max_pending=self.max_pending,
                            board_quota=self.board_quota)

    def to_json(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict (how :func:`serve` hands it to worker processes)."""
        return settings_to_json(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> ServiceConfig:
        """Read :meth:`to_json`'s output (the dict, or its JSON text)."""
        return settings_from_json(cls, data, what="relying-party", required=("home", "rp_id"))


def _redis_url_without_prefix(spec: str) -> str:
    parts = urllib.parse.urlsplit(spec)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "prefix"]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def build_relying_party(config: ServiceConfig, *, clock: Clock | None = None, fetch: Fetch | None = None,
                        store: ChallengeStore | None = None) -> tuple[RelyingParty, Board, Callable[[], None]]:
    """The relying party, its board and a close function for ``config``.

    ``clock`` and ``fetch`` (the validator's HTTP; default an :class:`HttpFetcher` with
    ``config.fetch_deadline``) are injectable for tests; ``store`` replaces the one
    ``config.store`` names.
    """
    if fetch is None:
        fetch = HttpFetcher(deadline=config.fetch_deadline)
    ca_dir = Path(config.home).expanduser() / "ca"
    trust = TrustStore.for_home(config.home)
    links: TestCALinks | None = None
    resolver: AccountResolver = NoLinks()
    if (ca_dir / "auth_ca.pem").is_file():
        links = TestCALinks(ca_dir)
        resolver = FollowPredecessors(links.predecessor)
    validator = Validator(trust, clock=clock, fetch=fetch, revocation=config.revocation)
    own_store = store is None
    store = open_store(config.store) if store is None else store
    try:
        board = board_for_store(store, redis_url=_redis_url_without_prefix(config.store)
                                if isinstance(store, RedisStore) else None, per_owner=config.board_quota)
        rp = RelyingParty(config.rp_id, validator, store, clock,
                          challenge_ttl=_dt.timedelta(seconds=config.challenge_ttl),
                          account_resolver=resolver,
                          revocation_max_age=_dt.timedelta(seconds=config.revocation_max_age))
    except BaseException:
        if own_store:
            store.close()
        raise

    def close() -> None:
        board.close()
        if own_store:
            store.close()
        if links is not None:
            links.close()
        closer = getattr(validator.fetch, "close", None)
        if callable(closer):
            closer()

    return rp, board, close


def create_service(config: ServiceConfig, *, clock: Clock | None = None, fetch: Fetch | None = None,
                   store: ChallengeStore | None = None) -> Starlette:
    """The app for ``config`` (see :func:`build_relying_party`); closed by the ASGI lifespan
    or ``app.state.close()``."""
    limits = config.limits  # checked before anything is opened
    rp, board, close = build_relying_party(config, clock=clock, fetch=fetch, store=store)
    try:
        limiter = limiter_for_store(rp.store, redis_url=_redis_url_without_prefix(config.store)
                                    if isinstance(rp.store, RedisStore) else None)
        return create_app(rp, board=board, max_body=config.max_body, on_shutdown=[close], limits=limits,
                          limiter=limiter, body_timeout=config.body_timeout,
                          verify_threads=config.verify_threads)
    except BaseException:
        close()
        raise


def app_from_settings(settings: dict[str, Any], *, clock: Clock,
                      progress: Callable[[str], None] | None = None) -> Starlette:
    """The app of a :class:`ServiceConfig` given as a dict (:meth:`ServiceConfig.to_json`):
    the factory :func:`serve` names for :func:`jpki.serving.serve` and its worker processes."""
    return create_service(ServiceConfig.from_json(settings), clock=clock)


def serve(config: ServiceConfig, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
          workers: int = 1, log_level: str = "info", idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
          on_ready: Callable[[], None] | None = None) -> None:
    """Serve under uvicorn until interrupted (blocks; see :func:`jpki.serving.serve`).
    ``workers`` > 1 runs that many processes on the port; they must share the challenge store,
    so a ``memory`` store is refused then.

    Checks first that the port is free (:class:`jpki.serving.PortInUseError`), then builds the
    app (with workers, once in this process: a store that cannot be opened fails here, not in
    every worker), then calls ``on_ready`` (to say "serving"). A connection must deliver a
    request's headers within ``idle_timeout`` seconds."""
    if workers > 1 and config.store.strip() == "memory":
        raise UsageError("several workers need a shared challenge store: use --store sqlite:PATH "
                         "or --store redis://HOST:PORT/DB (memory is per process)")
    config.limits  # noqa: B018 - a bad limit is a usage error before anything starts
    _serve(AppSpec(f"{__name__}:app_from_settings", config.to_json()), host, port, workers=workers,
           log_level=log_level, idle_timeout=idle_timeout, on_ready=on_ready)


@dataclasses.dataclass(frozen=True)
class RunningService:
    """A service started by :func:`running_service`: its base URL (also its relying-party id),
    the ASGI app, and the :class:`RelyingParty` behind it."""

    url: str
    app: Starlette

    @property
    def rp(self) -> RelyingParty:
        """The relying party the app serves."""
        rp: RelyingParty = self.app.state.rp
        return rp


@contextlib.contextmanager
def running_service(home: Path | str, *, clock: Clock | None = None, fetch: Fetch | None = None,
                    store: str = "memory", revocation_max_age: float = DEFAULT_REVOCATION_MAX_AGE.total_seconds(),
                    host: str = "127.0.0.1", port: int = 0) -> Iterator[RunningService]:
    """The relying-party service of ``home`` under uvicorn in a background thread, for demos and
    tests: yields a :class:`RunningService` whose ``url`` (``http://HOST:PORT``, a free port
    unless given) is also its relying-party id, so that ``jpki.auth.client.login(url, …)``
    accepts its challenges. Stopped and closed on exit. ``revocation_max_age=0`` makes every
    login ask the OCSP responder (a card reported lost is refused at once)."""
    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    url = f"http://{host}:{port}"
    config = ServiceConfig(home=Path(home), rp_id=url, store=store, revocation_max_age=revocation_max_age)
    app = create_service(config, clock=clock, fetch=fetch)
    try:
        with serve_in_thread(app, host, port):
            yield RunningService(url, app)
    finally:
        app.state.close()
