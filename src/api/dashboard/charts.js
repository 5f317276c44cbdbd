"use strict";
// Charts drawn as inline SVG built node by node: labels are set with
// textContent, so no value is ever parsed as markup.
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 600, H = 200, LEFT = 64, RIGHT = 10, TOP = 12, BOTTOM = 26;

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const exp = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (value <= step * exp) return step * exp;
    }
    return 10 * exp;
  }

  function hhmm(ms) {
    const d = new Date(ms);
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }

  function frame(svg, yMax, yFormat, xMin, xMax) {
    const plotH = H - TOP - BOTTOM;
    for (const frac of [0, 0.25, 0.5, 0.75, 1]) {
      const y = TOP + plotH * (1 - frac);
      svg.appendChild(el("line", { x1: LEFT, x2: W - RIGHT, y1: y, y2: y, class: "grid-line" }));
      if (frac === 0 || frac === 0.5 || frac === 1) {
        svg.appendChild(el("text", { x: LEFT - 6, y: y + 4, "text-anchor": "end" }, yFormat(yMax * frac)));
      }
    }
    if (xMax > xMin) {
      const mid = xMin + (xMax - xMin) / 2;
      svg.appendChild(el("text", { x: LEFT, y: H - 8, "text-anchor": "start" }, hhmm(xMin)));
      svg.appendChild(el("text", { x: LEFT + (W - LEFT - RIGHT) / 2, y: H - 8, "text-anchor": "middle" }, hhmm(mid)));
      svg.appendChild(el("text", { x: W - RIGHT, y: H - 8, "text-anchor": "end" }, hhmm(xMax)));
    }
  }

  function svgRoot(label) {
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
    svg.appendChild(el("title", {}, label));
    return svg;
  }

  function legend(items) {
    const box = document.createElement("div");
    box.className = "legend";
    for (const item of items) {
      const span = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = item.color;
      span.appendChild(swatch);
      span.appendChild(document.createTextNode(item.name));
      box.appendChild(span);
    }
    return box;
  }

  function wrap(svg, items) {
    const box = document.createElement("div");
    box.appendChild(svg);
    if (items && items.length) box.appendChild(legend(items));
    return box;
  }

  function scales(xMin, xMax, yMax) {
    const plotW = W - LEFT - RIGHT, plotH = H - TOP - BOTTOM;
    return {
      x: (v) => LEFT + (xMax > xMin ? ((v - xMin) / (xMax - xMin)) * plotW : plotW / 2),
      y: (v) => TOP + plotH * (1 - Math.min(v, yMax) / yMax),
    };
  }

  // series: [{name, color, points: [[ms, value or null]]}]; a null breaks the line.
  function line(opts) {
    const all = opts.series.flatMap((s) => s.points);
    const xs = all.map((p) => p[0]);
    const xMin = Math.min(...xs), xMax = Math.max(...xs);
    const values = all.map((p) => p[1]).filter((v) => v !== null && v !== undefined);
    const marks = opts.thresholds || [];
    const yMax = opts.yMax || niceMax(Math.max(0, ...values, ...marks.map((t) => t.value)));
    const svg = svgRoot(opts.label);
    frame(svg, yMax, opts.yFormat || String, xMin, xMax);
    const s = scales(xMin, xMax, yMax);
    for (const t of marks) {
      svg.appendChild(el("line", { x1: LEFT, x2: W - RIGHT, y1: s.y(t.value), y2: s.y(t.value), stroke: t.color, class: "threshold" }));
    }
    for (const series of opts.series) {
      let run = [];
      const flush = () => {
        if (run.length === 1) {
          svg.appendChild(el("circle", { cx: run[0][0], cy: run[0][1], r: 2.5, fill: series.color, class: "point" }));
        } else if (run.length > 1) {
          svg.appendChild(el("polyline", {
            points: run.map((p) => p.join(",")).join(" "),
            fill: "none", stroke: series.color, "stroke-width": 2, "stroke-linejoin": "round", class: "series",
          }));
        }
        run = [];
      };
      for (const [x, v] of series.points) {
        if (v === null || v === undefined) flush();
        else run.push([s.x(x).toFixed(1), s.y(v).toFixed(1)]);
      }
      flush();
    }
    if (values.length === 0) {
      svg.appendChild(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, opts.empty || "no data in this period"));
    }
    const items = opts.series.map((x) => ({ name: x.name, color: x.color }))
      .concat(marks.map((t) => ({ name: t.label, color: t.color })));
    return wrap(svg, items);
  }

  // points: [[ms, count]] at a fixed step.
  function bars(opts) {
    const pts = opts.points;
    const xMin = pts.length ? pts[0][0] : 0, xMax = pts.length ? pts[pts.length - 1][0] : 0;
    const yMax = niceMax(Math.max(0, ...pts.map((p) => p[1])));
    const svg = svgRoot(opts.label);
    frame(svg, yMax, opts.yFormat || String, xMin, xMax);
    const s = scales(xMin, xMax, yMax);
    const slot = (W - LEFT - RIGHT) / Math.max(pts.length, 1);
    for (const [x, v] of pts) {
      if (!(v > 0)) continue;
      const top = s.y(v);
      const rect = el("rect", {
        x: (s.x(x) - slot * 0.4).toFixed(1), y: top.toFixed(1), width: (slot * 0.8).toFixed(1),
        height: (H - BOTTOM - top).toFixed(1), fill: opts.color, class: "bar",
      });
      rect.appendChild(el("title", {}, hhmm(x) + ": " + (opts.yFormat || String)(v)));
      svg.appendChild(rect);
    }
    return wrap(svg, opts.name ? [{ name: opts.name, color: opts.color }] : []);
  }

  // groups: [{label, values: [{name, value, color}]}], side by side.
  function groups(opts) {
    const names = opts.groups.length ? opts.groups[0].values.map((v) => ({ name: v.name, color: v.color })) : [];
    const yMax = niceMax(Math.max(0, ...opts.groups.flatMap((g) => g.values.map((v) => v.value))));
    const svg = svgRoot(opts.label);
    frame(svg, yMax, opts.yFormat || String, 0, 0);
    const s = scales(0, 1, yMax);
    const slot = (W - LEFT - RIGHT) / Math.max(opts.groups.length, 1);
    opts.groups.forEach((g, gi) => {
      const bw = (slot * 0.8) / Math.max(g.values.length, 1);
      g.values.forEach((v, vi) => {
        const top = s.y(v.value);
        const x = LEFT + gi * slot + slot * 0.1 + vi * bw;
        const rect = el("rect", { x: x.toFixed(1), y: top.toFixed(1), width: (bw * 0.9).toFixed(1), height: (H - BOTTOM - top).toFixed(1), fill: v.color, class: "bar" });
        rect.appendChild(el("title", {}, `${g.label} ${v.name}: ${v.value}`));
        svg.appendChild(rect);
      });
      svg.appendChild(el("text", { x: LEFT + gi * slot + slot / 2, y: H - 8, "text-anchor": "middle" }, g.label));
    });
    return wrap(svg, names);
  }

  // A rate against its warn and pause thresholds, as one horizontal bar.
  function gauge(opts) {
    const h = 46, left = 8, right = 8, width = W - left - right;
    const max = Math.max(opts.value, ...opts.marks.map((m) => m.value)) * 1.25 || 1;
    const svg = el("svg", { viewBox: `0 0 ${W} ${h}`, class: "chart gauge", role: "img" });
    svg.appendChild(el("title", {}, opts.label));
    svg.appendChild(el("rect", { x: left, y: 8, width, height: 14, rx: 4, fill: "#eef0f4" }));
    const color = opts.marks.reduce((c, m) => (opts.value >= m.value ? m.color : c), "var(--ok)");
    svg.appendChild(el("rect", { x: left, y: 8, width: Math.max(1, (opts.value / max) * width).toFixed(1), height: 14, rx: 4, fill: color, class: "bar" }));
    for (const m of opts.marks) {
      const x = left + (m.value / max) * width;
      svg.appendChild(el("line", { x1: x, x2: x, y1: 4, y2: 26, stroke: m.color, "stroke-width": 2 }));
      svg.appendChild(el("text", { x, y: 40, "text-anchor": "middle" }, m.label));
    }
    return svg;
  }

  window.HeraldCharts = { line, bars, groups, gauge };
})();
