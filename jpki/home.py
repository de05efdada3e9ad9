"""A jpki home: where the test CA, the emulated cards and the holders' records live.

    HOME/ca/            the test CA (keys 0600, certificates, SQLite database)
    HOME/cards/NAME/    the emulated card (the emulator's own format, every file 0600)
    HOME/holders/NAME.json  what the municipality knows: persona, security code (0600)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .clock import Clock, SystemClock
from .errors import InvalidNameError, UsageError
from .transport import emu

#: PINs of a card made by ``jpki card create`` unless others are given.
DEFAULT_AUTH_PIN = "1234"
DEFAULT_SIGN_PIN = "ABC123"
#: Real cards are issued with the card-info PIN equal to the auth PIN (separate counters).
DEFAULT_CARD_PIN = DEFAULT_AUTH_PIN

if TYPE_CHECKING:
    from .pki import TestCA

#: What a card name may be: it names a folder under HOME/cards, a file under HOME/holders and
#: the emulated card of ``emu:NAME``, so no path separator, no dot, nothing a shell mangles.
CARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

#: Longest path a home may have: room is left for the files it holds (PATH_MAX is 4096).
MAX_HOME_PATH = 3800
#: Longest name of one folder on the way (NAME_MAX of every common file system).
MAX_NAME = 255


def check_card_name(name: str) -> str:
    """``name`` if it is a card name (:data:`CARD_NAME`), else InvalidNameError.

    The one check every command and :class:`Home` apply before a name becomes a path, so that
    ``../../other-home/cards/dave`` can never reach another home's card.
    """
    if not isinstance(name, str) or not CARD_NAME.fullmatch(name):
        raise InvalidNameError(name if isinstance(name, str) else repr(name))
    return name


class UnusableHomeError(UsageError):
    """The home path cannot be a home: it is a file, empty, or too long. ``path`` and
    ``problem`` say which."""

    code = "unusable_home"

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"jpki home {path!r}: {problem}" if path else f"jpki home: {problem}")


def check_home_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path if it can be a home (it need not exist yet), else UnusableHomeError.

    Refuses an empty path (it would silently be the current folder), an existing file, and a
    path or folder name longer than the file system takes. Whether it is writable is learnt when
    something is written (the CLI turns that OSError into a one-line error).
    """
    text = os.fspath(path)
    if not text.strip():
        raise UnusableHomeError("", "the path is empty")
    expanded = Path(text).expanduser()
    if len(os.fsencode(expanded)) > MAX_HOME_PATH:
        raise UnusableHomeError(text[:60] + "…", f"the path is longer than {MAX_HOME_PATH} bytes")
    if any(len(os.fsencode(part)) > MAX_NAME for part in expanded.parts):
        raise UnusableHomeError(text[:60] + "…", f"a folder name is longer than {MAX_NAME} bytes")
    if expanded.exists() and not expanded.is_dir():
        raise UnusableHomeError(text, "it is a file, not a folder")
    return expanded


@dataclass(frozen=True)
class Home:
    path: Path
    #: the clock the CA and the life events of this home use unless given another
    clock: Clock = field(default_factory=SystemClock, compare=False, repr=False)

    @property
    def ca_dir(self) -> Path:
        return self.path / "ca"

    @property
    def cards_dir(self) -> Path:
        return emu.cards_dir(self.path)

    def card_dir(self, name: str) -> Path:
        """HOME/cards/NAME (InvalidNameError unless NAME is a card name)."""
        return self.cards_dir / check_card_name(name)

    def holder_file(self, name: str) -> Path:
        """HOME/holders/NAME.json (InvalidNameError unless NAME is a card name)."""
        return self.path / "holders" / f"{check_card_name(name)}.json"

    def has_card(self, name: str) -> bool:
        """True when an emulated card NAME exists in this home (InvalidNameError for a bad name)."""
        return (self.card_dir(name) / "card.json").is_file()

    def open_ca(self, clock: Clock | None = None) -> TestCA:
        from .pki import CANotFoundError, TestCA

        try:
            return TestCA.open(self.ca_dir, clock=clock or self.clock)
        except CANotFoundError:
            raise UsageError(f"no test CA in {self.ca_dir}: run 'jpki ca init' first") from None

    def card_names(self) -> list[str]:
        if not self.cards_dir.is_dir():
            return []
        return sorted(p.name for p in self.cards_dir.iterdir()
                      if CARD_NAME.fullmatch(p.name) and (p / "card.json").is_file())
