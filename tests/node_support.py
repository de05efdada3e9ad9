"""Node's ``openid-client`` (npm, by panva: the certified OpenID relying-party library) for the
interoperability tests of the OpenID Provider (``tests/test_oidc_node.py``). Not a test module.

- :func:`missing_reason` says why it cannot run here (no ``node``/``npm``, a Node older than
  20, an install that failed), None when it can; the tests fail on it with ``CI=true`` and skip
  otherwise (``jpki.testing.pcsc.unavailable``).
- :func:`ensure_openid_client` installs the pinned major version with npm into a cache folder
  outside the repository (``$JPKI_TEST_NODE_DIR``, else ``~/.cache/jpki-test/openid-client``),
  once: later runs reuse it. ``.ci/setup`` runs this file as a script to install it ahead.
- :class:`NodeRp` runs ``tests/node/oidc_rp.mjs`` (copied next to that ``node_modules``, as
  Node resolves an ``import`` from the script's folder) and talks to it a JSON line at a time.

The folder is resolved when this module is imported, before the tests' own ``HOME`` is set.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: The package and the major version the tests are written against (v6 needs Node 20+).
PACKAGE = "openid-client"
MAJOR = 6
MIN_NODE = 20
SCRIPT = Path(__file__).resolve().parent / "node" / "oidc_rp.mjs"
NODE_DIR = Path(os.environ.get("JPKI_TEST_NODE_DIR")
                or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jpki-test" / PACKAGE)
#: Seconds npm may take to install (a guard against a hang).
INSTALL_TIMEOUT = 300.0
#: Seconds the script may take to answer one line (discovery, a token request, userinfo).
ANSWER_TIMEOUT = 30.0


def node_major(node: str) -> int | None:
    """The major version of ``node``, or None when it does not answer."""
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=20, check=True).stdout
        return int(out.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def installed_version(directory: Path = NODE_DIR) -> str | None:
    """The version of openid-client in ``directory``, if the pinned major version is there."""
    try:
        version = str(json.loads((directory / "node_modules" / PACKAGE / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None
    return version if version.split(".")[0] == str(MAJOR) else None


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One installer at a time (test runs of several checkouts share the folder)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_openid_client(directory: Path = NODE_DIR) -> str:
    """openid-client (major :data:`MAJOR`) in ``directory``, installed with npm on first use;
    returns its version. Raises RuntimeError saying why when it cannot be had."""
    npm = shutil.which("npm")
    with _locked(directory):
        version = installed_version(directory)
        if version is not None:
            return version
        if npm is None:
            raise RuntimeError(f"npm is missing: cannot install {PACKAGE}@{MAJOR} into {directory}")
        if not (directory / "package.json").exists():
            (directory / "package.json").write_text('{"private": true, "type": "module"}\n')
        try:
            done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel", "error",
                                   f"{PACKAGE}@{MAJOR}"], cwd=directory, capture_output=True, text=True,
                                  timeout=INSTALL_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"npm install {PACKAGE}@{MAJOR} failed: {exc}") from None
        version = installed_version(directory)
        if done.returncode != 0 or version is None:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise RuntimeError(f"npm install {PACKAGE}@{MAJOR} into {directory} failed: {last}")
        return version


def missing_reason(directory: Path = NODE_DIR) -> str | None:
    """Why openid-client cannot run here (installing it if node and npm are there), or None."""
    node = shutil.which("node")
    if node is None:
        return f"node is missing: {PACKAGE} {MAJOR} needs Node.js {MIN_NODE}+ with npm"
    major = node_major(node)
    if major is None or major < MIN_NODE:
        return f"{PACKAGE} {MAJOR} needs Node.js {MIN_NODE}+; {node} is v{major}"
    try:
        ensure_openid_client(directory)
    except RuntimeError as exc:
        return str(exc)
    return None


def script_in(directory: Path = NODE_DIR) -> Path:
    """The RP script copied into ``directory`` under a name of its content (runs of checkouts
    with another version of it do not overwrite each other's)."""
    text = SCRIPT.read_bytes()
    target = directory / f"oidc_rp-{hashlib.sha256(text).hexdigest()[:12]}.mjs"
    if not target.exists():
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(text)
        partial.replace(target)
    return target


class NodeRp:
    """``node oidc_rp.mjs`` with ``settings`` (tests/node/oidc_rp.mjs says which): :meth:`ask`
    sends one command and returns the script's JSON answer."""

    def __init__(self, settings: dict[str, Any], directory: Path = NODE_DIR) -> None:
        node = shutil.which("node")
        assert node is not None, "node is missing (missing_reason() first)"
        self.process = subprocess.Popen([node, str(script_in(directory))], cwd=directory, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        encoding="utf-8")
        self._selector = selectors.DefaultSelector()
        assert self.process.stdout is not None
        self._selector.register(self.process.stdout, selectors.EVENT_READ)
        self.configured = self.ask(settings)

    def ask(self, command: dict[str, Any], timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        while not self._selector.select(max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                raise AssertionError(f"openid-client script gave no answer in {timeout} s: {self.stderr()}")
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"openid-client script ended (exit {self.process.wait(10)}): {self.stderr()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()          # the script ends at the end of its input
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._selector.close()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


if __name__ == "__main__":   # .ci/setup: install ahead of the tests
    reason = missing_reason()
    if reason is not None:
        print(f"setup: {reason}", file=sys.stderr)
        sys.exit(1)
    print(f"setup: {PACKAGE} {installed_version()} in {NODE_DIR}")
