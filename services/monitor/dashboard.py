"""The monitor's dashboard: a page per model, served as it is (no front-end build, nothing from other sites).

`GET /dashboard` lists the models the monitor has seen traffic or windows for. `GET /dashboard/{model}`
is one self-contained HTML page whose inline script reads `GET /models/{model}/timeline` every 10 s and
draws inline SVG charts on one shared time axis: alerts and retrain requests, prediction volume per
version, latency percentiles, drift per feature with its threshold, model performance against its
baseline, and the confidence histogram. A Content-Security-Policy lets the page talk to this monitor
only, so it works offline and behind a firewall.
"""

from __future__ import annotations

import base64
import hashlib
import html
from datetime import datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from services.monitor.drift_monitor import DriftMonitor
from services.monitor.workspaces import visible_models

REFRESH_SECONDS = 10
NO_SCRIPT = "'none'"


class MonitoredModel(BaseModel):
    """A model on the dashboard's index: what the monitor has of it."""

    model: str
    windows: int
    last_seen: datetime | None
    open_alerts: int


async def monitored_models(request: Request) -> list[MonitoredModel]:
    """Every model of the caller's workspace with traffic counted or windows judged, by name."""
    visible = await visible_models(request)
    monitor: DriftMonitor = request.app.state.monitor
    async with monitor.database.acquire() as connection:
        rows = await connection.fetch(
            "WITH seen AS ("
            "  SELECT model, 0 AS windows, max(minute + interval '1 minute') AS last_seen"
            "  FROM traffic_minutes GROUP BY model"
            "  UNION ALL"
            "  SELECT model, count(*) AS windows, max(window_end) AS last_seen"
            "  FROM window_reports GROUP BY model"
            ") "
            "SELECT model, sum(windows)::int AS windows, max(last_seen) AS last_seen, "
            "  (SELECT count(*) FROM episodes e WHERE e.model = seen.model AND e.closed_at IS NULL)::int "
            "  AS open_alerts "
            "FROM seen GROUP BY model ORDER BY model"
        )
    return [MonitoredModel(**dict(row)) for row in rows if visible is None or row["model"] in visible]


MonitoredModels = Annotated[list[MonitoredModel], Depends(monitored_models)]
router = APIRouter(tags=["dashboard"])


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard_index(models: MonitoredModels) -> HTMLResponse:
    """An HTML list of the models the monitor watches, each linking to its dashboard."""
    if models:
        rows = "\n".join(
            f'<tr><td><a href="dashboard/{html.escape(quote(found.model, safe=""))}">'
            f"{html.escape(found.model)}</a></td><td>{found.windows}</td>"
            f"<td>{_time_element(found.last_seen)}</td>"
            f'<td class="{"alerting" if found.open_alerts else ""}">{found.open_alerts}</td></tr>'
            for found in models
        )
        body = (
            '<table><caption>Models the monitor has seen</caption><thead><tr><th scope="col">model</th>'
            '<th scope="col">windows judged</th><th scope="col">last seen (UTC)</th>'
            f'<th scope="col">open alerts</th></tr></thead><tbody>\n{rows}\n</tbody></table>'
        )
    else:
        body = (
            '<p class="empty">No traffic yet. Models appear here once serving or batch log their '
            "predictions to <code>prediction-logged</code>.</p>"
        )
    return _html(INDEX_PAGE.replace("__BODY__", body), script=False)


@router.get("/dashboard/{model}", response_class=HTMLResponse)
async def dashboard(model: str) -> HTMLResponse:
    """One model's dashboard (HTML): traffic, latency, confidence, drift per feature, performance,
    alerts and retrain requests on one time axis, refreshed every 10 seconds."""
    return _html(MODEL_PAGE.replace("__MODEL__", html.escape(model)), script=True)


def _html(page: str, *, script: bool) -> HTMLResponse:
    # Only this monitor is reachable from the page: no CDN, font or tracker can load, online or not.
    policy = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
        f"script-src {SCRIPT_HASH if script else NO_SCRIPT}; base-uri 'none'; form-action 'none'"
    )
    return HTMLResponse(page, headers={"Content-Security-Policy": policy, "Cache-Control": "no-store"})


