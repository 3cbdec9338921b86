// Groups: the list, and each configuration namespace of a group as JSON
// (key → value), saved with PUT /v1/groups/{id}/configuration/{namespace}.
// The API validates; its error is shown under the namespace it is about.
"use strict";

(function () {
  const { el, api, fmtTime, showError } = window.SG;
  const NAMESPACES = ["SoracomAir", "SoracomBeam", "SoracomEndorse", "SoracomFunk", "SoracomFunnel",
    "SoracomHarvest", "SoracomHarvestFiles", "SoracomKrypton", "UnifiedEndpoint"];

  SG.page("groups", "Groups", (root) => {
    let groups = [];
    let selected = SG.hashParams().get("group");
    const err = el("p", { className: "error", role: "alert" });
    const tbody = el("tbody");
    const detail = el("div", { id: "group-detail" });
    const newId = el("input", { id: "g-new-id", placeholder: "group id (optional)", size: 16 });
    const newName = el("input", { id: "g-new-name", placeholder: "name", size: 16 });

    root.append(
      el("h1", {}, "Groups"),
      el("form", { className: "bar", onsubmit: create },
        newId, newName, el("button", { type: "submit" }, "Create group")),
      err,
      el("table", { id: "groups" },
        el("thead", {}, el("tr", {}, ["Group", "Name", "Configured", "Modified"].map((h) => el("th", {}, h)))),
        tbody),
      detail);

    async function load() {
      showError(err, "");
      try {
        groups = (await api("GET", "/v1/groups")).body;
      } catch (e) {
        showError(err, e);
        return;
      }
      tbody.replaceChildren(...groups.map((g) => el("tr", {
        "data-group": g.groupId,
        className: g.groupId === selected ? "selected" : "",
        onclick: () => { selected = g.groupId; load(); },
      },
      el("td", { className: "mono" }, g.groupId),
      el("td", {}, (g.tags && g.tags.name) || ""),
      el("td", {}, Object.keys(g.configuration || {}).join(", ")),
      el("td", {}, fmtTime(g.lastModifiedTime)))));
      const g = groups.find((x) => x.groupId === selected);
      if (g) showGroup(g);
      else detail.replaceChildren();
    }

    async function create(ev) {
      ev.preventDefault();
      showError(err, "");
      const body = { tags: newName.value.trim() ? { name: newName.value.trim() } : {} };
      if (newId.value.trim()) body.groupId = newId.value.trim();
      try {
        const r = await api("POST", "/v1/groups", body);
        selected = r.body.groupId;
        newId.value = newName.value = "";
        load();
      } catch (e) {
        showError(err, e);
      }
    }

    function showGroup(g) {
      const config = g.configuration || {};
      const present = Object.keys(config);
      const addSel = el("select", { id: "g-add-ns" },
        NAMESPACES.filter((n) => !present.includes(n)).map((n) => el("option", { value: n }, n)));
      const cards = el("div", { className: "grid" });
      for (const ns of present) cards.append(card(g, ns, config[ns], false));
      const del = el("button", { type: "button", className: "danger", onclick: async () => {
        if (!confirm(`Delete group ${g.groupId}?`)) return;
        try {
          await api("DELETE", `/v1/groups/${encodeURIComponent(g.groupId)}`);
          selected = null;
          load();
        } catch (e) {
          showError(err, e);
        }
      } }, "Delete group");
      detail.replaceChildren(el("div", { className: "panel" },
        el("h3", {}, `Group ${g.groupId}`, g.tags && g.tags.name ? ` · ${g.tags.name}` : ""),
        el("div", { className: "bar" },
          el("a", { href: `#/sims` }, "SIMs"), addSel,
          el("button", { type: "button", onclick: () => {
            if (addSel.value) cards.prepend(card(g, addSel.value, {}, true));
          } }, "Add namespace"), del),
        cards));
    }

    /** One namespace: a JSON object of its keys, saved key by key. */
    function card(g, ns, values, fresh) {
      const text = el("textarea", { "data-namespace": ns, spellcheck: "false" });
      text.value = JSON.stringify(values, null, 2);
      const fieldErr = el("p", { className: "error", "data-error-for": ns, role: "alert" });
      const base = `/v1/groups/${encodeURIComponent(g.groupId)}/configuration/${ns}`;
      async function save() {
        showError(fieldErr, "");
        let obj;
        try {
          obj = JSON.parse(text.value);
        } catch (e) {
          showError(fieldErr, "Not JSON: " + e.message);
          return;
        }
        if (!obj || typeof obj !== "object" || Array.isArray(obj)) {
          showError(fieldErr, 'Expected a JSON object of keys, e.g. {"enabled": true}');
          return;
        }
        try {
          const entries = Object.entries(obj).map(([key, value]) => ({ key, value }));
          if (entries.length) await api("PUT", base, entries);
          // PUT sets the keys it is given; keys removed from the text are
          // removed one by one, as the API offers.
          for (const k of Object.keys(values)) {
            if (!(k in obj)) await api("DELETE", `${base}/${encodeURIComponent(k)}`);
          }
        } catch (e) {
          showError(fieldErr, e);
          return;
        }
        load();
      }
      async function remove() {
        if (fresh) {
          box.remove();
          return;
        }
        try {
          await api("DELETE", base);
          load();
        } catch (e) {
          showError(fieldErr, e);
        }
      }
      const box = el("div", { className: "panel ns", "data-ns": ns },
        el("h3", {}, ns),
        text,
        fieldErr,
        el("div", { className: "bar" },
          el("button", { type: "button", className: "primary", "data-save": ns, onclick: save }, "Save"),
          el("button", { type: "button", className: "danger", onclick: remove }, "Remove namespace")));
      return box;
    }

    load();
  });
})();
