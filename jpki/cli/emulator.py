"""``jpki emulator``: serve emulated cards as PC/SC readers (pcscd + vpcd), pull them out, insert them."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import click

from ..errors import UsageError
from ..home import check_card_name
from ..transport import emu
from ._common import CARD_NAME, Ctx, pass_ctx


def _pidfile(obj: Ctx, name: str) -> Path:
    return obj.home / "run" / f"{name}.pid"


@click.group()
def emulator() -> None:
    """Serve emulated cards through pcscd + vpcd so that any PC/SC program sees them.

    \b
    Examples:
      pcscd --foreground &                       # pcscd with the vsmartcard-vpcd driver
      jpki emulator serve alice &                # reader "Virtual PCD 00 00"
      jpki --card pcsc:"Virtual PCD 00 00" info
      pkcs15-tool -D                             # OpenSC sees a JPKI card
      jpki emulator remove alice                 # pull the card out …
      jpki emulator insert alice                 # … and insert it again
      jpki emulator serve alice bob              # two cards: slots 00 and 01
    """


@emulator.command("serve")
@click.argument("names", nargs=-1, required=True)
@click.option("--vpcd", "vpcd_addr", default=f"{emu.VPCD_DEFAULT_HOST}:{emu.VPCD_DEFAULT_PORT}",
              show_default=True, help="vpcd HOST:PORT of the first card (the next card takes PORT+1)")
@click.option("-v", "--verbose", count=True, help="log connections (-v) and APDU headers (-vv)")
@pass_ctx
def serve(obj: Ctx, names: tuple[str, ...], vpcd_addr: str, verbose: int) -> None:
    """Serve emulated cards NAMES until interrupted (SIGUSR1 removes, SIGUSR2 inserts)."""
    host, _, port_text = vpcd_addr.rpartition(":")
    if not host or not port_text.isdigit():
        raise UsageError(f"--vpcd must be HOST:PORT, not {vpcd_addr!r}")
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # a NAME is a card of the home (checked: no path reaches another home); a path to a card
    # folder (with a '/') is served as it is, as `--card emu:PATH` opens one
    for n in names:
        if "/" not in n:
            check_card_name(n)
    directories = [emu.card_path(obj.home, n) for n in names]
    pidfiles = [_pidfile(obj, check_card_name(Path(n).name)) for n in names]

    def ready() -> None:
        for pf in pidfiles:
            pf.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            pf.write_text(str(os.getpid()))
        port = int(port_text)
        for i, n in enumerate(names):
            obj.note(f"serving {n} on vpcd {host}:{port + i} (reader 'Virtual PCD 00 {port + i - 35963:02d}'); "
                     f"pid {os.getpid()}")

    try:
        emu.serve_emulated_cards(directories, host, int(port_text), ready=ready)
    finally:
        for pf in pidfiles:
            if pf.exists() and pf.read_text() == str(os.getpid()):
                pf.unlink()


def _signal(obj: Ctx, name: str, signum: int) -> int:
    pf = _pidfile(obj, name)
    if not pf.exists():
        raise UsageError(f"card {name!r} is not being served (no {pf})")
    pid = int(pf.read_text())
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pf.unlink()
        raise UsageError(f"card {name!r} is not being served (stale pid {pid})") from None
    return pid


@emulator.command("remove")
@click.argument("name", type=CARD_NAME)
@pass_ctx
def remove(obj: Ctx, name: str) -> None:
    """Pull a served card out of its reader (pcscd then reports no card)."""
    pid = _signal(obj, name, signal.SIGUSR1)
    obj.emit({"card": name, "removed": True, "pid": pid}, f"{name}: removed")


@emulator.command("insert")
@click.argument("name", type=CARD_NAME)
@pass_ctx
def insert(obj: Ctx, name: str) -> None:
    """Insert a served card again."""
    pid = _signal(obj, name, signal.SIGUSR2)
    obj.emit({"card": name, "inserted": True, "pid": pid}, f"{name}: inserted")
