"""Who may use the management port: credentials file, roles, failed-login limits.

JMX's model: a local (loopback) port needs no password unless one is
configured; any other bind needs a credentials file. Passwords are stored as
scrypt hashes; bearer tokens (random, so a fast hash is enough) as SHA-256.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

from lbmgmt.configfile import ConfigError, ConfigFile
from lbmgmt.management.server import Role

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                                r=int(r), p=int(p), dklen=len(expected),
                                maxmem=256 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def _decoy_hash(hashes: list[str]) -> str:
    """A hash of a random password, with the scrypt parameters of the first of ``hashes``."""
    n, r, p = SCRYPT_N, SCRYPT_R, SCRYPT_P
    if hashes:
        _, n_text, r_text, p_text, _, _ = hashes[0].split("$")
        n, r, p = int(n_text), int(r_text), int(p_text)
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secrets.token_bytes(16), salt=salt, n=n, r=r, p=p, dklen=32,
                            maxmem=256 * 1024 * 1024)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def _check_hash_format(encoded: str) -> bool:
    parts = encoded.split("$")
    return len(parts) == 6 and parts[0] == "scrypt" and all(x.isdigit() for x in parts[1:4])


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    password_hash: str | None = field(default=None, repr=False)
    token_sha256: str | None = field(default=None, repr=False)


class Credentials:
    """The users of one management port.

    A successful Basic login is remembered (by a SHA-256 of user and
    password), so a console polling every second does not pay for scrypt on
    every request; failures are never cached.
    """

    def __init__(self, users: list[User]) -> None:
        self.users = {u.name: u for u in users}
        self._tokens = {u.token_sha256: u for u in users if u.token_sha256}
        self._verified: OrderedDict[bytes, User] = OrderedDict()
        # What an unknown user's password is checked against: a hash with the cost
        # of the real ones (the first user's parameters), made once, so a login for
        # a name that does not exist costs one scrypt like any other.
        self._decoy = _decoy_hash([u.password_hash for u in users if u.password_hash])

    @classmethod
    def load(cls, path: str | Path) -> Credentials:
        cfg = ConfigFile.load(path)
        cfg.check_tables(["users"])
        table = cfg.section("users", required=True)
        users = []
        for name in list(table.data):
            table.get_table(name)
            section = cfg.section(f"users.{name}")
            role_text = section.get_str("role")
            try:
                role = Role(role_text)
            except ValueError:
                section.fail("role", f"must be readonly or readwrite, not {role_text!r}")
            password = section.get_str("password", None)
            token = section.get_str("token_sha256", None)
            if password is None and token is None:
                section.fail("password", "give a password (scrypt hash) or a token_sha256")
            if password is not None and not _check_hash_format(password):
                section.fail("password", "must be a scrypt hash from "
                                         "'lbmgmt hash-password', not a plain password")
            if token is not None and (len(token) != 64 or
                                      any(c not in "0123456789abcdef" for c in token)):
                section.fail("token_sha256", "must be 64 hex digits from 'lbmgmt new-token'")
            section.finish()
            users.append(User(name, role, password, token))
        table.finish()
        if not users:
            raise ConfigError(path, "no users defined", field="users")
        return cls(users)

    @staticmethod
    def cache_key(user: str, password: str) -> bytes:
        return hashlib.sha256(f"{user}\0{password}".encode()).digest()

    def cached(self, user: str, password: str) -> User | None:
        key = self.cache_key(user, password)
        found = self._verified.get(key)
        if found is not None:
            self._verified.move_to_end(key)
        return found

    def remember(self, user: str, password: str, found: User) -> None:
        self._verified[self.cache_key(user, password)] = found
        while len(self._verified) > 256:
            self._verified.popitem(last=False)

    def verify(self, user: str, password: str) -> User | None:
        """The slow scrypt check; touches no shared state, so it may run in a thread."""
        found = self.users.get(user)
        if found is None or found.password_hash is None:
            verify_password(password, self._decoy)  # the same one scrypt: no user probing
            return None
        return found if verify_password(password, found.password_hash) else None

    async def check_basic(self, user: str, password: str) -> User | None:
        """A Basic login: the cache on the event loop (it is not locked), scrypt off it."""
        found = self.cached(user, password)
        if found is None:
            found = await asyncio.to_thread(self.verify, user, password)
            if found is not None:
                self.remember(user, password, found)
        return found

    def check_bearer(self, token: str) -> User | None:
        user = self._tokens.get(hash_token(token))
        return user


@dataclass(slots=True)
class LoginLimiter:
    """Failed logins per (address, user) and per address; sans-IO (``now`` passed in).

    After ``max_failures`` failures for one user from one address within
    ``window`` seconds, that user is refused from that address for ``lockout``
    seconds without its credentials being checked; after ``max_address_failures``
    from one address, whatever the users, the whole address is. A success clears
    that user's own count from that address only: a valid login between guesses
    at other accounts resets nothing the guesses added up.
    """

    max_failures: int = 5
    max_address_failures: int = 20
    window: float = 60.0
    lockout: float = 60.0
    failed_total: int = 0
    refused_total: int = 0
    # keyed (address, user) and (address, None): the address's own count
    _failures: dict[tuple[str, str | None], deque[float]] = field(default_factory=dict)
    _blocked_until: dict[tuple[str, str | None], float] = field(default_factory=dict)

    def retry_after(self, client: str, user: str | None, now: float) -> float:
        """Seconds this user must wait before trying from this address, 0 if it may try."""
        wait = 0.0
        for key in {(client, None), (client, user)}:
            until = self._blocked_until.get(key, 0.0)
            if until > now:
                wait = max(wait, until - now)
            elif key in self._blocked_until:
                del self._blocked_until[key]
        if wait > 0:
            self.refused_total += 1
        return wait

    def failure(self, client: str, user: str | None, now: float) -> None:
        self.failed_total += 1
        keys: list[tuple[tuple[str, str | None], int]] = [
            ((client, None), self.max_address_failures)]
        if user is not None:  # (None: a bearer token, no name: the address's count only)
            keys.append(((client, user), self.max_failures))
        for key, limit in keys:
            times = self._failures.setdefault(key, deque())
            times.append(now)
            while times and times[0] < now - self.window:
                times.popleft()
            if len(times) >= limit:
                self._blocked_until[key] = now + self.lockout
                times.clear()
        if len(self._failures) > 10_000:  # bounded memory under a spray of addresses/names
            for key in [k for k, v in self._failures.items() if not v or v[-1] < now - self.window]:
                del self._failures[key]
            if len(self._failures) > 10_000:  # a spray within one window: oldest first
                for key in sorted(self._failures, key=lambda k: self._failures[k][-1])[:5_000]:
                    del self._failures[key]
        if len(self._blocked_until) > 10_000:
            for key in [k for k, until in self._blocked_until.items() if until <= now]:
                del self._blocked_until[key]

    def success(self, client: str, user: str | None) -> None:
        """Clear this user's own count from this address (never the address's count)."""
        if user is not None:
            self._failures.pop((client, user), None)
