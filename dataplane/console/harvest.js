// Harvest Data: the entries of one or several SIMs over a time range, as a
// chart of every numeric field found in JSON entries (one line per SIM and
// field), a table of the raw entries with the API's paging, auto-refresh
// and a CSV download.
"use strict";

(function () {
  const { el, api, fmtTime, showError } = window.SG;
  const RANGES = [["15m", 15 * 60e3], ["1h", 3600e3], ["6h", 6 * 3600e3], ["24h", 24 * 3600e3], ["7d", 7 * 86400e3], ["40d", 40 * 86400e3]];
  // What the chart loads per SIM: enough for a day at one entry a minute;
  // a longer or denser range shows the newest this many.
  const CHART_MAX = 5000;
  const PAGE = 1000;
  const TABLE_PAGE = 20;
  const REFRESH_MS = 5000;
  const COLORS = ["#1f6feb", "#d9480f", "#2b8a3e", "#ae3ec9", "#e67700", "#0b7285", "#c2255c", "#5c940d"];

  /** Numeric leaves of a JSON value, keyed by dotted path. */
  function numericFields(v, prefix, out) {
    if (typeof v === "number" && Number.isFinite(v)) out[prefix || "value"] = v;
    else if (v && typeof v === "object") {
      for (const [k, x] of Object.entries(v)) numericFields(x, prefix ? `${prefix}.${k}` : k, out);
    }
    return out;
  }

  function parsed(entry) {
    if (entry.contentEncoding === "base64") return null;
    try {
      return JSON.parse(entry.content);
    } catch (_) {
      return null;
    }
  }

  /** Entries of all SIMs → uPlot's [xs, ...ys] (x in seconds) and labels. */
  function toSeries(bySim) {
    const multi = bySim.length > 1;
    const labels = [];
    const index = new Map(); // label → column
    const rows = new Map(); // time ms → {label: value}
    for (const [imsi, entries] of bySim) {
      for (const e of entries) {
        const j = parsed(e);
        if (j === null) continue;
        const fields = numericFields(j, "", {});
        for (const [f, v] of Object.entries(fields)) {
          const label = multi ? `${imsi} ${f}` : f;
          if (!index.has(label)) {
            index.set(label, labels.length);
            labels.push(label);
          }
          if (!rows.has(e.time)) rows.set(e.time, {});
          rows.get(e.time)[label] = v;
        }
      }
    }
    const times = [...rows.keys()].sort((a, b) => a - b);
    const data = [times.map((t) => t / 1000)];
    let points = 0;
    for (const label of labels) {
      data.push(times.map((t) => {
        const v = rows.get(t)[label];
        if (v === undefined) return null;
        points++;
        return v;
      }));
    }
    return { data, labels, points };
  }

  function csvCell(s) {
    s = String(s);
    return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  }

  SG.page("harvest", "Harvest Data", (root) => {
    const params = SG.hashParams();
    const state = { bySim: [], plot: null, timer: null, alive: true, tableKeys: [""], tableNext: null };

    const sims = el("input", { id: "h-imsis", list: "h-known", size: 40, placeholder: "IMSI, IMSI, …", value: params.get("imsi") || "" });
    const known = el("datalist", { id: "h-known" });
    const range = el("select", { id: "h-range" },
      RANGES.map(([n]) => el("option", { value: n }, `last ${n}`)), el("option", { value: "custom" }, "custom…"));
    range.value = params.get("range") || "1h";
    const from = el("input", { id: "h-from", type: "datetime-local", step: 1 });
    const to = el("input", { id: "h-to", type: "datetime-local", step: 1 });
    const custom = el("span", { hidden: true }, "from ", from, " to ", to);
    range.addEventListener("change", () => { custom.hidden = range.value !== "custom"; });
    const auto = el("input", { type: "checkbox", id: "h-auto", checked: true });
    const err = el("p", { className: "error", role: "alert" });
    const info = el("span", { className: "muted", id: "h-info" });
    const chartBox = el("div", { className: "chart", id: "harvest-chart", "data-points": "0", "data-series": "[]" });
    const tableSim = el("select", { id: "h-table-sim" });
    const tbody = el("tbody");
    const tprev = el("button", { type: "button", onclick: () => tablePage(-1) }, "‹ Newer");
    const tnext = el("button", { type: "button", onclick: () => tablePage(1) }, "Older ›");
    const tinfo = el("span", { className: "muted" });

    root.append(
      el("h1", {}, "Harvest Data"),
      el("form", { className: "bar", onsubmit: (e) => { e.preventDefault(); state.tableKeys = [""]; refresh(); } },
        el("label", {}, "SIMs", sims), known, range, custom,
        el("button", { type: "submit", className: "primary", id: "h-show" }, "Show"),
        el("label", {}, auto, "auto-refresh"),
        el("button", { type: "button", id: "h-csv", onclick: csv }, "Download CSV"),
        info),
      err,
      chartBox,
      el("h2", {}, "Entries"),
      el("div", { className: "bar" }, el("label", {}, "SIM", tableSim)),
      el("table", { id: "harvest-entries" },
        el("thead", {}, el("tr", {}, ["Time", "SIM", "Content type", "Content"].map((h) => el("th", {}, h)))),
        tbody),
      el("div", { className: "pager" }, tprev, tnext, tinfo));

    tableSim.addEventListener("change", () => { state.tableKeys = [""]; loadTable(); });
    auto.addEventListener("change", schedule);

    // SIMs that have data, for the picker; the first is the default.
    api("GET", "/v1/data/resources?limit=1000").then((r) => {
      for (const x of r.body) known.append(el("option", { value: x.resourceId }, `last entry ${fmtTime(x.lastModifiedTime)}`));
      if (!sims.value && r.body.length) {
        sims.value = r.body[0].resourceId;
        refresh();
      }
    }).catch((e) => showError(err, e));

    function imsis() {
      return [...new Set(sims.value.split(/[\s,]+/).filter(Boolean))];
    }

    function window_() {
      if (range.value === "custom") {
        const f = from.value ? new Date(from.value).getTime() : 0;
        const t = to.value ? new Date(to.value).getTime() : Date.now();
        return [f, t];
      }
      const span = (RANGES.find(([n]) => n === range.value) || RANGES[1])[1];
      const now = Date.now();
      return [now - span, now];
    }

    /** Up to CHART_MAX newest entries of one SIM in [f, t], oldest first. */
    async function entriesOf(imsi, f, t) {
      const out = [];
      let key = "";
      while (out.length < CHART_MAX) {
        const q = new URLSearchParams({ from: f, to: t, sort: "desc", limit: Math.min(PAGE, CHART_MAX - out.length) });
        if (key) q.set("last_evaluated_key", key);
        const r = await api("GET", `/v1/subscribers/${encodeURIComponent(imsi)}/data?${q}`);
        out.push(...r.body);
        key = r.headers.get("x-soracom-next-key");
        if (!key) break;
      }
      return out.reverse();
    }

    async function refresh() {
      const list = imsis();
      showError(err, "");
      const keep = tableSim.value;
      tableSim.replaceChildren(...list.map((i) => el("option", { value: i }, i)));
      if (list.includes(keep)) tableSim.value = keep;
      if (!list.length) {
        info.textContent = "Pick one or more SIMs.";
        return;
      }
      const [f, t] = window_();
      try {
        state.bySim = await Promise.all(list.map(async (i) => [i, await entriesOf(i, Math.floor(f), Math.floor(t))]));
      } catch (e) {
        showError(err, e);
        return;
      }
      if (!state.alive) return;
      draw();
      loadTable();
      schedule();
    }

    function draw() {
      const { data, labels, points } = toSeries(state.bySim);
      const total = state.bySim.reduce((n, [, es]) => n + es.length, 0);
      info.textContent = `${total} entries, ${labels.length} numeric fields · updated ${fmtTime(Date.now())}`;
      chartBox.dataset.points = String(points);
      chartBox.dataset.series = JSON.stringify(labels);
      if (state.plot) {
        state.plot.destroy();
        state.plot = null;
      }
      chartBox.replaceChildren();
      if (!labels.length) {
        chartBox.append(el("p", { className: "muted" }, total ? "No numeric JSON fields in these entries." : "No entries in this range."));
        return;
      }
      const opts = {
        width: Math.max(400, chartBox.clientWidth - 20),
        height: 320,
        scales: { x: { time: true } },
        series: [{}].concat(labels.map((l, i) => ({
          label: l, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true, points: { show: true, size: 5 },
        }))),
        axes: [{}, {}],
      };
      state.plot = new uPlot(opts, data, chartBox);
      SG.harvestPlot = state.plot;
    }

    async function loadTable() {
      const imsi = tableSim.value;
      if (!imsi) return;
      const [f, t] = window_();
      const q = new URLSearchParams({ from: Math.floor(f), to: Math.floor(t), sort: "desc", limit: TABLE_PAGE });
      const key = state.tableKeys[state.tableKeys.length - 1];
      if (key) q.set("last_evaluated_key", key);
      let r;
      try {
        r = await api("GET", `/v1/subscribers/${encodeURIComponent(imsi)}/data?${q}`);
      } catch (e) {
        showError(err, e);
        return;
      }
      state.tableNext = r.headers.get("x-soracom-next-key");
      tprev.disabled = state.tableKeys.length <= 1;
      tnext.disabled = !state.tableNext;
      tinfo.textContent = `page ${state.tableKeys.length}`;
      tbody.replaceChildren(...r.body.map((e) => el("tr", { "data-time": e.time },
        el("td", { className: "mono" }, fmtTime(e.time), el("span", { className: "muted" }, `.${String(e.time % 1000).padStart(3, "0")}`)),
        el("td", { className: "mono" }, e.resourceId),
        el("td", {}, e.contentType),
        el("td", { className: "mono content" }, e.contentEncoding === "base64" ? `(base64) ${e.content}` : e.content))));
    }

    function tablePage(dir) {
      if (dir > 0 && state.tableNext) state.tableKeys.push(state.tableNext);
      if (dir < 0 && state.tableKeys.length > 1) state.tableKeys.pop();
      loadTable();
    }

    function schedule() {
      clearTimeout(state.timer);
      state.timer = null;
      // Only a range that ends now can grow; a custom one is fixed.
      if (auto.checked && state.alive && range.value !== "custom") {
        state.timer = setTimeout(refresh, REFRESH_MS);
      }
    }

    /** The charted entries (all chosen SIMs and fields) as CSV. */
    function csv() {
      const rows = [["time", "time_iso", "imsi", "content_type", "content"]];
      for (const [imsi, entries] of state.bySim) {
        for (const e of entries) rows.push([e.time, new Date(e.time).toISOString(), imsi, e.contentType, e.content]);
      }
      const blob = new Blob([rows.map((r) => r.map(csvCell).join(",")).join("\r\n") + "\r\n"], { type: "text/csv" });
      const a = el("a", { href: URL.createObjectURL(blob), download: `harvest-${imsis().join("_") || "none"}-${Date.now()}.csv` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    }

    if (sims.value) refresh();
    return {
      stop: () => {
        state.alive = false;
        clearTimeout(state.timer);
        if (state.plot) state.plot.destroy();
        SG.harvestPlot = null;
      },
    };
  });
})();
