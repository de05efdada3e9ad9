"""Card login and eKYC: the relying-party service (``jpki rp serve``) and the card holder's
side (``jpki login URL``, ``jpki ekyc URL``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import UsageError
from ._common import CliFail, Ctx, limit_options, pass_ctx, pin_name, pin_option, revocation_options, server_options
from ._fail import EXIT_ERROR, EXIT_INVALID

if TYPE_CHECKING:
    from ..auth.client import ServiceAnswer
    from ..verify.validator import RevocationMode


@click.group()
def rp() -> None:
    """The relying party: a web service that logs card holders in and verifies their identity.

    \b
    Examples:
      jpki ca serve &                                  # OCSP and CRLs of the test CA (port 8470)
      jpki rp serve                                    # http://127.0.0.1:8480, memory store
      jpki rp serve --store sqlite:/tmp/challenges.db --workers 2
      jpki rp serve --store redis://127.0.0.1:6379/0 --workers 4 --host 0.0.0.0 --rp-id https://rp.example.jp
      jpki --card emu:alice login http://127.0.0.1:8480
    """


@rp.command("serve")
@server_options(port=8480, store="challenge store")
@click.option("--rp-id", "rp_id",
              help="the relying-party id clients sign for: the origin they reach the service at "
                   "[default: http://HOST:PORT]")
@click.option("--challenge-ttl", type=click.FloatRange(1, 3600), default=180.0, show_default=True,
              help="seconds a challenge may be answered")
@revocation_options(soft_fail=False, max_age=True)
@click.option("--fetch-deadline", type=click.FloatRange(0.1, 600), default=5.0, show_default=True,
              help="seconds one OCSP or CRL fetch may take in all (a trickling responder is cut off)")
@limit_options(rate=5.0, burst=40, max_pending=32, endpoints="the POST endpoints", pending="unanswered challenges")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="info", show_default=True)
@pass_ctx
def rp_serve(obj: Ctx, store: str, workers: int, host: str, port: int, rp_id: str | None,
             challenge_ttl: float, revocation: RevocationMode, revocation_max_age: float, fetch_deadline: float,
             rate_limit: float, rate_burst: int, max_pending: int, log_level: str) -> None:
    """Serve login and eKYC over HTTP (JSON API, OpenAPI at /openapi.json, a page at /).

    Trusts the J-LIS roots and the test CA of --home; follows its renewal links. Revocation
    is checked against the URLs in the certificates (for the test CA: run `jpki ca serve`).

    \b
    Examples:
      jpki rp serve --port 8480
      jpki rp serve --store redis://127.0.0.1:6379/0 --workers 2
    """
    from ..auth.service import ServiceConfig, serve

    if rp_id is None:
        if host in ("0.0.0.0", "::", ""):
            raise UsageError("listening on all addresses: give --rp-id, the origin clients use "
                             "(e.g. https://rp.example.jp)")
        rp_id = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    config = ServiceConfig(home=Path(obj.home).expanduser(), rp_id=rp_id, store=store,
                           challenge_ttl=challenge_ttl, revocation=revocation,
                           revocation_max_age=revocation_max_age, fetch_deadline=fetch_deadline,
                           rate_limit=rate_limit, rate_burst=rate_burst, max_pending=max_pending)
    # serve() checks the port first; "serving" is said only once it is free.
    serve(config, host, port, workers=workers, log_level=log_level, on_ready=lambda: obj.note(
        f"relying party {rp_id}: http://{host}:{port}/ ({workers} worker{'s' if workers > 1 else ''}, "
        f"store {store.split('@')[-1] if store.startswith('redis') else store})"))


def _confirm(obj: Ctx, url: str) -> Callable[[str, int], None]:  # the client's Confirm callable
    def confirm(kind: str, tries_left: int) -> None:
        obj.confirm_try(f"Answering {url} with the {pin_name(kind)}", tries_left)

    return confirm


def _finish(obj: Ctx, answer: ServiceAnswer, what: str) -> None:
    """Return when the service accepted; else print its answer and fail: exit 3 when it
    refused (4xx: revoked, expired, replayed…), 1 when it failed (5xx)."""
    document = dict(answer.document)
    if answer.ok:
        return
    reason = str(document.get("reason") or "refused")
    refused = 400 <= answer.status < 500
    obj.fail(CliFail(f"{what} refused ({reason})" if refused else
                     f"{what} failed: the service answered HTTP {answer.status} ({reason})",
                     code="refused" if refused else "service_failed",
                     exit_code=EXIT_INVALID if refused else EXIT_ERROR,
                     data={"reason": reason, "status": answer.status}),
             document, f"{what} refused by the service (HTTP {answer.status}): "
                       f"{document.get('reason')} - {document.get('message')}")


@click.command("login")
@click.argument("url")
@click.option("--challenge", "challenge_id", help="answer this pending challenge (shown on the service's page)")
@click.option("--rp-id", "rp_id", help="the relying-party id to accept [default: the URL's origin]")
@pin_option("auth")
@pass_ctx
def login_command(obj: Ctx, url: str, challenge_id: str | None, rp_id: str | None, pin_value: str | None) -> None:
    """Log in to a relying-party service with the card (user-authentication key, 4-digit PIN).

    The challenge is checked first (purpose, meant for URL's origin, not expired); only then is
    the PIN asked. Exit 3 when the service refuses.

    \b
    Examples:
      jpki --card emu:alice login http://127.0.0.1:8480
      jpki --card pcsc login http://127.0.0.1:8480 --challenge Te6OR8Dv…   # shown on the page
    """
    from ..auth.client import login
    from ..session import JpkiSession

    with obj.card() as transport:
        answer = login(url, JpkiSession(transport), pin=lambda: obj.pin("auth", pin_value),
                       confirm=_confirm(obj, url), challenge_id=challenge_id, expected_rp_id=rp_id,
                       clock=obj.clock)
    _finish(obj, answer, "login")
    account = answer.document.get("account") or {}
    certificate = answer.document.get("certificate") or {}
    obj.emit(dict(answer.document),
             f"Logged in to {url}: account {account.get('key')} (certificate {certificate.get('serial')}"
             + (f", {account.get('renewals')} renewal(s) followed)" if account.get("renewals") else ")"))


@click.command("ekyc")
@click.argument("url")
@click.option("--text", "transaction_text", help="a transaction text to sign along (shown to the service)")
@click.option("--challenge", "challenge_id", help="answer this pending challenge")
@click.option("--rp-id", "rp_id", help="the relying-party id to accept [default: the URL's origin]")
@pin_option("sign")
@pass_ctx
def ekyc_command(obj: Ctx, url: str, transaction_text: str | None, challenge_id: str | None,
                 rp_id: str | None, pin_value: str | None) -> None:
    """Prove your identity to a service: sign its challenge with the signing key (password).

    The service receives the basic 4 info (name, address, birth date, sex) of the signing
    certificate; they are printed here too. Exit 3 when the service refuses.

    \b
    Examples:
      jpki --card emu:alice ekyc http://127.0.0.1:8480 --text "口座開設の本人確認"
    """
    from ..auth.client import ekyc
    from ..session import JpkiSession

    with obj.card() as transport:
        answer = ekyc(url, JpkiSession(transport), pin=lambda: obj.pin("sign", pin_value),
                      confirm=_confirm(obj, url), transaction_text=transaction_text,
                      challenge_id=challenge_id, expected_rp_id=rp_id, clock=obj.clock)
    _finish(obj, answer, "eKYC")
    identity = answer.document.get("identity") or {}
    obj.emit(dict(answer.document), "\n".join([
        f"Identity verified by {url}:",
        f"  name:       {identity.get('name')}",
        f"  address:    {identity.get('address')}",
        f"  birth date: {identity.get('birth_date') or 'unknown'}",
        f"  sex:        {identity.get('sex')}",
        *([f"  signed text: {answer.document.get('transaction_text')}"]
          if answer.document.get("transaction_text") is not None else []),
    ]))


__all__ = ["ekyc_command", "login_command", "rp"]
