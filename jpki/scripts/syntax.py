"""The APDU script language (docs/scripts.md): text → :class:`Script`, every error with its line.

One statement a line; ``#`` after a blank (or at the start) begins a comment::

    set AID = D392F000260100000001          # a variable: hex, "text", ${OTHER}, concatenated
    set PIN ?= "1234"                       # ?= only when not given already (--var, environment)
    step read the auth certificate          # a label for the commands that follow
    include common/select.apdu              # the statements of another script, here
    00 A4 04 0C [${AID}]                    # a command; [ … ] = its bytes after their length
    00 B0 00 00 04 => 9000 30 82 .. ..  -> HEAD, LEN=[2:4]
    00 20 00 80 => 63Cx                     # expected status word (x or . = any nibble; a|b)
    00 B0 00 00 00 => 9000 len=256          # or a byte pattern, /regex/ over the hex, @check

The parser knows no card and sends nothing: :func:`parse_script` / :func:`load_script` give a
:class:`Script` that :func:`jpki.scripts.run_script` runs over a transport.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

__all__ = ["Capture", "Command", "Expect", "Location", "Ref", "Script", "ScriptError", "SetVar",
           "Slice", "load_script", "parse_script"]

NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME = re.compile(NAME)
_SLICE = re.compile(r"\[\s*(-?\d+)?\s*(:)?\s*(-?\d+)?\s*\]")
_REF = re.compile(r"\$\{(" + NAME + r")(\[[^\]]*\])?\}")
_SET = re.compile(r"set\s+(" + NAME + r")\s*(\?=|=)(.*)\Z", re.S)
_NIBBLE = "0123456789ABCDEFabcdef.xX"
_HEX = "0123456789ABCDEFabcdef"
#: How deep includes may nest (a guard against a long chain; a cycle is caught by name).
MAX_INCLUDE_DEPTH = 16


@dataclass(frozen=True)
class Location:
    """Where a statement was written: the script's name (its path as given) and a 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class ScriptError(UsageError):
    """A script that cannot run as written: a syntax error, an include that cannot be read, a
    variable used before anything sets it, a ``@check`` nobody provides. A usage error (exit 2):
    raised before the first command is sent when it can be known then.

    ``path`` and ``line`` say where (``None`` when the script as a whole is at fault).
    """

    code = "script_error"

    def __init__(self, where: Location | None, problem: str) -> None:
        self.path = where.file if where is not None else None
        self.line = where.line if where is not None else None
        self.problem = problem
        super().__init__(f"{where}: {problem}" if where is not None else problem)


# ============================================================================= values
@dataclass(frozen=True)
class Slice:
    """``[a:b]``, ``[a:]``, ``[:b]`` or ``[a]`` (one byte): Python's indices, negative from the end."""

    start: int | None
    stop: int | None
    single: bool = False

    def apply(self, data: bytes) -> bytes | None:
        """The bytes it names, or None when they are not all there (``[2:4]`` of 3 bytes)."""
        n = len(data)
        if self.single:
            i = self.start if self.start is not None else 0
            i = i + n if i < 0 else i
            return data[i:i + 1] if 0 <= i < n else None
        start = 0 if self.start is None else (self.start + n if self.start < 0 else self.start)
        stop = n if self.stop is None else (self.stop + n if self.stop < 0 else self.stop)
        if not 0 <= start <= stop <= n:
            return None
        return data[start:stop]

    def __str__(self) -> str:
        if self.single:
            return f"[{self.start}]"
        return f"[{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}]"


def _slice(text: str, where: Location) -> Slice:
    m = _SLICE.fullmatch(text)
    if not m or (m[2] is None and m[1] is None):
        raise ScriptError(where, f"{text!r} is not a slice: write [a:b], [a:], [:b] or [a]")
    start = int(m[1]) if m[1] is not None else None
    stop = int(m[3]) if m[3] is not None else None
    if m[2] is None:
        return Slice(start, None, single=True)
    return Slice(start, stop)


@dataclass(frozen=True)
class Ref:
    """``${NAME}`` or ``${NAME[a:b]}``: a variable's bytes, or some of them."""

    name: str
    slice: Slice | None = None

    def __str__(self) -> str:
        return f"${{{self.name}{self.slice or ''}}}"


@dataclass(frozen=True)
class Lit:
    data: bytes


@dataclass(frozen=True)
class Prefixed:
    """``[ … ]`` in a command: one length byte, then the bytes inside (Lc + data)."""

    parts: tuple[Part, ...]


