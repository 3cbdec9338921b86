// Live: polls /metrics (Prometheus text, served on the API listener) and
// draws the last few minutes — messages/s per service, refusals/s by
// reason, Funnel queue depth, Funnel delivery latency — from the counters
// simgate already keeps. Rates are differences between two scrapes.
"use strict";

(function () {
  const { el, api, showError, fmtTime } = window.SG;
  const POLL_MS = 2000;
  const KEEP = 150; // 5 minutes at one scrape every 2 s
  const COLORS = ["#1f6feb", "#d9480f", "#2b8a3e", "#ae3ec9", "#e67700", "#0b7285", "#c2255c", "#5c940d"];

  /** Prometheus/OpenMetrics text → [{name, labels, value}]. */
  function parseMetrics(text) {
    const out = [];
    for (const line of text.split("\n")) {
      if (!line || line[0] === "#") continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[3] || ""))) labels[l[1]] = l[2];
      out.push({ name: m[1], labels, value: Number(m[4]) });
    }
    return out;
  }

  /** Sums `name`'s samples grouped by label `by` (or "all"). */
  function sumBy(samples, name, by) {
    const out = {};
    for (const s of samples) {
      if (s.name !== name) continue;
      const k = by ? s.labels[by] || "?" : "all";
      out[k] = (out[k] || 0) + s.value;
    }
    return out;
  }

  // Each chart: how to read one scrape (and the one before it) into values.
  const CHARTS = [
    { id: "messages", title: "Messages/s per service", rate: true,
      read: (s) => sumBy(s, "simgate_service_requests_total", "service") },
    { id: "refusals", title: "Refusals/s by reason", rate: true,
      read: (s) => sumBy(s, "simgate_ingress_rejected_total", "reason") },
    { id: "queue", title: "Funnel queue depth (records)", rate: false,
      read: (s) => sumBy(s, "simgate_funnel_queue_records", "sink") },
    { id: "latency", title: "Funnel delivery latency (mean s)", rate: false, derived: true,
      read: (s) => ({ sum: sumBy(s, "simgate_funnel_delivery_seconds_sum", "sink"),
        count: sumBy(s, "simgate_funnel_delivery_seconds_count", "sink") }) },
  ];

  SG.page("live", "Live", (root) => {
    const state = { alive: true, timer: null, prev: null, prevAt: 0, hist: {}, plots: {} };
    const err = el("p", { className: "error", role: "alert" });
    const info = el("span", { className: "muted", id: "live-info" });
    const grid = el("div", { className: "charts" });
    const boxes = {};
    for (const c of CHARTS) {
      boxes[c.id] = el("div", { className: "chart", id: `live-${c.id}`, "data-series": "[]" });
      grid.append(el("div", {}, el("h3", {}, c.title), boxes[c.id]));
      state.hist[c.id] = { t: [], series: {} };
    }
    root.append(el("h1", {}, "Live"), el("div", { className: "bar" }, info), err, grid);
    SG.liveHistory = state.hist; // what the charts show, for tests and the devtools

    /** Values of chart `c` for this scrape, or null when it needs a previous one. */
    function values(c, now, nowAt) {
      const cur = c.read(now);
      if (c.derived) {
        if (!state.prev) return null;
        const before = c.read(state.prev);
        const out = {};
        for (const k of Object.keys(cur.count)) {
          const dc = cur.count[k] - (before.count[k] || 0);
          out[k] = dc > 0 ? (cur.sum[k] - (before.sum[k] || 0)) / dc : null;
        }
        return out;
      }
      if (!c.rate) return cur;
      if (!state.prev) return null;
      const before = c.read(state.prev);
      const dt = (nowAt - state.prevAt) / 1000;
      const out = {};
      for (const [k, v] of Object.entries(cur)) out[k] = Math.max(0, (v - (before[k] || 0)) / dt);
      return out;
    }

    function push(c, at, vals) {
      const h = state.hist[c.id];
      h.t.push(at / 1000);
      const n = h.t.length;
      for (const k of Object.keys(vals)) {
        if (!h.series[k]) h.series[k] = new Array(n - 1).fill(null);
      }
      for (const [k, arr] of Object.entries(h.series)) arr.push(k in vals ? vals[k] : null);
      if (n > KEEP) {
        h.t.shift();
        for (const arr of Object.values(h.series)) arr.shift();
      }
    }

    function draw(c) {
      const h = state.hist[c.id];
      const labels = Object.keys(h.series).sort();
      const box = boxes[c.id];
      const key = labels.join("\n");
      box.dataset.series = JSON.stringify(labels);
      const data = [h.t].concat(labels.map((l) => h.series[l]));
      let p = state.plots[c.id];
      if (p && p.key !== key) {
        p.plot.destroy();
        p = null;
      }
      if (!labels.length) {
        box.replaceChildren(el("p", { className: "muted" }, "nothing yet"));
        return;
      }
      if (!p) {
        box.replaceChildren();
        const plot = new uPlot({
          width: Math.max(360, box.clientWidth - 20), height: 220,
          scales: { x: { time: true } },
          series: [{}].concat(labels.map((l, i) => ({ label: l, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true }))),
        }, data, box);
        p = state.plots[c.id] = { plot, key };
      } else {
        p.plot.setData(data);
      }
    }

    async function poll() {
      try {
        const r = await api("GET", "/metrics");
        const at = Date.now();
        const samples = parseMetrics(String(r.body));
        for (const c of CHARTS) {
          const v = values(c, samples, at);
          if (v) {
            push(c, at, v);
            draw(c);
          }
        }
        state.prev = samples;
        state.prevAt = at;
        showError(err, "");
        info.textContent = `scraped ${fmtTime(at)} · every ${POLL_MS / 1000} s`;
      } catch (e) {
        showError(err, e);
      }
      if (state.alive) state.timer = setTimeout(poll, POLL_MS);
    }

    poll();
    return {
      stop: () => {
        state.alive = false;
        clearTimeout(state.timer);
        for (const p of Object.values(state.plots)) p.plot.destroy();
      },
    };
  });
})();
