// The sagashop dashboard: polls /dashboard/api/stats every second and draws it. Rates are
// counter differences between two answers; every other number is the counter itself, as
// /metrics shows it. Ids arrive as strings (they exceed 2^53) and are never made numbers.
"use strict";

const POLL_MS = 1000;
const HISTORY = 300; // answers kept for the charts (5 minutes)
const TOKEN_KEY = "sagashop.adminToken";
const RECENT = 20; // rows of the recent sagas table

const $ = (id) => document.getElementById(id);
const fmtInt = (v) => (v == null || Number.isNaN(v) ? "–" : Math.round(v).toLocaleString("en-US"));
const fmtRate = (v) => (v == null || Number.isNaN(v) ? "–" : v < 10 ? v.toFixed(1) : Math.round(v).toLocaleString("en-US"));
const fmtMs = (v) => (v == null ? "–" : v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : Math.round(v).toLocaleString("en-US"));
const escape = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

// ---- reading a metrics snapshot ------------------------------------------------------------

function samples(metrics, name) {
  const f = metrics && metrics[name];
  if (!f) return [];
  return f.type === "histogram" ? f.series : f.samples;
}

function matches(labels, want) {
  return Object.entries(want).every(([k, v]) => labels[k] === v);
}

/** Sum of a counter or gauge over the series whose labels include `want`. */
function total(metrics, name, want = {}) {
  let sum = 0;
  let found = false;
  for (const s of samples(metrics, name)) {
    if (matches(s.labels, want)) { sum += s.value; found = true; }
  }
  return found ? sum : null;
}

/** The same sum over `window` seconds back, as a rate per second. */
function rate(name, want = {}, window = 1, pick = (a) => a.totals) {
  if (history.length < 2) return null;
  const last = history[history.length - 1];
  let first = history[Math.max(0, history.length - 1 - window)];
  const dt = (last.at - first.at) / 1000;
  if (dt <= 0) return null;
  const d = (total(pick(last), name, want) ?? 0) - (total(pick(first), name, want) ?? 0);
  return Math.max(0, d) / dt;
}

function labelsKey(labels) {
  return Object.keys(labels).sort().map((k) => `${k}=${labels[k]}`).join(",");
}

// ---- charts --------------------------------------------------------------------------------

const history = []; // {at, totals, nodes: {id: metrics}}

function makeChart(el, series) {
  const opts = {
    width: Math.max(300, el.clientWidth),
    height: 210,
    series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 2, value: (u, v) => fmtRate(v) }))],
    axes: [
      { space: 90, values: (u, vals) => vals.map((v) => new Date(v * 1000).toLocaleTimeString()) },
      { size: 50, values: (u, vals) => vals.map(fmtRate) },
    ],
    scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    legend: { live: true },
  };
  const data = [[], ...series.map(() => [])];
  const chart = new uPlot(opts, data, el);
  new ResizeObserver(() => chart.setSize({ width: Math.max(300, el.clientWidth), height: 210 })).observe(el);
  return { chart, series, points: 0 };
}

const SAGA_SERIES = [
  { label: "started", color: "#3b5bdb", name: "sagashop_sagas_started_total", want: {} },
  { label: "succeeded", color: "#2f9e44", name: "sagashop_sagas_finished_total", want: { outcome: "succeeded" } },
  { label: "rolled back", color: "#e8890c", name: "sagashop_sagas_finished_total", want: { outcome: "rolled_back" } },
  { label: "rollback failed", color: "#d6336c", name: "sagashop_sagas_finished_total", want: { outcome: "rollback_failed" } },
];
const STEP_SERIES = [
  { label: "compensations", color: "#e8890c", name: "sagashop_steps_total", want: { kind: "compensation" } },
  { label: "retries", color: "#7048e8", name: "sagashop_step_retries_total", want: {} },
  { label: "timeouts", color: "#d6336c", name: "sagashop_step_timeouts_total", want: {} },
];
let sagaChart;
let stepChart;

