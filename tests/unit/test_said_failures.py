"""What goes wrong is said (issue 17): a failing balancer target, a port already taken.

A target whose port is closed on loopback answers each report with an ICMP "port
unreachable": asyncio hands it to the edge's socket as ``error_received`` after a
send that looked fine. The edge must count it in the target's errors and in its
total, say it once as it starts (not at every report), and say when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from lbmgmt import cli
from lbmgmt.edge.daemon import RECOVER_AFTER, EdgeDaemon
from lbmgmt.edge.mbeans import SENDER_NAME
from lbmgmt.edge.monitors import ManualMonitor
from lbmgmt.edge.targets import ReportTarget
from lbmgmt.fleet.ports import free_port
from lbmgmt.status import SharedKey
from tests.unit.test_edge_streams import HANG, KEY, Balancer, config


def said(caplog, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == text]


async def test_a_failing_target_is_counted_in_the_total_and_said_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="lbmgmt")
    port = free_port(socket.SOCK_DGRAM)  # nothing listens: each report is refused
    target = ReportTarget("127.0.0.1", port, SharedKey(KEY), 2)
    edge = EdgeDaemon(config(tmp_path, ManualMonitor(1)), targets=[target])
    failed = asyncio.Event()  # each error, as the edge takes it (the event waited for)
    take = edge._target_failed

    def spy(link, reason: str) -> None:
        take(link, reason)
        failed.set()
    edge._target_failed = spy  # type: ignore[method-assign]
    await edge.start()  # (its first report goes out)
    try:
        for _ in range(3):
            await asyncio.wait_for(failed.wait(), HANG)
            failed.clear()
            await edge.refresh_and_send()
        [row] = edge.mbeans.get_attribute(SENDER_NAME, "Targets")
        assert row["lastResult"].startswith("error: ") and row["failing"] is True
        assert edge.mbeans.get_attribute(SENDER_NAME, "SendErrors") == row["sendErrors"] >= 3
        [warning] = said(caplog, "reports to a balancer fail")
        assert warning.levelno == logging.WARNING
        assert warning.fields["target"] == f"127.0.0.1:{port}"  # type: ignore[attr-defined]
        assert "refused" in warning.fields["error"].lower()  # type: ignore[attr-defined]

        # the balancer comes up on that port: said once its reports go through again
        balancer = Balancer()
        await balancer.start(port=port)
        try:
            for _ in range(RECOVER_AFTER + 1):
                await edge.refresh_and_send()
                await balancer.next()
            assert said(caplog, "reports reach the balancer again")
            assert edge.links[0].failing is False
            assert len(said(caplog, "reports to a balancer fail")) == 1
        finally:
            balancer.close()
    finally:
        await edge.stop()


@pytest.mark.parametrize("daemon,what,setting", [
    ("balancer", "UDP (edge reports)", "[balancer] listen"),
    ("balancer", "TCP (clients)", "[http] listen"),
    ("balancer", "TCP (management)", "[management] listen"),
    ("edge", "TCP (management)", "[management] listen"),
])
def test_a_port_already_taken_is_named_with_its_protocol_and_setting(
        tmp_path, capsys, daemon, what, setting):
    udp = what.startswith("UDP")
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    if not udp:
        taken.listen()
    port = taken.getsockname()[1]
    ports = {"[balancer] listen": free_port(socket.SOCK_DGRAM), "[http] listen": free_port(),
             "[management] listen": free_port()}
    ports[setting] = port
    (tmp_path / "targets.txt").write_text(f"127.0.0.1,{free_port(socket.SOCK_DGRAM)},{KEY}\n")
    if daemon == "balancer":
        text = (f'[balancer]\nkey = "{KEY}"\nlisten = "127.0.0.1:{ports["[balancer] listen"]}"'
                f'\nstate_file = ""\n[http]\nlisten = "127.0.0.1:{ports["[http] listen"]}"\n')
    else:
        text = ('[edge]\nredirect_address = "e.example:1935"\ntargets_file = "targets.txt"\n'
                'guid_file = "edge.guid"\n')
    text += f'[management]\nlisten = "127.0.0.1:{ports["[management] listen"]}"\n'
    path = tmp_path / f"{daemon}.toml"
    path.write_text(text)
    try:
        assert cli.main([daemon, "--config", str(path)]) == 1
    finally:
        taken.close()
    err = capsys.readouterr().err
    assert f"lbmgmt {daemon}: cannot listen on {what} 127.0.0.1:{port}" in err
    assert f"set another port in {setting}" in err
    assert "another balancer running" not in err


def test_the_demo_names_its_own_option_for_a_port_already_taken(capsys):
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        assert cli.main(["demo", "--udp-port", str(port), "--http-port", str(free_port()),
                         "--mgmt-port", str(free_port())]) == 1
    finally:
        taken.close()
    err = capsys.readouterr().err
    assert f"cannot listen on UDP (edge reports) 127.0.0.1:{port}: Address already in use" in err
    assert "set another port in --udp-port" in err and "[balancer]" not in err
