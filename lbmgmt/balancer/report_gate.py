"""Which datagrams on the report port get crypto work, sans-IO.

Opening a datagram costs a key derivation and an AES-GCM check; a flood of keyless
datagrams would spend the balancer's CPU on them while the kernel drops genuine
reports with the rest. ``ReportGate`` decides before any of that, from the source
address alone:

- a source (address and port: an edge sends from one socket per balancer) that sent
  a good report within ``TRUSTED_FOR`` is always let through: the edges are served
  first, whatever else comes, even from their own hosts;
- any other source spends a token of its host's bucket per datagram that fails to
  open (``RATE`` a second, ``BURST`` at once): a misconfigured edge (one bad report per
  interval) never runs dry and keeps being said; a flooding host does, and its
  datagrams are then dropped before any crypto, counted as ``throttled``;
- and all such hosts share one more bucket (``SHARED_RATE``), so that many flooding
  hosts cost no more than a few.

A datagram whose header names a sender the receiver has opened lately (its cipher is
cached) is let through too (``ReportReceiver.knows``): it costs one AES-GCM check and no
key derivation, so an edge whose source changed (a restart of its socket) is not locked
out by a flood. Any datagram that costs crypto and is then dropped (bad-auth, stale,
replay, a payload that does not decode) is charged to its host.

Memory is bounded: at most ``MAX_TRUSTED`` sources and ``MAX_HOSTS`` hosts, the least
recently seen forgotten first. ``now`` is passed in (monotonic seconds).
"""

from __future__ import annotations

from collections import OrderedDict

TRUSTED_FOR = 60.0  # seconds a good report vouches for its host
RATE = 5.0  # failed datagrams a second one untrusted host may cost
BURST = 20.0
SHARED_RATE = 200.0  # ... and all untrusted hosts together
SHARED_BURST = 400.0
MAX_HOSTS = 4096  # flooding hosts remembered
MAX_TRUSTED = 65_536  # edges' sources remembered (a fleet's worth, and more)


class _Bucket:
    __slots__ = ("tokens", "at")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens, self.at = tokens, at

    def refill(self, now: float, rate: float, burst: float) -> float:
        if now > self.at:
            self.tokens = min(burst, self.tokens + (now - self.at) * rate)
            self.at = now
        return self.tokens


class ReportGate:
    def __init__(self) -> None:
        self._trusted: OrderedDict[tuple[str, int], float] = OrderedDict()  # → last good
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._shared = _Bucket(SHARED_BURST, 0.0)
        self.throttled = 0

    def admit(self, source: tuple[str, int], now: float) -> bool:
        """Worth opening? False: drop it now (the caller counts it as throttled)."""
        seen = self._trusted.get(source)
        if seen is not None and now - seen <= TRUSTED_FOR:
            return True
        bucket = self._buckets.get(source[0])
        if bucket is not None and bucket.refill(now, RATE, BURST) < 1:
            self.throttled += 1
            return False
        if self._shared.refill(now, SHARED_RATE, SHARED_BURST) < 1:
            self.throttled += 1
            return False
        return True

    def good(self, source: tuple[str, int], now: float) -> None:
        """A report from ``source`` opened: it is trusted for ``TRUSTED_FOR``."""
        trusted = self._trusted
        if source in trusted:
            trusted.move_to_end(source)
        trusted[source] = now
        if len(trusted) > MAX_TRUSTED:
            trusted.popitem(last=False)

    def prune(self, now: float) -> None:
        """Forget sources no longer trusted and hosts whose buckets are full again: both
        kept least recently seen first, so O(forgotten)."""
        trusted = self._trusted
        while trusted:
            source, seen = next(iter(trusted.items()))
            if now - seen <= TRUSTED_FOR:
                break
            del trusted[source]
        buckets = self._buckets
        while buckets:
            host, bucket = next(iter(buckets.items()))
            if now - bucket.at < BURST / RATE:
                break
            del buckets[host]

    def __len__(self) -> int:
        return len(self._trusted) + len(self._buckets)

    def bad(self, source: tuple[str, int], now: float) -> None:
        """A datagram from ``source`` did not open: a token of its host's, and the shared."""
        seen = self._trusted.get(source)
        if seen is not None and now - seen <= TRUSTED_FOR:
            return  # (an edge's own socket: not a flood)
        host = source[0]
        bucket = self._buckets.get(host)
        if bucket is None:
            bucket = self._buckets[host] = _Bucket(BURST, now)
            if len(self._buckets) > MAX_HOSTS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(host)
            bucket.refill(now, RATE, BURST)
        bucket.tokens -= 1
        self._shared.refill(now, SHARED_RATE, SHARED_BURST)
        self._shared.tokens -= 1
