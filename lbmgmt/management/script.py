"""``lbmgmt call|get|set|invoke``: the management API from a shell.

Prints the result as JSON on stdout; on a JSON-RPC error prints the error
object as JSON on stderr and exits 1; exits 3 when the port cannot be reached
or refuses the login. Arguments are JSON where they parse as JSON (``1000``,
``true``, ``[1,2]``) and strings otherwise, so GUIDs and names need no quotes.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from lbmgmt.management import strict_json

# The rest is imported where it is used (asyncio, aiohttp for the port, cryptography for
# a key, dataclasses for an address): ``lbmgmt get --help`` needs none of it
# (tests/unit/test_startup.py).

EXIT_RPC_ERROR = 1
EXIT_UNAVAILABLE = 3


def _value(text: str) -> Any:
    """JSON if the text is JSON as the port takes it (no NaN, no Infinity, no overflow),
    else the text itself, as a string."""
    try:
        return strict_json.parse(text)
    except strict_json.NotJson:
        return text


def _address(text: str) -> str:
    """HOST:PORT (the port is required: there is no default worth guessing) or a URL."""
    if text.startswith(("http://", "https://")):
        return text
    from lbmgmt.endpoints import Endpoint  # (with dataclasses: not for --help)

    try:
        Endpoint.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{exc}: give HOST:PORT, e.g. 127.0.0.1:8084 (a balancer's default) or "
            f"127.0.0.1:8085 (an edge's), or a URL") from None
    return text


def _connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("address", metavar="HOST:PORT", type=_address,
                   help="management port, e.g. 127.0.0.1:8084 (or its URL)")
    p.add_argument("--user", "-u", help="user name (HTTP Basic); the password is asked "
                                        "for on a terminal unless given otherwise")
    p.add_argument("--password-file", metavar="F",
                   help="file holding the password (or set LBMGMT_PASSWORD)")
    p.add_argument("--token-file", metavar="F",
                   help="file holding a bearer token (or set LBMGMT_TOKEN)")
    p.add_argument("--tls", action="store_true", help="use HTTPS")
    p.add_argument("--cafile", metavar="F", help="CA bundle to verify the port's certificate")
    p.add_argument("--insecure", action="store_true",
                   help="do not verify the certificate (testing only)")


def add_parsers(sub: Any) -> None:
    call = sub.add_parser("call", help="call any management JSON-RPC method",
                          description="Call a JSON-RPC method of a daemon's management port.")
    _connection_args(call)
    call.add_argument("method", help="e.g. queryNames, getMBeanInfo, pollNotifications "
                                     "(rpc.discover lists them all)")
    call.add_argument("args", nargs="*", metavar="PARAM",
                      help="params by position (each JSON, or a plain string), or all by "
                           "name as name=value (e.g. since=0 timeout=30)")
    call.add_argument("--params", metavar="JSON",
                      help="the params as one JSON object (by name) or array (by position), "
                           "instead of PARAM")

    get = sub.add_parser("get", help="read attributes of an MBean",
                         description="Read one, several or (none named) all attributes.")
    _connection_args(get)
    get.add_argument("mbean", help="object name, e.g. lbmgmt:type=Balancer")
    get.add_argument("attributes", nargs="*", metavar="ATTR",
                     help="attribute names, e.g. ServerCount (none: every readable one)")

    set_ = sub.add_parser("set", help="set a writable attribute")
    _connection_args(set_)
    set_.add_argument("mbean", help="object name, e.g. lbmgmt:type=Balancer")
    set_.add_argument("attribute", help="a writable attribute, e.g. MessageTimeout")
    set_.add_argument("value", help="the new value: JSON (5000, true, \"text\") or a plain "
                                    "string")

    inv = sub.add_parser("invoke", help="invoke an MBean operation")
    _connection_args(inv)
    inv.add_argument("mbean", help="object name, e.g. lbmgmt:type=Balancer")
    inv.add_argument("operation", help="e.g. listServers, drainServer (getMBeanInfo lists "
                                       "them with their parameters)")
    inv.add_argument("args", nargs="*", metavar="ARG",
                     help="the operation's params in order (each JSON, or a plain string)")

    sub.add_parser("hash-password", help="hash a password for a credentials file",
                   description="Reads a password (prompted, or one line on stdin) and prints "
                               "the scrypt hash for a [users.NAME] password entry.")
    sub.add_parser("new-key", help="print a strong shared key for balancers and edges",
                   description="Prints a new random shared key (32 characters, 192 bits): "
                               "the balancer's [balancer] key (or its key_file) and the third "
                               "field of the edges' targets-file line for it.")
    sub.add_parser("new-token", help="make a bearer token for a credentials file",
                   description="Prints a new random token (give it to the client) and the "
                               "token_sha256 line for the credentials file.")


def _secret(path: str | None, env: str) -> str | None:
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return os.environ.get(env)


def run(args: argparse.Namespace) -> int:
    if args.command == "hash-password":
        from lbmgmt.management.auth import hash_password

        if sys.stdin.isatty():
            typed = getpass.getpass("password: ")
            if getpass.getpass("again: ") != typed:
                print("lbmgmt: passwords differ", file=sys.stderr)
                return 2
        else:
            typed = sys.stdin.readline().rstrip("\n")
        if not typed:
            print("lbmgmt: empty password", file=sys.stderr)
            return 2
        print(f'password = "{hash_password(typed)}"')
        return 0
    if args.command == "new-key":
        from lbmgmt.status.keys import new_key

        print(new_key())
        return 0
    if args.command == "new-token":
        from lbmgmt.management.auth import hash_token, new_token

        fresh = new_token()
        print(f"token: {fresh}")
        print(f'token_sha256 = "{hash_token(fresh)}"')
        return 0
    try:
        password = _secret(args.password_file, "LBMGMT_PASSWORD")
        token = _secret(args.token_file, "LBMGMT_TOKEN")
    except OSError as exc:
        print(f"lbmgmt: {exc}", file=sys.stderr)
        return 2
    if args.user is not None and password is None and token is None:
        if not sys.stdin.isatty():
            print(f"lbmgmt: --user {args.user} needs a password: --password-file, "
                  "LBMGMT_PASSWORD, or run it on a terminal to be asked", file=sys.stderr)
            return 2
        password = getpass.getpass(f"password for {args.user}: ")
    try:
        params = _params(args)
    except ValueError as exc:
        print(f"lbmgmt: {exc}", file=sys.stderr)
        return 2
    import asyncio

    return asyncio.run(_call(args, params, password, token))


NAMED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.S)


def _params(args: argparse.Namespace) -> Any:
    """``call``'s params: --params JSON, all name=value (by name), or by position."""
    if args.command != "call":
        return None
    if getattr(args, "params", None) is not None:
        if args.args:
            raise ValueError("give the params either as --params or as PARAMs, not both")
        try:
            given = json.loads(args.params)
        except ValueError as exc:
            raise ValueError(f"--params is not JSON: {exc}") from None
        if not isinstance(given, dict | list):
            raise ValueError("--params must be a JSON object (by name) or array (by position)")
        return given
    named = [NAMED.fullmatch(a) for a in args.args]
    if args.args and all(named):
        return {m.group(1): _value(m.group(2)) for m in named if m}
    if any(named):  # some by name, some by position: say so rather than guess
        first = next(a for a, m in zip(args.args, named, strict=True) if m)
        raise ValueError(f"{first!r} looks like a param by name, others are by position: "
                         "give all as name=value, or use --params (a string with '=' by "
                         "position: quote it as JSON, '\"a=b\"')")
    return [_value(a) for a in args.args] or None


async def _call(args: argparse.Namespace, call_params: Any, password: str | None,
                token: str | None) -> int:
    from lbmgmt.management.client import ManagementClient, ManagementUnavailable, RpcError

    method: str
    params: Any
    if args.command == "call":
        method, params = args.method, call_params
    elif args.command == "get":
        if len(args.attributes) == 1:
            method, params = "getAttribute", [args.mbean, args.attributes[0]]
        else:
            method, params = "getAttributes", [args.mbean, args.attributes or None]
    elif args.command == "set":
        method, params = "setAttribute", [args.mbean, args.attribute, _value(args.value)]
    else:
        method, params = "invoke", [args.mbean, args.operation, [_value(a) for a in args.args]]
    async with ManagementClient(args.address, user=args.user, password=password, token=token,
                                tls=args.tls, cafile=args.cafile, insecure=args.insecure,
                                timeout=70) as client:
        try:
            result = await client.call(method, params)
        except RpcError as exc:
            print(json.dumps(exc.to_json()), file=sys.stderr)
            return EXIT_RPC_ERROR
        except ManagementUnavailable as exc:
            print(f"lbmgmt: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
    print(json.dumps(result, indent=2))
    return 0
