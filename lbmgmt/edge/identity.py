"""The edge's GUID: made on first start, kept in a file.

The balancer keys its registry by GUID, so it must survive restarts (a
restarted edge replaces its old entry instead of appearing twice). An install
copied to a new machine resets it by deleting the file.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path



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
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename, so a crash never leaves a half-written GUID behind.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".guid-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"{guid}\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise GuidFileError(path, f"cannot create GUID file: {exc.strerror or exc}") from None
    return guid
