"""Testing support for applications that use My Number Cards: a pytest plugin and its pieces.

- :mod:`jpki.testing.plugin` — the pytest plugin (entry point ``jpki.testing.plugin``): fixtures
  for a home, the test CA, card factories, an in-process card, a card in a PC/SC reader, the
  OCSP/CRL server, the OpenID Provider with test cards, a shared controllable clock.
- :mod:`jpki.testing.cards` — :class:`CardFactory` and :class:`TestCard` (states: blocked PIN,
  expired or revoked certificates, card past expiry, renewed, moved), :func:`new_test_ca`.
- :mod:`jpki.testing.keypool` — :class:`KeyPool`, the per-machine cache of RSA-2048 keys that
  makes a new card cost milliseconds.
- :mod:`jpki.testing.pcsc` — pcscd + vpcd for tests (skip, or fail when ``CI=true``).
- :mod:`jpki.testing.idp` — the OpenID Provider in test-card mode, in process.

The guide is docs/testing.md. Names are imported lazily: importing this package (which pytest
does for every project that installs jpki) loads nothing else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jpki.testing.cards import CardFactory, FreshKeys, KeySource, Pins, TestCard, new_test_ca
    from jpki.testing.idp import TestProvider, build_test_provider
    from jpki.testing.keypool import KeyPool, KeyPoolError
    from jpki.testing.plugin import START

__all__ = ["START", "CardFactory", "FreshKeys", "KeyPool", "KeyPoolError", "KeySource", "Pins", "TestCard",
           "TestProvider", "build_test_provider", "new_test_ca"]

_WHERE = {"CardFactory": "cards", "FreshKeys": "cards", "KeySource": "cards", "Pins": "cards",
          "TestCard": "cards", "new_test_ca": "cards", "TestProvider": "idp", "build_test_provider": "idp",
          "KeyPool": "keypool", "KeyPoolError": "keypool", "START": "plugin"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
