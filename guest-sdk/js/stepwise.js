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

// componentize-js keeps `fetch` when its http feature is left out (build.mjs leaves it out:
// the server refuses wasi:http), but a call then traps and kills the step. Steps have no
// network: make that an ordinary error the step can catch.
globalThis.fetch = function fetch(resource) {
  throw new TypeError(`fetch(${JSON.stringify(String(resource))}): a step has no network; hand work that needs one to a service through an artifact or the task's output`);
};

/** The step failed with this message; the task's retry policy applies unless `permanent`. */
export class StepError extends Error {
  constructor(message, { permanent = false } = {}) {
    super(message);
    this.name = 'StepError';
    this.permanent = permanent;
  }
}

/** Trying again cannot help (bad settings, a missing secret): the task is not retried. */
export class PermanentError extends StepError {
  constructor(message) {
    super(message, { permanent: true });
    this.name = 'PermanentError';
  }
}

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

/**
 * Check `value` against `schema` and return it with defaults filled in. A schema is a type
 * name ('string', 'number', 'integer', 'boolean', 'object', 'any'), with '?' for optional
 * (`'string?'`); `[schema]` for a list; `{field: schema}` for an object (unknown fields are
 * an error); `{type: schema, default: value}` for a field with a default.
 */
export function check(schema, value, path = '') {
  const fail = (message) => {
    throw new PermanentError(`invalid settings${path ? ` at \`${path}\`` : ''}: ${message}`);
  };
  if (isDefault(schema)) return check(schema.type, value === undefined ? schema.default : value, path);
  if (typeof schema === 'string') {
    const optional = schema.endsWith('?');
    const type = optional ? schema.slice(0, -1) : schema;
    if (value === undefined || value === null) {
      if (optional) return null;
      fail(value === undefined ? 'missing' : `expected ${article(type)}, got null`);
    }
    if (!fits(type, value)) fail(`expected ${article(type)}, got ${describe(value)}`);
    return value;
  }
  if (Array.isArray(schema)) {
    if (!Array.isArray(value)) fail(`expected a list, got ${describe(value)}`);
    return value.map((item, i) => check(schema[0], item, `${path}[${i}]`));
  }
  if (value === undefined) fail('missing');
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    fail(`expected an object, got ${describe(value)}`);
  }
  const unknown = Object.keys(value).find((key) => !(key in schema));
  if (unknown !== undefined) {
    fail(`unknown field \`${unknown}\`; the fields are ${Object.keys(schema).map((k) => `\`${k}\``).join(', ')}`);
  }
  const out = {};
  for (const [key, field] of Object.entries(schema)) {
    const at = path ? `${path}.${key}` : key;
    if (value[key] === undefined && !isDefault(field) && !String(field).endsWith('?')) {
      fail(`missing field \`${key}\``);
    }
    out[key] = check(field, value[key], at);
  }
  return out;
}

function isDefault(schema) {
  return schema !== null && typeof schema === 'object' && !Array.isArray(schema) && 'default' in schema && 'type' in schema;
}

function fits(type, value) {
  switch (type) {
    case 'any': return true;
    case 'integer': return Number.isInteger(value);
    case 'object': return typeof value === 'object' && !Array.isArray(value);
    case 'string': case 'number': case 'boolean': return typeof value === type;
    default: throw new TypeError(`unknown settings type '${type}' in the step's schema`);
  }
}

function article(type) {
  return type === 'any' ? 'a value' : /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

function describe(value) {
  if (Array.isArray(value)) return 'a list';
  if (value === null) return 'null';
  if (typeof value === 'object') return 'an object';
  return `${typeof value} ${JSON.stringify(value)}`;
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
