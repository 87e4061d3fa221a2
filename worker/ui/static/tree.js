// A session's family on its page: the session that started it, the sessions it
// started (subagents, and theirs) as a tree with each one's status, duration, tokens
// and cost, and the totals rolled up over the tree beside the session's own
// (`/api/sessions/ID/tree`). Hidden for a session with neither parent nor children.
"use strict";

const TREE = (() => {
  const { el } = AS;

  function tokens(n) {
    if (n.input_tokens === null && n.output_tokens === null) return "-";
    return `${AS.fmtCount(n.input_tokens)} in / ${AS.fmtCount(n.output_tokens)} out`;
  }

  // One session's line: status, id (a link unless it is this page's), agent, model,
  // duration, tokens, cost.
  // Only the first column is indented by depth, so the figures stay in columns.
  function line(n, here, depth) {
    const who = el("span", { class: "who" },
      el("span", { class: `badge ${AS.statusClass(n.status)}` }, n.status),
      here ? el("code", { class: "sid" }, n.id) : el("a", { class: "sid", href: "/s/" + encodeURIComponent(n.id) }, n.id));
    who.style.paddingLeft = `${(depth || 0) * 18}px`; // (CSSOM: allowed by the CSP)
    return el("div", { class: "tree-line" + (here ? " here" : ""), "data-session": n.id, "data-depth": depth || 0 },
      who,
      el("span", { class: "agent" }, n.agent),
      el("span", { class: "model muted" }, n.model || ""),
      el("span", { class: "num duration" }, AS.fmtDuration(n.duration_ms)),
      el("span", { class: "num tokens" }, tokens(n)),
      el("span", { class: "num cost" }, AS.fmtCost(n.cost_usd)),
    );
  }

  function branch(nodes, depth) {
    if (!nodes.length) return null;
    return el("ul", { class: "tree" }, nodes.map((n) => el("li", {}, line(n, false, depth), branch(n.children, depth + 1))));
  }

  function count(nodes) {
    return nodes.reduce((sum, n) => sum + 1 + count(n.children), 0);
  }

  // The totals: this session's own figures, its descendants', and both together.
  function totalsTable(totals) {
    const row = (label, key, t) => el("tr", { "data-total": key },
      el("th", {}, label),
      el("td", { class: "num input" }, AS.fmtCount(t.input_tokens)),
      el("td", { class: "num output" }, AS.fmtCount(t.output_tokens)),
      el("td", { class: "num cache-read" }, AS.fmtCount(t.cache_read_tokens)),
      el("td", { class: "num cache-write" }, AS.fmtCount(t.cache_write_tokens)),
      el("td", { class: "num cost" }, AS.fmtCost(t.cost_usd),
        t.unpriced ? el("span", { class: "muted unpriced" }, ` + ${AS.plural(t.unpriced, "session")} without a price`) : null),
    );
    const d = totals.descendants;
    return el("table", { class: "totals" },
      el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", { class: "num" }, "Tokens in"),
        el("th", { class: "num" }, "Tokens out"), el("th", { class: "num" }, "Cache read"),
        el("th", { class: "num" }, "Cache write"), el("th", { class: "num" }, "Cost"))),
      el("tbody", {},
        row("This session", "own", totals.own),
        row(`Subagents (${AS.fmtCount(d.sessions)})`, "descendants", d),
        row("All together", "all", totals.all)),
    );
  }

  function render(data) {
    const box = document.getElementById("tree-box");
    if (!data.parent && !data.session.parent_id && !data.children.length) {
      box.hidden = true;
      return;
    }
    const parts = [];
    if (data.parent) parts.push(el("div", { class: "parent" }, el("span", { class: "muted" }, "Started by"), line(data.parent, false, 0)));
    else if (data.session.parent_id) {
      // Its parent is not here (another spool, or not synced yet): named, not linked.
      parts.push(el("div", { class: "parent" }, el("span", { class: "muted" }, "Started by"), el("code", { class: "sid" }, data.session.parent_id), el("span", { class: "muted" }, " (not found here)")));
    }
    parts.push(el("ul", { class: "tree root" }, el("li", {}, line(data.session, true, 0), branch(data.children, 1))));
    if (data.truncated) parts.push(el("p", { class: "muted" }, "The tree is cut short: it goes deeper or wider than the page shows."));
    if (data.children.length) parts.push(totalsTable(data.totals));
    document.getElementById("tree-note").textContent = data.children.length ? AS.plural(count(data.children), "subagent session") : "";
    document.getElementById("tree").replaceChildren(...parts);
    box.hidden = false;
  }

  return { render };
})();
