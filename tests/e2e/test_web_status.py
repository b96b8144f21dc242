"""The management port's status page (GET /) and examples/player.html, in a real browser.

Headless Chromium (Debian's ``chromium`` package) driven by Playwright-for-Python, which
is told to use that browser: no browser is downloaded. scripts/test installs both and
sets LBMGMT_REQUIRE_REAL_CLIENTS=1, so on CI a missing browser fails these tests instead
of skipping them.

``LBMGMT_SCREENSHOTS=DIR`` (docs/screenshots, say) makes the demo test save the
balancer's and an edge's page there as status-balancer.png and status-edge.png:

    LBMGMT_SCREENSHOTS=docs/screenshots .venv/bin/pytest tests/e2e/test_web_status.py \\
        -k "demo and uvloop"
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tomli_w
from aiohttp import web

from lbmgmt.endpoints import Endpoint
from lbmgmt.httpserve import serve_app
from tests.e2e.fleet import DEADLINE, HOST, Fleet, free_port, wait_until
from tests.e2e.test_management import Rpc, up

try:
    from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
except ImportError:  # a plain `pip install .`: no test dependencies
    async_playwright = None  # type: ignore[assignment]

CHROMIUM = os.environ.get("LBMGMT_CHROMIUM", "/usr/bin/chromium")
HAVE = async_playwright is not None and os.access(CHROMIUM, os.X_OK)
if not HAVE and os.environ.get("LBMGMT_REQUIRE_REAL_CLIENTS"):
    raise RuntimeError("Chromium and Playwright are required (apt-get install chromium; "
                       "pip install -e '.[test]')")
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not HAVE, reason="needs chromium and playwright")]

BAL = "lbmgmt:type=Balancer"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCREENSHOTS = os.environ.get("LBMGMT_SCREENSHOTS")
REBOUND = "rebound.test"  # a name of "the attacker's" that the browser resolves to loopback
DRAIN = {"jsonrpc": "2.0", "id": 1, "method": "invoke", "params": [BAL, "drainServer", []]}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert async_playwright is not None
    expect.set_options(timeout=DEADLINE * 1000)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=[f"--host-resolver-rules=MAP {REBOUND} {HOST}"])
        try:
            yield chromium
        finally:
            await chromium.close()


class Tab:
    """A page, with what it said on its console (a CSP violation is said there)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.said: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.set_default_timeout(DEADLINE * 1000)
        page.on("console", lambda m: self.said.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("dialog", self._confirm)

    async def _confirm(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        await dialog.accept()

    @classmethod
    async def open(cls, context: BrowserContext, url: str) -> Tab:
        tab = cls(await context.new_page())
        response = await tab.page.goto(url)
        assert response is not None and response.status == 200, response
        return tab

    def check_clean(self) -> None:
        """No script error and nothing the page's Content-Security-Policy refused."""
        assert self.errors == []
        assert not [s for s in self.said if "Content Security Policy" in s], self.said

    def row(self, address: str) -> Any:
        return self.page.locator("#edges tbody tr", has_text=address)


async def new_context(browser: Browser, user: str | None = None,
                      password: str | None = None) -> BrowserContext:
    """A browser profile; with a user, it answers the port's Basic challenge as a person
    typing into the browser's login prompt would (only after a 401, never before)."""
    if user is None:
        return await browser.new_context(viewport={"width": 1200, "height": 800})
    assert password is not None
    return await browser.new_context(viewport={"width": 1200, "height": 800},
                                     http_credentials={"username": user, "password": password})


async def redirects(session: aiohttp.ClientSession, lb_url: str, times: int) -> set[str]:
    """Where ``times`` GET /loadbalancer sent clients."""
    seen = set()
    for _ in range(times):
        async with session.get(f"{lb_url}/loadbalancer") as r:
            if r.status == 200:
                seen.add((await r.text()).strip().removeprefix("redirect="))
    return seen


async def serve_dir(path: Path) -> tuple[web.AppRunner, str]:
    """``path`` as static files on a loopback port of its own: another origin."""
    app = web.Application()
    app.router.add_static("/", path)
    runner, (_, port) = await serve_app(app, Endpoint(HOST, 0))
    return runner, f"http://{HOST}:{port}"


# -- the demo, as a user runs it ------------------------------------------------------
DEMO_EDGE = re.compile(r"edge (\d+)\s+http://(\S+)\s+management (\S+)\s+guid (\S+)")


@contextlib.asynccontextmanager
async def demo(tmp_path: Path, daemon_loop: str) -> AsyncIterator[dict[str, Any]]:
    """``lbmgmt demo`` on free ports: its printed edges (address, management, guid)."""
    http_port, udp_port, mgmt_port = free_port(), free_port(2), free_port()
    out = tmp_path / "demo.out"
    with open(out, "w") as stdout, open(tmp_path / "demo.err", "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "lbmgmt", "demo", "--http-port",
                                 str(http_port), "--udp-port", str(udp_port), "--mgmt-port",
                                 str(mgmt_port)], stdout=stdout, stderr=stderr,
                                stdin=subprocess.DEVNULL,
                                env={**os.environ, "LBMGMT_LOOP": daemon_loop})
    try:
        async def printed() -> bool:
            assert proc.poll() is None, (tmp_path / "demo.err").read_text()
            return "/metrics" in out.read_text()
        await wait_until(printed, what="the demo's URLs")
        edges = [{"address": m[1], "mgmt": f"http://{m[2]}", "guid": m[3]}
                 for m in DEMO_EDGE.findall(out.read_text())]
        assert len(edges) == 3
        yield {"proc": proc, "lb": f"http://{HOST}:{http_port}",
               "mgmt": f"http://{HOST}:{mgmt_port}", "edges": edges}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


async def test_the_demo_on_the_page_edges_drain_undrain_edge_page_and_player(
        tmp_path, daemon_loop, browser):
    async with demo(tmp_path, daemon_loop) as d, aiohttp.ClientSession() as session:
        rpc = Rpc(session, d["mgmt"])
        addresses = {e["address"] for e in d["edges"]}
        context = await new_context(browser)
        tab = await Tab.open(context, d["mgmt"] + "/")
        page = tab.page

        # The three edges, live, with their addresses; a drain button each (no login on
        # loopback: readwrite).
        rows = page.locator("#edges tbody tr")
        await expect(rows).to_have_count(3)
        assert {t.strip() for t in await page.locator("#edges td.c-address").all_inner_texts()
                } == addresses
        await expect(page.locator("#title")).to_have_text(re.compile("lbmgmt balancer"))
        await expect(page.locator("#t-edges")).to_have_text("3")
        await expect(page.locator("#edges button")).to_have_text(["Drain"] * 3)

        # A drain clicked on the page: the balancer sends no client there any more.
        edge = d["edges"][0]
        await tab.row(edge["address"]).get_by_role("button", name="Drain").click()
        await expect(page.locator("#action")).to_contain_text(f"{edge['address']} drained")
        assert edge["address"] in tab.dialogs[-1]  # it asked first, naming the edge
        servers = {s["guid"]: s for s in await rpc.ok("invoke", BAL, "listServers", [])}
        assert servers[edge["guid"]]["drained"] is True
        assert edge["address"] not in await redirects(session, d["lb"], 60)
        await expect(tab.row(edge["address"]).locator(".c-state")).to_contain_text("DRAINED")

        # ...and an undrain brings it back (the demo's loads drift: ask until it is chosen).
        await tab.row(edge["address"]).get_by_role("button", name="Undrain").click()
        await expect(page.locator("#action")).to_contain_text(f"{edge['address']} undrained")

        async def back() -> bool:
            return edge["address"] in await redirects(session, d["lb"], 60)
        await wait_until(back, what="the undrained edge chosen again")
        await expect(tab.row(edge["address"]).get_by_role("button")).to_have_text("Drain")
        await expect(page.locator("#notifications")).to_contain_text(
            f"{edge['address']} undrained")
        await expect(page.locator("#notifications")).to_contain_text(
            f"{edge['address']} drained")
        await expect(page.locator("#t-rate")).not_to_have_text("–")  # counter deltas taken

        # The edge's own page, on its own management port.
        edge_tab = await Tab.open(context, edge["mgmt"] + "/")
        fields = edge_tab.page.locator("#sender")
        await expect(edge_tab.page.locator("#title")).to_have_text(re.compile("lbmgmt edge"))
        await expect(fields.locator("[data-field=address]")).to_have_text(edge["address"])
        await expect(fields.locator("[data-field=state]")).to_have_text("RUNNING")
        await expect(fields.locator("[data-field=draining]")).to_have_text("no")
        await expect(fields.locator("[data-field=monitor]")).to_have_text(re.compile("manual"))
        await expect(fields.locator("[data-field=guid]")).to_have_text(edge["guid"])
        await expect(edge_tab.page.locator("#targets tbody tr")).to_have_count(1)
        await expect(edge_tab.page.locator("#targets tbody td").nth(1)).to_have_text("ok")

        if SCREENSHOTS:
            folder = Path(SCREENSHOTS)
            folder.mkdir(parents=True, exist_ok=True)
            await expect(edge_tab.page.locator("[data-field=reports]")).not_to_contain_text(
                "(–/s)")
            await page.mouse.move(0, 0)  # no button under the pointer, hovered
            await page.screenshot(path=folder / "status-balancer.png", full_page=True)
            await edge_tab.page.screenshot(path=folder / "status-edge.png", full_page=True)

        # examples/player.html, served from another origin as the README has it, asks the
        # balancer's /loadbalancer and shows the edge it was given.
        runner, origin = await serve_dir(EXAMPLES)
        try:
            player = await Tab.open(context, f"{origin}/player.html?lb={d['lb']}"
                                             "&stream=live/webtest")
            await expect(player.page.locator("#edge")).not_to_have_text("asking…")
            chosen = (await player.page.locator("#edge").inner_text()).strip()
            assert chosen in addresses, chosen
            await expect(player.page.locator("#rtmp")).to_have_text(
                f"rtmp://{chosen}/live/webtest")
            await expect(player.page.locator("#hls")).to_have_attribute(
                "href", f"http://{HOST}/hls/webtest.m3u8")
            await expect(player.page.locator("#lb")).to_have_text(d["lb"])
            assert player.errors == []
        finally:
            await runner.cleanup()

        # The daemon gone: both pages say so, and keep the last figures greyed.
        d["proc"].send_signal(signal.SIGINT)
        assert await asyncio.to_thread(d["proc"].wait, DEADLINE) == 0
        await expect(page.locator("#status")).to_contain_text(
            f"Cannot reach the balancer at {d['mgmt'].removeprefix('http://')}")
        await expect(page.locator("#status")).to_have_class(re.compile("error"))
        await expect(page.locator("#edges tbody tr")).to_have_count(3)
        await expect(edge_tab.page.locator("#status")).to_contain_text("Cannot reach the edge")
        tab.check_clean()
        edge_tab.check_clean()
        await context.close()


# -- logins, roles and what a page elsewhere could send ---------------------------------
def users(tmp_path: Path) -> dict[str, str]:
    from lbmgmt.management.auth import hash_password  # writing the file only
    table = {"users": {"viewer": {"role": "readonly", "password": hash_password("view-pw")},
                       "ops": {"role": "readwrite", "password": hash_password("ops-pw")}}}
    (tmp_path / "users.toml").write_text(tomli_w.dumps(table))
    return {"credentials_file": "users.toml"}


def answer_with(status: int) -> Any:
    """A route handler: every call answered ``status`` by "the port" (in the browser)."""
    async def answer(route: Any) -> None:
        await route.fulfill(status=status, json={"error": "no"})
    return answer


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_logins_roles_and_requests_from_another_origin(fleet: Fleet, tmp_path, browser):
    lb = fleet.balancer(config={"management": users(tmp_path)})
    edges = [fleet.edge(f"e{i}", [lb]) for i in range(2)]
    ops = Rpc(fleet.http, lb.mgmt_url, basic("ops", "ops-pw"))
    await up(fleet, ops)

    async def both_listed() -> bool:
        return len(await ops.ok("invoke", BAL, "listServers", [])) == 2
    await wait_until(both_listed, what="both edges listed")
    page_url = lb.mgmt_url + "/"

    # No login: the page itself asks for one, with the challenge a browser prompts on
    # (the logins below are the browser's answers to it); a wrong one is told in words.
    async with fleet.http.get(page_url) as r:
        assert r.status == 401 and "Basic" in r.headers["WWW-Authenticate"]
    stranger = await new_context(browser, "nobody", "guess")
    response = await (await stranger.new_page()).goto(page_url)
    assert response is not None and response.status == 401
    assert "authentication required" in await response.text()
    await stranger.close()

    # readonly: every figure, no button; a drain forged from its own page is refused.
    viewer_context = await new_context(browser, "viewer", "view-pw")
    viewer = await Tab.open(viewer_context, page_url)
    await expect(viewer.page.locator("#edges tbody tr")).to_have_count(2)
    await expect(viewer.page.locator("#who")).to_contain_text("logged in as viewer (readonly)")
    await expect(viewer.page.locator("#edges button")).to_have_count(2)  # built, never shown
    for button in await viewer.page.locator("#edges button").all():
        await expect(button).to_be_hidden()
    await expect(viewer.page.get_by_role("button")).to_have_count(0)
    forged = await viewer.page.evaluate("""async (body) => {
        const r = await fetch("jsonrpc", {method: "POST", body: JSON.stringify(body),
                                          headers: {"Content-Type": "application/json"}});
        return [r.status, await r.json()];
    }""", {**DRAIN, "params": [BAL, "drainServer", [edges[0].guid]]})
    assert forged[0] == 200 and forged[1]["error"]["code"] == -32006, forged  # Forbidden
    assert not any(s["drained"] for s in await ops.ok("invoke", BAL, "listServers", []))

    # readwrite: the buttons, and a drain from the page takes the edge out of the pool.
    ops_context = await new_context(browser, "ops", "ops-pw")
    tab = await Tab.open(ops_context, page_url)
    await expect(tab.page.locator("#who")).to_contain_text("logged in as ops (readwrite)")
    await expect(tab.page.get_by_role("button", name="Drain")).to_have_count(2)
    everyone = {e.address for e in edges}

    async def both_chosen() -> bool:  # (the redirects since a report weigh too: ask again)
        return await redirects(fleet.http, lb.url, 20) == everyone
    await wait_until(both_chosen, what="both edges chosen")
    await tab.row(edges[0].address).get_by_role("button", name="Drain").click()
    await expect(tab.page.locator("#action")).to_contain_text(f"{edges[0].address} drained")
    assert await redirects(fleet.http, lb.url, 20) == {edges[1].address}
    await tab.row(edges[0].address).get_by_role("button", name="Undrain").click()
    await expect(tab.page.locator("#action")).to_contain_text(f"{edges[0].address} undrained")
    await wait_until(both_chosen, what="the undrained edge chosen again")
    # (the viewer's page follows, still without a button)
    await expect(viewer.page.locator("#notifications")).to_contain_text(
        f"{edges[0].address} undrained")
    await expect(viewer.page.get_by_role("button")).to_have_count(0)

    # A page on another origin, in the browser of that readwrite operator, cannot drain:
    # neither a "simple" POST (no preflight: a form's, or fetch's no-cors) nor a JSON one
    # (its preflight is refused); nor the same page rebound to loopback under its own name.
    runner, elsewhere = await serve_dir(EXAMPLES)
    try:
        attacker = await Tab.open(ops_context, f"{elsewhere}/player.html?lb=http://{HOST}:9")
        target = f"{lb.mgmt_url}/jsonrpc"
        body = json.dumps({**DRAIN, "params": [BAL, "drainServer", [edges[1].guid]]})
        outcome = await attacker.page.evaluate("""async ([target, body]) => {
            const out = [];
            for (const type of ["text/plain", "application/x-www-form-urlencoded"]) {
                const r = await fetch(target, {method: "POST", mode: "no-cors", body,
                                               headers: {"Content-Type": type}});
                out.push(r.type);  // opaque: sent, answer unreadable
            }
            try {
                await fetch(target, {method: "POST", body,
                                     headers: {"Content-Type": "application/json"}});
                out.push("json sent");
            } catch (err) {
                out.push("json refused");
            }
            return out;
        }""", [target, body])
        assert outcome == ["opaque", "opaque", "json refused"]
        rebound = await (await ops_context.new_page()).goto(
            f"http://{REBOUND}:{lb.mgmt_port}/")
        assert rebound is not None and rebound.status == 421
    finally:
        await runner.cleanup()
    assert not any(s["drained"] for s in await ops.ok("invoke", BAL, "listServers", []))
    await wait_until(both_chosen, what="both edges chosen")
    refused = await ops.ok("getAttribute", "lbmgmt:type=Management", "RefusedRequests")
    assert refused["origin"] >= 3 and refused["host"] >= 1, refused

    # Refusals said in words on the page, never a blank one: the port's own 429 (guesses
    # at the viewer's password lock that user out), then answers as a proxy or a changed
    # login could give.
    # The page's own refreshes are held meanwhile: a good login clears that user's count
    # (auth.py), and one landing between the guesses (a busy machine spreads them over
    # its 2 s refresh) would leave the viewer never locked out.
    guessed, holding, let_go = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def held(route: Any) -> None:
        holding.set()
        await guessed.wait()
        await route.continue_()
        let_go.set()
    await viewer.page.route("**/jsonrpc", held)
    # (a refresh held: the one before it has been answered, none is in flight)
    await asyncio.wait_for(holding.wait(), DEADLINE)
    wrong = Rpc(fleet.http, lb.mgmt_url, basic("viewer", "guess"))
    for _ in range(5):
        assert (await wrong.raw({"jsonrpc": "2.0", "id": 1, "method": "version"}))[0] == 401
    guessed.set()
    await asyncio.wait_for(let_go.wait(), DEADLINE)  # (then unrouted: no handler cut short)
    await viewer.page.unroute("**/jsonrpc", held)
    await expect(viewer.page.locator("#status")).to_contain_text(
        "Too many failed logins from this address (HTTP 429)")
    await expect(viewer.page.locator("#edges tbody tr")).to_have_count(2)  # kept, greyed
    for status, text in ((403, "Refused by the management port (HTTP 403: no)"),
                         (401, "Login refused (HTTP 401: no)")):
        await tab.page.route("**/jsonrpc", answer_with(status))
        await expect(tab.page.locator("#status")).to_contain_text(text)
        await tab.page.unroute("**/jsonrpc")
    await expect(tab.page.locator("#status")).to_contain_text("Updated")  # and recovers

    for t in (viewer, tab):
        t.check_clean()
    await viewer_context.close()
    await ops_context.close()


async def test_the_page_is_served_with_its_security_headers(fleet: Fleet):
    lb = fleet.balancer()
    rpc = Rpc(fleet.http, lb.mgmt_url)
    await up(fleet, rpc)
    for path, kind in (("/", "text/html"), ("/status.js", "text/javascript"),
                       ("/status.css", "text/css")):
        async with fleet.http.get(lb.mgmt_url + path) as r:
            assert r.status == 200 and r.content_type == kind and r.charset == "utf-8"
            assert r.headers["Cache-Control"] == "no-store"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["X-Frame-Options"] == "DENY"
            policy = r.headers["Content-Security-Policy"]
            assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
            assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
            text = await r.text()
        if kind == "text/html":  # no inline script: the policy would refuse it anyway
            assert re.findall(r"<script[^>]*>", text) == ['<script src="status.js" defer>']
            assert "style=" not in text and not re.search(r"\son\w+=", text)
    # The edge's port serves the same page.
    edge = fleet.edge("e", [lb])
    edge_rpc = Rpc(fleet.http, edge.mgmt_url)
    await up(fleet, edge_rpc)
    async with fleet.http.get(edge.mgmt_url + "/") as r:
        assert r.status == 200 and "status.js" in await r.text()
