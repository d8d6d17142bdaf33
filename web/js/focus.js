// The focus page (/focus/{id}): one task's live progress — bar, ETA, message,
// current step — over the WebSocket, and, when the task's run ends, a
// redirect to the URL the server checked and wrote into the page.
//
// The token comes from the fragment (#token=…; never sent to a server), or
// else from the dashboard's sign-in on this browser. It is kept for this tab
// only and taken out of the address bar, so a copied link does not carry it.

import { createStore, createLive } from './live.js';
import { progressBar, setText } from './dom.js';

const TAB_TOKEN_KEY = 'stepwise.focus.token';
const DASHBOARD_TOKEN_KEY = 'stepwise.token';
/** How long the final state shows before the redirect. */
const REDIRECT_DELAY_MS = 1200;

function meta(name) {
  const el = document.querySelector(`meta[name="${name}"]`);
  return el ? el.getAttribute('content') || '' : '';
}

function storage(kind) {
  try {
    return kind === 'session' ? window.sessionStorage : window.localStorage;
  } catch {
    return null; // Storage disabled (a sandboxed or third-party frame).
  }
}

function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const given = fragment.get('token');
  const tab = storage('session');
  if (given) {
    if (tab) tab.setItem(TAB_TOKEN_KEY, given);
    history.replaceState(null, '', location.pathname + location.search);
    return given;
  }
  const local = storage('local');
  return (tab && tab.getItem(TAB_TOKEN_KEY)) || (local && local.getItem(DASHBOARD_TOKEN_KEY)) || '';
}

const taskId = Number(meta('stepwise-task'));
const redirect = meta('stepwise-redirect');
const target = meta('stepwise-redirect-target') === 'frame' ? 'frame' : 'top';
const token = takeToken();

const nameEl = document.getElementById('focus-name');
const statusEl = document.getElementById('focus-status');
const stepEl = document.getElementById('focus-step');
const messageEl = document.getElementById('focus-message');
const noteEl = document.getElementById('focus-note');
const bar = progressBar('Task progress');
document.getElementById('focus-progress').append(bar.el);

function note(text) {
  noteEl.hidden = !text;
  setText(noteEl, text || '');
}

const ENDED = new Set(['completed', 'failed', 'cancelled']);
let sawRunning = false;
let ended = false;

/** Send the browser on: the whole window, or only this frame. */
function leave(status) {
  if (window.parent !== window) {
    // The host page may prefer to act itself (it is an embed origin: only those may frame this page).
    window.parent.postMessage({ type: 'stepwise:focus-ended', task_id: taskId, status, redirect }, '*');
  }
  if (!redirect) return;
  note('Done. Taking you back…');
  setTimeout(() => {
    if (target === 'top') {
      try {
        window.top.location.href = redirect;
        return;
      } catch {
        // A browser may refuse a cross-origin frame the top window: go in the frame.
      }
    }
    location.href = redirect;
  }, REDIRECT_DELAY_MS);
}

function currentStep(task, store) {
  for (const state of store.liveSteps(task.id).values()) {
    if (state.status === 'running') {
      const step = (task.steps || []).find((s) => s.id === state.step_id);
      return step ? step.controller : `step ${state.step_id}`;
    }
  }
  const step = (task.steps || []).find((s) => s.id === task.current_step);
  return step ? step.controller : '';
}

function render(store) {
  const task = store.task(taskId);
  if (!task) return;
  document.title = `${task.name || 'Task'} · Stepwise`;
  setText(nameEl, task.name || `Task ${taskId}`);
  setText(statusEl, task.status);
  statusEl.dataset.status = task.status;
  const running = task.status === 'running';
  bar.set(task.progress, task.eta_seconds, running);
  setText(stepEl, running ? currentStep(task, store) : '');
  setText(messageEl, task.message || '');
  if (running) sawRunning = true;
  // The run ends: a final status, or a recurring task back to scheduled.
  if (!ended && (ENDED.has(task.status) || (sawRunning && !running))) {
    ended = true;
    leave(task.status);
  }
}

async function start() {
  if (!Number.isInteger(taskId) || taskId < 1) {
    note('Open this page as /focus/{task id}.');
    return;
  }
  if (!token) {
    note('This page needs a token: add #token=… (a viewer token) to its address.');
    return;
  }
  const store = createStore();
  store.on((ev) => {
    if (ev.id === undefined || ev.id === taskId || ev.kind === 'snapshot') render(store);
    if (ev.kind === 'deleted' && ev.id === taskId) note('This task was deleted.');
  });
  let response;
  try {
    response = await fetch(`/api/v1/tasks/${taskId}`, { headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' } });
  } catch {
    note('Cannot reach the Stepwise server.');
    return;
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    note((body && body.error && body.error.message) || `The task could not be loaded (${response.status}).`);
    return;
  }
  store.putTasks([await response.json()]);
  const live = createLive(store, {
    getToken: () => token,
    onAuthProblem: () => note('The token was refused; ask for a new link.'),
    tasks: [taskId],
  });
  live.start();
}

start();
