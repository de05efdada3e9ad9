"""Fault injection: what goes wrong between a host and a real card, on demand.

One model, two carriers. A :class:`FaultPlan` holds the faults set on one card and decides, for
each command APDU, what becomes of it; whoever moves APDUs to the card carries the decision out:

- in process, ``jpki.transport.emu.EmulatorTransport`` (its host-side errors are the ones the
  PC/SC transport raises for the same event: ``CardRemovedError``, a reader error with its code);
- for a served card, :class:`card_emulator.vpcd.VpcdBridge`: the card leaves vpcd as when it is
  pulled out of a reader, and a reader error breaks the vpcd link in the middle of a command.

The faults (each fires on command APDUs only, never on the reader's power or ATR requests):

==========================  ==================================================================
``remove_after(n)``         the card answers ``n`` more APDUs, then leaves the reader
``remove_on_signature()``   COMPUTE DIGITAL SIGNATURE arrives and the card leaves before answering
``status_word(sw, match)``  the next APDU(s) matching ``match`` are answered ``sw`` (the card
                            never sees them); ``times`` of them, or every one (``times=None``)
``latency(ms, profile)``    every answer comes ``ms`` later, and/or as late as a real contact or
                            contactless card's (:data:`PROFILES`); until cleared
``tear(during)``            power is lost in the middle of the next VERIFY (with a PIN) or
                            CHANGE REFERENCE DATA, just after (or before) the card's write to its
                            memory; the card leaves the reader without answering
``reader_error(code)``      the reader fails the exchange of the next matching APDU(s) with a
                            PC/SC error (:data:`READER_ERRORS`); the card stays in the reader
==========================  ==================================================================

Tearing is the card's own behaviour, so it is modelled here, on the card: the PIN retry counter
is decremented and written **before** the comparison (``MyNumberCard._verify``), so a tear during
VERIFY, right or wrong PIN, leaves one try fewer, and the next correct VERIFY after power-up
gives them back; CHANGE REFERENCE DATA writes the new PIN record whole (``os.replace``), so a
tear leaves the old PIN or the new one, never a mix. The power fails by raising
:class:`PowerLost` (a ``BaseException``: the card's "answer ``6F00`` on any error" net must not
turn a torn command into an answer) from the card's state store at that write.

Zero cost when no fault is set: a carrier looks at :attr:`FaultPlan.armed` (a plain attribute)
and, when it is false, hands the APDU straight to the card.

A served card is controlled through a file, ``faults.json`` in the card's folder (mode 0600,
written whole under ``.faults.lock``): a client (:class:`ServedFaults`, ``jpki emulator fault``)
edits the faults in it, bumps ``serial`` and signals the serving process (SIGHUP), whose
:class:`PlanWatcher` applies the file to the card's plan and writes back the plan's state (faults
left, faults fired, card present) with ``applied`` = that serial; the client waits for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol

from .storage import atomic_write, locked

__all__ = [
    "COMMAND_NAMES",
    "KINDS",
    "PLAN_FILE",
    "PROFILES",
    "READER_ERRORS",
    "CardLeft",
    "Fault",
    "FaultControlError",
    "FaultPlan",
    "FaultSpecError",
    "LinkBroken",
    "LinkProfile",
    "Match",
    "Outcome",
    "PlanWatcher",
    "PowerLost",
    "ServedFaults",
    "command_name",
    "torn_transmit",
]

log = logging.getLogger("card_emulator.faults")

PLAN_FILE = "faults.json"
PLAN_LOCK = ".faults.lock"
PLAN_FORMAT = 1
#: How many fired faults a plan remembers (for ``list``).
FIRED_KEPT = 50

#: Names a ``match`` may use for a command, by INS.
COMMAND_NAMES: dict[str, int] = {
    "select": 0xA4,
    "read-binary": 0xB0,
    "read-record": 0xB2,
    "verify": 0x20,
    "change-pin": 0x24,
    "sign": 0x2A,
    "get-challenge": 0x84,
    "get-response": 0xC0,
}
_INS_LABELS = {
    0xA4: "SELECT", 0xB0: "READ BINARY", 0xB1: "READ BINARY", 0xB2: "READ RECORD",
    0x20: "VERIFY", 0x24: "CHANGE REFERENCE DATA", 0x2A: "COMPUTE DIGITAL SIGNATURE",
    0x84: "GET CHALLENGE", 0xC0: "GET RESPONSE",
}
_SIGN_INS = 0x2A

#: PC/SC errors a reader fault may raise (the names of winscard.h / pcsc-lite). The host maps
#: each to what its PC/SC transport raises for it (``jpki.transport.pcsc.PCSC_ERRORS``).
READER_ERRORS = (
    "SCARD_E_NOT_TRANSACTED",
    "SCARD_F_COMM_ERROR",
    "SCARD_W_UNRESPONSIVE_CARD",
    "SCARD_W_UNPOWERED_CARD",
    "SCARD_E_TIMEOUT",
    "SCARD_E_READER_UNAVAILABLE",
    "SCARD_F_INTERNAL_ERROR",
)

#: What ``tear(during=…)`` accepts: the INS it tears.
TEAR_COMMANDS = {"verify": 0x20, "change-pin": 0x24}

KINDS = ("remove_after", "remove_on_signature", "status_word", "latency", "tear", "reader_error")


class FaultSpecError(ValueError):
    """A fault that cannot be set (a bad status word, an unknown command name…): ``reason``
    says what, in one line."""

    code = "bad_fault"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class FaultControlError(RuntimeError):
    """The serving process did not take a served card's fault plan (not running, or no answer)."""

    code = "fault_control"


