"""``lbmgmt init balancer|edge [DIR]``: the commented example configs, ready to run.

The templates are package data (``lbmgmt/templates/``), byte for byte the files in
``examples/`` (``tests/unit/test_init.py`` holds them equal), so a wheel carries the
configs its ``--help`` names. ``init`` fills in what the examples leave as placeholders:
the shared key (a fresh one, or the balancer's with ``--key``), the path in the "Run"
comment, and on request the edge's address, its balancers and where state lives. Each
fill-in must match its template exactly once: a template that drifts from what this
module expects is an error here, never a config written with a placeholder left in.

Nothing here logs, and no key is ever printed: the operator is told which file holds it.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import os
import re
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import tomli_w

from lbmgmt.atomicfile import write_atomically
from lbmgmt.configfile import ConfigError
from lbmgmt.edge.targets import DEFAULT_PORT as REPORT_PORT
from lbmgmt.edge.targets import parse_targets
from lbmgmt.endpoints import Endpoint, join_host_port
from lbmgmt.status.keys import SharedKey, key_problem, new_key

EXIT_USAGE = 2  # a bad argument, or a file that exists (as argparse and config errors)
EXIT_FAILED = 1  # the files could not be written

# lbmgmt/templates/, each a copy of examples/: what init balancer and init edge write
TEMPLATES = ("balancer.toml", "edge.toml", "targets.txt")
SECRET_MODE = 0o600  # a file holding the key
GROUP_SECRET_MODE = 0o640  # ... with --group: the service's group reads it, nobody else
PLAIN_MODE = 0o644
CLIENT_PORT = 1935  # (to check an --address; one without a port is written so)


class InitError(Exception):
    """Why nothing (more) was written; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


def template(name: str) -> str:
    """A packaged template's text (``lbmgmt/templates/NAME``)."""
    return resources.files("lbmgmt").joinpath("templates", name).read_text(encoding="utf-8")


def template_names() -> list[str]:
    return sorted(TEMPLATES)


@dataclass(slots=True)
class Options:
    daemon: str  # "balancer" or "edge"
    directory: Path
    force: bool = False
    key: str | None = None  # --key (for an edge, the balancer's); None: a fresh one
    balancers: list[Endpoint] = field(default_factory=list)  # edge; empty: the template's
    address: str | None = None  # edge: its redirect address; None: ${EDGE_HOST}:1935
    state_dir: Path | None = None  # absolute: the balancer's state file / the edge's GUID
    gid: int | None = None  # --group


@dataclass(frozen=True, slots=True)
class Rendered:
    name: str
    text: str
    secret: bool


def _toml_string(value: str) -> str:
    """``value`` as a TOML basic string, quoted and escaped."""
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def _substitute(text: str, name: str, pattern: str,
                replace: Callable[[re.Match[str]], str]) -> str:
    new, count = re.subn(pattern, replace, text, flags=re.MULTILINE)
    if count != 1:  # the template changed under this module: say so, write nothing
        raise InitError(f"template {name}: expected one line matching {pattern!r}, "
                        f"found {count} (lbmgmt/scaffold.py and the template disagree)",
                        EXIT_FAILED)
    return new


def _run_line(text: str, name: str, config: Path) -> str:
    """The header's ``--config examples/NAME`` names where this copy was written."""
    where = str(config.absolute())
    return _substitute(text, name, rf"(?<=--config )examples/{re.escape(name)}$",
                       lambda _: where)


def render_balancer(opts: Options, key: str) -> list[Rendered]:
    text = template("balancer.toml")
    text = _run_line(text, "balancer.toml", opts.directory / "balancer.toml")
    text = _substitute(text, "balancer.toml", r'^key = ".*"$',
                       lambda _: f"key = {_toml_string(key)}")
    if opts.state_dir is not None:
        state = str(opts.state_dir / "balancer.state")
        text = _substitute(text, "balancer.toml", r'^# state_file = ".*"$',
                           lambda _: f"state_file = {_toml_string(state)}")
    return [Rendered("balancer.toml", text, secret=True)]


