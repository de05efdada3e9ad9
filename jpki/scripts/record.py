"""Recording a session as an APDU script that replays as a test (``jpki --record FILE …``).

What a recording keeps and what it masks (docs/scripts.md, "Recording"):

- every command, byte for byte — but the data of a PIN command (VERIFY, CHANGE REFERENCE DATA,
  RESET RETRY COUNTER) becomes a variable named after the PIN (``[${AUTH_PIN}]``, a different
  value of the same PIN ``${AUTH_PIN_2}``), and a run of 12 ASCII digits (a My Number) in any
  other command ``${MYNUMBER}``: the transcript never holds a PIN or a My Number, and replays
  with them given from outside;
- every status word;
- the data of an answer as exact hex when ``--trace`` would show it (public files of the JPKI AP),
  else only its length, ``len=N``: the My Number, the basic 4 info, the signing certificate (it
  names the holder), any answer with 12 digits in it, anything the tracer cannot place; and
  signatures, challenges and internal authentication (they differ at every run).

The placing of answers is the tracer's (jpki.transport.trace): the recorder follows the card the
same way, so that it can only ever mask more than the trace, never less.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from ..pins import PINS
from ..session import JPKI_AID, TEXT_AID
from ..transport.base import Transport
from ..transport.trace import UNKNOWN, TracingTransport, parse_command

__all__ = ["Recorder", "RecordingTransport"]

_APPLICATIONS = {"jpki": JPKI_AID, "text": TEXT_AID}
#: VERIFY (both forms), CHANGE REFERENCE DATA, RESET RETRY COUNTER: their data are PINs.
_PIN_INS = {0x20, 0x21, 0x24, 0x2C}
#: Answers that differ at every run: a signature (PSO / COMPUTE DIGITAL SIGNATURE), GET CHALLENGE,
#: INTERNAL AUTHENTICATE.
_VOLATILE_INS = {0x2A, 0x84, 0x88}
_GET_RESPONSE = 0xC0
_TWELVE_DIGITS = re.compile(rb"(?<![0-9])[0-9]{12}(?![0-9])")
#: The column where ``=>`` starts, when the command is shorter.
_ARROW_COLUMN = 44

HEADER = """\
# An APDU script recorded by `jpki --record` (docs/scripts.md); replay it as a test with
#   jpki --card CARD apdu --script FILE
# Masked: PIN data is a variable (${AUTH_PIN}, ${SIGN_PIN}, ${CARD_PIN}…: give them with
# --var NAME=VALUE or $JPKI_AUTH_PIN / $JPKI_SIGN_PIN / $JPKI_CARD_PIN), a My Number in a
# command ${MYNUMBER}; answers holding personal data, signatures and challenges keep only
# their length (len=N). Nothing here is a PIN or a My Number."""


@dataclass
class Recorder:
    """The script of one CLI run: sessions (one per card opened), their commands and answers.

    Secrets stay out of it by construction: a PIN's value is only ever hashed (to tell a second,
    different value of the same PIN from the first), never stored or written.
    """

    lines: list[str] = field(default_factory=list)
    sessions: int = 0
    commands: int = 0
    #: (variable base name, SHA-256 of a value) -> variable name, e.g. AUTH_PIN / AUTH_PIN_2
    _names: dict[tuple[str, bytes], str] = field(default_factory=dict, repr=False)

    def wrap(self, transport: Transport, label: str) -> RecordingTransport:
        """A transport that records what goes through it, as a new session named ``label``."""
        self.sessions += 1
        self.lines += ["", f"step {label}" + (f" (card session {self.sessions})" if self.sessions > 1 else "")]
        return RecordingTransport(transport, self)

    def add(self, line: str) -> None:
        self.lines.append(line)

    def name_for(self, base: str, value: bytes) -> str:
        """``base`` for the first value it names, ``base_2``, ``base_3``… for other values."""
        key = (base, hashlib.sha256(value).digest())
        if key not in self._names:
            taken = sum(1 for b, _ in self._names if b == base)
            self._names[key] = base if not taken else f"{base}_{taken + 1}"
        return self._names[key]

    def text(self) -> str:
        return HEADER + "\n" + "\n".join(self.lines) + "\n"


def _hex(data: bytes) -> str:
    return data.hex().upper()


