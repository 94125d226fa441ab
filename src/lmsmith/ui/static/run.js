// One run: live curves from metrics.jsonl (one point per logged step), eval tables, its PNGs and config.
LM.nav("runs");
const $ = (id) => document.getElementById(id);
const id = new URLSearchParams(location.search).get("id");
const ns = "http://www.w3.org/2000/svg";

function chart(title, series, testid) {
  // series: [{label, points: [[x, y]...], color}]
  const W = 560, H = 230, P = 52;
  const all = series.flatMap((s) => s.points);
  if (!all.length) return null;
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs) || 1], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x) => P + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (W - 2 * P);
  const sy = (y) => H - P + (y1 === y0 ? -0.5 : -(y - y0) / (y1 - y0)) * (H - 2 * P);
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("style", "width:100%;min-width:320px;max-width:620px");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title); svg.setAttribute("data-testid", testid);
  const add = (tag, attrs, text) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); if (text !== undefined) e.textContent = text; svg.append(e); return e; };
  add("line", {x1: P, y1: H - P, x2: W - P, y2: H - P, stroke: "#999"}); add("line", {x1: P, y1: P, x2: P, y2: H - P, stroke: "#999"});
  add("text", {x: P, y: 16, "font-weight": "600"}, title); add("text", {x: W - P - 20, y: H - P + 30}, "step");
  add("text", {x: 2, y: sy(y1) + 4}, LM.fmt(y1, 3)); add("text", {x: 2, y: sy(y0) + 4}, LM.fmt(y0, 3));
  add("text", {x: sx(x0) - 4, y: H - P + 14}, String(x0)); add("text", {x: sx(x1) - 10, y: H - P + 14}, String(x1));
  series.forEach((s, i) => {
    add("polyline", {points: s.points.map((p) => `${sx(p[0])},${sy(p[1])}`).join(" "), fill: "none", stroke: s.color, "stroke-width": 1.5});
    for (const p of s.points) add("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 2.2, fill: s.color, "data-testid": s.pointId || "curve-point"});
    add("text", {x: W - P - 70, y: 16 + 14 * i}, "— " + s.label).setAttribute("fill", s.color);
  });
  return svg;
}

async function load() {
  let r;
  try { r = await LM.api("/ui/api/runs/" + encodeURIComponent(id)); } catch (e) { $("error").textContent = e.message; return; }
  $("title").textContent = `${r.kind}: ${r.id}`;
  $("kpis").textContent = "";
  for (const [k, v] of [["status", r.status], ["step", r.step], ["loss", r.loss], ["best eval loss", r.best_eval_loss], ["registered", r.registered]])
    if (v !== undefined) $("kpis").append(LM.el("div", {class: "kpi"}, LM.el("span", {class: "muted", text: k}), LM.el("b", {text: LM.fmt(v)})));
  const train = r.metrics.filter((m) => (m.split || "train") === "train");
  const evals = r.metrics.filter((m) => m.split === "eval");
  $("curves").textContent = "";
  const charts = [
    chart("loss", [{label: "train", color: "#2f5bd3", points: train.map((m) => [m.step, m.loss])},
                   {label: "eval", color: "#d36b2f", pointId: "eval-point", points: evals.map((m) => [m.step, m.loss])}], "loss-chart"),
    chart("learning rate", [{label: "lr", color: "#1b7f3b", pointId: "lr-point", points: train.filter((m) => m.lr !== undefined).map((m) => [m.step, m.lr])}], "lr-chart"),
    chart("tokens/s", [{label: "tokens/s", color: "#7a3fb8", pointId: "tps-point", points: train.filter((m) => m.tokens_per_s).map((m) => [m.step, m.tokens_per_s])}], "tps-chart"),
  ].filter(Boolean);
  if (charts.length) $("curves").append(LM.el("div", {class: "card", style: "display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:12px"}, ...charts));
  $("results").textContent = "";
  if (r.results) {
    const t = LM.el("table", {"aria-label": "eval scores"}, LM.el("tr", {}, ...["task", "n", "metric", "value"].map((h) => LM.el("th", {text: h}))));
    for (const res of r.results) for (const [k, v] of Object.entries(res.metrics)) if (!k.endsWith("_stderr"))
      t.append(LM.el("tr", {"data-testid": "score-row"}, LM.el("td", {text: res.task}), LM.el("td", {text: res.n}), LM.el("td", {text: k}),
        LM.el("td", {text: LM.fmt(v) + (res.metrics[k + "_stderr"] !== undefined ? " ± " + LM.fmt(res.metrics[k + "_stderr"]) : "")})));
    $("results").append(LM.el("h2", {text: "Scores"}), t);
  }
  if (r.compare) {
    const t = LM.el("table", {"aria-label": "comparison"}, LM.el("tr", {}, ...["task", "metric", "A", "B", "B - A", "p", "n"].map((h) => LM.el("th", {text: h}))));
    for (const row of r.compare.rows) t.append(LM.el("tr", {}, ...[row.task, row.metric, LM.fmt(row.a), LM.fmt(row.b), LM.fmt(row.delta), LM.fmt(row.p_value), LM.fmt(row.n)].map((x) => LM.el("td", {text: x}))));
    $("results").append(LM.el("h2", {text: `A = ${r.compare.a}, B = ${r.compare.b}`}), t);
  }
  $("files").textContent = "";
  for (const f of r.files) {
    const url = `/ui/api/runs/${encodeURIComponent(r.id)}/files/${encodeURIComponent(f)}`;
    const li = LM.el("li", {}, LM.el("a", {href: "#", text: f, onclick: async (e) => {
      e.preventDefault();
      const res = await fetch(url, {headers: LM.headers()});
      window.open(URL.createObjectURL(await res.blob()));
    }}));
    if (f.endsWith(".png")) {
      const img = LM.el("img", {alt: f, style: "max-width:100%;display:block"});
      fetch(url, {headers: LM.headers()}).then((res) => res.blob()).then((b) => { img.src = URL.createObjectURL(b); });
      li.append(img);
    }
    $("files").append(li);
  }
  $("config").textContent = r.config ? JSON.stringify(r.config, null, 2) : "(no config: an eval run)";
  if (r.status === "started" || r.status === "stopped") setTimeout(load, 5000);  // live while it trains
}
load();
