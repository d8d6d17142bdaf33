// DOM helpers and formatting. Text always goes in through textContent or
// text nodes, never through innerHTML, so nothing from the API is parsed as HTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.setAttribute('class', value);
    else if (key === 'text') el.textContent = String(value);
    else if (key === 'dataset') {
      for (const [k, v] of Object.entries(value)) if (v !== null && v !== undefined) el.dataset[k] = String(v);
    } else if (key === 'value' || key === 'checked' || key === 'selected') el[key] = value;
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
}

function appendChildren(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) appendChildren(el, child);
    else if (typeof child === 'object' && 'nodeType' in child) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Create an element: h('a', {href: '#/tasks', class: 'x'}, 'text', child…). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  appendChildren(el, children);
  return el;
}

/** Create an SVG element. */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  appendChildren(el, children);
  return el;
}

/** Set text only when it changed (keeps selection and avoids layout work). */
export function setText(el, text) {
  const value = text === null || text === undefined ? '' : String(text);
  if (el.textContent !== value) el.textContent = value;
}

export function setAttr(el, name, value) {
  if (value === null || value === undefined || value === false) {
    if (el.hasAttribute(name)) el.removeAttribute(name);
  } else {
    const v = value === true ? '' : String(value);
    if (el.getAttribute(name) !== v) el.setAttribute(name, v);
  }
}

// ---------------------------------------------------------------- progress bar

/**
 * A progress bar: <div role="progressbar" data-progress="42" aria-valuenow="42">
 * with percent text and an ETA line. Returns {el, set(percent, etaSeconds, running)}.
 */
export function progressBar(label) {
  const fill = h('div', { class: 'bar-fill' });
  const bar = h('div', {
    class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100',
    'aria-valuenow': '0', 'aria-label': label || 'Progress', dataset: { progress: '0' },
  }, fill);
  const pct = h('span', { class: 'pct' }, '0%');
  const eta = h('span', { class: 'eta' });
  const el = h('div', { class: 'progress' }, bar, h('span', { class: 'progress-text' }, pct, eta));
  let last = null;
  function set(percent, etaSeconds, running) {
    const p = clampPercent(percent);
    const etaText = running ? formatEta(etaSeconds) : '';
    const key = `${p}|${etaText}|${running ? 1 : 0}`;
    if (key === last) return;
    last = key;
    const rounded = Math.round(p * 10) / 10;
    bar.dataset.progress = String(rounded);
    bar.setAttribute('aria-valuenow', String(rounded));
    bar.setAttribute('aria-valuetext', etaText ? `${percentText(p)}, ${etaText}` : percentText(p));
    bar.classList.toggle('running', !!running);
    fill.style.width = `${p}%`;
    setText(pct, percentText(p));
    setText(eta, etaText);
  }
  return { el, bar, set };
}

export function clampPercent(value) {
  const n = Number(value);
  if (!Number.isFinite(n)) return 0;
  return Math.min(100, Math.max(0, n));
}

/** 99.6 shows as 99% so 100% only appears when the work is done. */
export function percentText(value) {
  const p = clampPercent(value);
  return `${p >= 100 ? 100 : Math.floor(p)}%`;
}

// ---------------------------------------------------------------- formatting

/** "about 2 min left" from seconds; '' when unknown. */
export function formatEta(seconds) {
  if (seconds === null || seconds === undefined) return '';
  const s = Number(seconds);
  if (!Number.isFinite(s) || s < 0) return '';
  if (s < 1) return 'almost done';
  if (s < 60) return `about ${Math.max(1, Math.round(s))} s left`;
  if (s < 3600) return `about ${Math.round(s / 60)} min left`;
  if (s < 86400) {
    const hours = Math.floor(s / 3600);
    const min = Math.round((s % 3600) / 60);
    return min ? `about ${hours} h ${min} min left` : `about ${hours} h left`;
  }
  return `about ${Math.round(s / 86400)} d left`;
}

/** A duration in seconds for humans: 120 ms, 3.4 s, 2 min 5 s, 1 h 4 min. */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  const s = Number(seconds);
  if (!Number.isFinite(s) || s < 0) return '—';
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  if (s < 3600) {
    const m = Math.floor(s / 60);
    const r = Math.round(s % 60);
    return r ? `${m} min ${r} s` : `${m} min`;
  }
  if (s < 86400) {
    const hr = Math.floor(s / 3600);
    const m = Math.round((s % 3600) / 60);
    return m ? `${hr} h ${m} min` : `${hr} h`;
  }
  const d = Math.floor(s / 86400);
  const hr = Math.round((s % 86400) / 3600);
  return hr ? `${d} d ${hr} h` : `${d} d`;
}

