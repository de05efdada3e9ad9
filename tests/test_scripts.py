"""APDU scripts (jpki.scripts, ``jpki apdu --script``) and recordings (``jpki --record``).

Parsing needs no card; running uses alice's emulated card (``emu_card`` in process, the ``cli``
fixture for the command line) and, once, the card served through pcscd + vpcd.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from jpki.errors import UsageError
from jpki.pki import TestCA
from jpki.scripts import (
    Recorder,
    ScriptError,
    ScriptMismatchError,
    load_script,
    parse_script,
    run_script,
    signature_check,
)
from jpki.scripts.runner import glob_match
from jpki.scripts.syntax import Byte, Lit, Prefixed, Ref, Repeat, SetVar, Slice, Star

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "scripts.md"
JPKI = "00 A4 04 0C 0A D392F000260100000001"
TEXT = "00 A4 04 0C 0A D3921000310001010408"


def apdu_blocks(path: Path) -> list[str]:
    return re.findall(r"^```apdu\n(.*?)^```", path.read_text(encoding="utf-8"), re.S | re.M)


class Stub:
    """A transport answering from a table (command hex -> answer hex); counts what it is sent."""

    def __init__(self, answers: dict[str, str] | None = None, default: str = "9000") -> None:
        self.answers = {k.replace(" ", "").upper(): v for k, v in (answers or {}).items()}
        self.default = default
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(apdu)
        return bytes.fromhex(self.answers.get(apdu.hex().upper(), self.default).replace(" ", ""))


# ============================================================================= parsing
def test_every_syntax_element_parses(tmp_path):
    (tmp_path / "inc.apdu").write_text("step inside\n00 B0 00 00 01 => 9000\n", encoding="utf-8")
    script = parse_script("\n".join([
        "# a comment line",
        'set PIN ?= "12" 34            # ?= and a trailing comment',
        "set AID = D3 92 ${PIN[0:1]}",
        "step first",
        "00 A4 04 0C [${AID}]",                                       # default 9000, [ ] prefix
        '00 20 00 80 "a#b" => 63Cx|6983 -> ALL, TWO=[0:2], ONE=[1], TAIL=[-2:]',
        "00 B0 00 00 00 => * 30 3. .. * FF{3} \"ok\" ${AID} len=9 @sig /30.*/",
        "include inc.apdu",
        "00 B0 00 00 00",                                             # label is 'first' again
    ]), "t.apdu", base=tmp_path)
    st = script.statements
    assert st[0] == SetVar(st[0].where, "PIN", (Lit(b"12\x34"),), if_unset=True)
    assert st[1].parts == (Lit(b"\xd3\x92"), Ref("PIN", Slice(0, 1)))
    c1, c2, c3, c4, c5 = script.commands
    assert (c1.where.line, c1.label, c1.expect.text) == (5, "first", "9000")
    assert c1.parts == (Lit(bytes.fromhex("00A4040C")), Prefixed((Ref("AID"),)))
    assert c2.parts == (Lit(bytes.fromhex("00200080") + b"a#b"),)        # '#' in a string
    assert c2.expect.sw == ((0x63C0, 0xFFF0), (0x6983, 0xFFFF))
    assert [str(c) for c in c2.captures] == ["ALL", "TWO=[0:2]", "ONE=[1]", "TAIL=[-2:]"]
    e = c3.expect
    assert e.sw is None and e.length == 9 and e.checks == ("sig",) and e.regex.pattern == "30.*"
    assert e.data == (Byte(0x30, 0xFF), Byte(0x30, 0xF0), Byte(0, 0), Star(), Repeat(Byte(0xFF, 0xFF), 3),
                      Lit(b"ok"), Ref("AID"))
    assert (c4.where.file, c4.where.line, c4.label) == (str(tmp_path / "inc.apdu"), 2, "inside")
    assert (c5.where.line, c5.label) == (9, "first")
    assert script.files == (str(tmp_path / "inc.apdu"),)


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("00 A4\n00 A\n", 2, "odd number of hex digits"),
    ("\n00 0G\n", 2, "not hex"),
    ("00 GG", 1, "unexpected 'G'"),
    ("00 B0 => 9000 => 9000", 1, "two '=>'"),
    ("00 B0 -> X => 9000", 1, "before '->'"),
    ("00 B0 =>", 1, "needs a status word"),
    ("00 B0 => 90", 1, "not a status word"),
    ("00 B0 => 9000 3", 1, "odd number of hex digits"),
    ("00 B0 => 9000 FF {3}", 1, "{N} repeats"),
    ("00 B0 => 9000 /[/", 1, "bad regular expression"),
    ("00 B0 => 9000 /ab", 1, "no closing /"),
    ('00 "ab', 1, 'no closing "'),
    ("00 B0 => 9000 len=x", 1, "len=N"),
    ("00 B0 => 9000 len=1 len=2", 1, "one len=N"),
    ("00 B0 => 9000 ~", 1, "unexpected '~'"),
    ("00 B0 -> 1X", 1, "not a capture"),
    ("00 B0 -> X=[a:b]", 1, "not a slice"),
    ("00 B0 ${X", 1, "write a variable as"),
    ("00 B0 ]", 1, "']' without '['"),
    ("00 B0 [01", 1, "'[' without ']'"),
    ("\n\nset = 01", 3, "set NAME = VALUE"),
    ("step", 1, "needs a name"),
    ("step a => 9000", 1, "take no '=>'"),
    ("=> 9000", 1, "starts with the command"),
    ("include", 1, "needs a file"),
    ("# ok\ninclude missing.apdu", 2, "cannot include missing.apdu"),
    ('00 "\\q"', 1, "unknown escape"),
])
def test_syntax_errors_name_the_line(tmp_path, text, line, fragment):
    with pytest.raises(ScriptError) as caught:
        parse_script(text, "bad.apdu", base=tmp_path)
    err = caught.value
    assert (err.path, err.line) == ("bad.apdu", line)
    assert fragment in err.problem and str(err).startswith(f"bad.apdu:{line}: ")
    assert isinstance(err, UsageError) and err.code == "script_error"


def test_includes_that_loop_or_cannot_be_read(tmp_path):
    (tmp_path / "a.apdu").write_text("00 B0 00 00 01\ninclude b.apdu\n", encoding="utf-8")
    (tmp_path / "b.apdu").write_text("\ninclude a.apdu\n", encoding="utf-8")
    with pytest.raises(ScriptError, match=r"b\.apdu:2: a\.apdu includes itself"):
        load_script(tmp_path / "a.apdu")
    with pytest.raises(ScriptError, match="cannot read the script"):
        load_script(tmp_path / "none.apdu")
    (tmp_path / "bin.apdu").write_bytes(b"\xff\xfe")
    with pytest.raises(ScriptError, match="not UTF-8"):
        load_script(tmp_path / "bin.apdu")


def test_unset_variables_and_unknown_checks_fail_before_anything_is_sent():
    stub = Stub()
    script = parse_script("00 A4 00 00\nset A = 01\n00 B0 00 00 ${A} -> C\n00 B0 00 00 ${C}\n"
                          "00 B0 00 00 ${B}\n", "v.apdu")
    with pytest.raises(ScriptError, match=r"v\.apdu:5: \$\{B\} is not set"):
        run_script(script, stub)
    assert stub.sent == []
    run_script(script, stub, variables={"B": b"\x02"})
    assert len(stub.sent) == 4
    with pytest.raises(ScriptError, match=r"v\.apdu:1: no check named @sig \(this run offers: @other\)"):
        run_script(parse_script("00 A4 00 00 => 9000 @sig", "v.apdu"), stub, checks={"other": lambda c, d: True})


def test_glob_matching():
    def m(pattern: str, data: str, **values: bytes) -> bool:
        script = parse_script(f"00 B0 00 00 => 9000 {pattern}")
        from jpki.scripts.runner import _atoms
        return glob_match(_atoms(script.commands[0].expect.data, values, script.commands[0].where),
                          bytes.fromhex(data))

    assert m("30 82", "3082") and not m("30 82", "308200") and not m("30 82", "30")
    assert m("3. ..", "3F00") and not m("3. ..", "4000")
    assert m("*", "") and m("*", "0102") and m("01 *", "01") and not m("01 *", "02")
    assert m("* 01 *", "000100") and not m("* 01 *", "0000")
    assert m("01 * 02 * 03", "0102030303") and not m("01 * 03 * 02", "010203")
    assert m("AB * AB", "AB") is False and m("AB * AB", "ABAB")
    assert m("FF{3} ..{2}", "FFFFFF0000") and not m("FF{3}", "FFFF")
    assert m('"JP" 20{2}', "4A502020") and m("${X}{2} *", "010201020304", X=b"\x01\x02")


# ============================================================================= running: the library
def test_the_documented_example_runs_on_alice(emu_card):
    blocks = apdu_blocks(DOCS)
    for block in blocks:  # every fragment of the page is valid syntax
        parse_script(block, "docs/scripts.md", loader=lambda path: "")
    results = []
    run = run_script(parse_script(blocks[0], "jpki_ap.apdu"), emu_card, on_result=results.append)
    assert [r.ok for r in run.results] == [True] * 17 and results == list(run.results)
    assert run.variables["HEADER"][:2] == b"\x30\x82" and run.variables["LENGTH"] == run.variables["HEADER"][2:]
    verify = next(r for r in run.results if r.where.line == 25)
    assert verify.command == "00 20 00 98 04 <4 bytes redacted>" and verify.label.startswith("the user-auth")


def test_a_mismatch_names_the_line_the_command_what_was_expected_and_what_came(emu_card):
    script = parse_script(f"{JPKI}\n00 A4 02 0C 02 00 0A\n# the header\n00 B0 00 00 04 => 9000 30 83 .. ..\n"
                          "00 B0 00 00 04\n", "m.apdu")
    with pytest.raises(ScriptMismatchError) as caught:
        run_script(script, emu_card)
    err = caught.value
    assert (err.path, err.line, err.reason, err.code) == ("m.apdu", 4, "data", "script_mismatch")
    assert len(err.results) == 3 and not err.result.ok
    assert str(err).startswith("m.apdu:4: 00 B0 00 00 04: expected 9000 30 83 .. .., got 9000 30 82 ")
    with pytest.raises(ScriptMismatchError, match=r"m\.apdu:1: .*expected 6A82, got 9000 \(status word\)"):
        run_script(parse_script(f"{JPKI} => 6A82", "m.apdu"), emu_card)
    with pytest.raises(ScriptMismatchError, match=r"capture X=\[4:6\]: the data has 4 bytes"):
        run_script(parse_script(f"{JPKI}\n00 A4 02 0C 02 00 0A\n00 B0 00 00 04 -> X=[4:6]", "m.apdu"), emu_card)


def test_secrets_stay_out_of_results_and_errors(emu_card):
    """A wrong PIN's mismatch shows the command redacted; an answer with the My Number only its length."""
    script = parse_script(f"{TEXT}\n00 20 00 91 [${{PIN}}] => 9000\n", "s.apdu")
    with pytest.raises(ScriptMismatchError) as caught:
        run_script(script, emu_card, variables={"PIN": b"9876"})
    assert "00 20 00 91 04 <4 bytes redacted>" in str(caught.value) and "39 38 37 36" not in str(caught.value)
    assert "63C2" in str(caught.value)
    script = parse_script(f"{TEXT}\n00 20 00 91 [${{PIN}}]\n00 A4 02 0C 02 00 01\n00 B0 00 00 00 => 9000 len=16\n",
                          "s.apdu")
    with pytest.raises(ScriptMismatchError) as caught:
        run_script(script, emu_card, variables={"PIN": b"1234"})
    assert str(caught.value).endswith("expected 9000 len=16, got 9000 <17 bytes redacted> "
                                      "(length: 17 bytes, not 16)")


