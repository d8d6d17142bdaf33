// The live store: REST task data merged with WebSocket state, and the
// WebSocket itself (/api/v1/events) with auth, subscribe, per-task sequence
// numbers, reconnect with backoff, and "the new snapshot is the truth".
//
// The store part has no DOM or network dependency (see createStore), so it
// can be checked outside a browser.

import { parseTime } from './dom.js';

// ---------------------------------------------------------------- store

// Fields the server leaves out when they have no value (it sends no nulls);
// the views compare them with null.
const TASK_OPTIONAL = ['message', 'run_id', 'current_step', 'eta_seconds', 'last_result', 'next_run_at'];
const STEP_OPTIONAL = ['message', 'error'];

function withNulls(state, fields) {
  for (const field of fields) if (state[field] === undefined) state[field] = null;
  return state;
}

export function createStore() {
  const rest = new Map();       // task id → Task from REST
  const live = new Map();       // task id → TaskState from the WebSocket
  const steps = new Map();      // task id → Map(step id → StepState) of the current run
  const seqs = new Map();       // task id → last applied seq
  const shown = new Map();      // task id → {run, progress}: what the bars last showed
  const deleted = new Set();    // task ids deleted while we watched
  const listeners = new Set();

  function emit(event) {
    for (const fn of listeners) {
      try {
        fn(event);
      } catch (err) {
        // A broken view must not stop the others; report once without throwing.
        setTimeout(() => { throw err; });
      }
    }
  }

  function on(fn) {
    listeners.add(fn);
    return () => listeners.delete(fn);
  }

  function liveIsNewer(r, l) {
    const rt = parseTime(r.updated_at);
    const lt = parseTime(l.updated_at);
    if (rt === null || lt === null) return true;
    return lt >= rt;
  }

  /** Task as the dashboard shows it: REST fields, overlaid with newer live state. */
  function task(id) {
    id = Number(id);
    const r = rest.get(id);
    const l = live.get(id);
    if (!r && !l) return undefined;
    let t;
    if (!l) {
      t = { ...r, eta_seconds: null, current_step: null };
    } else if (!r) {
      t = {
        id, name: l.name, code: null, status: l.status, progress: l.progress, message: l.message,
        current_run_id: l.run_id, current_step: l.current_step, eta_seconds: l.eta_seconds,
        last_result: l.last_result, next_run_at: l.next_run_at, updated_at: l.updated_at,
        steps: [], partial: true,
      };
    } else if (liveIsNewer(r, l)) {
      t = {
        ...r, name: l.name || r.name, status: l.status, progress: l.progress, message: l.message,
        current_run_id: l.run_id ?? r.current_run_id, current_step: l.current_step,
        eta_seconds: l.eta_seconds, last_result: l.last_result, next_run_at: l.next_run_at,
        updated_at: l.updated_at,
      };
    } else {
      const sameRun = l.run_id !== null && l.run_id === r.current_run_id && r.status === 'running';
      t = { ...r, eta_seconds: sameRun ? l.eta_seconds : null, current_step: sameRun ? l.current_step : null };
    }
    // Progress never goes backwards on screen within one run.
    const run = t.current_run_id ?? null;
    const before = shown.get(id);
    let progress = Number(t.progress) || 0;
    if (t.status === 'running' && before && before.run === run && run !== null && progress < before.progress) {
      progress = before.progress;
    }
    t.progress = progress;
    shown.set(id, { run, progress });
    return t;
  }

  function ids() {
    const all = new Set([...rest.keys(), ...live.keys()]);
    return [...all].sort((a, b) => b - a);
  }

  /**
   * Store REST tasks (list or single). `authoritative`: the answer to our own
   * action (run, retry, PATCH…), newer than any live state we hold for it.
   */
  function putTasks(tasks, authoritative = false) {
    for (const t of tasks) {
      if (!t || t.id === undefined) continue;
      const id = Number(t.id);
      deleted.delete(id);
      if (authoritative) {
        const l = live.get(id);
        if (l && !(l.run_id === t.current_run_id && t.status === 'running')) live.delete(id);
      }
      rest.set(id, t);
      emit({ kind: 'task', id, source: 'rest' });
    }
  }

  function removeTask(id) {
    id = Number(id);
    rest.delete(id);
    live.delete(id);
    steps.delete(id);
    shown.delete(id);
    deleted.add(id);
    emit({ kind: 'deleted', id });
  }

  function liveSteps(id) {
    return steps.get(Number(id)) || new Map();
  }

  function putStep(state) {
    const id = Number(state.task_id);
    let map = steps.get(id);
    if (map) {
      const any = map.values().next().value;
      if (any && any.run_id !== state.run_id) {
        if (state.run_id < any.run_id) return false; // an older run's step: stale
        map.clear();
      }
    } else {
      map = new Map();
      steps.set(id, map);
    }
    const previous = map.get(Number(state.step_id));
    const next = { ...state };
    if (previous && previous.run_id === next.run_id && next.status === 'running') {
      next.progress = Math.max(Number(previous.progress) || 0, Number(next.progress) || 0);
    }
    map.set(Number(state.step_id), next);
    return true;
  }

  /** Snapshot: replace all live state. Returns nothing; emits 'snapshot'. */
  function applySnapshot(message, reconnect) {
    live.clear();
    steps.clear();
    seqs.clear();
    for (const t of message.tasks || []) {
      const id = Number(t.task_id);
      live.set(id, withNulls({ ...t }, TASK_OPTIONAL));
      seqs.set(id, Math.max(seqs.get(id) || 0, Number(t.seq) || 0));
      // A new snapshot is the truth: restart the on-screen guard from it.
      shown.delete(id);
    }
    for (const s of message.steps || []) {
      const id = Number(s.task_id);
      putStep(withNulls({ ...s }, STEP_OPTIONAL));
      seqs.set(id, Math.max(seqs.get(id) || 0, Number(s.seq) || 0));
    }
    emit({ kind: 'snapshot', reconnect: !!reconnect });
  }

  /** One live event; ignored when its seq is not newer than the last seen for its task. */
  function applyEvent(ev) {
    const id = Number(ev.task_id);
    if (!Number.isFinite(id)) return false;
    const seq = Number(ev.seq);
    if (Number.isFinite(seq)) {
      const last = seqs.get(id) || 0;
      if (seq <= last) return false;
      seqs.set(id, seq);
    }
    switch (ev.type) {
      case 'task': {
        const state = withNulls({ ...ev }, TASK_OPTIONAL);
        delete state.type;
        const previous = live.get(id);
        if (previous && previous.run_id !== state.run_id && state.run_id !== null && state.run_id !== undefined) {
          // A new run started: its steps start fresh.
          const map = steps.get(id);
          if (map) {
            const any = map.values().next().value;
            if (any && any.run_id !== state.run_id) map.clear();
          }
        }
        live.set(id, state);
        deleted.delete(id);
        emit({ kind: 'task', id, source: 'live', known: rest.has(id) });
        return true;
      }
      case 'step': {
        const state = withNulls({ ...ev }, STEP_OPTIONAL);
        delete state.type;
        if (putStep(state)) emit({ kind: 'step', id, stepId: Number(ev.step_id), state: steps.get(id).get(Number(ev.step_id)) });
        return true;
      }
      case 'log':
        emit({ kind: 'log', id, line: ev });
        return true;
      case 'deleted':
        removeTask(id);
        return true;
      default:
        return false;
    }
  }

  function clear() {
    rest.clear();
    live.clear();
    steps.clear();
    seqs.clear();
    shown.clear();
  }

  return {
    on, emit, task, ids, putTasks, removeTask, liveSteps, applySnapshot, applyEvent, clear,
    isDeleted: (id) => deleted.has(Number(id)),
    hasRest: (id) => rest.has(Number(id)),
  };
}