class RecordingTransport(TracingTransport):
    """Records each exchange as one script line. A TracingTransport that prints nothing: it uses
    the tracer's way of following the card (which application and EF) to tell private answers."""

    def __init__(self, inner: Transport, recorder: Recorder) -> None:
        super().__init__(inner, lambda _line: None)
        self.recorder = recorder
        self._volatile = False  # the last answer differs at every run: so does its GET RESPONSE

    def transmit(self, apdu: bytes) -> bytes:
        apdu = bytes(apdu)
        command = self.command_text(apdu)
        try:
            rapdu = bytes(self.inner.transmit(apdu))
        except Exception as exc:
            self.recorder.add(f"# {command}: no answer ({type(exc).__name__}: {exc})")
            raise
        shown = self.redact_response(apdu, rapdu)  # also follows the card
        self.recorder.commands += 1
        self.recorder.add(command.ljust(_ARROW_COLUMN - 1) + " => " + self.answer_text(apdu, rapdu, shown))
        return rapdu

    # ------------------------------------------------------------------ commands
    def command_text(self, apdu: bytes) -> str:
        """The command as a script writes it, secrets replaced by variables."""
        head = " ".join(f"{b:02X}" for b in apdu[:5])
        ins = apdu[1] if len(apdu) >= 2 else None
        if ins in _PIN_INS and len(apdu) > 5:
            return self._pin_command(apdu)
        rest = apdu[5:]
        pieces: list[str] = []
        pos = 0
        for m in _TWELVE_DIGITS.finditer(rest):
            pieces += [_hex(rest[pos:m.start()]), f"${{{self.recorder.name_for('MYNUMBER', m.group())}}}"]
            pos = m.end()
        pieces.append(_hex(rest[pos:]))
        return " ".join(p for p in (head, *pieces) if p)

    def _pin_command(self, apdu: bytes) -> str:
        cmd = parse_command(apdu)
        if cmd is None:  # cannot tell the data from the rest: keep only the header
            return f"{' '.join(f'{b:02X}' for b in apdu[:4])} ${{UNREADABLE_PIN_COMMAND}}"
        kind = self._pin_kind(cmd.p2)
        base = f"{kind.upper()}_PIN" if kind else "PIN"
        if cmd.ins == 0x20:
            value = f"${{{self.recorder.name_for(base, cmd.data)}}}"
        elif cmd.ins == 0x24 and cmd.p1 == 0x01:  # the new PIN only
            value = f"${{{self.recorder.name_for('NEW_' + base, cmd.data)}}}"
        else:  # old and new together, a VERIFY with BER data, a RESET: one opaque variable
            value = f"${{{self.recorder.name_for(base + '_DATA', cmd.data)}}}"
        header = " ".join(f"{b:02X}" for b in apdu[:4])
        le = apdu[cmd.header_len + len(cmd.data):]
        tail = f" {_hex(le)}" if le else ""
        if cmd.header_len == 5:
            return f"{header} [{value}]{tail}"
        return f"{header} {_hex(apdu[4:7])} {value}{tail}"  # extended Lc: as recorded

    def _pin_kind(self, p2: int) -> str | None:
        """The PIN a VERIFY's P2 names (``80|SFI``, or ``80`` = the current EF), by jpki.pins."""
        aid, fid = self.position
        if p2 & 0x80 and p2 & 0x1F:
            fid = p2 & 0x1F
        elif p2 != 0x80:
            return None
        if fid is UNKNOWN or fid is None or aid is UNKNOWN or aid is None:
            return None
        for kind, spec in PINS.items():
            if _APPLICATIONS.get(spec.application) == aid and spec.fid == fid:
                return kind
        return None

    # ------------------------------------------------------------------ answers
    def answer_text(self, apdu: bytes, rapdu: bytes, shown: str) -> str:
        """``SW`` then the data as hex, or ``len=N`` when the trace hid it or it varies."""
        if len(rapdu) < 2:
            return f"*   # the card answered {len(rapdu)} byte(s), no status word"
        data, sw = rapdu[:-2], rapdu[-2:]
        ins = apdu[1] if len(apdu) >= 2 else None
        if ins != _GET_RESPONSE:
            self._volatile = ins in _VOLATILE_INS
        if not data:
            return _hex(sw)
        exact = (data + sw).hex(" ").upper()
        if self._volatile or shown != exact:
            return f"{_hex(sw)} len={len(data)}"
        return f"{_hex(sw)} {_hex(data)}"
