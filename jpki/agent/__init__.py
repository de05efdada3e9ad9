"""The local agent (``jpki agent``): the browser's way to the card.

A provider's authorization page links to ``http://127.0.0.1:24780/authorize?issuer=…&pending=…``
("use the card on this computer"). The agent, a small web app on loopback, shows the card
holder who asks and for what, takes the PIN on its own page, has the card sign (in process or
through PC/SC), hands the answer to the provider and sends the browser back to it. It is the
one HTTP app of jpki that talks to a card.

Modules: :mod:`~jpki.agent.service` (the :class:`~jpki.agent.service.Agent`: the provider's
pending API and the card; no HTTP), :mod:`~jpki.agent.trust` (the providers the card holder
approved, in the home), :mod:`~jpki.agent.guards` (Host, Origin, fetch metadata, page tokens),
:mod:`~jpki.agent.pages` (HTML, ja/en), :mod:`~jpki.agent.app` (the Starlette app and its
serving; run by the CLI only). It talks to the provider over HTTP only: nothing here imports
:mod:`jpki.idp` (``tests/test_layering.py``). See ``docs/oidc.md``.
"""

from jpki.agent.service import DEFAULT_PORT, Agent, AgentConfig, Outcome, PendingRequest
from jpki.agent.trust import TrustedProviders

__all__ = ["DEFAULT_PORT", "Agent", "AgentConfig", "Outcome", "PendingRequest", "TrustedProviders"]
