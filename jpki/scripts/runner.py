"""Running a parsed script over a transport: send, compare, capture; stop at the first mismatch.

Commands go to ``transport.transmit`` as written, one APDU each: no GET RESPONSE chaining, no Le
retry (``jpki.apdu`` does those for the sessions; a script tests the card's own answers). What a
result shows of a command and of an answer is what ``--trace`` shows (jpki.transport.trace): PIN
data, personal data and any run of 12 digits never leave the runner, also not in an error.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import JpkiError
from ..transport.base import Transport
from ..transport.trace import TracingTransport, parse_command
from .syntax import (
    Byte,
    Command,
    Expect,
    Lit,
    Location,
    Part,
    Ref,
    Repeat,
    Script,
    ScriptError,
    SetVar,
    Star,
)

__all__ = ["Check", "ScriptMismatchError", "ScriptRun", "StepResult", "run_script", "signature_check"]

#: A named check (``@NAME`` in an expectation): (command APDU, response data) -> holds?
Check = Callable[[bytes, bytes], bool]

#: Bytes of an answer an error message shows before it cuts (the trace shows them all).
SHOWN_BYTES = 48


@dataclass(frozen=True)
class StepResult:
    """One command of a run, as the trace shows it (redacted), and whether it answered as expected."""

    where: Location
    label: str | None
    #: the command and the answer (data, then SW) as ``--trace`` prints them
    command: str
    response: str
    sw: int
    #: the expectation as written
    expected: str
    #: None when it answered as expected, else what differed
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def got(self) -> str:
        """The answer in the order of an expectation: SW, then the data (cut when long)."""
        data = self.response[:-5].strip() if len(self.response) >= 5 else ""
        if data.count(" ") >= SHOWN_BYTES:
            total = data.count(" ") + 1
            data = " ".join(data.split(" ")[:SHOWN_BYTES]) + f" … ({total} bytes)"
        return f"{self.sw:04X}" + (f" {data}" if data else "")

    def to_json(self) -> dict[str, object]:
        return {"file": self.where.file, "line": self.where.line, "step": self.label,
                "command": self.command, "response": self.response, "sw": f"{self.sw:04X}",
                "expected": self.expected, "ok": self.ok,
                **({"problem": self.problem} if self.problem else {})}


class ScriptMismatchError(JpkiError):
    """A command answered other than the script expects (the script, as a test, failed).

    Carries the failing :class:`StepResult` (``result``: where, the command and the answer as
    traced, what was expected, ``problem``) and every result before it (``results``).
    """

    code = "script_mismatch"

    def __init__(self, result: StepResult, results: tuple[StepResult, ...]) -> None:
        self.result = result
        self.results = results
        self.path = result.where.file
        self.line = result.where.line
        self.reason = result.problem
        super().__init__(f"{result.where}: {result.command}: expected {result.expected}, "
                         f"got {result.got} ({result.problem})")


@dataclass(frozen=True)
class ScriptRun:
    """A run that went through: every result, and the variables at the end (captures included;
    they may hold PINs or personal data: never print them)."""

    script: Script
    results: tuple[StepResult, ...]
    variables: Mapping[str, bytes]


def run_script(script: Script, transport: Transport, *, variables: Mapping[str, bytes] | None = None,
               checks: Mapping[str, Check] | None = None,
               on_result: Callable[[StepResult], None] | None = None) -> ScriptRun:
    """Run ``script`` over ``transport`` (any: ``open_transport("emu:…"|"pcsc:…")``, a card object
    with ``transmit``). ``variables`` are the values given from outside (``--var``), ``checks``
    the ``@NAME`` predicates the script may use; ``on_result`` sees each result as it comes.

    Raises :class:`ScriptError` before sending anything when the script uses a variable nothing
    sets or a check not given, :class:`ScriptMismatchError` at the first answer that differs.
    """
    values: dict[str, bytes] = dict(variables or {})
    offered = dict(checks or {})
    script.check(frozenset(values), frozenset(offered))
    lines: list[str] = []
    tracer = TracingTransport(transport, lines.append)
    results: list[StepResult] = []
    for st in script.statements:
        if isinstance(st, SetVar):
            if not (st.if_unset and st.name in values):
                values[st.name] = evaluate(st.parts, values, st.where)
            continue
        result = _run_command(st, tracer, lines, values, offered)
        results.append(result)
        if on_result is not None:
            on_result(result)
        if not result.ok:
            raise ScriptMismatchError(result, tuple(results))
    return ScriptRun(script, tuple(results), values)


def _run_command(st: Command, tracer: TracingTransport, lines: list[str], values: dict[str, bytes],
                 checks: Mapping[str, Check]) -> StepResult:
    apdu = evaluate(st.parts, values, st.where)
    if len(apdu) < 4:
        raise ScriptError(st.where, f"a command has at least 4 bytes (CLA INS P1 P2), this one {len(apdu)}")
    lines.clear()
    rapdu = tracer.transmit(apdu)
    command, response = (line[3:] for line in lines[-2:])
    sw = int.from_bytes(rapdu[-2:], "big") if len(rapdu) >= 2 else -1

    def result(problem: str | None) -> StepResult:
        return StepResult(st.where, st.label, command, response, max(sw, 0), st.expect.text, problem)

    if sw < 0:
        return result(f"the card answered {len(rapdu)} byte(s), no status word")
    data = rapdu[:-2]
    problem = mismatch(st.expect, apdu, data, sw, values, checks, st.where)
    if problem is None:
        for capture in st.captures:
            taken = capture.slice.apply(data) if capture.slice is not None else data
            if taken is None:
                problem = f"capture {capture}: the data has {len(data)} bytes"
                break
            values[capture.name] = taken
    return result(problem)


# ============================================================================= evaluation
def _value(ref: Ref, values: Mapping[str, bytes], where: Location) -> bytes:
    if ref.name not in values:
        raise ScriptError(where, f"${{{ref.name}}} is not set")
    data = values[ref.name]
    if ref.slice is None:
        return data
    taken = ref.slice.apply(data)
    if taken is None:
        raise ScriptError(where, f"{ref}: {ref.name} has {len(data)} bytes")
    return taken


def evaluate(parts: tuple[Part, ...], values: Mapping[str, bytes], where: Location) -> bytes:
    """The bytes of a command or a ``set`` value, variables substituted, ``[ … ]`` length-prefixed."""
    out = bytearray()
    for part in parts:
        if isinstance(part, Lit):
            out += part.data
        elif isinstance(part, Ref):
            out += _value(part, values, where)
        else:
            inner = evaluate(part.parts, values, where)
            if len(inner) > 255:
                raise ScriptError(where, f"[ … ] holds {len(inner)} bytes: a short Lc is at most 255")
            out += bytes([len(inner)]) + inner
    return bytes(out)


_ANY = None  # a Star among the atoms


def _atoms(items: tuple[object, ...], values: Mapping[str, bytes], where: Location) -> list[tuple[int, int] | None]:
    """The pattern as (value, mask) bytes, None for each ``*``."""
    out: list[tuple[int, int] | None] = []
    for item in items:
        count = 1
        if isinstance(item, Repeat):
            count, item = item.count, item.item
        if isinstance(item, Star):
            out.append(_ANY)
            continue
        if isinstance(item, Byte):
            one: list[tuple[int, int] | None] = [(item.value, item.mask)]
        elif isinstance(item, Lit):
            one = [(b, 0xFF) for b in item.data]
        elif isinstance(item, Ref):
            one = [(b, 0xFF) for b in _value(item, values, where)]
        else:  # pragma: no cover - the parser makes no other item
            raise TypeError(item)
        out += one * count
    return out


def _segment_at(segment: list[tuple[int, int]], data: bytes, pos: int) -> bool:
    return all(data[pos + k] & mask == value & mask for k, (value, mask) in enumerate(segment))


def glob_match(atoms: list[tuple[int, int] | None], data: bytes) -> bool:
    """Do the bytes match? ``None`` atoms are ``*`` (any run, maybe empty): the first segment is
    anchored at the start, the last at the end, each one between at its leftmost place (which is
    enough for ``*``-only patterns)."""
    segments: list[list[tuple[int, int]]] = [[]]
    for atom in atoms:
        if atom is None:
            segments.append([])
        else:
            segments[-1].append(atom)
    if len(segments) == 1:
        return len(data) == len(segments[0]) and _segment_at(segments[0], data, 0)
    first, *middle, last = segments
    if len(first) + len(last) > len(data):
        return False
    if not (_segment_at(first, data, 0) and _segment_at(last, data, len(data) - len(last))):
        return False
    pos, end = len(first), len(data) - len(last)
    for segment in middle:
        found = next((p for p in range(pos, end - len(segment) + 1) if _segment_at(segment, data, p)), None)
        if found is None:
            return False
        pos = found + len(segment)
    return True


def mismatch(expect: Expect, command: bytes, data: bytes, sw: int, values: Mapping[str, bytes],
             checks: Mapping[str, Check], where: Location) -> str | None:
    """What differs between an answer (``data``, ``sw``) and ``expect``; None when nothing does."""
    if expect.sw is not None and not any(sw & mask == value & mask for value, mask in expect.sw):
        return "status word"
    if expect.length is not None and len(data) != expect.length:
        return f"length: {len(data)} bytes, not {expect.length}"
    if expect.data is not None and not glob_match(_atoms(expect.data, values, where), data):
        return "data"
    if expect.regex is not None and not expect.regex.fullmatch(data.hex().upper()):
        return f"data (/{expect.regex.pattern}/)"
    for name in expect.checks:
        if not checks[name](command, data):
            return f"check @{name}"
    return None


# ============================================================================= ready-made checks
def signature_check(public_key: object) -> Check:
    """A check for ``@NAME``: the data is a PKCS#1 v1.5 signature by ``public_key`` (an RSA public
    key of ``cryptography``) over the command's data field, the DigestInfo that COMPUTE DIGITAL
    SIGNATURE hands the card (which pads it as given, whatever hash it names)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    if not isinstance(public_key, rsa.RSAPublicKey):
        raise TypeError("signature_check takes an RSA public key")
    key = public_key

    def check(command: bytes, data: bytes) -> bool:
        parsed = parse_command(command)
        if parsed is None or not parsed.data:
            return False
        try:
            recovered = key.recover_data_from_signature(data, padding.PKCS1v15(), None)
        except (InvalidSignature, ValueError):
            return False
        return hmac.compare_digest(recovered, parsed.data)

    return check
