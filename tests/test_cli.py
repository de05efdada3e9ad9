"""The jpki command line: in process through ``jpki.cli.main`` and as real processes
(``python -m jpki``), both by the ``cli`` fixture (tests/cli_support.py).

Exit codes (architecture note): 0 ok, 1 error, 2 usage, 3 verification failed, 4 PIN, 5 no reader
or card. Every test works on a copy of the provisioned ``home`` (or an empty directory); the
autouse fixture of conftest points HOME at a temporary directory.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import click
import pytest
from cli_support import Cli
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from jpki.cli import cli as jpki_group
from jpki.errors import (
    CardError,
    JpkiError,
    NoCardError,
    NoReaderError,
    PinBlockedError,
    PinIncorrectError,
    ProtocolError,
    SecurityStatusError,
    UsageError,
    VerificationError,
)
from jpki.identity import is_valid_mynumber, mynumber_check_digit
from jpki.pins import PINS
from jpki.pki import CertificateDB

MASKED = "**** **** ****"
DEMO_STEPS = ("test CA", "emulated card", "card type", "read certificates", "sign with the auth key",
              "sign with the sign key", "card-info AP")
# a 12-digit number standing on its own (not part of a hex serial or fingerprint)
TWELVE_DIGITS = re.compile(r"(?<![0-9A-Fa-f])[0-9]{12}(?![0-9A-Fa-f])")


# --------------------------------------------------------------------------- helpers

def holder(home: Path, name: str = "alice") -> dict:
    return json.loads((home / "holders" / f"{name}.json").read_text(encoding="utf-8"))


def issued_der(home: Path, kind: str, name: str = "alice") -> bytes:
    db = CertificateDB(home / "ca" / "certs.db")
    try:
        rec = db.get(holder(home, name)[f"{kind}_serial"])
        assert rec is not None
        return rec.der
    finally:
        db.close()


def lock_out(cli: Cli, kind: str = "auth", wrong: str = "0000", tries: int = 3) -> None:
    for left in range(tries - 1, -1, -1):
        r = cli("pin", "verify", kind, "--pin", wrong)
        assert r.exit_code == 4, r
        expected = {0: "wrong, now blocked", 1: "wrong, 1 try left"}.get(left, f"wrong, {left} tries left")
        assert expected in r.stderr, r.stderr


@pytest.fixture
def openssl():
    path = shutil.which("openssl")
    if path is None:
        pytest.skip("openssl not installed")
    return path


def _valid_my_number(first11: str = "12345678901") -> str:
    return first11 + str(mynumber_check_digit(first11))


# --------------------------------------------------------------------------- ca

def test_ca_init_on_an_empty_directory_then_refuses_again(cli, tmp_path):
    home = tmp_path / "fresh"
    cli = cli.bind(home=home)
    r = cli("ca", "init")
    assert r.exit_code == 0, r.output
    assert "test CA created" in r.stdout
    for name in ("sign_ca.pem", "auth_ca.pem", "sign_ca.key", "auth_ca.key"):
        assert (home / "ca" / name).is_file()
    assert (home / "ca" / "sign_ca.key").stat().st_mode & 0o077 == 0
    sign = x509.load_pem_x509_certificate((home / "ca" / "sign_ca.pem").read_bytes())
    assert "TEST" in sign.subject.rfc4514_string()
    before = (home / "ca" / "sign_ca.pem").read_bytes()

    again = cli("ca", "init")
    assert isinstance(again.exception, UsageError)
    out = cli("ca", "init")
    assert out.exit_code == 2
    assert out.stderr.startswith("error: ")
    assert (home / "ca" / "sign_ca.pem").read_bytes() == before, "the existing CA is untouched"


def test_ca_init_json_is_one_document(cli, tmp_path):
    r = cli("--json", "ca", "init", "--base-url", "http://127.0.0.1:9999", home=tmp_path / "h")
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert doc["base_url"] == "http://127.0.0.1:9999"
    assert "TEST" in doc["sign_ca"] and "TEST" in doc["auth_ca"]


def test_card_create_without_a_ca_is_a_usage_error(cli, tmp_path):
    out = cli("card", "create", "alice", home=tmp_path / "noca")
    assert out.exit_code == 2
    assert "ca init" in out.stderr


# --------------------------------------------------------------------------- card create / list / show

def test_card_create_with_a_custom_persona(cli, home):
    number = _valid_my_number("31415926535")
    r = cli("card", "create", "taro", "--name", "佐藤　太郎", "--address",
            "大阪府大阪市北区梅田1-1", "--birth", "1985-12-31", "--sex", "male",
            "--my-number", number, "--auth-pin", "4321", "--sign-pin", "secret42",
            "--card-pin", "8765", "--security-code", "2468")
    assert r.exit_code == 0, (r.output, r.exception)
    assert "created card taro" in r.stdout
    assert number not in r.output

    attrs = cli("--json", "attrs", "--pin", "8765", card="emu:taro")
    assert attrs.exit_code == 0, attrs.output
    assert attrs.json() == {"name": "佐藤　太郎", "address": "大阪府大阪市北区梅田１-１",
                            "birth_date": "1985-12-31", "sex": "male"}
    mn = cli("mynumber", "--reveal", "--pin", "8765", card="emu:taro")
    assert mn.stdout.strip() == number
    assert cli("pin", "verify", "auth", "--pin", "4321", card="emu:taro").exit_code == 0
    assert cli("pin", "verify", "sign", "--pin", "SECRET42", card="emu:taro").exit_code == 0
    show = cli("--json", "cert", "show", "sign", "--pin", "secret42", card="emu:taro")
    d = show.json()
    assert d["holder"]["name"] == "佐藤　太郎" and d["holder"]["sex"] == "male"
    assert "L=Osaka" in d["subject"]
    h = holder(home, "taro")
    assert h["security_code"] == "2468" and h["persona"]["my_number"] == number
    # the default PIN does not open the custom card
    assert isinstance(cli("pin", "verify", "auth", "--pin", "1234",
                          card="emu:taro").exception, PinIncorrectError)


def test_card_create_with_a_sample_persona(cli, home):
    r = cli("--json", "card", "create", "carol")
    assert r.exit_code == 0, (r.output, r.exception)
    d = r.json()
    assert d["card"] == "carol" and d["uri"] == "emu:carol"
    assert d["holder"] == "佐藤　みのり"
    assert d["my_number"] == MASKED
    assert is_valid_mynumber(holder(home, "carol")["persona"]["my_number"])
    attrs = cli("--json", "attrs", "--pin", "1234", card="emu:carol").json()
    assert attrs["birth_date"] == "2000-02-29" and attrs["sex"] == "unknown"
    assert cli("card", "list").stdout.split() == ["alice", "bob", "carol"]


@pytest.mark.parametrize("extra, needle", [
    (["--birth", "1990-02-30"], "--birth"),
    (["--birth", "30/01/1990"], "--birth"),
    (["--my-number", "123456789012"], "My Number"),
    (["--my-number", "12345678901"], "My Number"),
    (["--auth-pin", "12a4"], "4 digits"),
    (["--auth-pin", "12345"], "4 digits"),
    (["--sign-pin", "abc"], "6-16"),
    (["--sign-pin", "ABC-123"], "6-16"),
    (["--card-pin", "1"], "4 digits"),
    (["--security-code", "12"], "security code"),
])
def test_card_create_rejects_invalid_input(cli, home, extra, needle):
    assert not is_valid_mynumber("123456789012")
    out = cli("card", "create", "dave", *extra)
    assert out.exit_code == 2, out
    assert out.stderr.startswith("error: ") and needle in out.stderr, out.stderr
    assert not (home / "cards" / "dave").exists()
    assert not (home / "holders" / "dave.json").exists()
    r = cli("card", "create", "dave", *extra)
    assert isinstance(r.exception, UsageError)


@pytest.mark.parametrize("args", [
    ["card", "create", "zed"],                                          # not a sample persona
    ["card", "create", "zed", "--name", "X", "--address", "Y", "--birth", "2000-01-01"],
    ["card", "create", "alice"],                                        # exists already
    ["card", "create", "bad/name", "--name", "山田　太郎", "--address", "東京都", "--birth",
     "2000-01-01", "--sex", "male"],
])
def test_card_create_usage_errors(cli, args):
    out = cli(*args)
    assert out.exit_code == 2, out
    assert out.stderr.startswith("error: ")


def test_card_create_bad_choice_is_clicks_usage_error(cli):
    out = cli("card", "create", "zed", "--sex", "other")
    assert out.exit_code == 2
    assert "Invalid value" in out.stderr


def test_card_list(cli, home, tmp_path):
    r = cli("card", "list")
    assert r.exit_code == 0
    assert r.stdout.split() == ["alice", "bob"]
    assert cli("--json", "card", "list").json() == ["alice", "bob"]
    empty = cli("card", "list", home=tmp_path / "empty")
    assert empty.exit_code == 0 and "(no cards)" in empty.stdout


def test_card_show_masks_the_my_number_unless_reveal(cli, home):
    number = holder(home)["persona"]["my_number"]
    r = cli("card", "show", "alice")
    assert r.exit_code == 0, r.output
    assert number not in r.output and MASKED in r.stdout
    assert "山田　花子" in r.stdout
    d = cli("--json", "card", "show", "alice").json()
    assert d["holder"]["my_number"] == MASKED
    assert d["pins"]["auth"] == {"tries_left": 3, "max": 3}
    assert d["pins"]["sign"] == {"tries_left": 5, "max": 5}
    assert number not in json.dumps(d)
    revealed = cli("card", "show", "alice", "--reveal")
    assert number in revealed.stdout
    assert cli("--json", "card", "show", "bob", "--reveal").json()["holder"][
        "my_number"] == holder(home, "bob")["persona"]["my_number"]


def test_card_show_unknown_card(cli):
    out = cli("card", "show", "nobody")
    assert out.exit_code == 5
    assert "nobody" in out.stderr


def test_card_reset_pin_after_a_lock_out(cli, home):
    lock_out(cli, "auth")
    blocked = cli("pin", "verify", "auth", "--pin", "1234")
    assert blocked.exit_code == 4 and "blocked" in blocked.stderr
    status = cli("--json", "pin", "status").json()
    assert status["auth"] == {"tries_left": 0, "blocked": True}

    r = cli("card", "reset-pin", "alice", "auth")
    assert r.exit_code == 0, r.output
    assert cli("--json", "pin", "status").json()["auth"] == {
        "tries_left": 3, "blocked": False}
    assert cli("pin", "verify", "auth", "--pin", "1234").exit_code == 0


def test_card_reset_pin_with_a_new_value(cli, home):
    lock_out(cli, "sign", "WRONG1", tries=5)
    r = cli("--json", "card", "reset-pin", "alice", "sign", "--new-pin", "fresh123")
    assert r.json() == {"card": "alice", "pin": "sign", "reset": True, "new_value": True}
    assert "FRESH123" not in r.output and "fresh123" not in r.output
    assert cli("pin", "verify", "sign", "--pin", "FRESH123").exit_code == 0
    assert isinstance(cli("pin", "verify", "sign", "--pin", "ABC123").exception,
                      PinIncorrectError)


@pytest.mark.parametrize("args, code", [
    (["card", "reset-pin", "nobody", "auth"], 5),
    (["card", "reset-pin", "alice", "auth", "--new-pin", "12"], 2),
    (["card", "reset-pin", "alice", "other"], 2),
])
def test_card_reset_pin_errors(cli, args, code):
    assert cli(*args).exit_code == code


# --------------------------------------------------------------------------- info, pin

def test_info(cli):
    r = cli("info")
    assert r.exit_code == 0, r.output
    assert "my-number-card" in r.stdout and "JPKIAPICCTOKEN2" in r.stdout
    assert "3BE000FF8131FE4514" in r.stdout
    d = cli("--json", "info").json()
    assert d["card_type"] == "my-number-card"
    assert d["atr"] == "3BE000FF8131FE4514"
    assert d["pins"] == {"auth": 3, "sign": 5, "card": 3}


def test_pin_status_json_is_exactly_one_document_and_spends_nothing(cli):
    for _ in range(2):
        r = cli("--json", "pin", "status")
        assert r.exit_code == 0
        assert r.stderr == ""
        assert r.json() == {"auth": {"tries_left": 3, "blocked": False},
                            "sign": {"tries_left": 5, "blocked": False},
                            "card": {"tries_left": 3, "blocked": False}}
    human = cli("pin", "status")
    assert "3/3" in human.stdout and "5/5" in human.stdout


def test_pin_status_takes_the_maxima_from_the_pin_table(cli, monkeypatch):
    # a card tells the tries left, not the maximum: `pin status` shows jpki.pins' maximum
    monkeypatch.setitem(PINS, "sign", dataclasses.replace(PINS["sign"], max_tries=9))
    lines = cli("pin", "status").stdout.splitlines()
    assert any(line.startswith("signature password:") and line.endswith(" 5/9") for line in lines), lines


def _all_commands() -> dict[str, click.Command]:
    """Every leaf command of ``jpki`` by its path (``cert verify``), lazily loaded ones too."""
    ctx = click.Context(jpki_group)
    found: dict[str, click.Command] = {}

    def walk(group: click.Group, prefix: str) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None
            path = f"{prefix} {name}".strip()
            if isinstance(command, click.Group):
                walk(command, path)
            else:
                found[path] = command
    walk(jpki_group, "")
    return found


def _option(command: click.Command, name: str) -> click.Option | None:
    return next((p for p in command.params if isinstance(p, click.Option) and p.name == name), None)


def test_every_pin_option_is_the_shared_one_and_names_its_pin_and_variable():
    with_pin = {path: _option(command, "pin_value") for path, command in _all_commands().items()
                if _option(command, "pin_value") is not None}
    assert {"pin verify", "pin change", "cert read", "cert show", "cert verify", "mynumber", "attrs",
            "pkey sign", "sign", "login", "ekyc"} <= set(with_pin)
    for path, option in with_pin.items():
        assert option.opts == ["--pin"] and option.metavar == "PIN", path
        text = option.help or ""
        named = [spec for spec in PINS.values() if spec.name in text]
        assert named, (path, text)
        for spec in named:
            assert f"${spec.env}" in text, (path, text)


def test_the_revocation_options_are_defined_once():
    commands = _all_commands()
    checking = {path: commands[path] for path in ("cert verify", "verify", "rp serve")}
    revocation = [_option(command, "revocation") for command in checking.values()]
    assert all(o is not None for o in revocation)
    assert len({(tuple(o.type.choices), o.default, o.help) for o in revocation}) == 1  # type: ignore[union-attr]
    soft = [_option(commands[path], "soft_fail") for path in ("cert verify", "verify")]
    assert all(o is not None and o.is_flag for o in soft) and len({o.help for o in soft}) == 1  # type: ignore[union-attr]
    assert _option(commands["rp serve"], "soft_fail") is None  # a relying party fails closed
    assert _option(commands["rp serve"], "revocation_max_age") is not None


@pytest.mark.parametrize("kind, value", [("auth", "1234"), ("sign", "ABC123"), ("sign", "abc123"),
                                         ("card", "1234")])
def test_pin_verify_from_the_option(cli, kind, value):
    r = cli("pin", "verify", kind, "--pin", value)
    assert r.exit_code == 0, (r.output, r.exception)
    assert "verified" in r.stdout
    assert value not in r.output


@pytest.mark.parametrize("kind, var, value", [("auth", "JPKI_AUTH_PIN", "1234"),
                                              ("sign", "JPKI_SIGN_PIN", "ABC123"),
                                              ("card", "JPKI_CARD_PIN", "1234")])
def test_pin_verify_from_the_environment(cli, kind, var, value):
    r = cli("pin", "verify", kind, env={var: value}, input="")
    assert r.exit_code == 0, (r.output, r.exception)


@pytest.mark.parametrize("kind, value", [("auth", "1234"), ("sign", "abc123"), ("card", "1234")])
def test_pin_verify_from_stdin(cli, kind, value):
    r = cli("--json", "pin", "verify", kind, input=value + "\n")
    assert r.exit_code == 0, (r.output, r.exception)
    assert r.json() == {"pin": kind, "verified": True}


def test_pin_sources_in_order_option_environment_stdin(cli):
    # option beats a wrong environment variable and a wrong stdin
    assert cli("pin", "verify", "auth", "--pin", "1234", env={"JPKI_AUTH_PIN": "0000"},
               input="0000\n").exit_code == 0
    # the environment beats a wrong stdin
    assert cli("pin", "verify", "auth", env={"JPKI_AUTH_PIN": "1234"},
               input="0000\n").exit_code == 0
    assert cli("--json", "pin", "status").json()["auth"]["tries_left"] == 3


def test_pin_verify_without_any_source_is_a_usage_error(cli):
    out = cli("pin", "verify", "auth", input="")
    assert out.exit_code == 2
    assert "JPKI_AUTH_PIN" in out.stderr


def test_wrong_pin_exit_4_and_tries_left(cli):
    r = cli("pin", "verify", "auth", "--pin", "0000")
    assert isinstance(r.exception, PinIncorrectError) and r.exception.tries_left == 2
    out = cli("pin", "verify", "auth", "--pin", "0000")
    assert out.exit_code == 4
    assert "user-authentication PIN: wrong, 1 try left" in out.stderr
    js = cli("--json", "pin", "verify", "auth", "--pin", "0000")
    assert js.exit_code == 4
    doc = js.json()
    assert doc["ok"] is False and doc["error"] == "pin_incorrect" and doc["pin"] == "auth"
    assert doc["tries_left"] == 0 and doc["sw"] == "63C0"
    blocked = cli("--json", "pin", "verify", "auth", "--pin", "1234").json()
    assert blocked["error"] == "pin_blocked" and blocked["sw"] == "6984"


def test_bad_pin_format_spends_no_try(cli):
    out = cli("pin", "verify", "auth", "--pin", "12345")
    assert out.exit_code == 2
    assert cli("--json", "pin", "status").json()["auth"]["tries_left"] == 3


@pytest.mark.parametrize("kind, old, new", [("auth", "1234", "4321"), ("sign", "ABC123", "newpw777"),
                                            ("card", "1234", "9999")])
def test_pin_change_with_options(cli, kind, old, new):
    r = cli("pin", "change", kind, "--pin", old, "--new-pin", new)
    assert r.exit_code == 0, (r.output, r.exception)
    assert "changed" in r.stdout
    assert cli("pin", "verify", kind, "--pin", new).exit_code == 0
    assert isinstance(cli("pin", "verify", kind, "--pin", old).exception, PinIncorrectError)


def test_pin_change_from_stdin(cli):
    r = cli("pin", "change", "auth", input="1234\n5678\n")
    assert r.exit_code == 0, (r.output, r.exception)
    assert cli("pin", "verify", "auth", "--pin", "5678").exit_code == 0


def test_pin_change_errors(cli):
    wrong = cli("pin", "change", "auth", "--pin", "0000", "--new-pin", "5678")
    assert wrong.exit_code == 4 and "2 tries left" in wrong.stderr
    bad_new = cli("pin", "change", "auth", "--pin", "1234", "--new-pin", "56")
    assert bad_new.exit_code == 2
    assert cli("pin", "verify", "auth", "--pin", "1234").exit_code == 0


# --------------------------------------------------------------------------- cert

@pytest.mark.parametrize("kind", ["auth", "auth-ca", "sign-ca"])
def test_cert_read_der_to_a_file_equals_what_the_ca_issued(cli, home, tmp_path, kind):
    out = tmp_path / f"{kind}.der"
    r = cli("cert", "read", kind, "-o", str(out), "--der")
    assert r.exit_code == 0, (r.output, r.exception)
    if kind == "auth":
        expected = issued_der(home, "auth")
    else:
        pem = (home / "ca" / f"{kind[:-3]}_ca.pem").read_bytes()
        expected = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert out.read_bytes() == expected


def test_cert_read_sign_needs_the_password(cli, home, tmp_path):
    out = tmp_path / "sign.der"
    no_pin = cli("cert", "read", "sign", "-o", str(out), input="")
    assert no_pin.exit_code == 2 and not out.exists()
    r = cli("cert", "read", "sign", "-o", str(out), "--pin", "ABC123")
    assert r.exit_code == 0, (r.output, r.exception)
    assert out.read_bytes() == issued_der(home, "sign")
    assert cli("cert", "read", "sign", "-o", str(out), "--pin", "WRONG9").exit_code == 4


def test_cert_read_pem_to_stdout(cli, home):
    r = cli("cert", "read", "auth", "--pem")
    assert r.exit_code == 0
    assert r.stdout.startswith("-----BEGIN CERTIFICATE-----")
    cert = x509.load_pem_x509_certificate(r.stdout.encode())
    assert cert.public_bytes(serialization.Encoding.DER) == issued_der(home, "auth")
    default = cli("cert", "read", "auth")  # PEM is the default on stdout
    assert default.stdout == r.stdout


def test_cert_read_der_to_stdout_is_binary(cli, home):
    r = cli("cert", "read", "auth", "--der")
    assert r.exit_code == 0
    assert r.stdout_bytes == issued_der(home, "auth")


def test_cert_read_der_with_json_is_one_json_document(cli):
    r = cli("--json", "cert", "read", "auth", "--der")
    assert r.exit_code == 0
    doc = json.loads(r.stdout_bytes.decode("utf-8"))
    assert doc["kind"] == "auth"


def test_cert_show_sign_shows_the_holder(cli, home):
    r = cli("cert", "show", "sign", "--pin", "ABC123")
    assert r.exit_code == 0, (r.output, r.exception)
    assert "山田　花子" in r.stdout and "1990-04-15" in r.stdout and "female" in r.stdout
    d = cli("--json", "cert", "show", "sign", "--pin", "ABC123").json()
    assert d["kind"] == "sign"
    assert d["holder"] == {"name": "山田　花子", "address": holder(home)["persona"]["address"],
                           "birth_date": "1990-04-15", "sex": "female"}
    auth = cli("--json", "cert", "show", "auth").json()
    assert auth["kind"] == "auth" and "holder" not in auth
    assert auth["serial"] == holder(home)["auth_serial"]


# --------------------------------------------------------------------------- card-info AP

def test_mynumber_masked_and_revealed(cli, home):
    number = holder(home)["persona"]["my_number"]
    r = cli("mynumber", "--pin", "1234")
    assert r.exit_code == 0, (r.output, r.exception)
    assert r.stdout.strip() == MASKED
    assert number not in r.output
    d = cli("--json", "mynumber", "--pin", "1234").json()
    assert d == {"my_number": MASKED, "masked": True, "check_digit_valid": True}
    revealed = cli("mynumber", "--reveal", input="1234\n")
    assert revealed.stdout.strip() == number
    assert number not in revealed.stderr
    assert cli("mynumber", "--pin", "0000").exit_code == 4


def test_attrs(cli, home):
    r = cli("attrs", "--pin", "1234")
    assert r.exit_code == 0, (r.output, r.exception)
    p = holder(home)["persona"]
    for value in (p["name"], p["address"], p["birth_date"], "female"):
        assert value in r.stdout
    bob = cli("--json", "attrs", "--pin", "1234", card="emu:bob").json()
    assert bob == {"name": "鈴木　一郎", "address": holder(home, "bob")["persona"]["address"],
                   "birth_date": "1975-11-03", "sex": "male"}


# --------------------------------------------------------------------------- pkey

@pytest.mark.parametrize("key, pin, digest", [("auth", "1234", "sha256"), ("sign", "ABC123", "sha256"),
                                              ("auth", "1234", "sha512"), ("sign", "ABC123", "sha1")])
def test_pkey_sign_verified_with_openssl(cli, tmp_path, openssl, key, pin, digest):
    data = tmp_path / "message.txt"
    data.write_bytes("署名テスト\n".encode() * 100)
    sig = tmp_path / "message.sig"
    r = cli("pkey", "sign", key, str(data), "--digest", digest, "-o", str(sig), "--pin", pin)
    assert r.exit_code == 0, (r.output, r.exception)
    assert len(sig.read_bytes()) == 256
    pem = cli("cert", "read", key, "--pem", "--pin", "ABC123").stdout
    (tmp_path / "cert.pem").write_text(pem)
    pub = subprocess.run([openssl, "x509", "-pubkey", "-noout", "-in", str(tmp_path / "cert.pem")],
                         capture_output=True, text=True, check=True).stdout
    (tmp_path / "pub.pem").write_text(pub)
    v = subprocess.run([openssl, "dgst", f"-{digest}", "-verify", str(tmp_path / "pub.pem"),
                        "-signature", str(sig), str(data)], capture_output=True, text=True)
    assert v.returncode == 0 and "Verified OK" in v.stdout, v.stdout + v.stderr
    data.write_bytes(data.read_bytes() + b"!")
    tampered = subprocess.run([openssl, "dgst", f"-{digest}", "-verify", str(tmp_path / "pub.pem"),
                               "-signature", str(sig), str(data)], capture_output=True, text=True)
    assert tampered.returncode != 0


def test_pkey_sign_errors(cli, tmp_path):
    data = tmp_path / "m"
    data.write_bytes(b"x")
    sig = tmp_path / "s"
    assert cli("pkey", "sign", "auth", str(data), "-o", str(sig), "--pin", "0000").exit_code == 4
    assert not sig.exists()
    assert cli("pkey", "sign", "auth", str(tmp_path / "missing"), "-o", str(sig),
               "--pin", "1234").exit_code == 2
    assert cli("pkey", "sign", "auth", str(data), "--digest", "md5", "-o", str(sig),
               "--pin", "1234").exit_code == 2


# --------------------------------------------------------------------------- apdu

def test_apdu_raw_json(cli, home):
    r = cli("--json", "apdu", "00A4040C0AD392F000260100000001", "00 A4 02 0C 02 00 0A",
            "00B0000004", "00A4040C02FFFF", "00B0000004")
    assert r.exit_code == 0, (r.output, r.exception)
    doc = r.json()
    assert [set(x) for x in doc] == [{"command", "response", "sw"}] * 5
    assert [x["sw"] for x in doc] == ["9000", "9000", "9000", "6A82", "9000"]
    assert doc[1]["command"] == "00A4020C02000A"
    assert doc[2]["response"] == issued_der(home, "auth")[:4].hex().upper()
    human = cli("apdu", "00A4040C0AD392F000260100000001", "00A4020C020001", "00B0000004")
    assert "R< 6982" in human.stdout  # the signing certificate without the password


def test_apdu_rejects_non_hex(cli):
    out = cli("apdu", "00A4ZZ")
    assert out.exit_code == 2 and "not hex" in out.stderr


# --------------------------------------------------------------------------- no card, exit codes

def test_unknown_emulated_card_exit_5(cli):
    r = cli("info", card="emu:nobody")
    assert isinstance(r.exception, NoCardError)
    out = cli("info", card="emu:nobody")
    assert out.exit_code == 5
    assert "nobody" in out.stderr
    js = cli("--json", "pin", "status", card="emu:nobody")
    assert js.exit_code == 5 and js.json()["error"] == "no_card"


def test_unknown_card_uri_is_a_usage_error(cli):
    assert cli("info", card="nfc:thing").exit_code == 2


def test_exit_1_for_a_card_answering_malformed_data(cli, home):
    path = home / "cards" / "alice" / "card.json"
    doc = json.loads(path.read_text())
    number = holder(home)["persona"]["my_number"]
    bad = number[:11] + str((int(number[11]) + 1) % 10)
    doc["applications"]["text"]["files"]["0001"]["data"] = base64.b64encode(
        b"\xff\x10\x0c" + bad.encode() + b"\xff\xff").decode()
    path.write_text(json.dumps(doc))
    out = cli("mynumber", "--pin", "1234")
    assert out.exit_code == 1
    assert "check digit" in out.stderr
    assert bad not in out.stderr and bad not in out.stdout


@pytest.mark.parametrize("error, code", [
    (JpkiError("generic"), 1),
    (ProtocolError("garbled"), 1),
    (CardError(0x6F00), 1),
    (UsageError("bad"), 2),
    (VerificationError("bad-signature"), 3),
    (PinBlockedError(), 4),
    (SecurityStatusError(0x6982), 4),
    (NoCardError("no card"), 5),
    (NoReaderError("no reader"), 5),
])
def test_exit_codes_of_every_error_class(cli, monkeypatch, error, code):
    def boom(self):
        raise error
    monkeypatch.setattr("jpki.session.JpkiSession.card_type", boom)
    out = cli("info")
    assert out.exit_code == code
    first = out.stderr.splitlines()[0]
    if isinstance(error, PinBlockedError):  # the CLI names the PIN when the card layer knows it
        assert first == "error: PIN: blocked"
    else:
        assert first == f"error: {error}"
    js = cli("--json", "info")
    assert js.exit_code == code
    doc = js.json()
    assert doc["ok"] is False and doc["error"] == error.code
    if isinstance(error, VerificationError):
        assert doc["reason"] == "bad-signature"


def test_in_process_and_as_a_process_the_cli_answers_the_same(cli):
    """The two runners of the ``cli`` fixture: the same exit code, stdout and stderr; in process
    the exception that jpki.cli.main mapped is kept (as a process it stays in the child)."""
    for args, card, exit_code, exception in [(("--json", "pin", "status"), "emu:alice", 0, None),
                                             (("--json", "info"), "emu:nobody", 5, NoCardError)]:
        inside, outside = cli(*args, card=card), cli.process(*args, card=card)
        assert inside.exit_code == outside.exit_code == exit_code, (inside, outside)
        assert (inside.stdout, inside.stderr) == (outside.stdout, outside.stderr)
        assert inside.json() == outside.json()
        if exception is None:
            assert inside.exception is None
        else:
            assert isinstance(inside.exception, exception), inside
        assert outside.exception is None


def test_an_exception_escaping_main_fails_the_test(cli, monkeypatch):
    """main() never lets an exception through (a user would see a traceback): the in-process
    runner turns one into the test's failure instead of an exit code."""
    def broken(*args, **kwargs):
        raise RuntimeError("boom")
    monkeypatch.setattr("jpki.cli._print_failure", broken)
    with pytest.raises(AssertionError, match=r"RuntimeError escaped jpki\.cli\.main"):
        cli("info", card="emu:nobody")


