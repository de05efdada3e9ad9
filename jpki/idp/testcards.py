"""Test cards (``jpki idp serve --test-cards``): the sandbox's テストカード代替機能, scriptable.

A relying party's CI chooses an emulated card of the provider's home and an outcome; the card
does what a card holder would do, for real, through the client side of :mod:`jpki.auth`
(:func:`jpki.auth.client.answer_login` / :func:`~jpki.auth.client.answer_ekyc` /
:func:`~jpki.auth.client.answer_sign_transaction` over an ``emu:`` transport), and the
provider checks the answer exactly as it checks an agent's. No outcome is faked inside the
provider:

``success``
    the card signs the challenge with the right PIN (the home's default PINs, ``1234`` and
    ``ABC123``, or ``pin`` when given); the provider verifies it (revocation included).
``wrong_pin`` / ``blocked_pin``
    the card is given a wrong PIN (once; or until the PIN blocks, then the right one): the
    card answers "wrong, N tries left" or "blocked", and the card holder's side gives up
    (``wrong-pin``, ``pin-blocked``).
``revoked``
    a card whose certificates the test CA has revoked: a twin of the chosen card (same
    persona) is issued once and reported lost (keyCompromise), then it signs; the provider's
    revocation check (OCSP, CRL fallback) refuses it (``revoked``). Needs ``--revocation ocsp``
    or ``crl`` (with ``none`` the outcome is refused rather than passing as a success). The twins
    live in ``HOME/idp/test-cards`` (not among ``jpki card list``); the test CA lists their
    certificates as cards ``NAME-revoked``.
``expired``
    the card signs for real and the provider validates its certificate at a time just after
    the certificate's notAfter (the challenge itself is checked at the real time), so the
    refusal is the validator's own ``expired-certificate``. Chosen over a card made expired:
    the test CA cannot issue a certificate that ended before it existed, and a fresh CA is
    the common case in CI.
``cancel``
    the card holder cancels (``cancelled``).

Every outcome works on a private copy of the card in memory
(:class:`jpki.transport.emu.CardCopies`: the card folder is read once, and again when it
changes), so a wrong or blocking PIN never touches the home's card, tests stay repeatable, and
an authentication costs no disk work. This is the one module of :mod:`jpki.idp`
that drives cards; :mod:`jpki.idp.app` imports it only in test-card mode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from cryptography import x509

from jpki.auth.client import answer_ekyc, answer_login, answer_sign_transaction
from jpki.auth.rp import RelyingParty
from jpki.auth.store import Challenge
from jpki.errors import PinBlockedError, PinIncorrectError, UsageError
from jpki.home import DEFAULT_AUTH_PIN, DEFAULT_SIGN_PIN, Home, check_card_name
from jpki.idp.pages import OUTCOMES
from jpki.idp.pending import PendingAuthorization, PendingState, StateError
from jpki.idp.provider import PendingNotFoundError, Provider
from jpki.lifecycle import lost
from jpki.pins import PINS
from jpki.provision import create_card, read_holder
from jpki.session import JpkiSession
from jpki.transport.emu import CardCopies
from jpki.verify import ValidationResult

__all__ = ["SHADOW_DIR", "TestCards"]

#: Where the twins of the "revoked" outcome live, under the home.
SHADOW_DIR: Final = Path("idp") / "test-cards"
_DEFAULT_PINS: Final = {"auth": DEFAULT_AUTH_PIN, "sign": DEFAULT_SIGN_PIN}
_WRONG_PINS: Final = {"auth": ("0000", "9999"), "sign": ("WRONG000", "WRONG999")}

#: Makes the card's answer for a pending authorization: (session, pending, PIN) → answer document.
Answerer = Callable[[JpkiSession, PendingAuthorization, str], Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class _ShadowHome(Home):
    """A home whose cards live apart (HOME/idp/test-cards) but whose CA is the real home's."""

    ca_home: Path = Path(".")

    @property
    def ca_dir(self) -> Path:
        return self.ca_home / "ca"


