"""The local agent: ``jpki agent`` (the browser's way to the card)."""

from __future__ import annotations

import click

from ..home import check_card_name
from ._common import Ctx, pass_ctx


@click.command("agent")
@click.option("--port", type=click.IntRange(1, 65535), default=24780, show_default=True,
              help="port on 127.0.0.1 (a provider's --agent-url names it)")
@click.option("--card", "card_uri", metavar="URI",
              help="the card: emu:NAME, pcsc or pcsc:READER [default: jpki --card, $JPKI_CARD, pcsc]")
@click.option("--trust", "trust", multiple=True, metavar="ISSUER",
              help="approve a provider before serving (repeatable); others are asked about on first use")
@click.option("--forget", "forget", multiple=True, metavar="ISSUER", help="withdraw a provider's approval")
@click.option("--trusted", "list_trusted", is_flag=True, help="print the approved providers and exit")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="info", show_default=True)
@pass_ctx
def agent_command(obj: Ctx, port: int, card_uri: str | None, trust: tuple[str, ...], forget: tuple[str, ...],
                  list_trusted: bool, log_level: str) -> None:
    """Let web pages use the card: a local agent on http://127.0.0.1:PORT.

    A provider's authorization page (jpki idp serve) links to this agent ("use the card on this
    computer"). The agent shows who asks and for what, takes the PIN on its own page (it never
    leaves this computer), has the card sign and sends the browser back. It talks only to
    providers you approved: on first use it asks, or approve one here with --trust. It answers
    only on 127.0.0.1 (and localhost), only to its own pages. See docs/oidc.md.

    \b
    Examples:
      jpki agent                                        # a card in a PC/SC reader
      jpki agent --card emu:alice --trust http://127.0.0.1:8600
      jpki agent --trust https://idp.example.jp --trusted    # approve, list, exit
    """
    from ..agent.app import serve
    from ..agent.service import AgentConfig
    from ..agent.trust import TrustedProviders

    card = card_uri or obj.card_uri
    if card.startswith("emu:") and "/" not in card[4:] and not card[4:].startswith("."):
        check_card_name(card[4:])
        if not obj.jhome.has_card(card[4:]):
            obj.warn(f"no emulated card {card[4:]!r} in {obj.home} yet: the agent will say so until it exists")
    config = AgentConfig(home=obj.home, card=card)  # checks the URI
    trusted = TrustedProviders(obj.home)
    for issuer in trust:
        added = trusted.add(issuer, now=obj.clock.now())
        obj.note(f"provider approved: {added.issuer}")
    for issuer in forget:
        obj.note(f"provider {'forgotten' if trusted.remove(issuer) else 'was not approved'}: {issuer}")
    if list_trusted:
        providers = trusted.list()
        obj.emit([p.to_json() for p in providers],
                 "\n".join(f"{p.issuer}  (approved {p.added_at.isoformat()})" for p in providers)
                 or "no provider approved yet (jpki agent --trust ISSUER)")
        return

    def ready() -> None:
        names = ", ".join(p.issuer for p in trusted.list()) or "none yet (the first request asks)"
        obj.note(f"jpki agent on http://127.0.0.1:{port} (card {card}); approved providers: {names}")

    serve(config, port, log_level=log_level, on_ready=ready)


__all__ = ["agent_command"]
