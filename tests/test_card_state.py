"""The emulated card's persistent state: PIN counters, lock-out, crash safety, file modes, resets.

Spec §7: tries per PIN (auth 3, sign 5, card 3, 照合番号A 3, 照合番号B 3), a successful VERIFY resets
the counter, a blocked PIN stays blocked until the municipal office's reset. docs/design.md: every
file 0600, written atomically, and a PIN counter is written before the answer to the VERIFY that
changed it leaves ``transmit`` -- so killing the card can never give a try back.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from card_emulator import CardProfile, CardStateError, MyNumberCard, storage
from card_emulator.provision import CardData, create_card, reset_pin

REPO = Path(__file__).resolve().parents[1]

JPKI_AID = "D392F000260100000001"
TEXT_AID = "D3921000310001010408"
SEL_JPKI = "00A4040C0A" + JPKI_AID
SEL_SURFACE = "00A4040C0AD3921000310001010402"
SEL_TEXT = "00A4040C0A" + TEXT_AID
DI256 = "3031300d060960864801650304020105000420" + "ab" * 32


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def sw(card: MyNumberCard, apdu: str) -> str:
    r = card.transmit(h(apdu))
    return r[-2:].hex().upper()


def verify(p2: str, value: bytes) -> str:
    return f"002000{p2}{len(value):02X}{value.hex()}"


def holder(home: Path) -> dict:
    return json.loads((home / "holders" / "alice.json").read_text(encoding="utf-8"))


def verification_b(home: Path) -> bytes:
    info = holder(home)
    birth = dt.date.fromisoformat(info["persona"]["birth_date"])
    assert dt.date(1989, 1, 8) <= birth < dt.date(2019, 5, 1), "alice is a Heisei birth"
    yy = birth.year - 1988
    expiry = dt.date.fromisoformat(info["card_expiry"])
    return f"{yy:02d}{birth:%m%d}{expiry.year:04d}{info['security_code']}".encode()


def persisted(card_dir: Path) -> dict[str, int]:
    """Tries left per PIN, straight from state.json (which must be valid JSON)."""
    state = json.loads((card_dir / "state.json").read_bytes())
    return {name: rec["remaining"] for name, rec in state["pins"].items()}


MAXIMA = {"auth": 3, "sign": 5, "card": 3, "card_a": 3, "card_b": 3, "surface_a": 3, "surface_b": 3}


def pin_cases(home: Path) -> dict[str, tuple[str, str, bytes, bytes]]:
    """PIN name -> (select AP, VERIFY P2 in SFI form, right value, wrong value)."""
    my_number = holder(home)["persona"]["my_number"].encode()
    wrong_a = (str((int(my_number) + 1) % 10**12).zfill(12)).encode()
    b = verification_b(home)
    return {
        "auth": (SEL_JPKI, "98", b"1234", b"4321"),
        "sign": (SEL_JPKI, "9B", b"ABC123", b"ABC124"),
        "card": (SEL_TEXT, "91", b"1234", b"9999"),
        "card_a": (SEL_TEXT, "94", my_number, wrong_a),
        "card_b": (SEL_TEXT, "95", b, b[:-1] + (b"0" if b[-1:] != b"0" else b"1")),
        "surface_a": (SEL_SURFACE, "93", my_number, wrong_a),
        "surface_b": (SEL_SURFACE, "92", b, b[:-1] + (b"0" if b[-1:] != b"0" else b"1")),
    }


# ============================================================================= lock-out, every PIN
@pytest.mark.parametrize("pin", sorted(MAXIMA))
def test_lock_out_sequence(emu_card, card_dir, home, pin):
    select, p2, good, bad = pin_cases(home)[pin]
    n = MAXIMA[pin]
    empty = "002000" + p2
    assert sw(emu_card, select) == "9000"
    assert sw(emu_card, empty) == f"63C{n:X}"
    # n-1 wrong tries count down, and are on disk at once
    for left in range(n - 1, 0, -1):
        assert sw(emu_card, verify(p2, bad)) == f"63C{left:X}"
        assert sw(emu_card, empty) == f"63C{left:X}"
        assert persisted(card_dir)[pin] == left
    # a successful VERIFY resets the counter to its maximum
    assert sw(emu_card, verify(p2, good)) == "9000"
    assert persisted(card_dir)[pin] == n
    assert sw(emu_card, empty) == f"63C{n:X}"
    # n wrong tries block: the last one answers 63C0
    for left in range(n - 1, -1, -1):
        assert sw(emu_card, verify(p2, bad)) == f"63C{left:X}"
    assert persisted(card_dir)[pin] == 0
    assert sw(emu_card, verify(p2, good)) == "6984"
    assert sw(emu_card, verify(p2, bad)) == "6984"
    assert sw(emu_card, empty) == "63C0"
    assert persisted(card_dir)[pin] == 0
    # the other PINs are untouched
    assert {k: v for k, v in persisted(card_dir).items() if k != pin} == \
        {k: v for k, v in MAXIMA.items() if k != pin}
    assert emu_card.pin_status()[pin] == (0, n)
    # blocked for good: a new session, a re-opened card
    emu_card.reset()
    again = MyNumberCard.open(card_dir)
    for card in (emu_card, again):
        assert sw(card, select) == "9000"
        assert sw(card, verify(p2, good)) == "6984"
        assert sw(card, empty) == "63C0"


@pytest.mark.parametrize("pin", sorted(MAXIMA))
def test_successful_verify_resets_after_every_count(emu_card, card_dir, home, pin):
    select, p2, good, bad = pin_cases(home)[pin]
    assert sw(emu_card, select) == "9000"
    for wrong in range(1, MAXIMA[pin]):
        for _ in range(wrong):
            sw(emu_card, verify(p2, bad))
        assert persisted(card_dir)[pin] == MAXIMA[pin] - wrong
        assert sw(emu_card, verify(p2, good)) == "9000"
        assert persisted(card_dir)[pin] == MAXIMA[pin]


# ============================================================================= persistence across opens
def test_tries_left_survive_reopening(emu_card, card_dir):
    assert sw(emu_card, SEL_JPKI) == "9000"
    assert sw(emu_card, verify("98", b"0000")) == "63C2"
    assert sw(emu_card, verify("9B", b"WRONG1")) == "63C4"
    assert sw(emu_card, verify("9B", b"WRONG2")) == "63C3"
    emu_card.close()
    card = MyNumberCard.open(card_dir)
    assert sw(card, SEL_JPKI) == "9000"
    assert sw(card, "00200098") == "63C2"
    assert sw(card, "0020009B") == "63C3"
    assert card.pin_status()["auth"] == (2, 3)
    assert sw(card, verify("98", b"0000")) == "63C1"
    assert sw(MyNumberCard.open(card_dir), SEL_JPKI) == "9000"
    assert persisted(card_dir)["auth"] == 1


def test_pin_change_survives_reopening(emu_card, card_dir):
    assert sw(emu_card, SEL_JPKI) == "9000"
    assert sw(emu_card, verify("98", b"1234")) == "9000"
    assert sw(emu_card, "0024019804" + b"8642".hex()) == "9000"
    assert sw(emu_card, verify("9B", b"ABC123")) == "9000"
    assert sw(emu_card, "0024019B07" + b"QWERTY7".hex()) == "9000"
    emu_card.close()
    card = MyNumberCard.open(card_dir)
    assert sw(card, SEL_JPKI) == "9000"
    assert sw(card, verify("98", b"1234")) == "63C2"
    assert sw(card, verify("98", b"8642")) == "9000"
    assert sw(card, verify("9B", b"ABC123")) == "63C4"
    assert sw(card, verify("9B", b"QWERTY7")) == "9000"
    assert persisted(card_dir) == MAXIMA


def test_verified_state_is_not_persisted(emu_card, card_dir):
    assert sw(emu_card, SEL_JPKI) == "9000"
    assert sw(emu_card, verify("98", b"1234")) == "9000"
    card = MyNumberCard.open(card_dir)
    assert sw(card, SEL_JPKI) == "9000"
    assert sw(card, "802A009733" + DI256 + "00") == "6982"


# ============================================================================= killed mid-run
_CHILD = textwrap.dedent("""
    import os, sys, time
    from card_emulator import MyNumberCard
    from card_emulator import card as card_module

    directory, mode, slow_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    attempt = 0
    if mode == "fsync":
        real_fsync = os.fsync

        def slow_fsync(fd):
            # the first fsync of a write is the temp file's, before the rename
            real_fsync(fd)
            if attempt == slow_at:
                print(f"FSYNC {attempt}", flush=True)
                time.sleep(60)

        os.fsync = slow_fsync
    if mode == "hash":
        real_hash = card_module.hash_pin

        def slow_hash(*args, **kwargs):
            # called while comparing, i.e. after the try was (or should have been) spent
            print(f"COMPARING {attempt}", flush=True)
            if attempt == slow_at:
                time.sleep(60)
            return real_hash(*args, **kwargs)

        card_module.hash_pin = slow_hash
    card = MyNumberCard.open(directory)
    assert card.transmit(bytes.fromhex("SEL_JPKI")) == b"\\x90\\x00"
    wrong = bytes.fromhex("0020009B06") + b"WRONG9"
    while attempt < 50:
        attempt += 1
        print(f"ATTEMPT {attempt}", flush=True)
        r = card.transmit(wrong)
        print(f"ANSWER {attempt} {r.hex().upper()}", flush=True)
