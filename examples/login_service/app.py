"""A small shop that adds "log in with My Number Card", with jpki.auth.

The browser cannot reach the card; the card holder answers from their computer with the jpki
client (``jpki login URL --challenge ID``), the way JPKI's desktop client or a smartphone app
would. The page shows the challenge and waits; once the card's answer is verified, the browser
session that started the login is logged in, to the account the card's certificate belongs to
(renewals followed, so a renewed card keeps its account).

Everything that matters is four calls of the library::

    rp = RelyingParty(ORIGIN, Validator(trust), MemoryStore(), account_resolver=...)
    challenge = rp.begin_login()                       # on "Log in"
    result = rp.complete_login(request_body)           # on the client's answer
    result.ok, result.reason, result.account.key       # who it is, or why not

Run it (see README.md): ``python examples/login_service/app.py`` (port 8000), with
``JPKI_HOME`` naming a home with a test CA (``jpki ca init``) whose revocation server runs
(``jpki ca serve``).
"""

from __future__ import annotations

import datetime as dt
import html
import os
import secrets
import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from jpki.auth import FollowPredecessors, MemoryStore, RelyingParty, TestCALinks
from jpki.auth.result import LoginResult
from jpki.verify import TrustStore, Validator

HOME = Path(os.environ.get("JPKI_HOME", "~/.jpki")).expanduser()
ORIGIN = os.environ.get("SHOP_ORIGIN", "http://127.0.0.1:8000")
MAX_BODY = 64 * 1024
#: A cached OCSP answer older than this is asked again: how late a lost card may still log in.
REVOCATION_MAX_AGE = dt.timedelta(seconds=float(os.environ.get("REVOCATION_MAX_AGE", "60")))


def build_app(home: Path = HOME, origin: str = ORIGIN, *, validator: Validator | None = None) -> Starlette:
    """The shop. ``validator`` may be given (tests inject one with their own clock and fetch)."""
    if validator is None:
        trust = TrustStore.jlis() + TrustStore.from_ca_dir(home / "ca")   # J-LIS + the test CA
        validator = Validator(trust)                                       # OCSP, then CRL; hard-fail
    links = TestCALinks(home / "ca")                                       # renewal links of the test CA
    rp = RelyingParty(origin, validator, MemoryStore(), account_resolver=FollowPredecessors(links.predecessor),
                      revocation_max_age=REVOCATION_MAX_AGE)

    lock = threading.Lock()
    sessions: dict[str, dict[str, str]] = {}   # browser session -> {"challenge": id} or {"account": key}
    waiting: dict[str, tuple[str, dict[str, object]]] = {}  # challenge id -> (session, challenge JSON)
    users: dict[str, dict[str, object]] = {}   # the shop's user table, keyed by the account key

    def session_of(request: Request) -> tuple[str, dict[str, str]]:
        sid = request.cookies.get("sid", "")
        with lock:
            if sid not in sessions:
                sid = secrets.token_urlsafe(24)
                sessions[sid] = {}
            return sid, sessions[sid]

    def page(body: str, sid: str, *, refresh: bool = False) -> HTMLResponse:
        meta = '<meta http-equiv="refresh" content="2">' if refresh else ""
        response = HTMLResponse(f"<!doctype html><meta charset=utf-8>{meta}<title>My Number shop</title>"
                                f"<body style='font-family:sans-serif;max-width:40rem;margin:2rem auto'>"
                                f"<h1>My Number shop</h1>{body}</body>")
        response.set_cookie("sid", sid, httponly=True, samesite="lax")
        return response

    async def index(request: Request) -> Response:
        sid, state = session_of(request)
        if "account" in state:
            user = users[state["account"]]
            return page(f"<p>Welcome back, customer <code>{html.escape(state['account'])}</code> "
                        f"(login #{user['logins']}, customer since {user['since']}).</p>"
                        "<form method=post action=/logout><button>Log out</button></form>", sid)
        return page("<p>You are not logged in.</p><form method=post action=/login>"
                    "<button>Log in with My Number Card</button></form>", sid)

    async def start_login(request: Request) -> Response:
        sid, state = session_of(request)
        challenge = await run_in_threadpool(rp.begin_login)
        with lock:
            state.clear()
            state["challenge"] = challenge.id
            waiting[challenge.id] = (sid, challenge.to_json())
        response = RedirectResponse("/login", status_code=303)
        response.set_cookie("sid", sid, httponly=True, samesite="lax")
        return response

    async def wait_page(request: Request) -> Response:
        sid, state = session_of(request)
        if "account" in state:
            return RedirectResponse("/", status_code=303)
        if "refused" in state:
            return page(f"<p>Login refused: <b>{html.escape(state['refused'])}</b>.</p>"
                        "<form method=post action=/login><button>Try again</button></form>", sid)
        cid = state.get("challenge")
        if cid is None or cid not in waiting:
            return RedirectResponse("/", status_code=303)
        command = f"jpki login {origin} --challenge {cid}"
        return page("<p>Put your card in the reader and run:</p>"
                    f"<pre style='background:#eee;padding:.5rem'>{html.escape(command)}</pre>"
                    "<p>This page refreshes by itself.</p>", sid, refresh=True)

    async def challenge_json(request: Request) -> Response:
        """What ``jpki login URL --challenge ID`` reads."""
        entry = waiting.get(request.path_params["cid"])
        if entry is None:
            return JSONResponse({"ok": False, "reason": "not-found"}, status_code=404)
        return JSONResponse(entry[1])

    async def complete(request: Request) -> Response:
        """What the client posts its answer to."""
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"ok": False, "reason": "too-large"}, status_code=413)
        result: LoginResult = await run_in_threadpool(rp.complete_login, body)
        with lock:
            entry = waiting.pop(result.challenge_id or "", None)
            state = sessions.get(entry[0]) if entry and result.reason != "replayed" else None
            if result.ok and result.account is not None:
                user = users.setdefault(result.account.key, {"logins": 0, "since": dt.date.today().isoformat()})
                user["logins"] = int(user["logins"]) + 1  # type: ignore[call-overload]
                if state is not None:
                    state.clear()
                    state["account"] = result.account.key
            elif state is not None:
                state.clear()
                state["refused"] = str(result.reason)
        status = 200 if result.ok else 400 if result.reason == "malformed" else 403
        return JSONResponse(result.to_json(), status_code=status)

    async def logout(request: Request) -> Response:
        _, state = session_of(request)
        with lock:
            state.clear()
        return RedirectResponse("/", status_code=303)

    app = Starlette(routes=[
        Route("/", index),
        Route("/login", start_login, methods=["POST"]),
        Route("/login", wait_page, methods=["GET"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/api/challenges/{cid}", challenge_json),        # the jpki client's two endpoints
        Route("/api/login/complete", complete, methods=["POST"]),
    ])
    app.state.rp, app.state.users, app.state.links = rp, users, links
    return app


if __name__ == "__main__":
    import uvicorn

    port = int(ORIGIN.rsplit(":", 1)[1]) if ORIGIN.count(":") == 2 else 8000
    uvicorn.run(build_app(), host="127.0.0.1", port=port)
