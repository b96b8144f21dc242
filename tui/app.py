"""Entry point of ``lb-console``.

The console attaches to a daemon's JSON-RPC management port; that port is
not built yet, so for now this says so instead of pretending.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lb-console",
        description="Terminal console for lbmgmt daemons (not built yet).")
    parser.add_argument("address", nargs="*", metavar="HOST:PORT",
                        help="management port of a balancer or edge")
    parser.parse_args(argv)
    print("lb-console: the console is not built yet; it needs the management port "
          "(JSON-RPC), which comes with a later release.", file=sys.stderr)
    return 1
