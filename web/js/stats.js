// Stats page: #/stats?hours=24 — task counts by status, success rate, average
// duration, alerts, per-module numbers, a small throughput chart (inline SVG)
// and, for admins, the compiled-code cache (cache.js).

import { api, describeError, isAbort } from './api.js';
import { h, svg, formatDuration, formatBytes, formatCount, throttle } from './dom.js';
import { STATUSES } from './tasks.js';
import { cachePanel } from './cache.js';

const PERIODS = [[1, 'last hour'], [6, 'last 6 hours'], [24, 'last 24 hours'], [168, 'last 7 days'], [720, 'last 30 days']];

export function formatRate(rate) {
  if (rate === null || rate === undefined || !Number.isFinite(Number(rate))) return '—';
  return `${Math.round(Number(rate) * 1000) / 10}%`;
}

function hourLabel(value, withDay) {
  const t = Date.parse(value);
  if (!Number.isFinite(t)) return String(value ?? '');
  const d = new Date(t);
  const hh = `${String(d.getHours()).padStart(2, '0')}:00`;
  return withDay ? `${d.getMonth() + 1}/${d.getDate()} ${hh}` : hh;
}

/** Inline SVG bar chart of completed (bottom) and failed (top) runs per hour. */
function byDay(points) {
  const days = new Map();
  for (const p of points) {
    const d = new Date(Date.parse(p.hour));
    const key = Number.isFinite(d.getTime()) ? `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}` : String(p.hour);
    const day = days.get(key) || { hour: p.hour, completed: 0, failed: 0 };
    day.completed += Number(p.completed) || 0;
    day.failed += Number(p.failed) || 0;
    days.set(key, day);
  }
  return [...days.values()];
}

function dayLabel(value) {
  const t = Date.parse(value);
  if (!Number.isFinite(t)) return String(value ?? '');
  const d = new Date(t);
  return `${d.getMonth() + 1}/${d.getDate()}`;
}

export function throughputChart(points) {
  let data = [...(points || [])].sort((a, b) => (Date.parse(a.hour) || 0) - (Date.parse(b.hour) || 0));
  // Long periods are drawn per day so the bars stay readable.
  const daily = data.length > 72;
  if (daily) data = byDay(data);
  const unit = daily ? 'day' : 'hour';
  const label = (value, withDay) => (daily ? dayLabel(value) : hourLabel(value, withDay));
  const totals = data.map((p) => (Number(p.completed) || 0) + (Number(p.failed) || 0));
  const max = Math.max(1, ...totals);
  const slot = 14;
  const left = 28;
  const top = 8;
  const plotH = 100;
  const width = Math.max(240, left + data.length * slot + 4);
  const height = top + plotH + 22;
  const sum = totals.reduce((a, b) => a + b, 0);
  const failed = data.reduce((a, p) => a + (Number(p.failed) || 0), 0);
  const spanDays = data.length > 24;
  const chart = svg('svg', {
    id: 'throughput-chart', class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': data.length
      ? `Runs per ${unit}: ${sum} finished in ${data.length} ${unit}${data.length === 1 ? '' : 's'}, ${failed} failed, at most ${max} in one ${unit}.`
      : 'No runs in this period.',
  });
  chart.appendChild(svg('line', { class: 'axis', x1: left - 2, y1: top + plotH + 0.5, x2: width, y2: top + plotH + 0.5 }));
  chart.appendChild(svg('line', { class: 'grid', x1: left - 2, y1: top + 0.5, x2: width, y2: top + 0.5 }));
  if (data.length) {
    chart.appendChild(svg('text', { class: 'tick', x: left - 6, y: top + 4, 'text-anchor': 'end' }, String(max)));
    chart.appendChild(svg('text', { class: 'tick', x: left - 6, y: top + plotH, 'text-anchor': 'end' }, '0'));
  }
  data.forEach((p, i) => {
    const completed = Number(p.completed) || 0;
    const fail = Number(p.failed) || 0;
    const x = left + i * slot + 2;
    const w = slot - 4;
    const hc = (completed / max) * plotH;
    const hf = (fail / max) * plotH;
    const g = svg('g', { class: 'tp-bar', dataset: { hour: p.hour, completed, failed: fail } },
      svg('title', null, `${label(p.hour, true)}: ${completed} completed, ${fail} failed`),
      svg('rect', { class: 'tp-hit', x: x - 2, y: top, width: slot, height: plotH }));
    if (hc > 0) g.appendChild(svg('rect', { class: 'tp-completed', x, y: top + plotH - hc, width: w, height: Math.max(hc, 1) }));
    if (hf > 0) g.appendChild(svg('rect', { class: 'tp-failed', x, y: top + plotH - hc - hf, width: w, height: Math.max(hf, 1) }));
    chart.appendChild(g);
  });
  if (data.length) {
    const labelIdx = data.length === 1 ? [0] : [0, Math.floor((data.length - 1) / 2), data.length - 1];
    for (const i of new Set(labelIdx)) {
      const anchor = i === 0 ? 'start' : i === data.length - 1 ? 'end' : 'middle';
      const x = i === data.length - 1 ? left + (i + 1) * slot : left + i * slot + (i === 0 ? 0 : slot / 2);
      chart.appendChild(svg('text', { class: 'tick', x, y: top + plotH + 15, 'text-anchor': anchor }, label(data[i].hour, spanDays)));
    }
  } else {
    chart.appendChild(svg('text', { class: 'tick', x: width / 2, y: top + plotH / 2, 'text-anchor': 'middle' }, 'No runs in this period'));
  }
  return chart;
}