def _time_element(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    return f'<time datetime="{moment.isoformat()}">{moment.strftime("%Y-%m-%d %H:%M:%S")}</time>'


STYLE = """
:root { --ink: #1d2330; --muted: #5b6474; --line: #d9dde5; --panel: #ffffff; --page: #f4f6f9;
  --warning: #d98a00; --critical: #c62828; --drift: #c62828; --ok: #2e7d32; --accent: #3367d6; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--ink); background: var(--page); }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 12px 24px; padding: 16px 24px;
  background: var(--panel); border-bottom: 1px solid var(--line); }
header h1 { margin: 0; font-size: 20px; }
header .meta { color: var(--muted); }
main { padding: 16px 24px 48px; max-width: 1600px; }
section { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px;
  margin-bottom: 16px; }
section h2 { margin: 0 0 4px; font-size: 16px; }
section h3 { margin: 10px 0 0; font-size: 13px; font-weight: 600; }
section h3 .method { color: var(--muted); font-weight: 400; }
.hint { margin: 0 0 8px; color: var(--muted); font-size: 12px; }
.empty { margin: 12px 0; padding: 16px; border: 1px dashed var(--line); border-radius: 6px;
  color: var(--muted); text-align: center; }
.banner { padding: 10px 14px; border-radius: 6px; margin-bottom: 16px; }
.banner.error { background: #fdecea; color: #8a1c1c; border: 1px solid #f5c2c0; }
.banner.info { background: #eef3fd; color: #1d3f8a; border: 1px solid #c9d8f7; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 16px; }
.card { flex: 1 1 160px; background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 14px; }
.card .label { color: var(--muted); font-size: 12px; }
.card .value { font-size: 22px; font-weight: 600; }
.card.alerting .value { color: var(--critical); }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; color: var(--muted); }
.legend .swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
  margin-right: 4px; vertical-align: -2px; }
.legend .swatch.dashed { height: 0; border-top: 2px dashed var(--muted); border-radius: 0; }
svg { display: block; width: 100%; overflow: visible; }
svg text { font-size: 11px; fill: var(--muted); }
svg text.on-bar { fill: #fff; font-weight: 600; }
svg .axis line, svg .axis path { stroke: #9aa3b2; }
svg .grid { stroke: #edf0f4; }
table { border-collapse: collapse; background: var(--panel); min-width: 480px; }
caption { text-align: left; font-weight: 600; padding: 8px 0; }
th, td { text-align: left; padding: 6px 14px; border-bottom: 1px solid var(--line); }
td.alerting { color: var(--critical); font-weight: 600; }
a { color: var(--accent); }
select { font: inherit; }
"""

INDEX_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>Flywheel monitor: models</title>
<style>{STYLE}</style>
</head>
<body>
<header><h1>Flywheel monitor</h1><span class="meta">refreshes every {REFRESH_SECONDS} s</span></header>
<main>
__BODY__
</main>
</body>
</html>
"""

# The page's script: fetch the timeline, draw every chart from it, again every REFRESH_SECONDS.
SCRIPT = """
"use strict";
const SVG_NS = "http://www.w3.org/2000/svg";
const MODEL = document.body.dataset.model;
const REFRESH_MS = __REFRESH_MS__;
const PALETTE = ["#3367d6", "#e8710a", "#1e8e3e", "#9334e6", "#12b5cb", "#b06000", "#d01884"];
const PERCENTILES = [["p50", "#3367d6"], ["p95", "#e8710a"], ["p99", "#c62828"]];
const SEVERITY = {warning: "#d98a00", critical: "#c62828"};
const ALERT_KINDS = {data: "data drift", performance: "performance drop"};
const DRIFT_COLOR = "#c62828";
// Tests give a p-value: drift when it falls below the threshold. Distances drift at or above it.
const P_VALUE_METHODS = new Set(["ks", "chisquare", "z"]);
const M = {left: 96, right: 20, top: 10, bottom: 26};
const MINUTE = 60000;
let timer = null;
let last = null;

const $ = (id) => document.getElementById(id);
const fmt = new Intl.NumberFormat(undefined, {maximumFractionDigits: 3});
const count = new Intl.NumberFormat(undefined, {maximumFractionDigits: 0});
const ms = (iso) => Date.parse(iso);
// Without spreading: a week of minutes is too many arguments for Math.max.
const maxOf = (values) => values.reduce((a, b) => (b > a ? b : a), -Infinity);
const minOf = (values) => values.reduce((a, b) => (b < a ? b : a), Infinity);

function svgEl(name, attrs, parent) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

function svgText(parent, x, y, content, attrs) {
  const node = svgEl("text", Object.assign({x, y}, attrs || {}), parent);
  node.textContent = content;
  return node;
}

function tooltip(node, content) {
  svgEl("title", {}, node).textContent = content;
  return node;
}

function htmlEl(name, attrs, parent, content) {
  const node = document.createElement(name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (content !== undefined) node.textContent = content;
  if (parent) parent.appendChild(node);
  return node;
}

function clock(t, span) {
  const d = new Date(t);
  const time = d.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
  return span > 36 * 3600000 ? d.toLocaleDateString([], {month: "short", day: "numeric"}) + " " + time : time;
}

function fullTime(t) {
  return new Date(t).toLocaleString([], {dateStyle: "medium", timeStyle: "medium"});
}

function niceStep(span, wanted) {
  const raw = span / Math.max(1, wanted);
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const factor of [1, 2, 2.5, 5, 10]) if (factor * power >= raw) return factor * power;
  return 10 * power;
}

function linear(d0, d1, r0, r1) {
  const span = d1 - d0 || 1;
  return (v) => r0 + ((v - d0) / span) * (r1 - r0);
}

// One SVG chart: role img, <title> and <desc> for screen readers, a plot area between the margins.
function chart(parent, name, height, title, desc) {
  const width = Math.max(480, parent.clientWidth || 960);
  const id = "chart-" + name.replace(/[^a-z0-9]+/gi, "-") + "-" + parent.childElementCount;
  const svg = svgEl("svg", {
    role: "img", width, height, viewBox: `0 0 ${width} ${height}`, "data-chart": name,
    "aria-labelledby": `${id}-title ${id}-desc`,
  }, parent);
  svgEl("title", {id: `${id}-title`}, svg).textContent = title;
  svgEl("desc", {id: `${id}-desc`}, svg).textContent = desc;
  return {svg, width, height, x0: M.left, x1: width - M.right, y0: height - M.bottom, y1: M.top};
}

function timeScale(c, domain) {
  return linear(domain.start, domain.end, c.x0, c.x1);
}

function timeAxis(c, domain, label) {
  const x = timeScale(c, domain);
  const axis = svgEl("g", {class: "axis time-axis"}, c.svg);
  svgEl("line", {x1: c.x0, x2: c.x1, y1: c.y0, y2: c.y0}, axis);
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080].map((m) => m * MINUTE);
  const span = domain.end - domain.start;
  const ticks = Math.max(2, Math.floor((c.x1 - c.x0) / 110));
  const step = steps.find((s) => span / s <= ticks) || steps[steps.length - 1];
  const offset = new Date().getTimezoneOffset() * MINUTE;
  for (let t = Math.ceil((domain.start - offset) / step) * step + offset; t <= domain.end; t += step) {
    svgEl("line", {class: "grid", x1: x(t), x2: x(t), y1: c.y1, y2: c.y0}, c.svg);
    svgEl("line", {x1: x(t), x2: x(t), y1: c.y0, y2: c.y0 + 4}, axis);
    svgText(axis, x(t), c.y0 + 16, clock(t, span), {"text-anchor": "middle"});
  }
  if (label) svgText(axis, c.x1, c.y0 + 16, label, {"text-anchor": "end", class: "axis-label"});
}

