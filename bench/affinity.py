"""Origin pulls and load spread: stream-affinity against least-load, in the same run.

    python -m bench.affinity [--edges 20] [--streams 200] [--viewers 10000]
                             [--seconds 10] [--seeds 5] [--zipf 1.0]
                             [--scale 2000 10000]

A simulated fleet of pull edges driven through the real ``BalancerCore`` with
time by hand: ``--viewers`` viewers arrive over ``--seconds`` (uniformly), each
watching one of ``--streams`` streams drawn with Zipf-distributed popularity
(exponent ``--zipf``); every edge reports every 2.5 s (phases staggered) its load
(viewers connected: a viewer connects 0.2 s after its redirect) and the streams it
carries, most watched first, as an edge would (sealed datagrams, ``wire.fit``).

Origin pulls are the edges per stream, summed (an edge pulls each stream it serves
once); max/mean is the most loaded edge's viewers over the mean. Each seed runs
both redirectors on the same arrivals. Issue 16's targets: pulls at most 0.35 ×
least-load's, max/mean at most 1.25. Also the cost of one choice, named stream
against none (µs, best of 3), and with ``--scale`` at large fleets: a stream every edge
carries, new names, an edge joining and leaving.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import random
import statistics
import time
import uuid
from collections import Counter, defaultdict

from lbmgmt.balancer.core import BalancerCore
from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey
from lbmgmt.status.wire import MAX_STREAMS, fit
from lbmgmt.streams import stream_key

KEY = SharedKey("bench-affinity")
INTERVAL = 2.5
CONNECT_DELAY = 0.2
WALL0 = 1_800_000_000.0


def arrivals(rng: random.Random, viewers: int, streams: int, seconds: float,
             zipf: float) -> list[tuple[float, str]]:
    weights = list(itertools.accumulate(1 / (rank ** zipf) for rank in range(1, streams + 1)))
    times = sorted(rng.uniform(0, seconds) for _ in range(viewers))
    return [(t, f"live/s{bisect.bisect(weights, rng.random() * weights[-1])}")
            for t in times]


def run(redirector: str, plan: list[tuple[float, str]], edges: int,
        seed: int) -> tuple[int, float, float]:
    """(origin pulls, max/mean load, µs per choice) of one redirector on ``plan``."""
    rng = random.Random(seed)
    core = BalancerCore(KEY, timeout=10.0, grace=0.5, max_clock_skew=30.0,
                        redirector=redirector)
    core.redirector.rng = random.Random(seed)
    sealers = [ReportSealer(uuid.UUID(int=rng.getrandbits(128))) for _ in range(edges)]
    phase = [rng.uniform(0, INTERVAL) for _ in range(edges)]
    viewers: list[Counter[str]] = [Counter() for _ in range(edges)]  # connected
    connecting: list[tuple[float, int, str]] = []  # (when, edge, stream)
    by_address = {f"edge{i}.example:1935": i for i in range(edges)}

    def report(i: int, now: float) -> None:
        carried = tuple(stream_key(name) for name, _ in viewers[i].most_common(MAX_STREAMS))
        r = fit(Report(EdgeState.RUNNING, f"edge{i}.example:1935",
                       load=float(sum(viewers[i].values())), interval_ms=int(INTERVAL * 1000),
                       streams=carried or None))
        core.receive_datagram(sealers[i].seal(r, KEY, now=WALL0 + now), now=now,
                              wall=WALL0 + now, source=("127.0.0.1", 20000 + i))

    for i in range(edges):
        report(i, 0.0)
    next_report = [p for p in phase]
    spent = 0.0
    for t, stream in plan:
        while connecting and connecting[0][0] <= t:
            _, i, name = connecting.pop(0)
            viewers[i][name] += 1
        for i in range(edges):
            while next_report[i] <= t:
                report(i, next_report[i])
                next_report[i] += INTERVAL
        start = time.perf_counter()
        entry = core.redirect("http", t, stream=stream)
        spent += time.perf_counter() - start
        assert entry is not None
        connecting.append((t + CONNECT_DELAY, by_address[entry.address], stream))
    for _, i, name in connecting:
        viewers[i][name] += 1
    pulls = sum(len(v) for v in viewers)
    loads = [sum(v.values()) for v in viewers]
    return pulls, max(loads) / statistics.mean(loads), spent / len(plan) * 1e6


def choice_cost(edges: int, named: bool, rounds: int = 20_000) -> float:
    """µs per redirect on a steady pool, stream named or not (stream-affinity)."""
    core = BalancerCore(KEY, timeout=10.0, grace=0.5, max_clock_skew=30.0,
                        redirector="stream-affinity")
    for i in range(edges):
        sealer = ReportSealer(uuid.uuid4())
        r = Report(EdgeState.RUNNING, f"edge{i}.example:1935", load=100.0,
                   interval_ms=2500, streams=tuple(stream_key(f"live/s{j}")
                                                   for j in range(i, i + 10)))
        core.receive_datagram(sealer.seal(r, KEY, now=WALL0), now=0.0, wall=WALL0,
                              source=("127.0.0.1", 20000 + i))
    names = [f"live/s{j}" for j in range(200)]
    start = time.perf_counter()
    for n in range(rounds):
        core.redirect("http", 0.0, stream=names[n % 200] if named else None)
    return (time.perf_counter() - start) / rounds * 1e6


def at_scale(edges: int, rounds: int = 2000) -> dict[str, float]:
    """µs per choice at ``edges`` edges, for a stream every edge carries and for new
    names, and ms for one edge joining (its ring points going in) and leaving."""
    core = BalancerCore(KEY, timeout=10.0, grace=0.5, max_clock_skew=30.0,
                        redirector="stream-affinity")
    hot = (stream_key("live/hot"),)

    def join(i: int, state: EdgeState = EdgeState.RUNNING) -> None:
        sealer = ReportSealer(uuid.UUID(int=i + 1))
        r = Report(state, f"edge{i}.example:1935", load=100.0, interval_ms=2500,
                   streams=hot)
        core.receive_datagram(sealer.seal(r, KEY, now=WALL0), now=0.0, wall=WALL0,
                              source=("127.0.0.1", 20000))
    for i in range(edges):
        join(i)
    out = {}
    for label, names in (("hot stream, us", ["live/hot"]),
                         ("new names, us", [f"live/new{n}" for n in range(rounds)])):
        start = time.perf_counter()
        for n in range(rounds):
            core.redirect("http", 0.0, stream=names[n % len(names)])
        out[label] = (time.perf_counter() - start) / rounds * 1e6
    start = time.perf_counter()
    join(edges)
    out["join, ms"] = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    join(edges, EdgeState.STOPPING)
    out["leave, ms"] = (time.perf_counter() - start) * 1000
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edges", type=int, default=20)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--viewers", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--scale", type=int, nargs="*", default=[],
                        help="also the cost at these fleet sizes (e.g. 2000 10000)")
    args = parser.parse_args()
    print(f"{args.edges} edges, {args.streams} streams (Zipf {args.zipf}), "
          f"{args.viewers} viewers over {args.seconds:g} s")
    print(f"{'seed':>4}  {'least-load pulls':>16}  {'affinity pulls':>14}  {'ratio':>6}  "
          f"{'max/mean ll':>11}  {'max/mean aff':>12}")
    ratios, spreads = [], []
    for seed in range(1, args.seeds + 1):
        plan = arrivals(random.Random(seed), args.viewers, args.streams, args.seconds,
                        args.zipf)
        ll = run("concurrent-connects", plan, args.edges, seed)
        aff = run("stream-affinity", plan, args.edges, seed)
        ratios.append(aff[0] / ll[0])
        spreads.append(aff[1])
        print(f"{seed:>4}  {ll[0]:>16}  {aff[0]:>14}  {aff[0] / ll[0]:>6.3f}  "
              f"{ll[1]:>11.3f}  {aff[1]:>12.3f}")
    print(f"worst: pulls {max(ratios):.3f} x least-load's (target <= 0.35), "
          f"max/mean {max(spreads):.3f} (target <= 1.25)")
    costs = defaultdict(list)
    for _ in range(3):
        for named in (False, True):
            costs[named].append(choice_cost(args.edges, named))
    print(f"one choice, {args.edges} edges: no stream {min(costs[False]):.2f} µs, "
          f"stream named {min(costs[True]):.2f} µs (best of 3)")
    for edges in args.scale:
        figures = at_scale(edges)
        print(f"{edges} edges: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