def render_edge(opts: Options, key: str) -> list[Rendered]:
    text = template("edge.toml")
    text = _run_line(text, "edge.toml", opts.directory / "edge.toml")
    if opts.address is not None:  # (checked: no "$", which would start a ${VAR})
        address = opts.address
        text = _substitute(text, "edge.toml", r"^redirect_address = .*$",
                           lambda _: f"redirect_address = {_toml_string(address)}")
    if opts.state_dir is not None:
        guid = str(opts.state_dir / "edge.guid")
        text = _substitute(text, "edge.toml", r'^# guid_file = ".*"$',
                           lambda _: f"guid_file = {_toml_string(guid)}")
    targets = template("targets.txt")
    balancers = opts.balancers or [Endpoint("127.0.0.1", REPORT_PORT)]
    lines = "\n".join(_target_line(b, key) for b in balancers)
    # the one line that is not a comment: the template's balancer, with its placeholder
    targets = _substitute(targets, "targets.txt", r"^(?!#)\S.*$", lambda _: lines)
    try:  # the daemon's own reading of it
        parsed = parse_targets(targets, "targets.txt")
    except ConfigError as exc:
        raise InitError(f"template targets.txt: {exc}", EXIT_FAILED) from None
    if [t.key for t in parsed] != [SharedKey(key)] * len(balancers):
        raise InitError("template targets.txt: its lines do not read back as written",
                        EXIT_FAILED)
    return [Rendered("edge.toml", text, secret=False),
            Rendered("targets.txt", targets, secret=True)]


def _target_line(balancer: Endpoint, key: str) -> str:
    host = f"[{balancer.host}]" if ":" in balancer.host else balancer.host
    return f"{host},{balancer.port},{key}"


def _check_key(key: str) -> str:
    """A key given with --key, if both daemons read it back as given (never quoted)."""
    problem = key_problem(key)
    if problem is not None:
        raise InitError(f"--key: the key {problem}")
    try:
        parsed = parse_targets(f"lb,1,{key}")
    except ConfigError:
        parsed = []
    if key != key.strip() or [t.key for t in parsed] != [SharedKey(key)]:
        raise InitError("--key: a targets file cannot hold this key as it is (line breaks, "
                        "white space at either end, or before a '#', which starts a "
                        "comment there)")
    return key


def _existing(paths: list[Path]) -> list[Path]:
    return [p for p in paths if os.path.lexists(p)]