function valueAxis(c, lo, hi, label, wanted) {
  if (!(hi > lo)) hi = lo + 1;
  const y = linear(lo, hi, c.y0, c.y1);
  const axis = svgEl("g", {class: "axis value-axis"}, c.svg);
  svgEl("line", {x1: c.x0, x2: c.x0, y1: c.y0, y2: c.y1}, axis);
  const step = niceStep(hi - lo, wanted || 4);
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    svgEl("line", {class: "grid", x1: c.x0, x2: c.x1, y1: y(v), y2: y(v)}, c.svg);
    svgText(axis, c.x0 - 6, y(v) + 4, fmt.format(v), {"text-anchor": "end"});
  }
  const mid = (c.y0 + c.y1) / 2;
  svgText(axis, 14, mid, label, {
    "text-anchor": "middle", transform: `rotate(-90 14 ${mid})`, class: "axis-label",
  });
  return y;
}

// Alert episodes as faint bands behind a time chart, so a change lines up with its alert at a glance.
function alertBands(c, domain, alerts) {
  const x = timeScale(c, domain);
  for (const alert of alerts) {
    const from = Math.max(domain.start, ms(alert.opened_at));
    const to = alert.closed_at ? ms(alert.closed_at) : domain.end;
    svgEl("rect", {
      class: "alert-band", x: x(from), y: c.y1, width: Math.max(2, x(to) - x(from)), height: c.y0 - c.y1,
      fill: SEVERITY[alert.severity] || SEVERITY.warning, "fill-opacity": 0.08,
    }, c.svg);
  }
}

function legend(parent, entries) {
  const box = htmlEl("div", {class: "legend"}, parent);
  for (const [label, color, dashed] of entries) {
    const item = htmlEl("span", {}, box);
    const swatch = htmlEl("span", {class: dashed ? "swatch dashed" : "swatch"}, item);
    if (dashed) swatch.style.borderTopColor = color; else swatch.style.background = color;
    item.append(label);
  }
}

function empty(parent, message) {
  htmlEl("p", {class: "empty"}, parent, message);
}

function versionColor(versions, version) {
  return PALETTE[versions.indexOf(version) % PALETTE.length];
}

// Legend entries for the versions that have rows in a section (colours stay the same across sections).
function versionEntries(versions, rows) {
  const present = new Set(rows.map((row) => row.version));
  return versions.filter((v) => present.has(v)).map((v) => ["version " + v, versionColor(versions, v)]);
}

function pathThrough(points, x, y, gap) {
  let d = "";
  let previous = null;
  for (const [t, v] of points) {
    const move = previous === null || t - previous > gap;
    d += `${move ? "M" : "L"}${x(t).toFixed(1)} ${y(v).toFixed(1)} `;
    previous = t;
  }
  return d.trim();
}

// ---------------------------------------------------------------- the shared time axis

