"""A software My Number Card: the JPKI and card-info applications over ISO 7816-4 APDUs.

This package imports nothing from ``jpki``: the wire bytes are the only contract.
"""

from .apdu import SW, CardStatus
from .card import CardFiles, MyNumberCard
from .profile import CardProfile
from .state import CardStateError

__all__ = ["SW", "CardFiles", "CardProfile", "CardStateError", "CardStatus", "MyNumberCard"]
