"""A jpki home: where the test CA, the emulated cards and the holders' records live.

    HOME/ca/            the test CA (keys 0600, certificates, SQLite database)
    HOME/cards/NAME/    the emulated card (the emulator's own format, every file 0600)
    HOME/holders/NAME.json  what the municipality knows: persona, security code (0600)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .clock import Clock, SystemClock
from .errors import UsageError
from .transport import emu

#: PINs of a card made by ``jpki card create`` unless others are given.
DEFAULT_AUTH_PIN = "1234"
DEFAULT_SIGN_PIN = "ABC123"
#: Real cards are issued with the card-info PIN equal to the auth PIN (separate counters).
DEFAULT_CARD_PIN = DEFAULT_AUTH_PIN

if TYPE_CHECKING:
    from .pki import TestCA


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
        return self.cards_dir / name

    def holder_file(self, name: str) -> Path:
        return self.path / "holders" / f"{name}.json"

    def open_ca(self, clock: Clock | None = None) -> TestCA:
        from .pki import CANotFoundError, TestCA

        try:
            return TestCA.open(self.ca_dir, clock=clock or self.clock)
        except CANotFoundError:
            raise UsageError(f"no test CA in {self.ca_dir}: run 'jpki ca init' first") from None

    def card_names(self) -> list[str]:
        if not self.cards_dir.is_dir():
            return []
        return sorted(p.name for p in self.cards_dir.iterdir() if (p / "card.json").is_file())
