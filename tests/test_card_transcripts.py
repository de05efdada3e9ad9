"""Golden APDU transcripts (tests/transcripts/*.txt) replayed against a fresh emulated card.

Format, one exchange per ``C>``/``R<`` pair (``#`` lines and text after `` #`` are comments):

    C> 00A4040C 0A D392F000260100000001
    R< 9000

Response patterns: hex bytes (spaces anywhere); ``XX*N`` = byte XX repeated N times;
``<N bytes>`` = any N bytes; ``…`` = any bytes, possibly none; ``<cert NAME[a:b]>`` = bytes a..b
of a certificate EF as the spec wants it (the DER from the test CA's database, then FF filler;
NAME is auth, sign, auth-ca or sign-ca); ``<der NAME[a:b]>`` = bytes a..b of the DER alone (``b``
may be left out: to its end); ``<sig KEY>`` = 256 bytes that the KEY certificate's
public key maps back to the PKCS#1 type-1 padding of this command's data; ``<mynumber>`` and
``<vnum-b>`` = the holder's My Number / 照合番号B as ASCII (also usable in commands).
The status word is the last two bytes of every pattern.

A client reads an EF whose length only its header tells (a certificate, the card-surface EF) in a
number of READ BINARYs that depends on that length. ``C* CLIENT read`` replays those reads the way
the client's code does, from what the previous response said, each one expected to answer 9000;
``R*`` then matches the bytes they gave together (no status word):

    C> 00B0000007                # the first 7 bytes ...
    R< 3082 <5 bytes> 9000
    C* myna read_binary_all      # ... then the rest of the TLV, as jpki/myna reads it
    R* <der auth[7:]>

Clients: ``myna read_binary_all`` (jpki/myna src/reader.rs ``MynaReader::read_binary_all``: the
BER TLV's length from the 7 bytes read, the rest from offset 7; ``read_binary`` asks ``Le=00``
(256 bytes) while more than 255 remain, then exactly the rest) and ``opensc read_binary`` (OpenSC card-jpki.c
``jpki_select_file`` sizes a certificate EF as the 4-byte header's length + 4; ``sc_read_binary``
then reads the whole EF from offset 0 in reads of at most 256 bytes, ``Le=00`` for 256).

Header lines: ``# profile: NAME`` replays against alice's card made with that card profile
(card_emulator.profile.PROFILES); ``# source: REPO PATH FUNCTION`` names the client code a
sequence follows (every ``myna_*``/``opensc_*`` transcript has at least one).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from card_support import make_card
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from card_emulator.profile import PROFILES
from jpki.der import tlv_size
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
    r"|<der (?P<der>[a-z-]+)\[(?P<da>\d+):(?P<db>\d*)\]>"
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


def compile_pattern(text: str, ctx: Context, *, sw: bool = True) -> list:
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
        elif m["der"]:
            der = ctx.certs[m["der"]]
            items.append(Lit(der[int(m["da"]):int(m["db"]) if m["db"] else len(der)]))
        elif m["sig"]:
            items.append(Sig(m["sig"]))
        elif m["var"]:
            items.append(Lit(ctx.variables[m["var"]]))
        elif m["star"]:
            items.append(Star())
        else:
            items.append(Lit(bytes.fromhex(m["hex"])))
    # the SW: the last two literal bytes
    if sw:
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
    #: ``C*``/``R*``: reads a client makes (``command`` names the client and how it reads)
    reads: bool = False


@dataclass(frozen=True)
class Transcript:
    exchanges: list[Exchange]
    profile: str | None  # ``# profile: NAME``
    sources: list[str]  # ``# source: REPO PATH FUNCTION``


_PROFILE = re.compile(r"#\s*profile:\s*(\S+)")
_SOURCE = re.compile(r"#\s*source:\s*(\S+/\S+ \S+ \S.*)")


def parse(path: Path) -> Transcript:
    out: list[Exchange] = []
    pending: tuple[int, str, bool] | None = None
    profile, sources = None, []
    for no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if m := _PROFILE.match(raw.strip()):
            profile = m.group(1)
        elif m := _SOURCE.match(raw.strip()):
            sources.append(m.group(1))
        text = raw.split(" #", 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith(("C>", "C*")):
            assert pending is None, f"{path.name}:{no}: two commands in a row"
            pending = (no, text[2:].strip(), text[1] == "*")
        elif text.startswith(("R<", "R*")):
            assert pending is not None, f"{path.name}:{no}: answer without a command"
            assert (text[1] == "*") == pending[2], f"{path.name}:{no}: C* goes with R*, C> with R<"
            out.append(Exchange(pending[0], pending[1], text[2:].strip(), pending[2]))
            pending = None
        else:
            raise AssertionError(f"{path.name}:{no}: not a C>/R< line: {raw!r}")
    assert pending is None, f"{path.name}: last command has no answer"
    return Transcript(out, profile, sources)


def load(path: Path) -> list[Exchange]:
    return parse(path).exchanges


def client_reads(client: str, previous: bytes, data: bytes) -> list[bytes]:
    """The READ BINARYs ``client`` sends next, after the READ BINARY ``previous`` gave ``data``
    (see the module's docstring for where each way of reading comes from)."""
    if client == "myna read_binary_all":
        assert previous == bytes.fromhex("00B0000007"), "myna reads 7 bytes first"
        needed = tlv_size(data) - len(data)  # asn1-rs's Needed::Size: what the TLV still lacks
        pos, end = 7, 7 + needed
    elif client == "opensc read_binary":
        assert previous == bytes.fromhex("00B0000004"), "OpenSC reads the 4-byte header first"
        pos, end = 0, (data[2] << 8 | data[3]) + 4
    else:
        raise AssertionError(f"unknown client reads {client!r}")
    commands = []
    while pos < end:
        n = min(256, end - pos)  # Le 00 asks for 256
        commands.append(bytes([0x00, 0xB0, pos >> 8, pos & 0xFF, n & 0xFF]))
        pos += n
    return commands


def replay(card, exchanges: list[Exchange], ctx: Context, name: str = "") -> None:
    previous, data = b"", b""
    for ex in exchanges:
        if ex.reads:
            got = b""
            for apdu in client_reads(ex.command, previous, data):
                r = card.transmit(apdu)
                assert r[-2:] == b"\x90\x00" and len(r) - 2 == (apdu[4] or 256), (
                    f"{name}:{ex.line}: C> {apdu.hex().upper()}\n  got {r.hex().upper()}")
                got += r[:-2]
            assert match(compile_pattern(ex.response, ctx, sw=False), got, ctx), (
                f"{name}:{ex.line}: {ex.command}\n  expected {ex.response}\n  got      {got.hex().upper()}")
            previous, data = b"", got
            continue
        apdu = bytes.fromhex(substitute(ex.command, ctx).replace(" ", ""))
        r = card.transmit(apdu)
        items = compile_pattern(ex.response, ctx)
        assert match(items, r, ctx, command_data(apdu)), (
            f"{name}:{ex.line}: C> {apdu.hex().upper()}\n  expected {ex.response}\n"
            f"  got      {r.hex().upper()}")
        previous, data = apdu, r[:-2]


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
#: the clients whose every APDU sequence has a transcript (issue 12), by file name prefix
CLIENT_TRANSCRIPTS = {
    "myna_text", "myna_visual", "myna_pin", "myna_jpki", "myna_jpki_smartphone", "myna_unknown",
    "myna_fido", "myna_mpa", "opensc_pkcs15",
}


def test_transcripts_exist():
    names = {p.stem for p in TRANSCRIPT_FILES}
    assert names >= {"jpki_ap", "text_ap"} | CLIENT_TRANSCRIPTS


@pytest.mark.parametrize("path", [p for p in TRANSCRIPT_FILES if p.stem.startswith(("myna_", "opensc_"))],
                         ids=lambda p: p.name)
def test_client_transcripts_cite_their_source(path):
    """Each client transcript names the code it follows: repository, path, function."""
    sources = parse(path).sources
    assert sources, f"{path.name} has no '# source: REPO PATH FUNCTION' line"
    repo = "jpki/myna" if path.stem.startswith("myna_") else "OpenSC/OpenSC"
    for source in sources:
        named_repo, file, function = source.split(" ", 2)
        assert named_repo == repo and "/" in file and "." in file and function, source


@pytest.fixture
def card_for(home, tmp_path, emu_card):
    """The card a transcript runs on: alice's, or alice's made with the transcript's profile."""
    opened = []

    def get(profile: str | None):
        if profile is None:
            return emu_card
        card = make_card(home, tmp_path / profile, PROFILES[profile])
        opened.append(card)
        return card

    yield get
    for card in opened:
        card.close()


@pytest.mark.parametrize("path", TRANSCRIPT_FILES, ids=lambda p: p.name)
def test_replay(card_for, ctx, path):
    transcript = parse(path)
    assert len(transcript.exchanges) >= 5
    replay(card_for(transcript.profile), transcript.exchanges, ctx, path.name)


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
def test_a_wrong_transcript_fails(card_for, ctx, path):
    """Replay stops at the first exchange whose answer differs from the transcript: the last
    plain exchange, expected to answer 6F00 (which the card never does here)."""
    transcript = parse(path)
    exchanges = transcript.exchanges
    i = max(k for k, e in enumerate(exchanges) if not e.reads)
    broken = [*exchanges[:i], Exchange(exchanges[i].line, exchanges[i].command, "6F00")]
    with pytest.raises(AssertionError, match=f"{path.name}:{exchanges[i].line}"):
        replay(card_for(transcript.profile), broken, ctx, path.name)


def test_client_reads_replay_the_clients_arithmetic(emu_card, ctx):
    """``C* … read`` issues what the client would: myna's 255-byte steps from offset 7, OpenSC's
    256-byte steps from 0 up to the header's length + 4; a wrong R* fails."""
    der = ctx.certs["auth"]
    assert 1024 < len(der) < 1800
    tail = (len(der) - 7) % 256 or 256
    myna = client_reads("myna read_binary_all", bytes.fromhex("00B0000007"), der[:7])
    assert [c.hex().upper() for c in myna[:3]] == ["00B0000700", "00B0010700", "00B0020700"]
    assert myna[-1] == bytes([0, 0xB0, (len(der) - tail) >> 8, (len(der) - tail) & 0xFF, tail & 0xFF])
    opensc = client_reads("opensc read_binary", bytes.fromhex("00B0000004"), der[:4])
    assert [c.hex().upper() for c in opensc[:3]] == ["00B0000000", "00B0010000", "00B0020000"]
    assert 256 * (len(opensc) - 1) + (opensc[-1][4] or 256) == len(der)
    good = [Exchange(1, "00A4040C0AD392F000260100000001", "9000"), Exchange(2, "00A4020C02000A", "9000"),
            Exchange(3, "00B0000007", "<der auth[0:7]> 9000"),
            Exchange(4, "myna read_binary_all", "<der auth[7:]>", reads=True)]
    replay(emu_card, good, ctx, "good")
    bad = [*good[:3], Exchange(4, "myna read_binary_all", "<der auth-ca[7:]>", reads=True)]
    with pytest.raises(AssertionError, match="bad:4"):
        replay(emu_card, bad, ctx, "bad")


def test_load_rejects_malformed_transcripts(tmp_path):
    bad = tmp_path / "bad.txt"
    for text in ("C> 00A4\nC> 00A4\nR< 9000\n", "R< 9000\n", "C> 00A4\n", "X> 00\n",
                 "C* myna read_binary_all\nR< 9000\n", "C> 00B0000007\nR* …\n"):
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(AssertionError):
            load(bad)