class PowerLost(BaseException):
    """The card lost power in the middle of a command (a tear). Nothing after the point where it
    was raised ran, and the card gives no answer. A ``BaseException`` so that the card's
    "never crash: answer ``6F00``" net (``except Exception``) lets it through."""


class CardLeft(Exception):
    """A fault took the card out of the reader before it answered (``text`` says which)."""

    def __init__(self, fault: Fault, text: str) -> None:
        self.fault = fault
        self.text = text
        super().__init__(text)


class LinkBroken(Exception):
    """A fault made the reader fail this exchange with PC/SC error ``code``; the card stays."""

    def __init__(self, fault: Fault, code: str, text: str) -> None:
        self.fault = fault
        self.code = code
        self.text = text
        super().__init__(text)


def command_name(apdu: bytes) -> str:
    """The command an APDU is, for trace lines (``READ BINARY``, ``INS 12`` when unknown)."""
    if len(apdu) < 2:
        return "a malformed APDU"
    return _INS_LABELS.get(apdu[1], f"INS {apdu[1]:02X}")


# --------------------------------------------------------------------------------------- match
@dataclass(frozen=True)
class Match:
    """Which command APDUs a fault applies to: ``any``, a command name of :data:`COMMAND_NAMES`
    (by INS), ``ins=XX``, or a hex prefix of the APDU (``00A4040C``, ``80 2A``)."""

    spec: str
    ins: int | None = None
    prefix: bytes = b""

    @classmethod
    def parse(cls, value: str | int | Match | None) -> Match:
        if isinstance(value, Match):
            return value
        if value is None:
            return cls("any")
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value <= 0xFF:
                raise FaultSpecError(f"an INS is one byte, not {value}")
            return cls(f"ins={value:02X}", ins=value)
        if not isinstance(value, str):
            raise FaultSpecError(f"a match is a command name, ins=XX or a hex prefix, not {value!r}")
        text = value.strip().lower().replace("_", "-")
        if text in ("", "any"):
            return cls("any")
        if text in COMMAND_NAMES:
            return cls(text, ins=COMMAND_NAMES[text])
        if text.startswith("ins="):
            digits = text[4:].strip()
            if not re.fullmatch(r"[0-9a-f]{2}", digits):
                raise FaultSpecError(f"ins= takes two hex digits, not {digits!r}")
            return cls(f"ins={digits.upper()}", ins=int(digits, 16))
        digits = re.sub(r"\s+", "", text)
        if re.fullmatch(r"(?:[0-9a-f]{2})+", digits):
            return cls(digits.upper(), prefix=bytes.fromhex(digits))
        raise FaultSpecError(f"cannot match {value!r}: use any, one of {', '.join(COMMAND_NAMES)}, "
                             "ins=XX or a hex prefix of the APDU")

    def __call__(self, apdu: bytes) -> bool:
        if self.ins is not None:
            return len(apdu) >= 2 and apdu[1] == self.ins
        return apdu.startswith(self.prefix)

    def __str__(self) -> str:
        return self.spec


