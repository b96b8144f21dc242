"""The console scripts as users run them: the demo with curl, bad configs, --help."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w

from tests.e2e.fleet import DEADLINE, HOST, free_port, wait_for_text

pytestmark = pytest.mark.e2e
LBMGMT = [sys.executable, "-m", "lbmgmt"]


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", str(DEADLINE), *args],
                          capture_output=True, text=True, timeout=DEADLINE + 5)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_demo_prints_urls_that_work_with_curl(tmp_path, daemon_loop):
    http_port, udp_port, mgmt_port = free_port(), free_port(2), free_port()
    out = tmp_path / "demo.out"
    with open(out, "w") as stdout:
        proc = subprocess.Popen([*LBMGMT, "demo", "--http-port", str(http_port), "--udp-port",
                                 str(udp_port), "--mgmt-port", str(mgmt_port)],
                                stdout=stdout, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True,
                                env={**os.environ, "LBMGMT_LOOP": daemon_loop})
    try:
        deadline = time.monotonic() + DEADLINE
        while "/metrics" not in out.read_text():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "demo printed no URLs"
            time.sleep(0.05)  # polling the file the demo writes, until the deadline
        text = out.read_text()
        edges = re.findall(r"edge \d+\s+(http://\S+)", text)
        assert len(edges) == 3
        commands = re.findall(r"^  (curl .+)$", text, re.M)
        assert len(commands) == 5
        base = f"http://{HOST}:{http_port}"

        r = curl(f"{base}/loadbalancer")
        assert re.fullmatch(r"redirect=127\.0\.0\.1:\d+", r.stdout)
        assert f"http://{r.stdout.removeprefix('redirect=')}" in edges
        r = curl(f"{base}/loadbalancer?serverInfoXML")
        assert r.stdout.count("<Server>") == 3
        r = curl("-i", f"{base}/redirect/live/stream.m3u8")
        assert r.stdout.startswith("HTTP/1.1 302")
        r = curl("-L", f"{base}/redirect/live/stream.m3u8?token=1")
        assert re.fullmatch(r"edge \d would serve /live/stream.m3u8\?token=1\n", r.stdout)
        mgmt = f"{HOST}:{mgmt_port}"
        assert f"lbmgmt get {mgmt} lbmgmt:type=Balancer" in text
        r = curl(f"http://{mgmt}/metrics")
        assert "lbmgmt_balancer_server_count 3.0" in r.stdout
        r = curl("-H", "Content-Type: application/json",
                 "-d", '{"jsonrpc":"2.0","id":1,"method":"getAttribute",'
                 '"params":["lbmgmt:type=Balancer","ServerCount"]}', f"http://{mgmt}/jsonrpc")
        assert json.loads(r.stdout) == {"jsonrpc": "2.0", "id": 1, "result": 3}
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(DEADLINE) == 0
        proc.stderr.close()


ROOT = Path(__file__).parents[2]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
@pytest.mark.skipif(not (Path(sys.executable).parent / "lbmgmt").exists(),
                    reason="lbmgmt is not installed as a console script")
def test_every_command_the_demo_prints_runs_as_printed(daemon_loop):
    """As the README's first line leaves a new user: in the checkout, the venv's scripts
    not on PATH. Each command the demo prints is run as printed, by a shell."""
    bindir = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                           if p and Path(p).resolve() != Path(bindir).resolve())
    env = {**os.environ, "PATH": path, "LBMGMT_LOOP": daemon_loop}
    assert shutil.which("lbmgmt", path=path) is None  # (else this proves nothing)
    ports = ["--http-port", str(free_port()), "--udp-port", str(free_port(2)),
             "--mgmt-port", str(free_port())]
    proc = subprocess.Popen([".venv/bin/lbmgmt" if (ROOT / ".venv/bin/lbmgmt").exists()
                             else f"{bindir}/lbmgmt", "demo", *ports], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    try:
        printed = []
        assert proc.stdout is not None
        for line in proc.stdout:  # (a line at a time, as the demo prints them)
            printed.append(line.rstrip("\n"))
            if "the status page" in line:
                break
        commands = [line.strip() for line in printed
                    if re.match(r"  (curl|\S*lbmgmt|\S*lb-console) ", line)]
        assert len(commands) == 9, printed  # 5 curl, 3 lbmgmt, lb-console
        for command in commands:
            if "lb-console" in command:  # (a terminal program: it is there and runs)
                program = command.split()[0]
                r = subprocess.run([program, "--help"], cwd=ROOT, env=env,
                                   capture_output=True, text=True, timeout=DEADLINE)
            else:
                r = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env,
                                   capture_output=True, text=True, timeout=DEADLINE)
            assert r.returncode == 0 and r.stdout.strip(), (command, r.stderr)
        page = re.search(r"(http://\S+/)$", printed[-1])
        assert page is not None, printed[-1]
        r = curl(page.group(1))
        assert "<html" in r.stdout.lower()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(DEADLINE) == 0
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("role, text, where", [
    ("balancer", '[balancer]\nkey = "k-0123456789abcdef"\nlisten = "*:notaport"\n',
     ":3: balancer.listen: "),
    ("edge", '[edge]\nredirect_address = "a"\nmessage_interval_ms = "x"\n',
     ":3: edge.message_interval_ms: "),
    ("edge", '[edge]\nredirect_address = "a"\ntargets_file = "t.txt"\n', "t.txt: cannot read"),
])
def test_config_errors_exit_2_naming_file_line_field(tmp_path, role, text, where):
    path = tmp_path / f"{role}.toml"
    path.write_text(text)
    r = subprocess.run([*LBMGMT, role, "--config", str(path)], capture_output=True, text=True,
                       timeout=DEADLINE)
    assert r.returncode == 2
    assert where in r.stderr and "Traceback" not in r.stderr


def test_bad_targets_line_exits_2(tmp_path):
    (tmp_path / "targets.txt").write_text("# fine\n127.0.0.1,1934\n")
    path = tmp_path / "edge.toml"
    path.write_text('[edge]\nredirect_address = "a"\n')
    r = subprocess.run([*LBMGMT, "edge", "-c", str(path)], capture_output=True, text=True,
                       timeout=DEADLINE)
    assert r.returncode == 2
    assert f"{tmp_path / 'targets.txt'}:2: line: expected 'host,port,key'" in r.stderr


def balancer_config(path, key: str = "k-0123456789abcdef", udp: str = f"{HOST}:0"):
    """A balancer config on loopback ports the kernel picks."""
    path.write_text(tomli_w.dumps({"balancer": {"key": key, "listen": udp},
                                   "http": {"listen": f"{HOST}:0"},
                                   "management": {"listen": f"{HOST}:0"}}))
    return path


def test_port_in_use_is_a_clear_error(tmp_path):
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind((HOST, 0))
        path = balancer_config(tmp_path / "b.toml", udp=f"{HOST}:{busy.getsockname()[1]}")
        r = subprocess.run([*LBMGMT, "balancer", "-c", str(path)], capture_output=True,
                           text=True, timeout=DEADLINE)
    assert r.returncode == 1 and "cannot listen on UDP (edge reports)" in r.stderr
    assert "Address already in use" in r.stderr and "[balancer] listen" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("args", [["--help"], ["balancer", "--help"], ["edge", "--help"],
                                  ["demo", "--help"]])
def test_help(args):
    r = subprocess.run([*LBMGMT, *args], capture_output=True, text=True, timeout=DEADLINE)
    assert r.returncode == 0 and "usage: lbmgmt" in r.stdout


async def test_shared_key_is_never_logged(tmp_path):
    secret = "sup3r-s3cret-value"
    path = balancer_config(tmp_path / "b.toml", key=secret)
    log = tmp_path / "b.err"
    with open(log, "w") as err:
        proc = subprocess.Popen([*LBMGMT, "balancer", "-c", str(path), "-vv"], stderr=err,
                                stdin=subprocess.DEVNULL)
    try:
        await wait_for_text(log, "balancer started")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert secret not in log.read_text()


@pytest.mark.parametrize("config, files, where", [
    ('[balancer]\nkey = 123456789\n', {}, ":2: balancer.key: must be a string, not int"),
    ('[balancer]\nkey = "short-s3cret"\n', {},
     ":2: balancer.key: the key is 12 characters long; a shared key needs at least 16"),
    ('[balancer]\nkey_file = "k.txt"\n', {"k.txt": "short-s3cret\n"},
     ":2: balancer.key_file: the key is 12 characters long"),
    ('[edge]\nredirect_address = "a"\n', {"targets.txt": "# lb\n127.0.0.1,1934,short-s3cret\n"},
     "targets.txt:2: key: the key is 12 characters long"),
], ids=["not-a-string", "short", "short-in-key-file", "short-in-targets"])
def test_key_errors_name_the_place_never_the_key(tmp_path, config, files, where):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    daemon = config[1:config.index("]")]
    path = tmp_path / f"{daemon}.toml"
    path.write_text(config)
    r = subprocess.run([*LBMGMT, daemon, "-c", str(path)], capture_output=True, text=True,
                       timeout=DEADLINE)
    assert r.returncode == 2 and where in r.stderr, r.stderr
    assert "123456789" not in r.stderr and "s3cret" not in r.stderr


async def test_the_examples_placeholder_key_is_warned_about_at_start(tmp_path):
    placeholder = "change-me-to-a-long-random-string"  # examples/balancer.toml's
    path = balancer_config(tmp_path / "b.toml", key=placeholder)
    (tmp_path / "targets.txt").write_text(f"# lb\n{HOST},9,{placeholder}\n")
    (tmp_path / "edge.toml").write_text(tomli_w.dumps({
        "edge": {"redirect_address": "e:1"}, "monitor": {"type": "manual"},
        "management": {"enabled": False}}))
    for daemon, config, said in (("balancer", path, "balancer started"),
                                 ("edge", tmp_path / "edge.toml", "edge started")):
        log = tmp_path / f"{daemon}.err"
        with open(log, "w") as err:
            proc = subprocess.Popen([*LBMGMT, daemon, "-c", str(config), "-v"], stderr=err,
                                    stdin=subprocess.DEVNULL)
        try:
            await wait_for_text(log, said)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(DEADLINE) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        text = log.read_text()
        warning = [line for line in text.splitlines() if "examples' placeholder" in line]
        assert len(warning) == 1 and "level=warning" in warning[0], text
        assert "lbmgmt new-key" in warning[0] and placeholder not in warning[0]
        if daemon == "edge":
            assert "targets.txt" in warning[0] and "line=2" in warning[0]


def test_new_key_prints_a_strong_key_both_daemons_take(tmp_path):
    from lbmgmt.balancer.config import load_balancer_config
    from lbmgmt.edge.targets import load_targets

    keys = [subprocess.run([*LBMGMT, "new-key"], capture_output=True, text=True,
                           timeout=DEADLINE, check=True).stdout for _ in range(2)]
    assert keys[0] != keys[1]
    key = keys[0].strip()
    assert keys[0] == key + "\n" and len(key) >= 32 and re.fullmatch(r"[A-Za-z0-9_-]+", key)
    config = load_balancer_config(balancer_config(tmp_path / "b.toml", key=key))
    (tmp_path / "targets.txt").write_text(f"{HOST},1934,{key}\n")
    assert load_targets(tmp_path / "targets.txt")[0].key == config.key
