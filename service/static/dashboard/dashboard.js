// The operator's dashboard: reads /v1/admin/models, /v1/admin/periods and
// /v1/admin/strategies (with the admin token, kept in this tab's session storage
// only) and /metrics, and draws them.
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
      strategy: m.strategy,
      period: m.metrics.evaluated_on_period,
      recall: m.metrics["recall@20"],
      ndcg: m.metrics["ndcg@20"],
    }))
    .sort((a, b) => a.period - b.period || a.version - b.version);
}

function escapeXml(value) {
  return String(value).replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const COLOURS = ["#1f5fbf", "#2e8b57", "#8b3fbf", "#b8860b", "#c0392b", "#555555"];

// An SVG chart of recall@20 (solid) and ndcg@20 (dashed) per evaluated period, one
// colour per strategy (x: the period each version was scored on; y: 0 to the
// largest value); each point is a version, named in its tooltip.
function chartSvg(points, width = 720, height = 260) {
  if (points.length === 0) {
    return '<p class="empty">No version has been scored yet: a version is scored ' +
      "when the period after its own closes.</p>";
  }
  const left = 40, right = 10, top = 10, bottom = 40;
  const periods = [...new Set(points.map((p) => p.period))].sort((a, b) => a - b);
  const strategies = [...new Set(points.map((p) => p.strategy))];
  const topValue = Math.max(...points.map((p) => Math.max(p.recall, p.ndcg || 0)), 0.01);
  const x = (period) => {
    const i = periods.indexOf(period);
    return left + (periods.length === 1 ? (width - left - right) / 2
      : (i * (width - left - right)) / (periods.length - 1));
  };
  const y = (v) => top + (1 - v / topValue) * (height - top - bottom);
  const parts = [
    `<svg width="${width}" height="${height}" ` +
      `role="img" aria-label="recall@20 and ndcg@20 per period and strategy">`,
    `<line class="axis" x1="${left}" y1="${y(0)}" x2="${width - right}" y2="${y(0)}"/>`,
    `<line class="axis" x1="${left}" y1="${top}" x2="${left}" y2="${y(0)}"/>`,
    `<text x="2" y="${top + 4}">${topValue.toFixed(2)}</text>`,
    `<text x="2" y="${y(0)}">0</text>`,
  ];
  for (const period of periods) {
    parts.push(`<text x="${x(period).toFixed(1)}" y="${height - bottom + 16}" ` +
      `text-anchor="middle">p${escapeXml(period)}</text>`);
  }
  strategies.forEach((strategy, n) => {
    const colour = COLOURS[n % COLOURS.length];
    const own = points.filter((p) => p.strategy === strategy);
    const line = (key) => own.map((p) => `${x(p.period).toFixed(1)},${y(p[key] || 0).toFixed(1)}`)
      .join(" ");
    const name = escapeXml(strategy);
    parts.push(`<polyline class="recall" data-strategy="${name}" stroke="${colour}" ` +
      `points="${line("recall")}"/>`);
    parts.push(`<polyline class="ndcg" data-strategy="${name}" stroke="${colour}" ` +
      `points="${line("ndcg")}"/>`);
    for (const p of own) {
      parts.push(`<circle class="recall" cx="${x(p.period).toFixed(1)}" ` +
        `cy="${y(p.recall).toFixed(1)}" r="3" stroke="${colour}" data-version="${p.version}" ` +
        `data-strategy="${name}"><title>version ${p.version} (${name}) on period ${p.period}: ` +
        `recall@20 ${p.recall.toFixed(4)}, ndcg@20 ${(p.ndcg || 0).toFixed(4)}</title></circle>`);
    }
    parts.push(`<text x="${left + 10 + n * 110}" y="${height - 4}" fill="${colour}">` +
      `■ ${name}</text>`);
  });
  parts.push(`<text x="${width - 190}" y="${height - 4}">solid recall@20, dashed ndcg@20</text>`);
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

// GET /v1/admin/strategies -> the strategies side by side: one column per strategy
// (the serving one first), one row per scored period (newest first) with each
// strategy's recall@20 and ndcg@20 there and the period's best recall@20 marked, and
// per strategy the periods it won and its mean recall@20 over the periods shown.
function strategyTable(overview) {
  const names = [overview.serving, ...overview.challengers];
  for (const p of overview.periods) {
    for (const name of Object.keys(p.scores)) if (!names.includes(name)) names.push(name);
  }
  const totals = names.map(() => ({ wins: 0, sum: 0, n: 0 }));
  const rows = overview.periods.map((p) => {
    const recalls = names.map((n) => (p.scores[n] ? p.scores[n]["recall@20"] : null));
    const best = Math.max(...recalls.filter((r) => r !== null));
    const cells = names.map((name, i) => {
      const score = p.scores[name];
      if (!score) return null;
      totals[i].sum += score["recall@20"];
      totals[i].n += 1;
      if (recalls[i] === best) totals[i].wins += 1;
      return { recall: score["recall@20"], ndcg: score["ndcg@20"], best: recalls[i] === best };
    });
    return { period: p.period_id, cells };
  });
  const summary = names.map((name, i) => ({
    name, serving: name === overview.serving, wins: totals[i].wins,
    meanRecall: totals[i].n ? totals[i].sum / totals[i].n : null,
  }));
  return { names, rows, summary };
}

if (typeof module !== "undefined") {
  module.exports = { parseMetrics, sumOf, formatAge, evaluatedPoints, chartSvg,
                     strategySummary, strategyTable, escapeXml };
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

  function fillStrategies(overview) {
    const table = strategyTable(overview);
    $("strategies").textContent = `serving ${overview.serving}; challengers: ` +
      (overview.challengers.join(", ") || "none (SMLREC_CHALLENGERS)") +
      `; promotion ${overview.promotion}`;
    const head = $("strategy-scores").tHead.rows[0];
    head.replaceChildren();
    cell(head, "period");
    for (const s of table.summary) {
      cell(head, `${s.name}${s.serving ? " (serving)" : ""}: ${s.wins} won` +
        (s.meanRecall !== null ? `, mean ${s.meanRecall.toFixed(4)}` : ""));
    }
    const body = $("strategy-scores").tBodies[0];
    body.replaceChildren();
    for (const r of table.rows) {
      const row = body.insertRow();
      cell(row, r.period);
      for (const c of r.cells) {
        cell(row, c ? `${c.recall.toFixed(4)} / ${c.ndcg.toFixed(4)}` : "-");
        if (c && c.best) row.lastChild.className = "best";
      }
    }
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
    $("trained").textContent = strategySummary(models).map((s) =>
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
      const [models, periods, strategies, text] = await Promise.all([
        getJson("/v1/admin/models", token),
        getJson("/v1/admin/periods", token),
        getJson("/v1/admin/strategies", token),
        fetch("/metrics").then((r) => r.text()),
      ]);
      const now = Date.now();
      fill(models.models, periods.periods, parseMetrics(text),
           lastAt === null ? 0 : (now - lastAt) / 1000);
      fillStrategies(strategies);
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