function chartData(c) {
  const xs = [];
  const ys = c.series.map(() => []);
  for (let i = 1; i < history.length; i++) {
    const a = history[i - 1];
    const b = history[i];
    const dt = (b.at - a.at) / 1000;
    if (dt <= 0) continue;
    xs.push(b.at / 1000);
    c.series.forEach((s, j) => {
      const d = (total(b.totals, s.name, s.want) ?? 0) - (total(a.totals, s.name, s.want) ?? 0);
      ys[j].push(Math.max(0, d) / dt);
    });
  }
  c.points = xs.length;
  c.chart.setData([xs, ...ys]);
  c.chart.root.dataset.points = String(xs.length);
}

// ---- panels --------------------------------------------------------------------------------

function renderTiles(stats) {
  const t = stats.totals;
  for (const el of document.querySelectorAll(".tiles [data-metric]")) {
    const want = {};
    if (el.dataset.labels) {
      for (const pair of el.dataset.labels.split(",")) {
        const [k, v] = pair.split("=");
        want[k] = v;
      }
    }
    const value = total(t, el.dataset.metric, want);
    el.textContent = fmtInt(value ?? 0);
  }
  $("t-rate").textContent = fmtRate(rate("sagashop_sagas_finished_total", {}, 5));
  const done = rate("sagashop_sagas_finished_total", {}, 60);
  const comp = (rate("sagashop_sagas_finished_total", { outcome: "rolled_back" }, 60) ?? 0)
    + (rate("sagashop_sagas_finished_total", { outcome: "rollback_failed" }, 60) ?? 0);
  $("t-comp-rate").textContent = done ? `${((100 * comp) / done).toFixed(1)} %` : "–";
}

function renderInFlight(stats) {
  const alive = samples(stats.totals, "sagashop_sagas_alive").filter((s) => s.value > 0);
  const el = $("in-flight");
  if (!alive.length) {
    el.innerHTML = '<p class="muted">no saga in flight</p>';
    return;
  }
  alive.sort((a, b) => b.value - a.value);
  const max = Math.max(...alive.map((s) => s.value));
  el.innerHTML = alive.map((s) => `<div class="bar">
      <span>${escape(s.labels.state ?? labelsKey(s.labels))}</span>
      <span class="track"><span class="fill" style="width:${(100 * s.value) / max}%"></span></span>
      <span class="count" data-metric="sagashop_sagas_alive" data-labels="${escape(labelsKey(s.labels))}">${fmtInt(s.value)}</span>
    </div>`).join("");
}

function latencyOf(list, want) {
  return list.find((l) => matches(l.labels, want) && Object.keys(l.labels).length === Object.keys(want).length);
}

function renderSteps(stats) {
  const t = stats.totals;
  const keys = new Map();
  for (const s of samples(t, "sagashop_steps_total")) keys.set(`${s.labels.step}|${s.labels.kind}`, s.labels);
  for (const l of stats.step_latency) keys.set(`${l.labels.step}|${l.labels.kind}`, l.labels);
  const rows = [...keys.values()].sort((a, b) => (a.kind + a.step).localeCompare(b.kind + b.step));
  const cell = (step, kind, outcome) => {
    const labels = { kind, outcome, step };
    return `<td class="n" data-metric="sagashop_steps_total" data-labels="${escape(labelsKey(labels))}">${fmtInt(total(t, "sagashop_steps_total", labels) ?? 0)}</td>`;
  };
  $("steps").tBodies[0].innerHTML = rows.map(({ step, kind }) => {
    const l = latencyOf(stats.step_latency, { step, kind }) || {};
    return `<tr><td>${escape(step)}</td><td>${escape(kind)}</td>${cell(step, kind, "ok")}${cell(step, kind, "refused")}${cell(step, kind, "failed")}
      <td class="n">${fmtRate(rate("sagashop_steps_total", { step, kind }, 5))}</td>
      <td class="n">${fmtMs(l.p50_ms)}</td><td class="n">${fmtMs(l.p90_ms)}</td><td class="n">${fmtMs(l.p99_ms)}</td></tr>`;
  }).join("") || '<tr><td colspan="9" class="muted">no step has run yet</td></tr>';

  $("saga-latency").tBodies[0].innerHTML = stats.saga_latency.map((l) => `<tr>
      <td class="outcome-${escape(l.labels.outcome)}">${escape(l.labels.outcome ?? "")}</td><td class="n">${fmtInt(l.count)}</td>
      <td class="n">${fmtMs(l.p50_ms)}</td><td class="n">${fmtMs(l.p90_ms)}</td><td class="n">${fmtMs(l.p99_ms)}</td></tr>`).join("")
    || '<tr><td colspan="5" class="muted">no saga has finished yet</td></tr>';
}

