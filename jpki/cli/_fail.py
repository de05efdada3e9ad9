"""The CLI's error policy, in one place: what a failure prints, with which code and exit code.

Library exceptions carry data (``code``, ``tries_left``, ``pin``, ``sw``, ``reason``), neither an
exit code nor wording for the terminal; :func:`fail_for` turns one into a :class:`CliFail` (exit
code from :data:`EXIT_CODES`, the table of this module alone), the one exception
``main()`` catches (as ykman's ``CliFail``). A command that has its own failure to report (a
document that did not verify, a refused login) raises a CliFail itself, through
``Ctx.fail``. ``main()`` then prints:

- on stderr ``error: MESSAGE`` and, when there is one, ``hint: HINT`` (never a traceback);
- with ``--json``, exactly one JSON document on stdout: the command's own document if it
  printed one, else ``{"ok": false, "error": CODE, "message": …, "hint": …, …data}``;

and exits with the code of :data:`EXIT_CODES`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from ..errors import JpkiError
from ..pins import PINS

#: Exit codes of ``jpki`` (documented in the README).
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INVALID, EXIT_PIN, EXIT_NO_CARD = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130

#: Exit code by exception class, through the class's stable ``code``: an exception takes the entry
#: of the first class of its MRO whose ``code`` is listed (``pin_incorrect`` → ``pin`` → 4,
#: ``ca_exists`` → ``usage`` → 2); any other error exits 1. Keyed by code rather than by class
#: object so that the table imports none of the modules that define them (``jpki.auth``,
#: ``jpki.serving``…): a failing ``jpki pin verify`` does not load the relying party.
EXIT_CODES: dict[str, int] = {
    "usage": EXIT_USAGE,
    "port_in_use": EXIT_ERROR,  # a UsageError (choose another --port), documented as exit 1
    "transport": EXIT_NO_CARD,
    "pin": EXIT_PIN,
    "pin_not_verified": EXIT_PIN,
    "verification_failed": EXIT_INVALID,
    "script_mismatch": EXIT_INVALID,  # jpki apdu --script: an answer other than the script's
    "challenge_refused": EXIT_INVALID,
    "malformed_message": EXIT_INVALID,
    "refused": EXIT_INVALID,
}

#: Data attributes of an exception copied into its JSON document (``sw`` as 4 hex digits).
_DATA_ATTRIBUTES = ("reason", "pin", "tries_left", "sw", "status", "path", "line", "pcsc_code")


class CliFail(Exception):
    """A command failed: ``message`` (one line), a stable ``code``, the process ``exit_code``,
    an optional ``hint`` (how to fix it) and ``data`` for the JSON document."""

    def __init__(self, message: str, *, code: str = "error", exit_code: int = EXIT_ERROR,
                 hint: str | None = None, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.exit_code = exit_code
        self.hint = hint
        self.data = dict(data or {})

    def to_json(self) -> dict[str, Any]:
        """The error document: ``{"ok": false, "error": CODE, "message": …, "hint": …, …}``."""
        return {"ok": False, "error": self.code, "message": self.message,
                **({"hint": self.hint} if self.hint else {}), **self.data}

    def lines(self) -> list[str]:
        """What goes to stderr: the error, then the hint."""
        return [f"error: {self.message}", *([f"hint: {self.hint}"] if self.hint else [])]


def exit_code_for(exc: JpkiError) -> int:
    """The exit code of a library error (:data:`EXIT_CODES` along its class's MRO)."""
    for cls in type(exc).__mro__:
        code = cls.__dict__.get("code")
        if isinstance(code, str) and code in EXIT_CODES:
            return EXIT_CODES[code]
    return EXIT_ERROR


def _card_name(card_uri: str | None) -> str | None:
    """NAME of an ``emu:NAME`` card URI (not of an ``emu:PATH``)."""
    if card_uri and card_uri.startswith("emu:"):
        name = card_uri[4:]
        if name and "/" not in name and not name.startswith("."):
            return name
    return None


def unblock_hint(pin: str | None, card_uri: str | None) -> str:
    """How a blocked PIN is reset: at the municipal office, or ``jpki card reset-pin``."""
    kind = pin or "auth"
    name = _card_name(card_uri)
    if name is not None:
        return (f"the municipal office resets it; for this emulated card: "
                f"jpki card reset-pin {name} {kind}")
    return f"the municipal office resets it; for an emulated card: jpki card reset-pin NAME {kind}"


def pin_name(pin: str | None) -> str:
    """What PIN ``pin`` is called in messages (jpki.pins), or just "PIN"."""
    spec = PINS.get(pin or "")
    return spec.name if spec is not None else "PIN"


def _tries(n: int) -> str:
    return f"{n} try left" if n == 1 else f"{n} tries left"


def _data(exc: BaseException) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _DATA_ATTRIBUTES:
        value = getattr(exc, name, None)
        if value is None:
            continue
        if name == "sw" and isinstance(value, int):
            value = f"{value:04X}"
        elif name == "pcsc_code" and isinstance(value, int):
            value = f"0x{value:08X}"
        elif isinstance(value, Path):
            value = str(value)
        out[name] = value
    return out


def fail_for(exc: JpkiError, card_uri: str | None = None) -> CliFail:
    """The CliFail for a library error: its code and data, the CLI's wording and hint."""
    from ..errors import (
        CardRemovedError,
        InvalidNameError,
        NoCardError,
        NoReaderError,
        PinBlockedError,
        PinIncorrectError,
        SecurityStatusError,
    )
    from ..home import UnusableHomeError

    message, hint = str(exc), None
    if isinstance(exc, PinIncorrectError):
        if exc.tries_left == 0:
            message = f"{pin_name(exc.pin)}: wrong, now blocked"
            hint = unblock_hint(exc.pin, card_uri)
        else:
            message = f"{pin_name(exc.pin)}: wrong, {_tries(exc.tries_left)}"
    elif isinstance(exc, PinBlockedError):
        message = f"{pin_name(exc.pin)}: blocked"
        hint = unblock_hint(exc.pin, card_uri)
    elif isinstance(exc, SecurityStatusError) and exc.pin is not None:
        message = f"{pin_name(exc.pin)}: not verified ({exc})"
    elif isinstance(exc, InvalidNameError):
        hint = "'jpki card list' shows the cards of this home"
    elif isinstance(exc, UnusableHomeError):
        hint = "give a folder with --home DIR or $JPKI_HOME (unset, the home is ~/.jpki)"
    elif isinstance(exc, NoReaderError):
        hint = "connect a reader (and start pcscd), or use an emulated card: --card emu:NAME"
    elif isinstance(exc, CardRemovedError):
        hint = ("put the card back and run the command again (a card that left forgets its "
                "verified PINs)")
    elif isinstance(exc, NoCardError) and not (card_uri or "").startswith("emu:"):
        hint = "insert the card (--wait SECONDS waits for it)"
    elif isinstance(exc, NoCardError):
        hint = "'jpki card list' shows the emulated cards; 'jpki card create NAME' makes one"
    code = getattr(exc, "code", None) or "error"
    if code == "refused" and not 400 <= int(getattr(exc, "status", 400) or 400) < 500:
        exit_code = EXIT_ERROR  # a service that failed (5xx) did not refuse: it is an error
    else:
        exit_code = exit_code_for(exc)
    return CliFail(message, code=code, exit_code=exit_code, hint=hint, data=_data(exc))


def fail_for_os_error(exc: OSError, home: Path | None = None) -> CliFail:
    """One line for an OSError nothing else caught (a home on a read-only disk, a full disk…)."""
    name = errno.errorcode.get(exc.errno or 0)
    where = exc.filename if exc.filename is not None else None
    what = exc.strerror or str(exc)
    message = f"{where}: {what}" if where is not None else what
    if name:
        message += f" ({name})"
    hint = None
    if home is not None and where is not None:
        try:
            inside = Path(os.fspath(where)).resolve().is_relative_to(Path(home).expanduser().resolve())
        except (OSError, ValueError, TypeError):
            inside = False
        if inside or exc.errno in (errno.ENAMETOOLONG, errno.ENOTDIR, errno.EROFS):
            hint = (f"the jpki home {home} must be a writable folder: give another with "
                    "--home DIR or $JPKI_HOME")
    if hint is None and exc.errno == errno.ENOSPC:
        hint = "free some disk space and run the command again"
    return CliFail(message, code="os_error", exit_code=EXIT_ERROR, hint=hint,
                   data={"errno": name, **({"path": os.fspath(where)} if where is not None else {})})
