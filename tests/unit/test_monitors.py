"""Load monitors, against synthetic tables and the real OS table."""

from __future__ import annotations

import socket
import struct
import sys

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


# -- sock_diag: the kernel counts the watched ports' sockets ------------------------------
from collections import Counter  # noqa: E402

from lbmgmt.edge import sockdiag  # noqa: E402
from lbmgmt.edge.monitors import MonitorError  # noqa: E402

LISTEN, ESTAB = sockdiag.TCP_LISTEN, sockdiag.TCP_ESTABLISHED


def test_the_port_filter_is_what_ss_compiles():
    # ss -tan '( sport = :1935 or sport = :8080 )', as ss compiled it before Linux 4.16's
    # S_EQ: each port a >= and a <= test, a JMP to the end between two
    def op(code: int, yes: int, no: int) -> bytes:  # (the kernel's byte order)
        return struct.pack("=BBH", code, yes, no)
    assert sockdiag.port_filter([8080, 1935]) == (
        op(2, 8, 20) + op(0, 0, 1935)  # S_GE: holds, on to the next op; else the next test
        + op(3, 8, 12) + op(0, 0, 1935)  # S_LE
        + op(1, 4, 20)  # JMP: a match goes to the end
        + op(2, 8, 20) + op(0, 0, 8080)  # the last: a miss jumps past the end (reject)
        + op(3, 8, 12) + op(0, 0, 8080))
    with pytest.raises(ValueError):
        sockdiag.port_filter([])


def test_a_refusal_from_the_kernel_is_an_error_not_an_empty_answer():
    header = sockdiag.NLMSGHDR.pack(20, sockdiag.NLMSG_ERROR, 0, 1, 0)
    with pytest.raises(sockdiag.SockDiagError, match="Invalid argument"):
        sockdiag.parse_dump(header + (-22).to_bytes(4, sys.byteorder, signed=True), Counter())
    with pytest.raises(sockdiag.SockDiagError, match="truncated"):
        sockdiag.parse_dump(sockdiag.NLMSGHDR.pack(99, 20, 0, 1, 0), Counter())


async def test_a_kernel_that_refuses_the_filter_sends_the_monitor_to_proc(monkeypatch):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        monitor = TcpConnectionsMonitor([port])

        def refused(ports):
            raise sockdiag.SockDiagError(22, "sock_diag: Invalid argument")
        monkeypatch.setattr(sockdiag, "port_states", refused)
        assert await monitor.read() == 0 and not monitor.netlink  # read from /proc

        def passing(ports):
            raise TimeoutError("timed out")
        again = TcpConnectionsMonitor([port])
        monkeypatch.setattr(sockdiag, "port_states", passing)
        with pytest.raises(MonitorError, match="sock_diag"):
            await again.read()
        assert again.netlink  # a passing error: netlink still next time
    finally:
        server.close()


def test_the_kernel_answers_for_the_watched_ports_only_ipv4_and_ipv6():
    v4 = socket.create_server(("127.0.0.1", 0))
    v6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
    other = socket.create_server(("127.0.0.1", 0))
    p4, p6, po = (s.getsockname()[1] for s in (v4, v6, other))
    opened = []
    try:
        for server, host, n in ((v4, "127.0.0.1", 3), (v6, "::1", 2), (other, "127.0.0.1", 4)):
            for _ in range(n):
                opened.append(socket.create_connection((host, server.getsockname()[1])))
                opened.append(server.accept()[0])
        counts = sockdiag.port_states([p4, p6])
        assert counts == Counter({(ESTAB, p4): 3, (LISTEN, p4): 1, (ESTAB, p6): 2,
                                  (LISTEN, p6): 1})  # not the other port, not the clients
        many = [s.getsockname()[1] for s in opened[::2]]  # clients' ports: 9 more tests
        assert sum(sockdiag.port_states([p4, p6, po, *many]).values()) == 3 + 2 + 4 + 9 + 3
    finally:
        for s in opened + [v4, v6, other]:
            s.close()


async def test_no_listener_on_a_watched_port_is_a_failure_with_the_port_named():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted = server.accept()[0]
    try:
        monitor = TcpConnectionsMonitor([port])
        assert await monitor.read() == 1
        server.close()  # the connection stays, the listener is gone
        with pytest.raises(MonitorError, match=f"nothing listens on port {port}"):
            await monitor.read()
        assert await TcpConnectionsMonitor([port], require_listener=False).read() == 1
    finally:
        for s in (client, accepted, server):
            s.close()


async def test_without_netlink_it_reads_proc_and_still_checks_the_listener(tmp_path):
    table = tmp_path / "tcp"
    table.write_text(TABLE)
    monitor = TcpConnectionsMonitor([1927, 8080], proc_files=[str(table)])
    with pytest.raises(MonitorError, match="nothing listens on port 8080"):
        await monitor.read()  # 1927 (0x787) has its 0A row, 8080 none
    monitor = TcpConnectionsMonitor([1927], proc_files=[str(table)])
    assert await monitor.read() == 2


# -- streams: what each monitor says the media server carries ------------------------------
from lbmgmt.edge.bandwidth import CounterRate  # noqa: E402
from lbmgmt.edge.monitors import LoadMonitor, nginx_rtmp_streams  # noqa: E402


def stat(*servers: str) -> bytes:
    return ("<rtmp><bw_out>0</bw_out>" + "".join(f"<server>{s}</server>" for s in servers)
            + "</rtmp>").encode()


def app(name: str, *streams: tuple[str, str]) -> str:
    body = "".join(f"<stream><name>{n}</name><nclients>{c}</nclients></stream>"
                   for n, c in streams)
    return f"<application><name>{name}</name><live>{body}<nclients>0</nclients></live>" \
           "</application>"


def test_nginx_rtmp_streams_add_up_a_name_in_two_server_blocks():
    page = stat(app("live", ("a", "2"), ("b", "3")), app("live", ("a", "4")))
    assert nginx_rtmp_streams(page) == ["live/a", "live/b"]  # a: 6 clients
    assert nginx_rtmp_streams(stat(app("live", ("", "9"), ("z", "0")))) == ["live/z"]
    assert nginx_rtmp_streams(stat(app("vod"))) == []
    with pytest.raises(MonitorError, match="nclients is not a number: 'many'"):
        nginx_rtmp_streams(stat(app("live", ("a", "many"))))
    with pytest.raises(MonitorError, match="nclients is negative"):
        nginx_rtmp_streams(stat(app("live", ("a", "-1"))))


async def test_the_manual_monitor_says_the_streams_it_is_given():
    assert LoadMonitor.streams(ManualMonitor()) is None  # the default: cannot tell
    monitor = ManualMonitor(2, streams=["live/a", "live/b"])
    assert monitor.streams() == ["live/a", "live/b"]
    monitor.set_streams(["cam1"])
    assert monitor.streams() == ["cam1"]
    with pytest.raises(ValueError, match="non-empty strings"):
        monitor.set_streams(["live/a", ""])
    assert monitor.streams() == ["cam1"]  # a refusal changes nothing


def test_a_counter_rate_is_over_whole_windows():
    rate = CounterRate()
    assert rate.update(10.0, 1000, window=2.0) is None  # nothing to compare with
    assert rate.update(11.0, 2000, window=2.0) is None  # half a window
    assert rate.update(12.0, 3000, window=2.0) == 2000 * 8 / 2.0
    assert rate.update(13.0, 9000, window=2.0) == 2000 * 8 / 2.0  # the last window's
    assert rate.update(14.0, 100, window=2.0) is None  # went backwards: starts over
