"""The management model without sockets: names, MBeans, roles, notifications, auth."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from lbmgmt.configfile import ConfigError, ConfigFile
from lbmgmt.management import errors
from lbmgmt.management.api import METHODS, CallContext, NotificationPulse
from lbmgmt.management.auth import (Credentials, LoginLimiter, User, hash_password, hash_token,
                                    verify_password)
from lbmgmt.management.config import is_loopback, load_management
from lbmgmt.management.jsonrpc import JsonRpcDispatcher
from lbmgmt.management.mbean import Impact, MBean, attribute, check_value, operation
from lbmgmt.management.metrics import render_metrics, snake
from lbmgmt.management.notifications import NotificationBuffer
from lbmgmt.management.objectname import ObjectName
from lbmgmt.management.server import MBeanServer, Role


# -- object names --------------------------------------------------------------
def test_object_name_parse_format_canonical():
    name = ObjectName.parse("lbmgmt:type=Server,guid=abc")
    assert str(name) == "lbmgmt:type=Server,guid=abc"
    assert name.canonical == "lbmgmt:guid=abc,type=Server"
    assert name == ObjectName.parse("lbmgmt:guid=abc,type=Server")
    assert name.get("guid") == "abc" and name.get("nope") is None
    assert not name.is_pattern
    assert ObjectName.of("lbmgmt", type="Balancer") == ObjectName.parse("lbmgmt:type=Balancer")


@pytest.mark.parametrize("pattern, matches", [
    ("*:*", {"a", "b", "c", "d"}),
    ("lbmgmt:*", {"a", "b", "c"}),
    ("lbmgmt:type=Server,*", {"b", "c"}),
    ("lbmgmt:type=Server,guid=*", {"b", "c"}),
    ("lbmgmt:type=Server,guid=1?", {"b"}),
    ("lbmgmt:type=Server", set()),  # not a property pattern: needs exactly these keys
    ("lbmgmt:type=Balancer", {"a"}),
    ("lb*:type=Balancer", {"a"}),
    ("other:*", {"d"}),
])
def test_object_name_patterns(pattern, matches):
    names = {"a": "lbmgmt:type=Balancer", "b": "lbmgmt:type=Server,guid=12",
             "c": "lbmgmt:type=Server,guid=345", "d": "other:type=X"}
    p = ObjectName.parse(pattern)
    got = {k for k, v in names.items() if p.matches(ObjectName.parse(v))}
    assert got == matches


@pytest.mark.parametrize("bad", ["", "lbmgmt", "lbmgmt:", "lbmgmt:type", "lbmgmt:=x",
                                 "lbmgmt:type=a,type=b", "lbmgmt:*,type=a", "lb,x:type=a",
                                 "lbmgmt:type=a\"b"])
def test_object_name_errors(bad):
    with pytest.raises(ValueError):
        ObjectName.parse(bad)


# -- MBeans ----------------------------------------------------------------------
class Thing(MBean):
    """A test MBean."""

    notification_types = ("thing.happened",)

    def __init__(self) -> None:
        self.level = 3
        self.calls: list[tuple] = []

    @attribute("integer", "The level", unit="ms")
    def Level(self) -> int:
        return self.level

    @Level.setter
    def _set_level(self, value: int) -> None:
        if value > 100:
            raise ValueError("Level must be at most 100")
        self.level = value

    @attribute("string", "A name", metric=None)
    def Name(self) -> str:
        return "thing"

    @attribute("object", "Counts", metric="counter", metric_label="kind")
    def Counts(self) -> dict[str, int]:
        return {"a": 1, "b": 2}

    @operation(Impact.INFO, "Add two numbers", a="first", b="second")
    def add(self, a: int, b: float) -> float:
        return a + b

    @operation(Impact.ACTION, "Do something")
    async def act(self, what: str, force: bool) -> str:
        self.calls.append((what, force))
        if what == "missing":
            raise KeyError("no such thing")
        return f"did {what}"

    @operation(Impact.INFO, "Blows up")
    def bug(self) -> None:
        raise RuntimeError("secret internal detail")


def test_mbean_info_from_declarations():
    info = Thing.mbean_info()
    assert info.description == "A test MBean."
    assert list(info.attributes) == ["Level", "Name", "Counts"]
    assert info.attributes["Level"].writable and not info.attributes["Name"].writable
    assert info.attributes["Level"].unit == "ms"
    add = info.operations["add"]
    assert add.impact is Impact.INFO and add.return_type == "number"
    assert [(p.name, p.type, p.description) for p in add.parameters] == [
        ("a", "integer", "first"), ("b", "number", "second")]
    assert [p.type for p in info.operations["act"].parameters] == ["string", "boolean"]


@pytest.mark.parametrize("value, type_, ok", [
    (1, "integer", True), (True, "integer", False), (1.5, "integer", False),
    (1, "number", True), (float("nan"), "number", False), ("x", "number", False),
    ("x", "string", True), (1, "string", False), (False, "boolean", True),
    ({}, "object", True), ([], "array", True), ({}, "array", False),
])
def test_check_value(value, type_, ok):
    if ok:
        check_value(value, type_, "v")
    else:
        with pytest.raises(errors.BadParameter):
            check_value(value, type_, "v")


@pytest.fixture
def server():
    srv = MBeanServer(NotificationBuffer(capacity=5), clock=lambda: 1000.0)
    srv.register("test:type=Thing", Thing())
    return srv


def name(text="test:type=Thing"):
    return ObjectName.parse(text)


async def test_server_get_set_invoke_and_every_error(server):
    assert server.get_attribute(name(), "Level") == 3
    assert server.set_attribute(name(), "Level", 7, Role.READWRITE) == 7
    [n], lost = server.notifications.since(0)
    assert (n.type, n.source, n.data) == ("jmx.attribute.change", "test:type=Thing",
                                          {"attribute": "Level", "type": "integer",
                                           "oldValue": 3, "newValue": 7})
    assert await server.invoke(name(), "add", [2, 0.5], Role.READONLY) == 2.5
    assert await server.invoke(name(), "add", {"a": 1, "b": 2}, Role.READONLY) == 3.0
    assert await server.invoke(name(), "act", ["x", True], Role.READWRITE) == "did x"

    cases = [
        (lambda: server.get_attribute(name("test:type=Nope"), "Level"), errors.UNKNOWN_MBEAN),
        (lambda: server.get_attribute(name(), "Nope"), errors.UNKNOWN_ATTRIBUTE),
        (lambda: server.set_attribute(name(), "Name", "x", Role.READWRITE), errors.NOT_WRITABLE),
        (lambda: server.set_attribute(name(), "Level", "7", Role.READWRITE),
         errors.BAD_PARAMETER),
        (lambda: server.set_attribute(name(), "Level", 101, Role.READWRITE),
         errors.BAD_PARAMETER),
        (lambda: server.set_attribute(name(), "Level", 8, Role.READONLY), errors.FORBIDDEN),
    ]
    for call, code in cases:
        with pytest.raises(errors.ManagementError) as err:
            call()
        assert err.value.code == code, err.value
    async_cases = [
        (server.invoke(name(), "nope", [], Role.READWRITE), errors.UNKNOWN_OPERATION),
        (server.invoke(name(), "act", ["x", True], Role.READONLY), errors.FORBIDDEN),
        (server.invoke(name(), "add", [1], Role.READONLY), errors.BAD_PARAMETER),
        (server.invoke(name(), "add", ["1", 2], Role.READONLY), errors.BAD_PARAMETER),
        (server.invoke(name(), "add", {"a": 1}, Role.READONLY), errors.BAD_PARAMETER),
        (server.invoke(name(), "add", "1,2", Role.READONLY), errors.INVALID_PARAMS),
        (server.invoke(name(), "act", ["missing", False], Role.READWRITE),
         errors.OPERATION_FAILED),
    ]
    for coro, code in async_cases:
        with pytest.raises(errors.ManagementError) as err:
            await coro
        assert err.value.code == code, err.value
    assert server.get_attribute(name(), "Level") == 7  # failed sets changed nothing


def test_server_info_says_what_the_role_may_do(server):
    ro = server.info(name(), Role.READONLY)
    assert ro["access"] == {"role": "readonly", "canWrite": False, "canInvokeAction": False}
    assert {a["name"]: a["canWrite"] for a in ro["attributes"]} == {
        "Level": False, "Name": False, "Counts": False}
    assert {o["name"]: o["canInvoke"] for o in ro["operations"]} == {
        "add": True, "act": False, "bug": True}
    rw = server.info(name(), Role.READWRITE)
    assert {a["name"]: a["canWrite"] for a in rw["attributes"]}["Level"] is True
    assert rw["notifications"] == ["thing.happened"]


def test_register_query_unregister(server):
    server.register("test:type=Thing,id=2", Thing())
    assert [str(n) for n in server.query("test:type=Thing,*")] == [
        "test:type=Thing", "test:type=Thing,id=2"]
    with pytest.raises(ValueError):
        server.register("test:type=Thing", Thing())
    with pytest.raises(ValueError):
        server.register("test:type=*", Thing())
    server.unregister("test:type=Thing,id=2")
    assert len(server.query("*:*")) == 1


def test_notification_buffer_bounds_and_lost_count():
    buf = NotificationBuffer(capacity=3)
    for i in range(5):
        buf.emit("t", "s", f"m{i}", now=float(i))
    items, lost = buf.since(0)
    assert [n.sequence for n in items] == [3, 4, 5] and lost == 2
    items, lost = buf.since(3)
    assert [n.sequence for n in items] == [4, 5] and lost == 0
    assert buf.since(5) == ([], 0)
    assert buf.since(4, limit=10)[0][0].message == "m4"


# -- the JSON-RPC layer over it ---------------------------------------------------
@pytest.fixture
def rpc(server):
    dispatcher = JsonRpcDispatcher(METHODS)
    pulse = NotificationPulse(server.notifications)

    async def call(body, role=Role.READWRITE):
        text = body if isinstance(body, str) else json.dumps(body)
        return await dispatcher.dispatch(text, CallContext(server, role, pulse, "test"))
    call.pulse = pulse
    return call


def req(method, params=None, id_=1):
    out = {"jsonrpc": "2.0", "method": method, "id": id_}
    if params is not None:
        out["params"] = params
    return out


async def test_jsonrpc_errors_never_leak_internals(rpc):
    answer = await rpc(req("invoke", ["test:type=Thing", "bug", []]))
    assert answer["error"] == {"code": -32603, "message": "Internal error"}
    assert "secret" not in json.dumps(answer)


async def test_jsonrpc_protocol_errors(rpc):
    assert (await rpc("{not json"))["error"]["code"] == -32700
    assert (await rpc("[]"))["error"]["code"] == -32600
    assert (await rpc({"jsonrpc": "1.0", "method": "version", "id": 1}))["error"]["code"] \
        == -32600
    assert (await rpc(req("noSuchMethod")))["error"]["code"] == -32601
    assert (await rpc(req("getAttribute", ["test:type=Thing"])))["error"]["code"] == -32602
    assert (await rpc(req("getAttribute", [5, "Level"])))["error"]["code"] == -32602
    bad_name = await rpc(req("getAttribute", ["no-colon", "Level"]))
    assert bad_name["error"]["code"] == -32602 and "no ':'" in bad_name["error"]["message"]
    assert (await rpc(req("getAttribute", ["test:type=*", "Level"])))["error"]["code"] == -32602


async def test_jsonrpc_batch_is_answered_element_by_element(rpc):
    answers = await rpc([req("getAttribute", ["test:type=Thing", "Level"], 1),
                         {"jsonrpc": "2.0", "id": 2},  # invalid element
                         req("getAttribute", ["test:type=Nope", "Level"], 3),
                         {"jsonrpc": "2.0", "method": "version"}])  # a notification
    by_id = {a.get("id"): a for a in answers}
    assert len(answers) == 3
    assert by_id[1]["result"] == 3
    assert by_id[None]["error"]["code"] == -32600
    assert by_id[3]["error"]["code"] == -32001
    assert await rpc([{"jsonrpc": "2.0", "method": "version"}]) is None
    assert await rpc({"jsonrpc": "2.0", "method": "version"}) is None


async def test_get_attributes_with_names_that_are_not_strings_is_invalid_params(rpc):
    for names in ([["x"]], [1], [{"a": 1}]):  # was -32603 and a traceback, or -32002
        answer = await rpc(req("getAttributes", ["test:type=Thing", names]))
        assert answer["error"]["code"] == -32602, names


async def test_get_attributes_all_and_named(rpc):
    answer = await rpc(req("getAttributes", ["test:type=Thing"]))
    assert answer["result"] == {"Level": 3, "Name": "thing", "Counts": {"a": 1, "b": 2}}
    answer = await rpc(req("getAttributes", {"name": "test:type=Thing",
                                             "attributes": ["Name"]}))
    assert answer["result"] == {"Name": "thing"}


async def test_a_since_from_another_epoch_or_beyond_the_last_starts_again(rpc, server):
    buffer = server.notifications
    buffer.capacity = 3
    for i in range(5):
        buffer.emit("t", "test:type=Thing", f"m{i}", now=0)
    epoch = buffer.epoch
    same = (await rpc(req("pollNotifications", [4, 0, None, epoch])))["result"]
    assert [n["sequence"] for n in same["notifications"]] == [5] and same["reset"] is False
    for since, poll_epoch in ((4, "0123456789abcdef"), (9, None), (9, epoch)):
        answer = (await rpc(req("pollNotifications", [since, 0, None, poll_epoch])))["result"]
        assert answer["reset"] is True and answer["epoch"] == epoch
        assert [n["sequence"] for n in answer["notifications"]] == [3, 4, 5]
        assert answer["lost"] == 2 and answer["next"] == 5  # 1 and 2 fell out: said
    assert (await rpc(req("pollNotifications", [0, 0, None, 5])))["error"]["code"] == -32602


async def test_long_poll_wakes_at_once_and_times_out(rpc, server):
    loop = asyncio.get_running_loop()
    start = loop.time()
    answer = await rpc(req("pollNotifications", [None, 0.2]))
    assert answer["result"] == {"notifications": [], "next": 0, "lost": 0, "reset": False,
                                "epoch": server.notifications.epoch}
    assert loop.time() - start >= 0.19

    poll = asyncio.create_task(rpc(req("pollNotifications", {"since": 0, "timeout": 60})))
    while not rpc.pulse.parked:  # until the poll waits on the pulse
        await asyncio.sleep(0)
    assert not poll.done()
    server.set_attribute(name(), "Level", 9, Role.READWRITE)
    answer = await asyncio.wait_for(poll, 30)  # woken by the notification, not its 60 s
    [n] = answer["result"]["notifications"]
    assert n["type"] == "jmx.attribute.change" and answer["result"]["next"] == n["sequence"]


async def test_poll_filters_by_type(rpc, server):
    server.notifications.emit("a", "s", "one", now=1)
    server.notifications.emit("b", "s", "two", now=2)
    answer = (await rpc(req("pollNotifications", [0, 0, ["b"]])))["result"]
    assert [n["message"] for n in answer["notifications"]] == ["two"]
    assert answer["next"] == 2


async def test_rpc_discover_documents_every_method_and_error(rpc):
    doc = (await rpc(req("rpc.discover")))["result"]
    assert doc["openrpc"].startswith("1.")
    assert {m["name"] for m in doc["methods"]} == set(METHODS)
    codes = {e["code"] for e in doc["components"]["errors"].values()}
    assert {-32001, -32002, -32003, -32004, -32005, -32006, -32007, -32602, -32603} <= codes


def test_metrics_exposition(server):
    text = render_metrics(server).decode()
    assert "# TYPE test_thing_level gauge" in text
    assert "test_thing_level 3.0" in text
    assert 'test_thing_counts_total{kind="a"} 1.0' in text
    assert "test_thing_name" not in text
    assert snake("AvailableServerCount") == "available_server_count"
    assert snake("HTTPRedirects") == "http_redirects"


ODD_COUNTS = {'a"b': 1, "c\\d": 2.5, "e\nf": float("inf"), "g": 1e22, "h": True}


class Odd(MBean):
    """Label values and a description that need escaping, and numbers of every kind."""

    @attribute("object", 'Per "kind"\\ of thing\nin two lines', metric="counter",
               metric_label="kind")
    def Counts(self) -> dict[str, float]:
        return ODD_COUNTS


def test_metrics_text_is_what_prometheus_client_writes_and_reads():
    # The exposition is written line by line (no per-sample objects): it must be
    # byte for byte what prometheus_client's own writer makes of the same samples.
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily
    from prometheus_client.parser import text_string_to_metric_families

    srv = MBeanServer(NotificationBuffer(capacity=5), clock=lambda: 1000.0)
    srv.register("test:type=Odd,guid=x-y", Odd())
    family = CounterMetricFamily("test_odd_counts", 'Per "kind"\\ of thing\nin two lines',
                                 labels=["guid", "kind"])
    for kind, value in ODD_COUNTS.items():
        family.add_metric(["x-y", kind], float(value))

    class Collector:
        def collect(self):
            yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())  # type: ignore[arg-type]
    assert render_metrics(srv) == generate_latest(registry)
    [parsed] = text_string_to_metric_families(render_metrics(srv).decode())
    assert {s.labels["kind"]: s.value for s in parsed.samples} == ODD_COUNTS


# -- auth ------------------------------------------------------------------------
def test_password_hash_round_trip_and_format():
    encoded = hash_password("hunter2")
    assert encoded.startswith("scrypt$16384$8$1$") and "hunter2" not in encoded
    assert verify_password("hunter2", encoded) and not verify_password("hunter3", encoded)
    assert not verify_password("x", "garbage") and not verify_password("x", "md5$1$2$3$4$5")


def write_creds(tmp_path, text):
    path = tmp_path / "users.toml"
    path.write_text(text)
    return path


async def test_credentials_basic_bearer_and_cache(tmp_path, monkeypatch):
    token = "tok-" + "x" * 40
    path = write_creds(tmp_path, f"""
