// Stacked bar charts drawn as SVG by hand, for the stats page.
//
// Why no chart library: the page needs one kind of chart (bars per day, stacked by a
// few series) and must work without a network under a strict CSP (no inline
// styles, no eval); this one small file does that with nothing to vendor, audit
// or update. Every label reaches the SVG as a text node (textContent), never as
// markup, like everything else the viewer shows. Colours are SVG `fill` attributes
// (presentation attributes, which the CSP's style-src does not govern).
"use strict";

const CHARTS = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#1f5fbf", "#e0a100", "#2e8540", "#c62828", "#6b3fa0", "#00838f", "#8d6e63", "#ad1457"];
  const OTHER_COLOR = "#9aa6b4";
  const MAX_SERIES = PALETTE.length; // beyond it, the smallest series are merged as "other"
  const H = 190;
  const PAD = { left: 58, right: 8, top: 10, bottom: 24 };

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // The axis: four steps of a round size (1, 2 or 5 times a power of ten), the top
  // at or above `v`; whole steps for counts (`integer`).
  function axis(v, integer) {
    const rough = v > 0 ? v / 4 : 0.25;
    const power = 10 ** Math.floor(Math.log10(rough));
    let step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
    if (integer) step = Math.max(1, Math.ceil(step));
    return { top: step * 4, step };
  }

  // Every day from the first to the last (UTC dates, "YYYY-MM-DD"), gaps included.
  function dayRange(days) {
    if (!days.length) return [];
    const sorted = [...days].sort();
    const out = [];
    const last = Date.parse(sorted[sorted.length - 1] + "T00:00:00Z");
    for (let t = Date.parse(sorted[0] + "T00:00:00Z"); t <= last && out.length < 3660; t += 86_400_000) {
      out.push(new Date(t).toISOString().slice(0, 10));
    }
    return out;
  }

  // The series to draw, in `order` (series names, largest first: one order for every
  // chart of a page, so a series keeps its colour): the first MAX_SERIES - 1, the rest
  // as one "other" (only when there are more than MAX_SERIES); each {name, color,
  // values: Map day -> v}.
  function pickSeries(points, order) {
    let names = [...order];
    const merged = names.length > MAX_SERIES ? new Set(names.slice(MAX_SERIES - 1)) : new Set();
    if (merged.size) names = [...names.slice(0, MAX_SERIES - 1), null];
    const series = names.map((name, i) => ({
      name: name === null ? "other" : name,
      other: name === null,
      color: name === null ? OTHER_COLOR : PALETTE[i],
      values: new Map(),
    }));
    const index = new Map(names.map((n, i) => [n, i]));
    for (const p of points) {
      const s = series[index.get(merged.has(p.series) ? null : p.series)];
      if (s) s.values.set(p.day, (s.values.get(p.day) || 0) + p.value);
    }
    return series;
  }

  // points: [{day, series, value}]; order: the series names (see pickSeries);
  // format: {tick, label} (value -> text for the axis, for a tooltip); integer: counts;
  // width: the drawing's width in CSS pixels (its box's, so text keeps its size).
  // Each segment is a <rect class="seg"> with data-day, data-series, data-value and a
  // <title> (the browser's tooltip).
  function stackedBars(points, order, format, integer, width) {
    const W = Math.max(280, Math.round(width || 600));
    const days = dayRange(points.map((p) => p.day));
    const series = pickSeries(points, order);
    const stackTotals = days.map((d) => series.reduce((sum, s) => sum + (s.values.get(d) || 0), 0));
    const { top, step } = axis(Math.max(0, ...stackTotals), integer);
    const plotW = W - PAD.left - PAD.right;
    const plotH = H - PAD.top - PAD.bottom;
    const band = days.length ? plotW / days.length : plotW;
    const barW = Math.max(1, Math.min(48, band * 0.75));
    const y = (v) => PAD.top + plotH - (v / top) * plotH;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "chart", role: "img" });
    for (let i = 0; i <= 4; i++) {
      const v = step * i;
      chart.append(
        svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: i ? "grid" : "axis" }),
        svg("text", { x: PAD.left - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, format.tick(v)),
      );
    }
    const every = Math.max(1, Math.ceil(days.length / Math.max(2, Math.floor(plotW / 60)))); // labels ~60 px apart
    days.forEach((day, i) => {
      const x = PAD.left + i * band + (band - barW) / 2;
      let base = 0;
      const bar = svg("g", { class: "bar", "data-day": day, "data-total": stackTotals[i] });
      for (const s of series) {
        const v = s.values.get(day) || 0;
        if (!v) continue;
        const title = svg("title", {}, `${day} · ${s.name}: ${format.label(v)}`);
        bar.append(svg("rect", {
          class: "seg", x, y: y(base + v), width: barW, height: Math.max(0.5, y(base) - y(base + v)),
          fill: s.color, "data-day": day, "data-series": s.name, "data-value": v,
        }, title));
        base += v;
      }
      chart.append(bar);
      if (i % every === 0) {
        chart.append(svg("text", { x: x + barW / 2, y: H - 8, class: "tick", "text-anchor": "middle" }, day.slice(5)));
      }
    });
    return { node: chart, series };
  }

  // The series' names and colours, as HTML under a chart.
  function legend(series) {
    return AS.el("ul", { class: "legend" }, series.map((s) => AS.el("li", { "data-series": s.name },
      svg("svg", { width: 10, height: 10, class: "swatch" }, svg("rect", { width: 10, height: 10, fill: s.color })),
      " ", s.name)));
  }

  return { stackedBars, legend, pickSeries };
})();
