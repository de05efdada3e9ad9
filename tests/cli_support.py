"""The one way the tests run the ``jpki`` command line. Not a test module.

Tests take the ``cli`` fixture (conftest.py), a :class:`Cli` bound to the test's ``home`` and
alice's emulated card:

- ``cli("pin", "status")`` runs in this process through the real entry point
  :func:`jpki.cli.main` (errors mapped to exit codes and messages as for a user), in click's
  CliRunner isolation (stdin, stdout, stderr and ``os.environ`` swapped for the call);
- ``cli.process("pin", "status")`` runs ``python -m jpki`` as a child process (this Python,
  ``PYTHONPATH`` at this checkout, never ``jpki`` from PATH), with a timeout;
- ``cli.spawn("ca", "serve")`` starts one that keeps running (a server) and returns its Popen.

Each runner puts ``--home HOME --card CARD`` before the arguments; ``home=`` / ``card=`` change
them for one call (``None`` leaves the option out), ``cli.bind(...)`` for a runner of its own.
Both runners answer a :class:`CliResult`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]

#: The card a test's ``cli`` uses unless told otherwise.
DEFAULT_CARD = "emu:alice"

#: How long a ``cli.process`` may run (a guard against a hang, not a performance limit).
PROCESS_TIMEOUT = 180.0

Env = Mapping[str, str | None]


class _Unset:
    def __repr__(self) -> str:
        return "<bound>"


_BOUND: Any = _Unset()


@dataclasses.dataclass(frozen=True)
class CliResult:
    """What one run of ``jpki`` did.

    ``exception`` is what the command raised before :func:`jpki.cli.main` mapped it (the
    library's ``PinIncorrectError``, click's ``UsageError``…), ``None`` when it raised nothing
    or ran as a process (a child's exceptions stay in the child: check its exit code and
    stderr). ``output`` is everything the command printed: stdout and stderr interleaved in
    process, stdout then stderr for a process.
    """

    args: tuple[str, ...]
    exit_code: int
    stdout_bytes: bytes
    stderr_bytes: bytes
    output_bytes: bytes
    exception: BaseException | None = None

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8")

    @property
    def output(self) -> str:
        return self.output_bytes.decode("utf-8")

    def json(self) -> Any:
        """stdout as exactly one JSON document (a second one, or trailing text, is an error)."""
        return json.loads(self.stdout)

    def __repr__(self) -> str:  # what an assertion message shows
        def text(data: bytes) -> str:
            shown = data.decode("utf-8", "replace")
            return shown if len(shown) <= 2000 else shown[:2000] + f"… ({len(shown)} characters)"
        exception = f", exception={self.exception!r}" if self.exception is not None else ""
        return (f"CliResult(jpki {' '.join(self.args)} -> exit {self.exit_code}{exception}, "
                f"stdout={text(self.stdout_bytes)!r}, stderr={text(self.stderr_bytes)!r})")


def _bytes(input: str | bytes | None) -> bytes | None:
    return input.encode("utf-8") if isinstance(input, str) else input


class Cli:
    """``jpki --home HOME --card CARD …``, in process or as a process (module docstring).

    ``home`` may be a callable, resolved at the first run that needs it: the conftest fixture
    binds the test's ``home`` fixture that way, so a test that never runs the CLI on it (or
    always names another home) does not pay for the copy of the provisioned home.
    """

    def __init__(self, home: Path | str | Callable[[], Path] | None = None,
                 card: str | None = DEFAULT_CARD) -> None:
        self._home = home
        self.card = card

    @property
    def home(self) -> Path | None:
        if callable(self._home):
            self._home = self._home()
        return Path(self._home) if self._home is not None else None

    def bind(self, *, home: Path | str | None = _BOUND, card: str | None = _BOUND) -> Cli:
        """A runner on another home and/or card (``None``: leave the option out)."""
        return Cli(self._home if home is _BOUND else home, self.card if card is _BOUND else card)

    def argv(self, args: Sequence[str], *, home: Path | str | None = _BOUND,
             card: str | None = _BOUND) -> list[str]:
        """The arguments after ``jpki``: ``--home``/``--card`` (as bound or given), then ``args``."""
        home = self.home if home is _BOUND else home
        card = self.card if card is _BOUND else card
        return [*(["--home", str(home)] if home is not None else []),
                *(["--card", card] if card is not None else []), *map(str, args)]

    # ----------------------------------------------------------------------- in process

    def __call__(self, *args: str, home: Path | str | None = _BOUND, card: str | None = _BOUND,
                 input: str | bytes | None = None, env: Env | None = None) -> CliResult:
        """``jpki ARGS`` through :func:`jpki.cli.main` in this process.

        ``input`` is stdin (empty when ``None``: not a terminal), ``env`` overrides
        ``os.environ`` for the call (a ``None`` value unsets the variable). An exception that
        escapes ``main()`` fails the test: the CLI must never print a traceback.
        """
        from jpki.cli import main

        argv = self.argv(args, home=home, card=card)
        caught: list[BaseException] = []
        with CliRunner().isolation(input=input, env=env) as (out, err, mixed):
            try:
                code = main(argv, on_exception=caught.append)
            except BaseException as exc:  # reported as the test's failure
                raise AssertionError(f"jpki {' '.join(argv)}: {type(exc).__name__} escaped "
                                     f"jpki.cli.main (a user would see a traceback): {exc}") from exc
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            return CliResult(tuple(argv), code, out.getvalue(), err.getvalue(), mixed.getvalue(),
                             caught[-1] if caught else None)

    # ----------------------------------------------------------------------- as a process

    def command(self, args: Sequence[str], *, home: Path | str | None = _BOUND,
                card: str | None = _BOUND) -> list[str]:
        """The command line of ``python -m jpki`` (this interpreter, not a ``jpki`` on PATH)."""
        return [sys.executable, "-m", "jpki", *self.argv(args, home=home, card=card)]

    @staticmethod
    def environment(env: Env | None = None, *, inherit: bool = True) -> dict[str, str]:
        """A child's environment: this one (conftest's HOME, ``JPKI_NOW``…) unless not
        ``inherit``, ``PYTHONPATH`` at this checkout, UTF-8 streams, then ``env`` (``None``
        unsets)."""
        out = dict(os.environ) if inherit else {}
        out.update(PYTHONPATH=str(REPO), PYTHONIOENCODING="utf-8")
        for name, value in (env or {}).items():
            if value is None:
                out.pop(name, None)
            else:
                out[name] = value
        return out

    def process(self, *args: str, home: Path | str | None = _BOUND, card: str | None = _BOUND,
                input: str | bytes | None = None, env: Env | None = None, inherit_env: bool = True,
                cwd: Path | str | None = None, timeout: float = PROCESS_TIMEOUT) -> CliResult:
        """``python -m jpki ARGS`` as a child process, run to its end.

        stdin is ``input`` (``/dev/null`` when ``None``), the environment
        :meth:`environment` (``inherit_env=False``: only ``env`` and ``PYTHONPATH``), the
        working folder ``cwd`` (default: the checkout).
        """
        command = self.command(args, home=home, card=card)
        data = _bytes(input)
        done = subprocess.run(command, input=data, stdin=subprocess.DEVNULL if data is None else None,
                              capture_output=True, env=self.environment(env, inherit=inherit_env),
                              cwd=cwd or REPO, timeout=timeout, check=False)
        return CliResult(tuple(command[3:]), done.returncode, done.stdout, done.stderr,
                         done.stdout + done.stderr)

    def spawn(self, *args: str, home: Path | str | None = _BOUND, card: str | None = _BOUND,
              env: Env | None = None, cwd: Path | str | None = None,
              **popen: Any) -> subprocess.Popen[str]:
        """``python -m jpki ARGS`` started and left running (``ca serve``, ``rp serve``): the
        Popen, in text mode, stdin ``/dev/null``; ``popen`` (``stdout=``, ``stderr=``…) is
        handed to it. The caller stops it."""
        popen.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.command(args, home=home, card=card), env=self.environment(env),
                                cwd=cwd or REPO, text=True, encoding="utf-8", **popen)
