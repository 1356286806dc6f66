// The convrec chat page: one conversation per model, kept by the server (the session id
// lives in localStorage, so a reload continues it). Replies stream as server-sent events.
// Text from users, models and datasets is only ever set as textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], model: null, session: null, busy: false };

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { "Content-Type": "application/json", ...(options.headers || {}) },
  });
  if (!response.ok) {
    let error = `${response.status} ${response.statusText}`;
    try { error = (await response.json()).error || error; } catch (_) { /* not JSON */ }
    throw new Error(error);
  }
  return response.status === 204 ? null : response.json();
}

function status(text) { $("status").textContent = text || ""; }

function addTurn(role, text) {
  const item = document.createElement("li");
  item.className = `turn ${role}`;
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  bubble.textContent = text;
  item.appendChild(bubble);
  $("conversation").appendChild(item);
  item.scrollIntoView({ block: "end", behavior: "smooth" });
  return item;
}

function addCards(turn, items) {
  if (!items || !items.length) return;
  const list = document.createElement("ul");
  list.className = "cards";
  for (const item of items) {
    const card = $("card").content.firstElementChild.cloneNode(true);
    card.dataset.item = item.id;
    card.querySelector(".card-title").textContent = item.title;
    const facts = card.querySelector(".facts");
    const byRelation = new Map();
    for (const fact of item.facts || []) {
      if (!byRelation.has(fact.relation)) byRelation.set(fact.relation, []);
      byRelation.get(fact.relation).push(fact.label);
    }
    for (const [relation, labels] of [...byRelation].slice(0, 4)) {
      const dt = document.createElement("dt");
      dt.textContent = relation;
      const dd = document.createElement("dd");
      dd.textContent = labels.join(", ");
      facts.append(dt, dd);
    }
    list.appendChild(card);
  }
  turn.appendChild(list);
}

function addLinked(turn, linked) {
  if (!linked || !linked.length) return;
  const note = document.createElement("div");
  note.className = "linked";
  note.textContent = "understood: " + linked.map((e) => e.label).join(", ");
  turn.appendChild(note);
}

function sessionKey() { return `convrec-session:${state.model}`; }

async function startSession() {
  const created = await api("/sessions", {
    method: "POST", body: JSON.stringify({ model: state.model }),
  });
  state.session = created.id;
  localStorage.setItem(sessionKey(), created.id);
  $("conversation").replaceChildren();
}

async function openModel(name) {
  state.model = name;
  const info = state.models.find((m) => m.name === name);
  $("about").textContent = `${info.model} trained on ${info.dataset}` +
    (info.synthetic ? " (synthetic demo data)" : "") +
    (info.can_respond ? " — writes its replies" : " — ranks the catalogue; replies are templates");
  $("conversation").replaceChildren();
  const saved = localStorage.getItem(sessionKey());
  if (saved) {
    try {
      const session = await api(`/sessions/${encodeURIComponent(saved)}`);
      state.session = saved;
      for (const turn of session.turns) {
        const item = addTurn(turn.role, turn.text);
        if (turn.role === "recommender") addCards(item, turn.items);
      }
      return;
    } catch (_) { localStorage.removeItem(sessionKey()); }
  }
  await startSession();
}

function parseEvents(buffer, onEvent) {
  let end;
  while ((end = buffer.indexOf("\n\n")) >= 0) {
    const block = buffer.slice(0, end);
    buffer = buffer.slice(end + 2);
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
    }
    onEvent(event, JSON.parse(data.join("\n")));
  }
  return buffer;
}

async function send(text) {
  const seeker = addTurn("seeker", text);
  const reply = addTurn("recommender", "");
  reply.classList.add("pending");
  const bubble = reply.querySelector(".bubble");
  const response = await fetch(`/sessions/${encodeURIComponent(state.session)}/messages`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify({ text }),
  });
  if (!response.ok) {
    reply.remove();
    seeker.remove();
    let error = `${response.status} ${response.statusText}`;
    try { error = (await response.json()).error || error; } catch (_) { /* not JSON */ }
    throw new Error(error);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let failed = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer = parseEvents(buffer + decoder.decode(value, { stream: true }), (event, data) => {
      if (event === "text") bubble.textContent += data.text;
      else if (event === "reply") {
        bubble.textContent = data.text;
        addLinked(seeker, data.linked);
        addCards(reply, data.items);
      } else if (event === "error") failed = data.error;
    });
  }
  reply.classList.remove("pending");
  if (failed) {
    reply.remove();
    throw new Error(failed);
  }
}

function setBusy(busy) {
  state.busy = busy;
  $("send").disabled = busy;
  $("new").disabled = busy;
  $("model").disabled = busy;
}

async function guarded(action) {
  if (state.busy) return;
  setBusy(true);
  status("");
  try { await action(); } catch (error) { status(error.message); } finally { setBusy(false); }
}

async function main() {
  state.models = await api("/models");
  for (const model of state.models) {
    const option = document.createElement("option");
    option.value = model.name;
    option.textContent = `${model.name} (${model.model}, ${model.dataset})`;
    $("model").appendChild(option);
  }
  $("model").addEventListener("change", () => guarded(() => openModel($("model").value)));
  $("new").addEventListener("click", () => guarded(async () => {
    if (state.session) {
      await api(`/sessions/${encodeURIComponent(state.session)}`, { method: "DELETE" })
        .catch(() => null);
    }
    await startSession();
  }));
  const box = $("message");
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = box.value.trim();
    if (!text) return;
    guarded(async () => {
      box.value = "";
      await send(text);
    });
  });
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  await guarded(() => openModel(state.models[0].name));
  box.focus();
}

main().catch((error) => status(error.message));
