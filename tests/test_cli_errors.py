"""The command line under bad input and on a new user's path (issue 9): card names that are
paths, unusable homes, stable error codes with exactly one JSON document, PIN messages that
name the PIN, full-width PINs, and progress on a terminal for the slow admin commands.

Through ``jpki.cli.main`` in CliRunner's isolation (errors mapped to exit codes) and, where a
traceback would show, as real processes (``python -m jpki``): the ``cli`` fixture.
"""

from __future__ import annotations

import datetime as dt
import importlib
import io
import json
import os
import pkgutil
import re
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click
import pytest
from cli_support import Cli

import jpki
from jpki.cli import _common
from jpki.cli import cli as jpki_group
from jpki.cli._common import Progress
from jpki.cli._fail import EXIT_CODES, exit_code_for
from jpki.errors import InvalidNameError, JpkiError, UsageError
from jpki.home import Home, UnusableHomeError, check_card_name, check_home_path
from jpki.identity import SAMPLE_PERSONAS
from jpki.pki import CertificateDB, TestCA
from jpki.pki.db import RevokedRow
from jpki.provision import create_card

REPO = Path(__file__).resolve().parents[1]
FIXED = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def lock_out(cli: Cli, kind: str, wrong: str, tries: int) -> None:
    for _ in range(tries):
        assert cli("pin", "verify", kind, "--pin", wrong).exit_code == 4


def pin_state(home: Path, name: str = "alice") -> dict:
    return json.loads((home / "cards" / name / "state.json").read_text())


# --------------------------------------------------------------------------- A. card names

@pytest.mark.parametrize("name", ["alice", "Taro-2", "a_b", "x" * 64, "0"])
def test_card_names_that_are_accepted(name):
    assert check_card_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../alice", "-x", "_x", "x" * 65, "a b",
                                  "名前", "alice\n", "alice/"])
def test_card_names_that_are_refused(name, tmp_path):
    with pytest.raises(InvalidNameError):
        check_card_name(name)
    with pytest.raises(InvalidNameError):
        Home(tmp_path).card_dir(name)
    with pytest.raises(InvalidNameError):
        Home(tmp_path).holder_file(name)


def test_reset_pin_cannot_reach_a_card_of_another_home(cli, home, tmp_path):
    other = tmp_path / "home2"  # beside `home`: ../../home2/cards/alice from home/cards
    shutil.copytree(home, other)
    lock_out(cli.bind(home=other), "auth", "0000", 3)
    blocked = pin_state(other)
    r = cli("card", "reset-pin", "../../home2/cards/alice", "auth")
    assert r.exit_code == 2, r
    assert r.stderr.startswith("error: '../../home2/cards/alice' is not a card name")
    assert "hint: 'jpki card list'" in r.stderr
    assert pin_state(other) == blocked, "the other home's card was not touched"
    assert cli("pin", "verify", "auth", "--pin", "1234", home=other).exit_code == 4  # still blocked


def test_card_show_of_a_path_is_a_usage_error_not_a_traceback(cli):
    r = cli("card", "show", "../cards/alice/state")
    assert r.exit_code == 2 and "is not a card name" in r.stderr and "Traceback" not in r.stderr
    js = cli("--json", "card", "show", "../cards/alice/state")
    doc = js.json()
    assert js.exit_code == 2 and doc["error"] == "invalid_name" and doc["hint"]


@pytest.mark.parametrize("args", [
    ["card", "create", "../x"],
    ["card", "show", "../x"],
    ["card", "reset-pin", "../x", "auth"],
    ["card", "move", "../x", "--address", "東京都港区1"],
    ["card", "lost", "../x"],
    ["card", "renew", "../x"],
    ["ca", "list", "--holder", "../x"],
    ["ca", "list", "--card", "../x"],
    ["emulator", "remove", "../../x"],
    ["emulator", "insert", "../../x"],
    ["emulator", "fault", "../../x", "list"],
    ["emulator", "serve", "a b"],
])
def test_every_command_taking_a_card_name_checks_it(cli, args):
    r = cli("--json", *args)
    assert r.exit_code == 2, r
    assert r.json()["error"] == "invalid_name"
    assert "Traceback" not in r.stderr


def test_an_emu_card_uri_name_is_checked_too(cli):
    r = cli("--json", "info", card="emu:a b")
    assert r.exit_code == 2 and r.json()["error"] == "invalid_name"