/** An interval in seconds: "every 15 min"; 0 → "once". */
export function formatInterval(seconds) {
  const s = Number(seconds) || 0;
  if (s <= 0) return 'once';
  const units = [[86400, 'd'], [3600, 'h'], [60, 'min'], [1, 's']];
  for (const [size, unit] of units) {
    if (s % size === 0) return `every ${s / size} ${unit}`;
  }
  return `every ${s} s`;
}

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return '—';
  const n = Number(bytes);
  if (!Number.isFinite(n)) return '—';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** Large counts (fuel): 1,234 / 12.3 M / 4.5 G. */
export function formatCount(value) {
  if (value === null || value === undefined) return '—';
  const n = Number(value);
  if (!Number.isFinite(n)) return '—';
  if (Math.abs(n) < 100000) return Math.round(n).toLocaleString('en');
  const units = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [size, unit] of units) {
    if (Math.abs(n) >= size) return `${(n / size).toFixed(1)} ${unit}`;
  }
  return String(n);
}

export function parseTime(value) {
  if (!value) return null;
  const t = Date.parse(value);
  return Number.isFinite(t) ? t : null;
}

/** "in 5 min", "3 h ago", "just now". */
export function formatRelative(value, now = Date.now()) {
  const t = parseTime(value);
  if (t === null) return '—';
  const diff = (t - now) / 1000;
  const abs = Math.abs(diff);
  if (abs < 10) return diff >= 0 ? 'now' : 'just now';
  let text;
  if (abs < 60) text = `${Math.round(abs)} s`;
  else if (abs < 3600) text = `${Math.round(abs / 60)} min`;
  else if (abs < 86400) text = `${Math.round(abs / 3600)} h`;
  else text = `${Math.round(abs / 86400)} d`;
  return diff >= 0 ? `in ${text}` : `${text} ago`;
}

/** Local date and time, for titles and details. */
export function formatDateTime(value) {
  const t = parseTime(value);
  if (t === null) return '—';
  const d = new Date(t);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function formatClock(value) {
  const t = parseTime(value);
  if (t === null) return '';
  const d = new Date(t);
  const pad = (n) => String(n).padStart(2, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A <time> element with relative text and the exact time as title. */
export function timeEl(value, attrs) {
  const el = h('time', attrs);
  updateTimeEl(el, value);
  return el;
}

export function updateTimeEl(el, value) {
  if (!value) {
    setText(el, '—');
    setAttr(el, 'datetime', null);
    setAttr(el, 'title', null);
    return;
  }
  setText(el, formatRelative(value));
  setAttr(el, 'datetime', value);
  setAttr(el, 'title', formatDateTime(value));
}

export function formatJson(value) {
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

export function durationBetween(start, end, now = Date.now()) {
  const a = parseTime(start);
  if (a === null) return null;
  const b = end ? parseTime(end) : now;
  if (b === null) return null;
  return Math.max(0, (b - a) / 1000);
}

// ---------------------------------------------------------------- status badge

export function statusBadge(status, cls = 'status') {
  const el = h('span', { class: `${cls} badge` });
  updateStatusBadge(el, status);
  return el;
}

export function updateStatusBadge(el, status) {
  const value = status || 'unknown';
  setText(el, value);
  setAttr(el, 'data-status', value);
}

// ---------------------------------------------------------------- toasts

let toastRegion = null;

/** Short messages in a live region; kind 'error' uses role=alert. */
export function toast(message, kind = 'info', timeout = 6000) {
  if (!toastRegion) toastRegion = document.getElementById('toasts');
  if (!toastRegion) return;
  const close = h('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss' }, '×');
  const item = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('span', { class: 'toast-text' }, message), close);
  close.addEventListener('click', () => item.remove());
  toastRegion.appendChild(item);
  while (toastRegion.children.length > 4) toastRegion.firstElementChild.remove();
  if (timeout) setTimeout(() => item.remove(), timeout);
}

/** A small "empty" or "error" line inside a view. */
export function notice(text, kind = 'muted') {
  return h('p', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : null }, text);
}

/** Run fn once calls have stopped for `ms`. */
export function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => { timer = null; fn(...args); }, ms);
  };
  wrapped.cancel = () => { if (timer) clearTimeout(timer); timer = null; };
  return wrapped;
}

/** Call fn at most once every `ms` (the call happens at the end of the window). */
export function throttle(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; fn(...args); }, ms);
  };
  wrapped.cancel = () => { if (timer) clearTimeout(timer); timer = null; };
  return wrapped;
}

/** Batch many calls within one tick into one flush (setTimeout, so it also runs in background tabs). */
export function batcher(flush, ms = 50) {
  let timer = null;
  const pending = new Set();
  const schedule = (key) => {
    if (key !== undefined) pending.add(key);
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      const keys = new Set(pending);
      pending.clear();
      flush(keys);
    }, ms);
  };
  schedule.cancel = () => { if (timer) clearTimeout(timer); timer = null; pending.clear(); };
  return schedule;
}
