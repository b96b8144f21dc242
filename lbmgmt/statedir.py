"""Where a daemon keeps its runtime files (an edge's GUID, a balancer's state file) when
its config does not say: never beside the config, which may be a source checkout or a
read-only /etc.

``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``; the first of several), else
``$XDG_STATE_HOME/lbmgmt``, else ``~/.local/state/lbmgmt`` (the XDG Base Directory
default). A file is named for its config's path: ``/etc/lbmgmt/edge.toml`` keeps
``edge-<8 hex digits>.guid``, the digits a hash of that path, so two daemons on one host
never share one, whatever their configs are called (two edges sharing a GUID would be
one edge to the balancers; two balancers sharing a state file would restore each
other's pools). A config moved elsewhere starts afresh: a new GUID, no state. Set
``guid_file`` or ``state_file`` to keep one where you choose.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path


def state_directory(env: Mapping[str, str] = os.environ) -> Path:
    systemd = env.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd and os.path.isabs(systemd):
        return Path(systemd)
    xdg = env.get("XDG_STATE_HOME", "")
    if xdg and os.path.isabs(xdg):  # (a relative one is to be ignored, as the spec says)
        return Path(xdg) / "lbmgmt"
    return Path.home() / ".local" / "state" / "lbmgmt"


def default_file(config: Path, suffix: str, env: Mapping[str, str] = os.environ) -> Path:
    """The runtime file of the daemon configured by ``config``: ``<stem>-<hash><suffix>``
    in the state directory, the hash of the config's absolute path."""
    where = hashlib.blake2b(os.fsencode(config.absolute()), digest_size=4).hexdigest()
    return state_directory(env) / f"{config.stem}-{where}{suffix}"