function uptime(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
}

function bytes(b) {
  if (b == null) return "–";
  return b > 1 << 30 ? `${(b / (1 << 30)).toFixed(2)} GiB` : `${(b / (1 << 20)).toFixed(1)} MiB`;
}

function nodeRate(id, name, want, window = 5) {
  return rate(name, want, window, (a) => a.nodes[id] || {});
}

function renderNodes(stats) {
  $("nodes").tBodies[0].innerHTML = stats.nodes.map((n) => {
    const m = n.metrics;
    const cpu = nodeRate(n.node_id, "process_cpu_seconds_total", {});
    const ready = n.ready == null ? '<span class="pill warn">unknown</span>' : n.ready ? '<span class="pill ok">ready</span>' : '<span class="pill bad">not ready</span>';
    const queues = samples(m, "sagashop_actor_queue_depth").map((s) => `<span class="pill">${escape(s.labels.actor)} ${fmtInt(s.value)}</span>`).join("") || '<span class="muted">–</span>';
    const batches = samples(m, "sagashop_commit_batch_size").filter((s) => s.count > 0).map((s) => `<span class="pill">${escape(s.labels.actor)} ${(s.sum / s.count).toFixed(1)}</span>`).join("") || '<span class="muted">–</span>';
    return `<tr data-node="${n.node_id}">
      <td><b>${n.node_id}</b>${n.node_id === stats.answered_by ? ' <span class="muted">(this)</span>' : ""}</td>
      <td>${n.roles.map((r) => `<span class="pill">${escape(r)}</span>`).join("")}</td>
      <td>${ready}</td>
      <td class="n">${uptime(n.uptime_seconds)}</td>
      <td class="n">${cpu == null ? "–" : `${(100 * cpu).toFixed(0)} %`}</td>
      <td class="n">${bytes(total(m, "process_resident_memory_bytes"))}</td>
      <td class="n">${fmtInt(total(m, "sagashop_partitions_owned") ?? 0)}</td>
      <td class="n">${fmtInt(total(m, "sagashop_sagas_alive") ?? 0)}</td>
      <td class="wrap">${queues}</td>
      <td class="wrap">${batches}</td></tr>`;
  }).join("");

  renderOwnership(stats);

  const rows = [];
  for (const n of stats.nodes) {
    const m = n.metrics;
    const subjects = new Set(samples(m, "sagashop_bridge_messages_total").map((s) => s.labels.subject));
    for (const subject of [...subjects].sort()) {
      const v = (name, want) => total(m, name, { subject, ...want }) ?? 0;
      // Subjects a node subscribes to but that carried nothing yet stay out of the table.
      const moved = ["sagashop_bridge_messages_total", "sagashop_bridge_redelivered_total",
        "sagashop_bridge_poisoned_total"].some((name) => v(name, {}) > 0);
      if (!moved) continue;
      rows.push(`<tr><td>${n.node_id}</td><td><code>${escape(subject)}</code></td>
        <td class="n">${fmtInt(v("sagashop_bridge_messages_total", { direction: "in" }))}</td>
        <td class="n">${fmtInt(v("sagashop_bridge_messages_total", { direction: "out" }))}</td>
        <td class="n">${fmtRate(nodeRate(n.node_id, "sagashop_bridge_messages_total", { subject, direction: "in" }))}</td>
        <td class="n">${fmtRate(nodeRate(n.node_id, "sagashop_bridge_messages_total", { subject, direction: "out" }))}</td>
        <td class="n">${fmtInt(v("sagashop_bridge_redelivered_total", {}))}</td>
        <td class="n">${fmtInt(v("sagashop_bridge_poisoned_total", {}))}</td></tr>`);
    }
  }
  $("bridge").tBodies[0].innerHTML = rows.join("") || '<tr><td colspan="8" class="muted">no bridge traffic (embedded mode, or nothing sent over NATS yet)</td></tr>';
}

