// One session: side panel, tool timeline (waterfall) and the transcript, paged
// (a page of items at a time as the reader scrolls), live while the session runs.
// The page keeps at most `keep` transcript items (3000; `?keep=N`, at least 400):
// scrolling on past them drops the earliest, so a 100,000-message session never
// piles up in the browser.
"use strict";

(() => {
  const { el, api } = AS;
  const FOLD_CHARS = 1200;
  const FOLD_LINES = 16;

  const state = {
    id: null,
    session: null,
    cursor: null,
    more: true,
    loading: false,
    tools: new Map(), // call_id -> { status, node } of the transcript's tool items
    timeline: [],
    keep: Math.max(400, parseInt(new URLSearchParams(location.search).get("keep"), 10) || 3000),
    dropped: 0, // items removed from the top of the page
    timelineSignature: null,
    pollMs: 2000,
    timer: null,
  };

  function sessionApi(suffix, params) {
    return api(AS.sessionPath(state.id) + (suffix || ""), params);
  }

  // ---- text, folded when long ----------------------------------------------

  function pretty(text) {
    if (typeof text !== "string") return text === null || text === undefined ? "" : JSON.stringify(text, null, 2);
    const t = text.trim();
    // Short JSON stays on its line; longer JSON is indented to be readable.
    if (t.length > 80 && ((t.startsWith("{") && t.endsWith("}")) || (t.startsWith("[") && t.endsWith("]")))) {
      try {
        return JSON.stringify(JSON.parse(t), null, 2);
      } catch (e) {
        return text;
      }
    }
    return text;
  }

  // A <pre> holding text (never HTML); folded if long; "load all" fetches the rest.
  function textBlock(text, chars, truncated, loadFull, cls) {
    const shown = truncated ? text : pretty(text);
    const pre = el("pre", { class: "text " + (cls || "") }, shown);
    const box = el("div", { class: "text-box" }, pre);
    const long = shown.length > FOLD_CHARS || shown.split("\n").length > FOLD_LINES;
    if (long || truncated) {
      box.classList.add("folded");
      const toggle = el("button", { type: "button", class: "fold" }, truncated ? `show all ${AS.fmtCount(chars)} characters` : "show more");
      toggle.addEventListener("click", async () => {
        if (box.classList.contains("folded")) {
          if (truncated) {
            toggle.disabled = true;
            try {
              pre.textContent = pretty(await loadFull());
              truncated = false;
            } catch (e) {
              AS.showError(e);
            }
            toggle.disabled = false;
          }
          box.classList.remove("folded");
          toggle.textContent = "show less";
        } else {
          box.classList.add("folded");
          toggle.textContent = "show more";
        }
      });
      box.append(toggle);
    }
    return box;
  }

  // ---- transcript items ----------------------------------------------------------

  function messageNode(m) {
    const loadFull = async () => (await sessionApi(`/messages/${m.seq}`, { full: 1 })).content;
    return el("li", { class: `item message ${AS.roleClass(m.role)}`, "data-seq": m.seq },
      el("div", { class: "item-head" },
        el("span", { class: "role" }, m.role),
        el("span", { class: "muted" }, ` #${m.seq} `),
        el("time", { class: "muted" }, AS.fmtClock(m.created_at)),
      ),
      m.content === null ? el("p", { class: "muted" }, "(no content)") : textBlock(m.content, m.content_chars, m.truncated, loadFull, "content"),
    );
  }

  function toolNode(t) {
    const full = async (field) => (await sessionApi(`/tools/${encodeURIComponent(t.call_id)}`, { full: 1 }))[field];
    const part = (label, field) => {
      if (t[field] === null || t[field] === undefined) return null;
      const truncated = t[field].length < t[`${field}_chars`];
      return el("div", { class: `tool-part tool-${field}` },
        el("span", { class: "label" }, label),
        textBlock(t[field], t[`${field}_chars`], truncated, () => full(field)));
    };
    return el("li", { class: `item tool ${AS.statusClass(t.status)}`, "data-call": t.call_id },
      el("div", { class: "item-head" },
        el("span", { class: "tool-name" }, "tool ", el("b", {}, t.name || "?")),
        el("span", { class: `badge ${AS.statusClass(t.status)}` }, t.status),
        el("span", { class: "duration" }, t.duration_ms === null ? "" : AS.fmtDuration(t.duration_ms)),
        el("time", { class: "muted" }, AS.fmtClock(t.started_at || t.ended_at)),
        el("code", { class: "muted call-id" }, t.call_id),
      ),
      part("input", "input"), part("output", "output"), part("error", "error"),
    );
  }

  function appendItems(items) {
    const list = document.getElementById("transcript");
    for (const item of items) {
      if (item.kind === "message") {
        list.append(messageNode(item));
      } else {
        const node = toolNode(item);
        const known = state.tools.get(item.call_id);
        if (known) known.node.replaceWith(node);
        else list.append(node);
        state.tools.set(item.call_id, { status: item.status, node });
      }
    }
  }

  // Drop the earliest items beyond `keep`, keeping what the reader sees in place.
  function trimTop() {
    const list = document.getElementById("transcript");
    const extra = list.children.length - state.keep;
    if (extra <= 0) return;
    const before = list.getBoundingClientRect().height;
    for (let i = 0; i < extra; i++) {
      const node = list.firstElementChild;
      if (node.dataset.call !== undefined) state.tools.delete(node.dataset.call);
      node.remove();
    }
    window.scrollBy(0, list.getBoundingClientRect().height - before);
    state.dropped += extra;
    const note = document.getElementById("tr-dropped");
    note.replaceChildren(
      `${AS.fmtCount(state.dropped)} earlier items are no longer on the page. `,
      el("button", { type: "button", class: "link", onclick: restart }, "back to the start"),
    );
    note.hidden = false;
  }

  function restart() {
    document.getElementById("transcript").replaceChildren();
    document.getElementById("tr-dropped").hidden = true;
    state.tools.clear();
    state.cursor = null;
    state.more = true;
    state.dropped = 0;
    document.querySelector(".transcript-box").scrollIntoView();
    loadNext();
  }

  async function loadNext() {
    if (state.loading) return;
    state.loading = true;
    try {
      const page = await sessionApi("/events", { after: state.cursor });
      appendItems(page.items);
      trimTop();
      state.cursor = page.cursor;
      state.more = page.more;
      updateSession(page.session);
      AS.showError(null);
    } catch (e) {
      AS.showError(e);
    } finally {
      state.loading = false;
    }
    updateEnd();
    // A short page that still leaves the sentinel in view: keep going.
    if (state.more && sentinelVisible()) setTimeout(loadNext, 0);
  }

  function sentinelVisible() {
    const r = document.getElementById("sentinel").getBoundingClientRect();
    return r.top < window.innerHeight + 800;
  }

  function updateEnd() {
    const n = document.getElementById("transcript").children.length + state.dropped;
    const total = (state.session.message_count || 0) + (state.session.tool_count || 0);
    document.getElementById("tr-note").textContent = `${AS.fmtCount(n)} of ${AS.fmtCount(total)} items`;
    document.getElementById("tr-end").textContent = state.more
      ? "scroll for more"
      : state.session.open ? "waiting for new events…" : "end of the session";
  }

  // ---- the header and the side panel -------------------------------------------

  function updateSession(s) {
    state.session = s;
    const status = document.getElementById("status");
    status.className = `badge ${AS.statusClass(s.status)}`;
    status.textContent = s.status;
    document.getElementById("agent").textContent = s.agent || "?";
    document.getElementById("sid").textContent = s.id;
    document.getElementById("live").hidden = !s.open;
    document.title = `agentspool — ${s.agent || "?"} ${s.id}`;
    for (const [key, text] of [
      ["status", s.status],
      ["ended", AS.fmtTime(s.ended_at)],
      ["duration", AS.fmtDuration(s.duration_ms)],
      ["messages", AS.fmtCount(s.message_count)],
      ["tools", AS.fmtCount(s.tool_count)],
    ]) {
      const cell = document.querySelector(`[data-field="${key}"]`);
      if (cell) cell.textContent = text;
    }
  }

  function field(label, value, key) {
    if (value === null || value === undefined || value === "") return null;
    return [el("dt", {}, label), el("dd", { "data-field": key || null }, String(value))];
  }

  // The side panel: the session's facts at once, the details (model, token usage:
  // a pass over every message) when they arrive.
  function renderSide(data, details) {
    const s = data.session;
    const d = details || {};
    const sync = data.sync;
    const tokens = d.tokens;
    const items = [
      field("Session", s.id),
      field("Agent", s.agent),
      field("Status", s.status, "status"),
      field("Started", AS.fmtTime(s.started_at)),
      el("dt", {}, "Ended"), el("dd", { "data-field": "ended" }, AS.fmtTime(s.ended_at)),
      field("Duration", AS.fmtDuration(s.duration_ms), "duration"),
      field("Messages", AS.fmtCount(s.message_count), "messages"),
      field("Tool calls", AS.fmtCount(s.tool_count), "tools"),
      field("Events", AS.fmtCount(s.event_count)),
      field("Model", d.model),
      tokens ? field("Tokens", `${AS.fmtCount(tokens.input)} in, ${AS.fmtCount(tokens.output)} out (${AS.fmtCount(tokens.total)})`) : null,
      field("Host", s.host),
      field("PID", s.pid),
      field("Working dir", d.cwd),
      field("Sync", sync ? sync.sync_state : data.source.kind === "remote" ? "in the database" : null),
      sync ? field("Sync error", sync.sync_error) : null,
      field("Error", s.error),
    ];
    const side = document.getElementById("side");
    const meta = d.metadata;
    const metaList = [];
    if (meta && typeof meta === "object" && !Array.isArray(meta)) {
      for (const [k, v] of Object.entries(meta)) {
        metaList.push(el("dt", {}, k), el("dd", {}, typeof v === "string" ? v : JSON.stringify(v)));
      }
    } else if (meta !== null && meta !== undefined) {
      metaList.push(el("dd", {}, typeof meta === "string" ? meta : JSON.stringify(meta)));
    }
    side.replaceChildren(
      el("h2", {}, "Session"),
      el("dl", { class: "facts" }, items.flat().filter(Boolean)),
      metaList.length ? el("h2", {}, "Metadata") : null,
      metaList.length ? el("dl", { class: "facts meta" }, metaList) : null,
    );
  }

  // ---- the timeline --------------------------------------------------------------

  function toolSpan(t, now) {
    let start = AS.parseTime(t.started_at);
    let end = AS.parseTime(t.ended_at);
    if (start === null && end !== null) start = end - (t.duration_ms || 0);
    if (end === null) end = t.status === "running" ? now : start;
    return [start, end];
  }

  function renderTimeline(data) {
    const box = document.getElementById("timeline");
    const tools = data.tools;
    // Draw again only when something changed (or a running call's bar grows), so a
    // bar under the pointer stays put between polls.
    const signature = JSON.stringify([tools, data.total, data.session.ended_at]);
    const growing = tools.some((t) => t.status === "running");
    if (signature === state.timelineSignature && !growing) return;
    state.timelineSignature = signature;
    hideTip();
    state.timeline = tools;
    const note = document.getElementById("tl-note");
    note.textContent = tools.length < data.total
      ? `first ${AS.fmtCount(tools.length)} of ${AS.fmtCount(data.total)} calls`
      : `${AS.fmtCount(tools.length)} calls`;
    if (!tools.length) {
      box.replaceChildren(el("p", { class: "muted" }, "No tool calls."));
      return;
    }
    const s = data.session;
    const now = Date.now();
    const spans = tools.map((t) => toolSpan(t, now));
    let t0 = AS.parseTime(s.started_at);
    let t1 = AS.parseTime(s.ended_at) ?? (s.open ? now : null);
    const starts = spans.map((x) => x[0]).filter((x) => x !== null);
    const ends = spans.map((x) => x[1]).filter((x) => x !== null);
    if (t0 === null || (starts.length && Math.min(...starts) < t0)) t0 = Math.min(...starts);
    if (t1 === null || (ends.length && Math.max(...ends) > t1)) t1 = Math.max(...ends);
    const total = Math.max(1, t1 - t0);
    const axis = el("div", { class: "tl-axis" });
    for (const f of [0, 0.25, 0.5, 0.75, 1]) {
      axis.append(el("span", { class: "tick", style: null, "data-at": f }, `+${AS.fmtDuration(total * f)}`));
    }
    const rows = tools.map((t, i) => {
      const [start, end] = spans[i];
      const left = ((start ?? t0) - t0) / total * 100;
      const width = Math.max(0.4, ((end ?? start ?? t0) - (start ?? t0)) / total * 100);
      const bar = el("div", {
        class: `tl-bar ${AS.statusClass(t.status)}`,
        "data-call": t.call_id,
        tabindex: 0,
        role: "button",
        "aria-label": `${t.name} ${t.status} ${AS.fmtDuration(t.duration_ms)}`,
      });
      bar.style.left = `${Math.min(99.6, left)}%`;
      bar.style.width = `${Math.min(width, 100 - Math.min(99.6, left))}%`;
      bar.addEventListener("mouseenter", (e) => showTip(e, t, start - t0));
      bar.addEventListener("mousemove", moveTip);
      bar.addEventListener("mouseleave", hideTip);
      bar.addEventListener("click", () => showDetail(t, start - t0));
      bar.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") showDetail(t, start - t0);
      });
      return el("div", { class: "tl-row" }, el("span", { class: "tl-label", title: t.name }, t.name || "?"), el("div", { class: "tl-track" }, bar));
    });
    box.replaceChildren(el("div", { class: "tl-head" }, el("span", { class: "tl-label" }), axis), el("div", { class: "tl-rows" }, rows));
  }

  function tipLines(t, offset) {
    return [
      el("b", {}, t.name || "?"), " ", el("span", { class: `badge ${AS.statusClass(t.status)}` }, t.status),
      el("br"), `duration ${AS.fmtDuration(t.duration_ms)}, started +${AS.fmtDuration(offset)}`,
      t.error ? [el("br"), el("span", { class: "err" }, t.error)] : null,
    ];
  }

  function showTip(event, t, offset) {
    const tip = document.getElementById("tooltip");
    tip.replaceChildren(...tipLines(t, offset).flat().filter(Boolean));
    tip.hidden = false;
    moveTip(event);
  }

  function moveTip(event) {
    const tip = document.getElementById("tooltip");
    tip.style.left = `${Math.min(event.clientX + 12, window.innerWidth - tip.offsetWidth - 8)}px`;
    tip.style.top = `${event.clientY + 14}px`;
  }

  function hideTip() {
    document.getElementById("tooltip").hidden = true;
  }

  function showDetail(t, offset) {
    const box = document.getElementById("tl-detail");
    const known = state.tools.get(t.call_id);
    const jump = known
      ? el("button", { type: "button", class: "link", onclick: () => { known.node.scrollIntoView({ block: "center" }); known.node.classList.add("flash"); setTimeout(() => known.node.classList.remove("flash"), 1200); } }, "show in transcript")
      : null;
    box.replaceChildren(
      el("div", { class: "item-head" },
        el("span", { class: "tool-name" }, "tool ", el("b", {}, t.name || "?")),
        el("span", { class: `badge ${AS.statusClass(t.status)}` }, t.status),
        el("span", {}, AS.fmtDuration(t.duration_ms)),
        el("code", { class: "muted" }, t.call_id),
        jump),
      el("div", { class: "muted" }, `started ${AS.fmtTime(t.started_at)} (+${AS.fmtDuration(offset)}), ended ${AS.fmtTime(t.ended_at)}`),
      t.error ? el("pre", { class: "text err" }, t.error) : null,
    );
    box.hidden = false;
    sessionApi(`/tools/${encodeURIComponent(t.call_id)}`).then((full) => {
      if (box.hidden) return;
      for (const [label, f] of [["input", "input"], ["output", "output"]]) {
        if (full[f] !== null && full[f] !== undefined) {
          box.append(el("div", { class: "tool-part" }, el("span", { class: "label" }, label),
            textBlock(full[f], full[`${f}_chars`], full[f].length < full[`${f}_chars`], async () => (await sessionApi(`/tools/${encodeURIComponent(t.call_id)}`, { full: 1 }))[f])));
        }
      }
    }).catch(AS.showError);
  }

  async function refreshTools() {
    const data = await sessionApi("/tools");
    renderTimeline(data);
    updateSession(data.session);
    // Tool calls already in the transcript whose status moved on: show them anew.
    for (const t of data.tools) {
      const known = state.tools.get(t.call_id);
      if (known && known.status !== t.status) {
        const fresh = await sessionApi(`/tools/${encodeURIComponent(t.call_id)}`);
        appendItems([fresh]);
      }
    }
  }

  // ---- live ----------------------------------------------------------------------

  async function poll() {
    if (document.hidden || state.loading) return;
    const wasOpen = state.session.open;
    try {
      if (!state.more) await loadNext();
      await refreshTools();
    } catch (e) {
      AS.showError(e);
      return;
    }
    if (wasOpen && !state.session.open) {
      // Ended while we watched: one last look, then stop asking.
      clearInterval(state.timer);
      state.timer = null;
      if (!state.more) await loadNext();
      updateEnd();
    }
  }

  async function start() {
    const ref = decodeURIComponent(location.pathname.replace(/^\/s\//, ""));
    const info = AS.showSource();
    let data;
    try {
      state.id = ref;
      data = await sessionApi("");
      state.pollMs = (await info).poll_ms || 2000;
    } catch (e) {
      if (e.status === 409 && e.body && e.body.candidates) {
        AS.showError(new Error(`${e.message}: ${e.body.candidates.join(", ")}`));
      } else {
        AS.showError(e);
      }
      return;
    }
    state.id = data.session.id;
    if (ref !== state.id) history.replaceState(null, "", "/s/" + encodeURIComponent(state.id));
    document.getElementById("page").hidden = false;
    renderSide(data, null);
    updateSession(data.session);
    sessionApi("/details").then((details) => {
      renderSide(data, details);
      updateSession(state.session);
    }).catch(AS.showError);
    // The transcript's first page and the timeline at once; neither waits for the other.
    await Promise.all([loadNext(), refreshTools().catch(AS.showError)]);
    const observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting) && state.more) loadNext();
    }, { rootMargin: "800px" });
    observer.observe(document.getElementById("sentinel"));
    if (state.session.open) state.timer = setInterval(poll, state.pollMs);
  }

  start();
})();