def test_exit_0_and_click_usage_exit_2(cli):
    assert cli("--help", home=None, card=None).exit_code == 0
    assert cli("no-such-command", home=None, card=None).exit_code == 2
    assert cli("pin", "verify", "nonsense", home=None, card=None).exit_code == 2


def test_default_home_is_under_home_and_jpki_home_overrides(cli, home, monkeypatch):
    # conftest pointed HOME at a temporary directory: the default home is HOME/.jpki
    r = cli("card", "list", home=None, card=None)
    assert r.exit_code == 0 and "(no cards)" in r.stdout
    r = cli("card", "list", home=None, card=None, env={"JPKI_HOME": str(home)})
    assert r.stdout.split() == ["alice", "bob"]
    r = cli("info", card=None, env={"JPKI_CARD": "emu:bob"})
    assert "emulated card bob" in r.stdout


# --------------------------------------------------------------------------- demo

@pytest.mark.slow
def test_demo_through_clirunner(cli, monkeypatch, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp))
    r = cli("demo", home=None, card=None)
    assert r.exit_code == 0, (r.output, r.exception)
    for step in DEMO_STEPS:
        assert f"PASS  {step}:" in r.stdout, step
    assert "FAIL" not in r.stdout
    assert "demo passed" in r.stdout
    assert list(tmp.iterdir()) == [], "the demo removes its temporary home"


