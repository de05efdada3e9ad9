"""APDU scripts: a test written by hand (or recorded) as commands and the answers they must get.

The language and the API are documented in docs/scripts.md. In short::

    from jpki.scripts import load_script, run_script
    from jpki.transport import open_transport

    script = load_script("tests/scripts/jpki_ap.apdu")        # ScriptError (exit 2): with the line
    with open_transport("emu:alice", home=home) as t:
        run = run_script(script, t, variables={"AUTH_PIN": b"1234"})
    # ScriptMismatchError (exit 3) at the first answer that differs: .result.where, .result.got

``Recorder`` / ``RecordingTransport`` write what a session sent and got as such a script, PINs
and personal data masked (``jpki --record FILE …``).
"""

from __future__ import annotations

from .record import Recorder, RecordingTransport
from .runner import Check, ScriptMismatchError, ScriptRun, StepResult, run_script, signature_check
from .syntax import Command, Location, Script, ScriptError, SetVar, load_script, parse_script

__all__ = ["Check", "Command", "Location", "Recorder", "RecordingTransport", "Script", "ScriptError",
           "ScriptMismatchError", "ScriptRun", "SetVar", "StepResult", "load_script", "parse_script",
           "run_script", "signature_check"]
