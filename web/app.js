// Stepwise dashboard — entry point: sign-in, hash router, header, global bar.
//
// Stable selectors for browser tests (keep them):
//   Sign-in      #signin-form, #signin-token (input), #signin-submit, #signin-message; #signout
//                The first-start URL http://host/#token=sw_... signs in directly.
//   Header       #global-running[data-count="N"] with .global-count, .global-link (href #/tasks/ID
//                of the latest running task) and its bar [data-progress]; #live-status[data-state=
//                connecting|live|reconnecting|offline]; nav links a[data-nav=tasks|new|modules|stats|nodes|logs]
//   Progress     every bar is [data-progress="42.5"] role=progressbar aria-valuenow="42.5",
//                followed by .pct ("42%") and .eta ("about 2 min left")
//   Task list    #/tasks  #tasks-table, rows tr[data-task-id="12"][data-status] with .status,
//                [data-progress], .eta, .next-run, .last-result; filters #filter-status,
//                #filter-module, #filter-search; #tasks-more (load more); #tasks-empty
//   Task page    #/tasks/12  #task-title, #task-status (.status), #task-progress [data-progress],
//                #task-message; buttons #btn-run, #btn-cancel, #btn-retry, #btn-toggle
//                (text Disable/Enable), #btn-delete then #btn-delete-confirm;
//                steps #steps tr[data-step-id="3"] with .step-status, [data-progress], .step-error
//                (only when there is an error; [data-limit=out_of_fuel|deadline|memory_cap|…]),
//                .step-result, .step-fuel, .step-memory, .step-duration, .btn-step-run, .btn-step-toggle;
//                runs #runs tr[data-run-id]; live log #log li.log-line[data-level][data-step-id];
//                artifacts #artifacts a[data-artifact="name"]
//   New task     #/new  #new-task-form, #new-name, #new-code, #new-priority, #new-start-at,
//                #new-interval + #new-interval-unit, #new-max-time, #new-max-attempts, #new-max-starts,
//                #new-disabled, #new-hook-url (in details.advanced),
//                #new-details, #new-secrets; first step #new-module (select), #new-settings
//                (textarea), #new-step-time, #new-step-memory, #new-step-interrupt; more steps
//                .new-step[data-step-index] with [data-field="steps.N.controller"] etc.;
//                #new-add-step; #new-submit; errors .field-error (one per failing field, created
//                only when there is an error) and #new-error (form-level)
//   Modules      #/modules  #module-form, #module-file (file input), #module-path, #module-upload,
//                drop zone #module-drop, #module-upload-progress, #module-message;
//                #modules-table tr[data-module-path="a/b"] with .module-active, .module-language, .module-usage,
//                .btn-module-toggle, .btn-module-delete then .btn-module-delete-confirm;
//                limits: details.module-limits (summary .btn-limits-edit with .limits-text),
//                form .limits-form with .input-max-running, .input-max-starts-per-minute,
//                .btn-limits-save, .limits-error
//   Stats        #/stats  #stats-hours, #stats-counts [data-stat="running"], #stats-total,
//                #stats-success-rate, #stats-avg-duration, #stats-runs, #alerts li[data-alert-kind],
//                #throughput-chart (svg, g.tp-bar per hour), #stats-modules; cache (admin)
//                #cache-stats [data-node] with #cache-entries, #cache-bytes, #cache-loaded,
//                #cache-hits, #cache-misses, #cache-clear; #cache-admin-only for weaker roles
//   Nodes        #/nodes  #nodes-table tr[data-node-id][data-state][data-alive] with .node-state,
//                .node-address, .node-running, .node-heartbeat, .node-version
//   Logs         #/logs  #logs-level (select: '' or a minimum level), #logs-task (task id input),
//                #logs-list li.log-line[data-level][data-task-id] newest first, with .log-task
//                (link to the task) and .log-msg; #logs-more (older lines); #logs-empty
//   Toasts       #toasts .toast (.toast-error for errors)

import { api, getToken, setToken, onUnauthorized } from './js/api.js';
import { createStore, createLive } from './js/live.js';
import { h, progressBar, setText, setAttr, batcher } from './js/dom.js';
import * as tasksView from './js/tasks.js';
import * as taskView from './js/task.js';
import * as newView from './js/new.js';
import * as modulesView from './js/modules.js';
import * as statsView from './js/stats.js';
import * as nodesView from './js/nodes.js';
import * as logsView from './js/logs.js';

const store = createStore();
const live = createLive(store, { getToken, onAuthProblem: () => recheckToken() });

let current = null;        // the mounted view {unmount, tick}
let currentKey = '';
let signedIn = false;
let firstRender = true;

const main = document.getElementById('main');

// ---------------------------------------------------------------- routing

