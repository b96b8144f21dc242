"""Key handling: one slow stretch per shared key string, one fast split per sender.

Operators type shared keys by hand, so they are low-entropy; scrypt makes an
offline guess from a captured datagram expensive. The stretch runs once at
start-up (about 60 ms). HKDF then derives a key per (sender GUID, boot id), so
each sender process has a key of its own: its sequence number can serve as the
AES-GCM nonce without any coordination, and nonce limits are per sender.
"""

from __future__ import annotations

import functools
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

# Documented in docs/protocol.md; changing any of these is a protocol version bump.
SCRYPT_SALT = b"lbmgmt/status/v1/scrypt"
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
HKDF_INFO = b"lbmgmt/status/v1/sender"

# A shared key is typed into two files by hand; shorter than this it is guessable
# offline from one captured report however slow the stretch.
MIN_KEY_CHARS = 16
# Keys printed in examples/: accepted (the demo runs on them) but warned about at start.
PLACEHOLDER_KEYS = frozenset({"change-me-to-a-long-random-string", "another-balancers-key"})


def key_problem(text: str) -> str | None:
    """Why this key text may not be used (never quoting it), or None."""
    if len(text) < MIN_KEY_CHARS:
        return (f"is {len(text)} characters long; a shared key needs at least "
                f"{MIN_KEY_CHARS} ('lbmgmt new-key' prints a strong one)")
    return None


def new_key() -> str:
    """A fresh shared key: 32 URL-safe characters, 192 random bits."""
    return secrets.token_urlsafe(24)


class SharedKey:
    """A shared key string that never shows itself in logs, reprs or tracebacks."""

    __slots__ = ("_secret",)

    def __init__(self, secret: str) -> None:
        if not secret or not secret.strip():
            raise ValueError("shared key must not be empty")
        self._secret = secret

    def __repr__(self) -> str:
        return "SharedKey(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SharedKey) and other._secret == self._secret

    def __hash__(self) -> int:
        return hash(("SharedKey", self._secret))

    @property
    def is_placeholder(self) -> bool:
        """Whether this is a key printed in the examples (public: anyone can forge with it)."""
        return self._secret in PLACEHOLDER_KEYS

    def master(self) -> bytes:
        """The stretched 32-byte master key (cached: scrypt runs once per key string)."""
        return _stretch(self._secret)


@functools.lru_cache(maxsize=16)
def _stretch(secret: str) -> bytes:
    kdf = Scrypt(salt=SCRYPT_SALT, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return kdf.derive(secret.encode("utf-8"))


def sender_cipher(master: bytes, guid: bytes, boot_id: bytes) -> AESGCM:
    """The AEAD for one sender process; callers cache it, never build one per datagram."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=HKDF_INFO + guid + boot_id).derive(master)
    return AESGCM(key)