function timeDomain(data, hours) {
  const now = Date.now();
  const times = [];
  for (const row of data.traffic) times.push(ms(row.minute), ms(row.minute) + MINUTE);
  for (const w of data.windows) times.push(ms(w.window_start), ms(w.window_end));
  for (const a of data.alerts) times.push(ms(a.opened_at), a.closed_at ? ms(a.closed_at) : now);
  for (const r of data.retrains) times.push(ms(r.requested_at));
  for (const p of data.performance) times.push(ms(p.window_end));
  const finite = times.filter(Number.isFinite);
  const end = Math.max(now, maxOf(finite));
  let start = finite.length ? minOf(finite) : now - hours * 3600000;
  start = Math.max(start, now - hours * 3600000);
  const span = Math.max(end - start, 10 * MINUTE);
  return {start: end - span * 1.03, end};
}

// ---------------------------------------------------------------- the charts

function drawSummary(data) {
  const box = $("summary");
  box.replaceChildren();
  const rows = data.traffic.reduce((sum, row) => sum + row.rows, 0);
  const latest = data.traffic.length ? data.traffic[data.traffic.length - 1] : null;
  const open = data.alerts.filter((a) => !a.closed_at);
  const window = data.windows.length ? data.windows[data.windows.length - 1] : null;
  const cards = [
    ["predictions in range", count.format(rows), false],
    ["p95 latency, latest minute",
      latest && latest.latency_ms.p95 != null ? fmt.format(latest.latency_ms.p95) + " ms" : "-", false],
    ["open alerts", String(open.length), open.length > 0],
    ["features drifting, last window", window ? `${Math.round(window.drift_share * 100)}%` : "no window yet",
      Boolean(window && window.dataset_drift)],
    ["retrain requests in range", String(data.retrains.length), false],
  ];
  for (const [label, value, alerting] of cards) {
    const card = htmlEl("div", {class: alerting ? "card alerting" : "card"}, box);
    htmlEl("div", {class: "label"}, card, label);
    htmlEl("div", {class: "value"}, card, value);
  }
}

function drawEvents(data, domain) {
  const box = $("events-chart");
  box.replaceChildren();
  if (!data.alerts.length && !data.retrains.length) {
    empty(box, "No alerts and no retrain requests in this range.");
    return;
  }
  // A lane per version and kind of alert (their episodes overlap), and one for the retrain requests.
  const laneOf = (alert) => `v${alert.version} ${alert.kind}`;
  const alertLanes = [...new Set([...data.alerts].sort((a, b) => a.version - b.version
    || a.kind.localeCompare(b.kind)).map(laneOf))];
  const lanes = [...alertLanes, "retrains"];
  const lane = 26;
  const c = chart(box, "events", M.top + M.bottom + lanes.length * lane,
    "Alerts and retrain requests", `${data.alerts.length} alert episode(s), ${data.alerts.filter((a) =>
      !a.closed_at).length} still open; ${data.retrains.length} retrain request(s).`);
  const x = timeScale(c, domain);
  lanes.forEach((label, i) => {
    svgText(c.svg, c.x0 - 6, c.y1 + i * lane + lane / 2 + 4, label, {"text-anchor": "end"});
    const bottom = c.y1 + (i + 1) * lane;
    svgEl("line", {class: "grid", x1: c.x0, x2: c.x1, y1: bottom, y2: bottom}, c.svg);
  });
  timeAxis(c, domain);
  for (const alert of data.alerts) {
    const row = alertLanes.indexOf(laneOf(alert));
    const from = Math.max(domain.start, ms(alert.opened_at));
    const to = alert.closed_at ? ms(alert.closed_at) : domain.end;
    const width = Math.max(4, x(to) - x(from));
    const color = SEVERITY[alert.severity] || SEVERITY.warning;
    const g = svgEl("g", {
      class: `alert-span severity-${alert.severity} kind-${alert.kind}`, "data-alert-id": alert.id,
    }, c.svg);
    svgEl("rect", {x: x(from), y: c.y1 + row * lane + 4, width, height: lane - 8, rx: 3, fill: color,
      "fill-opacity": 0.85, stroke: color, "stroke-dasharray": alert.closed_at ? "none" : "4 2"}, g);
    const what = ALERT_KINDS[alert.kind] || alert.kind;
    const label = `${what}, ${alert.severity}${alert.closed_at ? "" : " (open)"}`;
    if (width > label.length * 6.5 + 8) {
      svgText(g, x(from) + 5, c.y1 + row * lane + lane / 2 + 4, label, {class: "on-bar"});
    }
    tooltip(g, `Alert #${alert.id}: ${what}, ${alert.severity}, version ${alert.version}; opened `
      + fullTime(ms(alert.opened_at)) + (alert.closed_at ? ", closed " + fullTime(ms(alert.closed_at))
        : ", still open"));
  }
  const y = c.y1 + (lanes.length - 1) * lane;
  for (const retrain of data.retrains) {
    const t = x(ms(retrain.requested_at));
    const g = svgEl("g", {class: "retrain-marker", "data-event-id": retrain.event_id}, c.svg);
    svgEl("path", {d: `M${t - 7} ${y + 5} L${t + 7} ${y + 5} L${t} ${y + lane - 5} Z`, fill: "#3367d6"}, g);
    svgEl("line", {x1: t, x2: t, y1: c.y1, y2: y + 5, stroke: "#3367d6", "stroke-dasharray": "2 3"}, g);
    tooltip(g, `Retrain requested ${fullTime(ms(retrain.requested_at))}: ${retrain.reason}`);
  }
  legend(box, [
    ["warning", SEVERITY.warning], ["critical", SEVERITY.critical], ["retrain request", "#3367d6"],
  ]);
}