Part = Lit | Ref | Prefixed


def refs_of(parts: tuple[Part, ...]) -> list[Ref]:
    out: list[Ref] = []
    for part in parts:
        if isinstance(part, Ref):
            out.append(part)
        elif isinstance(part, Prefixed):
            out += refs_of(part.parts)
    return out


# ============================================================================= expectations
@dataclass(frozen=True)
class Byte:
    """One byte of a pattern: ``value`` where ``mask`` has bits (``3.`` = 0x30 under 0xF0)."""

    value: int
    mask: int


@dataclass(frozen=True)
class Star:
    """``*``: any bytes, maybe none."""


@dataclass(frozen=True)
class Repeat:
    """``ITEM{N}``: the item (a byte, a string, a variable) N times."""

    item: Byte | Lit | Ref
    count: int


PatternItem = Byte | Lit | Ref | Star | Repeat


@dataclass(frozen=True)
class Expect:
    """What a command must answer: a status word (alternatives; None = any) and, when given, a
    byte pattern, a regular expression over the data's hex, an exact length and named checks —
    all of which must hold. ``text`` is the expectation as written (for messages)."""

    text: str
    sw: tuple[tuple[int, int], ...] | None
    data: tuple[PatternItem, ...] | None = None
    regex: re.Pattern[str] | None = None
    length: int | None = None
    checks: tuple[str, ...] = ()

    def refs(self) -> list[Ref]:
        out: list[Ref] = []
        for item in self.data or ():
            inner = item.item if isinstance(item, Repeat) else item
            if isinstance(inner, Ref):
                out.append(inner)
        return out


#: A command without ``=>`` must answer 9000 (a script is a test: silence is not success).
DEFAULT_EXPECT = Expect("9000", ((0x9000, 0xFFFF),))


@dataclass(frozen=True)
class Capture:
    """``-> NAME`` (the whole data) or ``-> NAME=[a:b]``: response bytes into a variable."""

    name: str
    slice: Slice | None = None

    def __str__(self) -> str:
        return f"{self.name}={self.slice}" if self.slice is not None else self.name


# ============================================================================= statements
@dataclass(frozen=True)
class Command:
    """A command to send, what it must answer, what to keep of the answer."""

    where: Location
    parts: tuple[Part, ...]
    expect: Expect
    captures: tuple[Capture, ...] = ()
    #: the ``step`` label in force, if any
    label: str | None = None
    #: the command as written (without the comment)
    text: str = ""

    def refs(self) -> list[Ref]:
        return refs_of(self.parts)

    @property
    def spends_pin_try(self) -> bool:
        """A VERIFY / CHANGE / RESET RETRY COUNTER with data (an empty VERIFY asks the tries
        left and spends none). Judged from the literal bytes at the start of the command."""
        head = self.parts[0].data if self.parts and isinstance(self.parts[0], Lit) else b""
        if len(head) < 2:
            return True  # the INS comes from a variable: it may
        if head[1] not in (0x20, 0x21, 0x24, 0x2C):
            return False
        return len(self.parts) > 1 or len(head) > 5


@dataclass(frozen=True)
class SetVar:
    """``set NAME = VALUE`` (always) or ``set NAME ?= VALUE`` (only when not set yet)."""

    where: Location
    name: str
    parts: tuple[Part, ...]
    if_unset: bool = False


Statement = Command | SetVar


@dataclass(frozen=True)
class Script:
    """A parsed script: its statements in order, includes already in place."""

    name: str
    statements: tuple[Statement, ...]
    #: the files it read (itself first, when it is a file), for a caller that watches them
    files: tuple[str, ...] = field(default=())

    @property
    def commands(self) -> tuple[Command, ...]:
        return tuple(s for s in self.statements if isinstance(s, Command))

    def check(self, given: set[str] | frozenset[str], checks: set[str] | frozenset[str] = frozenset()) -> None:
        """Raise :class:`ScriptError` for the first variable used before anything can have set
        it (``given``, a ``set``, a capture of an earlier command) or ``@check`` not in ``checks``.
        Run before anything is sent, so that a script never stops half-way on a typo."""
        known = set(given)
        for st in self.statements:
            if isinstance(st, SetVar):
                _require(refs_of(st.parts), known, st.where)
                known.add(st.name)
                continue
            _require(st.refs(), known, st.where)
            _require(st.expect.refs(), known, st.where)
            for name in st.expect.checks:
                if name not in checks:
                    offered = ", ".join(f"@{c}" for c in sorted(checks)) or "none"
                    raise ScriptError(st.where, f"no check named @{name} (this run offers: {offered})")
            known.update(c.name for c in st.captures)


