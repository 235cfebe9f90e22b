// The dashboard's script: reads the usage API (/v1/…) with the admin token and draws
// everything as HTML and inline SVG. Served by the admin port itself (CSP: script-src 'self').
"use strict";
(function () {
  const REFRESH_MS = 5000, RATE_MINUTES = 60, MAX_RATE_MODELS = 8, MIN_CHART_DAYS = 7;
  const KEY = "costkeeper-admin-token", SVG_NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#3867d6", "#20bf6b", "#f7b731", "#eb3b5a", "#8854d0", "#0fb9b1", "#fa8231", "#4b6584", "#a55eea", "#2d98da"];
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    sessionStorage.setItem(KEY, params.get("token"));
    params.delete("token");  // keep the token out of history and bookmarks
    history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : ""));
  }
  if (params.has("days")) $("days").value = params.get("days");
  let timer = null, last = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "class") node.className = value; else node.setAttribute(name, value);
    }
    for (const child of children) node.append(child instanceof Node ? child : String(child));
    return node;
  }
  function svg(tag, attrs, tooltip) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    if (tooltip) { const title = document.createElementNS(SVG_NS, "title"); title.textContent = tooltip; node.append(title); }
    return node;
  }
  function text(x, y, content, anchor) {
    const node = svg("text", { x, y, "text-anchor": anchor || "start" });
    node.textContent = content;
    return node;
  }

  // Money. Exact from integer pico-USD, never through a float: pico-USD pass 2^53, the
  // largest integer a JavaScript number holds exactly, from $9,007.20. `api` reads every
  // `*_pico_usd` as a string, and BigInt formats it (as metering.money.format_usd) for the
  // tooltips; the short figures and the geometry may round.
  const PICO_FIELDS = /"(\w+_pico_usd)":\s*(-?\d+)/g, PER_USD = 10n ** 12n;
  function usdExact(pico) {
    const value = BigInt(pico), abs = value < 0n ? -value : value;
    const digits = String(abs % PER_USD).padStart(12, "0");
    return (value < 0n ? "-$" : "$") + (abs / PER_USD) + "." + digits.slice(0, 6) + digits.slice(6).replace(/0+$/, "");
  }
  const dollars = (pico) => Number(BigInt(pico)) / 1e12;
  function compact(n) {
    const units = ["", "k", "M", "B", "T"];
    let value = Math.abs(Number(n)), unit = 0;
    while (value >= 999.95 && unit < units.length - 1) { value /= 1000; unit++; }
    const shown = unit === 0 ? String(Math.round(value)) : value < 99.95 ? value.toFixed(1).replace(/\.0$/, "") : String(Math.round(value));
    return (Number(n) < 0 ? "-" : "") + shown + units[unit];
  }
  function usdShort(value) {  // a number of dollars: $1.2k, $12.34, $0.12, $0.0012
    const abs = Math.abs(value), sign = value < 0 ? "-$" : "$";
    if (abs === 0) return "$0";
    if (abs >= 1000) return sign + compact(abs);
    if (abs >= 1) return sign + abs.toFixed(2);
    return sign + abs.toFixed(Math.min(12, Math.max(2, 1 - Math.floor(Math.log10(abs)))));
  }
  const usd = (pico) => usdShort(dollars(pico));
  const exact = (n) => Number(n).toLocaleString("en-US");
  function pct(r) {
    if (r === null || r === undefined) return "—";
    if (r === 0) return "0%";
    if (r > 0 && r < 0.001) return "<0.1%";
    return (r * 100).toFixed(r < 0.1 ? 1 : 0) + "%";
  }
  const money = (tag, pico, attrs) => el(tag, { ...attrs, title: usdExact(pico) }, usd(pico));
  const count = (tag, n, suffix) => el(tag, { title: exact(n) + (suffix || "") }, compact(n) + (suffix || ""));
  const hhmmss = (iso) => iso ? iso.slice(11, 19) : "earlier";

  const colors = new Map();  // model → colour, stable across refreshes
  function colorOf(model) {
    if (!colors.has(model)) colors.set(model, PALETTE[colors.size % PALETTE.length]);
    return colors.get(model);
  }
  function swatch(model) {
    const node = el("span", { class: "swatch" });
    node.style.background = colorOf(model);  // CSSOM: allowed by style-src 'self', a style attribute is not
    return node;
  }
  const legend = (models) => el("div", { class: "chart-legend" }, ...models.map((m) => el("span", { class: "id" }, swatch(m), m)));

  class Unauthorized extends Error {}
  async function api(path) {
    const token = sessionStorage.getItem(KEY);
    if (!token) throw new Unauthorized();
    const response = await fetch(path, { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
    if (response.status === 401) throw new Unauthorized();
    const body = JSON.parse((await response.text()).replace(PICO_FIELDS, '"$1":"$2"'));
    if (!response.ok) throw new Error(body.message || response.statusText);
    return body;
  }

  const STATE_LABEL = { NORMAL: "normal", TIGHT: "near the quota", exhausted: "exhausted" };
  function quotaRow(scope, m) {
    const state = m.exhausted ? "exhausted" : m.mode;
    const quota = BigInt(m.quota_pico_usd), spent = BigInt(m.spend_pico_usd);
    const share = (part) => quota > 0n ? Math.min(100, 100 * dollars(part) / dollars(quota)) : (part > 0n ? 100 : 0);
    const fill = el("span", { class: "spent" });
    fill.style.width = share(spent).toFixed(2) + "%";
    const bar = el("div", { class: "bar " + state, role: "meter", "aria-valuenow": m.ratio.toFixed(4) }, fill);
    let shown = usd(spent) + " of " + usd(quota) + " · " + pct(m.ratio);
    let tooltip = "spent " + usdExact(spent) + " of " + usdExact(quota);
    if ("leased_pico_usd" in m) {  // quotas by budget leases: what replicas hold but have not spent yet
      const leased = BigInt(m.leased_pico_usd), held = el("span", { class: "leased" });
      held.style.left = fill.style.width;
      held.style.width = Math.min(100 - share(spent), share(leased)).toFixed(2) + "%";
      bar.append(held);
      shown += " · leased " + usd(leased) + " · left " + usd(m.remaining_pico_usd);
      tooltip += ", leased " + usdExact(leased) + ", remaining " + usdExact(m.remaining_pico_usd);
    }
    return el("div", { class: "quota-row", "data-scope": scope.scope, "data-model": m.model },
      el("span", { class: "id" }, m.model),
      el("span", { class: "state" }, el("span", { class: "badge " + state }, STATE_LABEL[state] || state), quotaSource(m)),
      bar, el("span", { class: "figures", title: tooltip }, shown));
  }

  // Where the quota comes from (/v1/quotas `source`, `set_by`): config.yaml, or a runtime override and who set it.
  function quotaSource(m) {
    if (!m.source) return "";
    const override = m.source === "override";
    return el("span", { class: "source " + m.source, "data-source": m.source,
                        title: override ? "runtime override, set by " + (m.set_by || "unknown") : "from config.yaml" },
      override ? "override" : "config");
  }

  function renderQuotas(data) {
    const box = $("quotas");
    box.replaceChildren();
    if (!data.scopes.length) { box.append(el("p", { class: "empty" }, "No quotas configured.")); return; }
    for (const scope of data.scopes) {
      box.append(el("h3", { "data-scope": scope.scope }, el("span", { class: "id" }, scope.scope),
        scope.active_model ? el("span", { class: "badge active" }, "serving ", scope.active_model)
          : el("span", { class: "badge spent" }, "chain spent: requests refused until 00:00 UTC")),
      el("div", { class: "scroll" }, el("div", { class: "quota-rows" }, ...scope.models.map((m) => quotaRow(scope, m)))));
    }
  }

  function renderFallbacks(data) {
    const events = data.scopes.flatMap((scope) => (scope.fallbacks || []).map((f) => ({ scope: scope.scope, ...f })));
    events.sort((a, b) => (a.time || "").localeCompare(b.time || ""));
    if (!events.length) { $("fallbacks").replaceChildren(el("p", { class: "empty" }, "No fallback today.")); return; }
    const head = el("tr", {}, ...["time", "scope", "from → to"].map((h) => el("th", {}, h)));
    const rows = events.map((f) => el("tr", { "data-scope": f.scope, "data-from": f.from },
      el("td", { title: f.time || "marked before times were kept" }, hhmmss(f.time)),
      el("td", { class: "id" }, f.scope),
      el("td", { class: "route" }, el("span", { class: "id" }, f.from), el("span", { class: "arrow" }, "→"), " ",  // a line may break here
        f.to ? el("span", { class: "id" }, f.to) : el("span", { class: "badge spent" }, "none: refused"))));
    $("fallbacks").replaceChildren(el("div", { class: "scroll" }, el("table", { class: "text-table" }, el("thead", {}, head), el("tbody", {}, ...rows))));
  }

  function utcDays(count) {
    const today = Math.floor(Date.now() / 86400000), days = [];
    for (let i = count - 1; i >= 0; i--) days.push(new Date((today - i) * 86400000).toISOString().slice(0, 10));
    return days;
  }

  function renderDaily(data, days) {
    const box = $("daily");
    const dayList = utcDays(days), byDay = new Map(dayList.map((d) => [d, []]));
    const models = [...new Set(data.rows.map((r) => r.model))].sort();
    for (const r of data.rows) if (byDay.has(r.day)) byDay.get(r.day).push(r);
    const totals = dayList.map((d) => byDay.get(d).reduce((sum, r) => sum + dollars(r.cost_pico_usd), 0));
    if (!data.rows.length) { box.replaceChildren(el("p", { class: "empty" }, "No usage in these days.")); return; }
    const W = Math.max(260, box.clientWidth || 520), H = 170, left = 52, bottom = 18, top = 6;
    const max = Math.max(...totals) || 1, plot = H - bottom - top, step = (W - left) / dayList.length;
    const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, height: H, role: "img", "aria-label": "cost per day" });
    for (const f of [0, 0.5, 1]) {
      const y = top + plot * (1 - f);
      chart.append(svg("line", { class: "grid", x1: left, x2: W, y1: y, y2: y }), text(left - 4, y + 3, usdShort(max * f), "end"));
    }
    const every = Math.ceil(dayList.length / Math.max(2, Math.floor((W - left) / 48)));
    dayList.forEach((day, i) => {
      let y = top + plot;
      const x = left + i * step + step * 0.15, width = Math.max(1, step * 0.7);
      for (const r of byDay.get(day).sort((a, b) => a.model.localeCompare(b.model))) {
        const height = plot * dollars(r.cost_pico_usd) / max;
        y -= height;
        chart.append(svg("rect", { class: "datum", x: x.toFixed(1), y: y.toFixed(1), width: width.toFixed(1), height: height.toFixed(2),
          fill: colorOf(r.model), "data-day": day, "data-model": r.model }, `${day} · ${r.model} · ${usdExact(r.cost_pico_usd)}`));
      }
      if (i % every === 0 || i === dayList.length - 1) chart.append(text(x + width / 2, H - 4, day.slice(5), "middle"));
    });
    box.replaceChildren(chart, legend(models));
  }

  function rateChart(series, field, summary, color, now) {
    const W = 360, H = 64, P = 3, end = Math.floor(now / 60000), values = new Map(series.map((p) => [p.time, p[field]]));
    const points = [];
    for (let i = RATE_MINUTES - 1; i >= 0; i--) points.push(values.get(new Date((end - i) * 60000).toISOString().slice(0, 16) + "Z") || 0);
    const max = Math.max(1, ...points), y = (v) => (H - P - (v / max) * (H - 2 * P)).toFixed(1);
    const x = (i) => (i * (W / (RATE_MINUTES - 1))).toFixed(1);
    const coords = points.map((v, i) => `${x(i)},${y(v)}`);
    const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", height: H, role: "img", "aria-label": field });
    chart.append(svg("line", { class: "grid", x1: 0, x2: W, y1: H - P, y2: H - P }));
    chart.append(svg("polygon", { points: `0,${H - P} ${coords.join(" ")} ${W},${H - P}`, fill: color, "fill-opacity": 0.12 }));
    chart.append(svg("polyline", { class: "datum", points: coords.join(" "), fill: "none", stroke: color, "stroke-width": 1.5,
      "vector-effect": "non-scaling-stroke" }));
    chart.append(svg("line", { x1: 0, x2: W, y1: y(summary.avg_5m), y2: y(summary.avg_5m), stroke: color, "stroke-dasharray": "4 3",
      "vector-effect": "non-scaling-stroke", "stroke-opacity": 0.7 }, "5-minute average " + summary.avg_5m.toFixed(1)));
    return chart;
  }

  function rateFigures(name, unit, s) {
    const peak = s.overall_peak;
    return el("div", { class: "figures" }, name + ": 5-min peak ", el("b", { title: exact(s.recent_peak_5m) }, compact(s.recent_peak_5m)),
      " · 5-min avg ", el("b", { title: s.avg_5m.toFixed(2) }, compact(s.avg_5m)),
      " · hour peak ", el("span", { title: exact(peak.value) + (peak.time ? " at " + peak.time : "") },
        compact(peak.value) + (peak.time ? " at " + peak.time.slice(11, 16) : "")), " " + unit);
  }

  function renderRates(results) {
    const box = $("rates");
    if (!results.length) { box.replaceChildren(el("p", { class: "empty" }, "No model traffic in this window.")); return; }
    const now = Date.now();
    box.replaceChildren(...results.map((r) => el("div", { class: "chart-box", "data-model": r.model },
      el("h3", {}, el("span", { class: "id" }, swatch(r.model), r.model)),
      rateChart(r.series, "tpm", r.tpm, colorOf(r.model), now), rateFigures("tokens/min", "", r.tpm),
      rateChart(r.series, "rpm", r.rpm, colorOf(r.model), now), rateFigures("requests/min", "", r.rpm))));
  }

  function renderCache(rows) {
    const cached = rows.filter((r) => r.cache_efficiency !== null);
    if (!cached.length) { $("cache").replaceChildren(el("p", { class: "empty" }, "No prompt-cache reads or writes in this window.")); return; }
    const W = 200, H = 14;
    const grid = el("div", { class: "cache-rows" }, ...cached.flatMap((r) => {
      const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", height: H, role: "img",
        "aria-label": "cache efficiency of " + r.model });
      chart.append(svg("rect", { x: 0, y: 0, width: W, height: H, rx: 3, fill: "#eef1f5" }));
      chart.append(svg("rect", { class: "datum", x: 0, y: 0, width: (W * r.cache_efficiency).toFixed(1), height: H, rx: 3,
        fill: colorOf(r.model) }, pct(r.cache_efficiency)));
      return [el("span", { class: "id" }, r.model), chart,
        el("span", { class: "figures", "data-model": r.model, title: `${exact(r.cache_read_tokens)} tokens read, ${exact(r.cache_write_tokens)} written` },
          el("b", {}, pct(r.cache_efficiency)), ` · ${compact(r.cache_read_tokens)} read / ${compact(r.cache_write_tokens)} written`)];
    }));
    $("cache").replaceChildren(grid);
  }

  function table(header, rows) {
    return el("div", { class: "scroll" }, el("table", {}, el("thead", {}, el("tr", {}, ...header.map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows)));
  }

  function renderApps(data) {
    if (!data.rows.length) { $("apps").replaceChildren(el("p", { class: "empty" }, "No usage in this window.")); return; }
    $("apps").replaceChildren(table(["org / app", "requests", "tokens", "cost"], data.rows.map((r) =>
      el("tr", { "data-row": r.org + " / " + r.app }, el("td", { class: "id" }, r.org + " / " + r.app),
        count("td", r.requests), count("td", r.total_tokens), money("td", r.cost_pico_usd)))));
  }

  function renderModels(data) {
    if (!data.rows.length) { $("models").replaceChildren(el("p", { class: "empty" }, "No usage in this window.")); return; }
    $("models").replaceChildren(table(["model", "requests", "input", "output", "cache read", "cache write", "cache eff.", "cost"],
      data.rows.map((r) => el("tr", { "data-row": r.model }, el("td", { class: "id" }, r.model), count("td", r.requests),
        count("td", r.input_tokens), count("td", r.output_tokens), count("td", r.cache_read_tokens), count("td", r.cache_write_tokens),
        el("td", {}, pct(r.cache_efficiency)), money("td", r.cost_pico_usd)))));
  }

  function renderFailures(data) {
    if (!data.rows.length) { $("auth-failures").replaceChildren(el("p", { class: "empty" }, "No refused requests in the last hour.")); return; }
    $("auth-failures").replaceChildren(table(["access key id", "org / app", "reason", "count", "last seen (UTC)"], data.rows.map((r) =>
      el("tr", { "data-key": r.access_key_id || "", "data-reason": r.reason },
        el("td", { class: "id" }, r.access_key_id || "(none or malformed)"),
        el("td", { class: "id" }, r.org ? r.org + " / " + r.app : "—"),
        el("td", { class: "id" }, r.reason), count("td", r.count),
        el("td", {}, new Date(r.last_seen * 1000).toISOString().slice(0, 19).replace("T", " "))))));
  }

  function render(d) {
    renderQuotas(d.quotas);
    renderFallbacks(d.quotas);
    $("daily-title").textContent = `Cost per day, by model (last ${d.chartDays} days, UTC)`;
    renderDaily(d.daily, d.chartDays);
    renderRates(d.rates);
    renderCache(d.models.rows);
    renderApps(d.apps);
    renderModels(d.models);
    renderFailures(d.failures);
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const days = Number($("days").value), chartDays = Math.max(days, MIN_CHART_DAYS);
      const [quotas, apps, models, daily, failures] = await Promise.all([
        api("/v1/quotas"), api(`/v1/usage?days=${days}&by=org,app`), api(`/v1/usage?days=${days}&by=model`),
        api(`/v1/usage?days=${chartDays}&by=day,model`), api("/v1/auth-failures")]);
      const top = [...models.rows].sort((a, b) => b.total_tokens - a.total_tokens).slice(0, MAX_RATE_MODELS);
      const rates = await Promise.all(top.map((m) => api(`/v1/rates?model=${encodeURIComponent(m.model)}&minutes=${RATE_MINUTES}`)));
      last = { quotas, apps, models, daily, rates, chartDays, failures };
      render(last);
      $("error").textContent = "";
      const total = apps.total.cost_pico_usd;
      $("status").replaceChildren("updated " + new Date().toLocaleTimeString() + " · total ",
        el("span", { id: "total", title: usdExact(total) }, usd(total)), days === 1 ? " today" : ` in ${days} days`);
    } catch (error) {
      if (error instanceof Unauthorized) {
        sessionStorage.removeItem(KEY);
        $("token-form").hidden = false;
        $("status").textContent = "an admin token is required";
        return;  // no refresh until a token is given
      }
      $("error").textContent = "refresh failed: " + error.message;
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("token-input").value.trim());
    $("token-input").value = "";
    $("token-form").hidden = true;
    refresh();
  });
  $("days").addEventListener("change", refresh);
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => { if (last) renderDaily(last.daily, last.chartDays); }, 150);
  });
  refresh();
})();
