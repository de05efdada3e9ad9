"""TracingTransport and the CLI's --trace: APDUs are shown, PINs and personal data never are."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cryptography import x509

from jpki.errors import PinIncorrectError
from jpki.session import TEXT_AID, CardInfoSession, JpkiSession
from jpki.transport import TracingTransport, open_transport

JPKI_AID_HEX = "D3 92 F0 00 26 01 00 00 00 01"
TEXT_AID_HEX = "D3 92 10 00 31 00 01 01 04 08"
TWELVE_DIGITS = re.compile(rb"(?<![0-9])[0-9]{12}(?![0-9])")


def hexs(b: bytes) -> str:
    return b.hex(" ").upper()


def holder(home: Path) -> dict:
    return json.loads((home / "holders" / "alice.json").read_text(encoding="utf-8"))


def assert_absent(trace: str, *secrets: str | bytes) -> None:
    """Neither the text nor its hex dump (as the trace prints it) may appear."""
    for secret in secrets:
        raw = secret.encode() if isinstance(secret, str) else secret
        assert hexs(raw) not in trace, f"hex of {secret!r} in the trace"
        if isinstance(secret, str):
            assert secret not in trace, f"{secret!r} in the trace"


def open_traced(home: Path) -> tuple[TracingTransport, list[str]]:
    lines: list[str] = []
    t = open_transport("emu:alice", home=home, trace=lines.append)
    assert isinstance(t, TracingTransport)
    return t, lines


class FakeInner:
    """A scripted card for the tracer: answers are looked up by INS (default 9000)."""

    def __init__(self, answers: dict[int, list[bytes]] | None = None) -> None:
        self.answers = answers or {}

    def transmit(self, apdu: bytes) -> bytes:
        queue = self.answers.get(apdu[1])
        return queue.pop(0) if queue else b"\x90\x00"

    def close(self) -> None:
        pass

    atr = b"\x3b\x00"
    description = "fake"


# --------------------------------------------------------------------------- over the emulator

def test_every_apdu_is_traced_as_command_then_response(home):
    t, lines = open_traced(home)
    with t:
        JpkiSession(t).card_type()
    assert lines[0] == f"C> 00 A4 04 0C 0A {JPKI_AID_HEX}"
    assert lines[1] == "R< 90 00"
    assert [line[:3] for line in lines] == ["C> ", "R< "] * (len(lines) // 2)
    assert "4A 50 4B 49 41 50 49 43 43 54 4F 4B 45 4E 32" in "\n".join(lines)  # JPKIAPICCTOKEN2 shown


def test_verify_and_change_data_are_redacted(home):
    t, lines = open_traced(home)
    with t:
        j = JpkiSession(t)
        j.verify("auth", "1234")
        j.verify("sign", "ABC123")
        j.change_pin("auth", "1234", "9876")
        j.change_pin("sign", "ABC123", "ZYX987")
        info = CardInfoSession(t)
        info.verify("card", "1234")
        info.change_pin("card", "1234", "5555")
        j2 = JpkiSession(t)
        assert j2.tries_left("auth") == 3
        with pytest.raises(PinIncorrectError):
            j2.verify("auth", "0000")
    trace = "\n".join(lines)
    assert_absent(trace, "1234", "ABC123", "9876", "ZYX987", "5555", "0000")
    verifies = [line for line in lines if line.startswith("C> 00 20 00 80 ")]
    changes = [line for line in lines if line.startswith("C> 00 24 01 80 ")]
    assert verifies and changes
    assert all(re.fullmatch(r"C> 00 20 00 80 0[46] <[46] bytes redacted>", line) for line in verifies), verifies
    assert all(re.fullmatch(r"C> 00 24 01 80 0[46] <[46] bytes redacted>", line) for line in changes), changes
    assert "C> 00 20 00 80" in lines  # the empty VERIFY (tries left) is shown as it is
    assert "R< 63 C2" in lines        # and the wrong PIN's answer too


def test_card_info_answers_are_redacted(home):
    h = holder(home)["persona"]
    number = h["my_number"]
    t, lines = open_traced(home)
    with t:
        info = CardInfoSession(t)
        info.verify("card", "1234")
        assert info.read_my_number() == number
        basic = info.read_basic_info()
    assert basic.name == h["name"]
    trace = "\n".join(lines)
    assert_absent(trace, number, h["name"], h["address"], h["name"].split("　")[0],
                  h["birth_date"].replace("-", ""), b"\xff\x10\x0c" + number.encode())
    answers = [line for line in lines if line.startswith("R< ") and "redacted" in line]
    assert len(answers) >= 3
    assert all(re.fullmatch(r"R< <\d+ bytes redacted> 90 00", a) for a in answers)


def test_signing_certificate_answers_are_redacted_and_auth_certificate_is_shown(home):
    h = holder(home)["persona"]
    t, lines = open_traced(home)
    with t:
        j = JpkiSession(t)
        j.verify("sign", "ABC123")
        sign = j.read_certificate("sign")
        mark = len(lines)
        auth = j.read_certificate("auth")
    x509.load_der_x509_certificate(sign)
    trace_sign = "\n".join(lines[:mark])
    # nothing of the signing certificate: not its DER, not the holder
    assert hexs(sign[:4]) not in trace_sign
    assert hexs(sign[100:116]) not in trace_sign
    assert_absent(trace_sign, h["name"], h["address"])
    sign_reads = [lines[i + 1] for i in range(len(lines[:mark]) - 1)
                  if lines[i].startswith("C> 00 B0")]
    assert sign_reads and all("redacted" in r for r in sign_reads)
    # the user-authentication certificate (000A) is shown: its DER can be read back from the trace,
    # except 12-digit runs, which the tracer masks everywhere (UTCTime YYMMDDHHMMSS validity dates)
    shown = bytearray()
    for i in range(mark, len(lines) - 1):
        if lines[i].startswith("C> 00 B0"):
            resp = lines[i + 1][3:].split()
            assert resp[-2:] == ["90", "00"]
            shown += bytes.fromhex("".join(resp[:-2]))
    assert len(shown) == len(auth)
    assert bytes(shown) == TWELVE_DIGITS.sub(b"*" * 12, auth)
    differ = sum(a != b for a, b in zip(shown, auth, strict=True))
    assert differ <= 2 * 12, "only the two validity dates may be masked"
    cert = x509.load_der_x509_certificate(auth)
    assert auth.count(cert.not_valid_before_utc.strftime("%y%m%d%H%M%S").encode()) >= 1


def test_sfi_read_of_the_signing_certificate_is_redacted(home):
    t, lines = open_traced(home)
    with t:
        j = JpkiSession(t)
        j.verify("sign", "ABC123")
        rapdu = t.transmit(bytes.fromhex("00B0810010"))  # EF 0001 by short EF identifier
        assert rapdu[-2:] == b"\x90\x00" and rapdu[0] == 0x30
        t.transmit(bytes.fromhex("00B08A0004"))          # EF 000A by SFI: shown
    assert lines[-3].startswith("R< <16 bytes redacted>")
    assert lines[-1].startswith("R< 30 82")


def test_card_info_ap_reads_by_sfi_are_redacted(home):
    number = holder(home)["persona"]["my_number"]
    t, lines = open_traced(home)
    with t:
        s = CardInfoSession(t)
        s.verify("card", "1234")
        rapdu = t.transmit(bytes.fromhex("00B0810000"))
        assert number.encode() in rapdu
    assert_absent("\n".join(lines), number)
    assert "redacted" in lines[-1]


# --------------------------------------------------------------------------- the tracer follows the card
# The tracer's idea of the current application and EF must be what the card did, not what the host
# asked for: a SELECT counts only when the card answered 9000 (or 61xx), every ISO 7816-4 length
# case is parsed, and anything it cannot follow makes it redact.

SEL_TEXT = "00A4040C0A" + TEXT_AID.hex()
VERIFY_CARD_PIN = "0020009104" + b"1234".hex()
UNKNOWN_AID = "A000000308000010000100"  # PIV: not on a My Number Card (6A82)


def _basic4_secrets(home: Path) -> list[str | bytes]:
    h = holder(home)["persona"]
    family = h["name"].split("　")[0]
    return [h["my_number"], h["name"], h["address"], family, h["birth_date"].replace("-", ""),
            b"\xff\x20", b"\xdf\x22", b"\xff\x10\x0c"]


def _send(t: TracingTransport, *apdus: str) -> list[bytes]:
    return [t.transmit(bytes.fromhex(a)) for a in apdus]


@pytest.mark.parametrize("failing", [
    "00A4040C0B" + UNKNOWN_AID,                  # unknown AID: 6A82, the card stays in the text AP
    "00A4040C0A" + JPKI_AID_HEX.replace(" ", "")[:-2] + "FF",  # a near miss of the JPKI AID
    "00A4040C00",                                 # SELECT by name without a name (6700)
    "00A4043C0A" + JPKI_AID_HEX.replace(" ", ""),  # bad P2 (6A86)
    "01A4040C0A" + JPKI_AID_HEX.replace(" ", ""),  # logical channel 1 (6881)
    "0CA4040C0A" + JPKI_AID_HEX.replace(" ", ""),  # secure messaging (6882)
    "00A4040C0A" + JPKI_AID_HEX.replace(" ", "") + "0000",  # malformed length (6700)
])
def test_failed_select_does_not_unredact_the_card_info_ap(home, failing):
    t, lines = open_traced(home)
    with t:
        r = _send(t, SEL_TEXT, VERIFY_CARD_PIN, failing, "00A4020C020002", "00B0000000",
                  "00A4020C020001", "00B0000000")
    assert r[0] == r[1] == b"\x90\x00"
    assert r[2][-2:] != b"\x90\x00", "the SELECT under test must fail on the card"
    assert r[4][-2:] == b"\x90\x00" and len(r[4]) > 100, "the card did answer the basic 4 info"
    assert r[6][-2:] == b"\x90\x00" and r[6][:3] == b"\xff\x10\x0c"
    assert_absent("\n".join(lines), *_basic4_secrets(home))
    assert re.fullmatch(r"R< <\d+ bytes redacted> 90 00", lines[9]), lines[9]
    assert re.fullmatch(r"R< <\d+ bytes redacted> 90 00", lines[13]), lines[13]


@pytest.mark.parametrize("select_text", [
    "00A4040C00000A" + TEXT_AID.hex(),           # case 3E
    "00A4040C00000A" + TEXT_AID.hex() + "0000",  # case 4E
    "00A4040C0A" + TEXT_AID.hex() + "00",        # case 4S
])
def test_extended_and_case4_select_of_the_card_info_ap_is_followed(home, select_text):
    t, lines = open_traced(home)
    with t:
        r = _send(t, "00A4040C0A" + JPKI_AID_HEX.replace(" ", ""), select_text, VERIFY_CARD_PIN,
                  "00A4020C00000200 02".replace(" ", ""), "00B000000000FF",
                  "00A4020C020001", "00B0000000", "00B0810000")
    assert all(x[-2:] == b"\x90\x00" for x in r), [x[-2:].hex() for x in r]
    assert b"\xdf\x22" in r[4] and r[6][:3] == r[7][:3] == b"\xff\x10\x0c"
    assert_absent("\n".join(lines), *_basic4_secrets(home))
    answers = [line for line in lines[9:] if line.startswith("R< ")]
    assert len(answers) == 4 and all(re.fullmatch(r"R< <\d+ bytes redacted> 90 00", a)
                                     for a in (answers[0], answers[2], answers[3])), answers


def test_read_after_an_sfi_read_follows_the_card_s_current_ef(home):
    """READ BINARY by SFI makes that EF the current one: a plain READ BINARY after an SFI read of
    the signing certificate reads the signing certificate, even if EF 000A was selected before."""
    t, lines = open_traced(home)
    with t:
        JpkiSession(t).verify("sign", "ABC123")
        r = _send(t, "00A4020C02000A", "00B0810004", "00B0000010")
    assert r[2][-2:] == b"\x90\x00" and r[2][:2] == b"\x30\x82"
    assert re.fullmatch(r"R< <16 bytes redacted> 90 00", lines[-1]), lines[-1]


def test_jpki_files_other_than_the_signing_certificate_are_still_shown(home):
    t, lines = open_traced(home)
    with t:
        _send(t, "00A4040C00000A" + JPKI_AID_HEX.replace(" ", ""), "00A4020C020006", "00B0000020")
    assert lines[-1].startswith("R< 4A 50 4B 49"), lines[-1]  # "JPKI…" token label


@pytest.mark.parametrize("select_sw", ["6283", "6A82", "6F00", "9000", "6110"])
def test_select_outcome_decides_the_tracer_state(select_sw):
    """Scripted card: after SELECT of the JPKI AP and EF 000A (shown), a SELECT of the text AP is
    answered ``select_sw``: only an error that says "nothing happened" keeps the old state."""
    name = "山田　花子".encode()
    inner = FakeInner({0xA4: [b"\x90\x00", b"\x90\x00", bytes.fromhex(select_sw)],
                       0xB0: [b"\xdf\x22" + name + b"\x90\x00"] * 2})
    lines: list[str] = []
    t = TracingTransport(inner, lines.append)
    _send(t, "00A4040C0A" + JPKI_AID_HEX.replace(" ", ""), "00A4020C02000A", "00B0000010",
          SEL_TEXT, "00B0000010")
    assert lines[5] == "R< DF 22 " + hexs(name) + " 90 00"
    if select_sw == "6A82":  # a checking error: the card is where it was
        assert lines[-1] == lines[5]
    else:  # selected (9000, 61xx) or unknown (warnings, 6F00): redacted
        assert re.fullmatch(r"R< <\d+ bytes redacted> 90 00", lines[-1]), lines[-1]


@pytest.mark.parametrize("apdu", [
    "00A4",                # too short to be a command
    "00A4040C0A" + "D392F000260100000001" + "0000",  # Lc and length disagree
    "00A4040C0000",        # extended marker without a length
    "00A4040C000000",      # extended Lc of 0
    "10A4040C0AD392F000260100000001",  # chaining: not a whole command
    "80A4040C0AD392F000260100000001",  # proprietary class
    "00A4040E0AD392F000260100000001",  # "next occurrence": which application is unknown
    "00A4080C04D3920000",  # select by path
])
def test_select_the_tracer_cannot_follow_makes_it_redact(apdu):
    """A SELECT answered 9000 that the tracer cannot parse (or whose target it cannot know)
    leaves it in an unknown state: it redacts READ BINARY answers until a SELECT it follows."""
    inner = FakeInner({0xB0: [b"\x30\x82\x01\x00" + b"\x90\x00"] * 3})
    lines: list[str] = []
    t = TracingTransport(inner, lines.append)
    _send(t, "00A4040C0AD392F000260100000001", "00A4020C02000A", "00B0000004")
    assert lines[-1] == "R< 30 82 01 00 90 00"
    t.transmit(bytes.fromhex(apdu))
    _send(t, "00B0000004")
    assert lines[-1] == "R< <4 bytes redacted> 90 00"
    _send(t, "00A4040C0AD392F000260100000001", "00A4020C02000A", "00B0000004")
    assert lines[-1] == "R< 30 82 01 00 90 00"


@pytest.mark.parametrize("read", ["01B0000004", "00B1000004", "00B2010400"])
def test_reads_on_other_channels_or_with_other_ins_are_redacted(read):
    inner = FakeInner({ins: [b"\x30\x82\x01\x00" + b"\x90\x00"] for ins in (0xB0, 0xB1, 0xB2)})
    lines: list[str] = []
    t = TracingTransport(inner, lines.append)
    _send(t, "00A4040C0AD392F000260100000001", "00A4020C02000A", read)
    assert lines[-1] == "R< <4 bytes redacted> 90 00"


@pytest.mark.parametrize("apdu", ["0021008004" + b"1234".hex(), "002C008008" + b"12345678".hex(),
                                  "00200080000004" + b"1234".hex()])
def test_pin_data_of_every_pin_command_and_length_form_is_redacted(apdu):
    lines: list[str] = []
    TracingTransport(FakeInner(), lines.append).transmit(bytes.fromhex(apdu))
    assert "redacted" in lines[0]
    assert_absent(lines[0], "1234", "12345678")


# --------------------------------------------------------------------------- twelve digits, anywhere

def test_any_twelve_digit_run_is_masked_in_answers_and_commands():
    inner = FakeInner({0xCA: [b"ID:123456789018;" + b"\x90\x00"]})
    lines: list[str] = []
    t = TracingTransport(inner, lines.append)
    t.transmit(bytes.fromhex("00A4040C0AD392F000260100000001"))
    t.transmit(bytes.fromhex("00CA010010"))
    t.transmit(bytes.fromhex("80EE00000C") + b"987654321098")
    trace = "\n".join(lines)
    assert_absent(trace, "123456789018", "987654321098")
    assert "49 44 3A " + " ".join(["2A"] * 12) + " 3B 90 00" in trace  # masked in place, rest kept
    assert "C> 80 EE 00 00 0C " + " ".join(["2A"] * 12) in trace


def test_shorter_digit_runs_are_left_alone():
    inner = FakeInner({0xCA: [b"12345678901" + b"\x90\x00"]})
    lines: list[str] = []
    t = TracingTransport(inner, lines.append)
    t.transmit(bytes.fromhex("00CA010010"))
    assert lines[-1] == "R< " + hexs(b"12345678901") + " 90 00"


def test_tracer_passes_bytes_through_unchanged(home):
    lines: list[str] = []
    with open_transport("emu:alice", home=home) as plain:
        expected = [plain.transmit(bytes.fromhex(a)) for a in
                    ("00A4040C0AD392F000260100000001", "00A4020C02000A", "00B0000010")]
    t = open_transport("emu:alice", home=home, trace=lines.append)
    with t:
        got = [t.transmit(bytes.fromhex(a)) for a in
               ("00A4040C0AD392F000260100000001", "00A4020C02000A", "00B0000010")]
    assert got == expected
    assert t.atr == bytes.fromhex("3BE000FF8131FE4514")


def test_card_info_data_returned_through_get_response_is_redacted():
    name = "山田　花子".encode()
    inner = FakeInner({0xB0: [b"\x61\x20"], 0xC0: [b"\xff\x20\x30\xdf\x22" + bytes([len(name)]) + name
                                                    + b"\x90\x00"]})
    lines: list[str] = []
    t = TracingTransport(inner, lines.append)
    from jpki.apdu import ApduProtocol

    proto = ApduProtocol(t)
    proto.send(0x00, 0xA4, 0x04, 0x0C, TEXT_AID)
    proto.send(0x00, 0xA4, 0x02, 0x0C, b"\x00\x02")
    proto.send(0x00, 0xB0, 0x00, 0x00, le=0)
    assert hexs(name) not in "\n".join(lines)


# --------------------------------------------------------------------------- the CLI's --trace

@pytest.mark.parametrize("args", [
    ["pin", "verify", "auth", "--pin", "1234"],
    ["pin", "verify", "sign", "--pin", "ABC123"],
    ["pin", "verify", "card", "--pin", "1234"],
    ["pin", "change", "auth", "--pin", "1234", "--new-pin", "9876"],
    ["cert", "show", "sign", "--pin", "ABC123"],
    ["attrs", "--pin", "1234"],
    ["mynumber", "--pin", "1234"],
    ["pkey", "sign", "sign", "DATA", "-o", "SIG", "--pin", "ABC123"],
])
def test_cli_trace_holds_no_pin_and_no_personal_data(cli, home, tmp_path, args):
    h = holder(home)["persona"]
    (tmp_path / "data.txt").write_text("hello")
    args = [str(tmp_path / "data.txt") if a == "DATA" else str(tmp_path / "sig") if a == "SIG" else a
            for a in args]
    r = cli("--trace", *args)
    assert r.exit_code == 0, (r.output, r.exception)
    assert "C> 00 A4 04 0C" in r.stderr, "the trace goes to stderr"
    assert "C> " not in r.stdout and "R< " not in r.stdout
    assert_absent(r.stderr, "1234", "ABC123", "9876", h["my_number"], h["name"], h["address"])


def test_cli_trace_with_reveal_shows_the_number_only_on_stdout(cli, home):
    number = holder(home)["persona"]["my_number"]
    r = cli("--trace", "mynumber", "--reveal", "--pin", "1234")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == number
    assert "C> " in r.stderr
    assert_absent(r.stderr, number, "1234")


def test_cli_trace_with_the_pin_from_stdin(cli):
    r = cli("--trace", "pin", "verify", "sign", input="abc123\n")
    assert r.exit_code == 0, r.output
    assert_absent(r.stderr, "ABC123", "abc123")


def test_real_process_trace_holds_no_pin_and_no_my_number(cli, home):
    number = holder(home)["persona"]["my_number"]
    p = cli.process("--trace", "mynumber", "--reveal", input=b"1234\n")
    assert p.exit_code == 0, p.stderr
    out, err = p.stdout, p.stderr
    assert out.strip() == number
    assert "C> 00 A4 04 0C 0A " + TEXT_AID_HEX in err
    assert_absent(err, number, "1234")