function drawVolume(data, domain, versions) {
  const box = $("volume-chart");
  box.replaceChildren();
  if (!data.traffic.length) {
    empty(box, "No traffic yet. Predictions appear here a minute after serving or batch logs them.");
    return;
  }
  const minutes = new Map();
  for (const row of data.traffic) {
    const t = ms(row.minute);
    if (!minutes.has(t)) minutes.set(t, []);
    minutes.get(t).push(row);
  }
  let peak = 0;
  let peakAt = null;
  let total = 0;
  for (const [t, rows] of minutes) {
    const sum = rows.reduce((s, r) => s + r.rows, 0);
    total += sum;
    if (sum > peak) [peak, peakAt] = [sum, t];
  }
  const span = domain.end - domain.start;
  const c = chart(box, "volume", 200, "Prediction volume per minute",
    `${count.format(total)} predictions over ${minutes.size} minute(s) with traffic; the busiest minute, `
    + `${clock(peakAt, span)}, had ${count.format(peak)}. `
    + `Versions: ${versions.map((v) => "v" + v).join(", ")}.`);
  alertBands(c, domain, data.alerts);
  const y = valueAxis(c, 0, peak * 1.1, "predictions / min");
  timeAxis(c, domain);
  const x = timeScale(c, domain);
  for (const [t, rows] of minutes) {
    let base = 0;
    const width = Math.max(2, x(t + MINUTE) - x(t) - 1);
    for (const row of [...rows].sort((a, b) => a.version - b.version)) {
      const bar = svgEl("rect", {
        class: "bar", "data-version": row.version, x: x(t), width, y: y(base + row.rows),
        height: Math.max(1, y(base) - y(base + row.rows)), fill: versionColor(versions, row.version),
      }, c.svg);
      tooltip(bar, `${clock(t, span)}: ${count.format(row.rows)} predictions by version ${row.version}`);
      base += row.rows;
    }
  }
  legend(box, versionEntries(versions, data.traffic));
}

function drawLatency(data, domain, versions) {
  const box = $("latency-chart");
  box.replaceChildren();
  const rows = data.traffic.filter((r) => r.latency_ms && r.latency_ms.p50 != null);
  if (!rows.length) {
    empty(box, "No traffic yet, so no latency to show.");
    return;
  }
  const hi = maxOf(rows.map((r) => r.latency_ms.p99 ?? r.latency_ms.p95 ?? r.latency_ms.p50));
  const worst = rows.reduce((a, b) => ((b.latency_ms.p99 ?? 0) > (a.latency_ms.p99 ?? 0) ? b : a));
  const span = domain.end - domain.start;
  const c = chart(box, "latency", 200, "Latency per minute (p50, p95, p99)",
    `Latency percentiles per minute and version; the slowest p99 was ${fmt.format(worst.latency_ms.p99)} ms `
    + `at ${clock(ms(worst.minute), span)}.`);
  alertBands(c, domain, data.alerts);
  const y = valueAxis(c, 0, hi * 1.1 || 1, "milliseconds");
  timeAxis(c, domain);
  const x = timeScale(c, domain);
  const dashes = ["none", "6 3", "2 3", "8 3 2 3"];
  const entries = [];
  versions.forEach((version, index) => {
    const own = rows.filter((r) => r.version === version).sort((a, b) => ms(a.minute) - ms(b.minute));
    for (const [key, color] of PERCENTILES) {
      const points = own.filter((r) => r.latency_ms[key] != null)
        .map((r) => [ms(r.minute) + MINUTE / 2, r.latency_ms[key]]);
      if (!points.length) continue;
      const dash = dashes[index % dashes.length];
      svgEl("path", {class: `line latency-${key}`, d: pathThrough(points, x, y, 1.5 * MINUTE), fill: "none",
        stroke: color, "stroke-width": 2, "stroke-dasharray": dash}, c.svg);
      for (const [t, v] of points) {
        const point = svgEl("circle", {
          class: `point latency-${key}`, cx: x(t), cy: y(v), r: 2.5, fill: color,
        }, c.svg);
        tooltip(point, `${clock(t, span)} version ${version} ${key}: ${fmt.format(v)} ms`);
      }
      entries.push([versions.length > 1 ? `v${version} ${key}` : key, color, dash !== "none"]);
    }
  });
  legend(box, entries);
}

