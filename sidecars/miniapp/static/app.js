// levibot Mini App: sign in with Telegram's initData, then follow the gateway websocket.
// Plain JS, no build step, no external resources. Data goes into the DOM as text only.
// Charts: TradingView's lightweight-charts, vendored in /app/static/vendor/ (window.LightweightCharts).
"use strict";

(function () {
  const tg = (window.Telegram && window.Telegram.WebApp) || null;
  const state = {
    token: null, admin: false, user: null, ws: null, backoff: 500, refreshTimer: null,
    signals: [], equity: [], feed: [],
  };
  const MAX_SIGNALS = 30, MAX_FEED = 40, MAX_POINTS = 5000, MAX_BARS = 500, MAX_MARKS = 500;
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

  // -- charts (lightweight-charts) -----------------------------------------------------------

  const LWC = window.LightweightCharts || null;
  // Bars, signals and fills of the symbol on the price chart; times are ns since the epoch.
  const chart = { price: null, candles: null, volume: null, markers: null, equity: null, area: null,
    symbol: null, timeframe: null, bars: [], signals: [], fills: [],
    pending: null,  // live events that came while /charts loaded: applied after it
    want: null };  // [symbol] to load once the load under way is done

  const sec = (ns) => Math.floor(Number(ns) / 1e9);  // the charts' time unit: UTC seconds

  function chartOptions(node) {
    const css = getComputedStyle(document.documentElement);
    const text = css.getPropertyValue("--muted").trim() || "#8b98a5";
    return {
      autoSize: true,
      layout: { background: { type: "solid", color: "transparent" }, textColor: text, fontSize: 11,
        attributionLogo: true },  // the link to TradingView its licence asks for
      grid: { vertLines: { color: "rgba(127,127,127,.12)" }, horzLines: { color: "rgba(127,127,127,.12)" } },
      rightPriceScale: { borderVisible: false },
      timeScale: { borderVisible: false, timeVisible: true, secondsVisible: false, rightOffset: 4 },
      crosshair: { mode: LWC.CrosshairMode.Normal },
      height: node.clientHeight || 300,
    };
  }

  function initCharts() {
    if (!LWC) { $("chart-note").textContent = " · chart library not loaded"; return; }
    const priceNode = $("price-chart");
    chart.price = LWC.createChart(priceNode, chartOptions(priceNode));
    chart.candles = chart.price.addSeries(LWC.CandlestickSeries, {
      upColor: "#22c55e", downColor: "#ef4444", borderVisible: false,
      wickUpColor: "#22c55e", wickDownColor: "#ef4444",
    });
    chart.volume = chart.price.addSeries(LWC.HistogramSeries, {
      priceFormat: { type: "volume" }, priceScaleId: "volume", color: "rgba(139,152,165,.35)",
      lastValueVisible: false, priceLineVisible: false,
    });
    chart.price.priceScale("volume").applyOptions({ scaleMargins: { top: 0.82, bottom: 0 } });
    chart.markers = LWC.createSeriesMarkers(chart.candles, []);
    chart.price.subscribeCrosshairMove((param) => {
      const bar = param && param.time !== undefined ? chart.bars.find((b) => sec(b.start) === param.time) : null;
      legend(bar || chart.bars[chart.bars.length - 1]);
    });
    const equityNode = $("equity-chart");
    chart.equity = LWC.createChart(equityNode, chartOptions(equityNode));
    chart.area = chart.equity.addSeries(LWC.AreaSeries, {
      lineColor: "#3b82f6", topColor: "rgba(59,130,246,.35)", bottomColor: "rgba(59,130,246,.02)",
      lineWidth: 2, priceLineVisible: false,
    });
    $("chart-symbol").addEventListener("change", (ev) => loadCharts(ev.target.value));
  }

  function legend(bar) {
    $("price-legend").textContent = bar
      ? "O " + num(bar.open) + "  H " + num(bar.high) + "  L " + num(bar.low) + "  C " + num(bar.close)
      : "";
  }

  const candle = (b) => ({ time: sec(b.start), open: b.open, high: b.high, low: b.low, close: b.close });
  const volumeBar = (b) => ({ time: sec(b.start), value: Number(b.volume) || 0,
    color: b.close >= b.open ? "rgba(34,197,94,.35)" : "rgba(239,68,68,.35)" });

  // The bar an event at ``ts`` happened in: start < ts <= close (a signal at a bar's close is
  // that bar's). An event after the last close waits for its bar (markers are redrawn per bar).
  function barOf(ts) {
    const bars = chart.bars;
    let lo = 0, hi = bars.length - 1, found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (Number(bars[mid].start) < Number(ts)) { found = mid; lo = mid + 1; } else hi = mid - 1;
    }
    return found < 0 || Number(ts) > Number(bars[found].ts_event) ? null : bars[found];
  }

  function renderMarkers() {
    if (!chart.markers) return;
    const marks = [];
    for (const s of chart.signals) {
      const side = String(s.side || "").toLowerCase(), bar = barOf(s.ts_event);
      if (!bar || (side !== "long" && side !== "short")) continue;
      marks.push(side === "long"
        ? { time: sec(bar.start), position: "belowBar", shape: "arrowUp", color: "#22c55e", text: "L" }
        : { time: sec(bar.start), position: "aboveBar", shape: "arrowDown", color: "#ef4444", text: "S" });
    }
    for (const f of chart.fills) {
      const side = String(f.side || "").toLowerCase(), bar = barOf(f.ts_event);
      if (!bar) continue;
      marks.push({ time: sec(bar.start), position: side === "buy" ? "belowBar" : "aboveBar", shape: "circle",
        color: side === "buy" ? "#38bdf8" : "#f59e0b", text: (side === "buy" ? "B " : "S ") + num(f.quantity, 4) });
    }
    marks.sort((x, y) => x.time - y.time);
    chart.markers.setMarkers(marks);
    const node = $("price-chart");
    node.dataset.bars = String(chart.bars.length);
    node.dataset.markers = String(marks.length);
    node.dataset.symbol = chart.symbol || "";
  }

  function setSymbols(symbols) {
    const select = $("chart-symbol");
    const have = Array.from(select.options).map((o) => o.value);
    for (const sym of symbols) if (!have.includes(sym)) select.append(new Option(sym, sym));
    if (chart.symbol) select.value = chart.symbol;
  }

  // The equity history: one point per second (the chart's resolution), the last one wins.
  function equitySeries() {
    const out = [];
    for (const [ts, v] of state.equity) {
      const t = sec(ts);
      if (out.length && out[out.length - 1].time === t) out[out.length - 1].value = v;
      else if (!out.length || t > out[out.length - 1].time) out.push({ time: t, value: v });
    }
    return out;
  }

  function addEquityPoint(ts, equity) {
    const v = Number(equity);
    if (!Number.isFinite(v) || !Number.isFinite(Number(ts))) return false;
    const last = state.equity[state.equity.length - 1];
    if (last && Number(ts) < last[0]) return false;  // the time axis only goes forward
    if (last && Number(ts) === last[0]) last[1] = v; else state.equity.push([Number(ts), v]);
    if (state.equity.length > MAX_POINTS) state.equity.shift();
    return true;
  }

  function renderEquity() {
    const pts = state.equity;
    const node = $("equity-chart");
    if (chart.area) chart.area.setData(equitySeries());
    node.dataset.points = String(pts.length);
    if (pts.length < 2) { $("equity-range").textContent = pts.length ? "one snapshot so far" : ""; return; }
    const ys = pts.map((p) => p[1]);
    const lo = Math.min(...ys), hi = Math.max(...ys);
    $("equity-range").textContent = "low " + num(lo) + " · high " + num(hi) + " · " + pts.length + " snapshots";
  }

  async function loadCharts(symbol) {
    chart.want = [symbol];
    if (chart.pending) return;  // a load is under way: it loads this one next
    chart.pending = [];
    try {
      while (chart.want) {
        const [next] = chart.want;
        chart.want = null;
        await fetchCharts(next);
      }
    } finally {
      const pending = chart.pending;
      chart.pending = null;
      for (const [channel, d] of pending) chartEvent(channel, d);  // duplicates are merged
    }
  }

  async function fetchCharts(symbol) {
    const query = new URLSearchParams({ limit: "300" });
    if (symbol) query.set("symbol", symbol);
    let view;
    try {
      const res = await fetch("/charts?" + query, { headers: authHeaders() });
      if (!res.ok) { $("chart-note").textContent = " · chart data unavailable (" + res.status + ")"; return; }
      view = await res.json();
    } catch (err) { $("chart-note").textContent = " · chart data unavailable"; return; }
    chart.symbol = view.symbol; chart.timeframe = view.timeframe;
    chart.bars = Array.isArray(view.bars) ? view.bars : [];
    chart.signals = Array.isArray(view.signals) ? view.signals : [];
    chart.fills = Array.isArray(view.fills) ? view.fills : [];
    $("chart-timeframe").textContent = view.timeframe || "";
    $("chart-note").textContent = chart.bars.length ? "" : " · no bars yet";
    setSymbols(Array.isArray(view.symbols) ? view.symbols : []);
    if (chart.candles) {
      chart.candles.setData(chart.bars.map(candle));
      chart.volume.setData(chart.bars.map(volumeBar));
      chart.price.timeScale().fitContent();
    }
    legend(chart.bars[chart.bars.length - 1]);
    renderMarkers();
    if (Array.isArray(view.equity)) {
      state.equity = [];
      for (const p of view.equity) addEquityPoint(p.ts, p.equity);
      renderEquity();
      if (chart.equity) chart.equity.timeScale().fitContent();
    }
  }

  // A live event for the charts; held back while /charts loads (it may or may not hold it).
  function chartEvent(channel, d) {
    if (chart.pending) { chart.pending.push([channel, d]); return; }
    if (channel === "bars") applyBar(d);
    else if (channel === "signals") markEvent(chart.signals, d);
    else if (channel === "fills") markEvent(chart.fills, d);
    else if (channel === "portfolio") applyEquity(d);
  }

  function applyBar(b) {
    if (!b || typeof b !== "object") return;
    setSymbols([b.symbol]);
    if (!chart.symbol) { loadCharts(b.symbol); return; }
    if (b.symbol !== chart.symbol || (chart.timeframe && b.timeframe !== chart.timeframe)) return;
    const last = chart.bars[chart.bars.length - 1];
    if (last && Number(b.start) < Number(last.start)) return;
    if (last && Number(b.start) === Number(last.start)) chart.bars[chart.bars.length - 1] = b;
    else { chart.bars.push(b); if (chart.bars.length > MAX_BARS) chart.bars.shift(); }
    if (chart.candles) { chart.candles.update(candle(b)); chart.volume.update(volumeBar(b)); }
    legend(b);
    renderMarkers();  // a signal or fill that came before its bar gets its mark now
  }

  // A live signal or fill the chart history already holds (it came in both) is marked once.
  const sameEvent = (x, y) => x.ts_event === y.ts_event && x.fill_id === y.fill_id && x.strategy === y.strategy;

  function markEvent(list, d) {
    if (d.symbol !== chart.symbol || list.some((x) => sameEvent(x, d))) return;
    list.push(d);
    if (list.length > MAX_MARKS) list.shift();
    renderMarkers();
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
    if (!kind && d.status) {  // an order's state, as the snapshot holds them
      const done = Number(d.filled_quantity) > 0 ? " " + num(d.filled_quantity, 4) + " @ " + num(d.avg_fill_price) : "";
      return ["ORDER " + sym + " " + String(d.side || "").toUpperCase() + " " + d.status + done, d.status === "denied" ? "down" : ""];
    }
    return [(kind || channel) + " " + sym + " " + (d.client_order_id || ""), ""];
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
      if (v === undefined || v === null) continue;
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

  function applyPortfolio(p) {
    if (!p || p.equity === undefined) return;
    renderPortfolio(p);
    chartEvent("portfolio", p);
  }

  function applyEquity(p) {
    if (addEquityPoint(p.ts_event, p.equity) && chart.area) {
      const pts = equitySeries();
      if (pts.length) chart.area.update(pts[pts.length - 1]);
    }
    const node = $("equity-chart");
    node.dataset.points = String(state.equity.length);
    const ys = state.equity.map((q) => q[1]);
    if (ys.length > 1) {
      $("equity-range").textContent = "low " + num(Math.min(...ys)) + " · high " + num(Math.max(...ys)) + " · " + ys.length + " snapshots";
    }
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
    if (channel === "signals") { addSignal(d); renderSignals(); chartEvent("signals", d); }
    else if (channel === "bars") chartEvent("bars", d);
    else if (channel === "portfolio") applyPortfolio(d);
    else if (channel === "risk") renderRisk(d);
    else {
      if (channel === "fills") chartEvent("fills", d);
      addFeed(...feedText(channel, d));
    }
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
    for (const channel of Object.keys(data)) applySnapshot(channel, data[channel]);
    loadCharts(chart.symbol);  // the history to go with the snapshot (again after a reconnect)
  }

  function connect() {
    const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(proto + "//" + window.location.host + "/ws?token=" + encodeURIComponent(state.token));
    state.ws = ws;
    ws.onopen = () => {
      state.backoff = 500;
      setConn("live", "live");
      // symbols null: every symbol (an empty list would mean none).
      ws.send(JSON.stringify({ op: "subscribe", channels: ["signals", "portfolio", "alerts", "fills", "orders", "bars"], symbols: null }));
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
    if (tg) { try { tg.ready(); tg.expand(); } catch (err) { /* older clients */ } }
    wireAdmin();
    if (!(await authenticate())) return;
    initCharts();
    loadRisk();
    connect();
  }

  document.addEventListener("DOMContentLoaded", main);
})();
