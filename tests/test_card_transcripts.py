"""Golden APDU transcripts (tests/transcripts/*.txt) replayed against a fresh emulated card.

Format, one exchange per ``C>``/``R<`` pair (``#`` lines and text after `` #`` are comments):

    C> 00A4040C 0A D392F000260100000001
    R< 9000

Response patterns: hex bytes (spaces anywhere); ``XX*N`` = byte XX repeated N times;
``<N bytes>`` = any N bytes; ``…`` = any bytes, possibly none; ``<cert NAME[a:b]>`` = bytes a..b
of a certificate EF as the spec wants it (the DER from the test CA's database, then FF filler;
NAME is auth, sign, auth-ca or sign-ca); ``<sig KEY>`` = 256 bytes that the KEY certificate's
public key maps back to the PKCS#1 type-1 padding of this command's data; ``<mynumber>`` and
``<vnum-b>`` = the holder's My Number / 照合番号B as ASCII (also usable in commands).
The status word is the last two bytes of every pattern.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from jpki.pki import TestCA

TRANSCRIPTS = Path(__file__).parent / "transcripts"
EF_SIZE = 2048  # the smallest certificate EF the spec's clients can rely on reading up to
FILLER = 0xFF


# ============================================================================= the pattern language
@dataclass(frozen=True)
class Lit:
    data: bytes


@dataclass(frozen=True)
class Any_:
    n: int


@dataclass(frozen=True)
class Star:
    pass


@dataclass(frozen=True)
class Sig:
    key: str


_TOKEN = re.compile(
    r"\s*(?:(?P<rep>[0-9A-Fa-f]{2})\*(?P<count>\d+)"
    r"|<(?P<any>\d+) bytes?>"
    r"|<cert (?P<cert>[a-z-]+)\[(?P<a>\d+):(?P<b>\d+)\]>"
    r"|<sig (?P<sig>auth|sign)>"
    r"|<(?P<var>mynumber|vnum-b)>"
    r"|(?P<star>…|\.\.\.)"
    r"|(?P<hex>(?:[0-9A-Fa-f]{2})+))"
)


@dataclass
class Context:
    certs: dict[str, bytes]  # name -> DER
    public: dict[str, tuple[int, int]]  # key name -> (e, n)
    variables: dict[str, bytes]  # mynumber / vnum-b -> ASCII

    def cert_ef(self, name: str) -> bytes:
        der = self.certs[name]
        assert len(der) < EF_SIZE
        return der + bytes([FILLER]) * (EF_SIZE - len(der))


def substitute(text: str, ctx: Context) -> str:
    return re.sub(r"<(mynumber|vnum-b)>", lambda m: ctx.variables[m.group(1)].hex(), text)


def compile_pattern(text: str, ctx: Context) -> list:
    items: list = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"bad pattern at {text[pos:]!r}")
        pos = m.end()
        if m["rep"]:
            items.append(Lit(bytes.fromhex(m["rep"]) * int(m["count"])))
        elif m["any"]:
            items.append(Any_(int(m["any"])))
        elif m["cert"]:
            items.append(Lit(ctx.cert_ef(m["cert"])[int(m["a"]):int(m["b"])]))
        elif m["sig"]:
            items.append(Sig(m["sig"]))
        elif m["var"]:
            items.append(Lit(ctx.variables[m["var"]]))
        elif m["star"]:
            items.append(Star())
        else:
            items.append(Lit(bytes.fromhex(m["hex"])))
    # the SW: the last two literal bytes
    assert items and isinstance(items[-1], Lit) and len(items[-1].data) >= 2, f"no SW in {text!r}"
    return items


def match(items: list, data: bytes, ctx: Context, command_data: bytes = b"") -> bool:
    """Does ``data`` (the whole R-APDU) match the compiled pattern? Backtracks over ``…``."""
    def rec(i: int, pos: int) -> bool:
        if i == len(items):
            return pos == len(data)
        item = items[i]
        if isinstance(item, Lit):
            return data.startswith(item.data, pos) and rec(i + 1, pos + len(item.data))
        if isinstance(item, Any_):
            return pos + item.n <= len(data) and rec(i + 1, pos + item.n)
        if isinstance(item, Sig):
            sig = data[pos:pos + 256]
            if len(sig) != 256:
                return False
            e, n = ctx.public[item.key]
            k = 256
            if not 1 <= len(command_data) <= k - 11:
                return False
            em = b"\x00\x01" + b"\xff" * (k - 3 - len(command_data)) + b"\x00" + command_data
            return pow(int.from_bytes(sig, "big"), e, n) == int.from_bytes(em, "big") and rec(i + 1, pos + 256)
        return any(rec(i + 1, p) for p in range(pos, len(data) + 1))  # Star

    return rec(0, 0)


def command_data(apdu: bytes) -> bytes:
    """The data field of a case 3/4 command (short or extended); b'' otherwise."""
    if len(apdu) <= 5:
        return b""
    if apdu[4] != 0:
        return apdu[5:5 + apdu[4]]
    if len(apdu) >= 7:
        return apdu[7:7 + int.from_bytes(apdu[5:7], "big")]
    return b""


# ============================================================================= transcripts
@dataclass(frozen=True)
class Exchange:
    line: int
    command: str
    response: str


def load(path: Path) -> list[Exchange]:
    out: list[Exchange] = []
    pending: tuple[int, str] | None = None
    for no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = raw.split(" #", 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("C>"):
            assert pending is None, f"{path.name}:{no}: two commands in a row"
            pending = (no, text[2:].strip())
        elif text.startswith("R<"):
            assert pending is not None, f"{path.name}:{no}: answer without a command"
            out.append(Exchange(pending[0], pending[1], text[2:].strip()))
            pending = None
        else:
            raise AssertionError(f"{path.name}:{no}: not a C>/R< line: {raw!r}")
    assert pending is None, f"{path.name}: last command has no answer"
    return out


def replay(card, exchanges: list[Exchange], ctx: Context, name: str = "") -> None:
    for ex in exchanges:
        apdu = bytes.fromhex(substitute(ex.command, ctx).replace(" ", ""))
        r = card.transmit(apdu)
        items = compile_pattern(ex.response, ctx)
        assert match(items, r, ctx, command_data(apdu)), (
            f"{name}:{ex.line}: C> {apdu.hex().upper()}\n  expected {ex.response}\n"
            f"  got      {r.hex().upper()}")


@pytest.fixture
def ctx(home, card_dir) -> Context:
    info = json.loads((home / "holders" / "alice.json").read_text(encoding="utf-8"))
    ca = TestCA.open(home / "ca")
    try:
        der = serialization.Encoding.DER
        certs = {"auth": ca.db.get(info["auth_serial"]).der, "sign": ca.db.get(info["sign_serial"]).der,
                 "auth-ca": ca.auth_ca_cert.public_bytes(der), "sign-ca": ca.sign_ca_cert.public_bytes(der)}
    finally:
        ca.close()
    public = {}
    for name in ("auth", "sign"):
        nums = x509.load_der_x509_certificate(certs[name]).public_key().public_numbers()
        public[name] = (nums.e, nums.n)
    birth = dt.date.fromisoformat(info["persona"]["birth_date"])
    assert dt.date(1989, 1, 8) <= birth < dt.date(2019, 5, 1)  # Heisei: era year = year - 1988
    expiry = dt.date.fromisoformat(info["card_expiry"])
    vnum_b = f"{birth.year - 1988:02d}{birth:%m%d}{expiry.year:04d}{info['security_code']}"
    return Context(certs, public, {"mynumber": info["persona"]["my_number"].encode(),
                                   "vnum-b": vnum_b.encode()})


TRANSCRIPT_FILES = sorted(TRANSCRIPTS.glob("*.txt"))


def test_transcripts_exist():
    assert {p.name for p in TRANSCRIPT_FILES} >= {"jpki_ap.txt", "text_ap.txt"}


@pytest.mark.parametrize("path", TRANSCRIPT_FILES, ids=lambda p: p.name)
def test_replay(emu_card, ctx, path):
    exchanges = load(path)
    assert len(exchanges) >= 30
    replay(emu_card, exchanges, ctx, path.name)


def test_jpki_transcript_covers_the_openSC_flow():
    commands = [e.command.replace(" ", "").upper() for e in load(TRANSCRIPTS / "jpki_ap.txt")]
    select_ap = "00A4040C0AD392F000260100000001"
    assert commands.count(select_ap) >= 2, "bind, and log out by re-selecting the AP"
    for fid in ("000A", "0001", "000B", "0002"):
        i = commands.index("00A4020C02" + fid)
        assert commands[i + 1] == "00B0000004", f"4-byte header read of {fid}"
    assert commands.count("00200080") >= 4, "empty VERIFYs for the tries left"
    assert "0020008004" + b"1234".hex().upper() in commands
    assert "0020008006" + b"ABC123".hex().upper() in commands
    assert sum(c.startswith("802A0080") for c in commands) >= 4
    last_select = len(commands) - 1 - commands[::-1].index(select_ap)
    assert any(c.startswith("802A0080") for c in commands[last_select:]), "sign after the logout"


# ============================================================================= the checker checks
def test_patterns_match_and_mismatch(ctx):
    def m(pattern: str, data: str, cmd: bytes = b"") -> bool:
        return match(compile_pattern(pattern, ctx), bytes.fromhex(data), ctx, cmd)

    assert m("9000", "9000") and not m("9000", "6A82") and not m("9000", "009000")
    assert m("<4 bytes> 9000", "308205469000") and not m("<4 bytes> 9000", "3082059000")
    assert m("AB*3 9000", "ABABAB9000") and not m("AB*3 9000", "ABAB9000")
    assert m("FF40 … 9000", "FF409000") and m("FF40 … 9000", "FF4001029000")
    assert not m("FF40 … 9000", "FF419000")
    assert m("… 01 … 9000", "0001009000") and not m("… 01 … 9000", "0000009000")
    header = ctx.certs["auth"][:4].hex()
    assert m("<cert auth[0:4]> 9000", header + "9000")
    assert not m("<cert auth[0:4]> 9000", "30820000" + "9000")
    assert m("<cert auth[2040:2048]> 9000", "FF" * 8 + "9000")
    assert m("FF100C <mynumber> FFFF 9000", "FF100C" + ctx.variables["mynumber"].hex() + "FFFF9000")
    assert not m("FF100C <mynumber> FFFF 9000", "FF100C" + b"000000000000".hex() + "FFFF9000")
    assert not m("<sig auth> 9000", "00" * 256 + "9000", b"\x01")
    with pytest.raises(ValueError):
        compile_pattern("zz 9000", ctx)
    with pytest.raises(AssertionError):
        compile_pattern("<4 bytes>", ctx)


def test_signature_placeholder_checks_the_key(emu_card, ctx):
    from card_emulator import MyNumberCard  # noqa: F401  (the card under test)

    for apdu in ("00A4040C0AD392F000260100000001", "0020009804" + b"1234".hex()):
        assert emu_card.transmit(bytes.fromhex(apdu)) == b"\x90\x00"
    data = bytes.fromhex("0102030405")
    r = emu_card.transmit(bytes.fromhex("802A009705") + data + b"\x00")
    assert match(compile_pattern("<sig auth> 9000", ctx), r, ctx, data)
    assert not match(compile_pattern("<sig sign> 9000", ctx), r, ctx, data)
    assert not match(compile_pattern("<sig auth> 9000", ctx), r, ctx, data + b"\x00")


@pytest.mark.parametrize("path", TRANSCRIPT_FILES, ids=lambda p: p.name)
def test_a_wrong_transcript_fails(emu_card, ctx, path):
    """Replay stops at the first exchange whose answer differs from the transcript."""
    exchanges = load(path)
    i = next(k for k, e in enumerate(exchanges) if e.response == "6982")
    broken = [*exchanges[:i], Exchange(exchanges[i].line, exchanges[i].command, "9000")]
    with pytest.raises(AssertionError, match=f"{path.name}:{exchanges[i].line}"):
        replay(emu_card, broken, ctx, path.name)


def test_load_rejects_malformed_transcripts(tmp_path):
    bad = tmp_path / "bad.txt"
    for text in ("C> 00A4\nC> 00A4\nR< 9000\n", "R< 9000\n", "C> 00A4\n", "X> 00\n"):
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(AssertionError):
            load(bad)
