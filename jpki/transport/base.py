"""The byte-level seam between the host and a card: ``transmit(apdu) -> rapdu``."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self, runtime_checkable


@runtime_checkable
class Transport(Protocol):
    """Anything that sends one command APDU and returns the response APDU (data + SW1 SW2).

    Implementations stay dumb: no status-word handling, no GET RESPONSE chaining (that is
    ``jpki.apdu``). They raise ``jpki.errors.TransportError`` subclasses on link failures.
    A transport is a context manager that closes it on exit (:class:`TransportBase` has the
    plumbing), so ``with open_transport(uri) as t:`` releases the reader whatever happens.
    """

    def transmit(self, apdu: bytes) -> bytes: ...

    def close(self) -> None: ...

    @property
    def atr(self) -> bytes: ...

    @property
    def description(self) -> str: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class TransportBase:
    """Context-manager plumbing shared by the concrete transports."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        pass