def test_wildcards_regex_and_named_checks(emu_card, home):
    auth = TestCA.open(home / "ca")
    try:
        info = json.loads((home / "holders" / "alice.json").read_text(encoding="utf-8"))
        key = x509.load_der_x509_certificate(auth.db.get(info["auth_serial"]).der).public_key()
    finally:
        auth.close()
    text = (f"{JPKI}\n00 20 00 98 => 63C.\n00 20 00 98 => 63Cx|6984\n00 20 00 98 => 63C3 len=0\n"
            "00 20 00 98 [\"1234\"]\n00 A4 02 0C 02 00 17\n"
            "80 2A 00 80 [\"a DigestInfo\"] 00 => 9000 len=256 @sig\n"
            "00 A4 02 0C 02 00 0A\n00 B0 00 00 06 => 9... /3082[0-9a-f]{4}30.*/\n")
    run = run_script(parse_script(text, "w.apdu"), emu_card, checks={"sig": signature_check(key)})
    assert all(r.ok for r in run.results)
    with pytest.raises(ScriptMismatchError, match="check @sig"):
        run_script(parse_script(text.replace('"a DigestInfo"] 00', '"a DigestInfo"] 00\n'
                                             '80 2A 00 80 [01] 00 => 9000 @sig\n#'), "w.apdu"),
                   emu_card, checks={"sig": lambda c, d: False})
    with pytest.raises(TypeError):
        signature_check(object())