/**
 * Who holds which saga partitions and what fencing caught, per node: partitions owned,
 * handovers by kind, saga writes fenced (a partition lost under the writer), step commands
 * fenced (a participant refused a stale owner) and SSE gap fills. Each cell is its node's
 * own counter, as that node's /metrics shows it.
 */
function renderOwnership(stats) {
  const cell = (m, metric, labels, { sum = false, alarm = false } = {}) => {
    const want = {};
    for (const pair of labels ? labels.split(",") : []) {
      const [k, v] = pair.split("=");
      want[k] = v;
    }
    const value = total(m, metric, want) ?? 0;
    const cls = alarm && value > 0 ? "n warn" : "n";
    return `<td class="${cls}" data-metric="${metric}" data-labels="${escape(labels)}"${sum ? ' data-sum="1"' : ""}>${fmtInt(value)}</td>`;
  };
  $("ownership").tBodies[0].innerHTML = stats.nodes.map((n) => {
    const m = n.metrics;
    return `<tr data-node="${n.node_id}"><td><b>${n.node_id}</b></td>
      ${cell(m, "sagashop_partitions_owned", "")}
      ${cell(m, "sagashop_partition_handovers_total", "kind=claimed")}
      ${cell(m, "sagashop_partition_handovers_total", "kind=released")}
      ${cell(m, "sagashop_partition_handovers_total", "kind=lost", { alarm: true })}
      ${cell(m, "sagashop_saga_writes_fenced_total", "", { alarm: true })}
      ${cell(m, "sagashop_step_commands_fenced_total", "", { sum: true, alarm: true })}
      ${cell(m, "sagashop_sse_gap_fills_total", "")}
      ${cell(m, "sagashop_sse_gap_filled_events_total", "")}</tr>`;
  }).join("");
}

// ---- polling -------------------------------------------------------------------------------

let stats = null;

