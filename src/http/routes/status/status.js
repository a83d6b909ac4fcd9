// The status page: one WebSocket to /status/stream, a history of the last few minutes, and
// small SVG line charts. No dependencies: a handful of polylines does not need a library.
"use strict";

const HISTORY = 300; // points kept: five minutes at the stream's one-second interval
const SVG = "http://www.w3.org/2000/svg";
const history = [];

const charts = [
  { id: "chart-rps", series: [(m) => m.requests_per_second] },
  { id: "chart-errors", series: [errorRate] },
  { id: "chart-latency", series: [(m) => m.interval_latency_p50_us / 1000, (m) => m.interval_latency_p99_us / 1000] },
  { id: "chart-pool", series: [(m) => m.busy_workers, (m) => m.queue_depth] },
  { id: "chart-jobs", series: [(m) => m.jobs_per_second, (m) => m.jobs?.queued], when: (m) => m.jobs },
  { id: "chart-admission", series: [(m) => admission(m, "intensive").limit, (m) => admission(m, "intensive").in_flight] },
  { id: "chart-refusals", series: ["fast", "intensive", "job_execution"].map((c) => (m) => refused(admission(m, c))) },
];

// Jobs succeeded per second, from the running total of this message and the one before.
function jobsRate(m, before) {
  if (!m.jobs || !before?.jobs || m.timestamp <= before.timestamp) return 0;
  return Math.max(0, m.jobs.succeeded_total - before.jobs.succeeded_total) / (m.timestamp - before.timestamp);
}

function showJobs(j) {
  document.getElementById("jobs").hidden = !j;
  if (!j) return;
  text("jobs-queued", number(j.queued, 0));
  text("jobs-scheduled", number(j.scheduled, 0));
  text("jobs-running", number(j.running, 0));
  text("jobs-age", number(j.oldest_queued_age_seconds, 1) + " s");
  const list = document.getElementById("jobs-discards");
  const items = j.recent_discards.map((d) => {
    const li = document.createElement("li");
    const id = document.createElement("code");
    id.textContent = d.id;
    li.append(id, ` at ${new Date(d.finished_at).toLocaleTimeString()}: ${d.error ?? "no error recorded"}`);
    return li;
  });
  if (items.length === 0) {
    const none = document.createElement("li");
    none.className = "muted";
    none.textContent = "none";
    items.push(none);
  }
  list.replaceChildren(...items);
}

// A class of the adaptive limits; empty when they are off (the stream then has no `admission`).
function admission(m, name) {
  return (m.admission && m.admission[name]) || {};
}

function refused(c) {
  return (c.refused_at_limit_per_second || 0) + (c.refused_for_priority_per_second || 0);
}

function errorRate(m) {
  return m.requests_per_second > 0 ? (100 * m.errors_per_second) / m.requests_per_second : 0;
}

function number(v, digits) {
  if (!Number.isFinite(v)) return "–";
  return v.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

function latency(us) {
  return us >= 1000 ? number(us / 1000, 1) + " ms" : number(us, 0) + " µs";
}

function text(id, value) {
  document.getElementById(id).textContent = value;
}

function show(m) {
  text("rps", number(m.requests_per_second, 1));
  text("error-rate", number(errorRate(m), 2) + " %");
  text("rejected", number(m.rejected_per_second, 1));
  text("p50", latency(m.interval_latency_p50_us));
  text("p99", latency(m.interval_latency_p99_us));
  text("active", number(m.active_requests, 0));
  text("workers", `${m.busy_workers} / ${m.worker_count}`);
  text("queue", `${m.queue_depth} / ${m.queue_capacity}`);
  const intensive = admission(m, "intensive");
  text("admission", m.admission ? `${intensive.in_flight} / ${number(intensive.limit, 0)}` : "off");
  text("totals", `${number(m.total_requests, 0)} requests, ${number(m.success_rate, 2)} % succeeded, ${number(m.rejected_count, 0)} refused`);
  text("updated", "updated " + new Date(m.timestamp * 1000).toLocaleTimeString());
  showJobs(m.jobs);
  for (const chart of charts) if (!chart.when || chart.when(m)) draw(chart);
}

function draw(chart) {
  const svg = document.getElementById(chart.id);
  const values = chart.series.map((f) => history.map(f));
  const max = Math.max(1, ...values.flat().filter(Number.isFinite)) * 1.1;
  // The x axis spans at least a minute, so the first points already draw a line.
  const span = Math.min(HISTORY, Math.max(60, history.length));
  const step = 300 / (span - 1);
  const offset = span - history.length;
  svg.replaceChildren();
  for (const y of [25, 50, 75]) {
    const line = document.createElementNS(SVG, "line");
    line.setAttribute("class", "grid");
    line.setAttribute("x1", "0");
    line.setAttribute("x2", "300");
    line.setAttribute("y1", String(y));
    line.setAttribute("y2", String(y));
    svg.append(line);
  }
  values.forEach((series, s) => {
    const points = series.map((v, i) => `${((offset + i) * step).toFixed(1)},${(100 - (100 * (Number.isFinite(v) ? v : 0)) / max).toFixed(1)}`);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", `series s${s}`);
    line.setAttribute("points", points.join(" "));
    svg.append(line);
  });
  svg.dataset.points = String(history.length);
  svg.dataset.max = (max / 1.1).toPrecision(3);
  const caption = svg.parentElement.querySelector("figcaption");
  let scale = caption.querySelector(".scale");
  if (!scale) {
    scale = document.createElement("span");
    scale.className = "scale";
    caption.append(scale);
  }
  scale.textContent = `max ${number(max / 1.1, 2)}`;
  svg.dataset.label ||= svg.getAttribute("aria-label");
  svg.setAttribute("aria-label", `${svg.dataset.label} (max ${svg.dataset.max})`);
}

function state(name, label) {
  const el = document.getElementById("state");
  el.dataset.state = name;
  el.textContent = label;
}

let retry = 500;

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/status/stream?interval=1s`);
  socket.onopen = () => {
    retry = 500;
    state("live", "live");
  };
  socket.onmessage = (event) => {
    let m;
    try {
      m = JSON.parse(event.data);
    } catch {
      return;
    }
    m.jobs_per_second = jobsRate(m, history[history.length - 1]);
    history.push(m);
    if (history.length > HISTORY) history.shift();
    show(m);
  };
  socket.onclose = (event) => {
    state("disconnected", event.code === 1001 ? "the service is restarting" : "disconnected, retrying");
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  };
}

connect();