# ============================================================================= the command line
def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_cli_runs_a_script_and_exits_3_on_a_mismatch(cli, tmp_path):
    ok = write(tmp_path, "ok.apdu", f"step select\n{JPKI}\n00 20 00 98 => 63C3\n00 20 00 98 [${{PIN}}]\n")
    r = cli("--trace", "apdu", "--script", str(ok), "--var", "PIN=1234")
    assert r.exit_code == 0, r
    assert "== select" in r.stdout and f"{ok}: 3 commands answered as expected" in r.stdout
    assert "C> 00 20 00 98 04 <4 bytes redacted>" in r.stderr  # --trace
    assert "31 32 33 34" not in r.output and "31323334" not in r.output
    doc = cli("--json", "apdu", "--script", str(ok), "--var", "PIN=hex:31323334").json()
    assert doc["ok"] and doc["commands"] == 3 and doc["steps"][2]["command"] == "00 20 00 98 04 <4 bytes redacted>"

    bad = write(tmp_path, "bad.apdu", f"{JPKI}\n\n00 A4 02 0C 02 00 01\n00 B0 00 00 04 => 9000 30 82 .. ..\n")
    r = cli("apdu", "--script", str(bad))
    assert r.exit_code == 3 and r.exception.code == "script_mismatch"
    assert f"error: {bad}:4: 00 B0 00 00 04: expected 9000 30 82 .. .., got 6982 (status word)" in r.stderr
    assert f"FAIL {bad}:4" in r.stdout and "stopped at line 4" in r.stdout
    doc = cli("--json", "apdu", "--script", str(bad)).json()
    assert (doc["ok"], doc["error"], doc["commands"], doc["steps"][-1]["ok"]) == (False, "script_mismatch", 3, False)