""".replace("SEL_JPKI", SEL_JPKI))


def _run_child_and_kill(card_dir: Path, *, kill_on: str, mode: str = "none",
                        slow_at: int = 0) -> tuple[int, list[str]]:
    """Run the child; SIGKILL it as soon as it prints the line ``kill_on``. Returns (started, answers)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(card_dir), mode, str(slow_at)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == kill_on:
                os.kill(proc.pid, signal.SIGKILL)
                break
        else:
            raise AssertionError(f"child ended without printing {kill_on!r}: {proc.stderr.read()}")
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines += [line.strip() for line in rest.splitlines()]
    assert proc.returncode == -signal.SIGKILL
    started = sum(1 for line in lines if line.startswith("ATTEMPT "))
    answers = [line.split()[2] for line in lines if line.startswith("ANSWER ")]
    return started, answers


@pytest.mark.parametrize("slow_at", [1, 3])
def test_kill_while_comparing_keeps_the_try_spent(card_dir, slow_at):
    """Killed inside the comparison of attempt N (its answer never sent): N tries are gone."""
    started, answers = _run_child_and_kill(card_dir, kill_on=f"COMPARING {slow_at}", mode="hash",
                                           slow_at=slow_at)
    assert started == slow_at
    assert answers == [f"63C{5 - i:X}" for i in range(1, slow_at)]
    assert persisted(card_dir)["sign"] == 5 - slow_at
    card = MyNumberCard.open(card_dir)  # the dead child's lock is gone; the count is what it was
    assert sw(card, SEL_JPKI) == "9000"
    assert sw(card, "0020009B") == f"63C{5 - slow_at:X}"


@pytest.mark.parametrize("slow_at", [1, 2])
def test_kill_while_writing_the_counter_leaves_valid_state(card_dir, slow_at):
    """Killed between writing the temp file and renaming it: state.json is the old, whole file;
    the card had not compared the PIN yet, so nothing was learnt from attempt N."""
    started, answers = _run_child_and_kill(card_dir, kill_on=f"FSYNC {slow_at}", mode="fsync",
                                           slow_at=slow_at)
    assert started == slow_at
    assert answers == [f"63C{5 - i:X}" for i in range(1, slow_at)]
    assert persisted(card_dir)["sign"] == 5 - (slow_at - 1)  # parses: never a partial file
    json.loads((card_dir / "card.json").read_bytes())
    card = MyNumberCard.open(card_dir)
    assert sw(card, SEL_JPKI) == "9000"
    assert sw(card, "0020009B") == f"63C{5 - (slow_at - 1):X}"
    assert sw(card, verify("9B", b"ABC123")) == "9000"