export function mount(main, ctx) {
  ctx.setTitle('Stats');
  const abort = new AbortController();
  const initialHours = PERIODS.some(([n]) => String(n) === ctx.query.hours) ? Number(ctx.query.hours) : 24;

  const hoursSelect = h('select', { id: 'stats-hours', name: 'hours' },
    PERIODS.map(([n, label]) => h('option', { value: String(n) }, label)));
  hoursSelect.value = String(initialHours);
  const refresh = h('button', { type: 'button', id: 'stats-refresh', class: 'button' }, 'Refresh');
  const counts = h('ul', { id: 'stats-counts', class: 'stat-cards' });
  const countsNote = h('div');
  const perf = h('div', { class: 'stat-cards', id: 'stats-performance' });
  const perfNote = h('div');
  const periodLabel = h('span', { id: 'stats-period-label' });
  const chartBox = h('figure', { class: 'chart-box' });
  const alerts = h('ul', { id: 'alerts', class: 'alerts' });
  const alertsNote = h('div');
  const modulesTable = h('table', { id: 'stats-modules', class: 'table stats-modules' });
  const cache = cachePanel(abort.signal);

  main.append(h('section', { class: 'view view-stats', 'aria-labelledby': 'stats-heading' },
    h('div', { class: 'view-head' },
      h('h1', { id: 'stats-heading' }, 'Stats'),
      h('div', { class: 'inline-field' }, h('label', { for: 'stats-hours' }, 'Period'), hoursSelect, refresh)),
    h('section', { class: 'panel', 'aria-labelledby': 'alerts-heading' },
      h('h2', { id: 'alerts-heading' }, 'Alerts'), alertsNote, alerts),
    h('section', { class: 'panel', 'aria-labelledby': 'counts-heading' },
      h('h2', { id: 'counts-heading' }, 'Tasks by status'), countsNote, counts),
    h('section', { class: 'panel', 'aria-labelledby': 'perf-heading' },
      h('h2', { id: 'perf-heading' }, 'Runs, ', periodLabel), perfNote, perf,
      h('h3', null, 'Throughput'), chartBox,
      h('h3', null, 'By module'), h('div', { class: 'table-wrap' }, modulesTable)),
    cache.element));

  function card(id, value, label, attrs) {
    return h('div', { class: 'stat', id, ...(attrs || {}) },
      h('span', { class: 'stat-value' }, value), h('span', { class: 'stat-label' }, label));
  }

  function failure(box, what, err, retry) {
    // A server without this route (older version): say so calmly, nothing to retry.
    if (err && err.status === 404) {
      box.replaceChildren(h('p', { class: 'notice notice-muted notice-unavailable' },
        `${what}: not available from this server.`));
      return;
    }
    const button = h('button', { type: 'button', class: 'button' }, 'Try again');
    button.addEventListener('click', retry);
    box.replaceChildren(h('div', { class: 'notice notice-error', role: 'alert' }, `${what} could not be loaded: ${describeError(err)} `, button));
  }

  async function loadCounts() {
    try {
      const data = await api('GET', '/stats', { signal: abort.signal });
      const byStatus = (data && data.tasks) || {};
      const names = [...STATUSES, ...Object.keys(byStatus).filter((k) => !STATUSES.includes(k))];
      const items = names.map((s) => h('li', { class: 'stat', dataset: { stat: s } },
        h('a', { href: `#/tasks?status=${encodeURIComponent(s)}` },
          h('span', { class: 'stat-value' }, String(byStatus[s] ?? 0)),
          h('span', { class: 'stat-label' }, s))));
      const total = data && data.total !== undefined ? data.total : Object.values(byStatus).reduce((a, b) => a + (Number(b) || 0), 0);
      items.push(h('li', { class: 'stat stat-total', id: 'stats-total', dataset: { stat: 'total' } },
        h('a', { href: '#/tasks' }, h('span', { class: 'stat-value' }, String(total)), h('span', { class: 'stat-label' }, 'total'))));
      counts.replaceChildren(...items);
      countsNote.replaceChildren();
    } catch (err) {
      if (!isAbort(err)) failure(countsNote, 'Counts', err, loadCounts);
    }
  }

  async function loadPerformance() {
    const hours = Number(hoursSelect.value);
    periodLabel.textContent = (PERIODS.find(([n]) => n === hours) || [0, `last ${hours} hours`])[1];
    try {
      const data = await api('GET', '/stats/performance', { query: { hours }, signal: abort.signal });
      if (Number(hoursSelect.value) !== hours) return;
      const d = data || {};
      perf.replaceChildren(
        card('stats-runs', String(d.runs ?? 0), 'runs'),
        card('stats-success-rate', formatRate(d.success_rate), 'success rate', {
          dataset: { rate: d.success_rate ?? '' },
          class: `stat ${Number.isFinite(d.success_rate) && d.success_rate < 0.9 ? 'stat-warn' : ''}`,
        }),
        card('stats-avg-duration', formatDuration(d.average_duration_seconds), 'average duration'));
      chartBox.replaceChildren(throughputChart(d.throughput),
        h('figcaption', { class: 'legend' },
          h('span', { class: 'key key-completed' }), ' completed ',
          h('span', { class: 'key key-failed' }), ' failed'));
      const mods = Array.isArray(d.modules) ? d.modules : [];
      if (!mods.length) {
        modulesTable.replaceChildren(h('caption', null, 'No module has run in this period.'));
      } else {
        modulesTable.replaceChildren(
          h('caption', { class: 'visually-hidden' }, 'Per-module performance'),
          h('thead', null, h('tr', null,
            ['Module', 'Runs', 'Success', 'Avg duration', 'Avg fuel', 'Avg peak memory'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', null, mods.map((m) => h('tr', { dataset: { module: m.module } },
            h('td', { 'data-label': 'Module' }, h('code', null, m.module)),
            h('td', { 'data-label': 'Runs' }, String(m.runs ?? 0)),
            h('td', { 'data-label': 'Success' }, formatRate(m.success_rate)),
            h('td', { 'data-label': 'Avg duration' }, formatDuration(m.average_duration_seconds)),
            h('td', { 'data-label': 'Avg fuel' }, formatCount(m.average_fuel)),
            h('td', { 'data-label': 'Avg peak memory' }, formatBytes(m.average_peak_memory))))));
      }
      perfNote.replaceChildren();
    } catch (err) {
      if (!isAbort(err)) failure(perfNote, 'Performance', err, loadPerformance);
    }
  }

  async function loadAlerts() {
    try {
      const data = await api('GET', '/alerts', { signal: abort.signal });
      const list = (data && data.alerts) || [];
      alerts.replaceChildren(...list.map((a) => h('li', {
        class: `alert alert-${String(a.severity || 'info').toLowerCase()}`,
        dataset: { alertKind: a.kind, severity: a.severity },
      }, h('span', { class: 'alert-severity badge' }, a.severity || 'info'), ' ', h('span', { class: 'alert-message' }, a.message || a.kind))));
      alertsNote.replaceChildren(list.length ? '' : h('p', { class: 'notice notice-ok', id: 'alerts-none' }, 'No alerts. All is well.'));
    } catch (err) {
      if (!isAbort(err)) failure(alertsNote, 'Alerts', err, loadAlerts);
    }
  }

  function loadAll() {
    loadCounts();
    loadPerformance();
    loadAlerts();
    cache.load();
  }

  hoursSelect.addEventListener('change', () => {
    history.replaceState(null, '', `#/stats?hours=${hoursSelect.value}`);
    loadPerformance();
  });
  refresh.addEventListener('click', loadAll);

  // Counts follow the live stream (a little behind, to batch bursts).
  const liveRefresh = throttle(() => { loadCounts(); }, 2000);
  const statuses = new Map();
  const off = ctx.store.on((ev) => {
    if (ev.kind === 'task' && ev.source === 'live') {
      const t = ctx.store.task(ev.id);
      const status = t ? t.status : null;
      if (statuses.get(ev.id) !== status) {
        statuses.set(ev.id, status);
        liveRefresh();
      }
    }
    if (ev.kind === 'deleted') liveRefresh();
    if (ev.kind === 'snapshot' && ev.reconnect) loadAll();
  });

  loadAll();

  let ticks = 0;
  return {
    unmount() {
      off();
      abort.abort();
      liveRefresh.cancel();
    },
    tick() {
      ticks += 1;
      if (ticks % 60 === 0) {
        loadPerformance();
        loadAlerts();
      }
    },
  };
}