# ------------------------------------------------------------------------------------ latency
@dataclass(frozen=True)
class LinkProfile:
    """How long a real card takes to answer: the reader's round trip, the card's own work for
    the command, and the bytes on the wire at ``bit_rate``. docs/faults.md says where each
    figure comes from (and which are estimates)."""

    name: str
    #: bits per second on the card's interface
    bit_rate: int
    #: bit times (etu) per byte on the wire
    etu_per_byte: float
    #: framing per block, in bytes (T=1: NAD PCB LEN + LRC; ISO 14443-4: PCB + CRC + SOF/EOF)
    block_overhead: float
    #: information bytes per block (T=1 IFSC; ISO 14443 FSC minus framing)
    block_size: int
    #: the reader and its driver, per exchange (USB, field handling), in ms
    exchange_ms: float
    #: the card's processing time by command (``other`` for the rest), in ms
    card_ms: Mapping[str, float]

    def wire_seconds(self, size: int, bit_rate: int | None = None) -> float:
        """Time to move ``size`` bytes one way, in blocks, with an acknowledgement (R-block) the
        other way for each block after the first."""
        blocks = max(1, math.ceil(size / self.block_size))
        total = size + blocks * self.block_overhead + (blocks - 1) * self.block_overhead
        return total * self.etu_per_byte / (bit_rate or self.bit_rate)

    def seconds(self, apdu: bytes, rapdu: bytes, bit_rate: int | None = None) -> float:
        """How long after ``apdu`` was sent ``rapdu`` is back at the host."""
        ins = apdu[1] if len(apdu) >= 2 else None
        if ins == 0x20 and len(apdu) <= 5:
            work = self.card_ms.get("verify-query", self.card_ms["other"])
        else:
            name = next((n for n, i in COMMAND_NAMES.items() if i == ins), "other")
            work = self.card_ms.get(name, self.card_ms["other"])
        return ((self.exchange_ms + work) / 1000.0 + self.wire_seconds(len(apdu), bit_rate)
                + self.wire_seconds(len(rapdu), bit_rate))


#: The two real-card profiles ``latency(profile=…)`` knows (figures: docs/faults.md).
PROFILES: dict[str, LinkProfile] = {
    # ISO 7816-3 T=1 as the card's ATR (3B E0 00 FF 81 31 FE 45 14) sets it: no TA1, so the
    # default Fd=372/Dd=1 (9600 bit/s at 3.5712 MHz); TC1=FF, 11 etu a character; TA3=FE, IFSC 254.
    "contact": LinkProfile(
        "contact", bit_rate=9600, etu_per_byte=11, block_overhead=4, block_size=254,
        exchange_ms=2.0,
        card_ms={"select": 3, "read-binary": 2, "read-record": 2, "verify": 25, "verify-query": 2,
                 "change-pin": 35, "sign": 400, "get-challenge": 5, "other": 3}),
    # ISO 14443 Type B at 106 kbit/s (fc/128): 10 etu a character, PCB + CRC_B and SOF/EOF
    # (~24 etu) a frame, FSC 256 assumed; the card runs on the field's power.
    "contactless": LinkProfile(
        "contactless", bit_rate=105_938, etu_per_byte=10, block_overhead=5.4, block_size=253,
        exchange_ms=6.0,
        card_ms={"select": 3, "read-binary": 3, "read-record": 3, "verify": 30, "verify-query": 3,
                 "change-pin": 40, "sign": 700, "get-challenge": 6, "other": 4}),
}


