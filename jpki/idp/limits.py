"""Per-client limits of the OpenID Provider: one client must not take the provider from everyone.

Three limits, as ``jpki rp serve`` has (:mod:`jpki.auth.limits`), sized for an OpenID Provider:

* **token buckets per client address** (an IPv4 address or an IPv6 /64,
  :func:`jpki.auth.limits.client_key`), one per endpoint: the authorization page and its forms
  (``auth``), the test-card API (``test-cards``), the token and revocation endpoints (``token``);
* **a token bucket per OAuth client** (``client_id``) at the token and revocation endpoints,
  taken once the client has authenticated (so nobody can spend another client's allowance);
* **a cap on unfinished authorizations per client address**, kept in the provider's shared
  store (:meth:`jpki.idp.kv.KV.put_capped`): exact across workers and restarts, and at no
  extra store round trip.

The buckets live in each worker process (:class:`jpki.auth.limits.MemoryLimiter`): asking a
shared store at every request would cost a Redis round trip each (about a twentieth of a whole
code flow's CPU). The limit a client meets is therefore the configured one **per worker**:
with N workers up to N times as many requests get through, depending on how the connections
spread over the workers. :class:`RefusalLog` counts refusals and logs one summary line per
interval, never one line per refused request.

The defaults are generous on purpose: they must not throttle the provider's own benchmark, 20
clients on 127.0.0.1 running about 300 complete flows per second (an authorization page, a
test-card answer and a token request each) and token requests at about 2,000 per second for
one client, over two workers. They bound what one address can take rather than police
ordinary use; a provider facing the internet should set its own (``jpki idp serve
--rate-limit``, ``--token-rate-limit``, …), with the addresses of its users behind shared NATs
in mind.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Final

from jpki.auth.limits import MemoryLimiter, RefusalLog
from jpki.errors import UsageError

__all__ = ["ENDPOINTS", "ProviderLimits", "Throttle"]

#: The buckets: per client address for each endpoint group, and ``client`` per client_id.
ENDPOINTS: Final = ("auth", "test-cards", "token", "client")


@dataclasses.dataclass(frozen=True)
class ProviderLimits:
    """The provider's per-client limits (0 turns one off); rates are requests per second per
    worker process, bursts are requests at once.

    ``rate``/``burst``: per client address at the authorization page (and its forms) and, in
    a bucket of its own, at the test-card API. ``token_rate``/``token_burst``: per client
    address and, in a bucket of its own, per OAuth client at the token and revocation
    endpoints (a relying party's server asks for all its users). ``max_pending``: unfinished
    authorizations per client address, across all workers.
    """

    rate: float = 500.0
    burst: int = 1000
    token_rate: float = 2000.0
    token_burst: int = 4000
    max_pending: int = 256

    def __post_init__(self) -> None:
        for name in ("rate", "token_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    value >= 0 and math.isfinite(value)):
                raise UsageError(f"{name} must be a non-negative number of requests per second")
        for name in ("burst", "token_burst", "max_pending"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageError(f"{name} must be a non-negative integer")
        if (self.rate and self.burst < 1) or (self.token_rate and self.token_burst < 1):
            raise UsageError("a rate limit needs a burst of at least 1")


class Throttle:
    """The token buckets of this worker process and the count of what they refused.

    ``timer`` gives seconds (the provider passes its clock, so that a test's fixed clock
    decides when a bucket fills again); ``logger`` gets the refusal summaries."""

    def __init__(self, limits: ProviderLimits, *, timer: Callable[[], float],
                 logger: logging.Logger | None = None) -> None:
        self.limits = limits
        self._buckets = MemoryLimiter(timer=timer)
        self.refusals = RefusalLog(logger=logger) if logger is not None else RefusalLog()

    def admit(self, endpoint: str, key: str) -> float:
        """Take a token from the bucket of ``key`` (a client address, or a client_id for
        ``client``) at ``endpoint`` (one of :data:`ENDPOINTS`): 0 when admitted, else the
        seconds until a token is there (the refusal is counted)."""
        if endpoint in ("token", "client"):
            rate, burst = self.limits.token_rate, self.limits.token_burst
        elif endpoint in ENDPOINTS:
            rate, burst = self.limits.rate, self.limits.burst
        else:
            raise UsageError(f"unknown endpoint {endpoint!r} for the rate limits")
        if not rate:
            return 0.0
        wait = self._buckets.take(f"{endpoint} {key}", rate, burst)
        if wait:
            self.refusals.refused(f"{endpoint}-rate-limited", key)
        return wait

    def refused(self, reason: str, key: str) -> None:
        """Count a refusal decided elsewhere (``too-many-pending``)."""
        self.refusals.refused(reason, key)

    def close(self) -> None:
        """Log the summary of the last refusals and forget the buckets."""
        self.refusals.flush()
        self._buckets.close()