@pytest.mark.parametrize("kill_after", [1, 2, 4])
def test_kill_at_any_moment_never_regains_a_try(card_dir, kill_after):
    started, answers = _run_child_and_kill(card_dir, kill_on=f"ATTEMPT {kill_after}")
    answered = len(answers)
    remaining = persisted(card_dir)["sign"]  # valid JSON even after SIGKILL
    used = 5 - remaining
    assert answers == [f"63C{max(5 - i, 0):X}" if i <= 5 else "6984" for i in range(1, answered + 1)]
    assert started >= kill_after and answered <= started
    assert remaining <= 5 - min(answered, 5), "an answered wrong VERIFY was given back"
    assert used <= started, "more tries spent than VERIFYs attempted"
    json.loads((card_dir / "card.json").read_bytes())


# ============================================================================= file modes
def _modes(card_dir: Path) -> dict[str, int]:
    out = {}
    for path in [card_dir, *card_dir.rglob("*")]:
        out[str(path.relative_to(card_dir))] = stat.S_IMODE(path.lstat().st_mode)
    return out


def _assert_private(card_dir: Path) -> None:
    modes = _modes(card_dir)
    for name in (".", "keys"):
        assert modes.pop(name) == 0o700, name
    assert {"card.json", "state.json", "keys/auth.pem", "keys/sign.pem"} <= set(modes)
    assert all(m == 0o600 for m in modes.values()), modes


def test_files_are_private_after_use(emu_card, card_dir):
    _assert_private(card_dir)
    assert sw(emu_card, SEL_JPKI) == "9000"
    assert sw(emu_card, verify("98", b"0000")) == "63C2"
    assert sw(emu_card, verify("98", b"1234")) == "9000"
    assert sw(emu_card, "0024019804" + b"1111".hex()) == "9000"
    reset_pin(card_dir, "auth", "2222")
    assert (card_dir / ".lock").exists()
    _assert_private(card_dir)


def _card_data(home: Path) -> CardData:
    from jpki.pki import TestCA

    info = holder(home)
    card_dir = home / "cards" / "alice"
    keys = {k: serialization.load_pem_private_key((card_dir / "keys" / f"{k}.pem").read_bytes(), None)
            for k in ("auth", "sign")}
    ca = TestCA.open(home / "ca")
    try:
        der = serialization.Encoding.DER
        auth_cert = ca.db.get(info["auth_serial"]).der
        sign_cert = ca.db.get(info["sign_serial"]).der
        auth_ca, sign_ca = ca.auth_ca_cert.public_bytes(der), ca.sign_ca_cert.public_bytes(der)
    finally:
        ca.close()
    p = info["persona"]
    return CardData(auth_key=keys["auth"], sign_key=keys["sign"], auth_cert=auth_cert,
                    sign_cert=sign_cert, auth_ca_cert=auth_ca, sign_ca_cert=sign_ca,
                    my_number=p["my_number"], name=p["name"], address=p["address"],
                    birth_date=dt.date.fromisoformat(p["birth_date"]), sex_code="2",
                    auth_pin="1234", sign_pin="ABC123", card_pin="1234",
                    security_code=info["security_code"],
                    card_expiry=dt.date.fromisoformat(info["card_expiry"]))


def test_files_are_private_even_with_umask_0(home, tmp_path):
    data = _card_data(home)
    old = os.umask(0)
    try:
        directory = create_card(tmp_path / "new-card", data, CardProfile())
        _assert_private(directory)
        card = MyNumberCard.open(directory)
        assert sw(card, SEL_JPKI) == "9000"
        assert sw(card, verify("98", b"0000")) == "63C2"
        reset_pin(directory, "auth")
        _assert_private(directory)
    finally:
        os.umask(old)


# ============================================================================= atomic writes
def _temp_files(card_dir: Path) -> list[Path]:
    return [p for p in card_dir.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".state")
            or p.name.startswith(".card")]


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_state_write_leaves_old_file_intact(emu_card, card_dir, monkeypatch, failing):
    assert sw(emu_card, SEL_JPKI) == "9000"
    assert sw(emu_card, verify("98", b"0000")) == "63C2"
    before = (card_dir / "state.json").read_bytes()

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, broken)
    assert sw(emu_card, verify("98", b"0000")) == "6F00"  # the card does not crash
    assert sw(emu_card, verify("98", b"1234")) == "6F00"  # nor log in without recording the try
    assert sw(emu_card, "802A009733" + DI256 + "00") == "6982"
    monkeypatch.undo()
    assert (card_dir / "state.json").read_bytes() == before
    json.loads(before)
    assert _temp_files(card_dir) == []
    assert sw(emu_card, "00200098") == "63C2"
    assert sw(emu_card, verify("98", b"1234")) == "9000"


def test_failed_pin_change_keeps_old_pin(emu_card, card_dir, monkeypatch):
    assert sw(emu_card, SEL_JPKI) == "9000"
    assert sw(emu_card, verify("98", b"1234")) == "9000"
    before = (card_dir / "state.json").read_bytes()
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == "state.json":
            raise OSError(5, "I/O error")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    assert sw(emu_card, "0024019804" + b"7777".hex()) == "6F00"
    monkeypatch.undo()
    assert (card_dir / "state.json").read_bytes() == before
    assert _temp_files(card_dir) == []
    assert sw(emu_card, SEL_JPKI) == "9000"
    assert sw(emu_card, verify("98", b"7777")) == "63C2"
    assert sw(emu_card, verify("98", b"1234")) == "9000"