async function poll() {
  try {
    const response = await fetch("/dashboard/api/stats", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    stats = await response.json();
    const nodes = {};
    for (const n of stats.nodes) nodes[n.node_id] = n.metrics;
    history.push({ at: stats.at_ms, totals: stats.totals, nodes });
    if (history.length > HISTORY) history.shift();
    render(stats);
    const live = $("live");
    live.textContent = `updated ${new Date(stats.at_ms).toLocaleTimeString()}`;
    live.className = "live ok";
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  } catch (e) {
    const live = $("live");
    live.textContent = `no answer (${e.message})`;
    live.className = "live stale";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

function render(s) {
  const nodes = s.nodes.length;
  $("where").textContent = s.cluster
    ? `cluster ${s.cluster} · ${nodes} node${nodes === 1 ? "" : "s"} · page served by node ${s.answered_by}`
    : `embedded · node ${s.answered_by}`;
  renderTiles(s);
  renderInFlight(s);
  renderSteps(s);
  renderNodes(s);
  chartData(sagaChart);
  chartData(stepChart);
  renderAdmin(s);
}

// ---- admin view ----------------------------------------------------------------------------

let adminShown = false;
let sagasTimer = null;
let picked = null;

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function adminFetch(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token()}` }, cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    adminShown = false;
    $("admin-error").textContent = body.msg || "wrong admin token";
    renderAdmin(stats);
    throw new Error("unauthorized");
  }
  if (!response.ok) throw new Error(body.msg || `HTTP ${response.status}`);
  return body;
}

function renderAdmin(s) {
  if (!s) return;
  $("admin-off").hidden = s.admin_enabled;
  const open = s.admin_enabled && token() != null;
  $("admin-login").hidden = !s.admin_enabled || open;
  $("admin-view").hidden = !open;
  if (open && !adminShown) {
    adminShown = true;
    loadSagas();
    if (location.hash.startsWith("#saga=")) showSaga(location.hash.slice(6));
  }
  if (!open && sagasTimer) {
    clearTimeout(sagasTimer);
    sagasTimer = null;
  }
}

async function loadSagas() {
  clearTimeout(sagasTimer);
  try {
    const outcome = $("outcome").value;
    const list = await adminFetch(`/dashboard/api/sagas?limit=${RECENT}&outcome=${encodeURIComponent(outcome)}`);
    $("sagas").tBodies[0].innerHTML = list.sagas.map((r) => `<tr class="${r.purchase_id === picked ? "picked" : ""}" data-id="${escape(r.purchase_id)}">
        <td><a href="#saga=${escape(r.purchase_id)}" class="id">${escape(r.purchase_id)}</a></td>
        <td class="id">${escape(r.customer_id)}</td>
        <td class="outcome-${escape(r.outcome)}">${escape(r.outcome.replace("_", " "))}</td>
        <td>${escape(r.state)}</td>
        <td class="n">${fmtInt(r.amount)} ${escape(r.currency_code)}</td>
        <td class="n">${r.duration_ms == null ? "–" : fmtInt(r.duration_ms)}</td>
        <td>${new Date(r.created_at_ms).toLocaleTimeString()}</td></tr>`).join("")
      || `<tr><td colspan="7" class="muted">no saga of this outcome among the newest ${fmtInt(list.window)}</td></tr>`;
  } catch (e) {
    if (e.message === "unauthorized") return;
    $("sagas").tBodies[0].innerHTML = `<tr><td colspan="7" class="error">${escape(e.message)}</td></tr>`;
  }
  if (adminShown) sagasTimer = setTimeout(loadSagas, 2000);
}

async function showSaga(id) {
  picked = id;
  for (const tr of $("sagas").tBodies[0].rows) tr.classList.toggle("picked", tr.dataset.id === id);
  const el = $("saga-detail");
  try {
    const d = await adminFetch(`/dashboard/api/sagas/${encodeURIComponent(id)}`);
    const field = (k, v) => `<dt>${k}</dt><dd>${v}</dd>`;
    el.innerHTML = `<h3>Saga <span class="id" id="detail-id">${escape(d.purchase_id)}</span></h3>
      <dl>
        ${field("outcome", `<span class="outcome-${escape(d.outcome)}">${escape(d.outcome.replace("_", " "))}</span> (${escape(d.status)})`)}
        ${field("state", escape(d.state ?? "–"))}
        ${d.quarantine ? field("quarantined", escape(d.quarantine)) : ""}
        ${field("customer", `<span class="id">${escape(d.customer_id)}</span>`)}
        ${field("attempts", `${d.attempts}${d.retry_since_ms ? ` since ${new Date(d.retry_since_ms).toLocaleTimeString()}` : ""}`)}
        ${field("owner", `partition ${d.partition}${d.owner_node == null ? "" : `, node ${d.owner_node} (epoch ${d.owner_epoch})`}`)}
        ${field("version", d.version)}
        ${field("amount", `${fmtInt(d.amount)} ${escape(d.currency_code)}`)}
        ${field("items", d.items.map((i) => `<span class="id">${escape(i.product_id)}</span> × ${i.amount}`).join("<br>"))}
      </dl>
      <table id="detail-steps"><thead><tr><th>#</th><th>step</th><th>status</th><th>time</th></tr></thead><tbody>
      ${d.steps.map((s, i) => `<tr><td>${i + 1}</td><td>${escape(s.step)}</td><td>${escape(s.status)}</td><td>${new Date(s.timestamp * 1000).toLocaleTimeString([], { hour12: false })}</td></tr>`).join("")}
      </tbody></table>`;
  } catch (e) {
    if (e.message !== "unauthorized") el.innerHTML = `<p class="error">${escape(e.message)}</p>`;
  }
}

// ---- start ---------------------------------------------------------------------------------

$("admin-login").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("admin-token").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("admin-token").value = "";
  $("admin-error").textContent = "";
  renderAdmin(stats);
});
$("admin-logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  adminShown = false;
  renderAdmin(stats);
});
$("outcome").addEventListener("change", loadSagas);
window.addEventListener("hashchange", () => {
  if (location.hash.startsWith("#saga=") && token()) showSaga(location.hash.slice(6));
});

sagaChart = makeChart($("chart-sagas"), SAGA_SERIES);
stepChart = makeChart($("chart-steps"), STEP_SERIES);
poll();