@pytest.mark.slow
def test_demo_json_is_one_document(cli, monkeypatch, tmp_path):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    r = cli("--json", "demo", home=None, card=None)
    assert r.exit_code == 0
    doc = r.json()
    assert doc["ok"] is True
    assert [s["name"] for s in doc["steps"]][:len(DEMO_STEPS)] == list(DEMO_STEPS)
    assert all(s["ok"] for s in doc["steps"])


# --------------------------------------------------------------------------- real processes

def test_python_dash_m_jpki_runs(cli):
    p = cli.process("--help", home=None, card=None)
    assert p.exit_code == 0, p.stderr
    assert "Usage: jpki" in p.stdout
    assert cli.process("--version", home=None, card=None).stdout.strip().endswith("0.1.0")


@pytest.mark.slow
def test_process_ca_and_card_lifecycle(cli, tmp_path, openssl):
    home = tmp_path / "h"
    admin = cli.bind(home=home, card=None)
    first = admin.process("ca", "init")
    assert first.exit_code == 0, first.stderr
    second = admin.process("ca", "init")
    assert second.exit_code == 2 and second.stderr.startswith("error: ")

    bad = admin.process("card", "create", "zed", "--name", "佐藤　次郎", "--address", "東京都港区1",
                        "--birth", "2001-02-29", "--sex", "male")
    assert bad.exit_code == 2 and "--birth" in bad.stderr

    made = admin.process("--json", "card", "create", "zed", "--name", "佐藤　次郎",
                         "--address", "東京都港区1", "--birth", "2000-02-29", "--sex", "male")
    assert made.exit_code == 0, made.stderr
    assert made.json()["my_number"] == MASKED
    assert admin.process("card", "list").stdout.split() == ["zed"]

    zed = cli.bind(home=home, card="emu:zed")
    assert zed.process("pin", "verify", "auth", env={"JPKI_AUTH_PIN": "1234"}).exit_code == 0
    assert zed.process("pin", "verify", "sign", input="abc123\n").exit_code == 0
    wrong = zed.process("--json", "pin", "verify", "auth", "--pin", "9999")
    assert wrong.exit_code == 4
    assert wrong.json()["tries_left"] == 2
    assert "2 tries left" in wrong.stderr

    der = tmp_path / "auth.der"
    assert zed.process("cert", "read", "auth", "-o", str(der), "--der").exit_code == 0
    assert der.read_bytes() == issued_der(home, "auth", "zed")

    msg = tmp_path / "msg"
    msg.write_bytes(b"process signature\n")
    sig = tmp_path / "msg.sig"
    s = zed.process("pkey", "sign", "auth", str(msg), "--digest", "sha256", "-o", str(sig),
                    input="1234\n")
    assert s.exit_code == 0, s.stderr
    pub = subprocess.run([openssl, "x509", "-inform", "DER", "-in", str(der), "-pubkey", "-noout"],
                         capture_output=True, text=True, check=True).stdout
    (tmp_path / "pub.pem").write_text(pub)
    v = subprocess.run([openssl, "dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"),
                        "-signature", str(sig), str(msg)], capture_output=True, text=True)
    assert v.returncode == 0 and "Verified OK" in v.stdout

    number = holder(home, "zed")["persona"]["my_number"]
    masked = zed.process("mynumber", "--pin", "1234")
    assert masked.exit_code == 0 and masked.stdout.strip() == MASKED and number not in masked.stderr
    assert zed.process("mynumber", "--reveal", "--pin", "1234").stdout.strip() == number

    nobody = zed.process("info", card="emu:nobody")
    assert nobody.exit_code == 5 and "error:" in nobody.stderr