def _write_new(path: Path, data: bytes, mode: int, gid: int | None) -> None:
    """Create ``path`` (never over anything, not even a dangling symlink)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        if gid is not None:
            os.fchown(fd, -1, gid)
        os.fchmod(fd, mode)  # (after a chown, which may clear bits)
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)


def _write_over(path: Path, data: bytes, mode: int, gid: int | None) -> None:
    """Replace ``path`` atomically (--force), a symlink itself rather than what it points
    to: the new file has ``mode`` whatever the old one had, so a world-readable old copy
    does not leave the key readable."""
    write_atomically(path, data, mode=mode, durable=False)
    if gid is not None:
        os.chown(path, -1, gid)
        os.chmod(path, mode)  # (after a chown, which may clear bits)


def write(opts: Options) -> list[tuple[Path, Rendered, int]]:
    """Render and write ``opts.daemon``'s files; what was written, with each mode.

    Raises InitError before writing anything when a file exists (without ``force``),
    the directory is not one, or an argument is wrong.
    """
    key = new_key() if opts.key is None else _check_key(opts.key)
    rendered = render_balancer(opts, key) if opts.daemon == "balancer" else (
        render_edge(opts, key))
    paths = [opts.directory / r.name for r in rendered]
    if os.path.lexists(opts.directory) and not opts.directory.is_dir():
        raise InitError(f"{opts.directory} is not a directory")
    if not opts.force and (there := _existing(paths)):
        names = ", ".join(map(str, there))
        raise InitError(f"{names} already {'exists' if len(there) == 1 else 'exist'}; "
                        "nothing written (--force replaces "
                        f"{'it' if len(there) == 1 else 'them'})")
    try:
        opts.directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InitError(f"cannot make {opts.directory}: {exc.strerror or exc}",
                        EXIT_FAILED) from None
    umask = os.umask(0o077)  # (read: only set by a call that sets it)
    os.umask(umask)
    written = []
    for path, r in zip(paths, rendered, strict=True):
        # a key file exactly so, whatever the umask; the rest as the umask has it
        mode = PLAIN_MODE & ~umask if not r.secret else (
            SECRET_MODE if opts.gid is None else GROUP_SECRET_MODE)
        try:
            if opts.force:
                _write_over(path, r.text.encode("utf-8"), mode, opts.gid)
            else:
                _write_new(path, r.text.encode("utf-8"), mode, opts.gid)
        except FileExistsError:  # (made since the check above)
            raise InitError(f"{path} already exists; not replaced (--force replaces it)"
                            ) from None
        except OSError as exc:
            raise InitError(f"cannot write {path}: {exc.strerror or exc}",
                            EXIT_FAILED) from None
        written.append((path, r, os.stat(path).st_mode & 0o777))
    return written


def _parse_endpoint(text: str, what: str, default_port: int) -> Endpoint:
    try:
        endpoint = Endpoint.parse(text, default_port=default_port)
    except ValueError as exc:
        raise InitError(f"{what}: {exc}") from None
    if endpoint.port == 0:
        raise InitError(f"{what}: port 0 in {text.strip()!r}")
    if not endpoint.host:
        raise InitError(f"{what}: name a host, not {text.strip()!r}")
    if any(c.isspace() or not c.isprintable() or c in ",#$" for c in endpoint.host):
        raise InitError(f"{what}: not a host name or address: {endpoint.host!r}")
    return endpoint


def options_from(args: argparse.Namespace) -> Options:
    """Options from ``lbmgmt init``'s parsed arguments (raises InitError)."""
    opts = Options(daemon=args.daemon, directory=Path(args.dir), force=args.force)
    state_dir = args.state_dir
    if state_dir is not None:
        if not os.path.isabs(state_dir):
            raise InitError("--state-dir must be an absolute path (a relative one would be "
                            "read relative to the config file)")
        opts.state_dir = Path(state_dir)
    group = args.group
    if group is not None:
        try:
            opts.gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise InitError(f"--group: no group named {group!r}") from None
    key = args.key
    if key == "-":
        key = sys.stdin.readline().rstrip("\r\n")
        if not key:
            raise InitError("--key -: no key on standard input")
    opts.key = key
    if opts.daemon == "edge":
        opts.balancers = [_parse_endpoint(b, "--balancer", REPORT_PORT)
                          for b in args.balancer or ()]
        if args.address is not None:
            _parse_endpoint(args.address, "--address", CLIENT_PORT)
            opts.address = args.address.strip()
            if len(opts.address.encode()) > 255:
                raise InitError("--address: at most 255 bytes")
    return opts


def _mode(mode: int) -> str:
    return f"{mode:04o}"


def _say(text: str) -> None:
    print(textwrap.fill(text, width=88, break_long_words=False, break_on_hyphens=False))


def run(args: argparse.Namespace) -> int:
    """``lbmgmt init``: write, then say what was written and what to run next."""
    try:
        opts = options_from(args)
        written = write(opts)
    except InitError as exc:
        print(f"lbmgmt init: {exc}", file=sys.stderr)
        return exc.status
    for path, r, mode in written:
        why = "; it holds the shared key" if r.secret else ""
        print(f"wrote {path} (mode {_mode(mode)}{why})")
    config = opts.directory / f"{opts.daemon}.toml"
    if opts.daemon == "balancer":
        fresh = "a new one" if opts.key is None else "the one given"
        _say(f"The shared key ({fresh}) is [balancer] key in {config}. Each edge's "
              "targets-file line for this balancer needs the same key: lbmgmt init edge "
              "--key KEY (--key - reads it from standard input).")
        print(f"Next: lbmgmt balancer --config {config}")
        return 0
    targets = opts.directory / "targets.txt"
    where = ", ".join(join_host_port(b.host, b.port)
                      for b in opts.balancers or [Endpoint("127.0.0.1", REPORT_PORT)])
    _say(f"{targets} reports to {where} (one line per balancer: host,port,key).")
    if opts.key is None:
        _say(f"The shared key in {targets} is new: give each of those balancers the same "
              "key ([balancer] key in its config), or they drop this edge's reports as "
              "bad-auth. (lbmgmt init edge --key KEY takes a balancer's key instead.)")
    env = "" if opts.address is not None else "EDGE_HOST=edge1.example.net "
    print(f"Next: {env}lbmgmt edge --config {config}")
    return 0
