// Shared by every page: the nav, the API key (kept in this browser's localStorage), JSON fetches.
const LM = {
  key() { return localStorage.getItem("lmsmith-api-key") || ""; },
  headers(extra) {
    const h = Object.assign({"Content-Type": "application/json"}, extra || {});
    if (LM.key()) h["Authorization"] = "Bearer " + LM.key();
    return h;
  },
  async api(path, opts) {
    opts = opts || {};
    const res = await fetch(path, Object.assign({}, opts, {headers: LM.headers(opts.headers)}));
    if (res.status === 401) { LM.askKey(); throw new Error("this server needs its API key"); }
    if (!res.ok) {
      let detail = res.statusText;
      try { const j = await res.json(); detail = j.detail || (j.error && j.error.message) || JSON.stringify(j); } catch (e) {}
      throw new Error(detail);
    }
    return res.json();
  },
  askKey() { document.getElementById("keybar").style.display = "block"; },
  el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  },
  fmt(v, digits) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") return Number.isInteger(v) ? v.toLocaleString() : v.toFixed(digits === undefined ? 4 : digits);
    return String(v);
  },
  bytes(n) { const u = ["B","KiB","MiB","GiB","TiB"]; let i = 0; while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; } return n.toFixed(i ? 1 : 0) + " " + u[i]; },
  nav(current) {
    const pages = [["/ui", "Playground", "playground"], ["/ui/models", "Models", "models"], ["/ui/runs", "Runs", "runs"],
                   ["/ui/monitor", "Monitor", "monitor"]];
    const header = LM.el("header", {}, LM.el("span", {class: "brand", text: "lmsmith"}));
    for (const [href, label, key] of pages) {
      const a = LM.el("a", {href, text: label});
      if (key === current) a.setAttribute("aria-current", "page");
      header.append(a);
    }
    const keyInput = LM.el("input", {id: "api-key", type: "password", placeholder: "API key", "aria-label": "API key"});
    const bar = LM.el("div", {id: "keybar"}, LM.el("label", {for: "api-key", text: "This server requires its API key (kept in this browser only):"}),
      keyInput, LM.el("button", {text: "Save", onclick: () => { localStorage.setItem("lmsmith-api-key", keyInput.value); location.reload(); }}));
    document.body.prepend(header, bar);
  },
};
