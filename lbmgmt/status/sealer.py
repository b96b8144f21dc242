"""Sender side of the status protocol."""

from __future__ import annotations

import os
import uuid

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lbmgmt.status.keys import SharedKey, sender_cipher
from lbmgmt.status.wire import HEADER, MAGIC, VERSION, Report, encode_payload, nonce_for


class ReportSealer:
    """Seals reports for one sender process.

    The boot id is fresh per instance, so a restarted edge never reuses a
    (key, nonce) pair even though its sequence starts again at 1. One sequence
    counter serves every key: each ``seal`` takes the next number.
    """

    def __init__(self, guid: uuid.UUID, *, boot_id: bytes | None = None) -> None:
        self.guid = guid
        self.boot_id = boot_id if boot_id is not None else os.urandom(8)
        if len(self.boot_id) != 8:
            raise ValueError("boot id must be 8 bytes")
        self.sequence = 0
        self._ciphers: dict[SharedKey, AESGCM] = {}

    def seal(self, report: Report, key: SharedKey, *, now: float) -> bytes:
        """One datagram for ``report``; ``now`` is the wall clock in seconds."""
        return self.seal_payload(encode_payload(report), key, now=now)

    def seal_payload(self, payload: bytes, key: SharedKey, *, now: float) -> bytes:
        """One datagram carrying ``payload`` as given, unchecked.

        For tests and tools that need a payload no ``Report`` encodes: an
        extension type this version does not know, a malformed extension area.
        Takes the next sequence number like ``seal``.
        """
        cipher = self._ciphers.get(key)
        if cipher is None:
            cipher = self._ciphers[key] = sender_cipher(key.master(), self.guid.bytes,
                                                        self.boot_id)
        self.sequence += 1
        header = HEADER.pack(MAGIC, VERSION, 0, self.guid.bytes, self.boot_id,
                             self.sequence, max(0, int(now * 1000)))
        return header + cipher.encrypt(nonce_for(self.sequence), payload, header)
