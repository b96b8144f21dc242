"""Who may open a connection on a port: caps in total and per address, sans-IO.

One flood cannot take every slot: at most ``max_per_address`` connections
come from one client IP address, and ``max_total`` from all (on the client
port, proxied relays hold theirs until they end). A refused connection is
dropped at once and counted by the reason it was refused. The client port and
the management port each keep their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Admission:
    max_total: int
    max_per_address: int
    total: int = 0
    # (a plain dict: Counter's item deletion is Python code, once per connection)
    by_address: dict[str, int] = field(default_factory=dict)

    def admit(self, address: str) -> str | None:
        """None (admitted: ``release`` it later), or why not: "total" or "address"."""
        if self.total >= self.max_total:
            return "total"
        held = self.by_address.get(address, 0)
        if held >= self.max_per_address:
            return "address"
        self.total += 1
        self.by_address[address] = held + 1
        return None

    def release(self, address: str) -> None:
        self.total -= 1
        left = self.by_address[address] - 1
        if left > 0:
            self.by_address[address] = left
        else:
            del self.by_address[address]
