"""The operator's kit: ``lbmgmt init``, its packaged templates, the systemd units, and the
messages docs/operations.md quotes.

``lbmgmt init`` runs in-process (``lbmgmt.cli.main``); what it writes is loaded by the
daemons' own config loaders. The units are checked by ``systemd-analyze`` where the machine
has it (skipped where not: nothing here installs systemd).
"""

from __future__ import annotations

import ast
import fnmatch
import grp
import io
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from lbmgmt import scaffold
from lbmgmt.balancer.config import load_balancer_config
from lbmgmt.cli import main
from lbmgmt.edge.config import load_edge_config
from lbmgmt.edge.targets import load_targets
from lbmgmt.status import SharedKey
from lbmgmt.status.keys import PLACEHOLDER_KEYS
from lbmgmt.statedir import default_file, state_directory

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"
UNITS = EXAMPLES / "systemd"


def init(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["init", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def balancer_key(path: Path) -> str:
    return tomllib.loads(path.read_text())["balancer"]["key"]


def targets_keys(path: Path) -> list[str]:
    return [line.split(",", 2)[2] for line in path.read_text().splitlines()
            if line and not line.startswith("#")]


@pytest.fixture
def edge_host(monkeypatch):
    monkeypatch.setenv("EDGE_HOST", "edge1.example.net")


@pytest.fixture(autouse=True)
def usual_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


# -- the templates: package data, and the examples byte for byte -----------------------

@pytest.mark.parametrize("name", scaffold.template_names())
def test_each_packaged_template_is_its_example_byte_for_byte(name):
    packaged = resources.files("lbmgmt").joinpath("templates", name).read_bytes()
    assert packaged == (EXAMPLES / name).read_bytes(), (
        f"examples/{name} and lbmgmt/templates/{name} differ: the template is what "
        f"'lbmgmt init' writes; copy the example over it (cp examples/{name} "
        f"lbmgmt/templates/{name})")


def test_the_templates_are_package_data_in_the_wheel():
    """What the build puts in the wheel: every template matches pyproject's package-data
    (a template not matched would be reachable here, from the tree, and missing from a
    wheel)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = project["tool"]["setuptools"]["package-data"]["lbmgmt"]
    packaged = resources.files("lbmgmt").joinpath("templates")
    names = sorted(p.name for p in packaged.iterdir() if p.is_file())
    assert names == scaffold.template_names()
    for name in names:
        assert any(fnmatch.fnmatch(f"templates/{name}", g) for g in globs), (name, globs)


def test_a_template_that_drifted_is_an_error_not_a_config_with_a_placeholder(
        tmp_path, capsys, monkeypatch):
    real = scaffold.template
    monkeypatch.setattr(scaffold, "template",
                        lambda name: real(name).replace('\nkey = "', '\n# key = "'))
    status, out, err = init(capsys, "balancer", str(tmp_path))
    assert status == 1 and "template balancer.toml" in err and "found 0" in err
    assert list(tmp_path.iterdir()) == []


# -- init balancer ---------------------------------------------------------------------

def test_init_balancer_writes_a_config_that_loads_with_a_fresh_key(tmp_path, capsys):
    status, out, err = init(capsys, "balancer", str(tmp_path))
    assert status == 0 and err == ""
    path = tmp_path / "balancer.toml"
    config = load_balancer_config(path)
    key = balancer_key(path)
    assert config.key == SharedKey(key) and not config.key.is_placeholder
    assert len(key) >= 32 and key not in out  # the operator is told where, never what
    assert mode(path) == 0o600
    # in the state directory by default, never beside the config
    assert config.state_file == default_file(tmp_path / "balancer.toml", ".state")
    assert config.state_file.parent == state_directory()
    assert f"wrote {path} (mode 0600" in out
    assert f"Next: lbmgmt balancer --config {path}" in out
    # the header says how to run this copy, not the example
    assert f"# Run: lbmgmt balancer --config {path.absolute()}\n" in path.read_text()
    again = tmp_path / "again"
    assert init(capsys, "balancer", str(again))[0] == 0
    assert balancer_key(again / "balancer.toml") != key


def test_init_writes_into_the_current_directory_by_default(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, _ = init(capsys, "balancer")
    assert status == 0 and (tmp_path / "balancer.toml").exists()
    assert "Next: lbmgmt balancer --config balancer.toml" in out


def test_init_balancer_with_a_state_dir_and_a_given_key(tmp_path, capsys, monkeypatch):
    key = "k3y-0f-the-first-balancer-0123456"
    monkeypatch.setattr(sys, "stdin", io.StringIO(key + "\n"))
    status, out, err = init(capsys, "balancer", str(tmp_path), "--key", "-",
                            "--state-dir", "/var/lib/lbmgmt")
    assert status == 0, err
    config = load_balancer_config(tmp_path / "balancer.toml")
    assert config.key == SharedKey(key) and key not in out + err
    assert config.state_file == Path("/var/lib/lbmgmt/balancer.state")


# -- init edge -------------------------------------------------------------------------

def test_init_edge_with_the_balancers_key_loads_and_the_keys_match(tmp_path, capsys,
                                                                   edge_host):
    assert init(capsys, "balancer", str(tmp_path / "lb"))[0] == 0
    key = balancer_key(tmp_path / "lb" / "balancer.toml")
    status, out, err = init(capsys, "edge", str(tmp_path / "edge"), "--key", key)
    assert status == 0 and err == "" and key not in out
    edge = load_edge_config(tmp_path / "edge" / "edge.toml")
    assert edge.redirect_address == "edge1.example.net:1935"
    assert edge.guid_file == default_file(tmp_path / "edge" / "edge.toml", ".guid")
    targets = load_targets(edge.targets_file)
    balancer = load_balancer_config(tmp_path / "lb" / "balancer.toml")
    assert [(t.host, t.port) for t in targets] == [("127.0.0.1", 1934)]
    assert targets[0].key == balancer.key
    assert mode(tmp_path / "edge" / "targets.txt") == 0o600
    assert mode(tmp_path / "edge" / "edge.toml") == 0o644  # no key in it
    assert "is new" not in out  # the key was given: nothing for the balancer to learn
    assert f"Next: EDGE_HOST=edge1.example.net lbmgmt edge --config {tmp_path}/edge/edge.toml" \
        in out


def test_init_edge_without_a_key_makes_one_and_says_where_it_is(tmp_path, capsys, edge_host):
    status, out, err = init(capsys, "edge", str(tmp_path))
    assert status == 0 and err == ""
    (key,) = targets_keys(tmp_path / "targets.txt")
    assert key not in PLACEHOLDER_KEYS and len(key) >= 32
    assert load_targets(tmp_path / "targets.txt")[0].key == SharedKey(key)
    assert key not in out
    said = " ".join(out.split())
    assert f"The shared key in {tmp_path}/targets.txt is new" in said
    assert "[balancer] key" in said


def test_init_edge_with_balancers_address_and_state_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EDGE_HOST", raising=False)  # the address is written in: not needed
    key = "a-key-for-both-balancers-0123456789"
    status, out, err = init(capsys, "edge", str(tmp_path), "--key", key,
                            "--balancer", "lb1.example.net", "--balancer", "[2001:db8::5]:1999",
                            "--address", "edge7.example.net:8080",
                            "--state-dir", "/var/lib/lbmgmt")
    assert status == 0, err
    edge = load_edge_config(tmp_path / "edge.toml")
    assert edge.redirect_address == "edge7.example.net:8080"
    assert edge.guid_file == Path("/var/lib/lbmgmt/edge.guid")
    targets = load_targets(edge.targets_file)
    assert [(t.host, t.port, t.key) for t in targets] == [
        ("lb1.example.net", 1934, SharedKey(key)), ("2001:db8::5", 1999, SharedKey(key))]
    assert f"Next: lbmgmt edge --config {tmp_path}/edge.toml" in out


def test_group_makes_the_key_files_readable_by_that_group_alone(tmp_path, capsys):
    group = grp.getgrgid(os.getgid()).gr_name
    assert init(capsys, "edge", str(tmp_path), "--group", group)[0] == 0
    targets = (tmp_path / "targets.txt").stat()
    assert stat.S_IMODE(targets.st_mode) == 0o640 and targets.st_gid == os.getgid()
    assert (tmp_path / "edge.toml").stat().st_gid == os.getgid()


def test_a_strict_umask_leaves_the_key_file_0600_and_the_rest_private(tmp_path, capsys):
    os.umask(0o077)
    assert init(capsys, "edge", str(tmp_path))[0] == 0
    assert mode(tmp_path / "targets.txt") == 0o600
    assert mode(tmp_path / "edge.toml") == 0o600


# -- never over a file, unless --force -------------------------------------------------

def test_init_refuses_to_overwrite_and_names_the_file(tmp_path, capsys):
    (tmp_path / "balancer.toml").write_text("# mine\n")
    status, out, err = init(capsys, "balancer", str(tmp_path))
    assert status == 2 and out == ""
    assert f"lbmgmt init: {tmp_path}/balancer.toml already exists" in err
    assert "--force" in err
    assert (tmp_path / "balancer.toml").read_text() == "# mine\n"


def test_init_edge_writes_nothing_when_one_of_its_files_exists(tmp_path, capsys):
    (tmp_path / "targets.txt").write_text("# mine\n")
    status, _, err = init(capsys, "edge", str(tmp_path))
    assert status == 2 and "targets.txt already exists" in err
    assert not (tmp_path / "edge.toml").exists()  # not half a kit
    assert (tmp_path / "targets.txt").read_text() == "# mine\n"


def test_init_never_writes_through_a_symlink(tmp_path, capsys):
    (tmp_path / "elsewhere").write_text("# not yours\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "balancer.toml").symlink_to(tmp_path / "elsewhere")
    assert init(capsys, "balancer", str(tmp_path / "dir"))[0] == 2
    (tmp_path / "dir" / "balancer.toml").unlink()
    (tmp_path / "dir" / "balancer.toml").symlink_to(tmp_path / "nowhere")  # dangling
    assert init(capsys, "balancer", str(tmp_path / "dir"))[0] == 2
    assert not (tmp_path / "nowhere").exists()


def test_force_replaces_with_a_new_key_and_the_secret_mode(tmp_path, capsys):
    assert init(capsys, "balancer", str(tmp_path))[0] == 0
    path = tmp_path / "balancer.toml"
    old = balancer_key(path)
    path.chmod(0o644)  # an old copy left world-readable
    status, out, err = init(capsys, "balancer", str(tmp_path), "--force")
    assert status == 0, err
    assert balancer_key(path) != old and mode(path) == 0o600
    load_balancer_config(path)
    assert [p.name for p in tmp_path.iterdir()] == ["balancer.toml"]  # no temporary left


def test_force_keeps_the_umask_for_the_file_without_a_key(tmp_path, capsys):
    os.umask(0o077)
    assert init(capsys, "edge", str(tmp_path))[0] == 0
    assert init(capsys, "edge", str(tmp_path), "--force")[0] == 0
    assert mode(tmp_path / "edge.toml") == 0o600 and mode(tmp_path / "targets.txt") == 0o600


def test_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    status, _, err = init(capsys, "balancer", str(tmp_path / "f"))
    assert status == 2 and "is not a directory" in err


# -- bad arguments: refused, exit 2, the key never echoed ------------------------------

@pytest.mark.parametrize("argv, said", [
    (["--key", "short-s3cret"], "the key is 12 characters long"),
    (["--key", "sixteen-chars-s3cret #comment"], "a targets file cannot hold this key"),
    (["--key", " leading-space-s3cret-0123"], "a targets file cannot hold this key"),
    (["--state-dir", "var/lib/lbmgmt"], "--state-dir must be an absolute path"),
    (["--group", "no-such-group-here"], "--group: no group named"),
    (["--balancer", "*:1934"], "--balancer: name a host"),
    (["--balancer", "lb1:0"], "--balancer: port 0"),
    (["--balancer", "2001:db8::1"], "--balancer: IPv6 address must be written [addr]:port"),
    (["--address", "edge 1"], "--address: not a host name or address"),
], ids=["short-key", "key-with-comment", "key-with-space", "relative-state-dir",
        "unknown-group", "wildcard-balancer", "port-0", "bare-v6", "space-in-address"])
def test_bad_arguments_are_refused_and_keys_never_echoed(tmp_path, capsys, argv, said):
    status, out, err = init(capsys, "edge", str(tmp_path), *argv)
    assert status == 2 and said in err and out == ""
    assert "s3cret" not in err
    assert list(tmp_path.iterdir()) == []


def test_key_from_empty_stdin_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    status, _, err = init(capsys, "edge", str(tmp_path), "--key", "-")
    assert status == 2 and "no key on standard input" in err


# -- the systemd units -----------------------------------------------------------------

def unit_settings(path: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file (sections merged; repeated keys in order)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def stop_bound(path: Path, cls: str) -> float:
    """The longest ``cls.stop()`` may take: its ``stop_step`` calls, each at most
    STOP_STEP_TIMEOUT times its ``steps``."""
    from lbmgmt.httpserve import STOP_STEP_TIMEOUT

    tree = ast.parse(path.read_text())
    (stop,) = [f for c in tree.body if isinstance(c, ast.ClassDef) and c.name == cls
               for f in c.body if isinstance(f, ast.AsyncFunctionDef) and f.name == "stop"]
    steps = 0
    for node in ast.walk(stop):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "stop_step":
            given = [k.value for k in node.keywords if k.arg == "steps"]
            steps += given[0].value if given and isinstance(given[0], ast.Constant) else 1
    assert steps
    return steps * STOP_STEP_TIMEOUT


@pytest.mark.parametrize("daemon, cls", [("balancer", "BalancerDaemon"),
                                         ("edge", "EdgeDaemon")])
def test_units_are_hardened_and_fit_the_daemons(daemon, cls):
    unit = unit_settings(UNITS / f"lbmgmt-{daemon}.service")
    assert unit["ExecStart"] == [
        f"/opt/lbmgmt/bin/lbmgmt {daemon} --config /etc/lbmgmt/{daemon}.toml"]
    for key, value in {"User": "lbmgmt", "ConfigurationDirectory": "lbmgmt",
                       "StateDirectory": "lbmgmt", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
                       "CapabilityBoundingSet": "", "AmbientCapabilities": "",
                       "Restart": "on-failure", "RestartPreventExitStatus": "2",
                       "KillSignal": "SIGTERM"}.items():
        assert unit[key] == [value], key
    assert unit["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX AF_NETLINK"]
    # above the sum of the bounded stop steps, so systemd never SIGKILLs a clean stop
    timeout = float(unit["TimeoutStopSec"][0].removesuffix("s"))
    assert timeout > stop_bound(ROOT / "lbmgmt" / daemon / "daemon.py", cls)
    # the paths the unit's comments give --state-dir are its StateDirectory
    assert "--state-dir /var/lib/lbmgmt" in (UNITS / f"lbmgmt-{daemon}.service").read_text()
    if daemon == "balancer":
        assert int(unit["LimitNOFILE"][0]) >= 65536
        assert "ExecReload" not in unit  # no SIGHUP handler: a reload would kill it
    else:
        assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # re-reads targets


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.fixture
def runnable_units(tmp_path):
    """The units with ExecStart pointing at this checkout's lbmgmt (verify checks that
    the program exists)."""
    lbmgmt = Path(sys.executable).with_name("lbmgmt")
    if not lbmgmt.exists():
        pytest.skip("no lbmgmt console script beside this Python")
    paths = []
    for unit in sorted(UNITS.glob("*.service")):
        text = unit.read_text().replace("/opt/lbmgmt/bin/lbmgmt", str(lbmgmt))
        (tmp_path / unit.name).write_text(text)
        paths.append(tmp_path / unit.name)
    assert len(paths) == 2
    return paths


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="no systemd-analyze on this machine")
def test_systemd_analyze_verify_finds_nothing_to_say(runnable_units):
    r = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", *map(str, runnable_units)],
                       capture_output=True, text=True, timeout=60)
    # verify exits 0 on an unknown key or a bad value, and says so on stderr
    ours = [line for line in (r.stdout + r.stderr).splitlines()
            if any(p.name in line for p in runnable_units)]
    assert r.returncode == 0 and ours == [], r.stdout + r.stderr


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="no systemd-analyze on this machine")
def test_systemd_analyze_security_rates_the_units_ok(runnable_units):
    help_text = subprocess.run([SYSTEMD_ANALYZE, "security", "--help"], capture_output=True,
                               text=True, timeout=60).stdout
    if "--offline" not in help_text or "--threshold" not in help_text:
        pytest.skip("this systemd-analyze cannot rate a unit file offline (systemd < 250)")
    for unit in runnable_units:
        r = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=20",
                            "--no-pager", str(unit)], capture_output=True, text=True,
                           timeout=60)
        # threshold is in tenths: 2.0 is systemd's "OK" band's top (these rate 1.3)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr


# -- docs/operations.md quotes the daemons' words, none made up ------------------------

def source_strings() -> list[str]:
    """Every string literal in lbmgmt/ (adjacent literals joined, as Python does); in an
    f-string, a module constant (str or int) by its value, any other value as "\\0"."""
    constants: dict[str, str] = {}
    trees = [ast.parse(p.read_text()) for p in sorted((ROOT / "lbmgmt").rglob("*.py"))]
    for tree in trees:
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Constant)
                    and type(node.value.value) in (str, int)):
                constants[node.targets[0].id] = str(node.value.value)
    found = []
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append(node.value)
            elif isinstance(node, ast.JoinedStr):
                parts = []
                for part in node.values:
                    if isinstance(part, ast.Constant):
                        parts.append(str(part.value))
                    elif (isinstance(part, ast.FormattedValue)
                          and isinstance(part.value, ast.Name)
                          and part.value.id in constants):
                        parts.append(constants[part.value.id])
                    else:
                        parts.append("\0")
                found.append("".join(parts))
    return found


def quoted_messages() -> list[str]:
    """The ``code`` spans of the troubleshooting table's message column."""
    text = (ROOT / "docs" / "operations.md").read_text()
    table = text.split("## Troubleshooting", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]  # no header
    messages = []
    for row in rows:
        cells = re.split(r"(?<!\\)\|", row)[1:-1]
        assert len(cells) == 5, row
        messages += re.findall(r"`([^`]+)`", cells[1])
    return messages


def test_every_message_the_troubleshooting_table_quotes_is_in_the_source():
    strings = source_strings()
    messages = quoted_messages()
    assert len(messages) >= 25
    for message in messages:
        # "…" is what varies; each piece between must be said as written
        for piece in filter(None, (p.strip() for p in message.split("…"))):
            assert any(piece in s for s in strings), f"not in lbmgmt/: {piece!r}"