function parseRoute() {
  const raw = location.hash.replace(/^#/, '');
  const [pathPart, queryPart = ''] = raw.split('?');
  const path = pathPart.replace(/\/+$/, '') || '/tasks';
  const query = Object.fromEntries(new URLSearchParams(queryPart));
  let m;
  if (path === '/' || path === '/tasks') return { name: 'tasks', view: tasksView, params: {}, query };
  if ((m = /^\/tasks\/(\d+)$/.exec(path))) return { name: 'task', view: taskView, params: { id: Number(m[1]) }, query };
  if (path === '/new') return { name: 'new', view: newView, params: {}, query };
  if (path === '/modules') return { name: 'modules', view: modulesView, params: {}, query };
  if (path === '/stats') return { name: 'stats', view: statsView, params: {}, query };
  if (path === '/nodes') return { name: 'nodes', view: nodesView, params: {}, query };
  if (path === '/logs') return { name: 'logs', view: logsView, params: {}, query };
  return { name: 'notfound', view: null, params: {}, query };
}

function navigate(hash) {
  if (location.hash === hash) render(true);
  else location.hash = hash;
}

function unmountCurrent() {
  if (current && current.unmount) {
    try {
      current.unmount();
    } catch (err) {
      setTimeout(() => { throw err; });
    }
  }
  current = null;
  currentKey = '';
}

function render(force = false) {
  if (!signedIn) return;
  const route = parseRoute();
  const key = `${route.name}:${route.params.id ?? ''}`;
  if (!force && key === currentKey && route.name !== 'tasks') return;
  unmountCurrent();
  main.replaceChildren();
  currentKey = key;
  for (const a of document.querySelectorAll('#nav a[data-nav]')) {
    const active = a.dataset.nav === route.name || (route.name === 'task' && a.dataset.nav === 'tasks');
    setAttr(a, 'aria-current', active ? 'page' : null);
  }
  if (!route.view) {
    document.title = 'Not found · Stepwise';
    main.append(h('h1', { tabindex: '-1' }, 'Page not found'),
      h('p', null, 'There is nothing at this address. ', h('a', { href: '#/tasks' }, 'Go to the task list'), '.'));
  } else {
    try {
      current = route.view.mount(main, {
        params: route.params, query: route.query, store, live, navigate,
        setTitle: (t) => { document.title = t ? `${t} · Stepwise` : 'Stepwise'; },
      }) || null;
    } catch (err) {
      main.replaceChildren(h('h1', { tabindex: '-1' }, 'Something went wrong'),
        h('p', { class: 'notice notice-error', role: 'alert' }, `This page could not be shown: ${err.message}. Reload to try again.`));
      setTimeout(() => { throw err; });
    }
  }
  if (!firstRender) {
    const heading = main.querySelector('h1');
    if (heading) {
      heading.setAttribute('tabindex', '-1');
      heading.focus({ preventScroll: true });
    }
    window.scrollTo(0, 0);
  }
  firstRender = false;
}

// ---------------------------------------------------------------- sign-in

function takeTokenFromFragment() {
  if (!location.hash.startsWith('#token=')) return false;
  const t = new URLSearchParams(location.hash.slice(1)).get('token');
  if (t && t.trim()) setToken(t.trim());
  // Remove the token from the address bar and history.
  history.replaceState(null, '', location.pathname + location.search);
  return true;
}

async function checkToken(token) {
  try {
    const response = await fetch('/api/v1/stats', {
      headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
    });
    if (response.status === 401) return { ok: false, message: 'That token was not accepted. Check it and try again.' };
    // 403 still means the token is known (a role without stats would be odd, but it signs in).
    if (response.ok || response.status === 403) return { ok: true };
    return { ok: false, message: `The server answered ${response.status}. Try again in a moment.` };
  } catch {
    return { ok: false, message: 'Cannot reach the Stepwise server. Is it running?' };
  }
}

let rechecking = false;
async function recheckToken() {
  if (rechecking || !signedIn) return;
  rechecking = true;
  try {
    const token = getToken();
    if (!token) {
      showSignIn('Sign in with a token to continue.');
      return;
    }
    const result = await checkToken(token);
    if (!result.ok && /not accepted/.test(result.message)) {
      setToken('');
      showSignIn('Your token is no longer accepted (401). Sign in again.');
    }
  } finally {
    rechecking = false;
  }
}

function showSignIn(message) {
  const wasSignedIn = signedIn;
  signedIn = false;
  unmountCurrent();
  live.stop();
  store.clear();
  document.body.classList.remove('booting');
  document.body.classList.add('signed-out');
  document.title = 'Sign in · Stepwise';
  const existing = document.getElementById('signin-form');
  if (existing) {
    const msg = document.getElementById('signin-message');
    if (message && msg) {
      setText(msg, message);
      msg.hidden = false;
    }
    return;
  }
  // A hidden user name lets password managers keep the token, and keeps browsers quiet.
  const user = h('input', { type: 'text', name: 'username', autocomplete: 'username', value: 'stepwise', hidden: true, 'aria-hidden': 'true', tabindex: '-1' });
  const input = h('input', {
    id: 'signin-token', name: 'token', type: 'password', autocomplete: 'current-password', spellcheck: 'false',
    required: true, placeholder: 'sw_…', 'aria-describedby': 'signin-help signin-message',
  });
  const submit = h('button', { id: 'signin-submit', type: 'submit', class: 'button-primary' }, 'Sign in');
  const msg = h('p', { id: 'signin-message', class: 'notice notice-error', role: 'alert' }, message || '');
  msg.hidden = !message;
  const form = h('form', { id: 'signin-form', class: 'signin card', novalidate: true },
    h('h1', null, 'Sign in to Stepwise'),
    user,
    h('label', { for: 'signin-token' }, 'API token'),
    input,
    h('p', { id: 'signin-help', class: 'hint' },
      'Use the token printed at the first start (also in the data directory), or one made with ',
      h('code', null, 'stepwise token create'), '. It is kept in this browser only.'),
    msg,
    submit);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const token = input.value.trim();
    if (!token) {
      setText(msg, 'Enter a token.');
      msg.hidden = false;
      input.focus();
      return;
    }
    submit.disabled = true;
    setText(submit, 'Signing in…');
    const result = await checkToken(token);
    submit.disabled = false;
    setText(submit, 'Sign in');
    if (!result.ok) {
      setText(msg, result.message);
      msg.hidden = false;
      input.focus();
      input.select();
      return;
    }
    setToken(token);
    startApp();
  });
  main.replaceChildren(form);
  if (wasSignedIn || message) input.focus();
}

