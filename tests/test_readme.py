"""Every shell block of README.md runs as written, in order, on a fresh home.

What a new user does, literally: the ```` ```sh ```` blocks run one after another in one bash
session (``set -euo pipefail``: the first failing command fails the test, with its README
line), with ``HOME`` a fresh folder, ``PATH`` the virtual environment's ``bin`` then
``/usr/bin:/bin``, and the working folder empty. They run in a private network and mount
namespace (``unshare``): their own loopback, so the ports the README names clash with nothing
on the machine, and their own ``/run/pcscd``, so the README starts its own pcscd as it tells
the reader to. Standard input is empty and no terminal: every PIN must come from where the
README says. Background jobs (``&``) are stopped at the end.

A block preceded by ``<!-- readme-test: skip REASON -->`` is not run; the test keeps that list
short and every skip explained.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from jpki.testing.pcsc import in_ci, missing_reason

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s+(?P<reason>[^>]+?)\s*-->\s*$")
#: blocks allowed to be skipped, and why (checked, so that the list only shrinks)
ALLOWED_SKIPS = 2


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    text: str
    skip: str | None


def shell_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            start = i
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            m = SKIP.search(before)
            blocks.append(Block(start + 1, "\n".join(body), m.group("reason") if m else None))
        i += 1
    return blocks


def script(blocks: list[Block]) -> str:
    parts = ["set -euo pipefail",
             'trap \'echo "README.md line $README_LINE: failed: $BASH_COMMAND (exit $?)" >&2\' ERR',
             "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT"]
    for block in blocks:
        if block.skip:
            continue
        parts.append(f"README_LINE={block.line}; echo '--- README.md line {block.line}' >&2")
        parts.append(block.text)
    parts.append("echo '--- README.md: every block ran' >&2")
    return "\n".join(parts) + "\n"


def test_the_readme_has_shell_blocks_and_few_skips():
    blocks = shell_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 8
    skipped = [b for b in blocks if b.skip]
    assert len(skipped) <= ALLOWED_SKIPS, [(b.line, b.skip) for b in skipped]


def _namespace_prefix() -> list[str] | None:
    """The command that runs a script in a private network + mount namespace, or None."""
    unshare = shutil.which("unshare", path="/usr/bin:/bin")
    ip = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if unshare is None or ip is None:
        return None
    inner = (f"{shlex.quote(ip)} link set lo up && mkdir -p /run/pcscd "
             "&& mount -t tmpfs -o mode=0755 tmpfs /run/pcscd && exec bash \"$0\"")
    probe = subprocess.run([unshare, "--net", "--mount", "--propagation", "private", "sh", "-c",
                            f"{shlex.quote(ip)} link set lo up"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        return None
    return [unshare, "--net", "--mount", "--propagation", "private", "bash", "-c", inner]


@pytest.mark.slow
@pytest.mark.pcsc
def test_every_shell_block_runs_as_written(tmp_path):
    reason = missing_reason()
    prefix = _namespace_prefix()
    if prefix is None:
        reason = reason or "cannot make a private network/mount namespace (unshare as root)"
    if reason:
        (pytest.fail if in_ci() else pytest.skip)(reason)
    home = tmp_path / "user"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    path = tmp_path / "readme.sh"
    path.write_text(script(shell_blocks(README.read_text(encoding="utf-8"))), encoding="utf-8")
    env = {"HOME": str(home), "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
           "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    with open(tmp_path / "out", "w+") as out_f, open(tmp_path / "err", "w+") as err_f:
        proc = subprocess.Popen([*prefix, str(path)], cwd=work, env=env, stdin=subprocess.DEVNULL,
                                stdout=out_f, stderr=err_f, start_new_session=True)
        try:
            proc.wait(timeout=600)
        finally:
            # whatever the README left running (servers, pcscd in the namespace)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.poll() is None:  # pragma: no cover
                proc.kill()
                proc.wait()
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    tail = "\n".join(err.splitlines()[-40:])
    assert proc.returncode == 0, f"stdout:\n{out[-4000:]}\nstderr:\n{tail}"
    assert "every block ran" in err
    assert "Traceback" not in out + err, err
    # what the comments promise, seen in the output
    assert "taro-auth.pem: good" in out and "taro-auth.pem: revoked" in out  # openssl ocsp
    assert "Signature is Valid" in out  # pdfsig
    assert "refused: exit 3" in out  # the lost card's login
    assert "contract.txt.p7s: VALID" in out
    assert '"name":"山田　花子"' in out and '"address":{"formatted":' in out  # OpenID Connect userinfo
