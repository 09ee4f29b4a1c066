// The Drover dashboard: plain JavaScript, no dependencies, served from the
// controller binary. Data comes from the REST API with a session token
// (`drover dashboard` prints a link carrying one in the URL fragment); the
// event stream says when to fetch again, so an idle cluster costs nothing.
"use strict";

const $ = (sel) => document.querySelector(sel);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

const ui = {
  token: null,
  me: null,            // GET /api/v1/whoami: { uid, user, operator }
  jobs: [], nodes: [], events: [],
  lastSeq: 0,
  view: "overview",
  sort: { key: "job_id", asc: false },
  detail: null,        // { kind: "job"|"node", id }
  logOffset: 0, logTimer: null,
  refetchAt: 0, refetchTimer: null,
};

// ---- API -------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) { super(body.error || `HTTP ${status}`); this.status = status; this.leader = body.leader; }
}

async function api(method, path, body) {
  const resp = await fetch(path, {
    method,
    headers: { authorization: `Bearer ${ui.token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!resp.ok) {
    let err = {};
    try { err = await resp.json(); } catch (_) { /* not JSON */ }
    throw new ApiError(resp.status, err);
  }
  return resp;
}
const getJson = async (path) => (await api("GET", path)).json();

// ---- sign-in ---------------------------------------------------------

function takeToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    localStorage.setItem("drover-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
  ui.token = localStorage.getItem("drover-token");
}

function showSignIn(message) {
  $("#signin").hidden = false;
  document.querySelectorAll(".view").forEach((v) => (v.hidden = true));
  $("#signin-error").textContent = message || "";
  setStatus("signed out");
}

$("#signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  localStorage.setItem("drover-token", $("#token-input").value.trim());
  start();
});

function setStatus(text) { $("#status").textContent = text; }

function handleError(e) {
  if (e.status === 401) return showSignIn(`The token was refused: ${e.message}`);
  if (e.status === 421 && e.leader) {
    const url = `http://${e.leader}/#token=${encodeURIComponent(ui.token)}`;
    setStatus("");
    $("#status").innerHTML = `this controller follows; <a href="${esc(url)}">open the leader</a>`;
    return;
  }
  setStatus(`error: ${e.message}`);
}

// ---- data ------------------------------------------------------------

const STATES = { PD: "PENDING", R: "RUNNING", S: "SUSPENDED", CG: "COMPLETING", CD: "COMPLETED", F: "FAILED",
  CA: "CANCELLED", TO: "TIMEOUT", NF: "NODE_FAIL", OOM: "OUT_OF_MEMORY", PR: "PREEMPTED", RQ: "REQUEUED" };
const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"]);

// The compact listing (tab-separated, a tenth of the JSON's size and cost):
// id, partition, name, user, state code, start ms, end ms, nodes, node list or reason.
function parseRows(tsv) {
  return tsv.split("\n").slice(1).filter((l) => l).map((line) => {
    const [id, partition, name, user, st, start, end, , where] = line.split("\t");
    const state = STATES[st] || st;
    const num = (v) => (v === "-" ? null : Number(v));
    const [base, task] = id.split("_");
    // A pending array's remaining tasks list as one row (`7_[3-9]`): act on the array.
    const single = task === undefined || /^\d+$/.test(task);
    return {
      id, ref: single ? id : base, partition, name, user, state, job_id: Number(base),
      task: single && task !== undefined ? Number(task) : null,
      start_time: num(start), end_time: num(end), terminal: TERMINAL.has(state),
      nodes: state === "PENDING" ? "" : where, reason: state === "PENDING" ? where : "",
    };
  });
}

async function refetch() {
  try {
    const [jobs, nodes] = await Promise.all([
      api("GET", "/api/v1/jobs?all=true&format=tsv").then((r) => r.text()),
      getJson("/api/v1/nodes"),
    ]);
    ui.jobs = parseRows(jobs);
    ui.nodes = nodes.nodes;
    render();
    setStatus(`live · ${new Date().toLocaleTimeString()}`);
    if (ui.detail) refreshDetail();
  } catch (e) { handleError(e); }
}

// At most one fetch every 2 s, however busy the event stream.
function scheduleRefetch() {
  if (ui.refetchTimer) return;
  const wait = Math.max(0, ui.refetchAt - Date.now());
  ui.refetchTimer = setTimeout(() => {
    ui.refetchTimer = null;
    ui.refetchAt = Date.now() + 2000;
    refetch();
  }, wait);
}

function addEvent(e) {
  if (e.seq <= ui.lastSeq) return;
  ui.lastSeq = e.seq;
  ui.events.push(e);
  if (ui.events.length > 2000) ui.events.splice(0, ui.events.length - 2000);
}

async function follow() {
  try {
    const recent = await getJson("/api/v1/events?after=0");
    recent.events.forEach(addEvent);
  } catch (e) { return handleError(e); }
  // The history is shown now, not when the next event arrives.
  renderEvents();
  renderSparkline();
  const source = new EventSource(`/api/v1/events?token=${encodeURIComponent(ui.token)}&after=${ui.lastSeq}`);
  const onEvent = (msg) => {
    addEvent(JSON.parse(msg.data));
    renderEvents();
    renderSparkline();
    scheduleRefetch();
  };
  // Every kind arrives as a named event; listen to those the feed shows.
  ["JobSubmitted", "JobStarted", "JobFinished", "JobRequeued", "JobHeld", "JobReleased", "ArrayTasksCancelled",
    "NodeRegistered", "NodeStateChanged", "JobKill", "JobSignal", "AllocationRejected", "StaleStep", "Refused",
    "LeaderElected"]
    .forEach((kind) => source.addEventListener(kind, onEvent));
  source.onerror = () => setStatus("event stream interrupted; retrying…");
}

// ---- rendering ---------------------------------------------------------

const ACTIVE = new Set(["RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING"]);

function duration(ms) {
  if (ms == null || ms < 0) return "";
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400); s %= 86400;
  const h = Math.floor(s / 3600); s %= 3600;
  const m = Math.floor(s / 60); s %= 60;
  const hms = `${h ? h + ":" : ""}${h ? String(m).padStart(2, "0") : m}:${String(s).padStart(2, "0")}`;
  return d ? `${d}-${hms}` : hms;
}

function jobTime(j) {
  if (!j.start_time) return 0;
  return (j.end_time || Date.now()) - j.start_time;
}

function render() {
  renderOverview();
  renderJobs();
  renderNodes();
  renderEvents();
}

function pct(a, b) { return b ? Math.min(100, Math.round((100 * a) / b)) : 0; }

function renderOverview() {
  const running = ui.jobs.filter((j) => ACTIVE.has(j.state)).length;
  const pending = ui.jobs.filter((j) => j.state === "PENDING").length;
  const up = ui.nodes.filter((n) => !["DOWN", "FAIL", "UNKNOWN"].includes(n.state)).length;
  const cpus = ui.nodes.reduce((a, n) => a + n.alloc.cpus, 0);
  const total = ui.nodes.reduce((a, n) => a + n.total.cpus, 0);
  $("#count-running").textContent = running;
  $("#count-pending").textContent = pending;
  $("#count-nodes").textContent = `${up}/${ui.nodes.length}`;
  $("#count-cpus").textContent = `${cpus}/${total}`;
  $("#node-grid").innerHTML = ui.nodes.map((n) => `
    <div class="node state-${esc(n.state)}" data-node="${esc(n.name)}">
      <div class="name">${esc(n.name)} <span class="pill ${esc(n.state)}" title="${esc(n.power || "ON")}">${esc(nodeState(n))}</span></div>
      ${n.repair ? `<div class="muted">${esc(n.repair)}</div>` : ""}
      <div class="muted">CPU ${n.alloc.cpus}/${n.total.cpus}</div>
      <div class="bar"><span style="width:${pct(n.alloc.cpus, n.total.cpus)}%"></span></div>
      <div class="muted">Mem ${Math.round(n.alloc.mem_mb / 1024 * 10) / 10}/${Math.round(n.total.mem_mb / 1024 * 10) / 10} G</div>
      <div class="bar mem"><span style="width:${pct(n.alloc.mem_mb, n.total.mem_mb)}%"></span></div>
    </div>`).join("");
  const byState = {};
  ui.jobs.forEach((j) => (byState[j.state] = (byState[j.state] || 0) + 1));
  $("#queue-summary").innerHTML = Object.keys(byState).sort()
    .map((s) => `<span class="pill ${esc(s)}">${esc(s)} ${byState[s]}</span>`).join(" ") || '<span class="muted">no jobs</span>';
  renderSparkline();
}

function renderSparkline() {
  const now = Date.now();
  const buckets = new Array(30).fill(0);
  ui.events.forEach((e) => {
    if (e.kind !== "JobFinished") return;
    const age = Math.floor((now - e.time_ms) / 60000);
    if (age >= 0 && age < 30) buckets[29 - age] += 1;
  });
  const max = Math.max(1, ...buckets);
  const points = buckets.map((v, i) => `${(i * 300) / 29},${38 - (v / max) * 36}`).join(" ");
  $("#sparkline").innerHTML = `<polyline points="${points}"></polyline>`;
}

function visibleJobs() {
  const text = $("#job-filter").value.trim().toLowerCase();
  const mine = $("#job-mine").checked;
  const finished = $("#job-finished").checked;
  const rows = ui.jobs.filter((j) => {
    if (mine && j.user !== ui.me?.user) return false;
    if (!finished && j.terminal) return false;
    if (!text) return true;
    return [j.id, j.name, j.user, j.state, j.partition].some((v) => String(v).toLowerCase().includes(text));
  });
  const { key, asc } = ui.sort;
  const value = (j) => (key === "time" ? jobTime(j) : key === "nodes" ? j.nodes || j.reason
    : key === "job_id" ? j.job_id + (j.task ?? 0) / 1e7 : j[key]);
  rows.sort((a, b) => {
    const x = value(a), y = value(b);
    const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
    return asc ? c : -c;
  });
  return rows;
}

function renderJobs() {
  document.querySelectorAll("#job-table th[data-key]").forEach((th) => {
    th.classList.toggle("sorted", th.dataset.key === ui.sort.key);
    th.classList.toggle("asc", th.dataset.key === ui.sort.key && ui.sort.asc);
  });
  const mayCancel = (j) => !j.terminal && (ui.me?.operator || j.user === ui.me?.user);
  $("#job-table tbody").innerHTML = visibleJobs().slice(0, 1000).map((j) => `
    <tr data-job="${esc(j.ref)}" data-id="${esc(j.id)}">
      <td>${esc(j.id)}</td><td>${esc(j.name)}</td><td>${esc(j.user)}</td><td>${esc(j.partition)}</td>
      <td><span class="pill ${esc(j.state)}">${esc(j.state)}</span></td>
      <td>${duration(jobTime(j))}</td>
      <td>${esc(j.state === "PENDING" ? `(${j.reason})` : j.nodes)}</td>
      <td>${mayCancel(j) ? `<button class="small cancel" data-cancel="${esc(j.ref)}">Cancel</button>` : ""}</td>
    </tr>`).join("");
}

/** A node's state with sinfo's power mark: IDLE~ powered down, IDLE# powering up, IDLE% powering down. */
function nodeState(n) {
  const mark = { POWERED_DOWN: "~", POWERING_UP: "#", POWERING_DOWN: "%" }[n.power] || "";
  return n.state + mark;
}

function renderNodes() {
  $("#node-table tbody").innerHTML = ui.nodes.map((n) => `
    <tr data-node="${esc(n.name)}">
      <td>${esc(n.name)}</td><td><span class="pill ${esc(n.state)}" title="${esc(n.power || "ON")}">${esc(nodeState(n))}</span></td>
      <td>${n.alloc.cpus}/${n.total.cpus}</td><td>${n.alloc.mem_mb}/${n.total.mem_mb} M</td>
      <td>${n.jobs}</td><td>${esc([n.reason, n.repair && `[${n.repair}]`].filter(Boolean).join(" "))}</td>
    </tr>`).join("");
}

function clock(ms) { return new Date(ms).toLocaleTimeString(); }

function renderEvents() {
  $("#event-feed").innerHTML = ui.events.slice(-300).reverse()
    .map((e) => `<li><time>${clock(e.time_ms)}</time><b>${esc(e.kind)}</b> ${esc(e.text)}</li>`).join("");
}

// ---- details -----------------------------------------------------------

function openDetail(kind, id) {
  ui.detail = { kind, id };
  ui.logOffset = 0;
  $("#detail-body").innerHTML = '<p class="muted">loading…</p>';
  $("#detail").showModal();
  refreshDetail();
}

$("#detail").addEventListener("close", () => {
  ui.detail = null;
  clearTimeout(ui.logTimer);
});

async function refreshDetail() {
  const d = ui.detail;
  if (!d) return;
  try {
    if (d.kind === "job") await showJob(d.id);
    else showNode(d.id);
  } catch (e) {
    $("#detail-body").innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
}

function fields(obj) {
  return `<dl>${Object.entries(obj).filter(([, v]) => v !== null && v !== "")
    .map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(typeof v === "object" ? JSON.stringify(v) : v)}</dd>`).join("")}</dl>`;
}

async function showJob(id) {
  const j = await getJson(`/api/v1/jobs/${encodeURIComponent(id)}`);
  const mine = (e) => e.job != null && (e.job === j.job_id || e.job === j.array_job_id);
  const timeline = [["submitted", j.submit_time], ["started", j.start_time], ["ended", j.end_time]]
    .filter(([, t]) => t).map(([text, t]) => ({ t, text }))
    .concat(ui.events.filter(mine).map((e) => ({ t: e.time_ms, text: e.text })))
    .sort((a, b) => a.t - b.t)
    .map((e) => `<li><time>${clock(e.t)}</time> ${esc(e.text)}</li>`);
  const keepLog = $("#job-log") && ui.detail && ui.detail.loaded === id ? $("#job-log").textContent : "";
  $("#detail-body").innerHTML = `
    <h2>Job ${esc(j.id)} · ${esc(j.name)} <span class="pill ${esc(j.state)}">${esc(j.state)}</span></h2>
    <h3>Timeline</h3><ul class="timeline">${timeline.join("")}</ul>
    <h3>Output <span class="muted">${esc(j.stdout)}</span></h3><pre class="log" id="job-log"></pre>
    <h3>Spec</h3>${fields(j)}`;
  $("#job-log").textContent = keepLog;
  if (ui.detail.loaded !== id) {
    ui.detail.loaded = id;
    ui.logOffset = 0;
    tailLog(id);
  }
}

async function tailLog(id) {
  clearTimeout(ui.logTimer);
  if (!ui.detail || ui.detail.id !== id) return;
  let terminal = false;
  try {
    const resp = await api("GET", `/api/v1/jobs/${encodeURIComponent(id)}/output?offset=${ui.logOffset}`);
    const text = await resp.text();
    ui.logOffset = Number(resp.headers.get("x-drover-next-offset") || ui.logOffset);
    terminal = resp.headers.get("x-drover-job-terminal") === "true";
    const log = $("#job-log");
    if (log && text) { log.textContent += text; log.scrollTop = log.scrollHeight; }
  } catch (e) {
    const log = $("#job-log");
    if (log && e.status !== 404) log.textContent = e.message;
  }
  if (!terminal) ui.logTimer = setTimeout(() => tailLog(id), 1000);
}

function showNode(name) {
  const n = ui.nodes.find((x) => x.name === name);
  if (!n) { $("#detail-body").innerHTML = `<p class="error">no node ${esc(name)}</p>`; return; }
  const jobs = ui.jobs.filter((j) => ACTIVE.has(j.state) && (j.nodes || "").split(",").includes(name));
  const drained = ["DRAINING", "DRAINED", "DOWN", "FAIL"].includes(n.state);
  $("#detail-body").innerHTML = `
    <h2>Node ${esc(n.name)} <span class="pill ${esc(n.state)}">${esc(n.state)}</span></h2>
    <p>${drained ? '<button id="node-resume">Resume</button>' : '<button id="node-drain">Drain…</button>'}
       <span class="muted">operators only</span> <span id="node-error" class="error"></span></p>
    ${fields({ ...n, total: `${n.total.cpus} CPUs, ${n.total.mem_mb} MB`, alloc: `${n.alloc.cpus} CPUs, ${n.alloc.mem_mb} MB` })}
    <h3>Running here</h3><ul>${jobs.map((j) => `<li>${esc(j.id)} ${esc(j.name)} (${esc(j.user)})</li>`).join("") || '<li class="muted">none</li>'}</ul>`;
  const act = async (path, body) => {
    try { await api("POST", path, body); await refetch(); }
    catch (e) { $("#node-error").textContent = e.message; }
  };
  $("#node-drain")?.addEventListener("click", () => {
    const reason = prompt(`Drain ${name}: reason?`);
    if (reason) act(`/api/v1/nodes/${encodeURIComponent(name)}/drain`, { reason });
  });
  $("#node-resume")?.addEventListener("click", () => act(`/api/v1/nodes/${encodeURIComponent(name)}/resume`, {}));
}

// ---- wiring ------------------------------------------------------------

function showView(view) {
  ui.view = view;
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.view === view));
  document.querySelectorAll(".view").forEach((v) => (v.hidden = v.id !== `view-${view}`));
}

$("#tabs").addEventListener("click", (e) => { if (e.target.dataset.view) showView(e.target.dataset.view); });
["#job-filter", "#job-mine", "#job-finished"].forEach((s) => $(s).addEventListener("input", renderJobs));
document.querySelector("#job-table thead").addEventListener("click", (e) => {
  const key = e.target.dataset.key;
  if (!key) return;
  ui.sort = { key, asc: ui.sort.key === key ? !ui.sort.asc : true };
  renderJobs();
});
document.body.addEventListener("click", async (e) => {
  const cancel = e.target.closest("[data-cancel]");
  if (cancel) {
    e.stopPropagation();
    try { await api("DELETE", `/api/v1/jobs/${encodeURIComponent(cancel.dataset.cancel)}`); await refetch(); }
    catch (err) { handleError(err); }
    return;
  }
  const job = e.target.closest("[data-job]");
  if (job) return openDetail("job", job.dataset.job);
  const node = e.target.closest("[data-node]");
  if (node) openDetail("node", node.dataset.node);
});

async function start() {
  takeToken();
  if (!ui.token) return showSignIn();
  $("#signin").hidden = true;
  showView(ui.view);
  try { ui.me = await getJson("/api/v1/whoami"); } catch (e) { return handleError(e); }
  await refetch();
  follow();
  // Running times tick without events.
  setInterval(() => { if (ui.view === "jobs") renderJobs(); }, 5000);
}

start();