def test_a_card_that_was_never_created_says_how_to_create_it(cli, home, tmp_path):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copytree(home / "ca", fresh / "ca")
    for args in (["card", "lost", "bob"], ["card", "renew", "bob"], ["card", "show", "bob"],
                 ["card", "reset-pin", "bob", "auth"], ["card", "move", "bob", "--address", "東京都港区1"]):
        r = cli(*args, home=fresh)
        assert r.exit_code == 5, (args, r)
        assert r.stderr.splitlines() == [f"error: no card named bob in {fresh}",
                                         "hint: jpki card create bob (or 'jpki card list' for the cards there are)"]
    custom = cli("--json", "card", "lost", "zed", home=fresh)
    doc = custom.json()
    assert doc["error"] == "no_card" and "--name" in doc["hint"] and doc["card"] == "zed"


# --------------------------------------------------------------------------- B. the home

@pytest.mark.parametrize("how", ["env", "option"])
def test_an_empty_home_is_an_error_not_the_default(cli, tmp_path, how):
    user_home = Path(os.environ["HOME"])
    if how == "env":
        r = cli("ca", "init", home=None, card=None, env={"JPKI_HOME": ""})
    else:
        r = cli("--home", "", "ca", "init", home=None, card=None)
    assert r.exit_code == 2, r
    assert r.stderr.splitlines()[0] == "error: jpki home: the path is empty"
    assert "JPKI_HOME" in r.stderr.splitlines()[1]
    assert not (user_home / ".jpki").exists(), "nothing made in ~/.jpki"


def test_an_unset_home_is_the_default(cli, tmp_path):
    r = cli("card", "list", home=None, card=None)
    assert r.exit_code == 0 and "(no cards)" in r.stdout