@pytest.mark.parametrize(("args", "message"), [
    (("--script", "{syntax}"), "{syntax}:2: odd number of hex digits"),
    (("--script", "{unset}"), "{unset}:1: ${{AUTH_PIN}} is not set"),
    (("--script", "{missing}"), "cannot read the script"),
    (("--script", "{empty}"), "no commands"),
    (("--script", "{syntax}", "00A4"), "not both"),
    (("--var", "A=1", "00A4040C"), "--var is for --script"),
    (("--script", "{unset}", "--var", "1A=2"), "write NAME=VALUE"),
    (("--script", "{unset}", "--var", "A=hex:zz"), "not hex"),
    ((), "give the APDUs"),
])
def test_cli_usage_errors_exit_2(cli, tmp_path, args, message):
    files = {"syntax": write(tmp_path, "syntax.apdu", f"{JPKI}\n00 A\n"),
             "unset": write(tmp_path, "unset.apdu", "00 20 00 80 [${AUTH_PIN}]\n"),
             "empty": write(tmp_path, "empty.apdu", "# nothing\nset A = 01\n"),
             "missing": tmp_path / "missing.apdu"}
    r = cli("apdu", *(a.format(**files) for a in args))
    assert r.exit_code == 2, r
    assert message.format(**files) in r.stderr