// ---------------------------------------------------------------- WebSocket

/**
 * createLive(store, {getToken, onAuthProblem, tasks}) → {start, stop, setLogs, state}.
 * `tasks`: the ids to follow (the focus page follows one); all tasks by default.
 * Emits {kind: 'connection', state: 'connecting'|'live'|'reconnecting'|'offline', detail}.
 */
export function createLive(store, options) {
  let socket = null;
  let wantLogs = false;
  let subscribedLogs = null;    // the logs flag the current socket subscribed with
  let running = false;
  let attempt = 0;
  let timer = null;
  let everSnapshot = false;
  let dropped = false;          // the last connection ended on its own (not by setLogs)
  let gotSnapshot = false;
  let failuresWithoutSnapshot = 0;
  let state = 'offline';

  function setState(next, detail) {
    state = next;
    store.emit({ kind: 'connection', state: next, detail: detail || '' });
  }

  function url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${proto}//${location.host}/api/v1/events`;
  }

  function subscribeMessage() {
    return JSON.stringify({ type: 'subscribe', tasks: options.tasks || 'all', logs: wantLogs });
  }

  function connect(quiet = false) {
    if (!running) return;
    clearTimeout(timer);
    timer = null;
    gotSnapshot = false;
    // A deliberate re-subscribe (logs on/off) keeps showing "live" until the new snapshot.
    if (!quiet || state !== 'live') setState(attempt === 0 && !everSnapshot ? 'connecting' : 'reconnecting');
    let ws;
    try {
      ws = new WebSocket(url());
    } catch {
      scheduleReconnect();
      return;
    }
    socket = ws;
    ws.addEventListener('open', () => {
      if (socket !== ws) return;
      ws.send(JSON.stringify({ type: 'auth', token: options.getToken() }));
      subscribedLogs = wantLogs;
      ws.send(subscribeMessage());
    });
    ws.addEventListener('message', (e) => {
      if (socket !== ws) return;
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      if (!msg || typeof msg !== 'object') return;
      if (msg.type === 'snapshot') {
        const reconnect = everSnapshot && dropped;
        everSnapshot = true;
        dropped = false;
        gotSnapshot = true;
        attempt = 0;
        failuresWithoutSnapshot = 0;
        store.applySnapshot(msg, reconnect);
        setState('live');
      } else if (msg.type === 'events') {
        // One frame per flush of the server's feed, events in seq order per task.
        for (const ev of Array.isArray(msg.events) ? msg.events : []) store.applyEvent(ev);
      } else if (msg.type === 'error') {
        setState(state, msg.message || 'error');
        store.emit({ kind: 'live-error', message: msg.message || '' });
        if (/auth|token|unauthori[sz]ed|forbidden/i.test(msg.message || '')) options.onAuthProblem();
      }
    });
    ws.addEventListener('close', () => {
      if (socket !== ws) return;
      socket = null;
      dropped = true;
      if (!gotSnapshot) {
        failuresWithoutSnapshot += 1;
        // Closed before any snapshot twice in a row: maybe the token is bad.
        if (failuresWithoutSnapshot === 2) options.onAuthProblem();
      }
      scheduleReconnect();
    });
    // 'error' is always followed by 'close'; nothing to do here.
    ws.addEventListener('error', () => {});
  }

  function scheduleReconnect() {
    if (!running) {
      setState('offline');
      return;
    }
    attempt += 1;
    const base = Math.min(15000, 500 * 2 ** Math.min(attempt - 1, 5));
    const delay = base / 2 + Math.random() * base / 2;
    setState('reconnecting', `retrying in ${Math.ceil(delay / 1000)} s`);
    clearTimeout(timer);
    timer = setTimeout(() => connect(), delay);
  }

  function closeSocket() {
    const ws = socket;
    socket = null;
    subscribedLogs = null;
    if (!ws) return;
    if (ws.readyState === 0) {
      // Closing while CONNECTING makes browsers log an error: close once open instead.
      ws.addEventListener('open', () => ws.close(1000, 'bye'));
      return;
    }
    try {
      ws.close(1000, 'bye');
    } catch {
      // Already closed.
    }
  }

  function start() {
    if (running) return;
    running = true;
    attempt = 0;
    connect();
  }

  function stop() {
    running = false;
    clearTimeout(timer);
    timer = null;
    closeSocket();
    everSnapshot = false;
    dropped = false;
    setState('offline');
  }

  /** Logs on a task page only. The contract does not say a second subscribe replaces the first, so reconnect. */
  function setLogs(on) {
    if (wantLogs === !!on) return;
    wantLogs = !!on;
    // Not connected yet, or still connecting: the subscribe sent on open carries the new flag.
    if (!running || !socket || socket.readyState === 0 || subscribedLogs === wantLogs) return;
    closeSocket();
    attempt = 0;
    connect(true);
  }

  /** Reconnect now (e.g. the network came back or the tab became visible). */
  function nudge() {
    if (running && !socket) {
      attempt = 0;
      connect();
    }
  }

  return { start, stop, setLogs, nudge, get state() { return state; }, get logs() { return wantLogs; } };
}
