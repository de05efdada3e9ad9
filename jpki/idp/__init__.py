"""An OpenID Provider for the My Number Card: "log in with My Number Card" the way Japanese
services integrate it (the Digital Authentication App's OpenID Connect), self-hosted.

Modules: :mod:`~jpki.idp.provider` (the service object: authorization, the card's answer,
tokens, userinfo; no HTTP), :mod:`~jpki.idp.pending` (a pending authorization's state
machine), :mod:`~jpki.idp.clients` (the registered relying parties, SQLite in the home),
:mod:`~jpki.idp.keys` (the ID-token key and the pairwise salt), :mod:`~jpki.idp.signtx` (sign
transactions: the ``sign`` action and its API), :mod:`~jpki.idp.kv` (the
shared store: memory, SQLite, Redis), :mod:`~jpki.idp.limits` (per-client limits),
:mod:`~jpki.idp.accounts` (one account for the login
and eKYC certificates of a card), :mod:`~jpki.idp.pages` (HTML, ja/en), :mod:`~jpki.idp.app`
(the Starlette app and its serving), :mod:`~jpki.idp.testcards` (the test-card mode; the only
module here that drives cards, imported only when that mode is on).

Like the relying-party side of :mod:`jpki.auth`, nothing here but ``testcards`` imports a card
library (``tests/test_layering.py``). See ``docs/oidc.md``.
"""

from jpki.idp.provider import (
    ACR,
    AMR,
    CLAIM_SCOPES,
    DEFAULT_AGENT_URL,
    CardAction,
    Completion,
    OAuthError,
    Provider,
    ProviderConfig,
    build_provider,
)

__all__ = [
    "ACR",
    "AMR",
    "CLAIM_SCOPES",
    "DEFAULT_AGENT_URL",
    "CardAction",
    "Completion",
    "OAuthError",
    "Provider",
    "ProviderConfig",
    "build_provider",
]
