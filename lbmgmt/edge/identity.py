"""The edge's GUID: made on first start, kept in a file.

The balancer keys its registry by GUID, so it must survive restarts (a
restarted edge replaces its old entry instead of appearing twice). An install
copied to a new machine resets it by deleting the file.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from lbmgmt.atomicfile import write_atomically


class GuidFileError(Exception):
    """The GUID file cannot be read, parsed or written: names the file and why."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


def load_or_create_guid(path: str | Path) -> uuid.UUID:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return _create(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise GuidFileError(path, f"cannot read GUID file: {exc}") from None
    try:
        return uuid.UUID(text)
    except ValueError:
        raise GuidFileError(path, f"not a GUID: {text[:60]!r} "
                                  "(delete the file to make a new one)") from None


def _create(path: Path) -> uuid.UUID:
    guid = uuid.uuid4()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # so that a crash never leaves a half-written GUID behind
        write_atomically(path, f"{guid}\n".encode(), mode=0o644)
    except OSError as exc:
        raise GuidFileError(path, f"cannot create GUID file: {exc.strerror or exc}") from None
    return guid
