"""Test cards: a factory that issues emulated cards into a home, cheaply and in any state a test needs.

```python
ca = new_test_ca(home_path, clock, keys)          # a test CA whose past is long enough for old cards
make_card = CardFactory(Home(home_path, clock), ca, keys, clock)
alice = make_card(persona="alice")                # active, default PINs 1234 / ABC123
bob = make_card(persona="bob", pins={"auth": "4321"}, state="blocked_pin")
old = make_card(state="expired")                  # both certificates past their end
with alice.session() as session: ...              # jpki.session.JpkiSession over emu:NAME
alice.report_lost()                               # both certificates revoked (keyCompromise)
```

A card costs its two certificates and its files — not its keys, which come from a
:class:`~jpki.testing.keypool.KeyPool` — and nothing a test card does not need: the files are
written without fsync (the home is a temporary folder), the CA stays open between cards and
the PIN records are hashed with :data:`PIN_ITERATIONS` PBKDF2 rounds (the card stores the
count; a test card's PINs are public anyway).

**States** (``state=``: one name or several, applied in this order: the issuance date, then the
life events in the order given, then the PINs):

``active``
    issued now.
``expired``
    issued 5 years and 2 days ago: both certificates ended on the holder's 5th birthday after
    issuance, the card (10 years for adults) is still valid — what a real card shows until its
    holder renews the certificates. (A persona under 18 at issuance gets a 5-year card, which has
    expired too, as in reality.)
``card_expired``
    issued then too, with a card expiry of yesterday (JST): the card and both certificates are
    past their end.
``revoked`` (or ``lost``)
    the holder reported the card lost: both certificates revoked (keyCompromise).
``renewed``
    both certificates renewed now: new keys and certificates on the card, the old ones superseded
    and linked to the new ones (a relying party following the links keeps the account).
``moved``
    the holder moved (to ``MOVED_ADDRESS``): the signing certificate revoked (affiliationChanged),
    a new one on the card, the card-info AP updated; the authentication certificate unchanged.
``blocked_pin``, ``blocked_sign_pin``, ``blocked_card_pin``
    the user-authentication PIN, the signature password or the card-info PIN blocked by wrong
    tries, through the card itself.

The old-date states need a CA that existed then: :func:`new_test_ca` dates its CA
:data:`CA_AGE` before the clock's now (it stays valid ~4.9 years after it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, get_args

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from jpki.clock import JST, Clock, FixedClock
from jpki.errors import PinBlockedError, PinIncorrectError, UsageError
from jpki.home import DEFAULT_AUTH_PIN, DEFAULT_SIGN_PIN, Home, check_card_name
from jpki.identity import SAMPLE_PERSONAS, Persona
from jpki.pins import PINS

if TYPE_CHECKING:
    from jpki.lifecycle import LifeEvent
    from jpki.pki import TestCA
    from jpki.provision import Holder
    from jpki.session import CardInfoSession, JpkiSession
    from jpki.transport.emu import EmulatorTransport, FaultPlan

__all__ = ["CA_AGE", "MOVED_ADDRESS", "PIN_ITERATIONS", "STATES", "CardFactory", "FreshKeys", "KeySource",
           "Pins", "TestCard", "new_test_ca"]

#: PBKDF2 rounds of a test card's PIN records (the emulator's default, 2000, costs ~4 ms a card).
PIN_ITERATIONS: Final = 1
#: How long before the clock's now :func:`new_test_ca` dates the CA: enough for a card issued
#: 5 years and 2 days ago (``expired``), leaving the CA (10 years) valid ~4.9 years ahead.
CA_AGE: Final = _dt.timedelta(days=5 * 366 + 30)
#: Where a ``moved`` card's holder lives now.
MOVED_ADDRESS: Final = "大阪府大阪市北区梅田１丁目１番３号"

State = Literal["active", "expired", "card_expired", "revoked", "lost", "renewed", "moved",
                "blocked_pin", "blocked_sign_pin", "blocked_card_pin"]
STATES: Final[tuple[str, ...]] = get_args(State)
_DATED = ("expired", "card_expired")
_EVENTS = ("revoked", "lost", "renewed", "moved")
PinKind = Literal["auth", "sign", "card"]
_BLOCKS: Final[dict[str, PinKind]] = {"blocked_pin": "auth", "blocked_sign_pin": "sign",
                                      "blocked_card_pin": "card"}
_WRONG = {"auth": ("0000", "9999"), "card": ("0000", "9999"), "sign": ("WRONG000", "WRONG999")}


class KeySource(Protocol):
    """Where a factory takes its keys: a :class:`~jpki.testing.keypool.KeyPool` or :class:`FreshKeys`."""

    def key(self) -> rsa.RSAPrivateKey:
        """An RSA-2048 key no other card of this run has."""
        ...


class FreshKeys:
    """A new RSA-2048 key at every call: what a card costs without the pool (the benchmark's
    baseline)."""

    def key(self) -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclasses.dataclass(frozen=True)
class Pins:
    """A card's PINs as issued: ``auth`` (4 digits), ``sign`` (6-16 of A-Z 0-9), ``card``
    (4 digits; real cards are issued with the auth PIN's digits, the default here too)."""

    auth: str = DEFAULT_AUTH_PIN
    sign: str = DEFAULT_SIGN_PIN
    card: str = ""

    def __post_init__(self) -> None:
        if not self.card:
            object.__setattr__(self, "card", self.auth)

    @classmethod
    def of(cls, value: Pins | Mapping[str, str] | None) -> Pins:
        if value is None:
            return cls()
        if isinstance(value, Pins):
            return value
        unknown = set(value) - {"auth", "sign", "card"}
        if unknown:
            raise UsageError(f"unknown PIN {sorted(unknown)[0]!r}: use auth, sign or card")
        return cls(**value)


def _years_before(when: _dt.datetime, years: int) -> _dt.datetime:
    try:
        return when.replace(year=when.year - years)
    except ValueError:  # 29 February
        return when.replace(year=when.year - years, day=28)


def _check_states(state: str | Iterable[str]) -> tuple[str, ...]:
    states = (state,) if isinstance(state, str) else tuple(state)
    for name in states:
        if name not in STATES:
            raise UsageError(f"unknown card state {name!r}: use one of {', '.join(STATES)}")
    if sum(s in _DATED for s in states) > 1:
        raise UsageError("a card is either 'expired' or 'card_expired', not both")
    return tuple(s for s in states if s != "active") or ("active",)


def new_test_ca(home: Path | str, clock: Clock, keys: KeySource, *, base_url: str | None = None) -> TestCA:
    """Make the test CA of a new home at ``home`` (its ``ca`` folder) and return it open, on
    ``clock``: dated :data:`CA_AGE` before the clock's now so that cards issued years ago can
    exist, its keys from ``keys``, its database not waiting for the disk (a test home).
    ``base_url`` defaults to a free port of 127.0.0.1, where its OCSP/CRL server can run."""
    from jpki.pki import TestCA

    path = Path(home)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = TestCA.init(path / "ca", clock=FixedClock(clock.now() - CA_AGE), base_url=base_url,
                     keys={"sign": keys.key(), "auth": keys.key()}, durable=False)
    ca.clock = clock  # dated in the past, it lives on the shared clock
    return ca


@dataclasses.dataclass(frozen=True, eq=False)
class TestCard:
    """A card made by :class:`CardFactory` (an emulated card ``emu:NAME`` of the factory's home)."""

    __test__ = False  # not a pytest test class

    name: str
    pins: Pins
    #: the states asked for, in order
    states: tuple[str, ...]
    factory: CardFactory = dataclasses.field(repr=False)

    @property
    def home(self) -> Home:
        return self.factory.home

    @property
    def directory(self) -> Path:
        return self.home.card_dir(self.name)

    @property
    def uri(self) -> str:
        """``emu:NAME`` (with ``home=`` the factory's home: ``open_transport(card.uri, home=...)``)."""
        return f"emu:{self.name}"

    @property
    def holder(self) -> Holder:
        """What the municipality knows now: persona, security code, expiry, serials, status."""
        from jpki.provision import read_holder

        return read_holder(self.home, self.name)

    @property
    def persona(self) -> Persona:
        return self.holder.persona

    @property
    def faults(self) -> FaultPlan:
        """The card's faults in this process (:func:`jpki.transport.emu.card_faults`), carried
        out by every transport of the card, also one the application opens itself:
        ``card.faults.remove_on_signature()``, ``.status_word(0x6982, match="verify")``,
        ``.latency(profile="contactless")``, ``.tear(during="verify")``, ``.insert()`` (docs/faults.md).
        The ``make_card`` fixture clears them when the test ends."""
        from jpki.transport.emu import card_faults

        return card_faults(self.directory)

    def transport(self) -> EmulatorTransport:
        """The card in this process (``jpki.transport.emu``), powered on; close it after use."""
        from jpki.transport.emu import EmulatorTransport

        return EmulatorTransport(self.directory)

    @contextlib.contextmanager
    def session(self) -> Iterator[JpkiSession]:
        """A JPKI AP session on the card in this process, closed at the end of the block."""
        from jpki.session import JpkiSession

        with self.transport() as transport:
            yield JpkiSession(transport)

    @contextlib.contextmanager
    def card_info(self) -> Iterator[CardInfoSession]:
        """A session of the card-info AP (My Number, basic 4 info) in this process."""
        from jpki.session import CardInfoSession

        with self.transport() as transport:
            yield CardInfoSession(transport)

    def certificate(self, kind: Literal["auth", "sign"]) -> x509.Certificate:
        """The card's current certificate of ``kind``, as the CA issued it."""
        holder = self.holder
        record = self.factory.ca.db.get(holder.auth_serial if kind == "auth" else holder.sign_serial)
        if record is None:  # pragma: no cover - the factory recorded it
            raise UsageError(f"the CA has no record of {self.name}'s {kind} certificate")
        return record.certificate()

    # -- life events, on the factory's clock, new keys from its pool

    def report_lost(self) -> LifeEvent:
        """The holder reports the card lost: both certificates revoked (keyCompromise)."""
        from jpki.lifecycle import lost

        return lost(self.home, self.name, clock=self.factory.clock)

    def move(self, address: str = MOVED_ADDRESS, **changes: str) -> LifeEvent:
        """A change of the basic 4 info (``address``, or ``holder_name=`` …): a new signing
        certificate, the old one revoked (affiliationChanged)."""
        from jpki.lifecycle import move

        return move(self.home, self.name, address=address, clock=self.factory.clock,
                    key=self.factory.keys.key(), **changes)

    def renew(self) -> LifeEvent:
        """New keys and certificates for both; the old ones superseded and linked to the new."""
        from jpki.lifecycle import renew

        keys = self.factory.keys
        return renew(self.home, self.name, clock=self.factory.clock, keys=(keys.key(), keys.key()))

    def block_pin(self, kind: PinKind = "auth") -> None:
        """Spend every try of the PIN ``kind`` with wrong values, through the card."""
        right = getattr(self.pins, kind)
        wrong = next(w for w in _WRONG[kind] if w != right)
        opened = self.card_info() if PINS[kind].application == "text" else self.session()
        with opened as session:
            for _ in range(PINS[kind].max_tries):
                if session.tries_left(kind) == 0:
                    break
                with contextlib.suppress(PinIncorrectError, PinBlockedError):
                    session.verify(kind, wrong)
            if session.tries_left(kind) != 0:  # pragma: no cover - the card's counter is tested elsewhere
                raise UsageError(f"the {kind} PIN of {self.name} did not block")


class CardFactory:
    """Issues test cards into ``home`` with its open test ``ca``, keys from ``keys`` and time
    from ``clock`` (the clock the CA, the validator and the tests share). Calling it makes a card::

        card = make_card(name=None, persona="alice", profile=None, pins=None, state="active")

    ``persona`` is a key of :data:`jpki.identity.SAMPLE_PERSONAS` or a :class:`Persona` (a My
    Number is drawn when it has none); ``name`` defaults to the persona's key, then ``-2``,
    ``-3``…; ``pins`` a :class:`Pins` or a mapping of ``auth``/``sign``/``card``; ``profile``
    goes to the emulator as the card's profile (``card_emulator.CardProfile`` fields); ``state``
    as in the module docstring. ``cards`` lists the cards made.
    """

    def __init__(self, home: Home, ca: TestCA, keys: KeySource, clock: Clock, *,
                 pin_iterations: int = PIN_ITERATIONS) -> None:
        self.home = home
        self.ca = ca
        self.keys = keys
        self.clock = clock
        self.pin_iterations = pin_iterations
        self.cards: list[TestCard] = []
        self._names: set[str] = set()

    def _name_for(self, name: str | None, persona: str | Persona) -> str:
        if name is not None:
            return check_card_name(name)
        base = persona if isinstance(persona, str) else "card"
        candidate, n = base, 1
        while candidate in self._names or self.home.card_dir(candidate).exists():
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def __call__(self, name: str | None = None, *, persona: str | Persona = "alice",
                 profile: Mapping[str, Any] | None = None, pins: Pins | Mapping[str, str] | None = None,
                 state: State | Iterable[State] | str | Iterable[str] = "active",
                 security_code: str = "1357") -> TestCard:
        from jpki.provision import create_card

        states = _check_states(state)
        if isinstance(persona, str):
            if persona not in SAMPLE_PERSONAS:
                raise UsageError(f"unknown persona {persona!r}: use one of {', '.join(SAMPLE_PERSONAS)} "
                                 "or a jpki.identity.Persona")
            holder = SAMPLE_PERSONAS[persona]
        else:
            holder = persona
        card_name = self._name_for(name, persona)
        chosen = Pins.of(pins)
        now = self.clock.now()
        issue_clock: Clock = self.clock
        expiry: _dt.date | None = None
        if any(s in _DATED for s in states):
            issue_clock = FixedClock(_years_before(now, 5) - _dt.timedelta(days=2))
            if "card_expired" in states:
                expiry = now.astimezone(JST).date() - _dt.timedelta(days=1)
        try:
            create_card(self.home, card_name, holder, auth_pin=chosen.auth, sign_pin=chosen.sign,
                        card_pin=chosen.card, security_code=security_code, clock=issue_clock,
                        profile=dict(profile) if profile is not None else None,
                        keys=(self.keys.key(), self.keys.key()), ca=self.ca, card_expiry=expiry,
                        durable=False, pin_iterations=self.pin_iterations)
        except UsageError as exc:
            if issue_clock is self.clock:
                raise
            raise UsageError(f"{exc} — the states {', '.join(_DATED)} issue the card 5 years ago: the "
                             "home needs a CA that old (jpki.testing.new_test_ca makes one)") from None
        self._names.add(card_name)
        card = TestCard(card_name, chosen, states, self)
        for event in (s for s in states if s in _EVENTS):
            if event in ("revoked", "lost"):
                card.report_lost()
            elif event == "renewed":
                card.renew()
            else:
                card.move()
        for block in (s for s in states if s in _BLOCKS):
            card.block_pin(_BLOCKS[block])
        self.cards.append(card)
        return card
