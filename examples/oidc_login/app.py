"""A web shop that adds "log in with My Number Card" and "verify my identity" through OpenID Connect.

A plain Starlette app with Authlib's OIDC client and nothing from jpki: it talks to any
provider shaped like the Digital Authentication App (デジタル認証アプリ) — `jpki idp serve`
locally or in CI, the real service by changing OIDC_BASE_URL. See README.md.

    python app.py keygen                 # client-key.json (private) and client.jwks.json (to register)
    OIDC_CLIENT_ID=… python app.py       # http://127.0.0.1:8000

Settings (environment): OIDC_CLIENT_ID (required), OIDC_BASE_URL (http://127.0.0.1:8600),
OIDC_CLIENT_KEY (client-key.json), APP_URL (http://127.0.0.1:8000), LISTEN (HOST:PORT; default
APP_URL's for http, 127.0.0.1:8000 behind a TLS proxy), SESSION_SECRET (default: random at each
start, so a restart logs everyone out), OIDC_ACR_VALUES (optional, e.g. "aal3").
"""

from __future__ import annotations

import html
import json
import os
import secrets
import sys
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

with warnings.catch_warnings():  # Authlib 1.9 prefers httpx2 and warns when it finds httpx
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.starlette_client import OAuth, OAuthError
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign

LOGIN = "openid"                                   # log in: the pairwise sub, no personal data
VERIFY = "openid name address birthdate gender"    # verify: the basic 4 info from userinfo too
DISCOVERY = "/api/realms/main/.well-known/openid-configuration"   # Keycloak-style, as the real service


class ShortPrivateKeyJWT(PrivateKeyJWT):
    """private_key_jwt whose assertions live 60 s, each with a fresh jti (Authlib's default is an
    hour, more than providers accept; a jti kept in ``claims`` would repeat and be refused)."""

    def sign(self, auth: Any, token_endpoint: str) -> str:
        return private_key_jwt_sign(auth.client_secret, client_id=auth.client_id, token_endpoint=token_endpoint,
                                    alg=self.alg, expires_in=60)


def build_app(*, base_url: str, client_id: str, key: ECKey, app_url: str = "http://127.0.0.1:8000",
              session_secret: str | None = None, acr_values: str | None = None) -> Starlette:
    oauth = OAuth()
    oauth.register("mynumber", client_id=client_id, client_secret=key,
                   server_metadata_url=base_url.rstrip("/") + DISCOVERY,
                   client_kwargs={"code_challenge_method": "S256", "token_endpoint_auth_method": "private_key_jwt"},
                   client_auth_methods=[ShortPrivateKeyJWT(alg="ES256")])
    users: dict[str, dict[str, Any]] = {}   # the shop's user table, keyed by the provider's pairwise sub

    def page(body: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(f"<!doctype html><meta charset=utf-8><title>Example shop</title><h1>Example shop</h1>"
                            f"{body}<p><a href=/login>マイナンバーカードでログイン / Log in with My Number Card</a> · "
                            f"<a href=/verify>本人確認 / Verify my identity</a> · <a href=/logout>Log out</a>",
                            status_code=status)

    async def home(request: Request) -> Response:
        user = users.get(request.session.get("sub", ""))
        if user is None:
            return page("<p>Not logged in.</p>")
        rows = "".join(f"<tr><th>{k}<td>{html.escape(str(v))}" for k, v in user.get("info", {}).items())
        return page(f"<p>Logged in as <code id=sub>{html.escape(user['sub'])}</code> (login #{user['logins']})</p>"
                    + (f"<table id=info>{rows}</table>" if rows else "<p>Identity not verified yet.</p>"))

    async def start(request: Request, scope: str) -> Response:
        request.session["asked"] = scope
        extra = {"acr_values": acr_values} if acr_values else {}   # state, nonce and PKCE: Authlib's
        return await oauth.mynumber.authorize_redirect(request, app_url + "/callback", scope=scope, **extra)

    async def callback(request: Request) -> Response:
        try:   # the code for tokens (private_key_jwt, PKCE verifier); the ID token checked against the JWKS
            token = await oauth.mynumber.authorize_access_token(request)
            sub = token["userinfo"]["sub"]   # the ID token's claims: iss, aud, nonce, exp checked
            info = dict(await oauth.mynumber.userinfo(token=token)) if request.session.get("asked") == VERIFY else {}
            if info.get("sub", sub) != sub:
                raise OAuthError("invalid_token", "userinfo is about another sub than the ID token")
        except (OAuthError, JoseError, httpx.HTTPError) as exc:
            return page(f"<p id=error>Not logged in: {html.escape(str(exc))}</p>", 403)
        user = users.setdefault(sub, {"sub": sub, "logins": 0, "info": {}})
        user["logins"] += 1
        if isinstance(info.get("address"), dict):
            info["address"] = info["address"].get("formatted")
        user["info"].update({k: info[k] for k in ("name", "address", "birthdate", "gender") if k in info})
        request.session["sub"] = sub
        return RedirectResponse("/", status_code=303)

    async def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse("/", status_code=303)

    async def login(request: Request) -> Response:
        return await start(request, LOGIN)

    async def verify(request: Request) -> Response:
        return await start(request, VERIFY)

    return Starlette(routes=[Route("/", home), Route("/login", login), Route("/verify", verify),
                             Route("/callback", callback), Route("/logout", logout)],
                     middleware=[Middleware(SessionMiddleware, secret_key=session_secret or secrets.token_hex(32),
                                            same_site="lax", https_only=app_url.startswith("https:"))])


def main(argv: list[str]) -> int:
    key_path = Path(os.environ.get("OIDC_CLIENT_KEY", "client-key.json"))
    if argv == ["keygen"]:
        key = ECKey.generate_key("P-256", auto_kid=True)
        try:
            with os.fdopen(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
                out.write(json.dumps(key.as_dict(private=True)))
        except FileExistsError:
            print(f"{key_path} exists: keep it, or remove it and register the new client.jwks.json", file=sys.stderr)
            return 1
        Path("client.jwks.json").write_text(json.dumps({"keys": [key.as_dict(private=False)]}, indent=1))
        print(f"wrote {key_path} (keep it secret) and client.jwks.json (register it with the provider)")
        return 0
    client_id = os.environ.get("OIDC_CLIENT_ID")
    if argv or not client_id or not key_path.is_file():
        print("usage: python app.py keygen | OIDC_CLIENT_ID=ID python app.py (with client-key.json)", file=sys.stderr)
        return 2
    import uvicorn

    app_url = os.environ.get("APP_URL", "http://127.0.0.1:8000")
    app = build_app(base_url=os.environ.get("OIDC_BASE_URL", "http://127.0.0.1:8600"), client_id=client_id,
                    key=ECKey.import_key(json.loads(key_path.read_text())), app_url=app_url,
                    session_secret=os.environ.get("SESSION_SECRET"), acr_values=os.environ.get("OIDC_ACR_VALUES"))
    where = urlsplit(app_url)   # listen where APP_URL says, or on LISTEN behind a TLS proxy
    default = f"{where.hostname}:{where.port or 80}" if where.scheme == "http" else "127.0.0.1:8000"
    host, _, port = os.environ.get("LISTEN", default).rpartition(":")
    uvicorn.run(app, host=host.strip("[]"), port=int(port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
