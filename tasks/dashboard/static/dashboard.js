// faspq dashboard: rows from /api/events (server-sent events), controls posted as JSON, a rate chart on a canvas.
// Everything from the server is shown as text (textContent), never parsed as HTML.
"use strict";

const rows = new Map(); // transfer id -> latest row
let selected = null;
let points = []; // [time s, kbps] of the selected transfer

function bytes(n) {
  if (n == null) return "?";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function cell(tr, cls, text) {
  const td = document.createElement("td");
  td.className = cls;
  td.textContent = text;
  tr.appendChild(td);
  return td;
}

function progressCell(tr, row) {
  const td = cell(tr, "progress", "");
  const bar = document.createElement("span");
  bar.className = "bar";
  const fill = document.createElement("span");
  fill.style.width = row.total ? `${Math.min(100, (100 * row.bytes) / row.total)}%` : "0";
  bar.appendChild(fill);
  td.appendChild(bar);
  const label = document.createElement("span");
  label.className = "bytes";
  label.dataset.bytes = String(row.bytes);
  label.textContent = `${bytes(row.bytes)} / ${bytes(row.total)}`;
  td.appendChild(label);
}

function controls(tr, row) {
  const td = cell(tr, "controls", "");
  const input = document.createElement("input");
  input.type = "number";
  input.min = "1";
  input.placeholder = "kbps";
  input.className = "rate-input";
  const setRate = document.createElement("button");
  setRate.className = "set-rate";
  setRate.textContent = "Set rate";
  setRate.addEventListener("click", (e) => {
    e.stopPropagation();
    const kbps = parseInt(input.value, 10);
    if (kbps > 0) post(row.id, "rate", { kbps });
  });
  const cancel = document.createElement("button");
  cancel.className = "cancel";
  cancel.textContent = "Cancel";
  cancel.addEventListener("click", (e) => { e.stopPropagation(); post(row.id, "cancel", {}); });
  for (const el of [input, setRate, cancel]) {
    el.addEventListener("click", (e) => e.stopPropagation());
    td.appendChild(el);
  }
}

function activeRow(row) {
  const tr = document.createElement("tr");
  cell(tr, "id", row.id);
  cell(tr, "type", row.type);
  cell(tr, "state", row.state);
  progressCell(tr, row);
  cell(tr, "rate", `${row.rate_kbps || 0} kbps`);
  cell(tr, "eta", row.eta_s == null ? "" : `${Math.round(row.eta_s)} s`);
  cell(tr, "owner", row.owner || "-");
  cell(tr, "host", row.host || "-");
  controls(tr, row);
  return tr;
}

function endedRow(row) {
  const tr = document.createElement("tr");
  const result = row.result || {};
  cell(tr, "id", row.id);
  cell(tr, "type", row.type);
  const outcome = result.ok ? "ok" : `${row.state} ${result.code ?? ""} ${result.error ?? ""}`.trim();
  cell(tr, `result ${result.ok ? "ok" : "failed"}`, outcome).title = result.reason || "";
  cell(tr, "bytes", bytes(row.bytes));
  cell(tr, "attempts", String(result.attempts ?? row.attempt));
  cell(tr, "owner", row.owner || "-");
  cell(tr, "host", row.host || "-");
  cell(tr, "ended", row.updated ? new Date(row.updated * 1000).toLocaleString() : "");
  return tr;
}

// Put rows in a table body in order without taking out a row that stays: a focused element taken out of the
// document loses the focus, and with it what the user was about to type.
function place(tbody, trs) {
  const staying = new Set(trs); // (every feed event redraws: the ended list only grows)
  for (const child of [...tbody.children]) if (!staying.has(child)) child.remove();
  trs.forEach((tr, i) => { if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null); });
}

function render() {
  // keep what the user is typing: a running transfer's row whose rate box has focus is left as it is
  const typing = document.activeElement && document.activeElement.closest("#active tr[data-id]");
  const keep = typing ? typing.dataset.id : null;
  const list = [...rows.values()].sort((a, b) => b.created - a.created);
  const fresh = { active: [], ended: [] };
  for (const row of list) {
    const done = row.result != null;
    if (row.id === keep && !done) {
      fresh.active.push(typing);
      continue;
    }
    const tr = done ? endedRow(row) : activeRow(row);
    tr.id = `row-${row.id}`;
    tr.dataset.id = row.id;
    if (row.id === selected) tr.classList.add("selected");
    tr.addEventListener("click", () => select(row.id));
    (done ? fresh.ended : fresh.active).push(tr);
  }
  place(document.querySelector("#active tbody"), fresh.active);
  place(document.querySelector("#ended tbody"), fresh.ended);
}

function take(row) {
  const before = rows.get(row.id);
  if (!row.stats && before) { // its latest event was no engine event: the numbers stand
    for (const key of ["bytes", "total", "rate_kbps", "eta_s"]) row[key] = before[key];
  }
  rows.set(row.id, row);
  if (row.id === selected && row.stats && row.result == null) {
    points.push([row.updated, row.rate_kbps || 0]);
    draw();
  }
}

function draw() {
  const canvas = document.getElementById("chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, left = 60, bottom = 24, top = 10;
  ctx.clearRect(0, 0, w, h);
  canvas.dataset.points = String(points.length);
  ctx.strokeStyle = "#8a96a3";
  ctx.strokeRect(left, top, w - left - 10, h - top - bottom);
  if (points.length === 0) return;
  const t0 = points[0][0], t1 = Math.max(points[points.length - 1][0], t0 + 1);
  const peak = Math.max(1, ...points.map((p) => p[1])) * 1.1;
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (w - left - 10);
  const y = (v) => h - bottom - (v / peak) * (h - top - bottom);
  ctx.fillStyle = "#1d2630";
  ctx.font = "12px system-ui";
  ctx.fillText(`${Math.round(peak)} kbps`, 2, top + 10);
  ctx.fillText("0", left - 14, h - bottom);
  ctx.fillText(`${Math.round(t1 - t0)} s`, w - 40, h - 6);
  ctx.strokeStyle = "#2f7de1";
  ctx.lineWidth = 2;
  ctx.beginPath();
  points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
  ctx.stroke();
}

async function select(id) {
  selected = id;
  document.getElementById("chart-title").textContent = id;
  points = [];
  render();
  const reply = await fetch(`/api/transfers/${encodeURIComponent(id)}/rate`);
  if (reply.ok && selected === id) {
    const history = (await reply.json()).points.map(([t, kbps]) => [t, kbps]);
    points = history.concat(points.filter((p) => p[0] > (history.length ? history[history.length - 1][0] : 0)));
    draw();
  }
}

async function post(id, what, body) {
  const message = document.getElementById("message");
  const reply = await fetch(`/api/transfers/${encodeURIComponent(id)}/${what}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  message.textContent = reply.ok ? "" : `${what} of ${id}: ${await reply.text()}`;
  if (document.activeElement) document.activeElement.blur(); // its row follows the feed again
}

function connect() {
  const link = document.getElementById("link");
  const source = new EventSource("/api/events");
  source.onopen = () => { link.textContent = "live"; link.className = "link up"; };
  source.onerror = () => { link.textContent = "reconnecting…"; link.className = "link down"; };
  source.onmessage = (e) => {
    const message = JSON.parse(e.data);
    if (message.type === "snapshot") rows.clear();
    message.rows.forEach(take);
    render();
  };
}

connect();
draw();
