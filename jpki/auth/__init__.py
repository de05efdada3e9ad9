"""Online identity verification with the My Number Card: card login and eKYC.

The relying-party side of this package imports no card library (no ``jpki.session``,
``jpki.transport``, ``jpki.apdu`` or ``card_emulator``): a server verifies without them.
"""

from jpki.auth.store import (
    Challenge,
    ChallengeStore,
    ChallengeStoreError,
    DuplicateChallengeError,
    MalformedChallengeError,
    MemoryStore,
    RedisStore,
    SqliteStore,
    StoreFullError,
    open_store,
)

__all__ = [
    "Challenge",
    "ChallengeStore",
    "ChallengeStoreError",
    "DuplicateChallengeError",
    "MalformedChallengeError",
    "MemoryStore",
    "RedisStore",
    "SqliteStore",
    "StoreFullError",
    "open_store",
]
