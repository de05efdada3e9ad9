"""Time as an explicit input: library code takes a Clock, tests pass a FixedClock.

The CLI and the services read their clock from the environment (:func:`clock_from_environment`):
``JPKI_NOW`` (for testing) makes them start at a given instant and run on from there, so that a
test of the command line or of a served process never depends on today's date.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Mapping
from typing import Protocol

JST = _dt.timezone(_dt.timedelta(hours=9), "JST")

#: Environment variable: an ISO 8601 instant the CLI and services start their clock at (testing).
ENV_NOW = "JPKI_NOW"
#: Environment variable: the real Unix time at which ``$JPKI_NOW`` was the time (default: when
#: the process read it). Set it when several processes must share one clock (a test suite).
ENV_NOW_ANCHOR = "JPKI_NOW_ANCHOR"


class Clock(Protocol):
    def now(self) -> _dt.datetime:
        """The current time, timezone-aware."""


class SystemClock:
    def now(self) -> _dt.datetime:
        return _dt.datetime.now(_dt.UTC)


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


class OffsetClock:
    """A clock that read ``start`` at the real Unix time ``anchor`` (default: now) and runs on
    at the speed of the system clock.

    What ``JPKI_NOW`` gives a process: its time is fixed where it starts, yet timeouts, expiries
    and freshness still pass as they would; processes given the same anchor agree.
    """

    def __init__(self, start: _dt.datetime, anchor: float | None = None) -> None:
        if start.tzinfo is None:
            raise ValueError("OffsetClock needs a timezone-aware datetime")
        self.start = start
        self.anchor = time.time() if anchor is None else anchor

    def now(self) -> _dt.datetime:
        return self.start + _dt.timedelta(seconds=time.time() - self.anchor)


def parse_instant(text: str) -> _dt.datetime:
    """An ISO 8601 date or date-time; without an offset it is taken as UTC. ValueError if not."""
    value = _dt.datetime.fromisoformat(text.strip())
    return value if value.tzinfo is not None else value.replace(tzinfo=_dt.UTC)


def clock_from_environment(environ: Mapping[str, str] | None = None) -> Clock:
    """``OffsetClock`` from ``$JPKI_NOW`` (and ``$JPKI_NOW_ANCHOR``) when it is set (testing),
    else the system clock.

    Raises ValueError naming the variable when a value is malformed.
    """
    env = os.environ if environ is None else environ
    text = env.get(ENV_NOW, "")
    if not text.strip():
        return SystemClock()
    try:
        start = parse_instant(text)
    except ValueError:
        raise ValueError(f"${ENV_NOW}={text!r} is not an ISO 8601 date-time "
                         "(e.g. 2026-11-27T03:00:00Z)") from None
    anchor_text = env.get(ENV_NOW_ANCHOR, "").strip()
    try:
        anchor = float(anchor_text) if anchor_text else None
    except ValueError:
        raise ValueError(f"${ENV_NOW_ANCHOR}={anchor_text!r} is not a Unix time in seconds") from None
    return OffsetClock(start, anchor)
