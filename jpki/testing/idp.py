"""The OpenID Provider (:mod:`jpki.idp`) in test-card mode, in this process, for tests.

```python
idp = build_test_provider(home, clock)              # trusts the home's test CA; test cards on
async with idp.http() as browser:                   # httpx against the ASGI app (the issuer's origin)
    await browser.post("/api/test-cards/authenticate",
                       json={"pending": pending, "card": "alice", "outcome": "success"})
idp.close()
```

The cards of the home (``make_card``'s) are the provider's test cards: an outcome (``success``,
``wrong_pin``, ``blocked_pin``, ``revoked``, ``expired``, ``cancel``; see
:mod:`jpki.idp.testcards`) makes the card really sign, and the provider checks it as it checks a
card holder's agent. Revocation is asked at every check (``revocation_max_age`` 0), through
``fetch`` (default: HTTP to the URLs in the certificates, where the test CA's OCSP/CRL server
runs in the plugin).
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from pathlib import Path
from typing import Any, Final

import httpx

from jpki.clock import Clock
from jpki.idp.app import create_app
from jpki.idp.provider import Provider, ProviderConfig, build_provider
from jpki.idp.testcards import TestCards
from jpki.verify.fetch import Fetch

__all__ = ["ISSUER", "TestProvider", "build_test_provider"]

#: The provider's issuer (and base URL) in tests: its endpoints are under
#: ``ISSUER/api/realms/main/protocol/openid-connect/``.
ISSUER: Final = "http://idp.test"


@dataclasses.dataclass
class TestProvider:
    """The provider under test: its ASGI app, the service object, the test cards, the clock."""

    __test__ = False  # not a pytest test class

    app: Any
    provider: Provider
    cards: TestCards
    clock: Clock
    home: Path
    issuer: str = ISSUER

    def http(self, **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client (a browser, a relying party's server) that reaches the app in process;
        its base URL is the issuer's origin (the routes carry the issuer's path, if any)."""
        parts = urllib.parse.urlsplit(self.issuer)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                 base_url=f"{parts.scheme}://{parts.netloc}", **kwargs)

    def close(self) -> None:
        self.app.state.close()


def build_test_provider(home: Path | str, clock: Clock, fetch: Fetch | None = None, **config: Any) -> TestProvider:
    """The provider of ``home`` in test-card mode; ``config`` overrides :class:`ProviderConfig`
    fields (``issuer=``, ``revocation=``, ``store=`` …)."""
    settings: dict[str, Any] = {"test_cards": True, "revocation_max_age": 0.0, **config}
    issuer = settings.pop("issuer", ISSUER)
    provider = build_provider(ProviderConfig(home=Path(home), issuer=issuer, **settings), clock=clock, fetch=fetch)
    cards = TestCards(provider, home)
    return TestProvider(create_app(provider, test_cards=cards), provider, cards, clock, Path(home), issuer)