def test_cli_script_from_stdin_and_pins_from_the_environment(cli):
    script = f"{JPKI}\n00 A4 02 0C 02 00 1B\n00 20 00 80 => 63C5\n00 20 00 80 [${{SIGN_PIN}}]\n"
    r = cli("apdu", "--script", "-", input=script, env={"JPKI_SIGN_PIN": "ａｂｃ１２３"})  # read as `pin verify` does
    assert r.exit_code == 0, r
    assert "<stdin>: 4 commands answered as expected" in r.stdout


# ============================================================================= recording
PIN_HEX = ("31323334", "414243313233")  # alice's auth/card PIN and signature password


def assert_masked(text: str, home: Path) -> None:
    persona = json.loads((home / "holders" / "alice.json").read_text(encoding="utf-8"))["persona"]
    flat = text.upper().replace(" ", "")
    number = persona["my_number"]
    for secret in (*PIN_HEX, number.encode().hex().upper(), persona["name"].encode().hex().upper()):
        assert secret not in flat
    assert number not in text


@pytest.mark.parametrize(("command", "replay_vars", "expected"), [
    (("info",), (), ["00 20 00 80                                 => 63C3"]),
    (("cert", "read", "auth", "-o", "{out}"), (), ["=> 9000 3082"]),
    (("cert", "read", "sign", "--pin", "ABC123", "-o", "{out}"), ("SIGN_PIN=ABC123",),
     ["00 20 00 80 [${SIGN_PIN}]", "00 B0 00 00 04                              => 9000 len=4"]),
    (("pkey", "sign", "auth", "{data}", "-o", "{out}", "--pin", "1234"), ("AUTH_PIN=1234",),
     ["00 20 00 80 [${AUTH_PIN}]", "=> 9000 len=256"]),
    (("mynumber", "--pin", "1234"), ("CARD_PIN=1234",), ["00 20 00 80 [${CARD_PIN}]", "=> 9000 len=17"]),
])
def test_record_then_replay(cli, home, tmp_path, command, replay_vars, expected):
    record = tmp_path / "session.apdu"
    data = write(tmp_path, "data.txt", "a report\n")
    args = [a.format(out=tmp_path / "out.der", data=data) for a in command]
    r = cli("--record", str(record), *args)
    assert r.exit_code == 0, r
    text = record.read_text(encoding="utf-8")
    assert f"\nstep jpki {command[0]}" in text
    for line in expected:
        assert line in text, text
    assert_masked(text, home)
    vars_ = [a for v in replay_vars for a in ("--var", v)]
    replay = cli("apdu", "--script", str(record), *vars_)
    assert replay.exit_code == 0, replay
    if replay_vars:  # the PIN must come from somewhere
        assert cli("apdu", "--script", str(record)).exit_code == 2


def test_a_recording_of_personal_data_replays_on_another_card(cli, tmp_path):
    record = tmp_path / "attrs.apdu"
    assert cli("--record", str(record), "attrs", "--pin", "1234").exit_code == 0
    assert "len=" in record.read_text(encoding="utf-8")
    r = cli("apdu", "--script", str(record), "--var", "CARD_PIN=1234", card="emu:bob")
    assert r.exit_code == 0, r


