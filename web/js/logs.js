// Logs page: #/logs?level=&task= — the latest log lines of every task, newest
// first, filtered by minimum level and by task; older pages on demand (the
// answer's `next` cursor), new lines live from the WebSocket as they come.

import { api, describeError, isAbort } from './api.js';
import { h, notice, formatClock, formatDateTime, batcher } from './dom.js';

/** Levels from least to most severe; a filter keeps its level and those after it. */
export const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

/** Lines kept on the page; the oldest go first. */
const MAX_LINES = 2000;
const PAGE = 100;

/** Whether a line passes the filters (the same rule as the server's `level`). */
export function matches(line, filters) {
  if (filters.task && Number(line.task_id) !== Number(filters.task)) return false;
  if (!filters.level) return true;
  return LEVELS.indexOf(String(line.level)) >= LEVELS.indexOf(filters.level);
}

export function mount(main, ctx) {
  const { store, live } = ctx;
  ctx.setTitle('Logs');
  const abort = new AbortController();
  const filters = {
    level: LEVELS.includes(ctx.query.level) ? ctx.query.level : '',
    task: /^\d+$/.test(ctx.query.task || '') ? ctx.query.task : '',
  };
  let next = null;
  let generation = 0;
  let lines = 0;
  // Live lines count from the first page on: one that came while the page
  // was read would otherwise show twice.
  let loaded = false;

  const levelSelect = h('select', { id: 'logs-level', name: 'level' },
    h('option', { value: '' }, 'All levels'),
    LEVELS.map((l) => h('option', { value: l }, `${l} and worse`)));
  levelSelect.value = filters.level;
  const taskInput = h('input', {
    id: 'logs-task', name: 'task', type: 'text', inputmode: 'numeric', placeholder: 'Task id', autocomplete: 'off',
    value: filters.task,
  });
  const form = h('form', { class: 'filters', id: 'logs-filters', role: 'search', 'aria-label': 'Filter log lines' },
    h('div', { class: 'field' }, h('label', { for: 'logs-level' }, 'Level'), levelSelect),
    h('div', { class: 'field' }, h('label', { for: 'logs-task' }, 'Task'), taskInput));
  form.addEventListener('submit', (e) => e.preventDefault());
  const list = h('ol', { id: 'logs-list', class: 'log log-all', tabindex: '0', 'aria-label': 'Log lines, newest first' });
  const note = h('div', { id: 'logs-note' });
  const empty = h('p', { id: 'logs-empty', class: 'notice notice-muted' }, 'No log lines match.');
  empty.hidden = true;
  const more = h('button', { id: 'logs-more', type: 'button', class: 'button-quiet' }, 'Older lines');
  more.hidden = true;
  main.append(h('section', { class: 'view view-logs', 'aria-labelledby': 'logs-heading' },
    h('h2', { id: 'logs-heading' }, 'Logs'),
    h('p', { class: 'muted' }, 'What the steps of every task said lately, newest first. New lines appear as they are written.'),
    form, note, empty, list, more));

  function item(l) {
    const at = l.at || l.created_at;
    const level = String(l.level || 'info').toLowerCase();
    return h('li', { class: 'log-line', dataset: { level, taskId: l.task_id, runId: l.run_id } },
      h('time', { datetime: at || null, title: at ? formatDateTime(at) : null }, formatClock(at)),
      h('span', { class: 'log-level' }, level),
      h('a', { class: 'log-task', href: `#/tasks/${l.task_id}` }, `#${l.task_id}`),
      h('span', { class: 'log-msg' }, l.message ?? ''));
  }

  function show(newLines, where) {
    const frag = document.createDocumentFragment();
    for (const l of newLines) frag.appendChild(item(l));
    if (where === 'top') list.prepend(frag);
    else list.append(frag);
    lines += newLines.length;
    while (lines > MAX_LINES && list.lastElementChild) {
      list.lastElementChild.remove();
      lines -= 1;
    }
    empty.hidden = lines > 0;
    list.hidden = lines === 0;
  }

  async function load(older) {
    const mine = generation;
    const query = { limit: PAGE };
    if (filters.level) query.level = filters.level;
    if (filters.task) query.task_id = filters.task;
    if (older && next !== null) query.before = next;
    try {
      const page = await api('GET', '/logs', { query, signal: abort.signal });
      if (mine !== generation) return;
      note.replaceChildren();
      next = page.next ?? null;
      more.hidden = next === null;
      show(page.logs || [], 'bottom');
      loaded = true;
    } catch (err) {
      if (isAbort(err) || mine !== generation) return;
      note.replaceChildren(notice(`Log lines could not be loaded: ${describeError(err)}`, 'error'));
    }
  }

  function reload() {
    generation += 1;
    filters.level = levelSelect.value;
    filters.task = /^\d+$/.test(taskInput.value.trim()) ? taskInput.value.trim() : '';
    list.replaceChildren();
    lines = 0;
    loaded = false;
    next = null;
    more.hidden = true;
    load(false);
  }

  levelSelect.addEventListener('change', reload);
  taskInput.addEventListener('change', reload);
  more.addEventListener('click', () => load(true));

  // Live lines: batched, newest on top.
  const pending = [];
  const flush = batcher(() => {
    const batch = pending.splice(0).filter((l) => matches(l, filters));
    if (batch.length) show(batch.reverse(), 'top');
  }, 100);
  const off = store.on((ev) => {
    if (ev.kind === 'log' && loaded) {
      pending.push(ev.line);
      flush();
    }
  });
  live.setLogs(true);
  load(false);

  return {
    unmount() {
      abort.abort();
      off();
      flush.cancel();
      live.setLogs(false);
    },
  };
}