def _require(refs: list[Ref], known: set[str], where: Location) -> None:
    for ref in refs:
        if ref.name not in known:
            raise ScriptError(where, f"${{{ref.name}}} is not set: give it with a 'set' line before "
                                     f"this one, or from outside (jpki apdu --var {ref.name}=…)")


# ============================================================================= the line scanner
def _scan(raw: str, where: Location) -> tuple[str, int | None, int | None]:
    """The line without its comment, and where ``=>`` and ``->`` are in it (outside strings and
    regular expressions)."""
    i, n = 0, len(raw)
    arrow = capture = None
    quote = regex = False
    while i < n:
        c = raw[i]
        if quote or regex:
            if c == "\\":
                i += 2
                continue
            if (quote and c == '"') or (regex and c == "/"):
                quote = regex = False
        elif c == '"':
            quote = True
        elif c == "/" and arrow is not None and capture is None and (i == 0 or raw[i - 1].isspace()):
            regex = True
        elif c == "#" and (i == 0 or raw[i - 1].isspace()):
            n = i
            break
        elif raw.startswith("=>", i):
            if arrow is not None:
                raise ScriptError(where, "two '=>' on one line")
            if capture is not None:
                raise ScriptError(where, "'=>' (the expected answer) must come before '->' (captures)")
            arrow = i
            i += 2
            continue
        elif raw.startswith("->", i):
            if capture is not None:
                raise ScriptError(where, "two '->' on one line: list captures after one, separated by commas")
            capture = i
            i += 2
            continue
        i += 1
    if quote:
        raise ScriptError(where, 'a string has no closing "')
    if regex:
        raise ScriptError(where, "a /regular expression/ has no closing /")
    return raw[:n].rstrip(), arrow, capture


def _string(text: str, i: int, where: Location) -> tuple[bytes, int]:
    """A ``"…"`` string from ``text[i] == '"'``: its UTF-8 bytes (``\\"``, ``\\\\``, ``\\xHH``)."""
    out = bytearray()
    i += 1
    while i < len(text):
        c = text[i]
        if c == '"':
            return bytes(out), i + 1
        if c == "\\":
            nxt = text[i + 1:i + 2]
            if nxt in ('"', "\\"):
                out += nxt.encode()
                i += 2
                continue
            if nxt == "x" and len(text) >= i + 4 and all(h in _HEX for h in text[i + 2:i + 4]):
                out.append(int(text[i + 2:i + 4], 16))
                i += 4
                continue
            raise ScriptError(where, f"unknown escape \\{nxt} in a string (use \\\", \\\\ or \\xHH)")
        out += c.encode("utf-8")
        i += 1
    raise ScriptError(where, 'a string has no closing "')  # pragma: no cover - _scan saw it


def _ref(text: str, i: int, where: Location) -> tuple[Ref, int]:
    m = _REF.match(text, i)
    if not m:
        raise ScriptError(where, f"{text[i:i + 20]!r}…: write a variable as ${{NAME}} or ${{NAME[a:b]}}")
    return Ref(m[1], _slice(m[2], where) if m[2] else None), m.end()


def _bytes(text: str, where: Location, what: str) -> tuple[Part, ...]:
    """Hex (spaces anywhere between bytes), ``"text"``, ``${VAR}``, ``[ … ]`` → parts."""
    stack: list[list[Part]] = [[]]
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in _HEX:
            j = i
            while j < n and text[j] in _HEX:
                j += 1
            if j < n and not (text[j].isspace() or text[j] in '"$[]'):
                raise ScriptError(where, f"{text[i:j + 1]!r}: not hex ({what})")
            if (j - i) % 2:
                raise ScriptError(where, f"odd number of hex digits in {text[i:j]!r} ({what})")
            stack[-1].append(Lit(bytes.fromhex(text[i:j])))
            i = j
        elif c == '"':
            data, i = _string(text, i, where)
            stack[-1].append(Lit(data))
        elif c == "$":
            ref, i = _ref(text, i, where)
            stack[-1].append(ref)
        elif c == "[":
            stack.append([])
            i += 1
        elif c == "]":
            if len(stack) == 1:
                raise ScriptError(where, f"']' without '[' ({what})")
            inner = _merge(stack.pop())
            stack[-1].append(Prefixed(inner))
            i += 1
        else:
            raise ScriptError(where, f"unexpected {c!r} ({what}: hex, \"text\", ${{VAR}} or [ … ])")
    if len(stack) > 1:
        raise ScriptError(where, f"'[' without ']' ({what})")
    return _merge(stack[0])