def test_a_failed_command_is_recorded_up_to_where_it_failed(cli, tmp_path):
    record = tmp_path / "wrong.apdu"
    assert cli("--record", str(record), "pin", "verify", "auth", "--pin", "9999").exit_code == 4
    assert cli("--record", str(record), "pin", "verify", "auth", "--pin", "1234").exit_code == 0
    text = record.read_text(encoding="utf-8")
    assert "00 20 00 80 [${AUTH_PIN}]" in text and "=> 9000" in text
    assert "9999" not in text and "39393939" not in text


def test_record_nothing_to_record_and_a_missing_folder(cli, tmp_path):
    r = cli("--record", str(tmp_path / "none.apdu"), "card", "list")
    assert r.exit_code == 0 and "talked to no card" in r.stderr
    assert not (tmp_path / "none.apdu").exists()
    r = cli("--record", str(tmp_path / "no" / "x.apdu"), "info")
    assert r.exit_code == 2 and "no folder" in r.stderr


class FakeCard(Stub):
    atr = b"\x3b"
    description = "fake"

    def close(self) -> None:
        pass


def test_the_recorder_names_pins_and_masks_what_the_trace_hides():
    card = FakeCard({"802A00800301020300": "AA" * 4 + "6102", "00C0000002": "BBBB9000",
                     "00B0000002": "30829000"})
    recorder = Recorder()
    t = recorder.wrap(card, "unit")
    for apdu in (JPKI, "00 20 00 98 04 31323334",        # SFI form: the auth PIN
                 "00 20 00 98 04 30303030",              # another value: AUTH_PIN_2
                 "00 A4 02 0C 02 001B", "00 20 00 80 06 414243313233",  # current EF: the password
                 "00 24 01 80 06 58595A313233",          # CHANGE with the new one only
                 "00 24 00 80 08 3132333435363738",      # old and new together
                 "00 A4 02 0C 02 000A", "00B0000002",   # public: exact
                 "80 2A 00 80 03 010203 00", "00C0000002",  # a signature and its GET RESPONSE
                 "80 CA 00 00 0C " + b"123456789018".hex(),  # 12 digits in a command
                 TEXT, "00 20 00 80 04 31323334",        # no EF selected in the text AP: unknown
                 "00 A4 02 0C 02 0011", "00 20 00 80 04 31323334",
                 "00 A4 02 0C 02 0001", "00B0000002"):  # the text AP: only the length
        t.transmit(bytes.fromhex(apdu.replace(" ", "")))
    text = recorder.text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "step unit"
    shown = [re.sub(r" +=>", " =>", line) for line in lines[1:]]
    assert shown[1:7] == ["00 20 00 98 [${AUTH_PIN}] => 9000", "00 20 00 98 [${AUTH_PIN_2}] => 9000",
                          "00 A4 02 0C 02 001B => 9000", "00 20 00 80 [${SIGN_PIN}] => 9000",
                          "00 24 01 80 [${NEW_SIGN_PIN}] => 9000", "00 24 00 80 [${SIGN_PIN_DATA}] => 9000"]
    assert shown[8] == "00 B0 00 00 02 => 9000 3082"
    assert shown[9:11] == ["80 2A 00 80 03 01020300 => 6102 len=4", "00 C0 00 00 02 => 9000 len=2"]
    assert shown[11] == "80 CA 00 00 0C ${MYNUMBER} => 9000"
    assert shown[13] == "00 20 00 80 [${PIN}] => 9000"
    assert shown[15] == "00 20 00 80 [${CARD_PIN}] => 9000" and shown[17] == "00 B0 00 00 02 => 9000 len=2"
    assert recorder.commands == 18
    for secret in ("31323334", "30303030", "414243313233", "58595A313233", b"123456789018".hex()):
        assert secret.upper() not in text.upper()
    # what it wrote replays (against the same answers) once the variables are given
    given = {"AUTH_PIN": b"1234", "AUTH_PIN_2": b"0000", "SIGN_PIN": b"ABC123", "NEW_SIGN_PIN": b"XYZ123",
             "SIGN_PIN_DATA": b"12345678", "PIN": b"1234", "CARD_PIN": b"1234", "MYNUMBER": b"123456789018"}
    replayed = FakeCard(card.answers)
    run_script(parse_script(text, "rec.apdu"), replayed, variables=given)
    assert replayed.sent == card.sent


