"""``jpki visual``: the card-surface AP from the command line, like jpki/myna's ``visual``."""

from __future__ import annotations

import json

JP2 = bytes.fromhex("0000000C6A5020200D0A870A")
PNG = b"\x89PNG\r\n\x1a\n"


def test_basic_info_needs_no_pin(cli):
    done = cli("--json", "visual", "basic-info")
    assert done.exit_code == 0, done.stderr
    assert done.json() == {"ap_id": "00010000", "version": 1, "city": "千代田区"}
    assert "city     千代田区" in cli("visual", "basic-info").stdout


def test_read_writes_the_images_and_shows_birth_and_sex(cli, home, tmp_path):
    files = {"name": tmp_path / "name.png", "addr": tmp_path / "addr.png", "photo": tmp_path / "face.jp2"}
    done = cli("--json", "visual", "read", "--name", str(files["name"]), "--addr", str(files["addr"]),
               "--photo", str(files["photo"]), "--pin", "1234")
    assert done.exit_code == 0, done.stderr
    d = done.json()
    assert (d["birth_date"], d["sex"], d["card_expiry"]) == ("1990-04-15", "female", "2036-04-15")
    assert [f["what"] for f in d["files"]] == ["name image", "address image", "photo"]
    assert files["name"].read_bytes().startswith(PNG) and files["addr"].read_bytes().startswith(PNG)
    assert files["photo"].read_bytes().startswith(JP2)
    # the My Number opened the AP but is never shown; the name is only in the image
    my_number = json.loads((home / "holders" / "alice.json").read_text())["persona"]["my_number"]
    assert my_number not in done.output and "山田" not in done.output


def test_single_commands(cli, tmp_path):
    assert cli("visual", "birth", "--pin", "1234").stdout.strip() == "1990-04-15"
    assert cli("--json", "visual", "sex", "--pin", "1234").json() == {"sex": "female"}
    out = tmp_path / "n.png"
    done = cli("visual", "name", "-o", str(out), "--pin", "1234")
    assert done.exit_code == 0 and f"to {out}" in done.stdout and out.read_bytes().startswith(PNG)
    photo = cli("visual", "photo", "-o", "-", "--pin", "1234")
    assert photo.exit_code == 0 and photo.stdout_bytes.startswith(JP2)


def test_pin_from_stdin_and_a_wrong_one(cli):
    assert cli("visual", "birth", input="1234\n").stdout.strip() == "1990-04-15"
    wrong = cli("visual", "birth", "--pin", "0000")
    assert wrong.exit_code == 4 and "card-info PIN: wrong, 2 tries left" in wrong.stderr


def test_read_refuses_stdout(cli):
    done = cli("visual", "read", "--photo", "-", "--pin", "1234")
    assert done.exit_code == 2 and "use 'visual name|addr|photo -o -' for stdout" in done.stderr