def test_process_exit_codes_on_the_provisioned_home(cli):
    assert cli.process("info").exit_code == 0
    assert cli.process("pin", "verify", "auth", "--pin", "12").exit_code == 2
    assert cli.process("pin", "verify", "auth", "--pin", "0000").exit_code == 4
    assert cli.process("bogus").exit_code == 2
    js = cli.process("--json", "pin", "status")
    assert js.json()["auth"]["tries_left"] == 2


@pytest.mark.slow
def test_process_demo_leaves_nothing_in_home(cli, tmp_path):
    fake_home, tmp = tmp_path / "home", tmp_path / "tmp"
    fake_home.mkdir()
    tmp.mkdir()
    p = cli.process("demo", home=None, card=None, env={"HOME": str(fake_home), "TMPDIR": str(tmp)},
                    cwd=tmp_path)
    assert p.exit_code == 0, p.stdout + p.stderr
    for step in DEMO_STEPS:
        assert f"PASS  {step}:" in p.stdout, step
    assert "FAIL" not in p.stdout and "demo passed" in p.stdout
    assert list(fake_home.iterdir()) == [], "the demo wrote into HOME"
    assert list(tmp.iterdir()) == [], "the demo left its temporary home behind"
    # the report is fit to share: no full name, no 12-digit number
    assert "山田　花子" not in p.stdout + p.stderr
    assert not TWELVE_DIGITS.search(p.stdout + p.stderr)



@pytest.fixture
def failing_demo(monkeypatch):
    """Make ``jpki demo`` report a failed step (the module, not the click command of that name)."""
    from jpki.demo import DemoReport, Step

    def failing(home, progress=None, **kw):
        report = DemoReport(str(home))
        report.steps.append(Step("test CA", False, "broken on purpose"))
        if progress:
            progress(report.steps[-1])
        return report
    monkeypatch.setattr("jpki.demo.run_demo", failing)  # the CLI imports it when the demo runs


def test_failed_demo_exits_1(cli, failing_demo):
    out = cli("demo", home=None, card=None)
    assert out.exit_code == 1
    assert "FAIL  test CA" in out.stdout and "demo FAILED" in out.stdout
    assert "error: the demo failed" in out.stderr


def test_failed_demo_json_is_still_one_document(cli, failing_demo):
    out = cli("--json", "demo", home=None, card=None)
    assert out.exit_code == 1
    doc = out.json()
    assert doc["ok"] is False
