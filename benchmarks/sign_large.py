"""Sign and verify a large file with the emulated card, next to ``openssl dgst -sha256``.

Creates a sparse, zero-filled file (1 GiB by default) in a temporary folder with a fresh test
CA and card, then runs, in the same run and interleaved, ``--repeat`` times each:

* ``openssl dgst -sha256 FILE`` (the baseline: the work is hashing);
* ``jpki sign FILE`` (CMS, detached, CAdES-BES, signature by the emulated card);
* ``jpki verify FILE.p7s --data FILE --revocation none``;
* with ``--attached``: ``jpki sign FILE --attached`` and ``jpki verify FILE.p7m`` too.

Each jpki run is a child process (``python -c`` calling ``jpki.cli.main``, as the ``jpki``
script does). Reported per operation (best of the repeats): the child's wall time from spawn to
exit, the time inside ``main()`` (without interpreter start-up and imports) and the child's CPU
time (user + system, from ``wait4``; steadier than wall time on a shared machine), each as a
ratio to openssl, and the child's peak RSS (``ru_maxrss`` from ``wait4``, and its own VmHWM).

Targets (issue 5): wall time at most 1.2x openssl; peak RSS under 100 MB.

    python benchmarks/sign_large.py [--size-mib 1024] [--repeat 5] [--attached] [--keep]

This script imports nothing heavy itself, so that the children's peak RSS is their own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

DRIVER = r"""
import json, sys, time
t0 = time.perf_counter()
from jpki.cli import main
t1 = time.perf_counter()
rc = main(sys.argv[1:])
t2 = time.perf_counter()
hwm = None
try:
    with open("/proc/self/status") as fh:
        hwm = int(next(line.split()[1] for line in fh if line.startswith("VmHWM:")))
except OSError:
    pass
sys.stderr.write("BENCH " + json.dumps({"rc": rc, "import_s": t1 - t0, "main_s": t2 - t1,
                                         "vmhwm_kib": hwm}) + "\n")
sys.exit(rc or 0)
"""


def spawn(args: list[str], env: dict[str, str]) -> dict:
    """Run ``args``; return wall time, exit status, ru_maxrss (KiB) and the driver's figures."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = err.decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:6])}… failed ({proc.returncode}):\n{text}")
    out = {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss}
    for line in text.splitlines():
        if line.startswith("BENCH "):
            out.update(json.loads(line[6:]))
    return out


def best(runs: list[dict], key: str) -> float:
    return min(r[key] for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each operation (best kept)")
    parser.add_argument("--attached", action="store_true", help="also sign/verify --attached")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    opts = parser.parse_args()
    # Measure what an installed jpki costs: imports from bytecode. (An environment with
    # PYTHONDONTWRITEBYTECODE=1 would otherwise compile jpki's sources on every run.)
    import compileall

    import card_emulator
    import jpki

    for package in (jpki, card_emulator):
        compileall.compile_dir(Path(package.__file__).parent, quiet=1)
    if shutil.which("openssl") is None:
        raise SystemExit("openssl is needed for the baseline")

    work = Path(tempfile.mkdtemp(prefix="jpki-sign-large-"))
    env = dict(os.environ, PYTHONPATH=str(REPO), JPKI_SIGN_PIN="ABC123")
    for var in ("JPKI_HOME", "JPKI_CARD"):
        env.pop(var, None)
    home = work / "home"
    jpki = [sys.executable, "-c", DRIVER, "--home", str(home), "--card", "emu:alice"]
    try:
        spawn([*jpki, "ca", "init"], env)
        spawn([*jpki, "card", "create", "alice"], env)
        big = work / "big.bin"
        with open(big, "wb") as fh:
            fh.truncate(opts.size_mib << 20)  # sparse: zeros, no disk blocks
        ops: dict[str, list[str]] = {
            "openssl dgst -sha256": ["openssl", "dgst", "-sha256", str(big)],
            "jpki sign (detached)": [*jpki, "sign", str(big), "-o", f"{big}.p7s"],
            "jpki verify (detached)": [*jpki, "verify", f"{big}.p7s", "--data", str(big), "--revocation", "none"],
        }
        if opts.attached:
            ops["jpki sign --attached"] = [*jpki, "sign", str(big), "--attached", "-o", f"{big}.p7m"]
            ops["jpki verify (attached)"] = [*jpki, "verify", f"{big}.p7m", "--revocation", "none"]
        spawn(ops["openssl dgst -sha256"], env)  # warm the page cache and the interpreter
        results: dict[str, list[dict]] = {name: [] for name in ops}
        for _ in range(opts.repeat):
            for name, args in ops.items():
                results[name].append(spawn(args, env))

        base = best(results["openssl dgst -sha256"], "wall_s")
        size = opts.size_mib << 20
        print(f"file: {opts.size_mib} MiB (sparse, zero-filled); best of {opts.repeat}; "
              f"python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
        base_cpu = best(results["openssl dgst -sha256"], "cpu_s")
        print(f"{'operation':<25}{'wall s':>8}{'x openssl':>11}{'main() s':>10}{'x openssl':>11}"
              f"{'CPU s':>8}{'x openssl':>11}{'MB/s':>7}{'maxrss MB':>11}{'VmHWM MB':>10}")
        for name, runs in results.items():
            wall = best(runs, "wall_s")
            cpu = best(runs, "cpu_s")
            rss = max(r["maxrss_kib"] for r in runs) / 1024
            line = f"{name:<25}{wall:>8.3f}{wall / base:>10.2f}x"
            if "main_s" in runs[0]:
                inner = best(runs, "main_s")
                hwm = max(r["vmhwm_kib"] or 0 for r in runs) / 1024
                line += f"{inner:>10.3f}{inner / base:>10.2f}x"
            else:
                inner, hwm = wall, None
                line += f"{'':>10}{'':>11}"
            line += f"{cpu:>8.3f}{cpu / base_cpu:>10.2f}x{size / inner / 1e6:>7.0f}{rss:>11.1f}"
            line += f"{hwm:>10.1f}" if hwm is not None else ""
            print(line)
        target = [name for name in results if "detached" in name]  # the operations
        worst = max(best(results[name], "wall_s") / base for name in target)
        worst_main = max(best(results[name], "main_s") / base for name in target)
        peak = max(r["maxrss_kib"] for name, runs in results.items() if "jpki" in name
                   for r in runs) / 1024
        print(f"targets (detached sign and verify): wall <= 1.2x openssl: "
              f"{'met' if worst <= 1.2 else 'NOT met'} ({worst:.2f}x with process start-up, "
              f"{worst_main:.2f}x inside main()); peak RSS < 100 MB: "
              f"{'met' if peak < 100 else 'NOT met'} ({peak:.1f} MB, every operation)")
        if opts.attached:
            print("attached signing also writes the whole file (and fsyncs it): not comparable "
                  "with a digest alone")
        imports = best([r for name, runs in results.items() if "jpki" in name for r in runs],
                       "import_s")
        print(f"interpreter start-up + imports of jpki.cli: {imports:.3f} s at best "
              "(included in 'wall', not in 'main()')")
    finally:
        if opts.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
