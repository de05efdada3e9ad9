"""The ``jpki`` command line. Exit codes: 0 ok, 1 error, 2 usage, 3 verification failed, 4 PIN,
5 no reader or card."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

import importlib

from ..errors import JpkiError
from ._common import Ctx, default_home, environment_clock

#: command name -> (module in jpki.cli, attribute). Modules are imported only when their command
#: runs (or for --help), so that ``jpki sign`` does not pay for the CA, the servers or pyHanko.
COMMANDS: dict[str, tuple[str, str]] = {
    "ca": ("admin", "ca"), "card": ("admin", "card"), "emulator": ("emulator", "emulator"),
    "readers": ("host", "readers"), "info": ("host", "info"), "pin": ("host", "pin"),
    "cert": ("host", "cert"), "mynumber": ("host", "mynumber"), "attrs": ("host", "attrs"),
    "pkey": ("host", "pkey"), "apdu": ("host", "apdu"),
    "sign": ("documents", "sign"), "verify": ("documents", "verify"),
    "rp": ("auth", "rp"), "login": ("auth", "login_command"), "ekyc": ("auth", "ekyc_command"),
    "demo": ("demo", "demo"),
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
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar="JPKI_HOME",
              help="where the test CA and emulated cards live [env JPKI_HOME; default ~/.jpki]")
@click.option("--card", "card_uri", envvar="JPKI_CARD", default="pcsc", show_default=True,
              help="card URI: emu:NAME, pcsc or pcsc:READER [env JPKI_CARD]")
@click.option("--json", "as_json", is_flag=True, help="print exactly one JSON document")
@click.option("--trace", is_flag=True, help="print APDUs on stderr (PINs and personal data redacted)")
@click.option("--force", is_flag=True, help="do not ask before spending a PIN try on a card in a reader")
@click.option("--wait", type=float, default=0, help="seconds to wait for a card in the reader")
@click.option("--exclusive", is_flag=True, help="hold the PC/SC reader exclusively for the command")
@click.version_option(package_name="jpki")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, card_uri: str, as_json: bool, trace: bool,
        force: bool, wait: float, exclusive: bool) -> None:
    """My Number Card (個人番号カード) and JPKI: a real or emulated card, a test CA, signatures.

    \b
    Examples:
      jpki demo                                   # everything, on a throw-away home
      jpki ca init && jpki card create alice
      jpki --card emu:alice info
      JPKI_CARD=pcsc jpki cert read auth -o auth.der
    """
    ctx.obj = Ctx(home=home or default_home(), card_uri=card_uri, json=as_json, trace=trace,
                  force=force, wait=wait, exclusive=exclusive, clock=environment_clock())



def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turn library errors into messages and exit codes."""
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    try:
        rc = cli.main(args=argv, prog_name="jpki", standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except JpkiError as exc:
        if as_json and not getattr(exc, "reported", False):
            click.echo(json.dumps({"ok": False, "error": type(exc).__name__, "message": str(exc),
                                   **({"reason": exc.reason} if hasattr(exc, "reason") else {}),
                                   **({"tries_left": exc.tries_left} if hasattr(exc, "tries_left") else {}),
                                   **({"sw": f"{exc.sw:04X}"} if hasattr(exc, "sw") else {})},
                                  ensure_ascii=False))
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
