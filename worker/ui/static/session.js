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
    offset: AS.offsetScale(0), // the timeline axis's unit, for offsets shown elsewhere
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

  // A tool_finished whose tool_started never arrived (its line was rejected, its
  // producer lost it): the call has no name and no start, only its end. It is shown
  // as half a call, never as a whole one (as `agentspool show` does).
  const START_MISSING_NOTE = "its tool_started event never arrived: the tool's name, input and start are unknown";

  function startMissing(t) {
    return !t.started_at && !t.name;
  }

  function toolLabel(t) {
    return startMissing(t) ? "(start missing)" : t.name || "?";
  }

  function toolTitle(t) {
    return startMissing(t)
      ? el("span", { class: "tool-name start-missing" }, "tool (start missing)")
      : el("span", { class: "tool-name" }, "tool ", el("b", {}, t.name || "?"));
  }

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
    const missing = startMissing(t);
    return el("li", { class: `item tool ${AS.statusClass(t.status)}${missing ? " start-missing" : ""}`, "data-call": t.call_id },
      el("div", { class: "item-head" },
        toolTitle(t),
        el("span", { class: `badge ${AS.statusClass(t.status)}` }, t.status),
        el("span", { class: "duration" }, t.duration_ms === null ? "" : AS.fmtDuration(t.duration_ms)),
        el("time", { class: "muted" }, missing ? `ended ${AS.fmtClock(t.ended_at)}` : AS.fmtClock(t.started_at || t.ended_at)),
        el("code", { class: "muted call-id" }, t.call_id),
      ),
      missing ? el("p", { class: "note" }, START_MISSING_NOTE) : null,
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
      `${AS.plural(state.dropped, "earlier item")} ${state.dropped === 1 ? "is" : "are"} no longer on the page. `,
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
    const s = state.session;
    const total = (s.message_count || 0) + (s.tool_count || 0);
    document.getElementById("tr-note").textContent = `${AS.fmtCount(n)} of ${AS.plural(total, "item")}`
      + ` (${AS.plural(s.message_count || 0, "message")}, ${AS.plural(s.tool_count || 0, "tool call")})`;
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
      ["end-reason", s.end_reason || ""],
      ["duration", AS.fmtDuration(s.duration_ms)],
      ["messages", AS.fmtCount(s.message_count)],
      ["tools", AS.fmtCount(s.tool_count)],
    ]) {
      const cell = document.querySelector(`[data-field="${key}"]`);
      if (!cell) continue;
      cell.textContent = text;
      if (key === "end-reason") cell.hidden = cell.previousElementSibling.hidden = !text;
    }
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
      ? `first ${AS.fmtCount(tools.length)} of ${AS.plural(data.total, "call")}`
      : AS.plural(tools.length, "call");
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
    state.offset = AS.offsetScale(total);
    for (const f of [0, 0.25, 0.5, 0.75, 1]) {
      axis.append(el("span", { class: "tick", "data-at": f }, state.offset(total * f)));
    }
    const rows = tools.map((t, i) => {
      const [start, end] = spans[i];
      const left = ((start ?? t0) - t0) / total * 100;
      const width = Math.max(0.4, ((end ?? start ?? t0) - (start ?? t0)) / total * 100);
      const bar = el("div", {
        class: `tl-bar ${AS.statusClass(t.status)}${startMissing(t) ? " start-missing" : ""}`,
        "data-call": t.call_id,
        tabindex: 0,
        role: "button",
        "aria-label": `${toolLabel(t)} ${t.status} ${AS.fmtDuration(t.duration_ms)}`,
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
      return el("div", { class: "tl-row" }, el("span", { class: "tl-label", title: toolLabel(t) }, toolLabel(t)), el("div", { class: "tl-track" }, bar));
    });
    box.replaceChildren(el("div", { class: "tl-head" }, el("span", { class: "tl-label" }), axis), el("div", { class: "tl-rows" }, rows));
  }

  function tipLines(t, offset) {
    const started = startMissing(t) ? "start missing (drawn back from its end)" : `started ${state.offset(offset)}`;
    return [
      el("b", {}, toolLabel(t)), " ", el("span", { class: `badge ${AS.statusClass(t.status)}` }, t.status),
      el("br"), `duration ${AS.fmtDuration(t.duration_ms)}, ${started}`,
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
    box.replaceChildren(...[
      el("div", { class: "item-head" },
        toolTitle(t),
        el("span", { class: `badge ${AS.statusClass(t.status)}` }, t.status),
        el("span", {}, AS.fmtDuration(t.duration_ms)),
        el("code", { class: "muted" }, t.call_id),
        jump),
      startMissing(t)
        ? el("div", { class: "muted" }, `ended ${AS.fmtTime(t.ended_at)}; ${START_MISSING_NOTE}`)
        : el("div", { class: "muted" }, `started ${AS.fmtTime(t.started_at)} (${state.offset(offset)}), ended ${AS.fmtTime(t.ended_at)}`),
      t.error ? el("pre", { class: "text err" }, t.error) : null,
    ].filter(Boolean));
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

  // The family: its subagents may start (and end) while an open session runs.
  async function refreshTree() {
    TREE.render(await sessionApi("/tree"));
  }

  async function poll() {
    if (document.hidden || state.loading) return;
    const wasOpen = state.session.open;
    try {
      if (!state.more) await loadNext();
      await Promise.all([refreshTools(), refreshTree()]);
    } catch (e) {
      AS.showError(e);
      return;
    }
    if (wasOpen && !state.session.open) {
      // Ended while we watched: one last look, then stop asking.
      clearInterval(state.timer);
      state.timer = null;
      if (!state.more) await loadNext();
      await refreshTree().catch(AS.showError);
      updateEnd();
    }
  }

  // The session could not be opened (no such id, an ambiguous prefix, a pruned
  // replica, an unreadable database): one message and the way back, no empty panels.
  function showUnopened(e) {
    const box = document.getElementById("error");
    const text = String(e.message || e);
    const candidates = e.status === 409 && e.body && Array.isArray(e.body.candidates) ? e.body.candidates : null;
    const parts = [text.charAt(0).toUpperCase() + text.slice(1)];
    if (candidates) {
      parts.push(": ");
      candidates.forEach((id, i) => {
        if (i) parts.push(", ");
        parts.push(el("a", { href: "/s/" + encodeURIComponent(id) }, id));
      });
    }
    parts.push(". ", el("a", { href: "/", class: "back-to-list" }, "Back to the sessions"));
    box.replaceChildren(...parts);
    box.classList.add("unopened");
    box.hidden = false;
    document.title = "agentspool — session not found";
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
      showUnopened(e);
      return;
    }
    state.id = data.session.id;
    if (ref !== state.id) history.replaceState(null, "", "/s/" + encodeURIComponent(state.id));
    document.getElementById("page").hidden = false;
    SIDE.render(data, null);
    updateSession(data.session);
    sessionApi("/details").then((details) => {
      SIDE.render(data, details);
      updateSession(state.session);
    }).catch(AS.showError);
    // The transcript's first page and the timeline at once; neither waits for the other.
    await Promise.all([
      loadNext(), refreshTools().catch(AS.showError), refreshTree().catch(AS.showError),
    ]);
    const observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting) && state.more) loadNext();
    }, { rootMargin: "800px" });
    observer.observe(document.getElementById("sentinel"));
    if (state.session.open) state.timer = setInterval(poll, state.pollMs);
  }

  start();
})();
