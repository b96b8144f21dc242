"""/loadbalancer under load, against two baselines returning the same body.

    python -m bench.http [--seconds 4] [--connections 32]

Baselines: a bare aiohttp handler, uvicorn (httptools, uvloop) with a raw ASGI
app (``pip install -e '.[bench]'``), and the ceiling: a bare asyncio Protocol
feeding httptools and writing one constant answer (no routing, no limits). The
balancer (with 10, 1 000 and 10 000 registered edges) and the baselines run
one at a time pinned to core 0, all on uvloop, wrk on core 1; keep-alive, then
one request per connection. wrk comes from Debian's package (installed with
apt-get if missing).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.reports import fake_reports, send_all
from lbmgmt.fleet.ports import HOST, free_port, wait_port
from lbmgmt.fleet.processes import ProcessFleet, pinned

AIOHTTP = """
import sys, uvloop
from aiohttp import web
async def handler(request):
    return web.Response(text="redirect=10.0.0.1:1935", headers={"Cache-Control": "no-store",
                        "Access-Control-Allow-Origin": "*"})
app = web.Application()
app.router.add_get("/loadbalancer", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
            loop=uvloop.new_event_loop())
"""
UVICORN = """
import sys, uvicorn
BODY = b"redirect=10.0.0.1:1935"
HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store"),
           (b"access-control-allow-origin", b"*"), (b"content-length", b"22")]
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
            lifespan="off", log_level="warning", access_log=False)
"""
BARE = """
import asyncio, sys, httptools, uvloop
RESPONSE = (b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain; charset=utf-8\\r\\n"
            b"Cache-Control: no-store\\r\\nAccess-Control-Allow-Origin: *\\r\\n"
            b"Content-Length: 22\\r\\n\\r\\nredirect=10.0.0.1:1935")
class Bare(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()
    def on_message_complete(self):
        self.transport.write(RESPONSE)
        if not self.parser.should_keep_alive():
            self.transport.close()
async def main():
    server = await asyncio.get_running_loop().create_server(Bare, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
uvloop.run(main())
"""
# aiohttp and uvicorn are what one would otherwise use; "bare" (a Protocol that feeds
# httptools and writes one constant answer, no routing, no limits) is the ceiling.
BASELINES = {"aiohttp": AIOHTTP, "uvicorn": UVICORN, "bare": BARE}
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:  # a fresh machine: Debian's package lists first
        subprocess.run(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL, check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], stdout=subprocess.DEVNULL,
                       check=True)
        wrk = shutil.which("wrk")
    assert wrk is not None
    return wrk


def wrk(url: str, seconds: int, connections: int, close: bool) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms)."""
    cmd = [*pinned(1), ensure_wrk(), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if close:
        cmd += ["-H", "Connection: close"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {p: float(v) * UNITS[u] for p, v, u in
           re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    return rps, lat.get("50", float("nan")), lat.get("99", float("nan"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    ensure_wrk()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ports = {name: free_port() for name in BASELINES}
        bases = [subprocess.Popen([*pinned(0), sys.executable, "-c", code, str(ports[name])])
                 for name, code in BASELINES.items()]
        try:
            for port in ports.values():
                wait_port(port)
            for edges in (10, 1000, 10_000):
                lb = ProcessFleet(Path(tmp), verbose=False).balancer(
                    f"lb{edges}", timeout_ms=600_000, cpu=0).wait_ready()
                try:
                    send_all(lb.udp_port, fake_reports(edges), pace=20_000)
                    deadline = time.monotonic() + 30
                    while lb.attribute("ServerCount") != edges:
                        if time.monotonic() > deadline:
                            raise RuntimeError("edges not registered")
                        time.sleep(0.2)
                    for close in (False, True):
                        ours = wrk(f"http://{HOST}:{lb.http_port}/loadbalancer", args.seconds,
                                   args.connections, close)
                        base = {name: wrk(f"http://{HOST}:{port}/loadbalancer", args.seconds,
                                          args.connections, close)
                                for name, port in ports.items()}
                        rows.append((edges, "close" if close else "keep-alive", ours, base))
                finally:
                    lb.stop()
        finally:
            for proc in bases:
                proc.terminate()
                proc.wait(10)
    print(f"{'edges':>6} {'mode':<11}{'lbmgmt r/s':>11}{'aiohttp':>9}{'uvicorn':>9}{'bare':>9}"
          f"{'×aiohttp':>9}{'×uvicorn':>9}{'×bare':>7}{'p50 ms':>8}{'p99 ms':>8}")
    for edges, mode, (rps, p50, p99), base in rows:
        a, u, b = base["aiohttp"][0], base["uvicorn"][0], base["bare"][0]
        print(f"{edges:>6} {mode:<11}{rps:>11.0f}{a:>9.0f}{u:>9.0f}{b:>9.0f}{rps / a:>9.2f}"
              f"{rps / u:>9.2f}{rps / b:>7.2f}{p50:>8.2f}{p99:>8.2f}")
    print(json.dumps({"bench": "http", "seconds": args.seconds, "connections": args.connections,
                      "rows": [{"edges": e, "mode": m, "rps": round(o[0]), "p50_ms": o[1],
                                "p99_ms": o[2],
                                **{f"{n}_rps": round(r[0]) for n, r in b.items()},
                                **{f"x_{n}": round(o[0] / r[0], 3) for n, r in b.items()}}
                               for e, m, o, b in rows]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