[users.admin]
role = "readwrite"
password = "{hash_password('pw1')}"
[users.grafana]
role = "readonly"
token_sha256 = "{hash_token(token)}"
""")
    creds = Credentials.load(path)
    assert (await creds.check_basic("admin", "pw1")).role is Role.READWRITE
    assert await creds.check_basic("admin", "nope") is None
    assert await creds.check_basic("nobody", "pw1") is None
    assert creds.check_bearer(token).name == "grafana"
    assert creds.check_bearer("other") is None
    calls = []
    import lbmgmt.management.auth as auth
    monkeypatch.setattr(auth, "verify_password", lambda *a: calls.append(a) or False)
    assert await creds.check_basic("admin", "pw1") is not None and calls == []  # cached
    assert await creds.check_basic("admin", "bad") is None and len(calls) == 1  # never cached


@pytest.mark.parametrize("text, line, field, message", [
    ('[users.a]\nrole = "admin"\npassword = "x"\n', 2, "users.a.role", "readonly or readwrite"),
    ('[users.a]\nrole = "readonly"\npassword = "plain"\n', 3, "users.a.password",
     "scrypt hash"),
    ('[users.a]\nrole = "readonly"\n', 1, "users.a.password", "give a password"),
    ('[users.a]\nrole = "readonly"\ntoken_sha256 = "abc"\n', 3, "users.a.token_sha256",
     "64 hex"),
    ('[users.a]\nrole = "readonly"\ntoken_sha256 = "' + "a" * 64 + '"\nextra = 1\n', 4,
     "users.a.extra", "unknown key"),
    ('[people]\n', 1, "people", "unknown table"),
])
def test_credentials_errors_name_file_line_field(tmp_path, text, line, field, message):
    path = write_creds(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        Credentials.load(path)
    assert (err.value.line, err.value.field) == (line, field), str(err.value)
    assert message in str(err.value)


def test_login_limiter_locks_out_and_recovers():
    limiter = LoginLimiter(max_failures=3, window=60, lockout=30)
    for t in range(3):
        assert limiter.retry_after("1.2.3.4", "ops", t) == 0
        limiter.failure("1.2.3.4", "ops", t)
    assert limiter.retry_after("1.2.3.4", "ops", 3) == pytest.approx(29)
    assert limiter.retry_after("5.6.7.8", "ops", 3) == 0  # other addresses unaffected
    assert limiter.retry_after("1.2.3.4", "viewer", 3) == 0  # and other users
    assert limiter.retry_after("1.2.3.4", "ops", 33) == 0
    assert limiter.failed_total == 3 and limiter.refused_total == 1
    limiter.failure("1.2.3.4", "ops", 100)
    limiter.failure("1.2.3.4", "ops", 200)  # outside the window of the first
    limiter.failure("1.2.3.4", "ops", 201)
    assert limiter.retry_after("1.2.3.4", "ops", 202) == 0


def test_another_users_success_resets_no_failure_count():
    """The attack found: four guesses at admin, one good viewer login, again and again."""
    limiter = LoginLimiter(max_failures=5, max_address_failures=20, window=60, lockout=60)
    guesses = 0
    now = 0.0
    while limiter.retry_after("6.6.6.6", "admin", now) == 0 and guesses < 100:
        limiter.failure("6.6.6.6", "admin", now)
        guesses += 1
        if guesses % 4 == 0:
            limiter.success("6.6.6.6", "viewer")  # the attacker's own valid account
        now += 0.5
    assert guesses == 5  # locked out after max_failures, as if viewer had never logged in
    # Spread over many user names, the address's own count stops it.
    limiter = LoginLimiter(max_failures=5, max_address_failures=20, window=60, lockout=60)
    for i in range(20):
        assert limiter.retry_after("6.6.6.6", f"user{i}", i) == 0
        limiter.failure("6.6.6.6", f"user{i}", i)
        limiter.success("6.6.6.6", "viewer")
    assert limiter.retry_after("6.6.6.6", "someone-else", 21) > 0
    assert limiter.retry_after("6.6.6.6", "viewer", 21) > 0  # the whole address waits
    assert limiter.retry_after("7.7.7.7", "viewer", 21) == 0


def test_nameless_failures_count_once_against_the_address_only():
    """Bearer tokens carry no user name: a bad one counts once, toward the address's 20."""
    limiter = LoginLimiter(max_failures=5, max_address_failures=20, window=60, lockout=60)
    for t in range(19):
        limiter.failure("1.2.3.4", None, t)
    assert limiter.retry_after("1.2.3.4", None, 19) == 0  # not 5, and not counted twice
    assert limiter.failed_total == 19
    limiter.failure("1.2.3.4", None, 19)
    assert limiter.retry_after("1.2.3.4", None, 20) > 0


