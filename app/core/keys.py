"""Issuing and verifying account keys.

Keys are 30 bytes from ``secrets`` (240 bits), shown once, stored as a
SHA-256 digest. A slow password hash (bcrypt, argon2) protects *guessable*
secrets from offline guessing; nobody can enumerate 2**240 keys, so a fast
digest is as safe here and keeps verification in microseconds, which also
means an attacker cannot use the hash as a denial-of-service lever.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

import bcrypt

_SCHEME = "sha256"
# Hashes imported from acme-dns (Go bcrypt, cost 10): verified as they are, then replaced.
BCRYPT_SCHEME = "bcrypt"


def new_username() -> str:
    return str(uuid.uuid4())


def new_key() -> str:
    """40 characters of base64url: the alphabet every acme-dns client accepts."""
    return secrets.token_urlsafe(30)


def hash_key(key: str) -> str:
    return f"{_SCHEME}${hashlib.sha256(key.encode('utf-8')).hexdigest()}"


# Verified against when the username is unknown, so that a miss costs what a hit costs.
_DUMMY_HASH = hash_key(new_key())


def verify_key(key: str, stored: str | None) -> bool:
    """Constant-time check of ``key`` against a stored hash (None: unknown user)."""
    scheme, _, digest = (stored or _DUMMY_HASH).partition("$")
    if scheme == BCRYPT_SCHEME:
        try:
            return bcrypt.checkpw(key.encode("utf-8"), digest.encode("ascii"))
        except ValueError:
            return False
    if scheme != _SCHEME:
        # Unknown scheme: still spend the same work, then refuse.
        _, _, digest = _DUMMY_HASH.partition("$")
        hmac.compare_digest(hash_key(key).partition("$")[2], digest)
        return False
    candidate = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return hmac.compare_digest(candidate, digest) and stored is not None


def needs_rehash(stored: str) -> bool:
    """True for a hash that is not the native one (an import from acme-dns)."""
    return not stored.startswith(_SCHEME + "$")


def bcrypt_hash(stored_by_acme_dns: str) -> str:
    """An acme-dns bcrypt hash in our scheme-prefixed form, or ValueError."""
    if not stored_by_acme_dns.startswith(("$2a$", "$2b$", "$2y$")):
        raise ValueError("not a bcrypt hash")
    return f"{BCRYPT_SCHEME}${stored_by_acme_dns}"


def fingerprint(value: str) -> str:
    """A short, non-reversible tag of a challenge value for logs and the audit trail."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]
