// Write Stepwise steps in JavaScript or TypeScript: see README.md.
//
// A step is one function from settings to a JSON-able output:
//
//   import { step, progress } from 'stepwise';
//   export const run = step({ to: 'integer' }, (settings) => ({ counted: settings.to }));
//
// `build.mjs` bundles the step with this file and makes a component of it. The host calls
// come from `stepwise:step/host`, which componentize-js links to the server's functions.

import * as host from 'stepwise:step/host@0.1.0';
import { PermanentError, StepError } from './errors.js';
import { check } from './settings.js';

export { PermanentError, StepError, check };

// componentize-js keeps `fetch` when its http feature is left out (build.mjs leaves it out:
// the server refuses wasi:http), but a call then traps and kills the step. Steps have no
// network: make that an ordinary error the step can catch.
globalThis.fetch = function fetch(resource) {
  throw new TypeError(`fetch(${JSON.stringify(String(resource))}): a step has no network; hand work that needs one to a service through an artifact or the task's output`);
};

/**
 * Make `fn` the step's `run`: `export const run = step(schema, fn)` (or `step(fn)` to take
 * the settings unchecked). The schema checks the settings before `fn` sees them and fills in
 * defaults; a mismatch fails the step permanently, naming the field. A thrown `StepError`
 * fails it with its message; anything else thrown also logs its stack.
 */
export function step(schema, fn) {
  if (fn === undefined) [schema, fn] = [undefined, schema];
  if (typeof fn !== 'function') throw new TypeError('step(schema, fn): fn must be a function');
  return (text) => {
    try {
      const raw = text.trim() === '' || text.trim() === 'null' ? {} : parseJson(text);
      const settings = schema === undefined ? raw : check(schema, raw);
      const output = fn(settings);
      if (output && typeof output.then === 'function') {
        throw new StepError('the step function returned a Promise; steps are synchronous');
      }
      return JSON.stringify(output === undefined ? null : output);
    } catch (e) {
      throw { payload: failure(e) };
    }
  };
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new PermanentError(`invalid settings: ${e.message}`);
  }
}

function failure(e) {
  if (e instanceof StepError) {
    if (e.permanent) host.markPermanent();
    return e.message;
  }
  if (e instanceof Error) {
    log.error(`step threw: ${e.stack || e}`);
    return `${e.name}: ${e.message}`;
  }
  return String(e);
}

/** Report progress: `percent` in 0..100 (clamped) and a short message. One event per call. */
export function progress(percent, message = '') {
  host.progress(percent, String(message));
}

/** Counts items done out of `total`; reports at most once per whole percent (and the last). */
export class Progress {
  constructor(total) {
    this.total = Math.max(0, Math.floor(total));
    this.done = 0;
    this.reported = undefined;
  }

  advance(message = '') {
    this.set(this.done + 1, message);
  }

  set(done, message = '') {
    this.done = Math.min(Math.max(0, Math.floor(done)), this.total);
    const percent = this.percent();
    if (this.reported !== Math.floor(percent) || this.done === this.total) {
      this.reported = Math.floor(percent);
      progress(percent, message);
    }
  }

  percent() {
    return this.total === 0 ? 100 : (this.done * 100) / this.total;
  }
}

const line = (level) => (message) => host.log(level, String(message));

/** Lines in the step's log; `console.log` goes there too (at info). */
export const log = {
  trace: line('trace'),
  debug: line('debug'),
  info: line('info'),
  warn: line('warn'),
  error: line('error'),
};

/** A secret of the task, or `undefined`. Never log or return it. */
export function secret(name) {
  return host.secret(name);
}

/** Like `secret`, but a missing one is a permanent error saying what to do. */
export function requireSecret(name) {
  const value = secret(name);
  if (value === undefined) {
    throw new PermanentError(`secret \`${name}\` is not set on this task; add it to the task's secrets`);
  }
  return value;
}

/** Ids, which attempt this is (1 = first), and the task's details. */
export function context() {
  const raw = host.context();
  let details = {};
  try {
    details = JSON.parse(raw.details) ?? {};
  } catch {
    // The host always sends an object; anything else reads as none.
  }
  return {
    taskId: Number(raw.taskId),
    runId: Number(raw.runId),
    stepId: Number(raw.stepId),
    attempt: raw.attempt,
    details,
  };
}

/** Fuel units and wall-clock milliseconds left. */
export function remaining() {
  const raw = host.remaining();
  return { fuel: Number(raw.fuel), millis: Number(raw.millis) };
}

const encoder = new TextEncoder();
const bytes = (data) => (typeof data === 'string' ? encoder.encode(data) : new Uint8Array(data));
const hostError = (e) => (e && e.payload !== undefined ? e.payload : String(e));

/** Named files of the run, downloadable through the API. */
export const artifact = {
  /** Create or replace the artifact `name` (strings are written as UTF-8). */
  write(name, data) {
    put(name, data, false);
  },
  /** Append to the artifact `name`, creating it if needed. */
  append(name, data) {
    put(name, data, true);
  },
};

function put(name, data, append) {
  try {
    host.artifactWrite(name, bytes(data), append);
  } catch (e) {
    throw new StepError(`could not write artifact \`${name}\`: ${hostError(e)}`);
  }
}

/** State a retry of this step resumes from, saved as JSON. */
export const checkpoint = {
  /** Save `state`, replacing the previous checkpoint. */
  save(state) {
    try {
      host.checkpointSave(encoder.encode(JSON.stringify(state)));
    } catch (e) {
      throw new StepError(`could not save the checkpoint: ${hostError(e)}`);
    }
  },
  /** The state an earlier attempt saved, or `undefined`. */
  load() {
    const data = host.checkpointLoad();
    if (data === undefined) return undefined;
    try {
      return JSON.parse(new TextDecoder().decode(data));
    } catch (e) {
      throw new StepError(`could not decode the checkpoint: ${e.message}`);
    }
  },
};