def test_a_nameless_success_clears_nothing():
    limiter = LoginLimiter(max_failures=5, max_address_failures=20, window=60, lockout=60)
    for t in range(19):
        limiter.failure("1.2.3.4", f"user{t}", t)
        limiter.success("1.2.3.4", None)  # a good bearer token between guesses
    limiter.failure("1.2.3.4", "user19", 19)
    assert limiter.retry_after("1.2.3.4", "viewer", 20) > 0


def test_a_success_clears_only_its_own_users_count():
    limiter = LoginLimiter(max_failures=3, window=60, lockout=30)
    for t in range(2):
        limiter.failure("1.2.3.4", "ops", t)
    limiter.success("1.2.3.4", "ops")  # the user got its password right at last
    for t in range(2, 4):
        limiter.failure("1.2.3.4", "ops", t)
    assert limiter.retry_after("1.2.3.4", "ops", 5) == 0


def creds_with(*names: str) -> Credentials:
    return Credentials([User(n, Role.READONLY, password_hash=hash_password("right"))
                        for n in names])


def test_unknown_and_known_users_cost_the_same_one_scrypt(monkeypatch):
    creds = creds_with("ops")
    calls = []
    real = hashlib.scrypt

    def counted(password, **kwargs):
        calls.append((kwargs["n"], kwargs["r"], kwargs["p"]))
        return real(password, **kwargs)
    monkeypatch.setattr(hashlib, "scrypt", counted)
    assert creds.verify("ops", "wrong") is None
    known = list(calls)
    calls.clear()
    assert creds.verify("nobody", "wrong") is None
    assert calls == known and len(known) == 1  # one scrypt, the same parameters


