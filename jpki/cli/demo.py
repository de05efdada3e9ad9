"""``jpki demo``."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import click

from ._common import CliFail, Ctx, pass_ctx


@click.command()
@click.option("--keep", is_flag=True, help="keep the temporary home and print where it is")
@pass_ctx
def demo(obj: Ctx, keep: bool) -> None:
    """Run everything end to end on a fresh temporary home with an emulated card."""
    from ..demo import run_demo  # imports the servers and pyHanko: only when the demo runs

    home = Path(tempfile.mkdtemp(prefix="jpki-demo-"))
    try:
        progress = None if obj.json else (lambda s: click.echo(f"{'PASS' if s.ok else 'FAIL'}  {s.name}: {s.detail}"))
        report = run_demo(home, progress=progress, clock=obj.clock)
        if not report.ok:
            obj.fail(CliFail("the demo failed", code="demo_failed"), report.to_json(),
                     report.summary().splitlines()[-1])
        obj.emit(report.to_json(), report.summary().splitlines()[-1])
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
