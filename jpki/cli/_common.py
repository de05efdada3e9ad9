"""Shared plumbing of the CLI: global options, output, PIN sources, opening the card, and the
options and parameter types several commands share (``--pin``, the revocation options, a
date-time), each defined once here."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Self, TextIO, TypeVar

import click

from ..clock import Clock, SystemClock, clock_from_environment, parse_instant
from ..errors import UsageError
from ..home import Home, check_card_name, check_home_path
from ..pins import PINS, USER_PINS
from ..transport import Transport, is_pcsc_uri, open_transport
from ._fail import EXIT_USAGE, CliFail, pin_name

__all__ = ["CARD_NAME", "INSTANT", "PIN_KINDS", "CliFail", "Ctx", "Progress", "limit_options", "pass_ctx",
           "pin_name", "pin_option", "revocation_options"]

#: A PIN KIND argument: the PINs a user has (jpki.pins.USER_PINS).
PIN_KINDS = click.Choice(list(USER_PINS))

#: Seconds a long task runs before its progress line appears, and between redraws.
PROGRESS_DELAY = 0.5
PROGRESS_INTERVAL = 0.1


def default_home() -> Path:
    return Path(os.path.expanduser("~")) / ".jpki"


def home_from(option: str | os.PathLike[str] | None, environ: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """The home: ``--home``, else ``$JPKI_HOME``, else ~/.jpki; checked (jpki.home.check_home_path).

    An empty ``$JPKI_HOME`` (or ``--home ''``) is an error, not the default: it is most likely a
    variable that was meant to be set (``JPKI_HOME=$UNSET_VAR``), and falling back to ~/.jpki
    would act on the wrong CA and cards.
    """
    env = os.environ if environ is None else environ
    if option is not None:
        return check_home_path(option)
    if "JPKI_HOME" in env:
        return check_home_path(env["JPKI_HOME"])
    return check_home_path(default_home())


def stderr_is_tty() -> bool:
    """Whether stderr is a terminal (progress lines are drawn only there)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A counter on one terminal line of stderr (``label: 12,345 of 1,000,000``), redrawn at
    most every ``interval`` seconds once ``delay`` seconds have passed, erased at the end.

    Only :meth:`Ctx.progress` makes a visible one (stderr a terminal, no ``--json``); the hidden
    one counts and draws nothing. ``monotonic`` is for tests.
    """

    def __init__(self, label: str, total: int | None = None, *, stream: TextIO | None = None,
                 visible: bool = True, delay: float | None = None, interval: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.label, self.total, self.stream, self.visible = label, total, stream, visible
        self.delay = PROGRESS_DELAY if delay is None else delay
        self.interval = PROGRESS_INTERVAL if interval is None else interval
        self._monotonic = monotonic
        self._start = monotonic()
        self._last_draw: float | None = None
        self.done = 0
        self.drawn = False

    def update(self, done: int, total: int | None = None) -> None:
        """``done`` items so far (of ``total``, when it becomes known)."""
        self.done = done
        if total is not None:
            self.total = total
        if not self.visible:
            return
        now = self._monotonic()
        if now - self._start < self.delay:
            return
        if self._last_draw is not None and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        self._draw()

    def _draw(self) -> None:
        of = f" of {self.total:,}" if self.total is not None else ""
        percent = f" ({100 * self.done // self.total}%)" if self.total else ""
        self._write(f"\r\033[K{self.label}: {self.done:,}{of}{percent}")
        self.drawn = True

    def _write(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(text)
        stream.flush()

    def close(self) -> None:
        """Erase the line (what follows is printed where it began)."""
        if self.drawn:
            self._write("\r\033[K")
            self.drawn = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    #: True once the command printed its result (main() then prints no second JSON document)
    emitted: bool = field(default=False, repr=False)
    #: ``--record FILE``: every card session of the command goes there as an APDU script
    record: Path | None = None
    #: the jpki.scripts.Recorder of --record, made when the command first opens a card
    recorder: Any = field(default=None, repr=False)

    @property
    def jhome(self) -> Home:
        return Home(self.home, clock=self.clock)

    # ------------------------------------------------------------------ output
    def emit(self, data: Any, human: str | Callable[[], str] | None = None) -> None:
        """Print the result: one JSON document with --json, else the human text."""
        if self.json:
            click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
            self.emitted = True
        elif human is not None:
            click.echo(human() if callable(human) else human)
            self.emitted = True

    def note(self, message: str) -> None:
        """A diagnostic on stderr."""
        click.echo(message, err=True)

    def warn(self, message: str) -> None:
        """A warning on stderr (also with --json: stdout keeps its one document)."""
        click.echo(f"warning: {message}", err=True)

    def fail(self, fail: CliFail, document: dict[str, Any] | None = None,
             human: str | Callable[[], str] | None = None) -> NoReturn:
        """Print the command's own account of a failure, then raise ``fail`` (for main()).

        With --json the document is THE document of the command, with the error's ``code`` (and
        hint) added; without, ``human`` goes to stdout. main() adds the ``error:`` line.
        """
        if document is not None and self.json:
            extra = {"error": fail.code, **({"hint": fail.hint} if fail.hint else {})}
            self.emit({**document, **{k: v for k, v in extra.items() if k not in document}})
        elif human is not None and not self.json:
            self.emit(None, human)
        raise fail

    def progress(self, label: str, total: int | None = None, *, shown: bool = True) -> Progress:
        """A progress line for a task that may take seconds: drawn on stderr when it is a
        terminal, the output is not --json and ``shown``; else invisible (it still counts)."""
        return Progress(label, total, visible=shown and not self.json and stderr_is_tty())

    # ------------------------------------------------------------------ PINs
    def _next_stdin_line(self) -> str | None:
        if self._stdin_lines is None:
            self._stdin_lines = iter(sys.stdin.read().splitlines())
        return next(self._stdin_lines, None)

    def pin(self, kind: str, given: str | None, prompt: str | None = None,
            env: bool = True) -> str:
        """A PIN from the option (:func:`pin_option`), then its environment variable, then stdin
        (not a TTY), then a hidden prompt."""
        if given:
            return given
        spec = PINS[kind]
        if env and spec.env and os.environ.get(spec.env):
            return os.environ[spec.env]
        if not sys.stdin.isatty():
            line = self._next_stdin_line()
            if line:
                return line.strip()
            raise CliFail(f"no {spec.label} given, and stdin is not a terminal to ask on",
                          code="no_pin", exit_code=EXIT_USAGE,
                          hint=f"pass --pin, {f'set ${spec.env}, ' if spec.env else ''}or pipe it "
                               "on stdin (echo VALUE | jpki …)")
        return click.prompt(prompt or f"Enter the {spec.label}", hide_input=True, err=True)

    # ------------------------------------------------------------------ card
    def card_name(self, name: str) -> str:
        """``name`` checked as a card name (InvalidNameError, exit 2): every command that takes a
        card NAME passes it here before it becomes a path."""
        return check_card_name(name)

    @contextlib.contextmanager
    def card(self) -> Iterator[Transport]:
        if self.card_uri.startswith("emu:"):
            name = self.card_uri[4:]
            if name and "/" not in name and not name.startswith("."):  # emu:PATH stays a path
                check_card_name(name)
        trace = (lambda line: click.echo(line, err=True)) if self.trace else None
        with open_transport(self.card_uri, home=self.home, wait=self.wait, trace=trace,
                            exclusive=self.exclusive) as t:
            if self.record is None:
                yield t
                return
            yield from self._recording(t)

    def _recording(self, t: Transport) -> Iterator[Transport]:
        """--record: the session through a RecordingTransport; the file rewritten (whole, atomically)
        when the session ends, also when the command fails half-way."""
        from ..fileio import write_atomic
        from ..scripts import Recorder

        assert self.record is not None
        if self.recorder is None:
            self.recorder = Recorder()
        context = click.get_current_context(silent=True)
        label = context.command_path if context is not None else "jpki"
        try:
            yield self.recorder.wrap(t, f"{label} on {self.card_uri}")
        finally:
            write_atomic(self.record, self.recorder.text().encode("utf-8"))

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


if TYPE_CHECKING:  # newer clicks type a ParamType by its value and input; older ones are not generic
    _TextParam = click.ParamType[str, Any]
    _InstantParam = click.ParamType[_dt.datetime, Any]
else:
    _TextParam = _InstantParam = click.ParamType


class CardNameType(_TextParam):
    """A card NAME argument, checked when the command line is parsed (jpki.home.check_card_name):
    a path such as ``../../other/cards/dave`` is an InvalidNameError (exit 2) before any file
    is touched."""

    name = "NAME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return check_card_name(value)


CARD_NAME = CardNameType()


class InstantType(_InstantParam):
    """An ISO 8601 date or date-time (``--at``, ``--invalidity-date``), read by
    :func:`jpki.clock.parse_instant`: without an offset it is UTC. Anything else is a
    usage error (exit 2) naming the option, before the command runs."""

    name = "DATETIME"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> _dt.datetime:
        if isinstance(value, _dt.datetime):
            return value
        try:
            return parse_instant(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 date-time (e.g. 2027-01-01T09:00:00+09:00 "
                      "or 2027-01-01; UTC when no offset is given)", param, ctx)


INSTANT = InstantType()

_F = TypeVar("_F", bound=Callable[..., Any])


def _one_of(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def pin_option(*kinds: str, chosen_by: str | None = None,
               note: str | None = None) -> Callable[[_F], _F]:
    """The one ``--pin`` option (parameter ``pin_value``) of every command that uses a PIN or
    password; :meth:`Ctx.pin` reads it, then the environment, stdin, a prompt.

    ``kinds`` are the PINs it may be (jpki.pins.PINS); with several, ``chosen_by`` says what
    picks one (``KIND``, ``--key``). The help names the PIN and its environment variable.
    """
    specs = [PINS[kind] for kind in kinds]
    if len(specs) == 1:
        what = f"the {specs[0].label}"
    else:
        what = f"the PIN {chosen_by or 'the command'} names ({_one_of([s.name for s in specs])})"
    if note:
        what += f", {note}"
    sources = [f"${s.env}" for s in specs if s.env]
    help_text = f"{what} [else {_one_of(sources)}, stdin or a prompt]" if sources else what
    return click.option("--pin", "pin_value", metavar="PIN", help=help_text)


#: ``--revocation``: how a certificate's revocation is checked (jpki.verify.Validator's modes).
REVOCATION_MODES = click.Choice(["ocsp", "crl", "none"])


def server_options(*, port: int, store: str) -> Callable[[_F], _F]:
    """``--host``, ``--port``, ``--store`` and ``--workers`` of a served app (``rp serve``, ``idp
    serve``): loopback by default, a shared store for several worker processes."""

    def decorate(f: _F) -> _F:
        for option in reversed([
            click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on"),
            click.option("--port", type=click.IntRange(1, 65535), default=port, show_default=True,
                         help="port to listen on"),
            click.option("--store", default="memory", show_default=True,
                         help=f"{store}: memory, sqlite:PATH or redis://HOST[:PORT][/DB][?prefix=P]"),
            click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
                         help="server processes (more than one needs a sqlite: or redis:// store)"),
        ]):
            f = option(f)
        return f

    return decorate


def limit_options(*, rate: float, burst: int, max_pending: int, endpoints: str, pending: str) -> Callable[[_F], _F]:
    """The per-client limits of a served app (``rp serve``, ``idp serve``), defined once:
    ``--rate-limit`` (requests per second per client address to ``endpoints``), ``--rate-burst``
    and ``--max-pending`` (at most that many ``pending`` per client address); 0 turns one off."""

    def decorate(f: _F) -> _F:
        for option in reversed([
            click.option("--rate-limit", type=click.FloatRange(0), default=rate, show_default=True,
                         help=f"requests per second per client address to {endpoints} (0: no limit)"),
            click.option("--rate-burst", type=click.IntRange(1), default=burst, show_default=True,
                         help="requests a client may send at once before --rate-limit applies"),
            click.option("--max-pending", type=click.IntRange(0), default=max_pending, show_default=True,
                         help=f"{pending} per client address (0: no limit)"),
        ]):
            f = option(f)
        return f

    return decorate


def revocation_options(*, soft_fail: bool = True, max_age: bool = False) -> Callable[[_F], _F]:
    """The revocation options, defined once: ``--revocation ocsp|crl|none`` (parameter
    ``revocation``), and where the command allows them ``--soft-fail`` (``soft_fail``; not for a
    relying party, which always fails closed) and ``--revocation-max-age`` (seconds,
    ``revocation_max_age``; for a service that caches answers)."""

    def decorate(command: _F) -> _F:
        if max_age:
            command = click.option(
                "--revocation-max-age", type=click.FloatRange(0, 86400), default=300.0,
                show_default=True,
                help="seconds a cached OCSP answer is relied on (a lost card is refused at most "
                     "this late)")(command)
        if soft_fail:
            command = click.option(
                "--soft-fail", is_flag=True,
                help="accept the certificate when no revocation source answers")(command)
        return click.option(
            "--revocation", type=REVOCATION_MODES, default="ocsp", show_default=True,
            help="ocsp: OCSP, then the CRL if OCSP does not answer; crl: the CRL only; "
                 "none: no check (testing only)")(command)

    return decorate