function drawConfidence(data) {
  const box = $("confidence-chart");
  box.replaceChildren();
  const rows = data.traffic.filter((r) => r.confidence && r.confidence.counts && r.confidence.counts.length);
  if (!rows.length) {
    empty(box, data.traffic.length
      ? "The model logs no class probabilities (a regressor?): no confidence to show."
      : "No traffic yet, so no confidence to show.");
    return;
  }
  const edges = rows[0].confidence.edges;
  const counts = new Array(edges.length - 1).fill(0);
  for (const row of rows) {
    if (row.confidence.edges.length !== edges.length) continue;
    row.confidence.counts.forEach((n, i) => { counts[i] += n; });
  }
  const total = counts.reduce((a, b) => a + b, 0);
  if (!total) {
    empty(box, "No class probabilities logged in this range.");
    return;
  }
  // The highest of k probabilities is at least 1/k: the empty bins below it are left out.
  let first = counts.findIndex((n) => n > 0);
  first = Math.max(0, Math.min(first, counts.length - 1));
  const shown = counts.slice(first);
  const lo = edges[first];
  const hi = edges[edges.length - 1];
  const high = counts.reduce((sum, n, i) => (edges[i] >= 0.9 ? sum + n : sum), 0);
  const c = chart(box, "confidence", 200, "Confidence: the highest class probability of each prediction",
    `${count.format(total)} predictions in range; ${Math.round((100 * high) / total)}% had a highest class `
    + `probability of 0.9 or more.`);
  const peak = maxOf(shown);
  const y = valueAxis(c, 0, peak * 1.1, "predictions");
  const x = linear(lo, hi, c.x0, c.x1);
  const axis = svgEl("g", {class: "axis"}, c.svg);
  svgEl("line", {x1: c.x0, x2: c.x1, y1: c.y0, y2: c.y0}, axis);
  const step = niceStep(hi - lo, 10);
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + 1e-9; v += step) {
    svgEl("line", {x1: x(v), x2: x(v), y1: c.y0, y2: c.y0 + 4}, axis);
    svgText(axis, x(v), c.y0 + 16, fmt.format(v), {"text-anchor": "middle"});
  }
  svgText(axis, c.x1, c.y1 + 10, "highest class probability", {"text-anchor": "end", class: "axis-label"});
  shown.forEach((n, i) => {
    const from = edges[first + i];
    const to = edges[first + i + 1];
    const bar = svgEl("rect", {class: "bar", x: x(from) + 1, width: Math.max(1, x(to) - x(from) - 2),
      y: y(n), height: y(0) - y(n), fill: "#3367d6"}, c.svg);
    tooltip(bar, `${fmt.format(from)} to ${fmt.format(to)}: ${count.format(n)} predictions`);
  });
}

function driftSeries(data) {
  const series = new Map();
  const add = (name, window, drift) => {
    if (!drift) return;
    if (!series.has(name)) series.set(name, []);
    series.get(name).push(Object.assign({version: window.version, t: ms(window.window_end)}, drift));
  };
  for (const w of data.windows) {
    for (const [feature, drift] of Object.entries(w.features || {})) add(feature, w, drift);
    add("predictions", w, w.prediction_drift);
  }
  return series;
}

