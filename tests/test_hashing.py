"""jpki.hashing: streamed digests, and hashing beside the caller (forked child or thread)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading

import pytest

from jpki.errors import UsageError
from jpki.hashing import BackgroundHash, hash_for_signing


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 5000 + b"tail")
    return path


def test_hash_for_signing(data):
    hashed = hash_for_signing(data, "sha384")
    assert hashed.digest == hashlib.sha384(data.read_bytes()).digest()
    assert hashed.size == data.stat().st_size


_IN_A_FRESH_PROCESS = """
import hashlib, sys, threading
from pathlib import Path
from jpki.hashing import BackgroundHash
data = Path(sys.argv[1])
assert threading.active_count() == 1
bg = BackgroundHash(data, "sha256")
assert bg._thread is None and bg._pid is not None, "one thread: the hash is made in a forked child"
result = bg.result()
assert result.digest == hashlib.sha256(data.read_bytes()).digest() and result.size == data.stat().st_size
"""


def test_background_hash_in_a_forked_child_when_single_threaded(data):
    # In a process of its own: a test worker may run threads other tests left (servers, pools).
    done = subprocess.run([sys.executable, "-c", _IN_A_FRESH_PROCESS, str(data)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("with_thread", [False, True])
def test_background_hash_in_child_or_thread(data, with_thread):
    stop = threading.Event()
    other = threading.Thread(target=stop.wait) if with_thread else None
    if other is not None:
        other.start()  # a second thread: BackgroundHash must not fork
    try:
        single = threading.active_count() == 1
        bg = BackgroundHash(data, "sha256")
        assert (bg._thread is not None) == (not single)   # never a fork beside another thread
        assert (bg._pid is not None) == single
        result = bg.result()
    finally:
        stop.set()
        if other is not None:
            other.join()
    assert result.digest == hashlib.sha256(data.read_bytes()).digest()
    assert result.size == data.stat().st_size and result.path == data


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_background_hash_errors_arrive_in_the_caller(tmp_path, what):
    path = tmp_path / "nothing" if what == "missing" else tmp_path
    bg = BackgroundHash(path, "sha256")
    with pytest.raises(UsageError, match="no such file" if what == "missing" else "directory"):
        bg.result()


def test_background_hash_cancel_leaves_no_child(data):
    bg = BackgroundHash(data, "sha256")
    bg.cancel()
    assert bg._pid is None
