"""Transports: how the host reaches a card. ``open_transport(uri)`` picks one by card URI.

- ``emu:NAME`` — an emulated card in this process (``NAME`` under ``HOME/cards``, or a path)
- ``pcsc`` — the first PC/SC reader with a card; ``pcsc:TEXT`` — the first reader whose name
  contains TEXT (a real card, or the emulator served through pcscd + vpcd)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..errors import UsageError
from .base import Transport, TransportBase
from .trace import TracingTransport

__all__ = ["TracingTransport", "Transport", "TransportBase", "is_pcsc_uri", "open_transport"]


def is_pcsc_uri(uri: str) -> bool:
    return uri == "pcsc" or uri.startswith("pcsc:")


def open_transport(uri: str, *, home: str | os.PathLike[str] | None = None, wait: float = 0,
                   trace: Callable[[str], None] | None = None, exclusive: bool = False) -> Transport:
    """Open the card named by ``uri``; wrap it in a TracingTransport when ``trace`` is given."""
    transport: Transport
    if uri.startswith("emu:"):
        from .emu import EmulatorTransport, card_path

        name = uri[4:]
        if not name:
            raise UsageError("emu: needs a card name, e.g. emu:alice")
        transport = EmulatorTransport(card_path(Path(home or "."), name))
    elif is_pcsc_uri(uri):
        from .pcsc import PcscTransport

        reader = uri[5:] or None if uri.startswith("pcsc:") else None
        transport = PcscTransport(reader, wait=wait, exclusive=exclusive)
    else:
        raise UsageError(f"unknown card URI {uri!r}: use emu:NAME, pcsc or pcsc:READER")
    return TracingTransport(transport, trace) if trace is not None else transport
