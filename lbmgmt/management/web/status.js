// The management port's status page: asks POST /jsonrpc on this same port (same origin,
// so the port's Origin check passes; Content-Type application/json, as the port requires;
// the browser's own login for this port, if it asked for one) every 2 s, and shows a
// balancer's edges or an edge's own state. Everything on screen goes through textContent:
// no HTML is ever built from what a daemon says.
"use strict";

(() => {
  const REFRESH_MS = 2000;
  const CALL_TIMEOUT_MS = 10000;
  const RATE_WINDOW = 10; // seconds a rate is taken over: counter deltas, not per refresh
  const MAX_NOTIFICATIONS = 50;
  const FIRST_NOTIFICATIONS = 20; // the ones already buffered shown on opening the page
  const BALANCER = "lbmgmt:type=Balancer";
  const SENDER = "lbmgmt:type=Sender";
  const BALANCER_ATTRIBUTES = ["ServerCount", "AvailableServerCount", "RedirectsServed",
    "Headroom", "Groups", "Redirector"];
  const STATES = new Set(["RUNNING", "PAUSED", "DRAINING"]);

  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    node.append(...children);
    return node;
  }

  function badge(word, title) {
    return el("span", {className: `badge ${word}`, textContent: word, title: title || ""});
  }

  // -- JSON-RPC over this port ---------------------------------------------------------
  class Unreachable extends Error {}

  class Refused extends Error { // the port answered with an HTTP error (401, 403, 429...)
    constructor(status, detail, retryAfter) {
      super(`HTTP ${status}`);
      this.status = status;
      this.detail = detail;
      this.retryAfter = retryAfter;
    }
  }

  class RpcError extends Error {
    constructor(error) {
      super(error.message);
      this.code = error.code;
      this.data = error.data;
    }
  }

  let nextId = 0;

  // Several calls in one POST (a JSON-RPC batch); each answer is its result or an RpcError.
  async function batch(calls) {
    const requests = calls.map(([method, params]) =>
      ({jsonrpc: "2.0", id: ++nextId, method, params}));
    let response;
    try {
      response = await fetch("jsonrpc", {
        method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify(requests), cache: "no-store", credentials: "same-origin",
        signal: AbortSignal.timeout(CALL_TIMEOUT_MS)});
    } catch (err) {
      throw new Unreachable(err.name === "TimeoutError"
        ? `no answer within ${CALL_TIMEOUT_MS / 1000} s` : err.message);
    }
    if (!response.ok) {
      let detail = "";
      try {
        detail = (await response.json()).error || "";
      } catch (_) { /* not JSON: the status says enough */ }
      throw new Refused(response.status, detail, response.headers.get("Retry-After"));
    }
    let answers;
    try {
      answers = await response.json();
    } catch (err) {
      throw new Unreachable(`the answer broke off (${err.message})`);
    }
    if (!Array.isArray(answers)) { // one error for the whole batch
      const error = (answers && answers.error) || {code: -32603, message: "no answer"};
      throw new RpcError(error);
    }
    const byId = new Map(answers.map((a) => [a.id, a]));
    return requests.map((r) => {
      const a = byId.get(r.id);
      if (a === undefined) return new RpcError({code: -32603, message: "no answer"});
      return "error" in a ? new RpcError(a.error) : a.result;
    });
  }

  async function call(method, params) {
    const [result] = await batch([[method, params]]);
    if (result instanceof RpcError) throw result;
    return result;
  }

  // -- what the page knows ---------------------------------------------------------------
  const state = {
    daemon: null, // "balancer" or "edge", from the version call
    role: null,
    since: null, // the last notification seen, and its numbering
    epoch: null,
    notes: [], // newest last
    samples: [], // {t, total, edges: Map(guid: redirectsTotal), groups: {g: redirects}, sent}
    lastOk: null,
    failingSince: null,
    rows: new Map(), // guid: the edge's table row
    busy: new Set(), // guids with a drain or undrain in flight
  };

  // Per second from the oldest sample within RATE_WINDOW of the last one to the last one
  // (the one before when refreshes are further apart); null while unknown, or when the
  // counter went back (the daemon restarted).
  function rate(pick) {
    const samples = state.samples;
    if (samples.length < 2) return null;
    const last = samples[samples.length - 1];
    const v1 = pick(last);
    if (typeof v1 !== "number") return null;
    let first = samples[samples.length - 2];
    for (let i = samples.length - 2; i >= 0; i--) {
      if (samples[i].t < last.t - RATE_WINDOW) break;
      first = samples[i];
    }
    const v0 = pick(first);
    if (typeof v0 !== "number" || last.t <= first.t || v1 < v0) return null;
    return (v1 - v0) / (last.t - first.t);
  }

  function record(sample) {
    sample.t = performance.now() / 1000;
    state.samples.push(sample);
    while (state.samples.length > 2 && state.samples[1].t < sample.t - 2 * RATE_WINDOW) {
      state.samples.shift();
    }
  }

  // -- formatting --------------------------------------------------------------------------
  const num = (n) => (typeof n !== "number" ? "–"
    : Number.isInteger(n) ? n.toLocaleString("en") : n.toFixed(1));
  const perSecond = (r) => (r === null ? "–" : r.toFixed(1));
  const clock = (date) => date.toLocaleTimeString("en-GB");
  const sum = (values) => values.reduce((a, b) => a + (typeof b === "number" ? b : 0), 0);

  function duration(seconds) {
    if (typeof seconds !== "number") return "–";
    if (seconds < 90) return `${seconds.toFixed(1)} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} days`;
  }

  function bits(perSec) {
    if (typeof perSec !== "number") return "not measured";
    const units = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s"];
    let i = 0;
    while (perSec >= 1000 && i < units.length - 1) {
      perSec /= 1000;
      i++;
    }
    return `${perSec.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  function daemonName() {
    return state.daemon || "management port";
  }

  function describe(err) {
    if (err instanceof Unreachable) {
      return `Cannot reach the ${daemonName()} at ${location.host} (${err.message})`;
    }
    if (err instanceof Refused) {
      const detail = err.detail ? `: ${err.detail}` : "";
      switch (err.status) {
        case 401:
          return `Login refused (HTTP 401${detail}): reload the page to log in as a user ` +
            "of this port's credentials file";
        case 403:
          return `Refused by the management port (HTTP 403${detail})`;
        case 421:
          return `The management port does not answer to the name ${location.hostname} ` +
            `(HTTP 421${detail})`;
        case 429:
          return "Too many failed logins from this address (HTTP 429): try again in " +
            `${err.retryAfter || "a few"} s`;
        default:
          return `The management port answered HTTP ${err.status}${detail}`;
      }
    }
    if (err instanceof RpcError) return `${err.message} (JSON-RPC error ${err.code})`;
    return String((err && err.message) || err);
  }

  // -- status line -------------------------------------------------------------------------
  function showOk() {
    state.lastOk = new Date();
    state.failingSince = null;
    const line = $("status");
    line.classList.remove("error");
    line.textContent = `Updated ${clock(state.lastOk)}; refreshed every ${REFRESH_MS / 1000} s.`;
    for (const main of document.querySelectorAll("main")) main.classList.remove("stale");
  }

  function showFailure(err) {
    if (state.failingSince === null) state.failingSince = new Date();
    const line = $("status");
    line.classList.add("error");
    const shown = state.lastOk ? ` The figures below are from ${clock(state.lastOk)}.` : "";
    line.textContent = `${describe(err)}, since ${clock(state.failingSince)}; retrying ` +
      `every ${REFRESH_MS / 1000} s.${shown}`;
    for (const main of document.querySelectorAll("main")) main.classList.add("stale");
  }

  function showAction(text, failed) {
    const line = $("action");
    line.hidden = false;
    line.classList.toggle("error", Boolean(failed));
    line.textContent = `${clock(new Date())}: ${text}`;
  }

  // -- who is asking -----------------------------------------------------------------------
  function identify(version) {
    const changed = state.daemon !== version.daemon;
    state.daemon = version.daemon;
    state.role = version.role;
    const writer = version.role === "readwrite";
    document.body.classList.toggle("can-write", writer);
    document.title = `lbmgmt ${version.daemon} ${location.host}`;
    $("title").textContent = `lbmgmt ${version.daemon} ${location.host}`;
    const who = version.user ? `logged in as ${version.user} (${version.role})`
      : `no login (${version.role})`;
    $("who").textContent = `lbmgmt ${version.version} · ${who}` +
      (writer ? "" : " · read-only: no drain buttons");
    $("balancer").hidden = version.daemon !== "balancer";
    $("edge").hidden = version.daemon !== "edge";
    $("notifications-section").hidden = false;
    if (changed) state.samples = [];
  }

  // -- a balancer --------------------------------------------------------------------------
  function renderBalancer(attrs, servers) {
    const served = attrs.RedirectsServed || {};
    const groups = attrs.Groups || {};
    const edges = new Map();
    for (const s of servers) edges.set(s.guid, s.redirectsTotal);
    const groupCounts = {};
    for (const [name, g] of Object.entries(groups)) groupCounts[name] = g.redirects;
    record({total: sum(Object.values(served)), edges, groups: groupCounts});

    $("t-edges").textContent = num(attrs.ServerCount);
    $("t-available").textContent = num(attrs.AvailableServerCount);
    const byProtocol = Object.entries(served).filter(([, n]) => n > 0)
      .map(([p, n]) => `${p} ${num(n)}`).join(" · ");
    $("t-redirects").replaceChildren(num(sum(Object.values(served))),
      el("small", {textContent: byProtocol || "none yet"}));
    $("t-rate").textContent = perSecond(rate((s) => s.total));
    const room = attrs.Headroom || {};
    const unknown = room.unknown_edges || 0;
    const roomText = room.edges > 0 && unknown === room.edges ? "unknown"
      : `${num(room.clients)} clients`;
    const unknownText = unknown ? `, ${num(unknown)} reporting no capacity` : "";
    $("t-headroom").replaceChildren(roomText,
      el("small", {textContent: `on ${num(room.edges)} available edges${unknownText}`}));
    $("t-redirector").textContent = attrs.Redirector || "–";

    renderEdges(servers);
    renderGroups(groups);
  }

  function edgeRow(guid) {
    let row = state.rows.get(guid);
    if (row) return row;
    const names = ["address", "group", "state", "available", "load", "rate", "age",
      "streams", "action"];
    const cells = {};
    const tr = el("tr");
    tr.dataset.guid = guid;
    for (const name of names) {
      cells[name] = el("td", {className: `c-${name}`});
      tr.append(cells[name]);
    }
    for (const name of ["rate", "age", "streams"]) cells[name].classList.add("num");
    cells.action.classList.add("write-only");
    const button = el("button", {type: "button"});
    button.addEventListener("click", () => toggleDrain(guid));
    cells.action.append(button);
    const fill = el("span");
    const bar = el("span", {className: "bar"}, fill);
    const loadText = el("span");
    cells.load.append(el("div", {className: "load"}, bar, loadText));
    row = {tr, cells, button, bar, fill, loadText, server: null};
    state.rows.set(guid, row);
    return row;
  }

  function renderEdges(servers) {
    servers = [...servers].sort((a, b) => String(a.redirectAddress)
      .localeCompare(String(b.redirectAddress), "en", {numeric: true}));
    const seen = new Set();
    const body = $("edges").tBodies[0];
    servers.forEach((s, i) => {
      seen.add(s.guid);
      const row = edgeRow(s.guid);
      row.server = s;
      const c = row.cells;
      const address = [s.redirectAddress];
      if (s.privateAddress) address.push(el("small", {textContent: `private ${s.privateAddress}`}));
      c.address.replaceChildren(...address);
      c.address.title = `GUID ${s.guid}${s.agent ? `, ${s.agent}` : ""}`;
      c.group.textContent = s.group || "–";
      const badges = [badge(STATES.has(s.state) ? s.state : "UNKNOWN")];
      if (s.drained) badges.push(badge("DRAINED", "drained on this balancer: no new clients"));
      if (s.unhealthy) badges.push(badge("UNHEALTHY", s.unhealthy));
      c.state.replaceChildren(...badges);
      c.available.replaceChildren(s.available ? el("span", {className: "yes", textContent: "yes"})
        : el("span", {className: "no", textContent: "no"}));
      renderLoad(row, s);
      if (typeof s.redirectsTotal === "number") {
        c.rate.textContent = perSecond(rate((sample) => sample.edges.get(s.guid)));
        c.rate.title = `${num(s.redirectsTotal)} in all`;
      } else { // (a balancer whose listServers has no per-edge counter to take a rate of)
        c.rate.replaceChildren("–", el("small",
          {textContent: `${num(s.redirectsSinceReport)} since its report`}));
        c.rate.title = "this balancer gives no per-edge redirect counter (redirectsTotal)";
      }
      c.age.textContent = `${duration(s.secondsSinceReport)} ago`;
      c.age.title = `reports every ${num(s.intervalMs)} ms`;
      c.streams.textContent = num(s.streams || 0);
      row.button.textContent = s.drained ? "Undrain" : "Drain";
      row.button.setAttribute("aria-label", `${row.button.textContent} ${s.redirectAddress}`);
      row.button.disabled = state.busy.has(s.guid);
      row.button.hidden = state.role !== "readwrite"; // (the column is hidden too)
      if (body.children[i] !== row.tr) body.insertBefore(row.tr, body.children[i] || null);
    });
    for (const [guid, row] of state.rows) {
      if (!seen.has(guid)) {
        row.tr.remove();
        state.rows.delete(guid);
      }
    }
    $("no-edges").hidden = servers.length > 0;
  }

  function renderLoad(row, s) {
    const limits = [s.capacity, s.maxClients].filter((n) => typeof n === "number" && n > 0);
    const limit = limits.length ? Math.min(...limits) : null;
    row.loadText.textContent = limit === null ? num(s.load) : `${num(s.load)} / ${num(limit)}`;
    row.bar.hidden = limit === null;
    if (limit !== null) {
      const share = Math.min(1, Math.max(0, s.load / limit));
      row.fill.style.width = `${(share * 100).toFixed(1)}%`; // CSSOM: allowed by the CSP
      row.bar.classList.toggle("full", share >= 1);
    }
    const why = [];
    if (typeof s.capacity === "number") why.push(`capacity ${num(s.capacity)}`);
    if (typeof s.maxClients === "number") why.push(`max_clients ${num(s.maxClients)}`);
    row.cells.load.title = why.length ? why.join(", ") : "the edge reports no capacity";
  }

  function renderGroups(groups) {
    const names = Object.keys(groups).sort();
    $("groups-section").hidden = names.length === 0 || (names.length === 1 && names[0] === "");
    $("groups").tBodies[0].replaceChildren(...names.map((name) => {
      const g = groups[name];
      return el("tr", {},
        el("td", {textContent: name || "(none)"}),
        el("td", {className: "num", textContent: num(g.edges)}),
        el("td", {className: "num", textContent: num(g.available)}),
        el("td", {className: "num", textContent: num(g.redirects)}),
        el("td", {className: "num", textContent: perSecond(rate((s) => s.groups[name]))}));
    }));
  }

  async function toggleDrain(guid) {
    const row = state.rows.get(guid);
    const s = row && row.server;
    if (!s || state.busy.has(guid)) return;
    const undrain = Boolean(s.drained);
    const question = undrain
      ? `Undrain ${s.redirectAddress}? It takes new clients again.`
      : `Drain ${s.redirectAddress}? It gets no new clients (kept across its restarts) ` +
        "until undrained.";
    if (!window.confirm(question)) return;
    state.busy.add(guid);
    row.button.disabled = true;
    try {
      await call("invoke", [BALANCER, undrain ? "undrainServer" : "drainServer", [guid]]);
      showAction(`${s.redirectAddress} ${undrain ? "undrained" : "drained"}.`);
    } catch (err) {
      showAction(`${undrain ? "Undrain" : "Drain"} of ${s.redirectAddress} refused: ` +
        describe(err), true);
    } finally {
      state.busy.delete(guid);
      row.button.disabled = false;
    }
    refreshNow();
  }

  // -- an edge -----------------------------------------------------------------------------
  function renderEdge(a) {
    record({sent: a.ReportsSent, edges: new Map(), groups: {}});
    const stateBadges = [badge(STATES.has(a.State) ? a.State : "UNKNOWN")];
    if (typeof a.Draining === "number") stateBadges.push(badge("DRAINING"));
    const streams = Array.isArray(a.Streams) ? a.Streams : [];
    const streamText = streams.length
      ? `${streams.length}: ${streams.slice(0, 12).join(", ")}${streams.length > 12 ? ", …" : ""}`
      : "none";
    const notSent = a.StreamsNotSent ? ` (${num(a.StreamsNotSent)} more not sent)` : "";
    const fields = [
      ["address", "Redirect address", a.RedirectAddress],
      ["state", "State", ...stateBadges],
      ["load", "Load", num(a.Load)],
      ["bandwidth", "Bandwidth", bits(a.Bandwidth)],
      ["group", "Group", a.Group || "none"],
      ["draining", "Draining", typeof a.Draining === "number"
        ? `yes: stops within ${duration(a.Draining / 1000)}` : "no"],
      ["monitor", "Monitor", a.Monitor || "–"],
      ["monitor-error", "Monitor error", a.MonitorError
        ? el("span", {className: "no", textContent: a.MonitorError}) : "none"],
      ["streams", "Streams", streamText + notSent],
      ["reports", "Reports sent", `${num(a.ReportsSent)} (${perSecond(rate((s) => s.sent))}/s)`],
      ["errors", "Send errors", num(a.SendErrors)],
      ["quick", "Quick reports", num(a.QuickReports)],
      ["interval", "Report interval", `${num(a.MessageInterval)} ms`],
      ["uptime", "Uptime", duration(a.Uptime)],
      ["guid", "GUID", el("code", {textContent: a.ServerId || "–"})],
    ];
    $("sender").replaceChildren(...fields.flatMap(([key, label, ...value]) => {
      const dd = el("dd", {}, ...value);
      dd.dataset.field = key;
      return [el("dt", {textContent: label}), dd];
    }));
    const targets = Array.isArray(a.Targets) ? a.Targets : [];
    $("targets").tBodies[0].replaceChildren(...targets.map((t) => el("tr", {},
      el("td", {className: "c-address", textContent: t.address}),
      el("td", {className: t.lastResult === "ok" ? "" : "no", textContent: t.lastResult || "–"}),
      el("td", {className: "num", textContent: num(t.reportsSent)}),
      el("td", {className: "num", textContent: num(t.sendErrors)}))));
  }

  // -- notifications -----------------------------------------------------------------------
  function takeNotifications(answer) {
    const items = [];
    if (answer.reset && state.since !== null) {
      items.push({local: true, timestamp: Date.now() / 1000, type: "page",
        message: "the daemon restarted: its notifications since"});
    }
    if (answer.lost) {
      items.push({local: true, timestamp: Date.now() / 1000, type: "page",
        message: `${answer.lost} notifications fell out of the daemon's buffer unseen`});
    }
    items.push(...answer.notifications);
    state.since = answer.next;
    state.epoch = answer.epoch;
    if (!items.length) return;
    state.notes.push(...items);
    state.notes.splice(0, Math.max(0, state.notes.length - MAX_NOTIFICATIONS));
    $("notifications").replaceChildren(...state.notes.slice().reverse().map((n) => el("li",
      {className: n.local ? "local" : ""},
      el("time", {textContent: clock(new Date(n.timestamp * 1000))}),
      el("span", {className: "type", textContent: n.type}),
      el("span", {textContent: n.message}))));
    $("no-notifications").hidden = true;
  }

  // -- the refresh loop --------------------------------------------------------------------
  async function refresh() {
    if (state.daemon === null) {
      const version = await call("version", []);
      identify(version);
      state.since = Math.max(0, version.lastNotification - FIRST_NOTIFICATIONS);
      state.epoch = version.epoch;
    }
    const calls = [["version", []]];
    if (state.daemon === "balancer") {
      calls.push(["getAttributes", [BALANCER, BALANCER_ATTRIBUTES]],
        ["invoke", [BALANCER, "listServers", []]]);
    } else {
      calls.push(["getAttributes", [SENDER, null]]);
    }
    calls.push(["pollNotifications", [state.since, 0, null, state.epoch]]);
    const answers = await batch(calls);
    const failed = answers.find((a) => a instanceof RpcError);
    if (failed) throw failed;
    const [version, ...rest] = answers;
    identify(version);
    if (state.daemon === "balancer") renderBalancer(rest[0], rest[1]);
    else renderEdge(rest[0]);
    takeNotifications(rest[rest.length - 1]);
  }

  let timer = 0;
  let running = false;
  let again = false;

  async function tick() {
    if (running) {
      again = true;
      return;
    }
    clearTimeout(timer);
    running = true;
    try {
      await refresh();
      showOk();
    } catch (err) {
      showFailure(err);
    } finally {
      running = false;
      timer = setTimeout(tick, again ? 0 : REFRESH_MS);
      again = false;
    }
  }

  const refreshNow = tick;
  tick();
})();
