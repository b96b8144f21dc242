"""The management port of real daemon processes, driven as a script would drive it.

The client here is plain JSON-RPC 2.0 over HTTP (aiohttp and json, no lbmgmt
import): whatever it can do, any script can.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import signal
import subprocess
import sys

import aiohttp
import pytest

import tomli_w

from tests.e2e.fleet import DEADLINE, HOST, Fleet, free_port, wait_until

pytestmark = pytest.mark.e2e
BAL = "lbmgmt:type=Balancer"
SENDER = "lbmgmt:type=Sender"
JSON = {"Content-Type": "application/json"}


class Rpc:
    """A minimal JSON-RPC 2.0 client: what a user's script would write."""

    def __init__(self, session: aiohttp.ClientSession, url: str, headers=None, ssl=None):
        self.session, self.url, self.headers, self.ssl = session, url, headers or {}, ssl
        self.ids = 0

    async def raw(self, payload, timeout=10.0):
        async with self.session.post(f"{self.url}/jsonrpc", data=json.dumps(payload),
                                     headers={"Content-Type": "application/json",
                                              **self.headers}, ssl=self.ssl,
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            return r.status, (await r.json() if r.status in (200, 401, 429) else None)

    async def call(self, method, *params, timeout=10.0):
        self.ids += 1
        status, answer = await self.raw({"jsonrpc": "2.0", "id": self.ids, "method": method,
                                         "params": list(params)}, timeout)
        assert status == 200, (status, answer)
        return answer

    async def ok(self, method, *params, timeout=10.0):
        answer = await self.call(method, *params, timeout=timeout)
        assert "result" in answer, answer
        return answer["result"]

    async def code(self, method, *params):
        answer = await self.call(method, *params)
        assert "error" in answer, answer
        return answer["error"]["code"]

    async def error(self, method, *params):
        answer = await self.call(method, *params)
        assert "error" in answer, answer
        return answer["error"]


def session_from(address: str) -> aiohttp.ClientSession:
    """A client session whose connections come from ``address`` (127.0.0.x)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def up(fleet: Fleet, rpc: Rpc) -> None:
    async def answering():
        try:
            return (await rpc.raw({"jsonrpc": "2.0", "id": 0, "method": "version"}))[0] \
                in (200, 401)
        except aiohttp.ClientError:
            return False
    await wait_until(answering, what=f"management port {rpc.url}")


async def test_a_script_finds_reads_changes_and_follows_everything(fleet):
    lb = fleet.balancer()
    edges = [fleet.edge(f"e{i}", [lb]) for i in range(2)]
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)

    async def two_servers():
        return len(await rpc.ok("queryNames", "lbmgmt:type=Server,*")) == 2
    await wait_until(two_servers, what="two Server MBeans")
    names = await rpc.ok("queryNames", "*:*")
    assert {BAL, "lbmgmt:type=Management", "lbmgmt:type=Runtime"} <= set(names)
    assert len(names) == 5

    version = await rpc.ok("version")
    assert (version["product"], version["daemon"], version["role"]) == (
        "lbmgmt", "balancer", "readwrite")

    # Everything readable, by discovery alone.
    for name in names:
        info = await rpc.ok("getMBeanInfo", name)
        values = await rpc.ok("getAttributes", name, None)
        assert set(values) == {a["name"] for a in info["attributes"] if a["readable"]}
        for attr in info["attributes"]:  # (null only where there is nothing to say)
            assert await rpc.ok("getAttribute", name, attr["name"]) is not None \
                or attr["name"] in ("Capacity", "Unhealthy", "LastDrop")
    bal = await rpc.ok("getAttributes", BAL, None)
    assert bal["ServerCount"] == 2 and bal["AvailableServerCount"] == 2
    assert bal["ReportsReceived"] >= 2 and bal["ReportsDropped"]["bad-auth"] == 0
    servers = await rpc.ok("invoke", BAL, "listServers", [])
    assert {s["redirectAddress"] for s in servers} == {e.address for e in edges}
    guid = edges[0].guid
    server = f"lbmgmt:type=Server,guid={guid}"
    assert await rpc.ok("getAttribute", server, "RedirectAddress") == edges[0].address

    # A writable attribute, with its change notification.
    since = version["lastNotification"]
    assert await rpc.ok("setAttribute", BAL, "MessageTimeout", 3000) == 3000
    assert await rpc.ok("getAttribute", BAL, "MessageTimeout") == 3000
    assert await rpc.ok("setAttribute", BAL, "Redirector", "round-robin") == "round-robin"
    batch = await rpc.ok("pollNotifications", since, 0)
    changes = [n for n in batch["notifications"] if n["type"] == "jmx.attribute.change"]
    assert [(n["data"]["attribute"], n["data"]["newValue"]) for n in changes] == [
        ("MessageTimeout", 3000), ("Redirector", "round-robin")]

    # Drain through the balancer: out of redirects at once, back on undrain.
    await rpc.ok("invoke", BAL, "drainServer", [guid])
    assert {await fleet.redirect(lb) for _ in range(10)} == {edges[1].address}
    assert await rpc.ok("getAttribute", server, "Drained") is True
    assert (await fleet.servers(lb))[edges[0].address]["drained"] == "true"
    await rpc.ok("invoke", server, "undrain", [])
    assert {await fleet.redirect(lb) for _ in range(10)} == {e.address for e in edges}
    drained = await rpc.ok("pollNotifications", since, 0, ["lbmgmt.server.drained",
                                                             "lbmgmt.server.undrained"])
    assert [n["type"] for n in drained["notifications"]] == [
        "lbmgmt.server.drained", "lbmgmt.server.undrained"]
    assert all(n["data"]["guid"] == guid for n in drained["notifications"])

    # Prometheus sees the same figures.
    async with fleet.session.get(f"{lb.mgmt_url}/metrics") as r:
        metrics = await r.text()
    assert "lbmgmt_balancer_server_count 2.0" in metrics
    assert f'lbmgmt_server_load{{guid="{guid}"}}' in metrics
    assert 'lbmgmt_balancer_reports_dropped_total{reason="bad-auth"} 0.0' in metrics
    # Connections now are a gauge, beside the counters of those that came and went.
    assert "# TYPE lbmgmt_balancer_rtmp_connections gauge" in metrics
    assert 'lbmgmt_balancer_rtmp_connections{state="active"} ' in metrics
    assert "# TYPE lbmgmt_balancer_http_connections_total counter" in metrics
    assert 'lbmgmt_balancer_http_connections_total{event="active"}' not in metrics


async def test_the_runtime_mbean_describes_each_daemons_process(fleet, daemon_loop):
    lb = fleet.balancer()
    edge = fleet.edge("e", [lb])
    for url, proc in ((lb.mgmt_url, lb), (edge.mgmt_url, edge)):
        rpc = Rpc(fleet.session, url)
        await up(fleet, rpc)

        async def sampled(rpc: Rpc = rpc) -> bool:  # a second of lag samples (4 a second)
            return (await rpc.ok("getAttribute", "lbmgmt:type=Runtime", "Uptime")) > 1.0
        await wait_until(sampled, what="a second of runtime samples")
        runtime = await rpc.ok("getAttributes", "lbmgmt:type=Runtime", None)
        assert runtime["Pid"] == proc.popen.pid
        assert runtime["Python"].startswith("CPython 3.")
        assert runtime["EventLoop"].startswith(daemon_loop)  # uvloop or asyncio, as run
        assert 10 << 20 < runtime["Rss"] < 2 << 30
        assert runtime["OpenFileDescriptors"] >= 3 and runtime["Tasks"] >= 2
        lag = runtime["LoopLag"]
        assert set(lag) == {"p50", "p99", "max"} and 0 <= lag["p50"] <= lag["p99"] <= lag["max"]
        assert 0 <= runtime["CpuPercent"] <= 200 and runtime["CpuSeconds"] > 0
        assert set(runtime["GcCollections"]) == {"0", "1", "2"}
        async with fleet.session.get(f"{url}/metrics") as r:
            metrics = await r.text()
        assert 'lbmgmt_runtime_loop_lag{quantile="p99"}' in metrics
        assert "# TYPE lbmgmt_runtime_rss gauge" in metrics
        assert "# TYPE lbmgmt_runtime_cpu_seconds_total counter" in metrics


async def test_every_error_code_over_http(fleet):
    lb = fleet.balancer()
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)
    assert await rpc.code("getAttribute", "lbmgmt:type=Nope", "X") == -32001
    assert await rpc.code("getAttribute", BAL, "Nope") == -32002
    assert await rpc.code("invoke", BAL, "nope", []) == -32003
    assert await rpc.code("setAttribute", BAL, "ServerCount", 3) == -32004
    assert await rpc.code("setAttribute", BAL, "MessageTimeout", "fast") == -32005
    assert await rpc.code("invoke", BAL, "drainServer", ["not-a-guid"]) == -32007
    assert await rpc.code("invoke", BAL, "drainServer",
                          ["00000000-0000-0000-0000-000000000001"]) == -32007
    assert await rpc.code("getAttribute", BAL) == -32602
    assert await rpc.code("nope") == -32601
    async with fleet.session.post(f"{lb.mgmt_url}/jsonrpc", data=b"{oops", headers=JSON) as r:
        assert r.status == 200 and (await r.json())["error"]["code"] == -32700
    async with fleet.session.post(f"{lb.mgmt_url}/jsonrpc", data=b"\xff\xfe", headers=JSON) as r:
        assert (await r.json())["error"]["code"] == -32700
    async with fleet.session.post(f"{lb.mgmt_url}/jsonrpc", data=b"x" * 300_000, headers=JSON) as r:
        assert r.status == 413
    status, answer = await rpc.raw({"jsonrpc": "2.0", "method": "version"})  # notification
    assert status == 204
    status, answers = await rpc.raw([
        {"jsonrpc": "2.0", "id": 1, "method": "getAttribute", "params": [BAL, "ServerCount"]},
        {"jsonrpc": "2.0", "id": 2, "method": "getAttribute", "params": [BAL, "Nope"]},
        {"bogus": True}])
    assert status == 200 and len(answers) == 3
    by_id = {a["id"]: a for a in answers}
    assert by_id[1]["result"] == 0 and by_id[2]["error"]["code"] == -32002
    assert by_id[None]["error"]["code"] == -32600
    async with fleet.session.get(f"{lb.mgmt_url}/jsonrpc") as r:
        assert r.status == 405
    doc = await rpc.ok("rpc.discover")
    assert {m["name"] for m in doc["methods"]} >= {"queryNames", "invoke", "pollNotifications"}


async def parked_polls(rpc: Rpc, count: int) -> None:
    """Until the daemon holds ``count`` long polls open (a poll that answered early fails)."""
    async def parked():
        return await rpc.ok("getAttribute", "lbmgmt:type=Management", "ParkedPolls") == count
    await wait_until(parked, what=f"{count} long poll(s) parked")


async def test_long_poll_waits_then_wakes_on_an_event(fleet):
    lb = fleet.balancer()
    rpc, other = Rpc(fleet.session, lb.mgmt_url), Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)
    since = (await rpc.ok("version"))["lastNotification"]
    poll = asyncio.create_task(rpc.ok("pollNotifications", since, 60, timeout=90))
    await parked_polls(other, 1)  # long-poll: it waits on the daemon, not busy polling
    assert not poll.done()
    await other.ok("setAttribute", BAL, "MessageTimeout", 4000)
    batch = await asyncio.wait_for(poll, DEADLINE)  # woken by the event, not its 60 s
    assert batch["notifications"][0]["data"]["newValue"] == 4000

    # An edge joining wakes a poll too.
    poll = asyncio.create_task(rpc.ok("pollNotifications", batch["next"], 60, timeout=90))
    edge = fleet.edge("late", [lb])
    joined = await asyncio.wait_for(poll, DEADLINE)
    assert joined["notifications"][0]["type"] == "lbmgmt.server.joined"
    assert joined["notifications"][0]["data"]["redirectAddress"] == edge.address


async def test_a_poll_across_a_restart_is_told_and_gets_everything_buffered(fleet):
    lb = fleet.balancer()
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)
    for grace in (501, 502, 503):
        await rpc.ok("setAttribute", BAL, "Grace", grace)
    before = await rpc.ok("pollNotifications", 0, 0)
    assert (before["next"], before["reset"]) == (3, False)
    assert (await rpc.ok("version"))["epoch"] == before["epoch"]

    lb.signal(signal.SIGTERM)
    assert lb.wait() == 0
    again = fleet.balancer("lb2", udp_port=lb.udp_port, http_port=lb.http_port,
                           mgmt_port=lb.mgmt_port,
                           config={"management": {"notification_buffer": 10}})
    await up(fleet, rpc)
    for grace in range(600, 612):  # 12 in the new numbering, 10 kept: past the old 3
        await rpc.ok("setAttribute", BAL, "Grace", grace)

    # The script's next poll, as it would send it: its since and epoch from before.
    after = await rpc.ok("pollNotifications", before["next"], 0, None, before["epoch"])
    assert after["reset"] is True and after["epoch"] != before["epoch"]
    assert [n["sequence"] for n in after["notifications"]] == list(range(3, 13))
    assert after["lost"] == 2 and after["next"] == 12  # the two that fell out, said
    # A since beyond the last (a script that does not pass the epoch): told too.
    beyond = await rpc.ok("pollNotifications", 50, 0)
    assert beyond["reset"] is True and len(beyond["notifications"]) == 10
    # and the same epoch goes on as ever
    same = await rpc.ok("pollNotifications", after["next"], 0, None, after["epoch"])
    assert (same["notifications"], same["lost"], same["reset"]) == ([], 0, False)
    assert again.running


async def test_pause_unpause_and_set_load_through_invoke_are_reported_at_once(fleet):
    # Reports every 10 minutes, a longer timeout: only the immediate reports can show.
    minutes = 600_000
    lb = fleet.balancer(timeout_ms=2 * minutes)
    await up(fleet, Rpc(fleet.session, lb.mgmt_url))  # before the edges' one report
    busy = fleet.edge("busy", [lb], monitor={"type": "manual", "load": 500},
                      interval_ms=minutes)
    idle = fleet.edge("idle", [lb], interval_ms=minutes)
    edge_rpc, lb_rpc = Rpc(fleet.session, idle.mgmt_url), Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, edge_rpc)

    async def both():
        return len(await fleet.servers(lb)) == 2
    await wait_until(both, what="both edges listed")
    assert await fleet.redirect(lb) == idle.address
    assert (await edge_rpc.ok("version"))["daemon"] == "edge"
    sender = await edge_rpc.ok("getAttributes", SENDER, None)
    assert sender["ServerId"] == idle.guid and sender["State"] == "RUNNING"
    assert sender["Targets"][0]["lastResult"] == "ok"
    since = (await lb_rpc.ok("version"))["lastNotification"]

    await edge_rpc.ok("invoke", SENDER, "pause", [])

    async def out():
        return await fleet.redirect(lb) == busy.address
    await wait_until(out, what="paused edge out of redirects")
    assert await edge_rpc.ok("getAttribute", SENDER, "State") == "PAUSED"
    paused = await lb_rpc.ok("pollNotifications", since, 0, ["lbmgmt.server.paused"])
    assert paused["notifications"][0]["data"]["guid"] == idle.guid

    await edge_rpc.ok("invoke", SENDER, "unpause", [])

    async def back():
        return await fleet.redirect(lb) == idle.address
    await wait_until(back, what="unpaused edge back")

    # setLoad (manual monitor) is reported at once too.
    await edge_rpc.ok("invoke", SENDER, "setLoad", [900])

    async def heavier():
        return await fleet.redirect(lb) == busy.address
    await wait_until(heavier, what="new load used")
    assert await edge_rpc.ok("setAttribute", SENDER, "MessageInterval", 200) == 200


def credentials(tmp_path, token: str) -> dict[str, str]:
    """A users file (viewer: readonly password, ops: readwrite token); the [management] keys."""
    from lbmgmt.management.auth import hash_password, hash_token  # writing the file only
    users = {"users": {"viewer": {"role": "readonly", "password": hash_password("view-pw")},
                       "ops": {"role": "readwrite", "token_sha256": hash_token(token)}}}
    (tmp_path / "users.toml").write_text(tomli_w.dumps(users))
    return {"credentials_file": "users.toml"}


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_roles_readonly_cannot_change_anything(fleet, tmp_path):
    token = "ops-token-" + "q" * 30
    lb = fleet.balancer(config={"management": credentials(tmp_path, token)})
    edge = fleet.edge("e", [lb])
    anon = Rpc(fleet.session, lb.mgmt_url)
    viewer = Rpc(fleet.session, lb.mgmt_url, basic("viewer", "view-pw"))
    ops = Rpc(fleet.session, lb.mgmt_url, {"Authorization": f"Bearer {token}"})
    await up(fleet, anon)

    status, answer = await anon.raw({"jsonrpc": "2.0", "id": 1, "method": "version"})
    assert status == 401
    async with fleet.session.get(f"{lb.mgmt_url}/metrics") as r:
        assert r.status == 401 and "Basic" in r.headers["WWW-Authenticate"]

    async def listed():
        return len(await viewer.ok("queryNames", "lbmgmt:type=Server,*")) == 1
    await wait_until(listed, what="edge listed")
    assert (await viewer.ok("version"))["role"] == "readonly"
    info = await viewer.ok("getMBeanInfo", BAL)
    assert info["access"]["canWrite"] is False
    assert {o["name"]: o["canInvoke"] for o in info["operations"]}["drainServer"] is False
    assert len(await viewer.ok("invoke", BAL, "listServers", [])) == 1  # INFO: allowed
    assert await viewer.ok("pollNotifications", 0, 0)
    assert await viewer.code("setAttribute", BAL, "MessageTimeout", 1000) == -32006
    assert await viewer.code("invoke", BAL, "drainServer", [edge.guid]) == -32006
    assert await viewer.code("invoke", f"lbmgmt:type=Server,guid={edge.guid}", "drain",
                             []) == -32006
    assert await viewer.ok("getAttribute", BAL, "MessageTimeout") == fleet.timeout_ms
    assert {await fleet.redirect(lb) for _ in range(3)} == {edge.address}

    assert (await ops.ok("version"))["role"] == "readwrite"
    await ops.ok("invoke", BAL, "drainServer", [edge.guid])
    assert await fleet.redirect(lb) is None

    # Wrong passwords are counted, then the client is locked out.
    wrong = Rpc(fleet.session, lb.mgmt_url, basic("viewer", "guess"))
    statuses = [(await wrong.raw({"jsonrpc": "2.0", "id": 1, "method": "version"}))[0]
                for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    assert (await viewer.raw({"jsonrpc": "2.0", "id": 1, "method": "version"}))[0] == 429
    # ...while another way in (the edge's own port, say) is unaffected; and the count shows
    assert await Rpc(fleet.session, edge.mgmt_url).ok("getAttribute", SENDER, "State")


async def test_a_valid_login_between_guesses_resets_nothing(fleet, tmp_path):
    """The attack found: four guesses at another account, one good login of one's own."""
    lb = fleet.balancer(config={"management": credentials(tmp_path, "t" * 40)})
    viewer = Rpc(fleet.session, lb.mgmt_url, basic("viewer", "view-pw"))
    guess = Rpc(fleet.session, lb.mgmt_url, basic("ops", "guess"))
    await up(fleet, viewer)
    version = {"jsonrpc": "2.0", "id": 1, "method": "version"}
    guesses = []
    for _ in range(3):
        guesses += [(await guess.raw(version))[0] for _ in range(4)]
        assert (await viewer.raw(version))[0] == 200  # the attacker's own account
    assert guesses == [401] * 5 + [429] * 7  # five guesses at ops from here, as ever
    # Guesses spread over names: the address's own count (20 a minute) stops them all.
    statuses = []
    for i in range(20):
        statuses.append((await Rpc(fleet.session, lb.mgmt_url, basic(f"user{i}", "x")
                                   ).raw(version))[0])
    assert statuses[:15] == [401] * 15 and set(statuses[15:]) == {429}
    assert (await viewer.raw(version))[0] == 429  # the whole address waits now
    async with session_from("127.0.0.2") as elsewhere:  # another address does not
        assert (await Rpc(elsewhere, lb.mgmt_url, basic("viewer", "view-pw")).raw(version)
                )[0] == 200
    assert lb.stderr.count("management login failed") == 1  # said once a minute, not 20 times


async def test_parallel_guesses_wait_for_each_others_verdict(fleet, tmp_path):
    """64 guesses at once from one address: no more than the limit are checked."""
    lb = fleet.balancer(config={"management": credentials(tmp_path, "t" * 40)})
    await up(fleet, Rpc(fleet.session, lb.mgmt_url, basic("viewer", "view-pw")))
    version = {"jsonrpc": "2.0", "id": 1, "method": "version"}
    guess = Rpc(fleet.session, lb.mgmt_url, basic("ops", "guess"))
    statuses = await asyncio.gather(*(guess.raw(version, timeout=DEADLINE)
                                      for _ in range(64)))
    codes = sorted(status for status, _ in statuses)
    assert codes.count(401) == 5 and codes.count(429) == 59  # was 64 checked, 64 x 401
    failed = await Rpc(fleet.session, lb.mgmt_url, {"Authorization": "Bearer " + "t" * 40}
                       ).ok("getAttribute", "lbmgmt:type=Management", "FailedLogins")
    assert failed == 5
    # A bad bearer token counts once, toward the address only; a good one clears nothing.
    bad = Rpc(fleet.session, lb.mgmt_url, {"Authorization": "Bearer wrong"})
    assert [(await bad.raw(version))[0] for _ in range(3)] == [401] * 3  # was 401 401 429


async def test_shared_keys_are_never_readable(fleet):
    lb = fleet.balancer(key="very-secret-shared-key-1")
    edge = fleet.edge("e", [lb])
    for proc in (lb, edge):
        rpc = Rpc(fleet.session, proc.mgmt_url)
        await up(fleet, rpc)
        dump = []
        for name in await rpc.ok("queryNames", "*:*"):
            dump.append(await rpc.ok("getMBeanInfo", name))
            dump.append(await rpc.ok("getAttributes", name, None))
        async with fleet.session.get(f"{proc.mgmt_url}/metrics") as r:
            dump.append(await r.text())
        assert "very-secret-shared-key-1" not in json.dumps(dump)
    assert "very-secret-shared-key-1" not in lb.stderr + edge.stderr


def test_non_loopback_management_without_credentials_refuses_to_start(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text(f'[balancer]\nkey = "k-0123456789abcdef"\nlisten = "{HOST}:0"\n'
                    f'[http]\nlisten = "{HOST}:0"\n'
                    '[management]\nlisten = "*:8084"\n')
    r = subprocess.run([sys.executable, "-m", "lbmgmt", "balancer", "-c", str(path)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2
    assert f"{path}:7: management.listen: binding the management port to *:8084 needs " \
           "credentials_file" in r.stderr


async def test_tls_management_port(fleet, tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress
    import ssl

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lbmgmt-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    lb = fleet.balancer(config={"management": {"tls_cert_file": "cert.pem",
                                               "tls_key_file": "key.pem"}})
    context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    rpc = Rpc(fleet.session, f"https://{HOST}:{lb.mgmt_port}", ssl=context)
    await up(fleet, rpc)
    assert await rpc.ok("getAttribute", "lbmgmt:type=Management", "TlsEnabled") is True
    with pytest.raises(aiohttp.ClientError):
        await Rpc(fleet.session, lb.mgmt_url).raw({"jsonrpc": "2.0", "id": 1,
                                                   "method": "version"})
    r = subprocess.run([sys.executable, "-m", "lbmgmt", "get", f"{HOST}:{lb.mgmt_port}", BAL,
                        "ServerCount", "--tls", "--cafile", str(tmp_path / "cert.pem")],
                       capture_output=True, text=True, timeout=20)
    assert (r.returncode, r.stdout.strip()) == (0, "0")
    # Plain HTTP to the TLS port: the hint says --tls (it said only "Server disconnected").
    r = subprocess.run([sys.executable, "-m", "lbmgmt", "get", f"{HOST}:{lb.mgmt_port}", BAL,
                        "ServerCount"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 3 and "add --tls" in r.stderr and "Traceback" not in r.stderr
    # and --tls to a plain port: leave it out.
    plain = fleet.balancer("plain")
    await up(fleet, Rpc(fleet.session, plain.mgmt_url))
    r = subprocess.run([sys.executable, "-m", "lbmgmt", "get", f"{HOST}:{plain.mgmt_port}",
                        BAL, "ServerCount", "--tls"], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 3 and "leave --tls out" in r.stderr


async def test_server_mbeans_follow_edges_coming_and_going(fleet):
    lb = fleet.balancer()
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)
    edge = fleet.edge("e", [lb])

    async def count(n):
        async def check():
            return len(await rpc.ok("queryNames", "lbmgmt:type=Server,*")) == n
        return check
    await wait_until(await count(1), what="Server MBean registered")
    edge.signal(15)
    await wait_until(await count(0), what="Server MBean unregistered")
    left = await rpc.ok("pollNotifications", 0, 0, ["lbmgmt.server.left"])
    assert left["notifications"][0]["data"]["reason"] == "stopped"


def lbmgmt(*args, env=None):
    return subprocess.run([sys.executable, "-m", "lbmgmt", *args], capture_output=True,
                          text=True, timeout=30, env=env)


async def test_scripting_cli(fleet, tmp_path):
    token = "cli-token-" + "z" * 30
    lb = fleet.balancer(config={"management": credentials(tmp_path, token)})
    edge = fleet.edge("e", [lb])
    rpc = Rpc(fleet.session, lb.mgmt_url, {"Authorization": f"Bearer {token}"})
    await up(fleet, rpc)

    async def listed():
        return len(await rpc.ok("queryNames", "lbmgmt:type=Server,*")) == 1
    await wait_until(listed, what="edge listed")
    addr = f"{HOST}:{lb.mgmt_port}"
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "pw").write_text("view-pw\n")
    auth = ["--token-file", str(tmp_path / "token")]

    r = lbmgmt("get", addr, BAL, "ServerCount", *auth)
    assert (r.returncode, json.loads(r.stdout)) == (0, 1)
    r = lbmgmt("get", addr, BAL, *auth)
    assert json.loads(r.stdout)["ServerCount"] == 1
    r = lbmgmt("set", addr, BAL, "MessageTimeout", "2500", *auth)
    assert (r.returncode, json.loads(r.stdout)) == (0, 2500)
    r = lbmgmt("invoke", addr, BAL, "drainServer", edge.guid, *auth)
    assert (r.returncode, json.loads(r.stdout)) == (0, None)
    r = lbmgmt("call", addr, "queryNames", "lbmgmt:type=Server,*", *auth)
    assert json.loads(r.stdout) == [f"lbmgmt:type=Server,guid={edge.guid}"]
    r = lbmgmt("invoke", addr, BAL, "listServers", *auth)
    assert json.loads(r.stdout)[0]["drained"] is True

    r = lbmgmt("set", addr, BAL, "MessageTimeout", "2500", "--user", "viewer",
               "--password-file", str(tmp_path / "pw"))
    assert r.returncode == 1 and json.loads(r.stderr)["code"] == -32006
    r = lbmgmt("get", addr, BAL, "Nope", *auth)
    assert r.returncode == 1 and json.loads(r.stderr)["code"] == -32002
    r = lbmgmt("get", addr, BAL, "ServerCount")
    assert r.returncode == 3 and "login required" in r.stderr
    r = lbmgmt("get", f"{HOST}:{free_port()}", BAL, "ServerCount")
    assert r.returncode == 3 and "cannot connect" in r.stderr and "Traceback" not in r.stderr

    r = subprocess.run([sys.executable, "-m", "lbmgmt", "hash-password"], input="s3cret\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith('password = "scrypt$')
    r = lbmgmt("new-token")
    assert "token_sha256 = " in r.stdout

    # Params by name, as name=value or one JSON object; by position as ever.
    r = lbmgmt("call", addr, "pollNotifications", "since=0", "timeout=0",
               'types=["lbmgmt.server.drained"]', *auth)
    assert [n["type"] for n in json.loads(r.stdout)["notifications"]] == [
        "lbmgmt.server.drained"]
    r = lbmgmt("call", addr, "getAttribute", "--params",
               json.dumps({"name": BAL, "attribute": "ServerCount"}), *auth)
    assert (r.returncode, json.loads(r.stdout)) == (0, 1)
    r = lbmgmt("call", addr, "getAttribute", "--params", "5", *auth)
    assert r.returncode == 2 and "JSON object" in r.stderr
    r = lbmgmt("call", addr, "getAttribute", f"name={BAL}", "Grace", *auth)  # mixed
    assert r.returncode == 2 and "looks like a param by name" in r.stderr
    r = lbmgmt("set", addr, BAL, "Redirector", "NaN", *auth)  # a string, not bad JSON
    assert r.returncode == 1 and json.loads(r.stderr)["code"] == -32005
    # HOST:PORT needs its port (it went to port 80).
    r = lbmgmt("get", HOST, BAL, "ServerCount", *auth)
    assert r.returncode == 2 and "missing port" in r.stderr and "8084" in r.stderr
    # --user without a password off a terminal: said, not sent empty.
    r = lbmgmt("get", addr, BAL, "ServerCount", "--user", "viewer")
    assert r.returncode == 2 and "needs a password" in r.stderr
    # A reader that goes away: no traceback (was a BrokenPipeError).
    with subprocess.Popen([sys.executable, "-m", "lbmgmt", "call", addr, "rpc.discover",
                           *auth], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # gone before the answer is written, as `| head -0` would be
        err = proc.stderr.read().decode()
        assert proc.wait(30) == 141 and "Traceback" not in err and "Broken" not in err


async def test_the_cli_asks_for_a_password_on_a_terminal(fleet, tmp_path):
    import os
    import pty
    import select

    lb = fleet.balancer(config={"management": credentials(tmp_path, "t" * 40)})
    await up(fleet, Rpc(fleet.session, lb.mgmt_url, basic("viewer", "view-pw")))
    pid, master = pty.fork()
    if pid == 0:  # the child, on the new terminal: as a person types it
        os.execv(sys.executable, [sys.executable, "-m", "lbmgmt", "get",
                                  f"{HOST}:{lb.mgmt_port}", BAL, "ServerCount", "-u",
                                  "viewer"])
    seen = b""

    async def read_until(text: bytes) -> None:
        nonlocal seen
        async def there() -> bool:
            nonlocal seen
            if select.select([master], [], [], 0)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:  # the child is gone and its terminal with it
                    return True
            return text in seen
        await wait_until(there, what=f"{text!r} on the terminal")
        assert text in seen, seen

    try:
        await read_until(b"password for viewer: ")
        os.write(master, b"view-pw\n")
        await read_until(b"\n0")  # the answer: no edges
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert b"view-pw" not in seen  # not echoed
    finally:
        os.close(master)


async def test_dropped_reports_are_counted_and_notified(fleet):
    import socket
    lb = fleet.balancer()
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(50):
            s.sendto(b"LB" + b"\0" * 100, (HOST, lb.udp_port))

    async def all_notified():  # the rate limit itself is tested with a hand-driven clock
        batch = await rpc.ok("pollNotifications", 0, 0, ["lbmgmt.reports.dropped"])
        return sum(n["data"]["byReason"].get("malformed", 0)
                   for n in batch["notifications"]) == 50
    await wait_until(all_notified, what="dropped-reports notification")
    assert await rpc.ok("getAttribute", BAL, "ReportsDropped") == {
        "bad-auth": 0, "malformed": 50, "replay": 0, "stale": 0, "oversize": 0, "throttled": 0}


async def test_stdlib_example_script_reads_everything_and_follows(fleet):
    from pathlib import Path
    lb = fleet.balancer()
    edge = fleet.edge("e", [lb])
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)

    async def listed():
        return len(await rpc.ok("queryNames", "lbmgmt:type=Server,*")) == 1
    await wait_until(listed, what="edge listed")
    script = Path(__file__).parents[2] / "examples" / "jsonrpc_client.py"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), f"{HOST}:{lb.mgmt_port}", "--follow", "--polls", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    await parked_polls(rpc, 1)  # the dump is done and the script's long poll waits
    edge.signal(15)
    out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert "you are readwrite" in text
    assert f"lbmgmt:type=Server,guid={edge.guid}" in text
    assert "rw MessageTimeout" in text and "op drainServer(guid: string)" in text
    assert "lbmgmt.server.left" in text


# -- what a web page could make a browser send (issue 13) -------------------------------
SET_GRACE = json.dumps({"jsonrpc": "2.0", "method": "setAttribute",
                        "params": [BAL, "Grace", 501], "id": 1})


async def post(fleet: Fleet, port: int, headers: dict[str, str]) -> int:
    async with fleet.session.post(f"http://{HOST}:{port}/jsonrpc", data=SET_GRACE,
                                  headers=headers) as r:
        return r.status


@pytest.mark.parametrize(("headers", "status", "reason"), [
    # the attack as found: a page on attacker.example, DNS-rebound to the loopback port
    ({"Host": "attacker.example:8084", "Origin": "http://attacker.example",
      "Content-Type": "text/plain"}, 421, "host"),
    # the same page without rebinding: a cross-origin "simple" request, no preflight
    ({"Origin": "http://attacker.example", "Content-Type": "text/plain"}, 403, "origin"),
    # names that parse as an address only if read carelessly
    ({"Host": "[::1]evil.example", "Content-Type": "application/json"}, 421, "host"),
    ({"Host": "fe80::1%evil.example", "Content-Type": "application/json"}, 421, "host"),
    # a form post from a page the browser opened from disk, or a sandboxed frame
    ({"Origin": "null", "Content-Type": "application/json"}, 403, "origin"),
    # no Origin (curl, an old browser's form): still not JSON
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "content_type"),
    ({"Content-Type": "text/plain"}, 415, "content_type"),
])
async def test_requests_a_web_page_could_forge_are_refused_and_counted(fleet, headers, status,
                                                                      reason):
    lb = fleet.balancer()
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)
    assert await post(fleet, lb.mgmt_port, headers) == status
    assert await rpc.ok("getAttribute", BAL, "Grace") == 500  # nothing changed
    refused = await rpc.ok("getAttribute", "lbmgmt:type=Management", "RefusedRequests")
    assert refused[reason] == 1 and sum(refused.values()) == 1
    # and the port's own page, curl and scripts still answer
    same_origin = {"Origin": f"http://{HOST}:{lb.mgmt_port}", "Content-Type": "application/json"}
    assert await post(fleet, lb.mgmt_port, same_origin) == 200
    assert await rpc.ok("getAttribute", BAL, "Grace") == 501


async def test_names_and_origins_the_operator_lists_are_taken(fleet):
    lb = fleet.balancer(config={"management": {
        "allowed_hosts": ["lb.example.net"], "allowed_origins": ["https://ops.example.net"]}})
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)
    json_type = {"Content-Type": "application/json"}
    assert await post(fleet, lb.mgmt_port, {"Host": "LB.example.net:8084", **json_type}) == 200
    assert await post(fleet, lb.mgmt_port, {"Host": "other.example.net", **json_type}) == 421
    assert await post(fleet, lb.mgmt_port, {"Origin": "https://ops.example.net",
                                            **json_type}) == 200
    assert await post(fleet, lb.mgmt_port, {"Origin": "https://evil.example.net",
                                            **json_type}) == 403


async def test_no_code_is_loaded_from_a_management_call(fleet):
    plugin = "lbmgmt.balancer.redirectors:RoundRobin"  # a module:Class the config names
    lb = fleet.balancer(config={"balancer": {"redirector": plugin}})
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)
    error = await rpc.error("setAttribute", BAL, "Redirector", "this:X")
    assert error["code"] == -32005 and "config file" in error["message"]  # BAD_PARAMETER
    assert "Zen of Python" not in lb.stderr and "Beautiful is better" not in lb.stderr
    assert await rpc.ok("setAttribute", BAL, "Redirector", "p2c") == "p2c"  # a built-in
    assert await rpc.ok("setAttribute", BAL, "Redirector", plugin) == plugin  # the config's
    error = await rpc.error("setAttribute", BAL, "Redirector",
                            "lbmgmt.balancer.redirectors:Weighted")
    assert error["code"] == -32005
