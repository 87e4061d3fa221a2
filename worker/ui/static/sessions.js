// The sessions list: filters and the sort in the URL's query, refreshed every few
// seconds. Sorting is the server's (the API's `sort` and `dir`), so a sort by cost
// orders every matching session, not only the page shown.
"use strict";

(() => {
  const { el, api } = AS;
  const PAGE = 100;
  let limit = PAGE;
  let pollMs = 3000;
  let timer = null;
  let inFlight = false;

  const form = document.getElementById("filters");
  const fields = {
    agent: document.getElementById("f-agent"),
    status: document.getElementById("f-status"),
    since: document.getElementById("f-since"),
    q: document.getElementById("f-q"),
  };

  function filtersFromUrl() {
    const params = new URLSearchParams(location.search);
    for (const [name, field] of Object.entries(fields)) {
      const value = params.get(name) || "";
      if (field.tagName === "SELECT" && value && ![...field.options].some((o) => o.value === value)) {
        field.append(el("option", { value }, value));
      }
      field.value = value;
    }
  }

  // The sort: a column of the API's `sort` and a direction; newest first by default.
  const SORTS = ["started", "model", "input_tokens", "output_tokens", "cost"];
  const sort = { by: "started", dir: "desc" };

  function sortFromUrl() {
    const params = new URLSearchParams(location.search);
    sort.by = SORTS.includes(params.get("sort")) ? params.get("sort") : "started";
    sort.dir = params.get("dir") === "asc" ? "asc" : "desc";
  }

  function currentFilters() {
    const out = {};
    for (const [name, field] of Object.entries(fields)) if (field.value) out[name] = field.value;
    return out;
  }

  // The filters and the sort, as the URL and the API take them (defaults left out).
  function currentQuery() {
    const out = currentFilters();
    if (sort.by !== "started") out.sort = sort.by;
    if (sort.dir !== "desc") out.dir = sort.dir;
    return out;
  }

  function renderSort() {
    for (const button of document.querySelectorAll("button.sort")) {
      const active = button.dataset.sort === sort.by;
      button.classList.toggle("active", active);
      button.parentElement.setAttribute("aria-sort", active ? (sort.dir === "asc" ? "ascending" : "descending") : "none");
      button.querySelector(".arrow").textContent = active ? (sort.dir === "asc" ? " ▲" : " ▼") : "";
    }
  }

  // A click on the sorted column turns the order round; on another, sorts by it,
  // largest (or, for the model, A) first.
  function sortBy(column) {
    if (sort.by === column) sort.dir = sort.dir === "desc" ? "asc" : "desc";
    else {
      sort.by = column;
      sort.dir = column === "model" ? "asc" : "desc";
    }
    renderSort();
    changed();
  }

  function filtersToUrl() {
    const query = new URLSearchParams(currentQuery()).toString();
    history.replaceState(null, "", query ? "?" + query : location.pathname);
    // The stats page takes the same filters (the search text aside).
    const shared = {};
    for (const name of ["agent", "status", "since"]) if (fields[name].value) shared[name] = fields[name].value;
    const stats = new URLSearchParams(shared).toString();
    document.getElementById("nav-stats").setAttribute("href", "/stats" + (stats ? "?" + stats : ""));
  }

  function renderCounts(data) {
    const box = document.getElementById("counts");
    const chips = AS.STATUSES.map((status) =>
      el("button", {
        type: "button",
        class: `chip ${AS.statusClass(status)}${fields.status.value === status ? " active" : ""}`,
        "data-status": status,
        onclick: () => {
          fields.status.value = fields.status.value === status ? "" : status;
          changed();
        },
      }, el("span", { class: "dot" }), status, " ", el("b", { class: "n" }, AS.fmtCount(data.counts[status] || 0))),
    );
    const total = Object.values(data.counts).reduce((a, b) => a + b, 0);
    box.replaceChildren(el("span", { class: "total" }, AS.plural(total, "session")), ...chips);
  }

  function renderAgents(agents) {
    const keep = fields.agent.value;
    const options = [el("option", { value: "" }, "all")];
    for (const agent of agents) options.push(el("option", { value: agent }, agent || "(none)"));
    if (keep && !agents.includes(keep)) options.push(el("option", { value: keep }, keep));
    fields.agent.replaceChildren(...options);
    fields.agent.value = keep;
  }

  function row(s) {
    const link = el("a", { href: "/s/" + encodeURIComponent(s.id), class: "sid" }, s.id);
    const status = el("span", { class: `badge ${AS.statusClass(s.status)}` }, s.status);
    const sync = s.sync_state === null || s.sync_state === undefined
      ? el("span", { class: "muted" }, s.replica ? "-" : "remote")
      : el("span", { class: `sync sync-${s.sync_state}`, title: s.sync_error || null }, s.sync_state);
    const cached = [];
    if (s.cache_read_tokens) cached.push(`${AS.fmtCount(s.cache_read_tokens)} read from the cache`);
    if (s.cache_write_tokens) cached.push(`${AS.fmtCount(s.cache_write_tokens)} written to it`);
    return el("tr", { class: s.open ? "open" : null, "data-session": s.id },
      el("td", {}, status, s.open ? el("span", { class: "live" }, " ● live") : null),
      el("td", {}, link, s.replica === false && s.sync_state ? el("span", { class: "muted" }, " (pruned)") : null),
      el("td", { class: "agent" }, s.agent),
      el("td", { class: "model" }, s.model || "-"),
      el("td", { class: "time" }, AS.fmtTime(s.started_at || s.last_activity_at)),
      el("td", { class: "num duration" }, AS.fmtDuration(s.duration_ms)),
      el("td", { class: "num messages" }, AS.fmtCount(s.message_count)),
      el("td", { class: "num tools" }, AS.fmtCount(s.tool_count)),
      el("td", { class: "num input-tokens", title: cached.length ? `of which ${cached.join(", ")}` : null }, AS.fmtCount(s.input_tokens)),
      el("td", { class: "num output-tokens" }, AS.fmtCount(s.output_tokens)),
      el("td", { class: "num cost" }, AS.fmtCost(s.cost_usd)),
      el("td", {}, sync),
    );
  }

  async function load() {
    if (inFlight) return;
    inFlight = true;
    try {
      const data = await api("sessions", { ...currentQuery(), limit });
      AS.showError(null);
      renderCounts(data);
      renderAgents(data.agents || []);
      document.getElementById("rows").replaceChildren(...data.sessions.map(row));
      const empty = document.getElementById("empty");
      empty.hidden = data.sessions.length > 0;
      empty.textContent = Object.keys(currentFilters()).length ? "No session matches." : "No sessions yet.";
      document.getElementById("more").hidden = data.total <= data.sessions.length;
      document.getElementById("shown").textContent =
        data.total > data.sessions.length ? `${data.sessions.length} of ${data.total}` : "";
      document.getElementById("refreshed").textContent = `updated ${AS.fmtClock(data.now)}`;
    } catch (e) {
      AS.showError(e);
    } finally {
      inFlight = false;
    }
  }

  let typing = null;
  function changed() {
    limit = PAGE;
    filtersToUrl();
    load();
  }

  function schedule() {
    clearInterval(timer);
    timer = setInterval(() => {
      if (!document.hidden) load();
    }, pollMs);
  }

  async function start() {
    const status = fields.status;
    for (const s of AS.STATUSES) status.append(el("option", { value: s }, s));
    filtersFromUrl();
    sortFromUrl();
    renderSort();
    filtersToUrl();
    for (const button of document.querySelectorAll("button.sort")) {
      button.addEventListener("click", () => sortBy(button.dataset.sort));
    }
    form.addEventListener("submit", (e) => e.preventDefault());
    for (const name of ["agent", "status", "since"]) fields[name].addEventListener("change", changed);
    fields.q.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(changed, 300);
    });
    document.getElementById("more").addEventListener("click", () => {
      limit += PAGE;
      load();
    });
    const info = await AS.showSource();
    pollMs = Math.max(1000, Math.round((info.poll_ms || 2000) * 1.5));
    await load();
    schedule();
  }

  start();
})();