def test_a_home_that_is_a_file(cli, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = cli("--json", "card", "list", card=None, home=f)
    assert r.exit_code == 2
    doc = r.json()
    assert doc["error"] == "unusable_home" and "is a file" in doc["message"] and doc["hint"]
    assert r.stderr.splitlines()[0] == f"error: jpki home '{f}': it is a file, not a folder"


def test_a_home_path_too_long(cli, tmp_path):
    with pytest.raises(UnusableHomeError, match="longer than 255"):
        check_home_path(tmp_path / ("x" * 300))
    with pytest.raises(UnusableHomeError, match="longer than 3800"):
        check_home_path(tmp_path / "/".join(["y" * 200] * 20))
    assert cli("card", "list", card=None, home=tmp_path / ("x" * 300)).exit_code == 2


def test_a_home_under_a_file_is_one_line_with_a_hint(cli, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = cli("ca", "init", card=None, home=f / "home")
    assert r.exit_code == 1, r
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and "(ENOTDIR)" in lines[0]
    assert lines[1].startswith("hint: the jpki home") and "--home" in lines[1]
    js = cli("--json", "ca", "init", card=None, home=f / "home").json()
    assert js["error"] == "os_error" and js["errno"] == "ENOTDIR"


def test_an_unexpected_os_error_is_one_line(cli, home, monkeypatch):
    def denied(self, *a, **kw):
        raise PermissionError(13, "Permission denied", str(home / "cards"))
    monkeypatch.setattr("jpki.home.Home.card_names", denied)
    r = cli("card", "list")
    assert r.exit_code == 1
    assert r.stderr.splitlines()[0] == f"error: {home / 'cards'}: Permission denied (EACCES)"
    assert "Traceback" not in r.stderr
    doc = cli("--json", "card", "list").json()
    assert doc == {"ok": False, "error": "os_error", "message": doc["message"], "hint": doc["hint"],
                   "errno": "EACCES", "path": str(home / "cards")}


def test_an_internal_error_is_one_line_and_one_document(cli, home, monkeypatch):
    def broken(self):
        raise RuntimeError("boom")
    monkeypatch.setattr("jpki.home.Home.card_names", broken)
    r = cli("--json", "card", "list")
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    assert r.json()["error"] == "internal"
    assert r.stderr.startswith("error: internal error: RuntimeError: boom")


def test_processes_print_no_traceback_for_an_unusable_home(cli, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for env, args, code in [({"JPKI_HOME": ""}, ["card", "list"], 2),
                            ({"JPKI_HOME": str(f)}, ["card", "list"], 2),
                            ({"JPKI_HOME": str(f / "sub")}, ["ca", "init"], 1)]:
        p = cli.process(*args, home=None, card=None, env=env)
        assert p.exit_code == code, (env, p.stderr)
        assert "Traceback" not in p.stderr and p.stderr.startswith("error: "), p.stderr


# --------------------------------------------------------------------------- C. codes and JSON

def _all_error_classes() -> list[type[JpkiError]]:
    for info in pkgutil.walk_packages(jpki.__path__, "jpki."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:  # an optional dependency (pyscard, redis) is missing
            continue
    seen: list[type[JpkiError]] = []
    todo = [JpkiError]
    while todo:
        cls = todo.pop()
        if cls not in seen:  # a class with two JpkiError bases is reached twice
            seen.append(cls)
            todo.extend(cls.__subclasses__())
    return seen


def test_every_error_has_its_own_stable_snake_case_code():
    classes = _all_error_classes()
    assert len(classes) > 25
    codes: dict[str, type] = {}
    for cls in classes:
        code = cls.__dict__.get("code")
        assert isinstance(code, str) and re.fullmatch(r"[a-z][a-z0-9_]*", code), cls
        assert code not in codes, f"{cls.__name__} and {codes[code].__name__} share {code!r}"
        codes[code] = cls
    # the codes a program relies on (documented in the README)
    expected = {"error": "JpkiError", "usage": "UsageError", "invalid_name": "InvalidNameError",
                "no_reader": "NoReaderError", "no_card": "NoCardError", "pin_incorrect": "PinIncorrectError",
                "pin_blocked": "PinBlockedError", "pin_not_verified": "SecurityStatusError",
                "verification_failed": "VerificationError", "protocol": "ProtocolError",
                "card_error": "CardError", "unusable_home": "UnusableHomeError",
                "refused": "ServiceRefusedError", "challenge_refused": "ChallengeRefusedError"}
    assert {code: codes[code].__name__ for code in expected} == expected


#: The exit code of every library error that does not exit 1 (README: 2 usage, 3 verification
#: failed or refused, 4 PIN, 5 no reader or card). Decided by the CLI's table alone.
EXPECTED_EXIT_CODES = {
    "UsageError": 2, "PinFormatError": 2, "InvalidNameError": 2, "UnusableHomeError": 2, "CAExistsError": 2,
    "AlreadyRevokedError": 2, "CertificateStatusError": 2, "UnknownClientError": 2, "ScriptError": 2,
    "TsaExistsError": 2,
    "VerificationError": 3, "CRLError": 3, "ChallengeRefusedError": 3, "MalformedMessageError": 3,
    "ServiceRefusedError": 3, "ScriptMismatchError": 3,
    "PinError": 4, "PinIncorrectError": 4, "PinBlockedError": 4, "SecurityStatusError": 4,
    "TransportError": 5, "NoReaderError": 5, "NoCardError": 5, "CardRemovedError": 5,
    "ReaderBusyError": 5,
}


def test_the_cli_alone_maps_library_errors_to_exit_codes():
    classes = _all_error_classes()
    assert set(EXPECTED_EXIT_CODES) <= {cls.__name__ for cls in classes}
    for cls in classes:
        assert "exit_code" not in vars(cls), f"{cls.__name__}: exit codes are the CLI's"
        exc = cls.__new__(cls)
        assert exit_code_for(exc) == EXPECTED_EXIT_CODES.get(cls.__name__, 1), cls
    assert set(EXIT_CODES.values()) <= {1, 2, 3, 4, 5}


@pytest.mark.parametrize("args", [
    ["no-such-command"],
    ["pin", "verify", "nonsense"],
    ["card", "create"],
    ["cert", "read", "auth", "--bogus"],
    ["ca", "crl", "--kind", "sign"],
])
def test_json_on_a_usage_error_is_one_document(cli, args):
    r = cli("--json", *args)
    assert r.exit_code == 2
    doc = r.json()
    assert doc["ok"] is False and doc["error"] == "usage" and doc["message"] and "--help" in doc["hint"]
    assert "Usage:" in r.stderr  # click's usage text stays on stderr


def test_json_of_a_failed_verification_carries_the_code(cli, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("hello")
    assert cli("sign", str(doc), "--pin", "ABC123").exit_code == 0
    doc.write_text("changed")
    r = cli("--json", "verify", str(tmp_path / "doc.txt.p7s"), "--revocation", "none")
    out = r.json()
    assert r.exit_code == 3 and out["ok"] is False and out["reason"] == "wrong-data"
    assert out["error"] == "verification_failed" and out["file"].endswith("doc.txt.p7s")


# --------------------------------------------------------------------------- D. PINs

def test_pin_messages_name_the_pin(cli, home):
    r = cli("pin", "verify", "sign", "--pin", "WRONG1")
    assert r.stderr == "error: signature password: wrong, 4 tries left\n"
    lock_out(cli, "sign", "WRONG1", 2)
    r = cli("pin", "verify", "sign", "--pin", "WRONG1")
    assert r.stderr == "error: signature password: wrong, 1 try left\n"
    r = cli("pin", "verify", "sign", "--pin", "WRONG1")
    assert r.stderr.splitlines() == [
        "error: signature password: wrong, now blocked",
        "hint: the municipal office resets it; for this emulated card: jpki card reset-pin alice sign"]
    r = cli("--json", "cert", "read", "sign", "--pin", "ABC123")
    assert r.exit_code == 4 and r.stderr.splitlines()[0] == "error: signature password: blocked"
    doc = r.json()
    assert doc["error"] == "pin_blocked" and doc["pin"] == "sign" and "reset-pin alice sign" in doc["hint"]
    card = cli("mynumber", "--pin", "0000")
    assert card.exit_code == 4 and card.stderr == "error: card-info PIN: wrong, 2 tries left\n"
    auth = cli("pkey", "sign", "auth", str(REPO / "README.md"), "-o", os.devnull, "--pin", "0000")
    assert auth.stderr == "error: user-authentication PIN: wrong, 2 tries left\n"


def test_a_blocked_pin_over_pcsc_names_no_card():
    from jpki.cli._fail import fail_for
    from jpki.errors import PinBlockedError

    exc = PinBlockedError()
    exc.pin = "auth"
    assert fail_for(exc, "pcsc").hint == ("the municipal office resets it; for an emulated card: "
                                          "jpki card reset-pin NAME auth")


@pytest.mark.parametrize("kind, typed", [("sign", "ＡＢＣ１２３"), ("sign", "ａｂｃ１２３"),
                                         ("auth", "１２３４"), ("card", "１２３４")])
def test_full_width_pins_are_accepted(cli, kind, typed):
    r = cli("pin", "verify", kind, "--pin", typed)
    assert r.exit_code == 0, r
    r = cli("pin", "verify", kind, input=typed + "\n")
    assert r.exit_code == 0, r
    status = cli("--json", "pin", "status").json()
    assert status[kind]["tries_left"] == (5 if kind == "sign" else 3)


def test_full_width_pins_at_card_create(cli):
    r = cli("card", "create", "carol", "--auth-pin", "４３２１", "--sign-pin", "ｓｅｃｒｅｔ４２")
    assert r.exit_code == 0, r
    assert cli("pin", "verify", "auth", "--pin", "4321", card="emu:carol").exit_code == 0
    assert cli("pin", "verify", "sign", "--pin", "SECRET42", card="emu:carol").exit_code == 0


# --------------------------------------------------------------------------- E. a new user's path

def test_mynumber_says_how_to_reveal_when_it_masks(cli):
    r = cli("mynumber", "--pin", "1234")
    assert r.stdout.strip() == "**** **** ****" and "--reveal" in r.stderr
    assert "--reveal" not in cli("mynumber", "--reveal", "--pin", "1234").stderr
    assert cli("--json", "mynumber", "--pin", "1234").stderr == ""


def test_verify_of_an_auth_key_signature_shows_one_key_kind(cli, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("hello")
    sig = tmp_path / "doc.p7s"
    assert cli("sign", str(doc), "--key", "auth", "-o", str(sig), "--pin", "1234").exit_code == 0
    r = cli("verify", str(sig), "--data", str(doc), "--revocation", "none")
    assert r.exit_code == 3 and "user-authentication key" in r.stdout
    assert "signing key" not in r.stdout
    js = cli("--json", "verify", str(sig), "--data", str(doc), "--revocation", "none").json()
    assert js["signatures"][0]["key"] == "auth" and js["reason"] == "wrong-key-usage"
    ok = cli("verify", str(sig), "--data", str(doc), "--key", "auth", "--revocation", "none")
    assert ok.exit_code == 0 and "key:          user-authentication key" in ok.stdout


def _groups(group=jpki_group, path=("jpki",)):
    """Every command group under ``group``: (its command words, the group). Only labels: the
    help itself is read through the ``cli`` fixture (``sys.executable -m jpki``' in-process twin)."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield (*path, name), command
            yield from _groups(command, (*path, name))


def test_every_group_help_has_examples_of_every_command(cli):
    groups = dict(_groups())
    assert {("jpki", "card"), ("jpki", "cert"), ("jpki", "ca"), ("jpki", "pin")} <= set(groups)
    for path, group in groups.items():
        r = cli(*path[1:], "--help", home=None, card=None)
        assert r.exit_code == 0
        examples = r.stdout.split("Examples:", 1)
        assert len(examples) == 2, f"{' '.join(path)} --help has no Examples"
        shown = examples[1].split("Options:", 1)[0]
        for name in group.list_commands(click.Context(group)):
            assert f"{' '.join(path)} {name}" in shown, f"{' '.join(path)} --help shows no {name} example"


def test_ca_list_holder_and_the_old_card_spelling(cli):
    new = cli("--json", "ca", "list", "--holder", "alice").json()
    old = cli("--json", "ca", "list", "--card", "alice").json()
    assert new == old and {d["card"] for d in new} == {"alice"} and len(new) == 2
    help_text = cli("ca", "list", "--help").stdout
    assert "--holder" in help_text and "--card" not in help_text


def test_card_create_warns_about_an_unknown_locality(cli):
    args = ["--name", "佐藤　次郎", "--address", "大阪府大阪市北区梅田1-1", "--birth", "1990-01-01",
            "--sex", "male"]
    r = cli("--json", "card", "create", "jiro", *args)
    assert r.exit_code == 0 and r.json()["card"] == "jiro"
    assert "warning: the signing certificate says L=Unknown: give --municipality" in r.stderr
    named = cli("card", "create", "jiro2", *args, "--municipality", "Kita-ku")
    assert named.exit_code == 0 and "warning" not in named.stderr
    nowhere = cli("card", "create", "jiro3", *args[:3], "どこか", *args[4:])
    assert "--municipality and --prefecture" in nowhere.stderr
    sample = cli("card", "create", "carol")
    assert "warning" not in sample.stderr
    moved = cli("card", "move", "alice", "--address", "大阪府大阪市北区梅田1-1")
    assert moved.exit_code == 0 and "L=Unknown" in moved.stderr


def _serials(home: Path) -> list[str]:
    with CertificateDB(home / "ca" / "certs.db") as db:
        return [r.serial for r in db.list()]


def test_ca_revoke_accepts_a_unique_serial_prefix(cli, home):
    serials = _serials(home)
    target = serials[0]
    n = next(n for n in range(1, len(target)) if sum(s.startswith(target[:n]) for s in serials) == 1)
    prefix = target[:max(n, 6)].upper()
    r = cli("--json", "ca", "revoke", prefix, "--reason", "keyCompromise")
    assert r.exit_code == 0, r
    assert r.json()["serial"] == target


def test_ca_revoke_refuses_an_ambiguous_or_unknown_prefix(cli, home):
    with CertificateDB(home / "ca" / "certs.db") as db:
        db.bulk_insert_revoked([RevokedRow(0x1070AB01, "sign", FIXED), RevokedRow(0x1070AB02, "sign", FIXED)])
    r = cli("ca", "revoke", "1070AB")
    assert r.exit_code == 2
    assert r.stderr.splitlines() == ["error: 1070AB starts several serials: 1070AB01, 1070AB02",
                                     "hint: give more digits of the serial"]
    assert cli("--json", "ca", "revoke", "1070ab").json()["candidates"] == ["1070AB01", "1070AB02"]
    unknown = next(p for p in ("abcdef", "fedcba", "123456") if not any(s.startswith(p) for s in _serials(home)))
    r = cli("--json", "ca", "revoke", unknown)
    assert r.exit_code == 2 and r.json()["error"] == "unknown_serial"
    assert cli("ca", "revoke", "xyz").exit_code == 2


def test_ca_revoke_invalidity_date_is_the_cli_date_time_type(cli, home):
    target = _serials(home)[0]
    r = cli("--json", "ca", "revoke", target, "--invalidity-date", "last tuesday")
    assert r.exit_code == 2 and r.json()["error"] == "usage"
    assert "'--invalidity-date'" in r.stderr and "'last tuesday' is not an ISO 8601 date-time" in r.stderr
    assert _serials(home)[0] == target and cli("--json", "ca", "list", "--revoked").stdout.strip() == "[]"
    # without an offset it is UTC, as --at
    r = cli("--json", "ca", "revoke", target, "--reason", "keyCompromise",
            "--invalidity-date", "2026-10-30T12:00:00")
    assert r.exit_code == 0, r
    with CertificateDB(home / "ca" / "certs.db") as db:
        assert db.get(target).invalidity_date == dt.datetime(2026, 10, 30, 12, tzinfo=dt.UTC)


def test_cert_read_sign_without_a_password_writes_nothing(cli):
    r = cli("cert", "read", "sign", "--pem", input="")
    assert r.exit_code == 2 and r.stdout == ""
    first, hint = r.stderr.splitlines()
    assert first == "error: no signature password (6-16 characters) given, and stdin is not a terminal to ask on"
    assert "--pin" in hint and "$JPKI_SIGN_PIN" in hint and "echo" in hint
    js = cli("--json", "cert", "read", "sign", "--pem", input="")
    assert js.json()["error"] == "no_pin"


@pytest.fixture
def unserved_home(tmp_path, key_pool):
    """A home whose CA names a free port where nothing answers (no `jpki ca serve`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = Home(tmp_path / "unserved")
    home.path.mkdir()
    clock = _common.environment_clock()
    TestCA.init(home.ca_dir, clock=clock, base_url=f"http://127.0.0.1:{port}",
                keys={"sign": key_pool[0], "auth": key_pool[1]}).close()
    create_card(home, "alice", SAMPLE_PERSONAS["alice"], clock=clock, keys=(key_pool[2], key_pool[3]))
    return home.path


def test_verify_without_a_responder_says_once_why_and_how_to_fix(cli, unserved_home, tmp_path):
    cli = cli.bind(home=unserved_home)
    doc = tmp_path / "doc.txt"
    doc.write_text("hello")
    assert cli("sign", str(doc), "--pin", "ABC123").exit_code == 0
    r = cli("verify", str(tmp_path / "doc.txt.p7s"))
    assert r.exit_code == 3
    assert r.stdout.count("INVALID") == 1 and r.stdout.count("no revocation source answered") == 1
    assert r.stdout.startswith(f"{tmp_path / 'doc.txt.p7s'}: INVALID (untrusted): revocation could not be checked")
    assert "山田　花子" in r.stdout  # the rest of the report is still there
    error, hint = r.stderr.splitlines()
    assert error == "error: revocation could not be checked: no OCSP responder or CRL answered"
    assert "jpki ca serve" in hint and "--soft-fail" in hint
    js = cli("--json", "verify", str(tmp_path / "doc.txt.p7s")).json()
    assert js["reason"] == "untrusted" and js["error"] == "verification_failed" and "jpki ca serve" in js["hint"]
    cert = cli("cert", "verify", "--from-card", "auth")
    assert cert.exit_code == 3 and "jpki ca serve" in cert.stderr and "revocation-unavailable" in cert.stderr


class _Refusing(BaseHTTPRequestHandler):
    """A relying party that refuses: an unknown pending challenge (404), a store down (503)."""

    def _answer(self, status: int, reason: str) -> None:
        body = json.dumps({"ok": False, "reason": reason, "message": reason}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(404, "not-found")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(503, "store-unavailable")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def refusing_service():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


def test_login_refused_by_the_service_exits_3(cli, refusing_service):
    r = cli("login", refusing_service, "--challenge", "A" * 22)  # no PIN given: none asked
    assert r.exit_code == 3, r
    assert "refused to show the challenge (HTTP 404, not-found)" in r.stderr
    doc = cli("--json", "login", refusing_service, "--challenge", "A" * 22).json()
    assert doc["error"] == "refused" and doc["status"] == 404 and doc["reason"] == "not-found"
    down = cli("--json", "login", refusing_service)
    assert down.exit_code == 1 and down.json()["status"] == 503


# --------------------------------------------------------------------------- F. progress

def test_progress_draws_after_the_delay_throttled_and_erases():
    now = [0.0]
    out = io.StringIO()
    p = Progress("entries", 1000, stream=out, delay=0.5, interval=0.1, monotonic=lambda: now[0])
    p.update(10)
    assert out.getvalue() == ""  # quick tasks show nothing
    now[0] = 0.6
    p.update(100)
    assert out.getvalue() == "\r\033[Kentries: 100 of 1,000 (10%)"
    now[0] = 0.65
    p.update(200)  # too soon after the last redraw
    assert out.getvalue().count("entries:") == 1
    now[0] = 0.8
    p.update(1000)
    assert out.getvalue().endswith("entries: 1,000 of 1,000 (100%)")
    p.close()
    assert out.getvalue().endswith("\r\033[K")
    hidden = Progress("x", stream=out, visible=False, delay=0)
    hidden.update(5)
    assert hidden.done == 5 and not hidden.drawn


@pytest.fixture
def terminal(monkeypatch):
    """stderr counts as a terminal; progress shows at once."""
    monkeypatch.setattr(_common, "stderr_is_tty", lambda: True)
    monkeypatch.setattr(_common, "PROGRESS_DELAY", 0.0)
    monkeypatch.setattr(_common, "PROGRESS_INTERVAL", 0.0)


@pytest.fixture
def many_revoked(home):
    with CertificateDB(home / "ca" / "certs.db") as db:
        db.bulk_insert_revoked(RevokedRow(0x5000_0000 + i, "sign", FIXED) for i in range(10_000))
    return home


def test_ca_crl_shows_progress_on_a_terminal(cli, many_revoked, terminal, tmp_path):
    r = cli("ca", "crl", "--kind", "sign", "-o", str(tmp_path / "s.crl"), home=many_revoked)
    assert r.exit_code == 0, r
    assert "sign CRL entries: 10,000 of 10,000 (100%)" in r.stderr and r.stderr.endswith("\r\033[K")
    assert "wrote the sign CRL (10000 entries)" in r.stdout
    js = cli("--json", "ca", "crl", "--kind", "sign", "-o", str(tmp_path / "s.crl"), home=many_revoked)
    assert js.stderr == "" and js.json()["entries"] == 10_000


def test_test_ca_crl_reports_progress(many_revoked):
    calls = []
    with TestCA.open(many_revoked / "ca") as ca:
        ca.crl("sign", progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 10_000) and calls[-1] == (10_000, 10_000)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_ca_list_streams_the_same_rows_with_progress(cli, many_revoked, terminal):
    with CertificateDB(many_revoked / "ca" / "certs.db") as db:
        records = db.list()
    expected = [{"serial": r.serial, "kind": r.kind, "card": r.card, "status": r.status,
                 "not_after": r.not_after.isoformat(),
                 "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
                 "reason": r.reason} for r in records]
    js = cli("--json", "ca", "list", home=many_revoked)
    assert js.stderr == ""
    assert js.json() == expected
    assert js.stdout == json.dumps(expected, ensure_ascii=False, indent=2) + "\n"
    human = cli("ca", "list", home=many_revoked)
    lines = human.stdout.splitlines()
    assert len(lines) == len(expected)
    good = next(i for i, d in enumerate(expected) if d["status"] == "good")
    d = expected[good]
    assert lines[good] == f"{d['serial']:<42} {d['kind']:<4} {d['card']:<12} {d['status']:<10} until {d['not_after']}"
    assert lines[0].endswith(f"revoked    unspecified {FIXED.isoformat()}")
    assert f"listing certificates: {len(expected):,} of {len(expected):,}" in human.stderr
    empty = cli("--json", "ca", "list", "--kind", "auth", "--revoked", home=many_revoked)
    assert empty.json() == []


def test_usage_error_type_is_still_usage_error(cli):
    r = cli("card", "show", "../x", card=None)
    assert isinstance(r.exception, UsageError)


def test_ctrl_c_exits_130_and_a_declined_confirmation_1(cli, home, monkeypatch):
    def interrupted(self):
        raise KeyboardInterrupt
    monkeypatch.setattr("jpki.home.Home.card_names", interrupted)
    r = cli("--json", "card", "list")
    assert r.exit_code == 130 and r.json()["error"] == "interrupted"
    assert "Traceback" not in r.stderr

    def declined(self):
        raise click.exceptions.Abort()
    monkeypatch.setattr("jpki.home.Home.card_names", declined)
    r = cli("--json", "card", "list")
    assert r.exit_code == 1 and r.json()["error"] == "aborted"