def _merge(parts: list[Part]) -> tuple[Part, ...]:
    """Adjacent literals as one (so that a command's first part holds its header)."""
    out: list[Part] = []
    for part in parts:
        if isinstance(part, Lit) and out and isinstance(out[-1], Lit):
            out[-1] = Lit(out[-1].data + part.data)
        else:
            out.append(part)
    return tuple(out)


def _sw(token: str, where: Location) -> tuple[tuple[int, int], ...] | None:
    if token == "*":
        return None
    out = []
    for alt in token.split("|"):
        if len(alt) != 4 or any(c not in _NIBBLE for c in alt):
            raise ScriptError(where, f"{alt!r} is not a status word: 4 hex digits, x or . for any "
                                     "digit (63Cx), alternatives with | (9000|6282), * for any")
        out.append(_nibbles(alt))
    return tuple(out)


def _nibbles(text: str) -> tuple[int, int]:
    value = mask = 0
    for c in text:
        value, mask = value << 4, mask << 4
        if c in _HEX:
            value |= int(c, 16)
            mask |= 0xF
    return value, mask


def _expect(text: str, where: Location) -> Expect:
    text = text.strip()
    if not text:
        raise ScriptError(where, "'=>' needs a status word (9000, 63Cx, 6A82, * for any)")
    sw_token, *more = text.split(None, 1)
    rest = more[0] if more else ""
    sw = _sw(sw_token, where)
    items: list[PatternItem] = []
    regex: re.Pattern[str] | None = None
    length: int | None = None
    checks: list[str] = []
    i, n = 0, len(rest)
    while i < n:
        c = rest[i]
        if c.isspace():
            i += 1
        elif c in _NIBBLE:
            j = i
            while j < n and rest[j] in _NIBBLE:
                j += 1
            run = rest[i:j]
            if len(run) % 2:
                raise ScriptError(where, f"odd number of hex digits in {run!r} (a byte is two: "
                                         "hex, or . / x for any digit)")
            items += [Byte(*_nibbles(run[k:k + 2])) for k in range(0, len(run), 2)]
            i = j
        elif c == "*":
            items.append(Star())
            i += 1
        elif c == '"':
            data, i = _string(rest, i, where)
            items.append(Lit(data))
        elif c == "$":
            ref, i = _ref(rest, i, where)
            items.append(ref)
        elif c == "{":
            m = re.compile(r"\{(\d+)\}").match(rest, i)
            if not m:
                raise ScriptError(where, "a repeat is {N}, N a number: FF{16}, ..{128}")
            last = items[-1] if items else None
            if last is None or isinstance(last, Star | Repeat) or (i and rest[i - 1].isspace()):
                raise ScriptError(where, "{N} repeats the byte, string or variable right before it")
            items[-1] = Repeat(last, int(m[1]))
            i = m.end()
        elif c == "/" and (i == 0 or rest[i - 1].isspace()):
            j = i + 1
            while j < n and rest[j] != "/":
                j += 2 if rest[j] == "\\" else 1
            if j >= n:
                raise ScriptError(where, "a /regular expression/ has no closing /")
            if regex is not None:
                raise ScriptError(where, "one /regular expression/ per line")
            try:
                regex = re.compile(rest[i + 1:j], re.IGNORECASE)
            except re.error as exc:
                raise ScriptError(where, f"bad regular expression /{rest[i + 1:j]}/: {exc}") from None
            i = j + 1
        elif rest.startswith("len=", i):
            m = re.compile(r"len=(\d+)(?!\S)").match(rest, i)
            if not m:
                raise ScriptError(where, "len=N takes a number of bytes (len=256)")
            if length is not None:
                raise ScriptError(where, "one len=N per line")
            length = int(m[1])
            i = m.end()
        elif c == "@":
            m = re.compile("@(" + NAME + r")(?!\S)").match(rest, i)
            if not m:
                raise ScriptError(where, "a check is @NAME (letters, digits, _)")
            checks.append(m[1])
            i = m.end()
        else:
            raise ScriptError(where, f"unexpected {c!r} in the expected answer (hex with .. for any "
                                     "byte, *, \"text\", ${VAR}, {N}, /regex/, len=N, @check)")
    return Expect(text, sw, tuple(items) if items else None, regex, length, tuple(checks))


