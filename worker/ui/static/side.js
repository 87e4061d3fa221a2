// A session's side panel: its facts (status, times, why it ended, counts, model,
// token usage, cost, host, working directory, sync) and the rest of its metadata.
"use strict";

const SIDE = (() => {
  const { el } = AS;

  function field(label, value, key) {
    if (value === null || value === undefined || value === "") return null;
    return [el("dt", {}, label), el("dd", { "data-field": key || null }, String(value))];
  }

  function tokenText(tokens) {
    let text = `${AS.fmtCount(tokens.input)} in, ${AS.fmtCount(tokens.output)} out (${AS.fmtCount(tokens.total)})`;
    const cached = [];
    if (tokens.cache_read) cached.push(`${AS.fmtCount(tokens.cache_read)} read`);
    if (tokens.cache_write) cached.push(`${AS.fmtCount(tokens.cache_write)} written`);
    if (cached.length) text += `; cache: ${cached.join(", ")}`;
    return text;
  }

  // The models a session used: its metadata's `models` (the worker lists every model
  // its messages named when it ends), else the one the details name.
  function modelText(d) {
    const models = d.metadata && Array.isArray(d.metadata.models) ? d.metadata.models.filter((m) => typeof m === "string") : [];
    if (d.model && !models.includes(d.model)) models.unshift(d.model);
    return models.join(", ");
  }

  // The metadata keys the facts above already show (model, usage, cwd, end reason):
  // the Metadata panel lists only the rest.
  function shownAbove(d) {
    const shown = new Set(["models"]);
    if (d.model) shown.add("model");
    if (d.cwd !== null && d.cwd !== undefined) shown.add("cwd");
    if (d.tokens) shown.add("usage");
    if (d.end_reason) shown.add("end_reason");
    if (d.cost_usd !== null && d.cost_usd !== undefined) shown.add("cost_usd");
    return shown;
  }

  // The side panel: the session's facts at once, the details (model, token usage,
  // cost) when they arrive.
  function render(data, details) {
    const s = data.session;
    const d = details || {};
    const sync = data.sync;
    const items = [
      field("Session", s.id),
      field("Agent", s.agent),
      field("Status", s.status, "status"),
      field("Started", AS.fmtTime(s.started_at)),
      el("dt", {}, "Ended"), el("dd", { "data-field": "ended" }, AS.fmtTime(s.ended_at)),
      // Kept in the list while empty: a live session's end fills it in.
      el("dt", { hidden: !s.end_reason }, "End reason"),
      el("dd", { "data-field": "end-reason", hidden: !s.end_reason }, s.end_reason || ""),
      field("Duration", AS.fmtDuration(s.duration_ms), "duration"),
      field("Messages", AS.fmtCount(s.message_count), "messages"),
      field("Tool calls", AS.fmtCount(s.tool_count), "tools"),
      field("Events", AS.fmtCount(s.event_count)),
      field("Model", details ? modelText(d) : null),
      d.tokens ? field("Tokens", tokenText(d.tokens)) : null,
      d.cost_usd !== null && d.cost_usd !== undefined ? field("Cost", `$${d.cost_usd.toFixed(4)}`) : null,
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
      const skip = shownAbove(d);
      for (const [k, v] of Object.entries(meta)) {
        if (skip.has(k)) continue;
        metaList.push(el("dt", {}, k), el("dd", {}, typeof v === "string" ? v : JSON.stringify(v)));
      }
    } else if (meta !== null && meta !== undefined) {
      metaList.push(el("dd", {}, typeof meta === "string" ? meta : JSON.stringify(meta)));
    }
    // (replaceChildren writes a null as the text "null": only nodes go in.)
    side.replaceChildren(...[
      el("h2", {}, "Session"),
      el("dl", { class: "facts" }, items.flat().filter(Boolean)),
      metaList.length ? el("h2", {}, "Metadata") : null,
      metaList.length ? el("dl", { class: "facts meta" }, metaList) : null,
    ].filter(Boolean));
  }

  return { render };
})();