# -------------------------------------------------------------------------------------- faults
@dataclass
class Fault:
    """One fault set on a card. ``kind`` is one of :data:`KINDS`; the other fields are its
    parameters (each kind uses its own, see :meth:`to_json`). ``left`` counts how many more
    times it fires (None: until cleared); ``id`` names it in traces and lists."""

    kind: str
    id: int = 0
    n: int | None = None                 # remove_after
    sw: int | None = None                # status_word
    match: Match = dataclasses.field(default_factory=lambda: Match("any"))
    times: int | None = None             # status_word, reader_error (None: every time)
    left: int | None = None
    ms: float = 0.0                      # latency: fixed part
    profile: str | None = None           # latency
    bit_rate: int | None = None          # latency: another bit rate for the profile
    during: str | None = None            # tear: verify | change-pin
    after_write: bool = True             # tear
    code: str | None = None              # reader_error
    #: how many times it fired
    fired: int = 0

    #: the parameters of each kind, as :meth:`to_json` writes them
    _FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {
        "remove_after": ("n", "left"),
        "remove_on_signature": (),
        "status_word": ("sw", "match", "times", "left"),
        "latency": ("ms", "profile", "bit_rate"),
        "tear": ("during", "after_write"),
        "reader_error": ("code", "match", "times", "left"),
    }

    @property
    def label(self) -> str:
        return f"{self.kind}#{self.id}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind}
        for name in self._FIELDS[self.kind]:
            value = getattr(self, name)
            if name == "sw" and value is not None:
                value = f"{value:04X}"
            elif name == "match":
                value = str(value)
            out[name] = value
        out["fired"] = self.fired
        out["summary"] = self.summary()
        return out

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        """A fault from :meth:`to_json`'s form, checked as the setters check it."""
        if not isinstance(data, dict) or data.get("kind") not in KINDS:
            raise FaultSpecError(f"not a fault: {str(data)[:60]}")
        kind = data["kind"]
        fault_id = data.get("id", 0)
        if type(fault_id) is not int or fault_id < 0:
            raise FaultSpecError(f"bad fault id {fault_id!r}")
        if kind == "remove_after":
            fault = _remove_after(data.get("n"))
            fault.left = _count(data.get("left", fault.left), "left", allow_none=False)
        elif kind == "remove_on_signature":
            fault = Fault("remove_on_signature")
        elif kind == "status_word":
            fault = _status_word(data.get("sw"), data.get("match"), data.get("times"))
            fault.left = _count(data.get("left", fault.left), "left", allow_none=True)
        elif kind == "latency":
            fault = _latency(data.get("ms"), data.get("profile"), data.get("bit_rate"))
        elif kind == "tear":
            fault = _tear(data.get("during"), data.get("after_write", True))
        else:
            fault = _reader_error(data.get("code"), data.get("match"), data.get("times"))
            fault.left = _count(data.get("left", fault.left), "left", allow_none=True)
        fault.id = fault_id
        fired = data.get("fired", 0)
        fault.fired = fired if type(fired) is int and fired >= 0 else 0
        return fault

    def summary(self) -> str:
        """What the fault does, in a few words (for lists)."""
        left = "" if self.left is None else f" ({self.left} left)"
        if self.kind == "remove_after":
            return f"the card leaves after {self.n} APDU(s){left}"
        if self.kind == "remove_on_signature":
            return "the card leaves when COMPUTE DIGITAL SIGNATURE arrives, before answering"
        if self.kind == "status_word":
            return f"answer {self.sw or 0:04X} to {self.match}" + (" (every time)" if self.left is None else left)
        if self.kind == "latency":
            if self.profile is None:
                return f"every answer {self.ms:g} ms later"
            rate = f" at {self.bit_rate} bit/s" if self.bit_rate else ""
            extra = f", +{self.ms:g} ms" if self.ms else ""
            return f"every answer as late as a {self.profile} card's{rate}{extra}"
        if self.kind == "tear":
            where = "after" if self.after_write else "before"
            return f"power lost during the next {self.during} ({where} the card's write)"
        return f"reader error {self.code} on {self.match}" + (" (every time)" if self.left is None else left)