# -- config ----------------------------------------------------------------------
def load_mgmt(tmp_path, text, port=8084):
    path = tmp_path / "d.toml"
    path.write_text(text)
    return load_management(ConfigFile.load(path), port)


def test_management_config_defaults_to_loopback(tmp_path):
    cfg = load_mgmt(tmp_path, "")
    assert (cfg.listen.host, cfg.listen.port, cfg.enabled, cfg.credentials) == (
        "127.0.0.1", 8084, True, None)
    assert is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.5")
    assert not is_loopback("") and not is_loopback("10.0.0.1") and not is_loopback("lb.example")


@pytest.mark.parametrize("listen", ["*:8084", "0.0.0.0:8084", "10.1.2.3:8084", "[::]:8084"])
def test_non_loopback_bind_needs_credentials(tmp_path, listen):
    with pytest.raises(ConfigError) as err:
        load_mgmt(tmp_path, f'[management]\nlisten = "{listen}"\n')
    assert err.value.field == "management.listen" and err.value.line == 2
    assert "needs credentials_file" in str(err.value)
    write_creds(tmp_path, f'[users.a]\nrole = "readonly"\npassword = "{hash_password("p")}"\n')
    cfg = load_mgmt(tmp_path, f'[management]\nlisten = "{listen}"\n'
                              'credentials_file = "users.toml"\n')
    assert cfg.credentials is not None


