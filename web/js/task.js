// Task page: #/tasks/12 — header with live progress, actions, steps of a run
// (status, progress, result or error with the limit that stopped it, fuel,
// memory, duration), live log, artifacts, run history.

import { api, describeError, isAbort, ApiError, downloadArtifact } from './api.js';
import {
  h, progressBar, setText, setAttr, timeEl, updateTimeEl, statusBadge, updateStatusBadge,
  formatInterval, formatDuration, formatBytes, formatCount, formatDateTime, formatClock, formatJson,
  durationBetween, notice, toast, debounce, batcher,
} from './dom.js';

const TERMINAL_STEP = new Set(['completed', 'failed', 'interrupted', 'skipped', 'reused']);
const MAX_LOG_LINES = 2000;

/** What stopped a step, from its outcome: a short headline; the step's error has the details. */
export function limitLabel(outcome) {
  if (!outcome || typeof outcome !== 'object') return '';
  switch (outcome.kind) {
    case 'out_of_fuel':
      return 'Time limit reached (out of fuel)';
    case 'deadline':
      return `Wall-clock deadline passed${outcome.seconds ? ` (${formatDuration(outcome.seconds)})` : ''}`;
    case 'memory_cap':
      return `Memory cap exceeded${outcome.limit_bytes ? ` (${formatBytes(outcome.limit_bytes)})` : ''}`;
    case 'checkpoint_cap':
      return `Checkpoint cap exceeded${outcome.limit_bytes ? ` (${formatBytes(outcome.limit_bytes)})` : ''}`;
    case 'artifact_cap':
      return `Artifact cap exceeded${outcome.limit_bytes ? ` (${formatBytes(outcome.limit_bytes)})` : ''}`;
    case 'cancelled':
      return 'Cancelled';
    case 'trapped':
      return `Trapped${outcome.trap ? ` (${outcome.trap})` : ''}`;
    case 'returned_error':
      return outcome.permanent ? 'Returned a permanent error (not retried)' : 'Returned an error';
    case 'exited':
      return `Called exit${outcome.code !== undefined ? ` (code ${outcome.code})` : ''}`;
    case 'failed':
      return 'Failed to run';
    default:
      return '';
  }
}

/** A time on the wall clock of an IANA zone, e.g. "Thu, 3 Dec 2026, 03:00 CET". */
export function inZone(value, zone) {
  try {
    return new Intl.DateTimeFormat(undefined, {
      timeZone: zone || 'UTC', weekday: 'short', year: 'numeric', month: 'short', day: 'numeric',
      hour: '2-digit', minute: '2-digit', second: undefined, timeZoneName: 'short',
    }).format(new Date(value));
  } catch {
    return formatDateTime(value);
  }
}

