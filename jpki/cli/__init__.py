"""The ``jpki`` command line. Exit codes: 0 ok, 1 error, 2 usage, 3 verification failed, 4 PIN,
5 no reader or card; the error codes and their wording live in :mod:`jpki.cli._fail`."""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import click

from ..errors import JpkiError, UsageError
from ._common import Ctx, environment_clock, home_from
from ._fail import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, CliFail, fail_for, fail_for_os_error

#: command name -> (module in jpki.cli, attribute). Modules are imported only when their command
#: runs (or for --help), so that ``jpki sign`` does not pay for the CA, the servers or pyHanko.
COMMANDS: dict[str, tuple[str, str]] = {
    "ca": ("admin", "ca"), "card": ("admin", "card"), "emulator": ("emulator", "emulator"),
    "readers": ("host", "readers"), "info": ("host", "info"), "pin": ("host", "pin"),
    "cert": ("host", "cert"), "mynumber": ("host", "mynumber"), "attrs": ("host", "attrs"),
    "pkey": ("host", "pkey"), "apdu": ("host", "apdu"), "visual": ("visual", "visual"),
    "sign": ("documents", "sign"), "verify": ("documents", "verify"),
    "rp": ("auth", "rp"), "login": ("auth", "login_command"), "ekyc": ("auth", "ekyc_command"),
    "demo": ("demo", "demo"), "idp": ("idp", "idp"), "agent": ("agent", "agent_command"),
    "tsa": ("tsa", "tsa"),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attr = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(),
              help="where the test CA and emulated cards live [env JPKI_HOME; default ~/.jpki]")
@click.option("--card", "card_uri", envvar="JPKI_CARD", default="pcsc", show_default=True,
              help="card URI: emu:NAME, pcsc or pcsc:READER [env JPKI_CARD]")
@click.option("--json", "as_json", is_flag=True, help="print exactly one JSON document")
@click.option("--trace", is_flag=True, help="print APDUs on stderr (PINs and personal data redacted)")
@click.option("--force", is_flag=True, help="do not ask before spending a PIN try on a card in a reader")
@click.option("--wait", type=float, default=0, help="seconds to wait for a card in the reader")
@click.option("--exclusive", is_flag=True, help="hold the PC/SC reader exclusively for the command")
@click.option("--record", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="write the command's APDUs to FILE as a script that replays as a test "
                   "(jpki apdu --script; PINs and personal data masked)")
@click.version_option(package_name="jpki")
@click.pass_context
def cli(ctx: click.Context, home: str | None, card_uri: str, as_json: bool, trace: bool,
        force: bool, wait: float, exclusive: bool, record: Path | None) -> None:
    """My Number Card (個人番号カード) and JPKI: a real or emulated card, a test CA, signatures.

    \b
    Examples:
      jpki demo                                   # everything, on a throw-away home
      jpki ca init && jpki card create alice
      jpki --card emu:alice info
      JPKI_CARD=pcsc jpki cert read auth -o auth.der
      jpki --record info.apdu info && jpki apdu --script info.apdu
    """
    seen = ctx.obj
    if record is not None and not record.parent.is_dir():
        raise UsageError(f"--record {record}: no folder {record.parent}")
    obj = ctx.obj = Ctx(home=home_from(home), card_uri=card_uri, json=as_json, trace=trace,
                        force=force, wait=wait, exclusive=exclusive, clock=environment_clock(),
                        record=record)
    if isinstance(seen, _Seen):
        seen.obj = ctx.obj
    if record is not None:
        def nothing_recorded() -> None:
            if obj.recorder is None and ctx.invoked_subcommand is not None:
                obj.warn(f"--record: 'jpki {ctx.invoked_subcommand}' talked to no card; {record} not written")
        ctx.call_on_close(nothing_recorded)


class _Seen:
    """Hands the command's Ctx back to main() (click drops its context when a command fails)."""

    obj: Ctx | None = None


def _wants_json(args: list[str]) -> bool:
    """--json among the arguments (before a ``--``): the answer main() gives when the command
    line could not even be parsed."""
    return "--json" in (args[:args.index("--")] if "--" in args else args)


def _print_failure(fail: CliFail, as_json: bool, emitted: bool) -> int:
    """stderr gets the error (and hint); with --json, stdout gets the one error document unless
    the command printed its own."""
    if as_json and not emitted:
        click.echo(json.dumps(fail.to_json(), ensure_ascii=False, indent=2, default=str))
    for line in fail.lines():
        click.echo(line, err=True)
    return fail.exit_code


def _click_failure(exc: click.ClickException) -> CliFail:
    if isinstance(exc, click.UsageError):
        command = exc.ctx.command_path if exc.ctx is not None else "jpki"
        return CliFail(exc.format_message(), code="usage", exit_code=EXIT_USAGE,
                       hint=f"'{command} --help' shows the usage")
    return CliFail(exc.format_message(), code="error", exit_code=exc.exit_code)


def main(argv: list[str] | None = None, *,
         on_exception: Callable[[BaseException], None] | None = None) -> int:
    """Entry point: run the CLI, turn every failure into a message and an exit code.

    Never a traceback: library errors (JpkiError) and the commands' CliFail are mapped by
    :mod:`jpki.cli._fail`, click's usage errors exit 2, an OSError nothing else caught is one
    line with its errno name, anything else an ``internal`` error (``JPKI_DEBUG=1`` prints
    the traceback too).

    ``on_exception`` is called with the exception the command raised, before it is mapped:
    the mapping keeps its data but not its class, and the tests' in-process runner
    (``tests/cli_support.py``) checks the class. It changes nothing of what main() does.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    seen = _Seen()
    as_json = _wants_json(args)

    def report(fail: CliFail) -> int:
        obj = seen.obj
        return _print_failure(fail, obj.json if obj is not None else as_json,
                              obj.emitted if obj is not None else False)

    try:
        try:
            rc = cli.main(args=args, prog_name="jpki", standalone_mode=False, obj=seen)
        except BaseException as exc:
            if on_exception is not None:
                on_exception(exc)
            raise  # to the handlers below
        return rc if isinstance(rc, int) else 0
    except CliFail as failure:
        return report(failure)
    except JpkiError as exc:
        return report(fail_for(exc, seen.obj.card_uri if seen.obj is not None else None))
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            return report(CliFail("interrupted", code="interrupted", exit_code=EXIT_INTERRUPTED))
        return report(CliFail("aborted", code="aborted", exit_code=EXIT_ERROR))
    except click.UsageError as exc:
        usage = _click_failure(exc)
        if as_json or (seen.obj is not None and seen.obj.json):
            click.echo(json.dumps(usage.to_json(), ensure_ascii=False, indent=2))
        exc.show()  # click's own "Usage: … Error: …" on stderr
        return usage.exit_code
    except click.ClickException as exc:
        return report(_click_failure(exc))
    except KeyboardInterrupt:
        return report(CliFail("interrupted", code="interrupted", exit_code=EXIT_INTERRUPTED))
    except OSError as exc:
        return report(fail_for_os_error(exc, seen.obj.home if seen.obj is not None else None))
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, never a traceback
        if os.environ.get("JPKI_DEBUG"):
            traceback.print_exc()
        return report(CliFail(f"internal error: {type(exc).__name__}: {exc}", code="internal",
                              exit_code=EXIT_ERROR,
                              hint="this is a bug in jpki: please report it with the output of "
                                   "JPKI_DEBUG=1 and the same command"))
