"""The OpenID Provider: ``jpki idp serve`` and ``jpki idp client add|list|remove``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import UsageError
from ._common import Ctx, limit_options, pass_ctx, revocation_options, server_options

if TYPE_CHECKING:
    from ..verify.validator import RevocationMode


@click.group()
def idp() -> None:
    """OpenID Provider: "log in with My Number Card" through OpenID Connect.

    The Digital Authentication App's protocol (code flow, PKCE S256, private_key_jwt, pairwise
    sub, the basic 4 info from userinfo), on this home's trust (J-LIS roots and the test CA).
    See docs/oidc.md.

    \b
    Examples:
      jpki idp client add "Example shop" --redirect-uri http://127.0.0.1:8000/callback --jwks shop.jwks.json
      jpki idp serve                                   # http://127.0.0.1:8600, memory store
      jpki idp serve --test-cards                      # CI: test cards, no agent, no browser needed
      jpki idp serve --issuer https://idp.example.jp --host 0.0.0.0 --store redis://127.0.0.1:6379/0 --workers 4
    """


@idp.command("serve")
@click.option("--issuer", help="the issuer URL clients use [default: http://HOST:PORT]")
@server_options(port=8600, store="pending authorizations, codes, tokens and assertion ids")
@revocation_options(soft_fail=False, max_age=True)
@click.option("--fetch-deadline", type=click.FloatRange(0.1, 600), default=5.0, show_default=True,
              help="seconds one OCSP, CRL or client-JWKS fetch may take in all")
@click.option("--test-cards", is_flag=True,
              help="TEST-CARD MODE: anyone can log in as any emulated card of this home (CI only)")
@click.option("--agent-url", default="http://127.0.0.1:24780", show_default=True,
              help="the local agent the auth page hands the card to (jpki agent)")
@click.option("--refresh-token-ttl", type=click.FloatRange(0, 366 * 86400), default=30 * 86400.0,
              show_default=True,
              help="seconds a grant may be refreshed after the card authentication (0: no refresh tokens)")
@click.option("--refresh-token-idle", type=click.FloatRange(60, 366 * 86400), default=7 * 86400.0,
              show_default=True, help="seconds a refresh token lives unused")
# The defaults are ProviderConfig's (tests/test_idp_limits.py checks), written out: importing
# jpki.idp here would load the whole provider for every jpki command.
@limit_options(rate=500.0, burst=1000, max_pending=256,
               endpoints="the authorization page, and apart the test-card API, per worker process",
               pending="unfinished authorizations")
@click.option("--token-rate-limit", type=click.FloatRange(0), default=2000.0, show_default=True,
              help="requests per second to the token and revocation endpoints, per client address and per "
                   "client, per worker process (0: no limit)")
@click.option("--token-rate-burst", type=click.IntRange(1), default=4000, show_default=True,
              help="token requests a client may send at once before --token-rate-limit applies")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="info", show_default=True)
@pass_ctx
def idp_serve(obj: Ctx, issuer: str | None, host: str, port: int, store: str, workers: int,
              revocation: RevocationMode, revocation_max_age: float, fetch_deadline: float, test_cards: bool,
              agent_url: str, refresh_token_ttl: float, refresh_token_idle: float, rate_limit: float,
              rate_burst: int, max_pending: int, token_rate_limit: float, token_rate_burst: int,
              log_level: str) -> None:
    """Serve the OpenID Provider (discovery at ISSUER/.well-known/openid-configuration).

    Trusts the J-LIS roots and the test CA of --home, follows its renewal links; revocation is
    checked against the URLs in the certificates (for the test CA: run `jpki ca serve`).

    The rate limits are kept in each worker process (N workers let up to N times as much
    through); their defaults do not throttle a loopback benchmark of a few hundred flows per
    second: set lower ones for a provider facing the internet. --max-pending is counted in the
    shared store, across workers.

    \b
    Examples:
      jpki idp serve --port 8600
      jpki idp serve --test-cards --store sqlite:/tmp/idp.db --workers 2
    """
    from ..idp.app import serve
    from ..idp.provider import ProviderConfig

    if issuer is None:
        if host in ("0.0.0.0", "::", ""):
            raise UsageError("listening on all addresses: give --issuer, the URL clients use "
                             "(e.g. https://idp.example.jp)")
        issuer = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    config = ProviderConfig(home=Path(obj.home).expanduser(), issuer=issuer, store=store, revocation=revocation,
                            revocation_max_age=revocation_max_age, fetch_deadline=fetch_deadline,
                            test_cards=test_cards, agent_url=agent_url, refresh_token_ttl=refresh_token_ttl,
                            refresh_token_idle=refresh_token_idle, rate_limit=rate_limit, rate_burst=rate_burst,
                            max_pending=max_pending, token_rate_limit=token_rate_limit,
                            token_rate_burst=token_rate_burst)
    shown_store = store.split("@")[-1] if store.startswith("redis") else store

    def ready() -> None:
        if test_cards:
            obj.warn("TEST-CARD MODE: anyone can log in as any emulated card of this home; never use it "
                     "for real users")
        listening = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        where = "" if listening == issuer else f" on {listening}"
        obj.note(f"OpenID Provider {issuer}{where} ({workers} worker{'s' if workers > 1 else ''}, "
                 f"store {shown_store}{', test cards' if test_cards else ''}); discovery: "
                 f"{issuer}/.well-known/openid-configuration")

    serve(config, host, port, workers=workers, log_level=log_level, on_ready=ready)


@idp.group("client")
def client() -> None:
    """The relying parties (clients) of the provider, in HOME/idp/clients.db.

    \b
    Examples:
      jpki idp client add "Example shop" --redirect-uri https://shop.example.jp/callback --jwks shop.jwks.json
      jpki idp client add "CI" --redirect-uri http://127.0.0.1:8000/callback --secret
      jpki idp client list
      jpki idp client remove CLIENT_ID
    """


def _read_jwks(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"--jwks {path}: not UTF-8 JSON") from None
    except ValueError as exc:
        raise UsageError(f"--jwks {path}: not JSON ({exc})") from None


@client.command("add")
@click.argument("name")
@click.option("--redirect-uri", "redirect_uris", multiple=True, required=True,
              help="an exact redirect URI (https, or http on 127.0.0.1/localhost); repeat for more")
@click.option("--jwks", "jwks_file", type=click.Path(exists=True, dir_okay=False),
              help="the client's public keys (JWKS or one JWK, EC P-256 or RSA) for private_key_jwt")
@click.option("--jwks-uri", help="where the client publishes its public keys (https)")
@click.option("--secret", is_flag=True, help="make a client secret for client_secret_basic (shown once)")
@click.option("--sector", help="the host its pairwise sub is made for [default: the redirect URIs' host]")
@pass_ctx
def client_add(obj: Ctx, name: str, redirect_uris: tuple[str, ...], jwks_file: str | None, jwks_uri: str | None,
               secret: bool, sector: str | None) -> None:
    """Register a client NAME (shown to card holders); prints its client_id (and secret)."""
    from ..idp.clients import ClientRegistry

    jwks = _read_jwks(jwks_file) if jwks_file is not None else None
    registry = ClientRegistry(obj.home)
    try:
        added, plain = registry.add(name, list(redirect_uris), now=obj.clock.now(), jwks=jwks, jwks_uri=jwks_uri,
                                    secret=secret, sector=sector)
    finally:
        registry.close()
    document = {**added.to_json(), **({"client_secret": plain} if plain else {})}
    lines = [f"client {added.name!r} registered", f"  client_id:     {added.client_id}"]
    if plain:
        lines.append(f"  client_secret: {plain}   (shown once: keep it now)")
    lines += [f"  redirect URIs: {', '.join(added.redirect_uris)}", f"  sector:        {added.sector}",
              f"  auth methods:  {', '.join(added.auth_methods)}"]
    obj.emit(document, "\n".join(lines))


@client.command("list")
@pass_ctx
def client_list(obj: Ctx) -> None:
    """The registered clients (no secrets)."""
    from ..idp.clients import ClientRegistry

    registry = ClientRegistry(obj.home)
    try:
        clients = registry.list()
    finally:
        registry.close()

    def human() -> str:
        if not clients:
            return "no clients (jpki idp client add NAME --redirect-uri URI …)"
        return "\n".join(f"{c.client_id}  {c.name}  {' '.join(c.redirect_uris)}  [{', '.join(c.auth_methods)}]"
                         for c in clients)

    obj.emit([c.to_json() for c in clients], human)


@client.command("remove")
@click.argument("client_id")
@pass_ctx
def client_remove(obj: Ctx, client_id: str) -> None:
    """Remove a client: its codes and tokens stop working at once."""
    from ..idp.clients import ClientRegistry

    registry = ClientRegistry(obj.home)
    try:
        removed = registry.remove(client_id)
    finally:
        registry.close()
    obj.emit({"removed": removed.to_json()}, f"client {removed.name!r} ({removed.client_id}) removed")


__all__ = ["idp"]
