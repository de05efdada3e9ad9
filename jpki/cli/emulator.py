"""``jpki emulator``: serve emulated cards as PC/SC readers (pcscd + vpcd), pull them out, insert
them, inject faults into them."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

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
      jpki emulator fault alice remove-on-signature   # the next signature finds the card gone
      jpki emulator fault alice status-word 6A82 --match read-binary --times 2
      jpki emulator fault alice latency --profile contactless
      jpki emulator fault alice tear verify      # power lost mid-VERIFY (a try is spent)
      jpki emulator fault alice list             # faults set, faults fired; … clear drops them
    """


@emulator.command("serve")
@click.argument("names", nargs=-1, required=True)
@click.option("--vpcd", "vpcd_addr", default=f"{emu.VPCD_DEFAULT_HOST}:{emu.VPCD_DEFAULT_PORT}",
              show_default=True, help="vpcd HOST:PORT of the first card (the next card takes PORT+1)")
@click.option("-v", "--verbose", count=True, help="log connections (-v) and APDU headers (-vv)")
@pass_ctx
def serve(obj: Ctx, names: tuple[str, ...], vpcd_addr: str, verbose: int) -> None:
    """Serve emulated cards NAMES until interrupted (SIGUSR1 removes, SIGUSR2 inserts, SIGHUP
    applies the faults set with 'jpki emulator fault')."""
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


def _served_pid(obj: Ctx, name: str) -> int:
    pf = _pidfile(obj, name)
    if not pf.exists():
        raise UsageError(f"card {name!r} is not being served (no {pf})")
    pid = int(pf.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pf.unlink()
        raise UsageError(f"card {name!r} is not being served (stale pid {pid})") from None
    return pid


def _signal(obj: Ctx, name: str, signum: int) -> int:
    pid = _served_pid(obj, name)
    os.kill(pid, signum)
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


#: FAULT words of ``jpki emulator fault`` (the in-process verbs of card_emulator.faults, kebab-case).
FAULTS = ("remove-after", "remove-on-signature", "status-word", "latency", "tear", "reader-error",
          "list", "clear")


@emulator.command("fault")
@click.argument("name", type=CARD_NAME)
@click.argument("fault", type=click.Choice(FAULTS))
@click.argument("value", required=False)
@click.option("--match", help="status-word, reader-error: the APDUs it applies to: a command "
              "(select, read-binary, verify, change-pin, sign…), ins=XX or a hex prefix [any]")
@click.option("--times", type=click.IntRange(min=1), default=1, show_default=True,
              help="status-word, reader-error: how many matching APDUs")
@click.option("--always", is_flag=True, help="status-word, reader-error: every matching APDU until cleared")
@click.option("--profile", type=click.Choice(["contact", "contactless"]),
              help="latency: as late as a real contact / contactless card (docs/faults.md)")
@click.option("--bit-rate", type=int, help="latency: the profile at another bit rate (bit/s)")
@click.option("--before-write", is_flag=True,
              help="tear: the power fails just before the card's write (default: just after)")
@pass_ctx
def fault(obj: Ctx, name: str, fault: str, value: str | None, match: str | None, times: int,
          always: bool, profile: str | None, bit_rate: int | None, before_write: bool) -> None:
    """Inject FAULT into the served card NAME (its server applies it at once).

    \b
    FAULT and its VALUE:
      remove-after N          the card answers N more APDUs, then leaves the reader
      remove-on-signature     the next COMPUTE DIGITAL SIGNATURE finds the card leaving
      status-word SW          answer SW (4 hex digits) to the next --times APDUs --match-ing
      latency [MS]            every answer MS later and/or as late as a real card (--profile)
      tear verify|change-pin  power lost during the next VERIFY / CHANGE REFERENCE DATA
      reader-error            the reader fails the next --match-ing APDU (the card stays in)
      list                    the faults set, the faults fired, whether the card is in
      clear                   drop every fault (a card that left stays out: emulator insert)

    A card that left stays out until 'jpki emulator insert NAME'. Details: docs/faults.md.
    """
    given = {"--match": match is not None, "--times": times != 1, "--always": always,
             "--profile": profile is not None, "--bit-rate": bit_rate is not None,
             "--before-write": before_write}
    allowed = {"status-word": ("--match", "--times", "--always"),
               "reader-error": ("--match", "--times", "--always"),
               "latency": ("--profile", "--bit-rate"), "tear": ("--before-write",)}.get(fault, ())
    stray = [option for option, used in given.items() if used and option not in allowed]
    if stray:
        raise UsageError(f"{fault} takes no {' or '.join(stray)}")
    plan = emu.served_faults(emu.card_path(obj.home, name), _served_pid(obj, name))
    needs_value = {"remove-after": "N", "status-word": "SW", "tear": "verify or change-pin"}
    if fault in needs_value and value is None:
        raise UsageError(f"{fault} needs {needs_value[fault]}")
    if value is not None and fault not in (*needs_value, "latency"):
        raise UsageError(f"{fault} takes no value (got {value!r})")
    count = None if always else times
    set_fault: Any
    if fault == "list":
        listing = plan.describe()
        obj.emit({"card": name, **listing}, lambda: _listing(name, listing))
        return
    if fault == "clear":
        plan.clear()
        obj.emit({"card": name, "cleared": True}, f"{name}: faults cleared")
        return
    if fault == "remove-after":
        set_fault = plan.remove_after(_number(value, "N"))
    elif fault == "remove-on-signature":
        set_fault = plan.remove_on_signature()
    elif fault == "status-word":
        set_fault = plan.status_word(value or "", match, count)
    elif fault == "latency":
        set_fault = plan.latency(_number(value, "MS") if value is not None else None,
                                 profile=profile, bit_rate=bit_rate)
    elif fault == "tear":
        set_fault = plan.tear(value or "", after_write=not before_write)
    else:
        set_fault = plan.reader_error(match=match, times=count)
    doc = set_fault.to_json()
    obj.emit({"card": name, "fault": doc}, f"{name}: fault {set_fault.label} set: {doc['summary']}")


def _number(value: str | None, what: str) -> int:
    if value is None or not value.isdigit():
        raise UsageError(f"{what} must be a whole number, not {value!r}")
    return int(value)


def _listing(name: str, listing: dict[str, Any]) -> str:
    lines = [f"{name}: card {'in its reader' if listing['present'] else 'out of its reader'}"]
    lines += [f"  set    {f['kind']}#{f['id']}: {f['summary']}" for f in listing["faults"]] or ["  no fault set"]
    lines += [f"  fired  {f['kind']}#{f['id']}: {f['text']}" for f in listing["fired"]]
    return "\n".join(lines)
