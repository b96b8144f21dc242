"""Where a daemon keeps its runtime files (an edge's GUID, a balancer's state file) when
its config does not say: never beside the config, which may be a source checkout or a
read-only /etc.

``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``; the first of several), else
``$XDG_STATE_HOME/lbmgmt``, else ``~/.local/state/lbmgmt`` (the XDG Base Directory
default). Files are named for their config: ``edge.toml`` keeps ``edge.guid``,
``edge-b.toml`` ``edge-b.guid``, so two daemons on one host never share one.
"""

from __future__ import annotations

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
    """The runtime file of the daemon configured by ``config``: ``<stem><suffix>`` in the
    state directory."""
    return state_directory(env) / (config.stem + suffix)
