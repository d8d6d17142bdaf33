// Task list: #/tasks?status=&module=&q=
// REST pages (cursor pagination) merged with live state; rows update in place.

import { api, describeError, isAbort } from './api.js';
import {
  h, progressBar, setText, setAttr, timeEl, updateTimeEl, statusBadge, updateStatusBadge,
  formatInterval, batcher, debounce,
} from './dom.js';

export const STATUSES = ['disabled', 'scheduled', 'running', 'completed', 'failed', 'cancelled'];

export function mount(main, ctx) {
  const { store } = ctx;
  ctx.setTitle('Tasks');
  const abort = new AbortController();
  const filters = {
    status: STATUSES.includes(ctx.query.status) ? ctx.query.status : '',
    module: ctx.query.module || '',
    q: ctx.query.q || '',
  };

  const listed = new Set();      // task ids that belong to this list
  const rows = new Map();        // task id → row
  let nextCursor = null;
  let loaded = false;
  let loading = false;
  let minListed = Infinity;
  let generation = 0;            // bumps when filters change, so stale pages are dropped

  // ---------------------------------------------------------------- layout
  const statusSelect = h('select', { id: 'filter-status', name: 'status' },
    h('option', { value: '' }, 'All statuses'),
    STATUSES.map((s) => h('option', { value: s }, s)));
  statusSelect.value = filters.status;
  const moduleSelect = h('select', { id: 'filter-module', name: 'module' }, h('option', { value: '' }, 'All modules'));
  if (filters.module) moduleSelect.append(h('option', { value: filters.module }, filters.module));
  moduleSelect.value = filters.module;
  const search = h('input', {
    id: 'filter-search', name: 'q', type: 'search', placeholder: 'Name, code or #id', autocomplete: 'off', value: filters.q,
  });
  const filterForm = h('form', { class: 'filters', id: 'tasks-filters', role: 'search', 'aria-label': 'Filter tasks' },
    h('div', { class: 'field' }, h('label', { for: 'filter-status' }, 'Status'), statusSelect),
    h('div', { class: 'field' }, h('label', { for: 'filter-module' }, 'Module'), moduleSelect),
    h('div', { class: 'field field-grow' }, h('label', { for: 'filter-search' }, 'Search'), search));
  filterForm.addEventListener('submit', (e) => e.preventDefault());

  const tbody = h('tbody');
  const table = h('table', { id: 'tasks-table', class: 'table tasks-table' },
    h('caption', { class: 'visually-hidden' }, 'Tasks, newest first'),
    h('thead', null, h('tr', null,
      h('th', { scope: 'col' }, 'Task'),
      h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col', class: 'col-progress' }, 'Progress'),
      h('th', { scope: 'col' }, 'Next run'),
      h('th', { scope: 'col' }, 'Last result'))),
    tbody);
  const errorBox = h('div', { id: 'tasks-error' });
  const empty = h('p', { id: 'tasks-empty', class: 'notice' });
  empty.hidden = true;
  const loadingLine = h('p', { class: 'notice notice-muted', id: 'tasks-loading' }, 'Loading tasks…');
  const more = h('button', { type: 'button', id: 'tasks-more', class: 'button' }, 'Load more');
  more.hidden = true;
  more.addEventListener('click', () => loadPage(false));

  main.append(h('section', { class: 'view view-tasks', 'aria-labelledby': 'tasks-heading' },
    h('div', { class: 'view-head' },
      h('h1', { id: 'tasks-heading' }, 'Tasks'),
      h('a', { class: 'button button-primary', href: '#/new', id: 'tasks-new' }, 'New task')),
    filterForm, errorBox, loadingLine, h('div', { class: 'table-wrap' }, table), empty,
    h('div', { class: 'more-row' }, more)));

  // ---------------------------------------------------------------- filters
  function writeUrl() {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v) params.set(k, v);
    const qs = params.toString();
    history.replaceState(null, '', `#/tasks${qs ? `?${qs}` : ''}`);
  }

  statusSelect.addEventListener('change', () => { filters.status = statusSelect.value; writeUrl(); reload(); });
  moduleSelect.addEventListener('change', () => { filters.module = moduleSelect.value; writeUrl(); reload(); });
  const onSearch = debounce(() => { filters.q = search.value.trim(); writeUrl(); reconcile(); }, 150);
  search.addEventListener('input', onSearch);

  function matches(t) {
    if (!t) return false;
    if (filters.status && t.status !== filters.status) return false;
    if (filters.module && !t.partial && Array.isArray(t.steps) && t.steps.length
      && !t.steps.some((s) => s.controller === filters.module)) return false;
    if (filters.q) {
      const q = filters.q.toLowerCase();
      const hay = `${t.name || ''} ${t.code || ''} #${t.id}`.toLowerCase();
      if (!hay.includes(q)) return false;
    }
    return true;
  }

  // ---------------------------------------------------------------- loading
  async function loadModules() {
    try {
      const data = await api('GET', '/modules', { signal: abort.signal });
      const paths = (data && data.modules ? data.modules : []).map((m) => m.path).sort();
      const keep = moduleSelect.value;
      moduleSelect.replaceChildren(h('option', { value: '' }, 'All modules'),
        paths.map((p) => h('option', { value: p }, p)));
      if (keep && !paths.includes(keep)) moduleSelect.append(h('option', { value: keep }, keep));
      moduleSelect.value = keep;
    } catch (err) {
      // The filter still works with the typed-in value; nothing else to do.
      if (!isAbort(err)) moduleSelect.title = `Modules could not be loaded: ${describeError(err)}`;
    }
  }

  async function loadPage(first) {
    if (loading && !first) return;
    loading = true;
    const gen = generation;
    more.disabled = true;
    try {
      const data = await api('GET', '/tasks', {
        query: { status: filters.status, module: filters.module, limit: 50, cursor: first ? null : nextCursor },
        signal: abort.signal,
      });
      if (gen !== generation) return;
      const tasks = (data && data.tasks) || [];
      store.putTasks(tasks);
      for (const t of tasks) {
        listed.add(Number(t.id));
        minListed = Math.min(minListed, Number(t.id));
      }
      if (!first || !loaded) nextCursor = data ? data.next_cursor || null : null;
      loaded = true;
      errorBox.replaceChildren();
    } catch (err) {
      if (isAbort(err) || gen !== generation) return;
      const retry = h('button', { type: 'button', class: 'button' }, 'Try again');
      retry.addEventListener('click', () => loadPage(first));
      errorBox.replaceChildren(h('div', { class: 'notice notice-error', role: 'alert' },
        `Tasks could not be loaded: ${describeError(err)} `, retry));
    } finally {
      if (gen === generation) {
        loading = false;
        loadingLine.hidden = true;
        more.disabled = false;
        reconcile();
      }
    }
  }

  function reload() {
    generation += 1;
    listed.clear();
    nextCursor = null;
    loaded = false;
    loading = false;
    minListed = Infinity;
    loadingLine.hidden = false;
    reconcile();
    loadPage(true);
  }

  const reloadFirst = debounce(() => { if (loaded) loadPage(true); }, 400);

  // Tasks seen live but not from REST yet: fetch them one by one (few at a time).
  const wantRest = new Set();
  const fetchMissing = debounce(async () => {
    const ids = [...wantRest].slice(0, 10);
    for (const id of ids) wantRest.delete(id);
    await Promise.all(ids.map(async (id) => {
      try {
        store.putTasks([await api('GET', `/tasks/${id}`, { signal: abort.signal })]);
      } catch {
        // Deleted meanwhile, or not visible: the live state is enough.
      }
    }));
    if (wantRest.size && !abort.signal.aborted) fetchMissing();
  }, 200);

  // ---------------------------------------------------------------- rows
  function makeRow(id) {
    const link = h('a', { href: `#/tasks/${id}`, class: 'task-name' });
    const meta = h('span', { class: 'task-meta' });
    const status = statusBadge('');
    const message = h('span', { class: 'task-message' });
    const bar = progressBar('Progress');
    const nextRun = timeEl(null, { class: 'next-run' });
    const interval = h('span', { class: 'interval muted' });
    const lastResult = h('span', { class: 'last-result badge' });
    const lastRun = timeEl(null, { class: 'last-run muted' });
    const tr = h('tr', { dataset: { taskId: id } },
      h('td', { class: 'cell-name', 'data-label': 'Task' }, link, meta),
      h('td', { class: 'cell-status', 'data-label': 'Status' }, status, message),
      h('td', { class: 'cell-progress', 'data-label': 'Progress' }, bar.el),
      h('td', { class: 'cell-next', 'data-label': 'Next run' }, nextRun, interval),
      h('td', { class: 'cell-last', 'data-label': 'Last result' }, lastResult, lastRun));
    const row = { tr, link, meta, status, message, bar, nextRun, interval, lastResult, lastRun, task: null };
    rows.set(id, row);
    return row;
  }

  function updateRow(row, t) {
    row.task = t;
    setAttr(row.tr, 'data-status', t.status);
    setText(row.link, t.name || `Task ${t.id}`);
    setAttr(row.bar.bar, 'aria-label', `Progress of ${t.name || `task ${t.id}`}`);
    const meta = [`#${t.id}`];
    if (t.code) meta.push(t.code);
    if (t.priority && t.priority !== 'normal') meta.push(`${t.priority} priority`);
    setText(row.meta, meta.join(' · '));
    updateStatusBadge(row.status, t.status);
    setText(row.message, t.message || '');
    row.bar.set(t.progress, t.eta_seconds, t.status === 'running');
    const recurs = t.run_interval > 0 || Boolean(t.cron);
    const showNext = t.next_run_at && (t.status === 'scheduled' || t.status === 'running' || (recurs && t.status !== 'disabled'));
    updateTimeEl(row.nextRun, showNext ? t.next_run_at : null);
    if (t.status === 'disabled') setText(row.nextRun, 'disabled');
    setText(row.interval, t.cron ? `cron ${t.cron}` : t.run_interval > 0 ? formatInterval(t.run_interval) : '');
    setText(row.lastResult, t.last_result || (t.last_run_at ? 'none yet' : 'never run'));
    setAttr(row.lastResult, 'data-result', t.last_result || 'none');
    updateTimeEl(row.lastRun, t.last_run_at || null);
    if (!t.last_run_at) setText(row.lastRun, '');
  }

  let shownIds = [];
  function reconcile() {
    const visible = [...listed].filter((id) => matches(store.task(id))).sort((a, b) => b - a);
    for (const id of visible) {
      const row = rows.get(id) || makeRow(id);
      updateRow(row, store.task(id));
    }
    const same = visible.length === shownIds.length && visible.every((id, i) => id === shownIds[i]);
    if (!same) {
      tbody.replaceChildren(...visible.map((id) => rows.get(id).tr));
      shownIds = visible;
      for (const id of [...rows.keys()]) if (!listed.has(id)) rows.delete(id);
    }
    const anyFilter = filters.status || filters.module || filters.q;
    empty.hidden = !loaded || visible.length > 0;
    if (!empty.hidden) {
      empty.replaceChildren(anyFilter
        ? 'No tasks match these filters.'
        : h('span', null, 'No tasks yet. ', h('a', { href: '#/new' }, 'Create the first one'), '.'));
    }
    table.hidden = loaded && visible.length === 0;
    more.hidden = !nextCursor;
  }

  const flush = batcher((ids) => {
    let membership = false;
    for (const id of ids) {
      if (id === 'all') { membership = true; continue; }
      const t = store.task(id);
      const row = rows.get(id);
      const visibleNow = listed.has(id) && matches(t);
      if (visibleNow !== shownIds.includes(id)) membership = true;
      else if (row && t && visibleNow) updateRow(row, t);
    }
    if (membership) reconcile();
  }, 60);

  const off = store.on((ev) => {
    if (ev.kind === 'snapshot') {
      if (ev.reconnect) reloadFirst();
      flush('all');
    } else if (ev.kind === 'task') {
      const id = ev.id;
      if (!listed.has(id) && ev.source === 'live' && loaded) {
        const t = store.task(id);
        if (!matches(t)) return;
        const inRange = nextCursor === null || id > minListed;
        if (inRange && !filters.module) {
          listed.add(id);
          if (!store.hasRest(id)) { wantRest.add(id); fetchMissing(); }
        } else if (inRange || filters.status) {
          reloadFirst();
          return;
        } else {
          return;
        }
      }
      flush(id);
    } else if (ev.kind === 'deleted') {
      listed.delete(ev.id);
      flush('all');
    }
  });

  loadModules();
  loadPage(true);

  let ticks = 0;
  return {
    unmount() {
      off();
      abort.abort();
      flush.cancel();
      reloadFirst.cancel();
      fetchMissing.cancel();
      onSearch.cancel();
    },
    tick() {
      ticks += 1;
      if (ticks % 5) return;
      for (const row of rows.values()) {
        if (!row.task) continue;
        updateRow(row, store.task(row.task.id) || row.task);
      }
    },
  };
}