# ============================================================================= over PC/SC
def test_a_script_over_pcsc(cli, served_card, tmp_path):
    script = write(tmp_path, "p.apdu", f"{JPKI}\n00 20 00 98 => 63C3\n00 20 00 98 [${{AUTH_PIN}}]\n"
                                       "00 A4 02 0C 02 00 0A\n00 B0 00 00 04 => 9000 30 82 .. ..\n")
    reader = cli.bind(card=f"pcsc:{served_card}")
    r = reader("apdu", "--script", str(script), "--var", "AUTH_PIN=1234")
    assert r.exit_code == 2 and "--force" in r.stderr  # a PIN on a card in a reader: ask first
    r = reader("--force", "apdu", "--script", str(script), "--var", "AUTH_PIN=1234")
    assert r.exit_code == 0, r


# ============================================================================= the golden transcripts
def translate(transcript: str) -> str:
    """tests/transcripts' C>/R< notation into a script (docs/scripts.md, the last table)."""
    out, command = [], None
    names = {"mynumber": "${MYNUMBER}", "vnum-b": "${VNUM_B}"}
    for raw in transcript.splitlines():
        text = raw.split(" #", 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        body = re.sub(r"<(mynumber|vnum-b)>", lambda m: names[m[1]], text[2:].strip())
        if text.startswith("C>"):
            command = body
            continue
        *data, sw = body.split()
        pattern = " ".join(data)
        pattern = re.sub(r"\b([0-9A-Fa-f]{2})\*(\d+)", r"\1{\2}", pattern)
        pattern = re.sub(r"<(\d+) bytes?>", r"..{\1}", pattern)
        pattern = re.sub(r"<cert ([a-z-]+)(\[\d+:\d+\])>",
                         lambda m: "${CERT_" + m[1].upper().replace("-", "_") + m[2] + "}", pattern)
        pattern = re.sub(r"<sig (auth|sign)>", r"len=256 @sig_\1", pattern)
        pattern = pattern.replace("…", "*").replace("...", "*")
        out.append(f"{command} => {sw} {pattern}".rstrip())
    return "\n".join(out) + "\n"


@pytest.fixture
def transcript_values(home):
    info = json.loads((home / "holders" / "alice.json").read_text(encoding="utf-8"))
    ca = TestCA.open(home / "ca")
    try:
        der = serialization.Encoding.DER
        certs = {"AUTH": ca.db.get(info["auth_serial"]).der, "SIGN": ca.db.get(info["sign_serial"]).der,
                 "AUTH_CA": ca.auth_ca_cert.public_bytes(der), "SIGN_CA": ca.sign_ca_cert.public_bytes(der)}
    finally:
        ca.close()
    birth = dt.date.fromisoformat(info["persona"]["birth_date"])
    expiry = dt.date.fromisoformat(info["card_expiry"])
    values = {f"CERT_{k}": v + b"\xff" * (2048 - len(v)) for k, v in certs.items()}
    values["MYNUMBER"] = info["persona"]["my_number"].encode()
    values["VNUM_B"] = f"{birth.year - 1988:02d}{birth:%m%d}{expiry.year:04d}{info['security_code']}".encode()
    checks = {f"sig_{k.lower()}": signature_check(x509.load_der_x509_certificate(certs[k]).public_key())
              for k in ("AUTH", "SIGN")}
    return values, checks


@pytest.mark.parametrize("name", ["jpki_ap.txt", "text_ap.txt"])
def test_the_golden_transcripts_translate_and_replay(emu_card, transcript_values, name):
    values, checks = transcript_values
    script = parse_script(translate((REPO / "tests" / "transcripts" / name).read_text(encoding="utf-8")), name)
    assert len(script.commands) >= 30
    run = run_script(script, emu_card, variables=values, checks=checks)
    assert all(r.ok for r in run.results)
