// SIMs: one page of GET /v1/subscribers at a time (the API's paging, so a
// fleet of 100,000 SIMs is never loaded whole), filters the API supports,
// and the actions of the subscriber API on the selected SIM.
"use strict";

(function () {
  const { el, api, fmtTime, showError } = window.SG;
  const STATUSES = ["ready", "active", "inactive", "standby", "suspended", "terminated"];
  const PAGE_SIZES = [25, 50, 100, 500];

  SG.page("sims", "SIMs", (root) => {
    const state = {
      keys: [""], // last_evaluated_key of each page seen; the last is this page's
      next: null,
      sims: [],
      selected: null,
      alive: true,
    };

    const group = el("select", { id: "f-group" }, el("option", { value: "" }, "any group"));
    const status = el("select", { id: "f-status" }, el("option", { value: "" }, "any status"),
      STATUSES.map((s) => el("option", { value: s }, s)));
    const tagName = el("input", { id: "f-tag-name", placeholder: "tag name", size: 10 });
    const tagValue = el("input", { id: "f-tag-value", placeholder: "tag value", size: 12 });
    const prefix = el("input", { type: "checkbox", id: "f-prefix" });
    const size = el("select", { id: "f-size" }, PAGE_SIZES.map((n) => el("option", { value: n }, `${n} / page`)));
    size.value = "50";
    const err = el("p", { className: "error", role: "alert" });
    const tbody = el("tbody");
    const prev = el("button", { type: "button", id: "sims-prev", onclick: () => go(-1) }, "‹ Prev");
    const next = el("button", { type: "button", id: "sims-next", onclick: () => go(1) }, "Next ›");
    const pageInfo = el("span", { className: "muted" });
    const detail = el("div", { id: "sim-detail" });

    root.append(
      el("h1", {}, "SIMs"),
      el("form", { className: "bar", onsubmit: (e) => { e.preventDefault(); reset(); } },
        group, status, tagName, tagValue, el("label", {}, prefix, "prefix"), size,
        el("button", { type: "submit", className: "primary" }, "Filter"),
        el("button", { type: "button", id: "sims-refresh", onclick: () => load() }, "Refresh")),
      err,
      el("table", { id: "sims" },
        el("thead", {}, el("tr", {},
          ["IMSI", "Name", "Group", "Status", "Session", "IP", "IMEI", "Last data"].map((h) => el("th", {}, h)))),
        tbody),
      el("div", { className: "pager" }, prev, next, pageInfo),
      detail,
    );

    api("GET", "/v1/groups").then((r) => {
      for (const g of r.body) group.append(el("option", { value: g.groupId }, g.tags && g.tags.name ? `${g.groupId} (${g.tags.name})` : g.groupId));
    }).catch((e) => showError(err, e));

    function query(after) {
      const q = new URLSearchParams({ limit: size.value });
      if (group.value) q.set("group_id", group.value);
      if (status.value) q.set("status_filter", status.value);
      if (tagName.value.trim()) {
        q.set("tag_name", tagName.value.trim());
        if (tagValue.value !== "") {
          q.set("tag_value", tagValue.value);
          if (prefix.checked) q.set("tag_value_match_mode", "prefix");
        }
      }
      if (after) q.set("last_evaluated_key", after);
      return "/v1/subscribers?" + q;
    }

    function reset() {
      state.keys = [""];
      load();
    }

    function go(dir) {
      if (dir > 0 && state.next) state.keys.push(state.next);
      if (dir < 0 && state.keys.length > 1) state.keys.pop();
      load();
    }

    async function load() {
      showError(err, "");
      const after = state.keys[state.keys.length - 1];
      let r;
      try {
        r = await api("GET", query(after));
      } catch (e) {
        showError(err, e);
        return;
      }
      if (!state.alive) return;
      state.sims = r.body;
      state.next = r.headers.get("x-soracom-next-key");
      prev.disabled = state.keys.length <= 1;
      next.disabled = !state.next;
      pageInfo.textContent = `page ${state.keys.length} · ${state.sims.length} SIMs${state.next ? "" : " · last page"}`;
      render();
      lastData();
      if (state.selected) {
        const s = state.sims.find((x) => x.imsi === state.selected);
        if (s) showDetail(s);
      }
    }

    function render() {
      tbody.replaceChildren(...state.sims.map((s) => {
        const online = s.sessionStatus && s.sessionStatus.online;
        return el("tr", {
          "data-imsi": s.imsi,
          "data-status": s.status,
          "data-online": online ? "true" : "false",
          className: s.imsi === state.selected ? "selected" : "",
          onclick: () => { state.selected = s.imsi; render(); showDetail(s); },
        },
        el("td", { className: "mono" }, s.imsi),
        el("td", {}, (s.tags && s.tags.name) || ""),
        el("td", {}, s.groupId || el("span", { className: "muted" }, "—")),
        el("td", { className: "status" }, el("span", { className: "pill " + s.status }, s.status)),
        el("td", { className: "online" }, el("span", { className: "pill " + (online ? "online" : "offline") }, online ? "online" : "offline")),
        el("td", { className: "mono" }, (online && s.sessionStatus.ueIpAddress) || ""),
        el("td", { className: "mono" }, (online && s.sessionStatus.imei) ||
          (s.imei ? el("span", { className: "muted", title: "registered IMEI (the session reports none)" }, s.imei) : "")),
        el("td", { className: "last-data", "data-imsi": s.imsi }, ""));
      }));
    }

    // "Last seen": the newest Harvest entry of each SIM on this page, one
    // small query per row (the page is at most a few hundred rows).
    function lastData() {
      for (const s of state.sims) {
        api("GET", `/v1/subscribers/${s.imsi}/data?limit=1&sort=desc`).then((r) => {
          const cell = tbody.querySelector(`td.last-data[data-imsi="${s.imsi}"]`);
          if (cell && r.body.length) cell.textContent = fmtTime(r.body[0].time);
        }).catch(() => {});
      }
    }

    /** The selected SIM's actions; `note` is the last action's outcome. */
    function showDetail(s, note) {
      const msg = el("p", { id: "sim-action-result", role: "status", className: "ok" }, note || "");
      const act = (label, path, body, cls) => el("button", {
        type: "button", className: cls || "", "data-action": label.toLowerCase().replace(/\W+/g, "-"),
        onclick: () => run(path, body),
      }, label);
      async function run(path, body, method = "POST") {
        showError(msg, "");
        try {
          const r = await api(method, `/v1/subscribers/${s.imsi}${path}`, body);
          const fresh = r.body && r.body.imsi ? r.body : (await api("GET", `/v1/subscribers/${s.imsi}`)).body;
          const i = state.sims.findIndex((x) => x.imsi === s.imsi);
          if (i >= 0) state.sims[i] = fresh;
          render();
          showDetail(fresh, "Done.");
        } catch (e) {
          showError(msg, e);
        }
      }

      const groupSel = el("select", { id: "d-group" }, el("option", { value: "" }, "(no group)"),
        [...group.options].slice(1).map((o) => el("option", { value: o.value }, o.textContent)));
      groupSel.value = s.groupId || "";

      const tagRows = Object.entries(s.tags || {}).map(([k, v]) => el("tr", {},
        el("td", { className: "mono" }, k), el("td", {}, v),
        el("td", {}, el("button", { type: "button", onclick: () => run(`/tags/${encodeURIComponent(k)}`, undefined, "DELETE") }, "Remove"))));
      const newTag = el("input", { id: "d-tag-name", placeholder: "name", size: 10 });
      const newVal = el("input", { id: "d-tag-value", placeholder: "value", size: 16 });
      const imei = el("input", { id: "d-imei", placeholder: "IMEI (empty: the known one)", size: 22, value: s.imeiLock ? s.imeiLock.imei : "" });

      detail.replaceChildren(el("div", { className: "panel" },
        el("h3", {}, `SIM ${s.imsi}`, (s.tags && s.tags.name) ? ` · ${s.tags.name}` : ""),
        el("p", { className: "muted" },
          `MSISDN ${s.msisdn || "—"} · registered IMEI ${s.imei || "—"} · created ${fmtTime(s.createdTime)} · modified ${fmtTime(s.lastModifiedTime)}`),
        el("div", { className: "bar" },
          act("Activate", "/activate", undefined, "primary"),
          act("Suspend", "/suspend", undefined, "danger"),
          act("Deactivate", "/deactivate"),
          el("a", { href: `#/harvest?imsi=${s.imsi}` }, "Harvest data →")),
        el("div", { className: "bar" }, el("strong", {}, "Group"), groupSel,
          el("button", { type: "button", "data-action": "set-group",
            onclick: () => groupSel.value ? run("/set_group", { groupId: groupSel.value }) : run("/unset_group") }, "Set group")),
        el("div", { className: "bar" }, el("strong", {}, "IMEI lock"),
          el("span", { id: "d-imei-lock" }, s.imeiLock ? `locked to ${s.imeiLock.imei}` : "not locked"), imei,
          el("button", { type: "button", "data-action": "lock",
            onclick: () => run("/set_imei_lock", imei.value.trim() ? { imei: imei.value.trim() } : undefined) }, "Lock"),
          el("button", { type: "button", "data-action": "unlock", onclick: () => run("/unset_imei_lock") }, "Unlock")),
        el("strong", {}, "Tags"),
        el("table", { className: "tags" }, el("tbody", {}, tagRows,
          el("tr", {}, el("td", {}, newTag), el("td", {}, newVal),
            el("td", {}, el("button", { type: "button", "data-action": "put-tag",
              onclick: () => run("/tags", [{ tagName: newTag.value.trim(), tagValue: newVal.value }], "PUT") }, "Add / set"))))),
        msg));
    }

    load();
    return { stop: () => { state.alive = false; } };
  });
})();
