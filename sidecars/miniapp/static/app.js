// levibot Mini App: sign in with Telegram's initData, then follow the gateway websocket.
// Plain JS, no build step, no external resources. Data goes into the DOM as text only.
"use strict";

(function () {
  const tg = (window.Telegram && window.Telegram.WebApp) || null;
  const state = {
    token: null, admin: false, user: null, ws: null, backoff: 500, refreshTimer: null,
    signals: [], equity: [], feed: [],
  };
  const MAX_SIGNALS = 30, MAX_FEED = 40, MAX_POINTS = 500, CURVE_KEY = "levibot.equity";
  const DEMO_KEY = "levibot.demo";
  const $ = (id) => document.getElementById(id);

  function initData() {
    if (tg && tg.initData) return tg.initData;
    // Outside Telegram's client (or without its script) the data is in the URL fragment.
    const params = new URLSearchParams(window.location.hash.slice(1));
    return params.get("tgWebAppData") || "";
  }

  function num(x, digits) {
    const v = Number(x);
    if (!Number.isFinite(v)) return "–";
    return v.toLocaleString("en-US", { minimumFractionDigits: digits ?? 2, maximumFractionDigits: digits ?? 2 });
  }

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function setConn(text, st) { const c = $("conn"); c.textContent = text; c.dataset.state = st; }

  function refuse(message) {
    $("main").hidden = true;
    $("refusal").hidden = false;
    $("refusal-text").textContent = message;
    $("user").textContent = "not signed in";
    setConn("refused", "down");
    document.body.dataset.auth = "refused";
  }

  // `levibot demo` prints /app#demo=<one-time token>: the token is traded once, and the
  // HttpOnly cookie that comes back renews the session (and survives a reload of the page).
  function demoToken() {
    return new URLSearchParams(window.location.hash.slice(1)).get("demo") || "";
  }

  async function signIn() {
    const token = demoToken();
    if (token || sessionStorage.getItem(DEMO_KEY)) {
      const res = await fetch("/auth/demo", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(token ? { token } : {}), credentials: "same-origin",
      });
      if (token) history.replaceState(null, "", window.location.pathname);  // spent: drop it
      if (res.ok) sessionStorage.setItem(DEMO_KEY, "1"); else sessionStorage.removeItem(DEMO_KEY);
      return res;
    }
    const data = initData();
    if (!data) return null;
    return fetch("/auth/telegram", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ initData: data }),
    });
  }

  async function authenticate() {
    let res;
    try {
      res = await signIn();
    } catch (err) { refuse("Cannot reach the server: " + err); return false; }
    if (!res) { refuse("No Telegram initData: this page must be opened from Telegram."); return false; }
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      const e = body.error || {};
      refuse((e.message || "sign-in failed") + (e.code ? " (" + e.code + ")" : ""));
      return false;
    }
    state.token = body.token; state.admin = !!body.admin; state.user = body.user || {};
    const name = [state.user.first_name, state.user.username ? "@" + state.user.username : ""].filter(Boolean).join(" ");
    $("user").textContent = name || "user " + state.user.id;
    $("admin").hidden = !state.admin;
    $("main").hidden = false;
    document.body.dataset.auth = state.admin ? "admin" : "user";
    // Session tokens live 5 minutes: renew a minute before they lapse.
    const ttl = Math.max(30, (body.expires_in || 300) - 60);
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(authenticate, ttl * 1000);
    return true;
  }

  function authHeaders() { return { Authorization: "Bearer " + state.token, "Content-Type": "application/json" }; }

  // -- rendering -------------------------------------------------------------------------------

  function renderPortfolio(p) {
    if (!p || typeof p !== "object") return;
    $("equity").textContent = num(p.equity);
    $("cash").textContent = num(p.cash);
    for (const [id, key] of [["rpnl", "realized_pnl"], ["upnl", "unrealized_pnl"]]) {
      const v = Number(p[key]);
      $(id).textContent = num(v);
      $(id).className = v > 0 ? "up" : v < 0 ? "down" : "";
    }
    const body = $("positions").tBodies[0];
    body.replaceChildren();
    const positions = Array.isArray(p.positions) ? p.positions : [];
    for (const pos of positions) {
      const tr = el("tr");
      tr.append(el("td", pos.symbol), el("td", num(pos.quantity, 4)), el("td", num(pos.avg_price)),
        el("td", num(pos.last_price)), el("td", num(pos.unrealized_pnl), Number(pos.unrealized_pnl) >= 0 ? "up" : "down"));
      body.append(tr);
    }
    $("no-positions").hidden = positions.length > 0;
  }

  function addEquityPoint(ts, equity) {
    const v = Number(equity);
    if (!Number.isFinite(v)) return;
    state.equity.push([Number(ts) || state.equity.length, v]);
    if (state.equity.length > MAX_POINTS) state.equity.shift();
  }

  function renderChart() {
    const svg = $("equity-chart");
    svg.replaceChildren();
    const pts = state.equity;
    if (pts.length < 2) { $("equity-range").textContent = pts.length ? "one snapshot so far" : ""; return; }
    const ys = pts.map((p) => p[1]);
    const lo = Math.min(...ys), hi = Math.max(...ys), span = hi - lo || 1;
    const coords = pts.map((p, i) => [(i / (pts.length - 1)) * 300, 86 - ((p[1] - lo) / span) * 82]);
    const line = coords.map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" ");
    const ns = "http://www.w3.org/2000/svg";
    const area = document.createElementNS(ns, "polygon");
    area.setAttribute("points", "0,90 " + line + " 300,90");
    area.setAttribute("class", "area");
    const poly = document.createElementNS(ns, "polyline");
    poly.setAttribute("points", line);
    svg.append(area, poly);
    $("equity-range").textContent = "low " + num(lo) + " · high " + num(hi) + " · " + pts.length + " snapshots";
  }

  function renderSignals() {
    const ul = $("signals");
    ul.replaceChildren();
    for (const s of state.signals) {
      const side = String(s.side || "").toLowerCase();
      const li = el("li");
      li.append(el("b", s.symbol + " "), el("span", side.toUpperCase(), side),
        el("span", " · " + (s.strategy || "") + " · p=" + num(s.probability) + " conf=" + num(s.confidence) + " @ " + num(s.price)));
      ul.append(li);
    }
    $("no-signals").hidden = state.signals.length > 0;
  }

  function addSignal(s) {
    if (!s || typeof s !== "object") return;
    state.signals.unshift(s);
    state.signals.length = Math.min(state.signals.length, MAX_SIGNALS);
  }

  function addFeed(text, cls) {
    state.feed.unshift([text, cls]);
    state.feed.length = Math.min(state.feed.length, MAX_FEED);
    const ul = $("feed");
    ul.replaceChildren(...state.feed.map(([t, c]) => el("li", t, c)));
  }

  // Bus messages carry their tag in "type" (levibot.Fill...); older frames are sniffed by field.
  function feedText(channel, d) {
    const kind = String(d.type || "").replace(/^levibot\./, "");
    const sym = d.symbol || "";
    if (channel === "alerts" || kind === "Alert") {
      return [String(d.level || "").toUpperCase() + " " + (d.source || "") + ": " + (d.text || ""), d.level === "critical" ? "down" : ""];
    }
    if (kind === "OrderDenied" || (!kind && d.code)) return ["DENIED " + sym + " [" + d.code + "] " + (d.reason || ""), "down"];
    if (kind === "OrderClosed" || (!kind && d.exit_price !== undefined)) {
      return ["CLOSED " + sym + " by " + d.reason + " @ " + num(d.exit_price) + " pnl " + num(d.realized_pnl), Number(d.realized_pnl) < 0 ? "down" : "up"];
    }
    if (kind === "Fill" || (!kind && d.fill_id !== undefined)) {
      return ["FILL " + sym + " " + String(d.side).toUpperCase() + " " + num(d.quantity, 4) + " @ " + num(d.price), "up"];
    }
    if (kind === "OrderIntent") return ["ORDER " + sym + " " + String(d.side).toUpperCase() + " " + num(d.quantity, 4) + " @ " + num(d.price), ""];
    if (kind === "OrderAccepted") return ["ACCEPTED " + sym + " " + (d.client_order_id || ""), ""];
    return [(kind || channel) + " " + sym + " " + (d.status || d.client_order_id || ""), ""];
  }

  function renderRisk(r) {
    const dl = $("risk");
    dl.replaceChildren();
    if (!r || typeof r !== "object") return;
    const rows = [["Kill switch", r.kill_switch === undefined ? undefined : (r.kill_switch ? "ON" : "off")],
      ["Trading", r.trading_state], ["Exit policy", r.policy]];
    for (const [k, v] of Object.entries(r)) {
      if (["kill_switch", "trading_state", "policy"].includes(k) || v === null) continue;
      if (typeof v !== "object") rows.push([k.replace(/_/g, " "), v]);
      else if (!Array.isArray(v) && Object.keys(v).length) {
        rows.push([k.replace(/_/g, " "), Object.entries(v).map(([c, n]) => c + " ×" + n).join(", ")]);
      }
    }
    for (const [k, v] of rows) {
      if (v === undefined) continue;
      const dd = el("dd", String(v));
      if (k === "Kill switch") dd.className = v === "ON" ? "down" : "up";
      dl.append(el("dt", k), dd);
    }
  }

  async function loadRisk() {
    try {
      const res = await fetch("/risk", { headers: authHeaders() });
      if (!res.ok) { $("risk-note").textContent = "risk state unavailable (" + res.status + ")"; return; }
      renderRisk(await res.json());
      $("risk-note").textContent = "";
    } catch (err) { $("risk-note").textContent = "risk state unavailable"; }
  }

  // -- websocket ---------------------------------------------------------------------------

  function loadCurve(curve) {
    state.equity = [];
    for (const pt of curve) Array.isArray(pt) ? addEquityPoint(pt[0], pt[1]) : addEquityPoint(pt.ts, pt.equity);
  }

  function applyPortfolio(p) {
    if (!p || p.equity === undefined) return;
    const last = state.equity[state.equity.length - 1];
    if (!last || last[0] !== p.ts_event) addEquityPoint(p.ts_event, p.equity);
    try { localStorage.setItem(CURVE_KEY, JSON.stringify(state.equity)); } catch (err) { /* private mode */ }
    renderPortfolio(p);
    renderChart();
  }

  function applySnapshot(channel, d) {
    switch (channel) {
      case "signals": {
        state.signals = [];
        const list = Array.isArray(d) ? d : (d && Array.isArray(d.signals) ? d.signals : []);
        list.slice(-MAX_SIGNALS).forEach(addSignal);
        renderSignals();
        break;
      }
      case "portfolio":
        if (d && Array.isArray(d.equity_curve)) loadCurve(d.equity_curve);
        applyPortfolio(d && d.portfolio ? d.portfolio : d);
        break;
      case "risk":
        renderRisk(d);
        break;
      case "alerts": case "fills": case "orders":
        if (Array.isArray(d)) d.slice(-10).forEach((x) => x && typeof x === "object" && addFeed(...feedText(channel, x)));
        break;
      default:
    }
  }

  function applyEvent(channel, d) {
    if (!d || typeof d !== "object") return;
    if (channel === "signals") { addSignal(d); renderSignals(); }
    else if (channel === "portfolio") applyPortfolio(d);
    else if (channel === "risk") renderRisk(d);
    else addFeed(...feedText(channel, d));
  }

  // The gateway answers a subscribe with one snapshot whose data is keyed by channel
  // ({"type": "snapshot", "channels": [...], "data": {"portfolio": ..., "signals": [...]}});
  // a per-channel form ({"type": "snapshot", "channel": "signals", "data": [...]}) is read too.
  function onMessage(msg) {
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "heartbeat") { setConn("live", "live"); return; }
    if (msg.type === "error") { addFeed("server: " + (msg.message || msg.code || "error"), "down"); return; }
    if (msg.type === "event") { applyEvent(msg.channel, msg.data); return; }
    if (msg.type !== "snapshot") return;
    if (msg.channel) { applySnapshot(msg.channel, msg.data); return; }
    const data = msg.data && typeof msg.data === "object" ? msg.data : {};
    if (Array.isArray(data.equity_curve)) loadCurve(data.equity_curve);
    for (const channel of Object.keys(data)) if (channel !== "equity_curve") applySnapshot(channel, data[channel]);
  }

  function connect() {
    const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(proto + "//" + window.location.host + "/ws?token=" + encodeURIComponent(state.token));
    state.ws = ws;
    ws.onopen = () => {
      state.backoff = 500;
      setConn("live", "live");
      // symbols null: every symbol (an empty list would mean none).
      ws.send(JSON.stringify({ op: "subscribe", channels: ["signals", "portfolio", "alerts", "fills", "orders"], symbols: null }));
    };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (err) { return; }
      onMessage(msg);
    };
    ws.onclose = () => {
      setConn("reconnecting", "down");
      setTimeout(async () => { if (await authenticate()) connect(); }, state.backoff);
      state.backoff = Math.min(state.backoff * 2, 15000);
    };
  }

  // -- admin controls ----------------------------------------------------------------------

  async function adminCall(method, path, body, done) {
    const out = $("admin-result");
    out.textContent = "sending…";
    try {
      const res = await fetch(path, { method, headers: authHeaders(), body: JSON.stringify(body) });
      const reply = await res.json().catch(() => ({}));
      out.textContent = res.ok ? done : "refused: " + ((reply.error && reply.error.message) || res.status);
      out.className = res.ok ? "small up" : "small down";
      if (res.ok) loadRisk();
    } catch (err) { out.textContent = "failed: " + err; out.className = "small down"; }
  }

  function wireAdmin() {
    $("ks-on").addEventListener("click", () => {
      const go = () => adminCall("POST", "/killswitch", { on: true }, "Kill switch ON requested");
      if (tg && tg.showConfirm) tg.showConfirm("Stop all trading?", (ok) => ok && go()); else go();
    });
    $("ks-off").addEventListener("click", () => adminCall("POST", "/killswitch", { on: false }, "Kill switch OFF requested"));
    $("apply-risk").addEventListener("click", () => adminCall("PUT", "/risk",
      { policy: $("policy").value, trading_state: $("trading-state").value }, "Risk policy update requested"));
  }

  async function main() {
    try {
      const saved = JSON.parse(localStorage.getItem(CURVE_KEY) || "[]");
      if (Array.isArray(saved)) state.equity = saved.filter((p) => Array.isArray(p) && p.length === 2).slice(-MAX_POINTS);
    } catch (err) { /* nothing saved */ }
    if (tg) { try { tg.ready(); tg.expand(); } catch (err) { /* older clients */ } }
    wireAdmin();
    if (!(await authenticate())) return;
    loadRisk();
    connect();
  }

  document.addEventListener("DOMContentLoaded", main);
})();