def test_tls_needs_cert_and_key(tmp_path):
    with pytest.raises(ConfigError, match="both tls_cert_file and tls_key_file"):
        load_mgmt(tmp_path, '[management]\ntls_cert_file = "c.pem"\n')


async def test_shipped_users_example_loads():
    from pathlib import Path
    creds = Credentials.load(Path(__file__).parents[2] / "examples" / "users.toml")
    assert (await creds.check_basic("ops", "change-me-ops")).role is Role.READWRITE
    assert (await creds.check_basic("viewer", "change-me-view")).role is Role.READONLY
    assert creds.check_bearer("change-me-token").name == "grafana"


def test_basic_login_cache_is_touched_on_the_loop_only():
    """verify() runs in a thread: it must not touch the cache; cached/remember do."""
    creds = Credentials([User("ops", Role.READWRITE, hash_password("pw"))])
    assert creds.verify("ops", "pw").name == "ops" and not creds._verified
    assert creds.cached("ops", "pw") is None
    creds.remember("ops", "pw", creds.users["ops"])
    assert creds.cached("ops", "pw").name == "ops" and creds.cached("ops", "x") is None


def test_allowed_origins_must_be_origins(tmp_path):
    from lbmgmt.configfile import ConfigError, ConfigFile
    from lbmgmt.management.config import load_management
    path = tmp_path / "lb.toml"
    path.write_text('[management]\nallowed_hosts = ["LB.example.net"]\n'
                    'allowed_origins = ["https://ops.example.net/"]\n')
    config = load_management(ConfigFile.load(path), 8084)
    assert config.allowed_hosts == ("lb.example.net",)
    assert config.allowed_origins == ("https://ops.example.net",)
    path.write_text('[management]\nallowed_origins = ["ops.example.net"]\n')
    with pytest.raises(ConfigError, match="allowed_origins"):
        load_management(ConfigFile.load(path), 8084)
