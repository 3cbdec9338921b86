// simgate console: login, the API client every page uses, and the router.
//
// The console is an ordinary client of the public REST API: the token the
// operator types stays in this tab's sessionStorage (never in a URL, gone
// when the tab closes) and goes with every call, so the console can do
// exactly what that token can do through curl — nothing more.
"use strict";

const SG = (window.SG = {
  pages: {},
  current: null,
});

const AUTH_KEY = "simgate.console.auth";

SG.auth = {
  get() {
    try {
      return JSON.parse(sessionStorage.getItem(AUTH_KEY) || "null");
    } catch (_) {
      return null;
    }
  },
  set(a) {
    sessionStorage.setItem(AUTH_KEY, JSON.stringify(a));
  },
  clear() {
    sessionStorage.removeItem(AUTH_KEY);
  },
  headers(a) {
    if (!a) return {};
    if (a.kind === "key") return { "X-Soracom-API-Key": a.apiKey, "X-Soracom-Token": a.token };
    return { Authorization: "Bearer " + a.token };
  },
};

/** An API answer that was not 2xx, with the API's {code, message}. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code || "";
  }
  toString() {
    return this.code ? `${this.message} (${this.code}, HTTP ${this.status})` : `${this.message} (HTTP ${this.status})`;
  }
}
SG.ApiError = ApiError;

/**
 * Calls the API. Returns {status, headers, body} (body parsed as JSON when
 * it is JSON, else text); throws ApiError on a non-2xx answer. A 401 means
 * the token stopped working (revoked, expired): back to the login page.
 */
SG.api = async function (method, path, body, opts = {}) {
  const auth = opts.auth || SG.auth.get();
  const headers = Object.assign({ Accept: "application/json" }, SG.auth.headers(auth));
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "network", "simgate did not answer: " + e.message);
  }
  const text = await res.text();
  let parsed = text;
  if ((res.headers.get("content-type") || "").includes("json") && text) {
    try {
      parsed = JSON.parse(text);
    } catch (_) {
      /* keep the text */
    }
  }
  if (!res.ok) {
    const code = parsed && parsed.code;
    const message = (parsed && parsed.message) || (typeof parsed === "string" && parsed) || res.statusText;
    const err = new ApiError(res.status, code, message);
    if (res.status === 401 && !opts.auth) SG.logout("Your session ended: " + err);
    throw err;
  }
  return { status: res.status, headers: res.headers, body: parsed };
};

/** Builds an element; children are nodes or text (never parsed as HTML). */
SG.el = function (tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "className") e.className = v;
    else if (k === "value") e.value = v;
    else if (k === "checked") e.checked = !!v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
};

SG.fmtTime = function (ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
};

/** Shows `err` in `target` (an element), or clears it when err is empty. */
SG.showError = function (target, err) {
  target.textContent = err ? String(err) : "";
  target.className = "error";
};

/** The query part of the current hash (#/page?a=b) as URLSearchParams. */
SG.hashParams = function () {
  const h = location.hash;
  const i = h.indexOf("?");
  return new URLSearchParams(i < 0 ? "" : h.slice(i + 1));
};

// ---- login ---------------------------------------------------------------

async function login(ev) {
  ev.preventDefault();
  const errBox = document.getElementById("login-error");
  SG.showError(errBox, "");
  const token = document.getElementById("login-token").value.trim();
  const keyId = document.getElementById("login-key-id").value.trim();
  const key = document.getElementById("login-key").value.trim();
  let auth;
  try {
    if (token) {
      auth = { kind: "bearer", token, label: "API token" };
    } else if (keyId && key) {
      const r = await SG.api("POST", "/v1/auth", { authKeyId: keyId, authKey: key }, { auth: {} });
      auth = { kind: "key", apiKey: r.body.apiKey, token: r.body.token, label: `${r.body.operatorId} (${keyId})` };
    } else {
      SG.showError(errBox, "Enter an API token, or an auth key id and its secret.");
      return;
    }
    // Any protected call proves the token; this one is cheap.
    await SG.api("GET", "/v1/groups", undefined, { auth });
  } catch (e) {
    const why = e.status === 401 ? "Login refused: " : "Login failed: ";
    SG.showError(errBox, why + e);
    return;
  }
  SG.auth.set(auth);
  for (const id of ["login-token", "login-key-id", "login-key"]) document.getElementById(id).value = "";
  if (!location.hash || location.hash === "#/login") location.hash = "#/sims";
  route();
}

SG.logout = function (message) {
  const a = SG.auth.get();
  if (a && a.kind === "key" && !message) {
    // End the API key / token pair on the server too; best effort.
    SG.api("POST", "/v1/auth/logout").catch(() => {});
  }
  SG.auth.clear();
  stopPage();
  showLogin(message || "");
};

function showLogin(message) {
  document.getElementById("top").hidden = true;
  document.getElementById("page").hidden = true;
  document.getElementById("login").hidden = false;
  SG.showError(document.getElementById("login-error"), message);
  document.getElementById("login-token").focus();
}

// ---- router --------------------------------------------------------------

function stopPage() {
  if (SG.current && SG.current.stop) {
    try {
      SG.current.stop();
    } catch (_) {
      /* a page that failed to stop must not block the next */
    }
  }
  SG.current = null;
}

function route() {
  const auth = SG.auth.get();
  if (!auth) {
    showLogin("");
    return;
  }
  const name = (location.hash.replace(/^#\/?/, "").split("?")[0] || "sims").toLowerCase();
  const page = SG.pages[name] || SG.pages.sims;
  stopPage();
  document.getElementById("login").hidden = true;
  document.getElementById("top").hidden = false;
  document.getElementById("who").textContent = auth.label || "";
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("current", a.dataset.page === page.name);
  }
  const root = document.getElementById("page");
  root.hidden = false;
  root.replaceChildren();
  root.dataset.page = page.name;
  document.title = `${page.title} · simgate console`;
  SG.current = page.mount(root) || {};
}

/** Registers a page: `mount(root)` builds it and returns {stop()} or nothing. */
SG.page = function (name, title, mount) {
  SG.pages[name] = { name, title, mount: (root) => mount(root) };
};

SG.route = route;

window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login-form").addEventListener("submit", login);
  document.getElementById("logout").addEventListener("click", () => SG.logout());
  window.addEventListener("hashchange", route);
  route();
});
