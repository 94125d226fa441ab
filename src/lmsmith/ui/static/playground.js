// The playground: streamed chat against this server's /v1/chat/completions, and a side-by-side arena
// whose votes are stored as preference pairs (`lmsmith train dpo` reads them).
LM.nav("playground");
const $ = (id) => document.getElementById(id);
let history = [];          // the conversation (single-model mode)
let controllers = [];      // in-flight requests, for Stop

function settings() {
  const body = {temperature: parseFloat($("temperature").value), top_p: parseFloat($("top-p").value),
                max_tokens: parseInt($("max-tokens").value, 10), stream: true, stream_options: {include_usage: true}};
  const stop = $("stop-seqs").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (stop.length) body.stop = stop;
  if ($("ignore-eos").checked) body.ignore_eos = true;
  if ($("tools").value.trim()) body.tools = JSON.parse($("tools").value);
  if ($("schema").value.trim()) body.response_format = {type: "json_schema", json_schema: {name: "answer", schema: JSON.parse($("schema").value)}};
  return body;
}

function bubble(role, text, testid) {
  const d = LM.el("div", {class: "msg " + role, "data-testid": testid || role + "-message"});
  d.textContent = text || "";
  return d;
}

// One streamed completion into `target`; resolves with {text, stats} (stats also shown under the answer).
async function stream(model, messages, target, statsEl) {
  const ctl = new AbortController();
  controllers.push(ctl);
  const t0 = performance.now();
  let first = null, text = "", usage = null, toolCalls = {};
  try {
    const res = await fetch("/v1/chat/completions", {method: "POST", headers: LM.headers(), signal: ctl.signal,
      body: JSON.stringify(Object.assign({model, messages}, settings()))});
    if (res.status === 401) { LM.askKey(); throw new Error("this server needs its API key"); }
    if (!res.ok) { const j = await res.json().catch(() => ({})); throw new Error((j.error && j.error.message) || res.statusText); }
    const reader = res.body.getReader(), dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      buf += dec.decode(value, {stream: true});
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const line = buf.slice(0, i).trim(); buf = buf.slice(i + 2);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.usage) usage = chunk.usage;
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (!delta) continue;
        if (delta.content) { if (first === null) first = performance.now(); text += delta.content; target.textContent = text; }
        for (const tc of delta.tool_calls || []) {
          if (first === null) first = performance.now();
          const cur = toolCalls[tc.index] || (toolCalls[tc.index] = {name: "", arguments: ""});
          if (tc.function && tc.function.name) cur.name += tc.function.name;
          if (tc.function && tc.function.arguments) cur.arguments += tc.function.arguments;
          target.textContent = text + Object.values(toolCalls).map((c) => `\n→ ${c.name}(${c.arguments})`).join("");
        }
      }
    }
  } catch (e) {
    if (e.name === "AbortError") { target.textContent = text + " [stopped]"; }
    else { target.classList.add("error"); target.textContent = text + " [" + e.message + "]"; }
  }
  const t1 = performance.now();
  const n = usage ? usage.completion_tokens : null;
  const stats = {ttft_ms: first === null ? null : first - t0, tokens: n,
                 tokens_per_s: n && first !== null && t1 > first ? (n - 1) / ((t1 - first) / 1000) : null};
  statsEl.textContent = `TTFT ${LM.fmt(stats.ttft_ms, 0)} ms · ${LM.fmt(stats.tokens)} tokens · ${LM.fmt(stats.tokens_per_s, 1)} tokens/s`;
  return {text: target.textContent, raw: text, stats};
}

async function send() {
  const content = $("chat-input").value;
  if (!content.trim()) return;
  $("chat-input").value = "";
  $("send").disabled = true; $("stop").disabled = false; $("status").textContent = "generating…";
  const system = $("system").value.trim() ? [{role: "system", content: $("system").value}] : [];
  const chat = $("chat");
  try {
    if ($("arena").checked) {
      const messages = system.concat([{role: "user", content}]);
      chat.append(bubble("user", content));
      const boxes = [0, 1].map(() => bubble("assistant", ""));
      const stats = [0, 1].map(() => LM.el("div", {class: "muted", "data-testid": "answer-stats"}));
      const models = [$("model-a").value, $("model-b").value];
      chat.append(LM.el("div", {class: "pair"},
        ...[0, 1].map((i) => LM.el("div", {}, LM.el("div", {class: "muted", text: (i ? "B: " : "A: ") + models[i]}), boxes[i], stats[i]))));
      const [a, b] = await Promise.all([0, 1].map((i) => stream(models[i], messages, boxes[i], stats[i])));
      const votes = LM.el("p", {});
      const voteFor = (winner) => async () => {
        votes.querySelectorAll("button").forEach((x) => x.disabled = true);
        const r = await LM.api("/ui/api/vote", {method: "POST", body: JSON.stringify({messages, answer_a: a.raw,
          answer_b: b.raw, model_a: models[0], model_b: models[1], winner})});
        votes.append(LM.el("span", {class: "muted", "data-testid": "vote-result",
          text: r.stored ? ` saved as a preference pair in ${r.path}` : " tie: not stored"}));
      };
      votes.append(LM.el("button", {"data-testid": "vote-a", text: "A is better", onclick: voteFor("a")}), " ",
                   LM.el("button", {"data-testid": "vote-b", text: "B is better", onclick: voteFor("b")}), " ",
                   LM.el("button", {class: "secondary", "data-testid": "vote-tie", text: "Tie", onclick: voteFor("tie")}));
      chat.append(votes);
    } else {
      history.push({role: "user", content});
      chat.append(bubble("user", content));
      const box = bubble("assistant", ""), st = LM.el("div", {class: "muted", "data-testid": "answer-stats"});
      chat.append(box, st);
      const r = await stream($("model-a").value, system.concat(history), box, st);
      history.push({role: "assistant", content: r.raw});
    }
  } finally {
    controllers = [];
    $("send").disabled = false; $("stop").disabled = true; $("status").textContent = "";
  }
}

async function init() {
  $("send").addEventListener("click", send);
  $("stop").addEventListener("click", () => controllers.forEach((c) => c.abort()));
  $("clear").addEventListener("click", () => { history = []; $("chat").textContent = ""; });
  $("chat-input").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) send(); });
  $("arena").addEventListener("change", () => { $("arena-opts").hidden = !$("arena").checked; });
  try {
    const models = await LM.api("/v1/models");
    for (const sel of [$("model-a"), $("model-b")])
      for (const m of models.data) sel.append(LM.el("option", {value: m.id, text: m.id}));
  } catch (e) {
    $("no-model").hidden = false; $("send").disabled = true;
  }
}
init();