@pytest.mark.parametrize("name", ["card.json", "state.json"])
def test_write_json_is_all_or_nothing(card_dir, monkeypatch, name):
    path = card_dir / name
    before = path.read_bytes()
    replaced = []
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        # the new content is complete in the temp file at this point; the rename then fails
        replaced.append(json.loads(Path(src).read_bytes()))
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        storage.write_json(path, {"format": 1, "garbage": "x" * 100000})
    assert replaced and replaced[0]["garbage"]
    monkeypatch.setattr(os, "replace", real_replace)
    assert path.read_bytes() == before
    json.loads(before)
    assert _temp_files(card_dir) == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_failed_reset_keeps_state(card_dir, monkeypatch):
    before = (card_dir / "state.json").read_bytes()
    monkeypatch.setattr(os, "replace", lambda *a, **k: (_ for _ in ()).throw(OSError(5, "I/O")))
    with pytest.raises(OSError):
        reset_pin(card_dir, "auth", "9999")
    monkeypatch.undo()
    assert (card_dir / "state.json").read_bytes() == before
    assert _temp_files(card_dir) == []


# ============================================================================= the municipal office's reset
def test_reset_pin_unblocks(emu_card, card_dir):
    assert sw(emu_card, SEL_JPKI) == "9000"
    for left in "210":
        assert sw(emu_card, verify("98", b"0000")) == f"63C{left}"
    assert sw(emu_card, verify("98", b"1234")) == "6984"
    reset_pin(card_dir, "auth")
    assert persisted(card_dir)["auth"] == 3
    # the same open card sees it (counters are re-read under the lock)
    assert sw(emu_card, "00200098") == "63C3"
    assert sw(emu_card, verify("98", b"1234")) == "9000"


def test_reset_pin_with_new_value(emu_card, card_dir):
    assert sw(emu_card, SEL_JPKI) == "9000"
    for left in "43210":
        assert sw(emu_card, verify("9B", b"NOPE00")) == f"63C{left}"
    reset_pin(card_dir, "sign", "newpass1")  # hosts upper-case; the card compares bytes
    assert sw(emu_card, "0020009B") == "63C5"
    assert sw(emu_card, verify("9B", b"ABC123")) == "63C4"
    assert sw(emu_card, verify("9B", b"newpass1")) == "63C3"
    assert sw(emu_card, verify("9B", b"NEWPASS1")) == "9000"


def test_reset_pin_rejects_bad_input(card_dir):
    before = (card_dir / "state.json").read_bytes()
    with pytest.raises(KeyError):
        reset_pin(card_dir, "nosuchpin")
    with pytest.raises(ValueError):
        reset_pin(card_dir, "auth", "12345")
    with pytest.raises(ValueError):
        reset_pin(card_dir, "card_a", "12")
    assert (card_dir / "state.json").read_bytes() == before


