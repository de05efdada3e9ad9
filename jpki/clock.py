"""Time as an explicit input: library code takes a Clock, tests pass a FixedClock."""

from __future__ import annotations

import datetime as _dt
from typing import Protocol

JST = _dt.timezone(_dt.timedelta(hours=9), "JST")


class Clock(Protocol):
    def now(self) -> _dt.datetime:
        """The current time, timezone-aware."""


class SystemClock:
    def now(self) -> _dt.datetime:
        return _dt.datetime.now(_dt.timezone.utc)


class FixedClock:
    """A clock that stands still unless advanced; for tests."""

    def __init__(self, when: _dt.datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware datetime")
        self._when = when

    def now(self) -> _dt.datetime:
        return self._when

    def advance(self, **delta: float) -> None:
        self._when = self._when + _dt.timedelta(**delta)
