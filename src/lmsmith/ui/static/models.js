// Registry versions (the same records as `lmsmith models list --json`), their lineage as a graph, alias moves.
LM.nav("models");
const $ = (id) => document.getElementById(id);

function scores(metrics) {
  return Object.entries(metrics || {}).filter(([k, v]) => k.startsWith("eval/") && typeof v === "number")
    .map(([k, v]) => `${k.slice(5)} ${LM.fmt(v)}`).join(", ");
}

function drawLineage(versions) {
  // layered layout: a version sits one column right of its parent (roots: column 0)
  const byRef = Object.fromEntries(versions.map((v) => [v.ref, v]));
  const parentOf = (v) => (v.lineage && v.lineage.parent) || v.base || null;
  const depth = {};
  const d = (v) => { if (depth[v.ref] !== undefined) return depth[v.ref]; depth[v.ref] = 0;
                     const p = byRef[parentOf(v)]; return depth[v.ref] = p ? d(p) + 1 : 0; };
  versions.forEach(d);
  const rows = {}, pos = {};
  for (const v of versions) { const c = depth[v.ref]; rows[c] = (rows[c] || 0) + 1; pos[v.ref] = [c, rows[c] - 1]; }
  const W = 210, H = 34, svg = $("lineage"), ns = "http://www.w3.org/2000/svg";
  svg.setAttribute("height", String(Math.max(1, ...Object.values(rows)) * H + 10));
  svg.setAttribute("width", String((Math.max(0, ...Object.values(depth)) + 1) * W + 20));
  const node = (tag, attrs) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); svg.append(e); return e; };
  for (const v of versions) {
    const p = byRef[parentOf(v)];
    if (!p) continue;
    const [c1, r1] = pos[p.ref], [c2, r2] = pos[v.ref];
    node("line", {x1: c1 * W + 170, y1: r1 * H + 20, x2: c2 * W + 10, y2: r2 * H + 20, stroke: "#8a93a6", "data-testid": "lineage-edge"});
  }
  for (const v of versions) {
    const [c, r] = pos[v.ref];
    node("rect", {x: c * W + 10, y: r * H + 6, width: 160, height: 28, rx: 6, fill: "#e8eefc", stroke: "#2f5bd3"});
    const t = node("text", {x: c * W + 18, y: r * H + 24, "data-testid": "lineage-node"});
    t.textContent = v.ref + (v.aliases.length ? " (" + v.aliases.join(",") + ")" : "");
  }
}

async function load() {
  let versions;
  try { versions = await LM.api("/ui/api/models"); } catch (e) { $("error").textContent = e.message; return; }
  const rows = $("rows");
  rows.textContent = "";
  $("alias-ref").textContent = "";
  if (!versions.length) rows.append(LM.el("tr", {}, LM.el("td", {colspan: "8", text: "No models registered yet: lmsmith models pull default"})));
  for (const v of versions) {
    rows.append(LM.el("tr", {"data-testid": "model-row", "data-ref": v.ref},
      LM.el("td", {text: v.ref}), LM.el("td", {text: v.kind}), LM.el("td", {text: LM.bytes(v.size)}),
      LM.el("td", {text: v.aliases.join(", ")}), LM.el("td", {text: (v.lineage && v.lineage.parent) || v.base || ""}),
      LM.el("td", {text: (v.lineage && v.lineage.stage) || ""}), LM.el("td", {text: v.created}),
      LM.el("td", {text: scores(v.metrics)})));
    $("alias-ref").append(LM.el("option", {value: v.ref, text: v.ref}));
  }
  drawLineage(versions);
}

$("alias-move").addEventListener("click", async () => {
  const ref = $("alias-ref").value, alias = $("alias-name").value.trim();
  if (!ref || !alias) { $("alias-status").textContent = "choose a version and an alias"; return; }
  if (!confirm(`Point ${ref.split("@")[0]}@${alias} at ${ref}? Servers following this alias switch to it.`)) return;
  try {
    await LM.api("/ui/api/alias", {method: "POST", body: JSON.stringify({ref, alias})});
    $("alias-status").textContent = `${alias} → ${ref}`;
    load();
  } catch (e) { $("alias-status").textContent = e.message; }
});
load();
