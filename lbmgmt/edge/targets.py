"""The classic targets file: one ``host,port,key`` line per balancer.

Kept byte-compatible with the original system's file so fleets can move over
without rewriting it: a line starting with ``#`` is a comment, as is ``#``
after white space (shell style); blank lines are ignored; the key is everything
after the second comma, so keys may contain commas and a ``#`` not preceded by
white space.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lbmgmt.configfile import ConfigError, read_text
from lbmgmt.endpoints import join_host_port
from lbmgmt.status import SharedKey
from lbmgmt.status.keys import key_problem

DEFAULT_PORT = 1934
_COMMENT = re.compile(r"(^|\s)#.*$")


@dataclass(frozen=True, slots=True)
class ReportTarget:
    host: str
    port: int
    key: SharedKey
    line: int

    def __str__(self) -> str:
        return join_host_port(self.host, self.port)


def parse_targets(text: str, path: str | Path = "<targets>") -> list[ReportTarget]:
    targets: list[ReportTarget] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        parts = line.split(",", 2)
        if len(parts) != 3:
            raise ConfigError(path, "expected 'host,port,key'", line=number, field="line")
        host, port_text, key = (p.strip() for p in parts)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not host:
            raise ConfigError(path, "empty host", line=number, field="host")
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ConfigError(path, f"port must be 1-65535, not {port_text!r}", line=number,
                              field="port")
        if not key:
            raise ConfigError(path, "empty key", line=number, field="key")
        problem = key_problem(key)
        if problem is not None:
            raise ConfigError(path, f"the key {problem}", line=number, field="key")
        targets.append(ReportTarget(host, int(port_text), SharedKey(key), number))
    return targets


def load_targets(path: str | Path) -> list[ReportTarget]:
    return parse_targets(read_text(path, "targets file"), path)
