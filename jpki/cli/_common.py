"""Shared plumbing of the CLI: global options, output, PIN sources, opening the card."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from ..clock import Clock, SystemClock, clock_from_environment
from ..errors import UsageError
from ..home import Home
from ..transport import Transport, is_pcsc_uri, open_transport

PIN_ENV = {"auth": "JPKI_AUTH_PIN", "sign": "JPKI_SIGN_PIN", "card": "JPKI_CARD_PIN"}
PIN_LABEL = {"auth": "user-authentication PIN (4 digits)",
             "sign": "signature password (6-16 characters)",
             "card": "card-info PIN (4 digits)"}
PIN_KINDS = click.Choice(["auth", "sign", "card"])


def default_home() -> Path:
    return Path(os.path.expanduser("~")) / ".jpki"


@dataclass
class Ctx:
    home: Path
    card_uri: str
    json: bool
    trace: bool
    force: bool
    wait: float
    exclusive: bool = False
    #: the time of every command: the system clock, or ``$JPKI_NOW`` (testing)
    clock: Clock = field(default_factory=SystemClock)
    _stdin_lines: Iterator[str] | None = field(default=None, repr=False)

    @property
    def jhome(self) -> Home:
        return Home(self.home, clock=self.clock)

    # ------------------------------------------------------------------ output
    def emit(self, data: Any, human: str | Callable[[], str] | None = None) -> None:
        """Print the result: one JSON document with --json, else the human text."""
        if self.json:
            click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
        elif human is not None:
            click.echo(human() if callable(human) else human)

    def note(self, message: str) -> None:
        """A diagnostic on stderr."""
        click.echo(message, err=True)

    # ------------------------------------------------------------------ PINs
    def _next_stdin_line(self) -> str | None:
        if self._stdin_lines is None:
            self._stdin_lines = iter(sys.stdin.read().splitlines())
        return next(self._stdin_lines, None)

    def pin(self, kind: str, given: str | None, prompt: str | None = None,
            env: bool = True) -> str:
        """A PIN from the option, then the environment, then stdin (not a TTY), then a hidden prompt."""
        if given:
            return given
        if env and os.environ.get(PIN_ENV[kind]):
            return os.environ[PIN_ENV[kind]]
        if not sys.stdin.isatty():
            line = self._next_stdin_line()
            if line:
                return line.strip()
            raise UsageError(f"no {PIN_LABEL[kind]} given (option, ${PIN_ENV[kind]} or stdin)")
        return click.prompt(prompt or f"Enter the {PIN_LABEL[kind]}", hide_input=True, err=True)

    # ------------------------------------------------------------------ card
    @contextlib.contextmanager
    def card(self) -> Iterator[Transport]:
        trace = (lambda line: click.echo(line, err=True)) if self.trace else None
        with open_transport(self.card_uri, home=self.home, wait=self.wait, trace=trace,
                            exclusive=self.exclusive) as t:
            yield t

    @property
    def is_real_reader(self) -> bool:
        return is_pcsc_uri(self.card_uri)

    def confirm_try(self, what: str, tries_left: int) -> None:
        """Before spending a PIN try on a card behind a reader, ask (unless --force)."""
        if not self.is_real_reader or self.force:
            return
        if not sys.stdin.isatty():
            raise UsageError(f"{what} spends a try on a card in a reader ({tries_left} left): "
                             "pass --force to go on without asking")
        click.confirm(f"{what}: {tries_left} tries left on this card. Go on?", err=True, abort=True)


def environment_clock() -> Clock:
    """The clock of the command line: ``$JPKI_NOW`` (for testing) or the system clock."""
    try:
        return clock_from_environment()
    except ValueError as exc:
        raise UsageError(str(exc)) from None


pass_ctx = click.make_pass_decorator(Ctx)
