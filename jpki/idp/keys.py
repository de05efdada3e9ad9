"""The provider's own secrets in the home: its ID-token signing key and its pairwise salt.

    HOME/idp/signing-key.pem   ECDSA P-256 (ES256), PKCS#8 PEM, mode 0600
    HOME/idp/pairwise-salt     32 random bytes, mode 0600

Both are made on first use (``O_CREAT | O_EXCL``: of several processes starting at once, one
writes the file and the others read it) and never change afterwards: the key's ``kid`` is its
JWK thumbprint (RFC 7638), and every pairwise ``sub`` depends on the salt. Replacing the key
is a matter of moving the file away (clients fetch the JWKS again when they meet an unknown
``kid``); replacing the salt changes every ``sub``.

JOSE goes through joserfc: the provider never builds or parses a JWS by hand.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey

from jpki.errors import JpkiError

__all__ = ["KEY_FILE", "SALT_FILE", "ProviderKey", "ProviderKeyError", "idp_dir", "load_salt"]

KEY_FILE: Final = "signing-key.pem"
SALT_FILE: Final = "pairwise-salt"
#: The ID token's signature algorithm (the one the Digital Authentication App uses).
ID_TOKEN_ALG: Final = "ES256"


class ProviderKeyError(JpkiError):
    """The provider's key or salt file is unreadable or not what it should be."""

    code = "provider_key"


def idp_dir(home: Path) -> Path:
    """HOME/idp (created 0700 if missing)."""
    path = Path(home).expanduser() / "idp"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _create_or_read(path: Path, make: bytes) -> bytes:
    """Write ``make`` to a new file ``path`` (0600, fsync), or read the file another process
    wrote first."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the writer may not have finished its single write yet
            data = path.read_bytes()
            if data:
                return data
            time.sleep(0.01)
        raise ProviderKeyError(f"{path} is empty") from None
    try:
        os.write(fd, make)
        os.fsync(fd)
    finally:
        os.close(fd)
    return make


class ProviderKey:
    """The ES256 key that signs ID tokens; ``kid`` is its JWK thumbprint."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or private_key.curve.name != "secp256r1":
            raise ProviderKeyError("the provider's signing key must be an ECDSA P-256 key")
        self._jwk = ECKey.import_key(private_key)
        self.kid: str = self._jwk.thumbprint()
        self._public = {**self._jwk.as_dict(private=False), "kid": self.kid, "use": "sig", "alg": ID_TOKEN_ALG}

    @classmethod
    def generate(cls) -> ProviderKey:
        """A fresh key (tests)."""
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def load_or_create(cls, home: Path) -> ProviderKey:
        """HOME/idp/signing-key.pem, made on first use."""
        path = idp_dir(home) / KEY_FILE
        fresh = ec.generate_private_key(ec.SECP256R1()) if not path.exists() else None
        pem = _create_or_read(path, fresh.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()) if fresh is not None else b"")
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ProviderKeyError(f"{path} is not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ProviderKeyError(f"{path} is not an ECDSA P-256 key")
        return cls(key)

    def jwks(self) -> dict[str, Any]:
        """The JWKS document of the certs endpoint (public key only)."""
        return {"keys": [dict(self._public)]}

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact JWS (``typ: JWT``) of ``claims``."""
        return jwt.encode({"alg": ID_TOKEN_ALG, "kid": self.kid, "typ": "JWT"}, claims, self._jwk,
                          algorithms=[ID_TOKEN_ALG])


def load_salt(home: Path) -> bytes:
    """HOME/idp/pairwise-salt, made on first use (32 random bytes)."""
    path = idp_dir(home) / SALT_FILE
    salt = _create_or_read(path, secrets.token_bytes(32))
    if len(salt) < 16:
        raise ProviderKeyError(f"{path} holds fewer than 16 bytes")
    return salt
