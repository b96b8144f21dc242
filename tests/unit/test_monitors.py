"""Load monitors, against synthetic tables and the real OS table."""

from __future__ import annotations

import socket

import pytest

from lbmgmt.edge.monitors import ManualMonitor, TcpConnectionsMonitor, count_established

TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0787 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 1
   1: 0100007F:0787 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000 0 2
   2: 0100007F:0787 0100007F:D2F2 01 00000000:00000000 00:00000000 00000000  1000 0 3
   3: 0100007F:D2F0 0100007F:0787 01 00000000:00000000 00:00000000 00000000  1000 0 4
   4: 0100007F:1F90 0100007F:D2F4 06 00000000:00000000 00:00000000 00000000  1000 0 5
   5: 0100007F:1F90 0100007F:D2F6 01 00000000:00000000 00:00000000 00000000  1000 0 6
   garbage line
"""


def test_count_established_counts_server_side_on_ports_only():
    lines = TABLE.splitlines()[1:]
    assert count_established(lines, frozenset({1927})) == 2  # 0x787; listen and client rows skipped
    assert count_established(lines, frozenset({8080})) == 1  # 0x1F90; TIME_WAIT skipped
    assert count_established(lines, frozenset({1927, 8080})) == 3
    assert count_established(lines, frozenset({1})) == 0


async def test_tcp_connections_reads_real_loopback_connections():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    monitor = TcpConnectionsMonitor([port])
    clients, accepted = [], []
    try:
        assert await monitor.read() == 0
        for _ in range(3):
            clients.append(socket.create_connection(("127.0.0.1", port)))
            accepted.append(server.accept()[0])
        assert await monitor.read() == 3
        clients.pop().close()
        accepted.pop().close()
        assert await monitor.read() == 2
    finally:
        for s in clients + accepted + [server]:
            s.close()


async def test_manual_monitor_validates():
    monitor = ManualMonitor(3)
    assert await monitor.read() == 3
    monitor.set_load(7.5)
    assert await monitor.read() == 7.5
    for bad in (-1, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            monitor.set_load(bad)
