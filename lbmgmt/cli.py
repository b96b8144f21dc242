"""The ``lbmgmt`` command: one subcommand per daemon, plus the demo.

Each command imports what it runs when it runs, not here: ``lbmgmt --help`` and
``lbmgmt SUBCOMMAND --help`` import no asyncio, aiohttp or cryptography
(tests/unit/test_startup.py), and a daemon only its own modules (bench/startup.py).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from lbmgmt import __version__
from lbmgmt.management import script


# what the demo's ports are set with, for the setting a bind error names
DEMO_OPTIONS = {"[balancer] listen": "--udp-port", "[http] listen": "--http-port",
                "[management] listen": "--mgmt-port"}


def _add_logging(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="log more: -v info, -vv debug (default: warnings only)")
    p.add_argument("--log-format", choices=("logfmt", "json"), default="logfmt",
                   help="structured log line format on stderr (default: logfmt)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lbmgmt", description="Load balancer for media-streaming edge servers.")
    parser.add_argument("--version", action="version", version=f"lbmgmt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bal = sub.add_parser("balancer", help="run a balancer (listener)",
                         description="Take edge reports on UDP and redirect clients to the "
                                     "least-loaded edge over HTTP.")
    bal.add_argument("--config", "-c", required=True, metavar="FILE",
                     help="balancer TOML config ('lbmgmt init balancer' writes a "
                          "commented one)")
    _add_logging(bal)

    edge = sub.add_parser("edge", help="run an edge sender beside a media server",
                          description="Measure this server's load and report it to every "
                                      "balancer in the targets file.")
    edge.add_argument("--config", "-c", required=True, metavar="FILE",
                      help="edge TOML config ('lbmgmt init edge' writes a commented "
                           "one)")
    _add_logging(edge)

    demo = sub.add_parser("demo", help="a balancer and local edges on 127.0.0.1",
                          description="Start a balancer and a few edges on loopback in one "
                                      "process and print URLs to try.")
    demo.add_argument("--edges", type=int, default=3, help="number of edges (default 3)")
    demo.add_argument("--http-port", type=int, default=1935, help="balancer HTTP port")
    demo.add_argument("--udp-port", type=int, default=1934, help="balancer status port")
    demo.add_argument("--mgmt-port", type=int, default=8084,
                      help="balancer management port (edges get free ports)")
    _add_logging(demo)

    res = sub.add_parser(
        "resolve", help="print the edge URL the balancer sends a client to",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Ask the balancer where a client should go and print the edge URL, "
                    "for\nclients that follow no redirect:\n"
                    "  rtmp://  the redirect application's answer, the stream appended (an "
                    "application\n"
                    "           with redirect_on_connect = false is asked with play(STREAM))\n"
                    "  rtsp://  the DESCRIBE's 302 Location (for RTSP publishers)\n"
                    "  http(s)://LB/redirect/PATH  the 302/307 Location; "
                    "/loadbalancer[?stream=APP/NAME]\n"
                    "           the redirect= address as rtmp://ADDRESS[/APP/NAME]\n"
                    "  srt://   the stream in streamid (#!::r=live/s,m=publish, read:live/s, "
                    "publish:live/s:user:pass,\n"
                    "           play/live/s, live/s) is asked for at --via, else the URL's "
                    "host on port 1935;\n"
                    "           the URL comes back with the edge's host, its port and query "
                    "as given (the\n"
                    "           port is the edges' SRT port: the edge address's port is its "
                    "RTMP one)\n\n"
                    'ffmpeg -i "$(lbmgmt resolve rtmp://lb/redirect/stream)" …\n'
                    "ffmpeg -i \"$(lbmgmt resolve 'srt://lb:9000?streamid=read:live/s')\" …\n"
                    "Errors: one line on stderr, exit status 1.")
    res.add_argument("url", help="rtmp://HOST[:PORT]/APP/STREAM, rtsp://HOST[:PORT]/PATH "
                                 "(port 554 by default), http(s)://HOST[:PORT]/redirect/PATH or "
                                 "/loadbalancer, srt://HOST:PORT?streamid=…")
    res.add_argument("--via", metavar="HOST[:PORT]",
                     help="srt:// only: the balancer's client port to ask (default: the URL's "
                          "host, port 1935)")
    res.add_argument("--cafile", metavar="F",
                     help="https:// only: CA bundle to verify the balancer's certificate "
                          "(default: the system's)")
    res.add_argument("--insecure", action="store_true",
                     help="https:// only: do not verify the certificate (testing only)")
    res.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")

    _add_init(sub)
    script.add_parsers(sub)
    return parser


def _add_init(sub: Any) -> None:
    init = sub.add_parser("init", help="write a daemon's commented config files to start from",
                          description="Write the commented example configs (every key with "
                                      "its default) into DIR, with a fresh shared key. "
                                      "Existing files are never replaced without --force; "
                                      "files holding the key are made mode 0600.")
    daemons = init.add_subparsers(dest="daemon", required=True, metavar="DAEMON")
    bal = daemons.add_parser("balancer", help="balancer.toml",
                             description="Write balancer.toml with a new shared key (or "
                                         "--key's), then print the command that runs it.")
    edge = daemons.add_parser("edge", help="edge.toml and targets.txt",
                              description="Write edge.toml and targets.txt, whose line "
                                          "for each balancer carries the shared key: "
                                          "--key's (the balancer's), or a new one that "
                                          "the balancer must then be given.")
    for p in (bal, edge):
        p.add_argument("dir", nargs="?", default=".", metavar="DIR",
                       help="where to write (made if missing; default: .)")
        p.add_argument("--key", metavar="KEY",
                       help="the shared key to write instead of a new one; '-' reads it "
                            "from standard input (kept out of the process list)")
        p.add_argument("--force", action="store_true", help="replace files that exist")
        p.add_argument("--state-dir", metavar="DIR",
                       help="absolute directory for the "
                            + ("state file (balancer.state)" if p is bal
                               else "GUID file (edge.guid)")
                            + ", e.g. /var/lib/lbmgmt (systemd's StateDirectory); "
                              "default: the state directory ($STATE_DIRECTORY, else "
                              "$XDG_STATE_HOME/lbmgmt, else ~/.local/state/lbmgmt)")
        p.add_argument("--group", metavar="GROUP",
                       help="give the files to this group, the files holding the key "
                            "mode 0640 (the group of the service's user, e.g. lbmgmt)")
    edge.add_argument("--balancer", action="append", metavar="HOST[:PORT]",
                      help="a balancer to report to (port default 1934); repeat for each, "
                           "all with the same key (default: 127.0.0.1)")
    edge.add_argument("--address", metavar="HOST[:PORT]",
                      help="the redirect address clients are sent to (default: "
                           "${EDGE_HOST}:1935, from the environment at start)")


def run(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run, on uvloop when it is installed (pip install 'lbmgmt[fast]').

    ``LBMGMT_LOOP=asyncio`` forces asyncio's own loop, ``LBMGMT_LOOP=uvloop``
    requires uvloop (the tests run the daemons on both).
    """
    import asyncio  # (only a daemon or the demo runs a loop)

    choice = os.environ.get("LBMGMT_LOOP", "")
    if choice not in ("", "asyncio", "uvloop"):
        raise SystemExit(f"lbmgmt: LBMGMT_LOOP must be asyncio or uvloop, not {choice!r}")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise SystemExit("lbmgmt: LBMGMT_LOOP=uvloop but uvloop is not installed "
                                 "(pip install 'lbmgmt[fast]')") from None
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(main)
            return
    asyncio.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (``lbmgmt call ... | head -1``): nothing more to say, and
        # no traceback. Python would complain again flushing stdout at exit: point it at
        # /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # as a process killed by SIGPIPE: 128 + 13


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lbmgmt.logs import setup_logging  # (logging: not for --help)

    if args.command in ("call", "get", "set", "invoke", "hash-password", "new-token",
                        "new-key"):
        setup_logging(0)
        return script.run(args)
    if args.command == "init":
        from lbmgmt.scaffold import run as run_init

        return run_init(args)
    if args.command == "resolve":
        from lbmgmt.resolve import ResolveError, resolve_sync

        try:
            print(resolve_sync(args.url, timeout=args.timeout, via=args.via,
                               cafile=args.cafile, insecure=args.insecure))
        except ResolveError as exc:
            print(f"lbmgmt resolve: {exc}", file=sys.stderr)
            return 1
        return 0
    setup_logging(args.verbose, args.log_format)
    # (the daemons' errors said below; their modules come with the daemons' own)
    from lbmgmt.configfile import ConfigError
    from lbmgmt.edge.identity import GuidFileError
    from lbmgmt.endpoints import BindError

    try:
        if args.command == "balancer":
            from lbmgmt.balancer.config import load_balancer_config
            from lbmgmt.balancer.daemon import BalancerDaemon

            run(BalancerDaemon(load_balancer_config(args.config)).run())
        elif args.command == "edge":
            from lbmgmt.edge.config import load_edge_config
            from lbmgmt.edge.daemon import EdgeDaemon

            config = load_edge_config(args.config)

            async def run_edge() -> None:
                await EdgeDaemon(config).run()

            run(run_edge())
        elif args.command == "demo":
            from lbmgmt.demo import run_demo

            if not 1 <= args.edges <= 50:
                print("lbmgmt demo: --edges must be 1 to 50", file=sys.stderr)
                return 2
            run(run_demo(edges=args.edges, http_port=args.http_port,
                         udp_port=args.udp_port, mgmt_port=args.mgmt_port))
    except ConfigError as exc:
        print(f"lbmgmt {args.command}: config error: {exc}", file=sys.stderr)
        return 2
    except GuidFileError as exc:
        print(f"lbmgmt {args.command}: {exc}", file=sys.stderr)
        return 2
    except BindError as exc:  # (names the protocol, the address and the setting)
        if args.command == "demo":  # (no config file: its options)
            exc.setting = DEMO_OPTIONS.get(exc.setting, exc.setting)
        print(f"lbmgmt {args.command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            print(f"lbmgmt {args.command}: cannot bind: {exc}", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        return 130
    return 0