function startApp() {
  signedIn = true;
  document.body.classList.remove('booting', 'signed-out');
  main.replaceChildren();
  firstRender = true;
  live.start();
  render(true);
  renderGlobal();
}

function signOut() {
  setToken('');
  showSignIn('Signed out.');
}

// ---------------------------------------------------------------- header: live status and global bar

const liveStatus = document.getElementById('live-status');
const liveLabels = { connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…', offline: 'offline' };

const globalEl = document.getElementById('global-running');
const globalCount = h('span', { class: 'global-count' }, 'No tasks running');
const globalName = h('span', { class: 'global-name' });
const globalLink = h('a', { class: 'global-link', href: '#/tasks' }, globalCount, globalName);
const globalBar = progressBar('Latest running task');
globalBar.el.hidden = true;
globalEl.replaceChildren(globalLink, globalBar.el);

function renderGlobal() {
  let count = 0;
  let latest = null;
  for (const id of store.ids()) {
    const t = store.task(id);
    if (!t || t.status !== 'running') continue;
    count += 1;
    const rank = [t.current_run_id ?? -1, Date.parse(t.updated_at) || 0];
    if (!latest || rank[0] > latest.rank[0] || (rank[0] === latest.rank[0] && rank[1] > latest.rank[1])) {
      latest = { t, rank };
    }
  }
  globalEl.dataset.count = String(count);
  globalEl.classList.toggle('active', count > 0);
  if (count === 0) {
    setText(globalCount, 'No tasks running');
    setText(globalName, '');
    setAttr(globalLink, 'href', '#/tasks');
    globalBar.el.hidden = true;
    return;
  }
  setText(globalCount, `${count} running`);
  setText(globalName, latest.t.name || `Task ${latest.t.id}`);
  setAttr(globalLink, 'href', `#/tasks/${latest.t.id}`);
  globalBar.el.hidden = false;
  globalBar.set(latest.t.progress, latest.t.eta_seconds, true);
}

const scheduleGlobal = batcher(() => renderGlobal(), 100);

store.on((ev) => {
  if (ev.kind === 'connection') {
    liveStatus.dataset.state = ev.state;
    setText(liveStatus, liveLabels[ev.state] || ev.state);
    setAttr(liveStatus, 'title', ev.detail ? `Live updates: ${ev.state} (${ev.detail})` : `Live updates: ${ev.state}`);
    return;
  }
  if (ev.kind === 'task' || ev.kind === 'snapshot' || ev.kind === 'deleted') scheduleGlobal();
});

// ---------------------------------------------------------------- wiring

onUnauthorized((message) => {
  setToken('');
  showSignIn(`Your token was not accepted (401${message ? `: ${message}` : ''}). Sign in again.`);
});

window.addEventListener('hashchange', () => {
  if (takeTokenFromFragment()) {
    live.stop();
    store.clear();
    startApp();
    return;
  }
  render();
});

document.getElementById('signout').addEventListener('click', signOut);
document.getElementById('skip-link').addEventListener('click', () => {
  const target = main.querySelector('h1') || main;
  target.setAttribute('tabindex', '-1');
  target.focus();
});

window.addEventListener('online', () => live.nudge());
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') live.nudge();
});

// Files dropped outside a drop zone must not navigate away from the dashboard.
window.addEventListener('dragover', (e) => e.preventDefault());
window.addEventListener('drop', (e) => e.preventDefault());

// Relative times ("in 5 min") and running durations stay fresh.
setInterval(() => {
  if (current && current.tick) current.tick();
}, 1000);

takeTokenFromFragment();
if (getToken()) startApp();
else showSignIn('');

// Exposed for debugging in the console only.
Object.defineProperty(window, 'stepwise', { value: { store, live, api }, configurable: true });