def _count(value: Any, what: str, *, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if type(value) is not int or value < 0:
        raise FaultSpecError(f"{what} must be a whole number >= 0, not {value!r}")
    return value


def _times(times: Any) -> int | None:
    if times is None:
        return None
    if type(times) is not int or times < 1:
        raise FaultSpecError(f"times must be a whole number >= 1 (or None: every time), not {times!r}")
    return times


def _remove_after(n: Any) -> Fault:
    count = _count(n, "the number of APDUs", allow_none=False)
    return Fault("remove_after", n=count, left=count)


def _status_word(sw: Any, match: Any, times: Any) -> Fault:
    if isinstance(sw, str):
        text = sw.strip().replace(" ", "")
        if not re.fullmatch(r"[0-9A-Fa-f]{4}", text):
            raise FaultSpecError(f"a status word is 4 hex digits, not {sw!r}")
        sw = int(text, 16)
    if type(sw) is not int or not 0 <= sw <= 0xFFFF:
        raise FaultSpecError(f"a status word is 2 bytes, not {sw!r}")
    if not 0x61 <= sw >> 8 <= 0x6F and sw >> 8 != 0x90:
        raise FaultSpecError(f"{sw:04X} is not a status word (SW1 is 61..6F or 90)")
    count = _times(times)
    return Fault("status_word", sw=sw, match=Match.parse(match), times=count, left=count)


def _latency(ms: Any, profile: Any, bit_rate: Any) -> Fault:
    if ms is None:
        ms = 0.0
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0 <= ms <= 60_000:
        raise FaultSpecError(f"a latency is 0..60000 ms, not {ms!r}")
    if profile is not None and profile not in PROFILES:
        raise FaultSpecError(f"unknown latency profile {profile!r}: use {' or '.join(PROFILES)}")
    if bit_rate is not None:
        if profile is None:
            raise FaultSpecError("a bit rate goes with a profile")
        if type(bit_rate) is not int or not 1200 <= bit_rate <= 10_000_000:
            raise FaultSpecError(f"a bit rate is 1200..10000000 bit/s, not {bit_rate!r}")
    if not ms and profile is None:
        raise FaultSpecError("a latency needs ms > 0 or a profile")
    return Fault("latency", ms=float(ms), profile=profile, bit_rate=bit_rate)


def _tear(during: Any, after_write: Any) -> Fault:
    text = during.strip().lower().replace("_", "-") if isinstance(during, str) else during
    if text not in TEAR_COMMANDS:
        raise FaultSpecError(f"a tear happens during {' or '.join(TEAR_COMMANDS)}, not {during!r}")
    if not isinstance(after_write, bool):
        raise FaultSpecError(f"after_write is true or false, not {after_write!r}")
    return Fault("tear", during=text, after_write=after_write)


def _reader_error(code: Any, match: Any, times: Any) -> Fault:
    code = code or READER_ERRORS[0]
    if code not in READER_ERRORS:
        raise FaultSpecError(f"unknown reader error {code!r}: use one of {', '.join(READER_ERRORS)}")
    count = _times(times)
    return Fault("reader_error", code=code, match=Match.parse(match), times=count, left=count)


class _Verbs:
    """The fault verbs, the same for a card in this process (:class:`FaultPlan`) and a served
    card (:class:`ServedFaults`); each returns the fault it set."""

    def _add(self, fault: Fault) -> Fault:  # pragma: no cover - each carrier has its own
        raise NotImplementedError

    def remove_after(self, n: int) -> Fault:
        """The card answers ``n`` more APDUs, then leaves the reader (``0``: at once)."""
        return self._add(_remove_after(n))

    def remove_on_signature(self) -> Fault:
        """The next COMPUTE DIGITAL SIGNATURE finds the card leaving: no answer, the card is out."""
        return self._add(Fault("remove_on_signature"))

    def status_word(self, sw: int | str, match: str | int | Match | None = None,
                    times: int | None = 1) -> Fault:
        """Answer ``sw`` (``0x6A82`` or ``"6A82"``) to the next ``times`` APDUs that ``match``
        (every one with ``times=None``) instead of the card."""
        return self._add(_status_word(sw, match, times))

    def latency(self, ms: float | None = None, *, profile: str | None = None,
                bit_rate: int | None = None) -> Fault:
        """Every answer ``ms`` later, and/or as late as a real card's (``profile="contact"`` or
        ``"contactless"``, optionally at another ``bit_rate``), until cleared. A new latency
        replaces the previous one."""
        return self._add(_latency(ms, profile, bit_rate))

    def tear(self, during: str, *, after_write: bool = True) -> Fault:
        """Cut the power during the next ``during`` (``"verify"`` with a PIN, ``"change_pin"``),
        just after (default) or before the card's write to its memory."""
        return self._add(_tear(during, after_write))

    def reader_error(self, code: str | None = None, *, match: str | int | Match | None = None,
                     times: int | None = 1) -> Fault:
        """The reader fails the exchange of the next ``times`` APDUs that ``match`` with PC/SC
        error ``code`` (default ``SCARD_E_NOT_TRANSACTED``)."""
        return self._add(_reader_error(code, match, times))


class Outcome(NamedTuple):
    """What became of one APDU: the answer, and whether the card leaves right after giving it."""

    rapdu: bytes
    leave_after: bool = False


class _Card(Protocol):
    def transmit(self, apdu: bytes) -> bytes: ...

    def power_off(self) -> None: ...


class FaultPlan(_Verbs):
    """The faults set on one card, and whether it is in its reader. Thread-safe.

    ``sleep`` is what latency waits with (tests pass a recorder). :meth:`run` is for carriers.
    """

    def __init__(self, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.sleep = sleep
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._seen: set[int] = set()  # every fault id this plan has held
        self._next_id = 1
        self._answered = 0
        self.fired: deque[dict[str, Any]] = deque(maxlen=FIRED_KEPT)
        #: True when a fault is set: carriers take the slow path only then
        self.armed = False
        #: the card is in its reader (False after a fault took it out, until :meth:`insert`)
        self.present = True
        #: how often the card left its reader: a carrier that saw another value must reconnect
        self.removals = 0
        #: why the card is out (the trace line of the fault that took it out), None when in
        self.removed_by: str | None = None

    # ------------------------------------------------------------------ setting faults
    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            fault.id = self._next_id
            self._next_id += 1
            self._seen.add(fault.id)
            if fault.kind == "latency":  # one latency at a time: the new one replaces the old
                self._faults = [f for f in self._faults if f.kind != "latency"]
            if fault.kind == "remove_after" and fault.n == 0:
                self.remove(self._fire(fault, "the card left the reader", None))
                return fault
            self._faults.append(fault)
            self.armed = True
        return fault

    def clear(self) -> None:
        """Drop every fault (the card stays where it is: :meth:`insert` puts it back)."""
        with self._lock:
            self._faults = []
            self.armed = False

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return [dataclasses.replace(f) for f in self._faults]

    def describe(self) -> dict[str, Any]:
        """The plan as data: the card's presence, the faults set, the faults that fired."""
        with self._lock:
            return {"present": self.present, "faults": [f.to_json() for f in self._faults],
                    "fired": list(self.fired)}

    def remove(self, why: str = "the card was taken out of the reader") -> None:
        """Take the card out of its reader (as a fault does). Lock-free: callable from a signal
        handler."""
        self.present = False
        self.removed_by = why
        self.removals += 1

    def insert(self) -> None:
        """Put the card back; it powers up with a clear security state."""
        self.present = True
        self.removed_by = None

    def replace(self, faults: list[Fault]) -> None:
        """Take ``faults`` as the plan (a served card's file). A fault this plan already holds
        (same id) keeps what it has used up here; one it held and used up stays gone."""
        with self._lock:
            known = {f.id: f for f in self._faults}
            kept = []
            for fault in faults:
                old = known.get(fault.id)
                if old is not None and old.kind == fault.kind:
                    fault.left, fault.fired = old.left, old.fired
                elif fault.id in self._seen:
                    continue  # fired its last time here since the file was written
                kept.append(fault)
            self._faults = kept
            self._seen.update(f.id for f in kept)
            self._next_id = max([self._next_id, *(f.id + 1 for f in kept)])
            self.armed = bool(kept)

    def _fire(self, fault: Fault, text: str, apdu: bytes | None) -> str:
        """Record that ``fault`` fired; the trace line (lock held). A latency is recorded in
        :attr:`fired` the first time only (it fires on every APDU)."""
        line = f"fault {fault.label}: {text}"
        fault.fired += 1
        if fault.kind != "latency" or fault.fired == 1:
            self.fired.append({"id": fault.id, "kind": fault.kind, "text": text,
                               **({"command": command_name(apdu)} if apdu is not None else {})})
        log.info("%s", line)
        return line

    def _spend(self, fault: Fault) -> None:
        if fault.left is not None:
            fault.left -= 1
            if fault.left <= 0:
                self._faults.remove(fault)
                self.armed = bool(self._faults)

    def _take(self, kind: str, apdu: bytes) -> Fault | None:
        for fault in self._faults:
            if fault.kind != kind:
                continue
            if kind in ("status_word", "reader_error") and not fault.match(apdu):
                continue
            if kind == "tear" and not (len(apdu) >= 2 and apdu[1] == TEAR_COMMANDS[fault.during or ""]
                                       and (apdu[1] != 0x20 or len(apdu) > 5)):
                continue  # a VERIFY without a PIN (tries left) writes nothing: not torn
            if kind == "remove_on_signature" and not (len(apdu) >= 2 and apdu[1] == _SIGN_INS):
                continue
            return fault
        return None

    # ------------------------------------------------------------------ carrying faults out
    def run(self, card: _Card, apdu: bytes, emit: Callable[[str], None]) -> Outcome:
        """Move ``apdu`` to ``card`` through the plan. ``emit`` gets one line for each fault
        that fires (the trace). Raises :class:`CardLeft` (the card left without answering: the
        plan marks it out and powers it off) or :class:`LinkBroken` (the reader failed)."""
        apdu = bytes(apdu)
        lines: list[str] = []
        try:
            return self._run(card, apdu, lines)
        finally:
            for line in lines:
                emit(line)

    def _run(self, card: _Card, apdu: bytes, lines: list[str]) -> Outcome:
        what = command_name(apdu)
        with self._lock:
            fault = self._take("reader_error", apdu)
            if fault is not None:
                self._spend(fault)
                text = f"reader error {fault.code} on {what}"
                lines.append(self._fire(fault, text, apdu))
                raise LinkBroken(fault, fault.code or READER_ERRORS[0], text)
            fault = self._take("remove_on_signature", apdu)
            if fault is not None:
                self._drop(fault)
                lines.append(self._fire(fault, f"the card left the reader before answering {what}", apdu))
                self._leave(card, lines[-1])
                raise CardLeft(fault, "the card left the reader mid-signature")
            tear = self._take("tear", apdu)
            if tear is not None:
                self._drop(tear)
            replaced = self._take("status_word", apdu) if tear is None else None
            if replaced is not None:
                self._spend(replaced)
            latency = next((f for f in self._faults if f.kind == "latency"), None)
        if tear is not None:
            torn = torn_transmit(card, apdu, after_write=tear.after_write)
            where = "after" if tear.after_write else "before"
            text = (f"power lost during {what}, {where} the card's write" if torn
                    else f"power lost during {what} (the command wrote nothing)")
            with self._lock:
                lines.append(self._fire(tear, text + "; the card left the reader", apdu))
            self._leave(card, lines[-1])
            raise CardLeft(tear, "the card lost power mid-command")
        if replaced is not None and replaced.sw is not None:
            rapdu = replaced.sw.to_bytes(2, "big")
            with self._lock:
                lines.append(self._fire(replaced, f"answered {replaced.sw:04X} in place of the card "
                                                  f"({what})", apdu))
        else:
            rapdu = card.transmit(apdu)
        if latency is not None:
            seconds = latency.ms / 1000.0
            if latency.profile is not None:
                seconds += PROFILES[latency.profile].seconds(apdu, rapdu, latency.bit_rate)
            card_kind = f", {latency.profile} card" if latency.profile else ""
            with self._lock:
                lines.append(self._fire(latency, f"{seconds * 1000:.1f} ms for {what} "
                                                 f"({len(apdu)}+{len(rapdu)} bytes{card_kind})", apdu))
            self.sleep(seconds)
        return Outcome(rapdu, self._count_answer(card, apdu, lines))

    def _count_answer(self, card: _Card, apdu: bytes, lines: list[str]) -> bool:
        """Count an answered APDU against ``remove_after``; True when the card leaves now."""
        with self._lock:
            fault = next((f for f in self._faults if f.kind == "remove_after"), None)
            if fault is None:
                return False
            self._spend(fault)
            if fault.left:
                return False
            lines.append(self._fire(fault, f"the card left the reader after answering {fault.n} "
                                           "APDU(s)", apdu))
        self._leave(card, lines[-1])
        return True

    def _drop(self, fault: Fault) -> None:
        self._faults.remove(fault)
        self.armed = bool(self._faults)

    def _leave(self, card: _Card, why: str) -> None:
        self.remove(why)
        with contextlib.suppress(Exception):
            card.power_off()


# ------------------------------------------------------------------------------------- tearing
class _TearingStore:
    """The card's state store, with the power failing at the first write."""

    def __init__(self, inner: Any, after_write: bool) -> None:
        self._inner = inner
        self._after_write = after_write
        self.torn = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def write(self, state: dict[str, Any]) -> None:
        if self._after_write:
            self._inner.write(state)
        self.torn = True
        raise PowerLost


def torn_transmit(card: Any, apdu: bytes, *, after_write: bool = True) -> bool:
    """Run ``apdu`` on ``card`` and cut its power at the command's first write to the card's
    memory: just after it (``after_write``) or just before. Whatever happens, no answer leaves
    the card and it ends powered off. True when the command was torn at a write, False when it
    wrote nothing (a blocked PIN, a refused command): its answer is lost all the same."""
    store = getattr(card, "_store", None)
    tearing = _TearingStore(store, after_write) if store is not None else None
    if tearing is not None:
        card._store = tearing
    try:
        card.transmit(apdu)
    except PowerLost:
        pass
    finally:
        if tearing is not None:
            card._store = store
        with contextlib.suppress(Exception):
            card.power_off()
    return tearing is not None and tearing.torn


# ------------------------------------------------------------------------------ served cards
def _empty_document() -> dict[str, Any]:
    return {"format": PLAN_FORMAT, "serial": 0, "applied": 0, "next_id": 1, "faults": [],
            "fired": [], "present": True}


def _read_document(path: Path) -> dict[str, Any]:
    """``faults.json``, or an empty plan when there is none; FaultControlError when damaged."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return _empty_document()
    except (OSError, ValueError) as exc:
        raise FaultControlError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != PLAN_FORMAT or not isinstance(doc.get("faults"), list):
        raise FaultControlError(f"{path}: not a fault plan")
    for key in ("serial", "applied", "next_id"):
        if type(doc.get(key)) is not int:
            raise FaultControlError(f"{path}: {key} is not a number")
    return doc


def _write_document(path: Path, doc: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(doc, indent=1, sort_keys=True).encode())


class ServedFaults(_Verbs):
    """The fault verbs for a card served by another process (``jpki emulator serve``).

    Each verb edits ``faults.json`` in the card's ``directory``, calls ``notify`` (which signals
    the serving process) and waits up to ``timeout`` seconds until that process has applied it;
    :class:`FaultControlError` when it does not.
    """

    def __init__(self, directory: str | os.PathLike[str], notify: Callable[[], None], *,
                 timeout: float = 5.0, poll: float = 0.01,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(directory)
        self.path = self.directory / PLAN_FILE
        self.notify = notify
        self.timeout = timeout
        self.poll = poll
        self._sleep = sleep
        self._monotonic = monotonic

    def _request(self, edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        with locked(self.directory / PLAN_LOCK):
            doc = _read_document(self.path)
            edit(doc)
            doc["serial"] += 1
            serial = doc["serial"]
            _write_document(self.path, doc)
        self.notify()
        deadline = self._monotonic() + self.timeout
        while True:
            doc = _read_document(self.path)
            if doc["applied"] >= serial:
                return doc
            if self._monotonic() >= deadline:
                raise FaultControlError(f"the serving process did not apply {self.path} within "
                                        f"{self.timeout:g} s")
            self._sleep(self.poll)

    def _add(self, fault: Fault) -> Fault:
        def edit(doc: dict[str, Any]) -> None:
            fault.id = doc["next_id"]
            doc["next_id"] += 1
            if fault.kind == "latency":
                doc["faults"] = [f for f in doc["faults"] if f.get("kind") != "latency"]
            doc["faults"].append(fault.to_json())

        self._request(edit)
        return fault

    def clear(self) -> None:
        """Drop every fault of the served card."""
        self._request(lambda doc: doc.update(faults=[]))

    def describe(self) -> dict[str, Any]:
        """The served plan as data, fresh from the serving process (as :meth:`FaultPlan.describe`)."""
        doc = self._request(lambda doc: None)
        return {"present": doc.get("present", True), "faults": doc["faults"], "fired": doc["fired"]}


class PlanWatcher:
    """In the serving process: keeps each card's :class:`FaultPlan` and its ``faults.json`` in
    step. :meth:`request` (safe in a signal handler: it writes one byte to a socket pair) wakes
    a thread that, for each card, applies the file to the plan and writes the plan's state back
    with ``applied`` = the file's serial."""

    def __init__(self, cards: list[tuple[FaultPlan, Path]], logger: logging.Logger | None = None) -> None:
        self.cards = [(plan, Path(directory)) for plan, directory in cards]
        self.log = logger or log
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start afresh (a plan file left by an earlier run is dropped) and watch."""
        for plan, directory in self.cards:
            with locked(directory / PLAN_LOCK):
                _write_document(directory / PLAN_FILE, self._state(plan, _empty_document()))
        self._thread = threading.Thread(target=self._loop, name="fault-plans", daemon=True)
        self._thread.start()

    def request(self) -> None:
        with contextlib.suppress(OSError):  # full (wake-ups pending) or closed
            self._wake_w.send(b"\x00")

    def stop(self) -> None:
        """Stop watching and remove the plan files (a plan lives as long as its server)."""
        self._stopping = True
        self.request()
        if self._thread is not None:
            self._thread.join(5)
        for _, directory in self.cards:
            with contextlib.suppress(OSError), locked(directory / PLAN_LOCK):
                (directory / PLAN_FILE).unlink(missing_ok=True)
        self._wake_r.close()
        self._wake_w.close()

    def _loop(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping:
                sel.select()
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    while self._wake_r.recv(512):
                        pass
                if not self._stopping:
                    self.sync()

    def sync(self) -> None:
        """Apply each card's file to its plan; write the plans' state back."""
        for plan, directory in self.cards:
            try:
                with locked(directory / PLAN_LOCK):
                    doc = _read_document(directory / PLAN_FILE)
                    if doc["applied"] < doc["serial"]:
                        plan.replace([Fault.from_json(f) for f in doc["faults"]])
                    _write_document(directory / PLAN_FILE, self._state(plan, doc))
            except (FaultControlError, FaultSpecError, OSError) as exc:
                self.log.error("fault plan of %s not applied: %s", directory.name, exc)

    @staticmethod
    def _state(plan: FaultPlan, doc: dict[str, Any]) -> dict[str, Any]:
        view = plan.describe()
        ids = [f["id"] for f in view["faults"]]
        return {**doc, "applied": doc["serial"], "faults": view["faults"], "fired": view["fired"],
                "present": view["present"], "next_id": max([doc["next_id"], *(i + 1 for i in ids)])}


@contextlib.contextmanager
def watching(cards: list[tuple[FaultPlan, Path]]) -> Iterator[PlanWatcher]:
    """A started :class:`PlanWatcher`, stopped (its files removed) on exit."""
    watcher = PlanWatcher(cards)
    watcher.start()
    try:
        yield watcher
    finally:
        watcher.stop()
