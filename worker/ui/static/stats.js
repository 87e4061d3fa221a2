// The stats page: the figures of `agentspool stats` (`/api/stats`, the same dict as
// `stats --json`) for the sessions the filters keep: totals, sessions, tokens and
// cost per day stacked by agent or model (charts.js), and a table of tools. The
// filters are the sessions page's (agent, status, since), kept in the URL, so one
// link carries them from one page to the other.
"use strict";

(() => {
  const { el, api } = AS;
  const fields = {
    agent: document.getElementById("f-agent"),
    status: document.getElementById("f-status"),
    since: document.getElementById("f-since"),
    stack: document.getElementById("f-stack"),
  };
  const SHARED = ["agent", "status", "since"]; // the filters the sessions page has too
  let generation = 0; // a reply to an older choice of filters is dropped

  function filtersFromUrl() {
    const params = new URLSearchParams(location.search);
    for (const [name, field] of Object.entries(fields)) {
      const value = params.get(name) || (name === "stack" ? "agent" : "");
      if (value && ![...field.options].some((o) => o.value === value)) {
        if (name === "stack") continue;
        field.append(el("option", { value }, value));
      }
      field.value = value;
    }
  }

  function shared() {
    const out = {};
    for (const name of SHARED) if (fields[name].value) out[name] = fields[name].value;
    return out;
  }

  function toUrl() {
    const query = { ...shared() };
    if (fields.stack.value !== "agent") query.stack = fields.stack.value;
    const text = new URLSearchParams(query).toString();
    history.replaceState(null, "", text ? "?" + text : location.pathname);
    const back = new URLSearchParams(shared()).toString();
    for (const id of ["to-sessions", "nav-sessions"]) {
      document.getElementById(id).setAttribute("href", "/" + (back ? "?" + back : ""));
    }
  }

  function percent(rate) {
    return rate === null || rate === undefined ? "-" : `${(rate * 100).toFixed(1)} %`;
  }

  // A figure as text, with the API's number in data-value (what it was made from).
  function figure(key, label, value, note, raw) {
    return el("div", { class: "figure", "data-figure": key, "data-value": JSON.stringify(raw === undefined ? null : raw) },
      el("span", { class: "label" }, label),
      el("b", { class: "value" }, value),
      note ? el("span", { class: "note muted" }, note) : null);
  }

  function renderTotals(t) {
    const statuses = AS.STATUSES.filter((s) => t.sessions_by_status[s])
      .map((s) => `${AS.fmtCount(t.sessions_by_status[s])} ${s}`).join(", ");
    document.getElementById("totals").replaceChildren(
      figure("sessions", "Sessions", AS.fmtCount(t.sessions), statuses, t.sessions),
      figure("input_tokens", "Tokens in", AS.fmtCount(t.input_tokens), "cached ones included", t.input_tokens),
      figure("output_tokens", "Tokens out", AS.fmtCount(t.output_tokens), null, t.output_tokens),
      figure("cache_read_tokens", "Cache read", AS.fmtCount(t.cache_read_tokens), null, t.cache_read_tokens),
      figure("cache_write_tokens", "Cache write", AS.fmtCount(t.cache_write_tokens), null, t.cache_write_tokens),
      figure("cost_usd", "Cost", AS.fmtCost(t.cost_usd),
        t.sessions_unpriced ? `${AS.plural(t.sessions_unpriced, "session")} without a price` : null, t.cost_usd),
      figure("tool_calls", "Tool calls", AS.fmtCount(t.tool_calls), `${AS.fmtCount(t.tool_errors)} failed`, t.tool_calls),
      figure("tool_error_rate", "Tool error rate", percent(t.tool_error_rate), null, t.tool_error_rate),
      figure("tool_duration_p50_ms", "Tool p50", AS.fmtDuration(t.tool_duration_p50_ms), null, t.tool_duration_p50_ms),
      figure("tool_duration_p95_ms", "Tool p95", AS.fmtDuration(t.tool_duration_p95_ms), null, t.tool_duration_p95_ms),
    );
  }

  // A group's series name: its agent or model ("(none)" for a session without one).
  function seriesName(group, stack) {
    const v = group[stack];
    return v === null || v === undefined || v === "" ? "(none)" : String(v);
  }

  function renderCharts(data, stack) {
    const points = (key) => data.groups.map((g) => ({ day: g.day, series: seriesName(g, stack), value: Number(g[key]) || 0 }));
    // One order for the three charts (most sessions first), so a series keeps its colour.
    const sizes = new Map();
    for (const g of data.groups) sizes.set(seriesName(g, stack), (sizes.get(seriesName(g, stack)) || 0) + g.sessions);
    const order = [...sizes.keys()].sort((a, b) => sizes.get(b) - sizes.get(a) || (a < b ? -1 : 1));
    const count = (v) => AS.fmtCount(Math.round(v));
    const charts = [
      ["chart-sessions", "sessions", { tick: count, label: count }, true],
      ["chart-tokens", "tokens", { tick: compact, label: count }, true],
      ["chart-cost", "cost_usd", { tick: (v) => (v ? `$${+v.toPrecision(3)}` : "$0"), label: AS.fmtCost }, false],
    ];
    let series = [];
    for (const [id, key, format, integer] of charts) {
      const values = key === "tokens"
        ? data.groups.map((g) => ({ day: g.day, series: seriesName(g, stack), value: (g.input_tokens || 0) + (g.output_tokens || 0) }))
        : points(key);
      const box = document.getElementById(id);
      const drawn = CHARTS.stackedBars(values, order, format, integer, box.clientWidth);
      series = drawn.series;
      box.replaceChildren(box.querySelector("figcaption"), drawn.node);
    }
    document.getElementById("legend").replaceChildren(CHARTS.legend(series));
    const days = new Set(data.groups.map((g) => g.day)).size;
    document.getElementById("chart-note").textContent = data.groups.length
      ? `${AS.plural(days, "day")} with sessions, stacked by ${stack}` : "no sessions";
  }

  // 1,234 -> "1.2k"; axis ticks only (the tooltips and tables give exact counts).
  function compact(v) {
    if (v >= 1e9) return `${+(v / 1e9).toFixed(1)}G`;
    if (v >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
    if (v >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
    return AS.fmtCount(Math.round(v));
  }

  function renderTools(data) {
    document.getElementById("tool-rows").replaceChildren(...data.groups.map((g) =>
      el("tr", { "data-tool": g.tool },
        el("td", { class: "name" }, g.tool),
        el("td", { class: "num calls" }, AS.fmtCount(g.tool_calls)),
        el("td", { class: "num errors" }, AS.fmtCount(g.tool_errors)),
        el("td", { class: "num error-rate" }, percent(g.tool_error_rate)),
        el("td", { class: "num p50", "data-value": JSON.stringify(g.tool_duration_p50_ms) }, AS.fmtDuration(g.tool_duration_p50_ms)),
        el("td", { class: "num p95", "data-value": JSON.stringify(g.tool_duration_p95_ms) }, AS.fmtDuration(g.tool_duration_p95_ms)))));
    document.getElementById("tools-note").textContent = data.groups.length ? AS.plural(data.groups.length, "tool") : "no tool calls";
  }

  async function load() {
    const mine = ++generation;
    const stack = fields.stack.value;
    document.body.dataset.loading = "1"; // (tests wait for it to go: the page is drawn)
    try {
      const [byDay, byTool] = await Promise.all([
        api("stats", { ...shared(), by: `day,${stack}`, tool_groups: "0" }), // (the charts need no tool figures)
        api("stats", { ...shared(), by: "tool" }),
      ]);
      if (mine !== generation) return;
      AS.showError(null);
      renderTotals(byDay.totals);
      renderCharts(byDay, stack);
      renderTools(byTool);
    } catch (e) {
      if (mine === generation) AS.showError(e);
    } finally {
      if (mine === generation) delete document.body.dataset.loading;
    }
  }

  function changed() {
    toUrl();
    load();
  }

  async function start() {
    for (const s of AS.STATUSES) fields.status.append(el("option", { value: s }, s));
    filtersFromUrl();
    toUrl();
    document.getElementById("filters").addEventListener("submit", (e) => e.preventDefault());
    for (const field of Object.values(fields)) field.addEventListener("change", changed);
    AS.showSource();
    api("sessions", { limit: 1 }).then((data) => {
      const keep = fields.agent.value;
      const agents = data.agents || [];
      const options = [el("option", { value: "" }, "all"), ...agents.map((a) => el("option", { value: a }, a || "(none)"))];
      if (keep && !agents.includes(keep)) options.push(el("option", { value: keep }, keep));
      fields.agent.replaceChildren(...options);
      fields.agent.value = keep;
    }).catch(() => {});
    await load();
  }

  start();
})();
