"""The management port's budgets, against a real balancer, as an attacker would hit them.

Each test sends what was found to hurt (a huge batch, deep or non-standard JSON,
thousands of parked polls, slow heads, a flood of connections, a client hanging
up mid-body) and checks three things: the refusal the docs promise, the count in
``LimitsHit``, and that ordinary calls still answer. The limits are set low in
the config so a few requests reach them.
"""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest

from tests.e2e.fleet import DEADLINE, HOST, wait_until
from tests.e2e.test_management import BAL, JSON, Rpc, session_from, up

pytestmark = pytest.mark.e2e
MGMT = "lbmgmt:type=Management"


def call(method, *params, id_=1):
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": list(params)}


async def limits(rpc: Rpc) -> dict[str, int]:
    return await rpc.ok("getAttribute", MGMT, "LimitsHit")


def quiet(stderr: str) -> bool:
    """Nothing above info and no traceback in a daemon's log."""
    return ("Traceback" not in stderr and "level=error" not in stderr
            and "level=critical" not in stderr)


async def test_a_batch_over_max_batch_gets_one_error_and_a_full_one_is_answered(fleet):
    lb = fleet.balancer(config={"management": {"max_batch": 20}})
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)
    status, answer = await rpc.raw([call("version", id_=i) for i in range(21)])
    assert status == 200 and isinstance(answer, dict)  # one error, not 21 answers
    assert answer["error"]["code"] == -32600 and answer["error"]["data"] == {"maxBatch": 20}
    assert answer["id"] is None
    status, answers = await rpc.raw([call("version", id_=i) for i in range(20)])
    assert status == 200 and sorted(a["id"] for a in answers) == list(range(20))
    assert (await limits(rpc))["batch"] == 1


async def test_an_answer_over_max_response_bytes_is_cut_call_by_call(fleet):
    cap = 64 * 1024
    lb = fleet.balancer(config={"management": {"max_response_bytes": cap}})
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)
    one = len(json.dumps(await rpc.ok("rpc.discover")))
    calls = cap // one + 5  # a batch whose whole answer would pass the cap
    async with fleet.session.post(f"{lb.mgmt_url}/jsonrpc", headers=JSON, data=json.dumps(
            [call("rpc.discover", id_=i) for i in range(calls)])) as r:
        body = await r.read()
    assert r.status == 200 and len(body) <= cap
    answers = {a["id"]: a for a in json.loads(body)}
    assert set(answers) == set(range(calls))  # every call has its answer...
    cut = [a for a in answers.values() if "error" in a]
    assert cut and all(a["error"]["code"] == -32008 for a in cut)  # ...some of them cut
    assert all(a["error"]["data"] == {"maxResponseBytes": cap} for a in cut)
    assert calls - len(cut) >= cap // one - 1  # and no more than the cap needs
    assert (await limits(rpc))["response_bytes"] == len(cut)


NOT_JSON = {
    "deep-1000": b"[" * 1000 + b"]" * 1000,  # was a RecursionError traceback and a 500
    "nan": b'{"jsonrpc": "2.0", "method": "version", "id": NaN}',
    "infinity": b'{"jsonrpc": "2.0", "method": "version", "id": Infinity}',
    "minus-infinity": b'{"jsonrpc": "2.0", "method": "version", "id": -Infinity}',
    "overflow": b'{"jsonrpc": "2.0", "method": "version", "id": 1e400}',
    "5000-digits": b'{"jsonrpc": "2.0", "method": "version", "id": 1' + b"0" * 5000 + b"}",
    # deeper than 32, well short of the parser's own recursion limit
    "deep-40": b'{"jsonrpc": "2.0", "method": "getAttributes", "id": 1, "params": '
               + b"[" * 40 + b"]" * 40 + b"}",
}


