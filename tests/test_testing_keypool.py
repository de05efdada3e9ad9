"""The key pool of test cards (jpki.testing.keypool): private files, once per run, reused by the
next run, claims across processes, damaged files generated again.

Pools here live in tmp_path; the keys they "generate" are handed over from the session's pool
(``generate=``), so no test waits for RSA key generation.
"""

from __future__ import annotations

import errno
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from jpki.testing import keypool
from jpki.testing.keypool import KeyPool, KeyPoolError, default_directory

REPO = Path(__file__).resolve().parents[1]

#: A test run of its own: takes N keys, says which, then holds them until its stdin closes.
CHILD = """
import json, sys
from jpki.testing.keypool import KeyPool
pool = KeyPool(sys.argv[1])
keys = pool.keys(int(sys.argv[2]))
print(json.dumps({"indices": pool.stats.indices, "generated": pool.stats.generated,
                  "moduli": [format(k.public_key().public_numbers().n, "x")[-24:] for k in keys]}), flush=True)
sys.stdin.read()
"""


def pool_of(path: Path, source: KeyPool, spare: int = 4) -> KeyPool:
    """A pool in ``path`` whose new keys are ``spare`` keys of ``source``."""
    return KeyPool(path, generate=iter(source.keys(spare)).__next__)


def der(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_pool_is_private_and_never_committed(tmp_path, jpki_keypool):
    pool = pool_of(tmp_path / "cache" / "pool", jpki_keypool)
    first, second = pool.key(), pool.key()
    assert first.public_key().public_numbers() != second.public_key().public_numbers()
    assert pool.stats.generated == 2 and pool.stats.indices == [0, 1]
    assert mode(pool.directory) == 0o700 and mode(pool.path(0).parent) == 0o700
    assert mode(pool.path(0)) == mode(pool.path(1)) == 0o600
    assert pool.path(0).read_bytes().endswith(der(first))
    assert (pool.directory / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (pool.directory / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")


def test_a_pool_directory_made_wider_is_narrowed_again(tmp_path, jpki_keypool):
    path = tmp_path / "pool"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    pool_of(path, jpki_keypool, spare=0)
    assert mode(path) == 0o700


def test_two_pools_of_one_process_never_hand_out_the_same_key(tmp_path, jpki_keypool):
    """A test run inside a test run (pytester) opens the pool again in the same process."""
    path = tmp_path / "pool"
    a, b = pool_of(path, jpki_keypool), pool_of(path, jpki_keypool)
    a.key(), b.key(), a.key(), b.key()
    assert sorted(a.stats.indices + b.stats.indices) == [0, 1, 2, 3]


def test_keys_are_reused_by_the_next_run_but_never_held_by_two_at_once(tmp_path, jpki_keypool):
    path = tmp_path / "pool"
    mine = pool_of(path, jpki_keypool, spare=6)
    assert mine.fill(6) == 6
    held = mine.keys(2)  # this process holds keys 0 and 1 until it exits

    def start() -> tuple[subprocess.Popen[str], dict]:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), "2"], cwd=REPO, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env={"PYTHONPATH": str(REPO)})
        line = child.stdout.readline()
        assert line, child.communicate(timeout=30)[1]
        return child, json.loads(line)

    first, took = start()
    second, also = start()  # runs while the first still holds its keys
    for child in (first, second):
        child.communicate("", timeout=30)
        assert child.returncode == 0
    assert took["indices"] == [2, 3] and also["indices"] == [4, 5]
    assert took["generated"] == also["generated"] == 0  # read from the pool, not made
    assert len({*took["moduli"], *also["moduli"]}) == 4
    _, later = start()  # the next run: the first one's keys again
    assert later["indices"] == [2, 3] and later["moduli"] == took["moduli"]
    assert format(held[0].public_key().public_numbers().n, "x")[-24:] not in later["moduli"]


def _garbage(data: bytes) -> bytes:
    return b"not a key at all"


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flipped(data: bytes) -> bytes:
    """One bit of the key itself: it would still load (no RSA check), and sign wrongly."""
    middle = len(data) * 3 // 4
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:]


def _empty(data: bytes) -> bytes:
    return b""


@pytest.mark.parametrize("damage", [_garbage, _truncated, _flipped, _empty, None],
                         ids=["garbage", "truncated", "flipped-bit", "empty", "a-directory"])
def test_a_damaged_key_file_is_made_again_not_reported(tmp_path, jpki_keypool, damage):
    pool = pool_of(tmp_path / "pool", jpki_keypool)
    assert pool.fill(1) == 1
    path = pool.path(0)
    if damage is None:
        path.unlink()
        (path / "inside").mkdir(parents=True)
    else:
        path.write_bytes(damage(path.read_bytes()))
    key = pool.key()  # index 0, damaged
    assert pool.stats.indices == [0] and pool.stats.repaired == 1 and pool.stats.generated == 2
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    signature = key.sign(b"data", padding.PKCS1v15(), hashes.SHA256())
    key.public_key().verify(signature, b"data", padding.PKCS1v15(), hashes.SHA256())
    assert path.is_file() and mode(path) == 0o600 and path.read_bytes().endswith(der(key))


def test_a_pool_that_cannot_be_a_directory_is_a_one_line_error(tmp_path):
    in_the_way = tmp_path / "pool"
    in_the_way.write_text("a file")
    with pytest.raises(KeyPoolError) as caught:
        KeyPool(in_the_way)
    assert caught.value.code == "keypool_unusable" and caught.value.path == in_the_way
    assert str(caught.value) == f"key pool {in_the_way}: not a directory (set $JPKI_KEYPOOL to another directory)"


def test_where_the_pool_is():
    assert default_directory({"JPKI_KEYPOOL": "/srv/keys", "XDG_CACHE_HOME": "/c", "HOME": "/h"}) == Path("/srv/keys")
    assert default_directory({"XDG_CACHE_HOME": "/c"}) == Path("/c/jpki/keypool")
    assert default_directory({"XDG_CACHE_HOME": "relative"}) == Path.home() / ".cache/jpki/keypool"
    assert default_directory({"JPKI_KEYPOOL": "  "}) == Path.home() / ".cache/jpki/keypool"


def test_a_file_system_that_cannot_lock_is_an_error_not_a_hang(tmp_path, jpki_keypool, monkeypatch):
    """Without locks every key would look taken by another process: the search must not go on."""
    pool = pool_of(tmp_path / "pool", jpki_keypool, spare=0)

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(keypool.fcntl, "lockf", no_locks)
    with pytest.raises(KeyPoolError, match=r"cannot lock claims\.lock: No locks available"):
        pool.key()
