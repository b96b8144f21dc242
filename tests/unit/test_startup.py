"""What start-up imports (issue 17): the structure behind bench/startup.py's figures.

``lbmgmt --help`` and each subcommand's help import none of the heavy packages (each
is tens of milliseconds: aiohttp alone a quarter of a second, most of it the TLS
contexts it builds as it is imported); an edge's modules and a made edge none of the
management port's stack, which it imports only once its first report is out. Each is
checked in a fresh interpreter, through ``sys.modules``; never a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lbmgmt.edge.daemon import EdgeDaemon
from lbmgmt.edge.monitors import ManualMonitor
from lbmgmt.endpoints import Endpoint
from lbmgmt.management.config import ManagementConfig
from lbmgmt.management.http import ManagementServer
from tests.unit.test_edge_streams import Balancer, config

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("aiohttp", "asyncio", "cryptography", "httptools", "jsonrpcserver", "maxminddb",
         "prometheus_client", "textual", "uvloop")
# An edge needs asyncio and cryptography for its first report; not the management port's.
MANAGEMENT_STACK = ("aiohttp", "jsonrpcserver", "prometheus_client")

# The top-level packages imported, as JSON, once main(argv) ran (help exits).
HELP_PROBE = """
import contextlib, io, json, sys
from lbmgmt.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
"""
EDGE_PROBE = """
import json, sys
from lbmgmt.edge.config import load_edge_config
from lbmgmt.edge.daemon import EdgeDaemon
EdgeDaemon(load_edge_config(sys.argv[1]))
print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
"""


def imported(probe: str, *args: str) -> set[str]:
    r = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout))


@pytest.mark.parametrize("argv", [
    ["--help"], ["--version"], ["balancer", "--help"], ["edge", "--help"], ["demo", "--help"],
    ["resolve", "--help"], ["init", "--help"], ["init", "edge", "--help"], ["get", "--help"],
    ["call", "--help"], ["new-key", "--help"],
], ids=" ".join)
def test_help_imports_none_of_the_heavy_packages(argv):
    assert imported(HELP_PROBE, *argv) & set(HEAVY) == set()


def test_the_probe_sees_what_a_command_imports():
    """(the probe above can fail: a command that runs imports what it needs)"""
    assert "cryptography" in imported(HELP_PROBE, "new-key")


@pytest.mark.parametrize("package", [*MANAGEMENT_STACK, "textual", "httptools", "maxminddb"])
def test_an_edge_is_made_without_the_management_ports_stack(tmp_path, package):
    (tmp_path / "targets.txt").write_text("127.0.0.1,1934,k-0123456789abcdef-startup\n")
    path = tmp_path / "edge.toml"
    path.write_text('[edge]\nredirect_address = "e.example:1935"\nguid_file = "edge.guid"\n'
                    '[monitor]\ntype = "manual"\n[management]\nlisten = "127.0.0.1:0"\n')
    assert package not in imported(EDGE_PROBE, str(path))


async def test_the_first_report_is_sent_before_the_management_port_opens(tmp_path,
                                                                          monkeypatch):
    balancer = await Balancer().start()
    sent_by_then: list[int] = []
    open_port = ManagementServer.start

    async def start(self: ManagementServer) -> None:
        sent_by_then.append(edge.reports_sent)
        await open_port(self)

    monkeypatch.setattr(ManagementServer, "start", start)
    edge = EdgeDaemon(config(tmp_path, ManualMonitor(2),
                             management=ManagementConfig(Endpoint("127.0.0.1", 0))),
                      targets=[balancer.target()])
    try:
        await edge.start()
        try:
            assert sent_by_then == [1]
            assert edge.management is not None and edge.management.address is not None
            assert (await balancer.next()).load == 2
        finally:
            await edge.stop()
    finally:
        balancer.close()
