// Shared helpers of the two pages. Every piece of session data reaches the page
// through el() (text nodes and textContent), never as HTML.
"use strict";

const AS = (() => {
  const STATUSES = ["running", "completed", "error", "abandoned"];
  const ROLES = ["user", "assistant", "system", "tool", "developer"];

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  async function api(path, params) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== null && v !== undefined && v !== "") query.set(k, v);
    }
    const url = "/api/" + path + (query.toString() ? "?" + query : "");
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) {
      const error = new Error((body && body.error) || `${response.status} ${response.statusText}`);
      error.status = response.status;
      error.body = body;
      throw error;
    }
    return body;
  }

  function sessionPath(id) {
    return "sessions/" + encodeURIComponent(id);
  }

  function statusClass(status) {
    return "st-" + (STATUSES.includes(status) ? status : "unknown");
  }

  function roleClass(role) {
    return "role-" + (ROLES.includes(role) ? role : "other");
  }

  function pad(n, width = 2) {
    return String(n).padStart(width, "0");
  }

  function parseTime(text) {
    if (!text) return null;
    const t = Date.parse(text);
    return Number.isNaN(t) ? null : t;
  }

  // Local time, to the second: 2026-12-04 05:34:30
  function fmtTime(text) {
    const t = parseTime(text);
    if (t === null) return "-";
    const d = new Date(t);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtClock(text) {
    const t = parseTime(text);
    if (t === null) return "";
    const d = new Date(t);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function fmtDuration(ms) {
    if (ms === null || ms === undefined || Number.isNaN(ms)) return "-";
    if (ms < 1000) return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${pad(Math.floor(s % 60))}s`;
    return `${Math.floor(m / 60)}h ${pad(m % 60)}m`;
  }

  // An axis of offsets from a start, in one unit for all its ticks: the unit
  // fmtDuration gives the whole span, so the last tick reads as the duration shown
  // elsewhere and every tick reads on the same scale ("+0.00 s … +2.71 s", never
  // "+0.0 ms" beside "+2.71 s").
  function offsetScale(span) {
    if (span < 1000) {
      const digits = span < 10 ? 1 : 0;
      return (ms) => `+${ms.toFixed(digits)} ms`;
    }
    if (span < 60_000) {
      const digits = span < 10_000 ? 2 : 1;
      return (ms) => `+${(ms / 1000).toFixed(digits)} s`;
    }
    if (span < 3_600_000) {
      return (ms) => {
        const s = Math.round(ms / 1000);
        return `+${Math.floor(s / 60)}m ${pad(s % 60)}s`;
      };
    }
    return (ms) => {
      const m = Math.round(ms / 60_000);
      return `+${Math.floor(m / 60)}h ${pad(m % 60)}m`;
    };
  }

  function fmtCount(n) {
    return n === null || n === undefined ? "-" : Number(n).toLocaleString("en-US");
  }

  // US dollars: four decimals below $1 (agent sessions often cost fractions of a
  // cent), two above; "-" for unknown (no price), which is never shown as $0.
  function fmtCost(usd) {
    if (usd === null || usd === undefined || Number.isNaN(Number(usd))) return "-";
    const v = Number(usd);
    return "$" + (v < 1 ? v.toFixed(4) : v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }));
  }

  // "1 call", "2 calls", "1,000 calls" (every noun the pages count takes an s).
  function plural(n, noun) {
    return `${fmtCount(n)} ${noun}${Number(n) === 1 ? "" : "s"}`;
  }

  function showError(error) {
    const box = document.getElementById("error");
    if (!box) return;
    if (error) {
      box.textContent = String(error.message || error);
      box.hidden = false;
    } else {
      box.hidden = true;
    }
  }

  async function showSource() {
    try {
      const info = await api("info");
      const where = document.getElementById("where");
      if (where) where.textContent = `${info.source.kind}: ${info.source.where}`;
      return info;
    } catch (e) {
      return { poll_ms: 2000 };
    }
  }

  return {
    STATUSES, el, api, sessionPath, statusClass, roleClass, parseTime, fmtTime, fmtClock,
    fmtDuration, offsetScale, fmtCount, fmtCost, plural, showError, showSource,
  };
})();