def _captures(text: str, where: Location) -> tuple[Capture, ...]:
    out: list[Capture] = []
    for chunk in text.split(","):
        chunk = chunk.strip()
        m = re.fullmatch("(" + NAME + r")(?:\s*=\s*(\[.*\]))?", chunk)
        if not m:
            raise ScriptError(where, f"{chunk!r} is not a capture: write NAME (all the data) or "
                                     "NAME=[a:b], several separated by commas")
        out.append(Capture(m[1], _slice(m[2], where) if m[2] else None))
    return tuple(out)


# ============================================================================= the parser
Loader = Callable[[Path], str]


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def parse_script(text: str, name: str = "<script>", *, base: str | os.PathLike[str] | None = None,
                 loader: Loader = _read) -> Script:
    """Parse a script. ``name`` names it in messages; ``include`` paths are relative to ``base``
    (default: the working folder) and read by ``loader``."""
    files: list[str] = []
    statements = _parse(text, name, Path(base) if base is not None else Path("."), loader, [], files)
    return Script(name, tuple(statements), tuple(files))


def load_script(path: str | os.PathLike[str], *, loader: Loader = _read) -> Script:
    """Read and parse a script file; includes are relative to its folder."""
    p = Path(path)
    try:
        text = loader(p)
    except (OSError, UnicodeDecodeError) as exc:
        raise ScriptError(None, f"cannot read the script {p}: {_why(exc)}") from None
    files = [str(p)]
    statements = _parse(text, str(p), p.parent, loader, [p.resolve()], files)
    return Script(str(p), tuple(statements), tuple(files))


def _why(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return "not UTF-8 text"


def _parse(text: str, name: str, base: Path, loader: Loader, stack: list[Path],
           files: list[str]) -> list[Statement]:
    out: list[Statement] = []
    label: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        where = Location(name, number)
        line, arrow, capture = _scan(raw, where)
        body = line.strip()
        if not body:
            continue
        word = body.split(None, 1)[0]
        if word in ("set", "include", "step"):
            if arrow is not None or capture is not None:
                raise ScriptError(where, f"'{word}' lines take no '=>' or '->'")
            rest = body[len(word):].strip()
            if word == "step":
                if not rest:
                    raise ScriptError(where, "'step' needs a name: step read the certificate")
                label = rest
            elif word == "set":
                m = _SET.match(body)
                if not m:
                    raise ScriptError(where, "write 'set NAME = VALUE' (or ?= to keep a value given "
                                             "from outside)")
                out.append(SetVar(where, m[1], _bytes(m[3], where, "a value"), m[2] == "?="))
            else:
                out += _include(rest, where, base, loader, stack, files, label)
            continue
        end = arrow if arrow is not None else capture if capture is not None else len(line)
        command_text = line[:end].strip()
        if not command_text:
            raise ScriptError(where, "a command line starts with the command's hex")
        parts = _bytes(command_text, where, "a command")
        expect = DEFAULT_EXPECT
        if arrow is not None:
            expect = _expect(line[arrow + 2:capture if capture is not None else len(line)], where)
        captures = _captures(line[capture + 2:], where) if capture is not None else ()
        out.append(Command(where, parts, expect, captures, label, command_text))
    return out


def _include(target: str, where: Location, base: Path, loader: Loader, stack: list[Path],
             files: list[str], label: str | None) -> list[Statement]:
    if not target:
        raise ScriptError(where, "'include' needs a file: include common.apdu")
    if target.startswith('"') and target.endswith('"') and len(target) >= 2:
        target = target[1:-1]
    path = base / target
    resolved = path.resolve()
    if resolved in stack:
        raise ScriptError(where, f"{target} includes itself (through {' -> '.join(p.name for p in stack)})")
    if len(stack) >= MAX_INCLUDE_DEPTH:
        raise ScriptError(where, f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
    try:
        text = loader(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ScriptError(where, f"cannot include {target}: {_why(exc)}") from None
    files.append(str(path))
    inner = _parse(text, str(path), path.parent, loader, [*stack, resolved], files)
    # the included file's labels stay inside it; a command it leaves unlabelled keeps ours
    return [st if not isinstance(st, Command) or st.label is not None else
            Command(st.where, st.parts, st.expect, st.captures, label, st.text) for st in inner]