async def test_deep_or_non_standard_json_is_a_parse_error_never_a_500(fleet):
    lb = fleet.balancer()
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)
    for count, (what, body) in enumerate(NOT_JSON.items(), 1):
        async with fleet.session.post(f"{lb.mgmt_url}/jsonrpc", data=body, headers=JSON) as r:
            assert r.status == 200, what
            answer = await r.json()
        assert answer["error"]["code"] == -32700 and answer["id"] is None, (what, answer)
        assert (await limits(rpc))["bad_json"] == count, what
    assert (await rpc.ok("version"))["daemon"] == "balancer"  # and the port still answers
    assert quiet(lb.stderr), lb.stderr[-2000:]


async def test_long_polls_are_capped_per_address_and_in_total(fleet):
    """Past a cap one poll is answered at once, empty: the oldest once it has waited a
    second, else the newcomer after a second (pollers that poll again at once would
    otherwise evict each other in a busy loop). Which one depends on the machine's
    speed; that exactly one answers, and is counted, does not."""
    lb = fleet.balancer(config={"management": {"max_polls": 3, "max_polls_per_address": 2}})
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)

    async def parked(count: int) -> None:
        async def now() -> bool:
            return await rpc.ok("getAttribute", MGMT, "ParkedPolls") == count
        await wait_until(now, what=f"{count} parked polls")

    async def poll(session: aiohttp.ClientSession) -> dict:
        return await Rpc(session, lb.mgmt_url).ok("pollNotifications", None, 60, timeout=90)

    async def one_answered(tasks: list[asyncio.Task]) -> list[asyncio.Task]:
        done, pending = await asyncio.wait(tasks, timeout=DEADLINE,
                                           return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1, "one poll answered to make room"
        answer = done.pop().result()
        assert answer["notifications"] == [] and answer["lost"] == 0
        return list(pending)

    async with session_from(HOST) as a, session_from("127.0.0.2") as b, \
            session_from("127.0.0.3") as c:
        first = asyncio.create_task(poll(a))
        await parked(1)
        second = asyncio.create_task(poll(a))
        await parked(2)
        third = asyncio.create_task(poll(a))  # one more than its address may park
        waiting = await one_answered([first, second, third])
        await parked(2)
        assert (await limits(rpc))["polls_per_address"] == 1

        waiting.append(asyncio.create_task(poll(b)))  # 3 parked: the total
        await parked(3)
        waiting.append(asyncio.create_task(poll(c)))  # one more than the port may park
        waiting = await one_answered(waiting)
        await parked(3)
        hits = await limits(rpc)
        assert (hits["polls"], hits["polls_per_address"]) == (1, 1)

        # Those still parked are woken by a notification, as ever.
        await rpc.ok("setAttribute", BAL, "Grace", 501)
        for task in waiting:
            batch = await asyncio.wait_for(task, DEADLINE)
            assert batch["notifications"][0]["data"]["newValue"] == 501


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (a reset counts as closed)."""
    data = b""
    try:
        while chunk := await reader.read(65536):
            data += chunk
    except ConnectionError:
        pass
    return data


async def test_a_slow_head_or_body_is_closed_and_counted(fleet):
    lb = fleet.balancer(config={"management": {"request_timeout_ms": 300}})
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)

    # A head that never ends: closed, no answer.
    reader, writer = await asyncio.open_connection(HOST, lb.mgmt_port)
    writer.write(b"POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
    assert await asyncio.wait_for(read_until_closed(reader), DEADLINE) == b""
    writer.close()
    # A body that never ends: 408.
    reader, writer = await asyncio.open_connection(HOST, lb.mgmt_port)
    writer.write(b"POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"jso")
    answer = await asyncio.wait_for(read_until_closed(reader), DEADLINE)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    writer.close()
    # An idle connection is closed too, but it is no attack: not counted.
    reader, writer = await asyncio.open_connection(HOST, lb.mgmt_port)
    assert await asyncio.wait_for(read_until_closed(reader), DEADLINE) == b""
    writer.close()

    assert (await limits(rpc))["request_timeout"] == 2
    assert quiet(lb.stderr), lb.stderr[-2000:]


async def test_connections_are_capped_per_address_and_in_total(fleet):
    lb = fleet.balancer(config={"management": {"max_connections": 5,
                                               "max_connections_per_address": 3}})
    async with aiohttp.ClientSession() as session:  # (closed: it would hold a slot)
        await up(fleet, Rpc(session, lb.mgmt_url))
    held: list[socket.socket] = []

    def connect(source: str) -> socket.socket:
        sock = socket.socket()
        sock.bind((source, 0))
        sock.connect((HOST, lb.mgmt_port))
        held.append(sock)
        return sock

    def refused(sock: socket.socket) -> bool:
        """Closed by the server at once (before any request)."""
        sock.settimeout(DEADLINE)
        try:
            return sock.recv(1) == b""
        except ConnectionError:
            return True

    try:
        for _ in range(3):
            connect("127.0.0.2")
        assert refused(connect("127.0.0.2"))  # a fourth from one address
        for _ in range(2):
            connect("127.0.0.3")
        assert refused(connect("127.0.0.4"))  # a sixth in all
    finally:
        for sock in held:
            sock.close()
    async with aiohttp.ClientSession() as session:
        rpc = Rpc(session, lb.mgmt_url)
        await up(fleet, rpc)  # its slots come back as the sockets close
        hits = await limits(rpc)
        assert (hits["connections_per_address"], hits["connections"]) == (1, 1)
        assert "over a limit" in lb.stderr  # said, at warning


async def test_a_request_too_large_is_413_and_counted(fleet):
    lb = fleet.balancer(config={"management": {"max_request_bytes": 4096}})
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)
    async with fleet.session.post(f"{lb.mgmt_url}/jsonrpc", data=b" " * 5000,
                                  headers=JSON) as r:
        assert r.status == 413
    assert (await limits(rpc))["request_bytes"] == 1


async def test_a_client_hanging_up_mid_body_logs_nothing_above_debug(fleet):
    lb = fleet.balancer()
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)
    for _ in range(3):
        reader, writer = await asyncio.open_connection(HOST, lb.mgmt_port)
        writer.write(b"POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"js")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    async def only_mine() -> bool:  # the hang-ups handled: only this call's connection left
        return await rpc.ok("getAttribute", MGMT, "Connections") == 1
    await wait_until(only_mine, what="the hung-up connections closed")
    assert (await rpc.ok("version"))["daemon"] == "balancer"
    assert quiet(lb.stderr), lb.stderr[-2000:]


async def test_malformed_http_is_counted_and_said_once_without_a_traceback(fleet):
    lb = fleet.balancer()
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)
    bad = [b"GET /metrics HTTP/1.1\r\n\r\n",  # no Host
           b"POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
           b"Content-Length: 3\r\n\r\n{}"]
    for _ in range(10):
        for request in bad:
            reader, writer = await asyncio.open_connection(HOST, lb.mgmt_port)
            writer.write(request)
            answer = await asyncio.wait_for(read_until_closed(reader), DEADLINE)
            assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.0 400 ")), answer[:80]
            writer.close()
    assert (await limits(rpc))["bad_http"] == 20
    assert quiet(lb.stderr), lb.stderr[-2000:]  # was 20 error-level tracebacks
    assert 1 <= lb.stderr.count("HTTP request not served") <= 2  # said once a minute a kind


async def test_an_answer_never_read_does_not_hold_its_slot(fleet):
    lb = fleet.balancer(config={"management": {"request_timeout_ms": 300}})
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)
    body = json.dumps([call("rpc.discover", id_=i) for i in range(100)]).encode()
    request = (b"POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
               b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    sock = socket.create_connection((HOST, lb.mgmt_port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and it never reads
    try:
        for _ in range(20):  # pipelined: megabytes of answers waiting for the reader
            sock.sendall(request)

        async def aborted() -> bool:
            return (await limits(rpc))["write_timeout"] >= 1
        await wait_until(aborted, what="the unread connection aborted")
    finally:
        sock.close()
