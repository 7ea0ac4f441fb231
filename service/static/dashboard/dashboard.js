// The operator's dashboard: reads /v1/admin/models, /v1/admin/periods (with the admin
// token, kept in this tab's session storage only) and /metrics, and draws them.
// Everything it loads comes from the service itself. The pure functions at the top
// are exported for the tests when run under Node.
"use strict";

const TOKEN_KEY = "smlrec-admin-token";
const REFRESH_MS = 10000;

// Prometheus text -> {"name{labels}": value}
function parseMetrics(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const cut = line.lastIndexOf(" ");
    const value = Number(line.slice(cut + 1));
    if (cut > 0 && !Number.isNaN(value)) out[line.slice(0, cut)] = value;
  }
  return out;
}

// Sum of every sample of one metric, whatever its labels.
function sumOf(metrics, name) {
  let total = 0;
  for (const [key, value] of Object.entries(metrics)) {
    if (key === name || key.startsWith(name + "{")) total += value;
  }
  return total;
}

function formatAge(seconds) {
  if (!(seconds > 0)) return "-";
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} days`;
}

// The versions that have been scored, in the order of the period they were scored on.
function evaluatedPoints(models) {
  return models
    .filter((m) => m.metrics && m.metrics["recall@20"] !== undefined)
    .map((m) => ({
      version: m.version,
      period: m.metrics.evaluated_on_period,
      recall: m.metrics["recall@20"],
      ndcg: m.metrics["ndcg@20"],
    }))
    .sort((a, b) => a.period - b.period || a.version - b.version);
}

function escapeXml(value) {
  return String(value).replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// An SVG line chart of recall@20 and ndcg@20 per evaluated version (x: the order of
// evaluation, labelled by version and period; y: 0 to the largest value).
function chartSvg(points, width = 720, height = 260) {
  if (points.length === 0) {
    return '<p class="empty">No version has been scored yet: a version is scored ' +
      "when the period after its own closes.</p>";
  }
  const left = 40, right = 10, top = 10, bottom = 40;
  const top_value = Math.max(...points.map((p) => Math.max(p.recall, p.ndcg || 0)), 0.01);
  const x = (i) => left + (points.length === 1 ? (width - left - right) / 2
    : (i * (width - left - right)) / (points.length - 1));
  const y = (v) => top + (1 - v / top_value) * (height - top - bottom);
  const line = (key) => points.map((p, i) => `${x(i).toFixed(1)},${y(p[key] || 0).toFixed(1)}`)
    .join(" ");
  const parts = [
    `<svg width="${width}" height="${height}" ` +
      `role="img" aria-label="recall@20 and ndcg@20 per version">`,
    `<line class="axis" x1="${left}" y1="${y(0)}" x2="${width - right}" y2="${y(0)}"/>`,
    `<line class="axis" x1="${left}" y1="${top}" x2="${left}" y2="${y(0)}"/>`,
    `<text x="2" y="${top + 4}">${top_value.toFixed(2)}</text>`,
    `<text x="2" y="${y(0)}">0</text>`,
    `<polyline class="recall" points="${line("recall")}"/>`,
    `<polyline class="ndcg" points="${line("ndcg")}"/>`,
  ];
  points.forEach((p, i) => {
    parts.push(`<circle class="recall" cx="${x(i).toFixed(1)}" cy="${y(p.recall).toFixed(1)}" ` +
      `r="3" data-version="${p.version}"><title>version ${p.version} on period ${p.period}: ` +
      `recall@20 ${p.recall.toFixed(4)}, ndcg@20 ${(p.ndcg || 0).toFixed(4)}</title></circle>`);
    parts.push(`<text x="${x(i).toFixed(1)}" y="${height - bottom + 16}" ` +
      `text-anchor="middle">v${escapeXml(p.version)}</text>`);
  });
  parts.push(`<text x="${width - 170}" y="${height - 4}">— recall@20</text>`);
  parts.push(`<text x="${width - 80}" y="${height - 4}" fill="#d2691e">— ndcg@20</text>`);
  parts.push("</svg>");
  return parts.join("");
}

// Per strategy: versions trained and the mean recall@20 of those scored.
function strategySummary(models) {
  const by = {};
  for (const m of models) {
    const s = (by[m.strategy] = by[m.strategy] || { versions: 0, scored: 0, recall: 0 });
    s.versions += 1;
    if (m.metrics && m.metrics["recall@20"] !== undefined) {
      s.scored += 1;
      s.recall += m.metrics["recall@20"];
    }
  }
  return Object.entries(by).map(([name, s]) => ({
    name, versions: s.versions, scored: s.scored,
    meanRecall: s.scored ? s.recall / s.scored : null,
  }));
}

if (typeof module !== "undefined") {
  module.exports = { parseMetrics, sumOf, formatAge, evaluatedPoints, chartSvg,
                     strategySummary, escapeXml };
}

// ---- the page ------------------------------------------------------------------

if (typeof document !== "undefined") {
  const $ = (id) => document.getElementById(id);
  let timer = null;
  let lastRequests = null;

  const say = (text, error = false) => {
    $("status").textContent = text;
    $("status").className = error ? "error" : "";
  };

  const cell = (row, text) => {
    const td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
  };

  async function getJson(path, token) {
    const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
    if (response.status === 401 || response.status === 403) throw new Error("token refused");
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  function fill(models, periods, metrics, elapsed) {
    const active = models.find((m) => m.active);
    $("active").textContent = active ? `version ${active.version} (${active.strategy}, ` +
      `period ${active.period_id})` : "no model yet";
    $("age").textContent = formatAge(metrics["smlrec_model_age_seconds"]);
    const requests = sumOf(metrics, "smlrec_http_requests_total");
    const rate = lastRequests !== null && elapsed > 0 ? (requests - lastRequests) / elapsed : null;
    lastRequests = requests;
    $("traffic").textContent = `${requests} requests` +
      (rate !== null ? `, ${rate.toFixed(1)}/s` : "");
    const failed = periods.filter((p) => p.status === "failed").map((p) => p.period_id);
    $("failed").textContent = failed.length ? `periods ${failed.join(", ")}` : "none";
    $("chart").innerHTML = chartSvg(evaluatedPoints(models));
    $("strategies").textContent = strategySummary(models).map((s) =>
      `${s.name}: ${s.versions} versions, ${s.scored} scored` +
      (s.meanRecall !== null ? `, mean recall@20 ${s.meanRecall.toFixed(4)}` : ""))
      .join(" · ") || "-";
    const versions = $("versions").tBodies[0];
    versions.replaceChildren();
    for (const m of models) {
      const row = versions.insertRow();
      if (m.active) row.className = "active";
      cell(row, m.version);
      cell(row, m.period_id);
      cell(row, m.strategy);
      cell(row, new Date(m.created_at * 1000).toLocaleString());
      cell(row, m.train_seconds.toFixed(2));
      cell(row, m.metrics ? m.metrics["recall@20"].toFixed(4) : "-");
      cell(row, m.metrics ? m.metrics["ndcg@20"].toFixed(4) : "-");
      cell(row, m.active ? "serving" : m.artifact_removed ? "file removed" : "");
    }
    const table = $("periods").tBodies[0];
    table.replaceChildren();
    for (const p of periods.slice().reverse()) {
      const row = table.insertRow();
      if (p.status === "failed") row.className = "failed";
      cell(row, p.period_id);
      cell(row, p.status);
      cell(row, p.n_interactions);
      cell(row, p.n_dropped || 0);
    }
  }

  let lastAt = null;
  async function refresh() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) return;
    try {
      const [models, periods, text] = await Promise.all([
        getJson("/v1/admin/models", token),
        getJson("/v1/admin/periods", token),
        fetch("/metrics").then((r) => r.text()),
      ]);
      const now = Date.now();
      fill(models.models, periods.periods, parseMetrics(text),
           lastAt === null ? 0 : (now - lastAt) / 1000);
      lastAt = now;
      $("content").hidden = false;
      say(`updated ${new Date(now).toLocaleTimeString()}`);
    } catch (error) {
      say(String(error.message || error), true);
      if (String(error.message) === "token refused") sessionStorage.removeItem(TOKEN_KEY);
    }
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    refresh();
    clearInterval(timer);
    timer = setInterval(refresh, REFRESH_MS);
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    clearInterval(timer);
    $("content").hidden = true;
    say("token forgotten");
  });
  if (sessionStorage.getItem(TOKEN_KEY)) {
    refresh();
    timer = setInterval(refresh, REFRESH_MS);
  }
}
