"""Online identity verification with the My Number Card: card login and eKYC.

```python
from jpki.auth import RelyingParty, open_store
rp = RelyingParty("https://shop.example.jp", validator, open_store("redis://127.0.0.1:6379/0"))
challenge = rp.begin_login()                  # -> client; the card signs it (jpki.auth.client)
result = rp.complete_login(response_json)     # LoginResult: ok, reason, account.key
challenge = rp.begin_ekyc("口座開設の本人確認")
result = rp.complete_ekyc(response_json)      # EkycResult: ok, reason, identity (basic 4 info)
```

Modules: :mod:`~jpki.auth.protocol` (the signed encoding and the JSON documents),
:mod:`~jpki.auth.rp` (:class:`RelyingParty`), :mod:`~jpki.auth.result` (results, reason codes,
accounts), :mod:`~jpki.auth.links` (renewal links: which account a certificate belongs to),
:mod:`~jpki.auth.store` (challenge stores: memory, SQLite, Redis), :mod:`~jpki.auth.board` and
:mod:`~jpki.auth.service` (the HTTP service, on Starlette), :mod:`~jpki.auth.client` (the card
holder's side: the only module here that drives a card).

The relying-party side of this package imports no card library (no ``jpki.session``,
``jpki.transport``, ``jpki.apdu`` or ``card_emulator``): a server verifies without them. This
``__init__`` imports neither the client nor the HTTP service.
"""

from jpki.auth.links import (
    AccountResolver,
    FollowPredecessors,
    FollowSuccessors,
    LinkError,
    NoLinks,
    TestCALinks,
)
from jpki.auth.protocol import (
    ClientData,
    EkycResponse,
    LoginResponse,
    MalformedMessageError,
    parse_challenge,
)
from jpki.auth.result import (
    Account,
    AuthReason,
    AuthResult,
    CertRef,
    EkycResult,
    LoginResult,
    VerifiedIdentity,
)
from jpki.auth.rp import DEFAULT_CHALLENGE_TTL, RelyingParty
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
    "DEFAULT_CHALLENGE_TTL",
    "Account",
    "AccountResolver",
    "AuthReason",
    "AuthResult",
    "CertRef",
    "Challenge",
    "ChallengeStore",
    "ChallengeStoreError",
    "ClientData",
    "DuplicateChallengeError",
    "EkycResponse",
    "EkycResult",
    "FollowPredecessors",
    "FollowSuccessors",
    "LinkError",
    "LoginResponse",
    "LoginResult",
    "MalformedChallengeError",
    "MalformedMessageError",
    "MemoryStore",
    "NoLinks",
    "RedisStore",
    "RelyingParty",
    "SqliteStore",
    "StoreFullError",
    "TestCALinks",
    "VerifiedIdentity",
    "open_store",
    "parse_challenge",
]