export function mount(main, ctx) {
  const { store, live } = ctx;
  const taskId = ctx.params.id;
  ctx.setTitle(`Task #${taskId}`);
  const abort = new AbortController();
  live.setLogs(true);

  let runs = [];
  let runsLoaded = false;
  let selectedRun = null;          // null: follow the latest run
  let artifacts = [];
  let gone = false;
  let lastTaskKey = '';
  const busy = new Set();

  // ---------------------------------------------------------------- layout
  const title = h('h1', { id: 'task-title' }, `Task #${taskId}`);
  const status = statusBadge('');
  status.id = 'task-status';
  const bar = progressBar('Task progress');
  bar.el.id = 'task-progress';
  const message = h('p', { id: 'task-message', class: 'task-message-line' });
  const goneBox = h('div', { id: 'task-gone' });

  const btnRun = h('button', { type: 'button', id: 'btn-run', class: 'button button-primary' }, 'Run now');
  const btnCancel = h('button', { type: 'button', id: 'btn-cancel', class: 'button' }, 'Cancel');
  const btnRetry = h('button', { type: 'button', id: 'btn-retry', class: 'button' }, 'Retry');
  const btnToggle = h('button', { type: 'button', id: 'btn-toggle', class: 'button' }, 'Disable');
  const btnDelete = h('button', { type: 'button', id: 'btn-delete', class: 'button button-danger' }, 'Delete');
  const deleteConfirm = h('span', { class: 'confirm', id: 'task-delete-confirm', role: 'group', 'aria-label': 'Confirm delete' },
    h('span', null, 'Delete this task and its history?'),
    h('button', { type: 'button', id: 'btn-delete-confirm', class: 'button button-danger' }, 'Yes, delete'),
    h('button', { type: 'button', id: 'btn-delete-keep', class: 'button' }, 'Keep'));
  deleteConfirm.hidden = true;
  const actions = h('div', { class: 'actions', role: 'group', 'aria-label': 'Task actions' },
    btnRun, btnCancel, btnRetry, btnToggle, btnDelete, deleteConfirm);

  const facts = h('dl', { class: 'facts', id: 'task-facts' });

  const runNote = h('p', { class: 'run-note', id: 'steps-run-note' });
  const stepsBody = h('tbody');
  const stepsTable = h('table', { id: 'steps', class: 'table steps-table' },
    h('caption', { class: 'visually-hidden' }, 'Steps in order'),
    h('thead', null, h('tr', null,
      h('th', { scope: 'col' }, '#'),
      h('th', { scope: 'col' }, 'Module'),
      h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col', class: 'col-progress' }, 'Progress'),
      h('th', { scope: 'col' }, 'Result or error'),
      h('th', { scope: 'col' }, 'Fuel'),
      h('th', { scope: 'col' }, 'Memory'),
      h('th', { scope: 'col' }, 'Duration'),
      h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
    stepsBody);

  const logList = h('ol', { id: 'log', class: 'log', tabindex: '0', 'aria-label': 'Live log' });
  const logEmpty = h('p', { class: 'notice notice-muted', id: 'log-empty' }, 'No log lines yet.');
  const follow = h('input', { type: 'checkbox', id: 'log-follow', checked: true });
  const logCount = h('span', { class: 'muted', id: 'log-count' });
  const logTools = h('div', { class: 'log-tools' },
    h('label', { class: 'check' }, follow, ' Follow new lines'), logCount);

  const artifactsList = h('ul', { id: 'artifacts', class: 'artifacts' });
  const artifactsEmpty = h('p', { class: 'notice notice-muted' }, 'No artifacts.');
  const runsBody = h('tbody');
  const runsTable = h('table', { id: 'runs', class: 'table runs-table' },
    h('caption', { class: 'visually-hidden' }, 'Runs, newest first'),
    h('thead', null, h('tr', null,
      h('th', { scope: 'col' }, 'Run'),
      h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col' }, 'Trigger'),
      h('th', { scope: 'col' }, 'Started'),
      h('th', { scope: 'col' }, 'Duration'),
      h('th', { scope: 'col' }, 'Message'),
      h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'View')))),
    runsBody);
  const runsEmpty = h('p', { class: 'notice notice-muted' }, 'Not run yet.');
  const loadError = h('div', { id: 'task-error' });

  main.append(h('section', { class: 'view view-task', 'aria-labelledby': 'task-title' },
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/tasks' }, 'Tasks'), ` › #${taskId}`),
    h('div', { class: 'view-head' }, title, status),
    loadError, goneBox,
    h('div', { class: 'task-progress' }, bar.el),
    message,
    actions,
    facts,
    h('section', { class: 'panel', 'aria-labelledby': 'steps-heading' },
      h('h2', { id: 'steps-heading' }, 'Steps'), runNote, h('div', { class: 'table-wrap' }, stepsTable)),
    h('section', { class: 'panel', 'aria-labelledby': 'log-heading' },
      h('h2', { id: 'log-heading' }, 'Live log'), logTools, logEmpty, logList),
    h('section', { class: 'panel', 'aria-labelledby': 'artifacts-heading' },
      h('h2', { id: 'artifacts-heading' }, 'Artifacts'), artifactsEmpty, artifactsList),
    h('section', { class: 'panel', 'aria-labelledby': 'runs-heading' },
      h('h2', { id: 'runs-heading' }, 'Runs'), runsEmpty, h('div', { class: 'table-wrap' }, runsTable))));

  // ---------------------------------------------------------------- loading
  async function loadTask() {
    try {
      const t = await api('GET', `/tasks/${taskId}`, { signal: abort.signal });
      store.putTasks([t]);
      loadError.replaceChildren();
    } catch (err) {
      if (isAbort(err)) return;
      if (err instanceof ApiError && err.status === 404) {
        markGone(`Task #${taskId} was not found. It may have been deleted.`);
        return;
      }
      const retry = h('button', { type: 'button', class: 'button' }, 'Try again');
      retry.addEventListener('click', () => loadAll());
      loadError.replaceChildren(h('div', { class: 'notice notice-error', role: 'alert' },
        `The task could not be loaded: ${describeError(err)} `, retry));
    }
  }

  async function loadRuns() {
    try {
      const data = await api('GET', `/tasks/${taskId}/runs`, { query: { limit: 10 }, signal: abort.signal });
      runs = (data && data.runs) || [];
      runsLoaded = true;
      renderRuns();
      renderSteps();
    } catch (err) {
      if (!isAbort(err) && !gone) runsEmpty.textContent = `Runs could not be loaded: ${describeError(err)}`;
    }
  }

  async function loadArtifacts() {
    try {
      const data = await api('GET', `/tasks/${taskId}/artifacts`, { signal: abort.signal });
      artifacts = (data && data.artifacts) || [];
      renderArtifacts();
    } catch (err) {
      if (!isAbort(err) && !gone) artifactsEmpty.textContent = `Artifacts could not be loaded: ${describeError(err)}`;
    }
  }

  function loadAll() {
    loadTask();
    loadRuns();
    loadArtifacts();
    loadLogs();
  }

  const refreshRunData = debounce(() => {
    if (gone) return;
    loadTask();
    loadRuns();
    loadArtifacts();
  }, 300);

  function markGone(text) {
    gone = true;
    goneBox.replaceChildren(notice(text, 'error'));
    for (const b of [btnRun, btnCancel, btnRetry, btnToggle, btnDelete]) b.disabled = true;
    deleteConfirm.hidden = true;
  }

  // ---------------------------------------------------------------- header
  function renderHeader() {
    const t = store.task(taskId);
    if (!t) return;
    setText(title, t.name || `Task #${taskId}`);
    ctx.setTitle(t.name ? `${t.name} (#${taskId})` : `Task #${taskId}`);
    updateStatusBadge(status, t.status);
    bar.set(t.progress, t.eta_seconds, t.status === 'running');
    setAttr(bar.bar, 'aria-label', `Progress of ${t.name || `task ${taskId}`}`);
    setText(message, t.message || '');
    message.hidden = !t.message;
    renderButtons(t);
    const key = JSON.stringify([t.priority, t.start_at, t.run_interval, t.cron, t.timezone, t.next_runs, t.next_run_at, t.attempts, t.max_attempts,
      t.max_execution_time, t.last_result, t.last_run_at, t.created_by, t.code, t.created_at, t.secret_names, t.details, t.status]);
    if (key !== lastTaskKey) {
      lastTaskKey = key;
      renderFacts(t);
    }
  }

  function renderButtons(t) {
    if (gone) return;
    const running = t.status === 'running';
    btnRun.disabled = busy.has('run') || running;
    btnCancel.disabled = busy.has('cancel') || !(running || t.status === 'scheduled');
    btnRetry.disabled = busy.has('retry') || running
      || !(['failed', 'cancelled'].includes(t.status) || ['failed', 'interrupted'].includes(t.last_result));
    const disabled = t.status === 'disabled';
    setText(btnToggle, disabled ? 'Enable' : 'Disable');
    setAttr(btnToggle, 'data-action', disabled ? 'enable' : 'disable');
    btnToggle.disabled = busy.has('toggle');
    btnDelete.disabled = busy.has('delete') || running;
    if (running) deleteConfirm.hidden = true;
  }

  function fact(label, ...value) {
    return [h('dt', null, label), h('dd', null, ...value)];
  }

  function renderFacts(t) {
    const items = [];
    items.push(fact('Priority', t.priority || 'normal'));
    const schedule = t.cron
      ? h('span', { id: 'task-cron' }, 'cron ', h('code', null, t.cron), ` (${t.timezone || 'UTC'})`)
      : t.run_interval > 0 ? formatInterval(t.run_interval) : 'once';
    items.push(fact('Schedule', schedule,
      t.start_at ? h('span', { class: 'muted' }, `, from ${formatDateTime(t.start_at)}`) : null));
    items.push(fact('Next run', t.status === 'disabled' ? 'disabled' : timeEl(t.next_run_at, { class: 'next-run' })));
    // The server lists a cron task's next times: each on the schedule's own
    // wall clock, and how far off it is.
    if (t.cron && t.next_runs && t.next_runs.length) {
      items.push(fact('Next runs', h('ol', { id: 'next-runs', class: 'next-runs' },
        t.next_runs.map((at) => h('li', null, inZone(at, t.timezone), ' ',
          h('span', { class: 'muted' }, '(', timeEl(at), ')'))))));
    }
    // The time next to a result is when that run started; with no result yet
    // (the first run is on its way) it says so rather than look like one.
    const lastRunTime = !t.last_run_at ? null
      : t.last_result ? timeEl(t.last_run_at, { class: 'muted' })
        : h('span', { class: 'muted' }, 'first run started ', timeEl(t.last_run_at));
    items.push(fact('Last result', h('span', { class: 'last-result badge', dataset: { result: t.last_result || 'none' } },
      t.last_result || (t.last_run_at ? 'none yet' : 'never run')), ' ', lastRunTime));
    items.push(fact('Attempts', `${t.attempts ?? 0} of ${t.max_attempts ?? '—'}`));
    items.push(fact('Time limit', t.max_execution_time ? formatDuration(t.max_execution_time) : 'none (per step only)'));
    if (t.code) items.push(fact('Code', h('code', null, t.code)));
    if (t.created_by) items.push(fact('Created by', t.created_by));
    if (t.created_at) items.push(fact('Created', timeEl(t.created_at)));
    if (t.secret_names && t.secret_names.length) {
      items.push(fact('Secrets', t.secret_names.map((n, i) => [i ? ', ' : '', h('code', null, n)])));
    }
    if (t.details && Object.keys(t.details).length) {
      items.push(fact('Details', h('details', null, h('summary', null, `${Object.keys(t.details).length} key${Object.keys(t.details).length === 1 ? '' : 's'}`),
        h('pre', { class: 'json' }, formatJson(t.details)))));
    }
    facts.replaceChildren(...items.flat());
  }

  // ---------------------------------------------------------------- actions
  async function act(name, button, fn) {
    if (busy.has(name)) return;
    busy.add(name);
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    try {
      await fn();
    } catch (err) {
      if (!isAbort(err)) toast(`${button.textContent}: ${describeError(err)}`, 'error');
    } finally {
      busy.delete(name);
      button.removeAttribute('aria-busy');
      const t = store.task(taskId);
      if (t) {
        renderButtons(t);
        renderSteps();
      } else button.disabled = false;
    }
  }

  btnRun.addEventListener('click', () => act('run', btnRun, async () => {
    const t = await api('POST', `/tasks/${taskId}/run`);
    if (t && t.id !== undefined) store.putTasks([t], true);
    selectedRun = null;
    toast('Started.');
    refreshRunData();
  }));
  btnCancel.addEventListener('click', () => act('cancel', btnCancel, async () => {
    const r = await api('POST', `/tasks/${taskId}/cancel`);
    toast(r && r.cancelled === false ? 'Stopping the running step…' : 'Cancelled.');
    refreshRunData();
  }));
  btnRetry.addEventListener('click', () => act('retry', btnRetry, async () => {
    const t = await api('POST', `/tasks/${taskId}/retry`);
    if (t && t.id !== undefined) store.putTasks([t], true);
    selectedRun = null;
    toast('Retrying.');
    refreshRunData();
  }));
  btnToggle.addEventListener('click', () => act('toggle', btnToggle, async () => {
    const t0 = store.task(taskId);
    const disable = !(t0 && t0.status === 'disabled');
    const t = await api('PATCH', `/tasks/${taskId}`, { body: { disabled: disable } });
    if (t && t.id !== undefined) store.putTasks([t], true);
    toast(disable ? 'Disabled.' : 'Enabled.');
  }));
  btnDelete.addEventListener('click', () => {
    deleteConfirm.hidden = false;
    document.getElementById('btn-delete-keep').focus();
  });
  deleteConfirm.querySelector('#btn-delete-keep').addEventListener('click', () => {
    deleteConfirm.hidden = true;
    btnDelete.focus();
  });
  const confirmButton = deleteConfirm.querySelector('#btn-delete-confirm');
  confirmButton.addEventListener('click', () => act('delete', confirmButton, async () => {
    await api('DELETE', `/tasks/${taskId}`);
    store.removeTask(taskId);
    toast(`Task #${taskId} deleted.`);
    ctx.navigate('#/tasks');
  }));

  // ---------------------------------------------------------------- steps
  const stepRows = new Map();   // step id → row

  function latestRunId() {
    const t = store.task(taskId);
    let best = runs.length ? runs[0].id : null;
    if (t && t.current_run_id !== null && t.current_run_id !== undefined && (best === null || t.current_run_id > best)) best = t.current_run_id;
    for (const s of store.liveSteps(taskId).values()) if (best === null || s.run_id > best) best = s.run_id;
    return best;
  }

  function viewedRunId() {
    return selectedRun !== null ? selectedRun : latestRunId();
  }

  function stepData(def, runId, run, liveSteps) {
    const sr = run && Array.isArray(run.steps) ? run.steps.find((s) => s.step_id === def.id) : undefined;
    const l = liveSteps.get(def.id);
    const lv = l && l.run_id === runId ? l : undefined;
    let statusValue;
    if (lv && sr) statusValue = TERMINAL_STEP.has(sr.status) && !TERMINAL_STEP.has(lv.status) ? sr.status : lv.status;
    else statusValue = (lv && lv.status) || (sr && sr.status) || (def.status === 'disabled' ? 'disabled' : 'not run');
    const fromRun = sr && (!lv || statusValue === sr.status);
    let progress = Math.max(Number(lv && lv.progress) || 0, Number(sr && sr.progress) || 0);
    if (statusValue === 'completed' || statusValue === 'reused') progress = 100;
    return {
      status: statusValue,
      progress,
      message: (lv && lv.message) || (sr && sr.message) || '',
      error: (fromRun ? sr.error : (lv && lv.error)) || (sr && sr.error) || '',
      outcome: sr ? sr.outcome : null,
      result: sr ? sr.result : undefined,
      // Fuel is counted when the step ends: a running step's 0 means "not yet".
      fuel: sr && sr.finished_at ? sr.fuel_used : null,
      memory: sr ? sr.peak_memory : null,
      startedAt: sr ? sr.started_at : null,
      finishedAt: sr ? sr.finished_at : null,
      hash: sr ? sr.module_hash : null,
    };
  }

  function makeStepRow(def) {
    const order = h('span', { class: 'step-order' });
    const controller = h('code', { class: 'step-controller' });
    const settings = h('details', { class: 'step-settings' }, h('summary', null, 'Settings'), h('pre', { class: 'json' }));
    const disabledTag = h('span', { class: 'badge tag-disabled' }, 'disabled');
    const stepStatus = h('span', { class: 'step-status badge' });
    const stepMessage = h('span', { class: 'step-message' });
    const stepBar = progressBar('Step progress');
    const outcomeCell = h('td', { class: 'cell-outcome', 'data-label': 'Result or error' });
    const fuel = h('span', { class: 'step-fuel' });
    const memory = h('span', { class: 'step-memory' });
    const memoryCap = h('span', { class: 'muted step-memory-cap' });
    const duration = h('span', { class: 'step-duration' });
    const runStep = h('button', { type: 'button', class: 'button button-small btn-step-run' }, 'Run step');
    const toggleStep = h('button', { type: 'button', class: 'button button-small btn-step-toggle' }, 'Disable');
    const tr = h('tr', { dataset: { stepId: def.id } },
      h('td', { class: 'cell-order', 'data-label': '#' }, order),
      h('td', { class: 'cell-module', 'data-label': 'Module' }, controller, ' ', disabledTag, settings),
      h('td', { class: 'cell-step-status', 'data-label': 'Status' }, stepStatus, stepMessage),
      h('td', { class: 'cell-progress', 'data-label': 'Progress' }, stepBar.el),
      outcomeCell,
      h('td', { 'data-label': 'Fuel' }, fuel),
      h('td', { 'data-label': 'Memory' }, memory, memoryCap),
      h('td', { 'data-label': 'Duration' }, duration),
      h('td', { class: 'cell-actions', 'data-label': 'Actions' }, h('div', { class: 'row-actions' }, runStep, toggleStep)));
    const row = {
      tr, order, controller, settings, disabledTag, stepStatus, stepMessage, stepBar, outcomeCell, fuel, memory,
      memoryCap, duration, runStep, toggleStep, outcomeKey: null, settingsKey: null, def, data: null,
    };
    runStep.addEventListener('click', () => act(`step-run-${row.def.id}`, runStep, async () => {
      const t = await api('POST', `/tasks/${taskId}/steps/${row.def.id}/run`);
      if (t && t.id !== undefined) store.putTasks([t], true);
      selectedRun = null;
      toast(`Running step ${row.def.sort_order} on its own.`);
      refreshRunData();
    }));
    toggleStep.addEventListener('click', () => act(`step-toggle-${row.def.id}`, toggleStep, async () => {
      const next = row.def.status === 'disabled' ? 'scheduled' : 'disabled';
      const t = await api('PATCH', `/tasks/${taskId}`, { body: { steps: [{ id: row.def.id, status: next }] } });
      if (t && t.id !== undefined) store.putTasks([t], true);
      toast(next === 'disabled' ? 'Step disabled.' : 'Step enabled.');
    }));
    return row;
  }

  function renderOutcome(row, d) {
    const key = JSON.stringify([d.status, d.error, d.outcome, d.result]);
    if (key === row.outcomeKey) return;
    row.outcomeKey = key;
    const parts = [];
    const failed = d.error || (d.outcome && d.outcome.kind && d.outcome.kind !== 'completed');
    if (failed) {
      const limit = limitLabel(d.outcome);
      const err = h('div', { class: 'step-error', role: 'note', dataset: { limit: d.outcome && d.outcome.kind ? d.outcome.kind : null } },
        limit ? h('strong', { class: 'step-limit' }, limit) : null, limit ? ' ' : null,
        h('span', { class: 'step-error-text' }, d.error || ''));
      parts.push(err);
      if (d.outcome && d.outcome.kind === 'trapped' && d.outcome.backtrace) {
        parts.push(h('details', { class: 'backtrace' }, h('summary', null, 'Backtrace'), h('pre', null, d.outcome.backtrace)));
      }
    }
    if (d.result !== undefined && d.result !== null) {
      const text = formatJson(d.result);
      parts.push(text.length < 60 && !text.includes('\n')
        ? h('code', { class: 'step-result' }, text)
        : h('details', { class: 'step-result' }, h('summary', null, 'Result'), h('pre', { class: 'json' }, text)));
    }
    if (!parts.length) parts.push(h('span', { class: 'muted' }, '—'));
    row.outcomeCell.replaceChildren(...parts);
  }

  function updateStepRow(row, def, d, t) {
    row.def = def;
    row.data = d;
    setText(row.order, def.sort_order);
    setText(row.controller, def.controller);
    row.disabledTag.hidden = def.status !== 'disabled';
    const settingsKey = JSON.stringify(def.settings ?? {});
    if (settingsKey !== row.settingsKey) {
      row.settingsKey = settingsKey;
      setText(row.settings.querySelector('pre'), formatJson(def.settings ?? {}));
    }
    setText(row.stepStatus, d.status);
    setAttr(row.stepStatus, 'data-status', d.status);
    setAttr(row.tr, 'data-status', d.status);
    setText(row.stepMessage, d.message);
    row.stepBar.set(d.progress, null, d.status === 'running');
    setAttr(row.stepBar.bar, 'aria-label', `Progress of step ${def.sort_order}`);
    renderOutcome(row, d);
    setText(row.fuel, d.fuel === null || d.fuel === undefined ? '—' : formatCount(d.fuel));
    setAttr(row.fuel, 'title', d.fuel === null || d.fuel === undefined ? null : `${d.fuel} fuel units`);
    setText(row.memory, d.memory ? formatBytes(d.memory) : '—');
    setText(row.memoryCap, def.max_memory ? ` of ${formatBytes(def.max_memory)}` : '');
    const seconds = d.startedAt ? durationBetween(d.startedAt, d.finishedAt) : null;
    setText(row.duration, seconds === null ? '—' : formatDuration(seconds));
    setAttr(row.duration, 'title', def.max_execution_time ? `limit ${formatDuration(def.max_execution_time)}` : null);
    const running = t && t.status === 'running';
    row.runStep.disabled = gone || running || busy.has(`step-run-${def.id}`);
    setText(row.toggleStep, def.status === 'disabled' ? 'Enable' : 'Disable');
    row.toggleStep.disabled = gone || busy.has(`step-toggle-${def.id}`);
    setAttr(row.runStep, 'aria-label', `Run step ${def.sort_order} (${def.controller}) on its own`);
    setAttr(row.toggleStep, 'aria-label', `${def.status === 'disabled' ? 'Enable' : 'Disable'} step ${def.sort_order}`);
  }

  let shownSteps = '';
  const requestedRuns = new Set();
  function renderSteps() {
    const t = store.task(taskId);
    const defs = t && Array.isArray(t.steps) ? [...t.steps].sort((a, b) => a.sort_order - b.sort_order) : [];
    const runId = viewedRunId();
    const run = runs.find((r) => r.id === runId);
    const liveSteps = (selectedRun === null || selectedRun === latestRunId()) ? store.liveSteps(taskId) : new Map();
    for (const def of defs) {
      const row = stepRows.get(def.id) || makeStepRow(def);
      stepRows.set(def.id, row);
      updateStepRow(row, def, stepData(def, runId, run, liveSteps), t);
    }
    const key = defs.map((d) => d.id).join(',');
    if (key !== shownSteps) {
      shownSteps = key;
      stepsBody.replaceChildren(...defs.map((d) => stepRows.get(d.id).tr));
      for (const id of [...stepRows.keys()]) if (!defs.some((d) => d.id === id)) stepRows.delete(id);
    }
    // Which run the table shows.
    const parts = [];
    if (runId === null) parts.push('Not run yet.');
    else {
      const latest = latestRunId();
      parts.push(`Showing run #${runId}`);
      if (run) parts.push(` (attempt ${run.attempt}, ${run.trigger})`);
      if (runId === latest) parts.push(' — the latest.');
      else {
        const back = h('button', { type: 'button', class: 'button-link', id: 'steps-show-latest' }, 'Show the latest run');
        back.addEventListener('click', () => { selectedRun = null; renderSteps(); renderRuns(); });
        parts.push('. ', back);
      }
    }
    runNote.replaceChildren(...parts);
    // A run we have not fetched yet: get it.
    if (runsLoaded && runId !== null && !run && selectedRun === null && !requestedRuns.has(runId)) {
      requestedRuns.add(runId);
      refreshRunData();
    }
  }

  // ---------------------------------------------------------------- runs
  function renderRuns() {
    runsEmpty.hidden = runs.length > 0;
    runsTable.hidden = runs.length === 0;
    const viewed = viewedRunId();
    runsBody.replaceChildren(...runs.map((r) => {
      const view = h('button', {
        type: 'button', class: 'button button-small btn-run-view', 'aria-pressed': String(r.id === viewed),
      }, r.id === viewed ? 'Shown' : 'View steps');
      view.addEventListener('click', () => {
        selectedRun = r.id === runs[0].id ? null : r.id;
        renderSteps();
        renderRuns();
      });
      const seconds = durationBetween(r.started_at, r.finished_at);
      return h('tr', { dataset: { runId: r.id, status: r.status } },
        h('td', { 'data-label': 'Run' }, `#${r.id}`, h('span', { class: 'muted' }, ` attempt ${r.attempt}`)),
        h('td', { 'data-label': 'Status' }, statusBadge(r.status, 'run-status')),
        h('td', { 'data-label': 'Trigger' }, r.trigger || '—', r.node ? h('span', { class: 'muted' }, ` on ${r.node}`) : null),
        h('td', { 'data-label': 'Started' }, timeEl(r.started_at)),
        h('td', { 'data-label': 'Duration', class: 'run-duration', dataset: { running: r.finished_at ? null : '1' } },
          seconds === null ? '—' : formatDuration(seconds)),
        h('td', { 'data-label': 'Message', class: 'run-message' }, r.message || '',
          ...(r.hook_deliveries || []).map(hookDelivery)),
        h('td', { 'data-label': 'View' }, view));
    }));
  }

  /** A run's completion hook: where it stands, each try, and a button to send it again. */
  function hookDelivery(d) {
    const tries = d.attempts === 1 ? '1 try' : `${d.attempts} tries`;
    const state = d.status === 'pending' && d.next_attempt_at
      ? ['next try ', timeEl(d.next_attempt_at)]
      : d.finished_at ? [timeEl(d.finished_at)] : [];
    const log = (d.attempt_log || []).map((a) => h('li', null,
      `#${a.attempt} `, timeEl(a.started_at), ` · ${a.status_code ?? 'no answer'} · ${a.duration_ms} ms`,
      a.error ? h('span', { class: 'muted' }, ` · ${a.error}`) : null));
    let again = null;
    if (d.status !== 'pending') {
      again = h('button', { type: 'button', class: 'button button-small btn-hook-retry' }, 'Send again');
      again.addEventListener('click', async () => {
        again.disabled = true;
        try {
          await api('POST', `/tasks/${taskId}/hook-deliveries/${d.id}/retry`);
          toast(`Hook of run #${d.run_id} will be sent again`);
        } catch (err) {
          if (!isAbort(err)) toast(`Send again: ${describeError(err)}`, 'error');
        }
        refreshRunData();
      });
    }
    return h('details', { class: 'hook-delivery', dataset: { hookStatus: d.status, deliveryId: d.id } },
      h('summary', null, 'Hook ',
        h('span', { class: 'badge', dataset: { status: d.status === 'delivered' ? 'completed' : d.status } }, d.status), ` · ${tries} · `, ...state),
      h('div', { class: 'muted' }, h('code', null, d.url)),
      log.length ? h('ol', { class: 'hook-attempts' }, log) : null,
      again);
  }

  // ---------------------------------------------------------------- artifacts
  function renderArtifacts() {
    artifactsEmpty.hidden = artifacts.length > 0;
    const sorted = [...artifacts].sort((a, b) => (b.run_id - a.run_id) || String(a.name).localeCompare(String(b.name)));
    const seen = new Set();
    const latest = [];
    const older = [];
    for (const a of sorted) {
      if (seen.has(a.name)) older.push(a);
      else { seen.add(a.name); latest.push(a); }
    }
    const item = (a, isLatest) => {
      const href = `/api/v1/tasks/${taskId}/artifacts/${encodeURIComponent(a.name)}?run_id=${encodeURIComponent(a.run_id)}`;
      const link = h('a', {
        href, class: 'artifact-link', download: String(a.name).split('/').pop(),
        dataset: isLatest ? { artifact: a.name, runId: a.run_id } : { artifactOld: a.name, runId: a.run_id },
      }, a.name);
      link.addEventListener('click', async (e) => {
        e.preventDefault();
        try {
          await downloadArtifact(taskId, a.name, a.run_id);
        } catch (err) {
          if (!isAbort(err)) toast(`Download failed: ${describeError(err)}`, 'error');
        }
      });
      return h('li', null, link, h('span', { class: 'muted' },
        ` ${formatBytes(a.size)} · run #${a.run_id}${a.created_at ? ` · ${formatDateTime(a.created_at)}` : ''}`));
    };
    const children = latest.map((a) => item(a, true));
    if (older.length) {
      children.push(h('li', { class: 'artifacts-older' }, h('details', null,
        h('summary', null, `${older.length} from earlier runs`),
        h('ul', null, older.map((a) => item(a, false))))));
    }
    artifactsList.replaceChildren(...children);
  }

  // ---------------------------------------------------------------- logs
  let logsLoaded = false;
  let pendingLive = [];
  let lastLogRun = null;
  let logLines = 0;

  const logKey = (l) => {
    const t = Date.parse(l.at || l.created_at);
    return `${l.run_id}|${l.step_id}|${l.level}|${l.message}|${Number.isFinite(t) ? Math.floor(t / 1000) : ''}`;
  };

  function stepLabel(stepId) {
    const t = store.task(taskId);
    const def = t && Array.isArray(t.steps) ? t.steps.find((s) => s.id === stepId) : null;
    return def ? `${def.sort_order} · ${def.controller}` : (stepId !== null && stepId !== undefined ? `step ${stepId}` : '');
  }

  function logItem(l) {
    const at = l.at || l.created_at;
    const level = String(l.level || l.kind || 'info').toLowerCase();
    return h('li', { class: 'log-line', dataset: { level, stepId: l.step_id, runId: l.run_id } },
      h('time', { datetime: at || null, title: at ? formatDateTime(at) : null }, formatClock(at)),
      h('span', { class: 'log-level' }, level),
      h('span', { class: 'log-step' }, stepLabel(l.step_id)),
      h('span', { class: 'log-msg' }, l.message ?? ''));
  }

  function appendLines(lines, replace) {
    const atBottom = logList.scrollHeight - logList.scrollTop - logList.clientHeight < 40;
    const frag = document.createDocumentFragment();
    if (replace) { lastLogRun = null; logLines = 0; }
    for (const l of lines) {
      if (l.run_id !== lastLogRun && l.run_id !== null && l.run_id !== undefined) {
        frag.appendChild(h('li', { class: 'log-run', dataset: { runId: l.run_id } }, `Run #${l.run_id}`));
        lastLogRun = l.run_id;
      }
      frag.appendChild(logItem(l));
      logLines += 1;
    }
    if (replace) logList.replaceChildren(frag);
    else logList.appendChild(frag);
    while (logLines > MAX_LOG_LINES && logList.firstElementChild) {
      if (logList.firstElementChild.classList.contains('log-line')) logLines -= 1;
      logList.firstElementChild.remove();
    }
    logEmpty.hidden = logLines > 0;
    logList.hidden = logLines === 0;
    setText(logCount, logLines ? `${logLines} line${logLines === 1 ? '' : 's'}` : '');
    if (follow.checked && (atBottom || replace)) logList.scrollTop = logList.scrollHeight;
  }

  async function loadLogs() {
    logsLoaded = false;
    try {
      const data = await api('GET', `/tasks/${taskId}/logs`, { query: { limit: 500 }, signal: abort.signal });
      const lines = (data && data.logs) || [];
      const keys = new Set(lines.slice(-500).map(logKey));
      const extra = pendingLive.filter((l) => !keys.has(logKey(l)));
      appendLines(lines.concat(extra), true);
    } catch (err) {
      if (isAbort(err)) return;
      if (!gone) setText(logEmpty, `The log could not be loaded: ${describeError(err)}`);
      appendLines(pendingLive, false);
    } finally {
      pendingLive = [];
      logsLoaded = true;
    }
  }

  const pendingAppend = [];
  const flushLogs = batcher(() => {
    const lines = pendingAppend.splice(0);
    if (lines.length) appendLines(lines, false);
  }, 100);

  function onLog(line) {
    if (!logsLoaded) pendingLive.push(line);
    else {
      pendingAppend.push(line);
      flushLogs();
    }
  }

  follow.addEventListener('change', () => {
    if (follow.checked) logList.scrollTop = logList.scrollHeight;
  });

  // ---------------------------------------------------------------- live
  let lastStatus = null;
  let lastRun = null;
  const flush = batcher((keys) => {
    if (keys.has('header')) renderHeader();
    if (keys.has('steps')) renderSteps();
  }, 50);

  const off = store.on((ev) => {
    if (ev.kind === 'snapshot') {
      if (ev.reconnect) loadAll();
      flush('header');
      flush('steps');
      return;
    }
    if (ev.id !== taskId) return;
    if (ev.kind === 'task') {
      const t = store.task(taskId);
      if (t) {
        if (lastStatus !== null && (t.status !== lastStatus || t.current_run_id !== lastRun) && ev.source === 'live') refreshRunData();
        lastStatus = t.status;
        lastRun = t.current_run_id;
      }
      flush('header');
      flush('steps');
    } else if (ev.kind === 'step') {
      if (ev.state && TERMINAL_STEP.has(ev.state.status)) refreshRunData();
      flush('steps');
    } else if (ev.kind === 'log') {
      onLog(ev.line);
    } else if (ev.kind === 'deleted') {
      markGone('This task was deleted.');
    }
  });

  loadAll();
  renderHeader();
  renderSteps();
  renderRuns();

  return {
    unmount() {
      off();
      abort.abort();
      flush.cancel();
      flushLogs.cancel();
      refreshRunData.cancel();
      live.setLogs(false);
    },
    tick() {
      // Running durations and relative times.
      for (const row of stepRows.values()) {
        const d = row.data;
        if (d && d.startedAt && !d.finishedAt) {
          setText(row.duration, formatDuration(durationBetween(d.startedAt, null)));
        }
      }
      for (const cell of runsBody.querySelectorAll('td.run-duration[data-running]')) {
        const r = runs.find((x) => String(x.id) === cell.parentElement.dataset.runId);
        if (r) setText(cell, formatDuration(durationBetween(r.started_at, null)));
      }
      for (const el of main.querySelectorAll('.view-task time[datetime]')) {
        if (el.closest('#log')) continue;
        updateTimeEl(el, el.getAttribute('datetime'));
      }
    },
  };
}