class _ValidateAfterExpiry(RelyingParty):
    """The provider's relying party, validating certificates one second after their notAfter."""

    def _validate(self, der: bytes, kind: str, now: _dt.datetime) -> ValidationResult:
        try:
            end = x509.load_der_x509_certificate(der).not_valid_after_utc
        except ValueError:
            return super()._validate(der, kind, now)
        return super()._validate(der, kind, max(now, end + _dt.timedelta(seconds=1)))


#: Seconds a listing of the test cards is reused while the cards folder looks unchanged (a card
#: made in place, without a rename, changes only its own folder).
_CARDS_MAX_AGE: Final = 2.0


class TestCards:
    """The test-card plug-in of a provider (see the module docstring)."""

    __test__ = False  # not a pytest class

    def __init__(self, provider: Provider, home: Path | str) -> None:
        self.provider = provider
        self.home = Home(Path(home).expanduser(), clock=provider.clock)
        self.shadow = _ShadowHome(self.home.path / SHADOW_DIR, clock=provider.clock, ca_home=self.home.path)
        self._lock = threading.Lock()
        self._copies = CardCopies()
        self._cards_dir = self.home.cards_dir
        self._card_list: tuple[tuple[int, int], float, tuple[str, ...]] | None = None
        rp = provider.rp
        self._after_expiry = _ValidateAfterExpiry(
            rp.rp_id, rp.validator, rp.store, rp.clock, challenge_ttl=rp.challenge_ttl,
            account_resolver=rp.account_resolver, revocation_max_age=rp.revocation_max_age, purge_interval=None)
        #: How each card action answers (a plug-in adds its own, e.g. ``sign``).
        self.answerers: dict[str, Answerer] = {"login": self._answer_login, "ekyc": self._answer_ekyc,
                                               "sign": self._answer_sign}

    def cards(self) -> list[str]:
        """The emulated cards of the home (every authorization page lists them): read again when
        the cards folder changed, and at least every :data:`_CARDS_MAX_AGE` seconds."""
        try:
            found = os.stat(self._cards_dir)
            stamp = (found.st_mtime_ns, found.st_nlink)   # the link count: two changes in one mtime tick
        except OSError:
            stamp = (-1, -1)
        now = time.monotonic()
        with self._lock:
            if self._card_list is None or stamp != self._card_list[0] or now > self._card_list[1]:
                self._card_list = (stamp, now + _CARDS_MAX_AGE, tuple(self.home.card_names()))
            return list(self._card_list[2])

    # ------------------------------------------------------------------ answers

    @staticmethod
    def _answer_login(session: JpkiSession, pending: PendingAuthorization, pin: str) -> Mapping[str, Any]:
        return answer_login(Challenge.from_json(pending.data), session, pin=lambda: pin).to_json()

    def _answer_ekyc(self, session: JpkiSession, pending: PendingAuthorization, pin: str) -> Mapping[str, Any]:
        return answer_ekyc(Challenge.from_json(pending.data), session, pin=lambda: pin,
                           clock=self.provider.clock).to_json()

    def _answer_sign(self, session: JpkiSession, pending: PendingAuthorization, pin: str) -> Mapping[str, Any]:
        # Exactly what an agent does: read the pending document, sign its DigestInfo with the
        # signing key (the signature password), answer with the signature and the certificate.
        return answer_sign_transaction(session, self.provider.pending_document(pending), pin,
                                       clock=self.provider.clock)

    # ------------------------------------------------------------------ cards

    @contextlib.contextmanager
    def _session(self, directory: Path) -> Iterator[JpkiSession]:
        """A session on a private copy in memory of the card folder ``directory``."""
        with self._copies.open(directory) as transport:
            yield JpkiSession(transport)

    def _revoked_twin(self, card: str) -> Path:
        """The folder of ``card``'s revoked twin, issued and reported lost on first use."""
        name = f"{card[:56]}-revoked"
        self.shadow.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._lock, open(self.shadow.path / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # other workers of the provider
            if not self.shadow.has_card(name):
                persona = read_holder(self.home, card).persona
                create_card(self.shadow, name, persona, clock=self.provider.clock)
                lost(self.shadow, name, clock=self.provider.clock)
        return self.shadow.card_dir(name)

    # ------------------------------------------------------------------ the outcomes

    def authenticate(self, pending_id: str, card: str, outcome: str, pin: str | None = None) -> PendingAuthorization:
        """Play ``outcome`` with the test card ``card`` on a pending authorization; returns it
        decided. :class:`UsageError` for an unknown card or outcome (nothing decided);
        :class:`~jpki.idp.provider.PendingNotFoundError`, :class:`~jpki.idp.pending.StateError`."""
        if outcome not in OUTCOMES:
            raise UsageError(f"unknown outcome {outcome!r}: one of {', '.join(OUTCOMES)}")
        check_card_name(card)
        if not self.home.has_card(card):
            raise UsageError(f"no test card {card!r} in the provider's home (see GET /api/test-cards)")
        pending = self.provider.pending(pending_id)
        if pending is None:
            raise PendingNotFoundError("no such pending authorization (unknown, finished or expired)")
        if pending.status is not PendingState.PENDING:
            raise StateError(pending.status, PendingState.APPROVED)
        answerer = self.answerers.get(pending.action)
        action = self.provider.actions.get(pending.action)
        if answerer is None or action is None:
            raise UsageError(f"test cards cannot answer a {pending.action} authorization")
        if outcome == "cancel":
            return self.provider.cancel(pending_id, "cancelled")
        if outcome == "revoked" and self.provider.config.revocation == "none":
            raise UsageError("the revoked outcome needs revocation checking: serve with --revocation ocsp or crl")
        kind = action.pin
        right = pin or _DEFAULT_PINS.get(kind, "")
        directory = self._revoked_twin(card) if outcome == "revoked" else self.home.card_dir(card)
        label = PINS[kind].name if kind in PINS else "PIN"
        with self._session(directory) as session:
            if outcome in ("wrong_pin", "blocked_pin"):
                return self._wrong_pin(session, pending_id, kind, right, label, block=outcome == "blocked_pin")
            try:
                answer = answerer(session, pending, right)
            except PinIncorrectError as exc:
                return self.provider.cancel(pending_id, "wrong-pin", f"the test card {card} does not take the "
                                            f"{label} given ({exc.tries_left} tries left): pass its pin")
            except PinBlockedError:
                return self.provider.cancel(pending_id, "pin-blocked", f"the {label} of test card {card} is blocked")
        rp = self._after_expiry if outcome == "expired" else None
        return self.provider.complete(pending_id, answer, relying_party=rp, loaded=pending)

    def _wrong_pin(self, session: JpkiSession, pending_id: str, kind: str, right: str, label: str, *,
                   block: bool) -> PendingAuthorization:
        wrong = next(w for w in _WRONG_PINS.get(kind, ("0000", "9999")) if w != right)
        tries = None
        for _ in range(16 if block else 1):
            try:
                session.verify(kind, wrong)
            except PinIncorrectError as exc:
                tries = exc.tries_left
                if tries == 0:
                    break
                continue
            except PinBlockedError:
                break
            raise UsageError(f"the test card accepted {wrong!r} as its {label}: give another pin")
        if not block:
            return self.provider.cancel(pending_id, "wrong-pin", f"the {label} was wrong ({tries} tries left)")
        with contextlib.suppress(PinBlockedError, PinIncorrectError):
            session.verify(kind, right)   # the card now refuses even the right PIN
            raise UsageError(f"the test card's {label} did not block")
        return self.provider.cancel(pending_id, "pin-blocked", f"the {label} is blocked")
