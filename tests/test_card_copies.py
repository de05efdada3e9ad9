"""Private in-memory copies of emulated cards (jpki.transport.emu.CardCopies, what the provider's
test cards sign with): each copy is the directory's card as it is now, nothing done on a copy
reaches the directory, and a change of the directory (a renewal, a PIN reset) is seen by the
next copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from auth_support import card_session

from jpki.errors import CardStateError, NoCardError, PinIncorrectError, SecurityStatusError
from jpki.lifecycle import renew
from jpki.provision import Home
from jpki.session import JpkiSession
from jpki.transport.emu import CardCopies, reset_emulated_pin


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of a card folder with its content and mtime."""
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_copy_signs_as_the_card_and_its_pin_tries_stay_in_memory(home: Path, card_dir: Path) -> None:
    copies = CardCopies()
    with card_session(home) as session:
        certificate = session.read_certificate("auth")
    before = snapshot(card_dir)
    with copies.open(card_dir) as transport:
        copy = JpkiSession(transport)
        assert copy.read_certificate("auth") == certificate
        with pytest.raises(PinIncorrectError) as wrong:
            copy.verify("auth", "0000")
        assert wrong.value.tries_left == 2 and copy.tries_left("auth") == 2
        copy.verify("auth", "1234")
        assert len(copy.sign("auth", b"\x00" * 51)) == 256
    with copies.open(card_dir) as transport:   # the next copy starts where the directory is
        assert JpkiSession(transport).tries_left("auth") == 3
    assert snapshot(card_dir) == before          # nothing written, not even the lock file's time
    with card_session(home) as session:
        assert session.tries_left("auth") == 3


def test_a_change_of_the_directory_is_seen_by_the_next_copy(home: Path, card_dir: Path, clock) -> None:
    copies = CardCopies()
    with copies.open(card_dir) as transport:
        old = JpkiSession(transport).read_certificate("auth")
    renew(Home(home), "alice", clock=clock)              # new keys and certificates
    with copies.open(card_dir) as transport, card_session(home) as session:
        renewed = JpkiSession(transport).read_certificate("auth")
        assert renewed != old and renewed == session.read_certificate("auth")
    reset_emulated_pin(card_dir, "auth", "9876")          # the municipal office's reset
    with copies.open(card_dir) as transport:
        copy = JpkiSession(transport)
        with pytest.raises(PinIncorrectError):
            copy.verify("auth", "1234")
        copy.verify("auth", "9876")


def test_a_damaged_or_missing_card_is_refused(home: Path, card_dir: Path) -> None:
    copies = CardCopies()
    with copies.open(card_dir):
        pass
    state = card_dir / "state.json"
    state.write_text('{"format": 1, "pins": {"auth": {"remaining": -1}}}')
    os.utime(state, ns=(1, 1))   # a different version even on a coarse clock
    with pytest.raises(CardStateError) as damaged:
        copies.open(card_dir)
    assert "state.json" in str(damaged.value)
    with pytest.raises(NoCardError):
        copies.open(home / "cards" / "nobody")


def test_copies_open_at_once_are_independent(card_dir: Path) -> None:
    copies = CardCopies()
    with copies.open(card_dir) as first, copies.open(card_dir) as second:
        one, two = JpkiSession(first), JpkiSession(second)
        one.verify("auth", "1234")
        with pytest.raises(PinIncorrectError):
            two.verify("auth", "0000")
        assert one.tries_left("auth") == 3 and two.tries_left("auth") == 2
        assert len(one.sign("auth", b"\x00" * 51)) == 256
        with pytest.raises(SecurityStatusError):    # the other copy's verified PIN is not this one's
            two.sign("auth", b"\x00" * 51)
