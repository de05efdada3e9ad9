"""A bounded least-recently-used cache: by entry count and by (estimated) bytes.

Every cache on the verification side — the validator's per-certificate checks, OCSP answers,
CRLs, the relying party's parsed certificates and renewal-link accounts — is one of these. A
bound on the count alone is not a bound on memory: what a client sends can be 16 KiB where a
card's certificate is 1.5 KiB, so 100,000 entries may be 1.5 GiB. Each cache therefore weighs
its entries (``size``: a cheap estimate of the memory an entry holds, its bytes included) and
drops the least recently used ones while over either bound. An entry heavier than the whole
byte bound is not kept at all.

Reads are lock-free (a dict look-up and a move to the end, each atomic under the GIL); writes
take a lock. What to cache is the caller's business: refusals a client can make up at will
(a certificate that chains to no trust anchor) should not be cached at all.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["LruCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """At most ``max_entries`` entries weighing at most ``max_bytes`` in all (None: no byte
    bound), least recently used out first. ``size(key, value)`` weighs an entry (default: 1
    byte each, i.e. only the count matters). ValueError for a negative bound. Thread-safe."""

    def __init__(
        self,
        max_entries: int,
        max_bytes: int | None = None,
        *,
        size: Callable[[K, V], int] | None = None,
    ) -> None:
        if not isinstance(max_entries, int) or max_entries < 0:
            raise ValueError("max_entries must be a non-negative integer")
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 0):
            raise ValueError("max_bytes must be a non-negative integer or None")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._size = size
        # key -> (value, weight)
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The entry for ``key`` (now the most recently used), or None."""
        found = self._data.get(key)
        if found is None:
            return None
        with contextlib.suppress(KeyError):  # evicted by a writer meanwhile: the value read is still good
            self._data.move_to_end(key)
        return found[0]

    def put(self, key: K, value: V, *, weight: int | None = None) -> bool:
        """Store ``value`` under ``key`` (weighing ``weight``, default: the cache's ``size``),
        evicting the least recently used entries while over a bound; False (and nothing kept
        under ``key``) when the entry alone exceeds a bound."""
        if weight is None:
            weight = 1 if self._size is None else self._size(key, value)
        weight = max(1, int(weight))
        fits = self.max_entries > 0 and (self.max_bytes is None or weight <= self.max_bytes)
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if not fits:
                return False
            limit = self.max_bytes
            while self._data and (
                len(self._data) >= self.max_entries or (limit is not None and self._bytes + weight > limit)
            ):
                _, (_, dropped) = self._data.popitem(last=False)
                self._bytes -= dropped
            self._data[key] = (value, weight)
            self._bytes += weight
            return True

    def discard(self, key: K) -> None:
        """Forget ``key`` (nothing if absent)."""
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]

    def discard_where(self, doomed: Callable[[K], bool]) -> int:
        """Forget every entry whose key ``doomed`` accepts; how many were dropped."""
        with self._lock:
            keys = [k for k in self._data if doomed(k)]
            for k in keys:
                self._bytes -= self._data.pop(k)[1]
            return len(keys)

    def clear(self) -> int:
        """Drop every entry; how many there were."""
        with self._lock:
            count = len(self._data)
            self._data.clear()
            self._bytes = 0
            return count

    def keys(self) -> list[K]:
        """The keys, least recently used first."""
        with self._lock:
            return list(self._data)

    @property
    def total_bytes(self) -> int:
        """The estimated weight of every entry kept."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data