function drawDrift(data, domain, versions) {
  const box = $("drift-chart");
  box.replaceChildren();
  if (!data.windows.length) {
    empty(box, "No windows judged yet: a window is judged when it fills up or its period ends.");
    return;
  }
  const span = domain.end - domain.start;
  const drifting = data.windows.filter((w) => w.dataset_drift).length;
  // The share of drifting features first: the dataset drifts when it reaches half (by default).
  htmlEl("h3", {}, box, "Share of features drifting");
  const share = chart(box, "drift-share", 110, "Share of features drifting per window",
    `${data.windows.length} window(s) judged, ${drifting} with dataset drift.`);
  alertBands(share, domain, data.alerts);
  const ys = valueAxis(share, 0, 1, "share", 2);
  timeAxis(share, domain);
  const x = timeScale(share, domain);
  for (const version of versions) {
    const own = data.windows.filter((w) => w.version === version);
    const points = own.map((w) => [ms(w.window_end), w.drift_share]);
    svgEl("path", {class: "line", d: pathThrough(points, x, ys, Infinity), fill: "none",
      stroke: versionColor(versions, version), "stroke-width": 1.5}, share.svg);
    for (const w of own) {
      const t = ms(w.window_end);
      const point = svgEl("circle", {
        class: w.dataset_drift ? "point drifted" : "point", cx: x(t), cy: ys(w.drift_share),
        r: w.dataset_drift ? 4 : 2.5, fill: w.dataset_drift ? DRIFT_COLOR : versionColor(versions, version),
      }, share.svg);
      tooltip(point, `${clock(t, span)} version ${version}: ${Math.round(w.drift_share * 100)}% of features `
        + `drifting over ${count.format(w.rows)} rows` + (w.dataset_drift ? " (dataset drift)" : ""));
    }
  }
  for (const [feature, points] of driftSeries(data)) {
    const methods = [...new Set(points.map((p) => p.method))];
    const pValue = methods.every((m) => P_VALUE_METHODS.has(m));
    const threshold = points[points.length - 1].threshold ?? null;
    const side = pValue ? "below" : "at or above";
    const rule = threshold == null ? "" : `: drift ${side} ${fmt.format(threshold)}`;
    const heading = htmlEl("h3", {}, box, feature + " ");
    htmlEl("span", {class: "method"}, heading, methods.join(", ") + rule);
    const known = points.filter((p) => p.statistic != null && Number.isFinite(p.statistic));
    const drifted = points.filter((p) => p.drifted).length;
    const c = chart(box, "drift-" + feature, 100, `Drift of ${feature} per window`,
      `${methods.join(", ")} per window${rule}; ${drifted} of ${points.length} window(s) drifted.`);
    c.svg.setAttribute("data-feature", feature);
    alertBands(c, domain, data.alerts);
    const top = pValue ? 1 : Math.max((threshold ?? 0) * 1.5, maxOf(known.map((p) => p.statistic))) * 1.05;
    const y = valueAxis(c, 0, top, pValue ? "p-value" : "distance", 2);
    timeAxis(c, domain);
    const x = timeScale(c, domain);
    const thresholds = points.filter((p) => p.threshold != null).map((p) => [p.t, p.threshold]);
    if (thresholds.length) {
      // The drift zone, shaded: above the threshold for distances, below it for p-values.
      const [zoneTop, zoneBottom] = pValue ? [y(threshold), c.y0] : [c.y1, y(threshold)];
      svgEl("rect", {class: "drift-zone", x: c.x0, width: c.x1 - c.x0, y: zoneTop,
        height: Math.max(0, zoneBottom - zoneTop), fill: DRIFT_COLOR, "fill-opacity": 0.06}, c.svg);
      const steps = [[domain.start, thresholds[0][1]], ...thresholds, [domain.end, threshold]];
      svgEl("path", {class: "threshold", d: pathThrough(steps, x, y, Infinity), fill: "none",
        stroke: DRIFT_COLOR, "stroke-width": 1, "stroke-dasharray": "5 4"}, c.svg);
    }
    for (const version of versions) {
      const own = known.filter((p) => p.version === version);
      if (!own.length) continue;
      svgEl("path", {class: "line", d: pathThrough(own.map((p) => [p.t, p.statistic]), x, y, Infinity),
        fill: "none", stroke: versionColor(versions, version), "stroke-width": 1.5}, c.svg);
      for (const p of own) {
        tooltip(svgEl("circle", {class: p.drifted ? "point drifted" : "point", cx: x(p.t), cy: y(p.statistic),
          r: p.drifted ? 4 : 2.5, fill: p.drifted ? DRIFT_COLOR : versionColor(versions, version)}, c.svg),
        `${clock(p.t, span)} version ${version}: ${p.method} ${fmt.format(p.statistic)}`
          + ` (threshold ${fmt.format(p.threshold)})${p.drifted ? ", drifted" : ""}`);
      }
    }
  }
  legend(box, [...versionEntries(versions, data.windows),
    ["drifted window", DRIFT_COLOR], ["threshold", DRIFT_COLOR, true]]);
}

function drawPerformance(data, domain, versions) {
  const box = $("performance-chart");
  box.replaceChildren();
  if (!data.performance.length) {
    empty(box, "No ground truth yet: performance appears once labels arrive on the ground-truth topic.");
    return;
  }
  const span = domain.end - domain.start;
  const metrics = [...new Set(data.performance.map((p) => p.metric))];
  for (const metric of metrics) {
    const points = data.performance.filter((p) => p.metric === metric);
    const values = points.flatMap((p) => [p.value, p.baseline])
      .filter((v) => v != null && Number.isFinite(v));
    let lo = minOf(values);
    let hi = maxOf(values);
    const pad = (hi - lo) * 0.15 || Math.abs(hi) * 0.05 || 0.05;
    [lo, hi] = [lo - pad, hi + pad];
    const dropped = points.filter((p) => p.dropped).length;
    htmlEl("h3", {}, box, metric);
    const c = chart(box, "performance-" + metric, 150, `${metric} per window of labelled predictions`,
      `${points.length} window(s) of ground truth; ${dropped} dropped below the baseline's allowance. Latest `
      + `${metric}: ${fmt.format(points[points.length - 1].value)} against a baseline of `
      + `${fmt.format(points[points.length - 1].baseline)}.`);
    alertBands(c, domain, data.alerts);
    const y = valueAxis(c, lo, hi, metric, 4);
    timeAxis(c, domain);
    const x = timeScale(c, domain);
    for (const version of versions) {
      const own = points.filter((p) => p.version === version);
      if (!own.length) continue;
      const color = versionColor(versions, version);
      const baseline = [[domain.start, own[0].baseline], ...own.map((p) => [ms(p.window_end), p.baseline]),
        [domain.end, own[own.length - 1].baseline]];
      svgEl("path", {class: "baseline", d: pathThrough(baseline, x, y, Infinity), fill: "none", stroke: color,
        "stroke-opacity": 0.8, "stroke-dasharray": "5 4"}, c.svg);
      const line = own.map((p) => [ms(p.window_end), p.value]);
      svgEl("path", {class: "line", d: pathThrough(line, x, y, Infinity), fill: "none", stroke: color,
        "stroke-width": 2}, c.svg);
      for (const p of own) {
        const t = ms(p.window_end);
        tooltip(svgEl("circle", {class: p.dropped ? "point dropped" : "point", cx: x(t), cy: y(p.value),
          r: p.dropped ? 4 : 2.5, fill: p.dropped ? DRIFT_COLOR : color}, c.svg),
        `${clock(t, span)} version ${version}: ${metric} ${fmt.format(p.value)} on ${count.format(p.labels)} `
          + `labels (baseline ${fmt.format(p.baseline)})${p.dropped ? ", dropped" : ""}`);
      }
    }
  }
  legend(box, [...versionEntries(versions, data.performance),
    ["baseline", "#5b6474", true], ["dropped", DRIFT_COLOR]]);
}