def _in_other_process(code: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_other_process_reset_is_seen_by_an_open_card(emu_card, card_dir):
    assert sw(emu_card, SEL_TEXT) == "9000"
    for left in "210":
        assert sw(emu_card, verify("91", b"0000")) == f"63C{left}"
    _in_other_process("import sys; from card_emulator.provision import reset_pin; "
                      "reset_pin(sys.argv[1], 'card')", str(card_dir))
    assert sw(emu_card, "00200091") == "63C3"
    assert sw(emu_card, verify("91", b"1234")) == "9000"
    assert sw(emu_card, "00B0810000") == "9000"


def test_other_process_wrong_verifies_are_seen_by_an_open_card(emu_card, card_dir):
    assert sw(emu_card, SEL_JPKI) == "9000"
    assert sw(emu_card, verify("98", b"0000")) == "63C2"
    out = _in_other_process(textwrap.dedent(f"""
        import sys
        from card_emulator import MyNumberCard
        card = MyNumberCard.open(sys.argv[1])
        card.transmit(bytes.fromhex("{SEL_JPKI}"))
        print(card.transmit(bytes.fromhex("{verify('98', b'9999')}")).hex().upper())
    """), str(card_dir))
    assert out.strip() == "63C1"
    assert sw(emu_card, "00200098") == "63C1"
    assert sw(emu_card, verify("98", b"0000")) == "63C0"
    assert sw(emu_card, verify("98", b"1234")) == "6984"


def test_concurrent_wrong_verifies_lose_no_update(emu_card, card_dir):
    """Four cards on one directory, one wrong VERIFY each at the same moment: 4 tries gone."""
    cards = [MyNumberCard.open(card_dir) for _ in range(4)]
    for card in cards:
        assert sw(card, SEL_JPKI) == "9000"
    def worker(card: MyNumberCard, barrier: threading.Barrier, answers: list[str]) -> None:
        barrier.wait()
        answers.append(sw(card, verify("9B", b"WRONG1")))

    for _round in range(3):
        barrier = threading.Barrier(len(cards))
        answers: list[str] = []
        threads = [threading.Thread(target=worker, args=(c, barrier, answers)) for c in cards]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(answers) == ["63C1", "63C2", "63C3", "63C4"]
        assert persisted(card_dir)["sign"] == 1
        reset_pin(card_dir, "sign")


def test_create_card_never_overwrites_a_card(home, card_dir):
    before = {p: p.read_bytes() for p in card_dir.rglob("*") if p.is_file()}
    with pytest.raises(FileExistsError):
        create_card(card_dir, _card_data(home), CardProfile())
    assert {p: p.read_bytes() for p in card_dir.rglob("*") if p.is_file()} == before


# ============================================================================= damaged card files
# A card directory is plain files: a full disk, an editor or a bad restore can damage them. The
# card fails closed: it does not open (the CLI says which file and what to do, one line, code
# card_state_corrupt); a card that is already open answers the affected PIN as blocked.

def _state(card_dir: Path) -> dict:
    return json.loads((card_dir / "state.json").read_bytes())


def _put_state(card_dir: Path, state: dict) -> None:
    (card_dir / "state.json").write_text(json.dumps(state))


def _edit_pin(field: str, value, pin: str = "auth"):
    def edit(state: dict) -> dict:
        state["pins"][pin][field] = value
        return state
    return edit


def _drop_pin(pin: str):
    def edit(state: dict) -> dict:
        del state["pins"][pin]
        return state
    return edit


STATE_DAMAGE = {
    # name: (edit of the parsed state | raw bytes, a word the reason must contain, damaged PIN)
    "empty": (b"", "empty", None),
    "blank": (b" \n", "empty", None),
    "truncated": ("truncate", "JSON", None),
    "not-utf8": (b"\xff\xfe{", "JSON", None),
    "deeply-nested": (b"[" * 100000, "JSON", None),
    "a-list": (b"[]", "pins", None),
    "pins-a-list": (lambda s: {"pins": list(s["pins"])}, "pins", None),
    "remaining-negative": (_edit_pin("remaining", -1), "remaining -1", "auth"),
    "remaining-above-max": (_edit_pin("remaining", 4), "remaining 4", "auth"),
    "remaining-above-15": (_edit_pin("remaining", 16, "sign"), "remaining 16", "sign"),
    "max-zero": (_edit_pin("max", 0), "max 0", "auth"),
    "max-negative": (_edit_pin("max", -3), "max -3", "auth"),
    "max-above-15": (_edit_pin("max", 16), "max 16", "auth"),
    "remaining-a-string": (_edit_pin("remaining", "3"), "remaining '3'", "auth"),
    "remaining-a-float": (_edit_pin("remaining", 2.0), "remaining 2.0", "auth"),
    "remaining-a-bool": (_edit_pin("remaining", True), "remaining True", "auth"),
    "remaining-null": (_edit_pin("remaining", None), "remaining None", "auth"),
    "max-a-string": (_edit_pin("max", "3", "card"), "max '3'", "card"),
    "format-unknown": (_edit_pin("format", "digits5"), "format", "auth"),
    "iterations-zero": (_edit_pin("iterations", 0), "iterations", "auth"),
    "iterations-huge": (_edit_pin("iterations", 10**12), "iterations", "auth"),
    "salt-missing": (_edit_pin("salt", None), "salt", "auth"),
    "salt-not-hex": (_edit_pin("salt", "zz" * 16), "salt", "auth"),
    "hash-short": (_edit_pin("hash", "ab" * 31), "hash", "auth"),
    "hash-a-number": (_edit_pin("hash", 12), "hash", "auth"),
    "generation-negative": (_edit_pin("generation", -1), "generation", "auth"),
    "record-a-string": (_edit_pin("remaining", 3) and (lambda s: {"pins": {**s["pins"], "auth": "x"}}),
                        "not a JSON object", "auth"),
    "record-missing": (_drop_pin("sign"), "no record for PIN 'sign'", "sign"),
    "card-b-missing": (_drop_pin("card_b"), "no record for PIN 'card_b'", "card_b"),
    "unknown-pin": (lambda s: {"pins": {**s["pins"], "admin": s["pins"]["auth"]}}, "'admin'", None),
}


def _damage_state(card_dir: Path, damage) -> None:
    path = card_dir / "state.json"
    if isinstance(damage, bytes):
        path.write_bytes(damage)
    elif damage == "truncate":
        raw = path.read_bytes()
        path.write_bytes(raw[:len(raw) // 2])
    else:
        _put_state(card_dir, damage(_state(card_dir)))


@pytest.mark.parametrize("case", sorted(STATE_DAMAGE))
def test_damaged_state_file_does_not_open(card_dir, case):
    damage, word, pin = STATE_DAMAGE[case]
    _damage_state(card_dir, damage)
    with pytest.raises(CardStateError) as info:
        MyNumberCard.open(card_dir)
    assert info.value.path == card_dir / "state.json"
    assert word in info.value.reason
    assert info.value.pin == pin
    assert info.value.code == "card_state_corrupt"
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("case", ["empty", "truncated", "remaining-negative", "max-zero",
                                  "remaining-a-string", "record-missing", "card-b-missing"])
@pytest.mark.parametrize("command", [["pin", "status"], ["card", "show", "alice"]])
def test_cli_names_the_damaged_state_file_and_what_to_do(cli, card_dir, case, command):
    damage, word, pin = STATE_DAMAGE[case]
    _damage_state(card_dir, damage)
    r = cli(*command)  # an exception escaping jpki.cli.main fails the test
    assert r.exit_code == 1
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert line.startswith("error: damaged card file ")
    assert str(card_dir / "state.json") in line and "card_state_corrupt" in line and word in line
    assert "Traceback" not in r.stderr
    if pin in ("auth", "sign", "card"):
        assert f"jpki card reset-pin alice {pin} --new-pin" in line
    else:
        assert "restore it from a backup" in line


def test_cli_json_gives_one_document_for_a_damaged_card(cli, card_dir):
    _damage_state(card_dir, b"")
    r = cli("--json", "pin", "status")
    assert r.exit_code == 1
    doc = r.json()
    assert doc["ok"] is False and "card_state_corrupt" in doc["message"]
    assert "Traceback" not in r.stderr


def _edit_content(edit):
    def apply(card_dir: Path) -> None:
        doc = json.loads((card_dir / "card.json").read_bytes())
        (card_dir / "card.json").write_text(json.dumps(edit(doc)))
    return apply


def _set(path: tuple, value):
    def edit(doc: dict) -> dict:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return doc
    return edit


def _symlink_key(card_dir: Path) -> None:
    outside = card_dir.parent / "elsewhere.pem"
    outside.write_bytes((card_dir / "keys" / "auth.pem").read_bytes())
    (card_dir / "keys" / "link.pem").symlink_to(outside)
    _edit_content(_set(("keys", "auth"), "keys/link.pem"))(card_dir)


CONTENT_DAMAGE = {
    # name: (damage, the file the error names (relative), a word the reason must contain)
    "empty": (lambda d: (d / "card.json").write_bytes(b""), "card.json", "empty"),
    "truncated": (lambda d: (d / "card.json").write_bytes((d / "card.json").read_bytes()[:999]),
                  "card.json", "JSON"),
    "format": (_edit_content(_set(("format",), 2)), "card.json", "format"),
    "profile-type": (_edit_content(_set(("profile", "blocked_query_sw"), "63C0")), "card.json",
                     "blocked_query_sw"),
    "profile-unknown": (_edit_content(_set(("profile", "speed"), 1)), "card.json", "speed"),
    "aid-not-hex": (_edit_content(_set(("applications", "jpki", "aid"), "JPKI")), "card.json", "AID"),
    "files-a-list": (_edit_content(_set(("applications", "text", "files"), [])), "card.json", "files"),
    "fid-bad": (_edit_content(lambda doc: _set(("applications", "jpki", "files", "1"),
                                               doc["applications"]["jpki"]["files"]["0001"])(doc)),
                "card.json", "FID"),
    "kind-unknown": (_edit_content(_set(("applications", "jpki", "files", "0002", "kind"), "dir")),
                     "card.json", "kind"),
    "data-not-base64": (_edit_content(_set(("applications", "jpki", "files", "0002", "data"), "*")),
                        "card.json", "base64"),
    "read-unknown-pin": (_edit_content(_set(("applications", "text", "files", "0002", "read"),
                                            ["nobody"])), "card.json", "nobody"),
    "key-unknown": (_edit_content(_set(("applications", "jpki", "files", "0017", "key"), "other")),
                    "card.json", "other"),
    "key-parent": (_edit_content(_set(("keys", "auth"), "../bob/keys/auth.pem")), "card.json",
                   "outside the card directory"),
    "key-deep-parent": (_edit_content(_set(("keys", "sign"), "keys/../../../../etc/passwd")),
                        "card.json", "outside the card directory"),
    "key-absolute": (_edit_content(_set(("keys", "auth"), "/etc/passwd")), "card.json",
                     "not a relative file name"),
    "key-the-directory": (_edit_content(_set(("keys", "auth"), ".")), "card.json",
                          "outside the card directory"),
    "key-symlink-out": (_symlink_key, "card.json", "outside the card directory"),
    "key-not-pem": (lambda d: (d / "keys" / "sign.pem").write_bytes(b"not a key"), "keys/sign.pem",
                    "RSA private key"),
    "key-missing": (lambda d: (d / "keys" / "auth.pem").unlink(), "keys/auth.pem", "cannot be read"),
}


@pytest.mark.parametrize("case", sorted(CONTENT_DAMAGE))
def test_damaged_card_file_does_not_open(cli, card_dir, case):
    damage, file, word = CONTENT_DAMAGE[case]
    damage(card_dir)
    with pytest.raises(CardStateError) as info:
        MyNumberCard.open(card_dir)
    assert info.value.path == card_dir / file
    assert word in info.value.reason
    r = cli("info")
    assert r.exit_code == 1 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"damaged card file {card_dir / file} (card_state_corrupt)" in r.stderr
    assert "jpki card create alice" in r.stderr and "Traceback" not in r.stderr


def test_key_names_inside_the_card_directory_still_open(card_dir):
    """Only names that stay inside: a key moved to another sub-folder is fine."""
    (card_dir / "keys" / "v2").mkdir()
    (card_dir / "keys" / "auth.pem").rename(card_dir / "keys" / "v2" / "auth.pem")
    _edit_content(_set(("keys", "auth"), "keys/./v2/../v2/auth.pem"))(card_dir)
    card = MyNumberCard.open(card_dir)
    assert sw(card, SEL_JPKI) == "9000"
    assert sw(card, verify("98", b"1234")) == "9000"
    assert sw(card, "802A009733" + DI256 + "00") == "9000"


def test_a_missing_card_directory_is_a_clear_error(tmp_path):
    with pytest.raises(CardStateError) as info:
        MyNumberCard.open(tmp_path / "nothing")
    assert info.value.path == tmp_path / "nothing" / "card.json"
    assert not (tmp_path / "nothing").exists(), "opening must not create the directory"


# ----------------------------------------------------------------------------- damaged at run time
@pytest.mark.parametrize("case", ["remaining-negative", "remaining-above-max", "max-zero",
                                  "hash-short", "record-missing", "remaining-a-string"])
def test_open_card_answers_a_pin_damaged_at_run_time_as_blocked(emu_card, card_dir, case):
    """A served card whose state.json is damaged while it runs: the affected PIN is blocked
    (6984, tries query 63C0), never fresh (63CF, "15 tries left"); the others work."""
    damage, _, pin = STATE_DAMAGE[case]
    pin = pin or "auth"
    good = {"auth": b"1234", "sign": b"ABC123", "card_b": None}[pin]
    p2 = {"auth": "98", "sign": "9B", "card_b": "95"}[pin]
    select = SEL_TEXT if pin == "card_b" else SEL_JPKI
    assert sw(emu_card, select) == "9000"
    _damage_state(card_dir, damage)
    before = (card_dir / "state.json").read_bytes()
    assert sw(emu_card, "002000" + p2) == "63C0"
    if good is not None:
        assert sw(emu_card, verify(p2, good)) == "6984"
    assert sw(emu_card, verify(p2, b"0000" if pin != "sign" else b"WRONG1")) == "6984"
    assert (card_dir / "state.json").read_bytes() == before, "nothing written, nothing spent"
    assert emu_card.pin_status()[pin] == (0, 0)
    # the other PINs of the card are unaffected
    other, other_p2, other_pin = ("sign", "9B", b"ABC123") if pin != "sign" else ("auth", "98", b"1234")
    assert sw(emu_card, SEL_JPKI) == "9000"
    assert sw(emu_card, verify(other_p2, other_pin)) == "9000"
    assert emu_card.pin_status()[other] == (MAXIMA[other], MAXIMA[other])


@pytest.mark.parametrize("damage", [b"", "truncate", b"{\"pins\": 3}"])
def test_open_card_with_a_wholly_damaged_state_blocks_every_pin(emu_card, card_dir, damage):
    assert sw(emu_card, SEL_JPKI) == "9000"
    assert sw(emu_card, verify("98", b"1234")) == "9000"
    assert sw(emu_card, "802A009733" + DI256 + "00") == "9000"
    _damage_state(card_dir, damage)
    assert sw(emu_card, "802A009733" + DI256 + "00") == "6982", "the verified state ended"
    for p2, good in (("98", b"1234"), ("9B", b"ABC123")):
        assert sw(emu_card, "002000" + p2) == "63C0"
        assert sw(emu_card, verify(p2, good)) == "6984"
    assert set(emu_card.pin_status().values()) == {(0, 0)}
    with pytest.raises(CardStateError):
        MyNumberCard.open(card_dir)


def test_a_restored_state_file_is_used_again(emu_card, card_dir):
    good = (card_dir / "state.json").read_bytes()
    assert sw(emu_card, SEL_JPKI) == "9000"
    _damage_state(card_dir, b"")
    assert sw(emu_card, verify("98", b"1234")) == "6984"
    (card_dir / "state.json").write_bytes(good)
    assert sw(emu_card, verify("98", b"1234")) == "9000"
    assert sw(emu_card, "802A009733" + DI256 + "00") == "9000"


def test_damaged_card_json_at_power_on_keeps_the_card_as_it_was(emu_card, card_dir, caplog):
    assert sw(emu_card, SEL_JPKI) == "9000"
    (card_dir / "card.json").write_bytes(b"{\"format\": 1, \"applic")
    caplog.set_level("ERROR", logger="card_emulator")
    emu_card.power_off()
    emu_card.power_on()  # the vpcd bridge's power-on: must not raise
    assert any("card.json" in r.getMessage() for r in caplog.records)
    assert sw(emu_card, SEL_JPKI) == "9000"
    assert sw(emu_card, verify("98", b"1234")) == "9000"
    assert sw(emu_card, "802A009733" + DI256 + "00") == "9000"
    (card_dir / "card.json").unlink()
    emu_card.reset()
    assert sw(emu_card, SEL_JPKI) == "9000"


# ----------------------------------------------------------------------------- repair
def test_reset_pin_repairs_a_damaged_counter(card_dir):
    _damage_state(card_dir, _edit_pin("remaining", -1))
    reset_pin(card_dir, "auth")
    card = MyNumberCard.open(card_dir)
    assert sw(card, SEL_JPKI) == "9000"
    assert sw(card, "00200098") == "63C3"
    assert sw(card, verify("98", b"1234")) == "9000"


def test_reset_pin_with_a_new_value_repairs_a_damaged_hash(card_dir):
    _damage_state(card_dir, _edit_pin("hash", "00"))
    before = (card_dir / "state.json").read_bytes()
    with pytest.raises(CardStateError, match="new value"):
        reset_pin(card_dir, "auth")
    assert (card_dir / "state.json").read_bytes() == before
    reset_pin(card_dir, "auth", "2468")
    card = MyNumberCard.open(card_dir)
    assert sw(card, SEL_JPKI) == "9000"
    assert sw(card, verify("98", b"2468")) == "9000"


@pytest.mark.parametrize("case", ["empty", "truncated", "max-zero", "format-unknown", "record-missing"])
def test_reset_pin_refuses_what_it_cannot_repair(cli, card_dir, case):
    damage, _, _ = STATE_DAMAGE[case]
    _damage_state(card_dir, damage)
    if case == "record-missing":
        _damage_state(card_dir, _drop_pin("auth"))
    before = (card_dir / "state.json").read_bytes()
    with pytest.raises(CardStateError) as info:
        reset_pin(card_dir, "auth", "2468")
    assert info.value.path == card_dir / "state.json"
    assert (card_dir / "state.json").read_bytes() == before
    r = cli("card", "reset-pin", "alice", "auth", "--new-pin", "2468")
    assert r.exit_code == 1 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "card_state_corrupt" in r.stderr
    assert "Traceback" not in r.stderr


# ============================================================================= a blocked PIN ends every verified state
# Several sessions (processes, or cards in one process) share one card directory. Blocking a PIN in
# one of them, changing it, or the municipal office's reset, ends its verified state in all of them:
# signing and reading PIN-protected files then answer 6982, as after a re-select.

SIGN_AUTH = "802A009733" + DI256 + "00"   # P2 97: the user-authentication key (PIN auth)
SIGN_SIGN = "802A009A33" + DI256 + "00"   # P2 9A: the signing key (password sign)
READ_SIGN_CERT = "00B0810004"            # EF 0001 by SFI: needs the signature password


def _logged_in(card_dir: Path) -> MyNumberCard:
    card = MyNumberCard.open(card_dir)
    assert sw(card, SEL_JPKI) == "9000"
    assert sw(card, verify("98", b"1234")) == "9000"
    assert sw(card, verify("9B", b"ABC123")) == "9000"
    assert sw(card, SIGN_AUTH) == sw(card, SIGN_SIGN) == sw(card, READ_SIGN_CERT) == "9000"
    return card


def _block(card: MyNumberCard, p2: str, wrong: bytes, tries: int) -> None:
    assert sw(card, SEL_JPKI) == "9000"
    answers = [sw(card, verify(p2, wrong)) for _ in range(tries)]
    assert answers[-1] == "63C0", answers


def test_blocking_in_another_session_ends_the_verified_state(card_dir):
    a = _logged_in(card_dir)
    b = MyNumberCard.open(card_dir)
    _block(b, "98", b"0000", 3)
    assert sw(a, SIGN_AUTH) == "6982"
    assert sw(a, SIGN_SIGN) == "9000", "the other PIN's verified state is untouched"
    _block(b, "9B", b"WRONG1", 5)
    assert sw(a, SIGN_SIGN) == "6982"
    assert sw(a, READ_SIGN_CERT) == "6982"
    # and for good: the office's reset does not bring a verified state back
    reset_pin(card_dir, "auth")
    reset_pin(card_dir, "sign")
    assert sw(a, SIGN_AUTH) == sw(a, SIGN_SIGN) == sw(a, READ_SIGN_CERT) == "6982"
    assert sw(a, verify("98", b"1234")) == "9000"
    assert sw(a, SIGN_AUTH) == "9000"


def test_blocking_then_resetting_before_the_next_apdu_still_ends_it(card_dir):
    """Blocked and unblocked again while A was idle: the record's generation tells A."""
    a = _logged_in(card_dir)
    b = MyNumberCard.open(card_dir)
    _block(b, "98", b"0000", 3)
    reset_pin(card_dir, "auth")
    assert persisted(card_dir)["auth"] == 3
    assert sw(a, SIGN_AUTH) == "6982"
    assert sw(a, SIGN_SIGN) == "9000"


def test_a_pin_changed_in_another_session_ends_the_verified_state(card_dir):
    a = _logged_in(card_dir)
    b = MyNumberCard.open(card_dir)
    assert sw(b, SEL_JPKI) == "9000"
    assert sw(b, verify("9B", b"ABC123")) == "9000"
    assert sw(b, "0024019B07" + b"QWERTY7".hex()) == "9000"
    assert sw(b, SIGN_SIGN) == "9000", "the session that changed it stays verified"
    assert sw(a, SIGN_SIGN) == "6982"
    assert sw(a, READ_SIGN_CERT) == "6982"
    assert sw(a, "0024019B07" + b"ZZZZZZ9".hex()) == "6982", "nor may A change it again"
    assert sw(a, SIGN_AUTH) == "9000"
    assert sw(a, verify("9B", b"QWERTY7")) == "9000"
    assert sw(a, SIGN_SIGN) == "9000"


def test_an_office_reset_with_a_new_value_ends_the_verified_state(card_dir):
    a = _logged_in(card_dir)
    reset_pin(card_dir, "auth", "8642")
    assert sw(a, SIGN_AUTH) == "6982"


def test_other_sessions_ordinary_use_does_not_end_it(card_dir):
    """A wrong try that does not block, or another session's own login, leaves A logged in."""
    a = _logged_in(card_dir)
    b = MyNumberCard.open(card_dir)
    assert sw(b, SEL_JPKI) == "9000"
    assert sw(b, verify("98", b"0000")) == "63C2"
    assert sw(a, SIGN_AUTH) == "9000"
    assert sw(b, verify("98", b"1234")) == "9000"
    assert sw(b, verify("9B", b"WRONG1")) == "63C4"
    assert sw(a, SIGN_AUTH) == sw(a, SIGN_SIGN) == sw(a, READ_SIGN_CERT) == "9000"


def test_card_info_pins_blocked_elsewhere_end_the_reading_of_the_my_number(card_dir):
    a = MyNumberCard.open(card_dir)
    assert sw(a, SEL_TEXT) == "9000"
    assert sw(a, verify("91", b"1234")) == "9000"
    assert sw(a, "00B0810000") == "9000"
    b = MyNumberCard.open(card_dir)
    assert sw(b, SEL_TEXT) == "9000"
    for _ in range(3):
        sw(b, verify("91", b"0000"))
    assert sw(a, "00B0810000") == "6982"
    assert sw(a, "00B0820000") == "6982"


_BLOCKER = textwrap.dedent(f"""
    import sys
    from card_emulator import MyNumberCard
    card = MyNumberCard.open(sys.argv[1])
    assert card.transmit(bytes.fromhex("{SEL_JPKI}")) == b"\\x90\\x00"
    print(" ".join(card.transmit(bytes.fromhex("{verify('98', b'0000')}")).hex().upper()
                   for _ in range(3)))
""")


def test_blocking_in_another_process_ends_the_verified_state(card_dir):
    """The issue's scenario: process A verifies the auth PIN, process B blocks it, A cannot sign."""
    a = _logged_in(card_dir)
    assert _in_other_process(_BLOCKER, str(card_dir)).split() == ["63C2", "63C1", "63C0"]
    assert sw(a, SIGN_AUTH) == "6982"
    assert sw(a, "00200098") == "63C0"
    assert sw(a, verify("98", b"1234")) == "6984"
    assert sw(a, SIGN_SIGN) == "9000"


def test_blocking_and_reset_in_another_process_ends_the_verified_state(card_dir):
    a = _logged_in(card_dir)
    _in_other_process(_BLOCKER + "\nfrom card_emulator.provision import reset_pin\n"
                      "reset_pin(sys.argv[1], 'auth')\n", str(card_dir))
    assert persisted(card_dir)["auth"] == 3
    assert sw(a, SIGN_AUTH) == "6982"


def test_serving_a_damaged_card_is_refused_before_anything_is_served(card_dir):
    """``jpki emulator serve`` of a damaged card: the one-line error before any vpcd slot is used."""
    from jpki.errors import CardStateError as DamagedCard
    from jpki.transport import emu

    def ready() -> None:
        raise AssertionError("a damaged card was about to be served")

    _damage_state(card_dir, _edit_pin("remaining", -1))
    with pytest.raises(DamagedCard) as info:
        emu.serve_emulated_cards([card_dir], "127.0.0.1", 1, ready=ready)
    assert info.value.code == "card_state_corrupt" and info.value.pin == "auth"
    assert str(info.value).startswith(f"damaged card file {card_dir / 'state.json'} ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("iterations", [0, 1_000_001, 2.5])
def test_a_pin_record_with_an_impossible_iteration_count_is_refused(iterations):
    """Test cards lower the PBKDF2 rounds (jpki.testing); the card's own bounds still hold."""
    from card_emulator.card import new_pin_record

    with pytest.raises(ValueError, match=r"iterations must be in 1\.\.1000000"):
        new_pin_record("1234", "digits4", 3, iterations)
    assert new_pin_record("1234", "digits4", 3, 1)["iterations"] == 1