function draw(data, hours) {
  const versions = [...new Set([...data.traffic, ...data.windows, ...data.performance].map((r) => r.version))]
    .sort((a, b) => a - b);
  const domain = timeDomain(data, hours);
  const nothing = [data.traffic, data.windows, data.alerts, data.performance].every((rows) => !rows.length);
  $("notice").hidden = !nothing;
  $("notice").textContent = nothing ? `No traffic yet for ${MODEL} in the last ${hours} hour(s). Predictions `
    + "that serving or batch log for it appear here within a minute." : "";
  drawSummary(data);
  drawEvents(data, domain);
  drawVolume(data, domain, versions);
  drawLatency(data, domain, versions);
  drawDrift(data, domain, versions);
  drawPerformance(data, domain, versions);
  drawConfidence(data);
}

function hours() {
  return Number(new URLSearchParams(location.search).get("hours")) || 24;
}

async function load() {
  clearTimeout(timer);
  const range = hours();
  try {
    const response = await fetch(`../models/${encodeURIComponent(MODEL)}/timeline?hours=${range}`,
      {headers: {accept: "application/json"}, cache: "no-store"});
    if (!response.ok) throw new Error(`the monitor answered ${response.status} ${await response.text()}`);
    last = await response.json();
    draw(last, range);
    $("error").hidden = true;
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.state = "ready";
  } catch (error) {
    $("error").hidden = false;
    $("error").textContent = `Could not load the timeline (${error.message}); trying again in `
      + `${REFRESH_MS / 1000} s.`;
    document.body.dataset.state = last ? "stale" : "error";
  }
  timer = setTimeout(load, REFRESH_MS);
}

$("range").value = String(hours());
$("range").addEventListener("change", (event) => {
  const url = new URL(location.href);
  url.searchParams.set("hours", event.target.value);
  history.replaceState(null, "", url);
  load();
});
let resizing = null;
window.addEventListener("resize", () => {
  clearTimeout(resizing);
  resizing = setTimeout(() => last && draw(last, hours()), 200);
});
load();
""".replace("__REFRESH_MS__", str(REFRESH_SECONDS * 1000))

SCRIPT_HASH = "'sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode() + "'"

MODEL_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__MODEL__: Flywheel monitor</title>
<style>{STYLE}</style>
</head>
<body data-model="__MODEL__" data-state="loading">
<header>
  <h1>__MODEL__</h1>
  <a href="../dashboard">all models</a>
  <label>range
    <select id="range">
      <option value="1">last hour</option><option value="6">last 6 hours</option>
      <option value="24">last 24 hours</option><option value="168">last 7 days</option>
    </select>
  </label>
  <span class="meta"><span id="updated">loading...</span>; refreshes every {REFRESH_SECONDS} s;
    times in your time zone</span>
</header>
<main>
<div id="error" class="banner error" role="alert" hidden></div>
<div id="notice" class="banner info" role="status" hidden></div>
<div id="summary" class="cards" aria-label="summary"></div>
<section aria-labelledby="events-title"><h2 id="events-title">Alerts and retrain requests</h2>
  <p class="hint">Drift and performance alerts, one bar per episode (dashed while open), coloured by
    severity; triangles mark the retrain requests the monitor sent.</p>
  <div id="events-chart"></div></section>
<section aria-labelledby="volume-title"><h2 id="volume-title">Prediction volume</h2>
  <p class="hint">Predictions per minute, stacked by model version. Shaded spans are alert episodes.</p>
  <div id="volume-chart"></div></section>
<section aria-labelledby="latency-title"><h2 id="latency-title">Latency</h2>
  <p class="hint">50th, 95th and 99th percentile of the time to answer, per minute.</p>
  <div id="latency-chart"></div></section>
<section aria-labelledby="drift-title"><h2 id="drift-title">Drift per feature</h2>
  <p class="hint">Each judged window's statistic against the training reference; dashed: the threshold;
    red dots: windows that drifted.</p>
  <div id="drift-chart"></div></section>
<section aria-labelledby="performance-title"><h2 id="performance-title">Model performance</h2>
  <p class="hint">The metric on labelled predictions per window, against its baseline (dashed).</p>
  <div id="performance-chart"></div></section>
<section aria-labelledby="confidence-title"><h2 id="confidence-title">Confidence</h2>
  <p class="hint">How sure the model was: the highest class probability of every prediction in range.</p>
  <div id="confidence-chart"></div></section>
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""
