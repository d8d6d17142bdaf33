// REST client for /api/v1: bearer token from localStorage, JSON in and out,
// errors as ApiError {status, code, message, field}. A 401 calls the
// unauthorized hook (the app shows the sign-in screen).

const TOKEN_KEY = 'stepwise.token';
const BASE = '/api/v1';

let unauthorizedHook = () => {};

export function onUnauthorized(fn) {
  unauthorizedHook = fn;
}

let memoryToken = '';

export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || memoryToken;
  } catch {
    return memoryToken;
  }
}

export function setToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage disabled (private mode): the token lives for this page only.
  }
  memoryToken = token || '';
}

const token = getToken;

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.field = field || null;
  }
}

/** True for errors that come from an aborted request (a view was left). */
export function isAbort(err) {
  return err && (err.name === 'AbortError' || err.code === 'aborted');
}

function buildUrl(path, query) {
  let url = BASE + path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== null && v !== undefined && v !== '') params.set(k, String(v));
    }
    const qs = params.toString();
    if (qs) url += `?${qs}`;
  }
  return url;
}

async function errorFrom(response) {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText || 'error'}`.trim();
  let field = null;
  try {
    const text = await response.text();
    if (text) {
      try {
        const body = JSON.parse(text);
        const e = body && body.error;
        if (e && typeof e === 'object') {
          code = e.code || code;
          message = e.message || message;
          field = e.field || null;
        } else if (typeof e === 'string') {
          message = e;
        }
      } catch {
        if (text.length < 300) message = text;
      }
    }
  } catch {
    // Body unreadable: keep the status line.
  }
  return new ApiError(response.status, code, message, field);
}

/**
 * api('GET', '/tasks', {query: {status}}) → parsed JSON (null for 204).
 * Options: body (object → JSON; Blob/ArrayBuffer sent raw), query, signal,
 * raw (return the Response), contentType.
 */
export async function api(method, path, options = {}) {
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  let body;
  if (options.body !== undefined) {
    const b = options.body;
    if (b instanceof Blob || b instanceof ArrayBuffer || ArrayBuffer.isView(b)) {
      body = b;
      headers['Content-Type'] = options.contentType || 'application/octet-stream';
    } else {
      body = JSON.stringify(b);
      headers['Content-Type'] = 'application/json';
    }
  }
  let response;
  try {
    response = await fetch(buildUrl(path, options.query), { method, headers, body, signal: options.signal });
  } catch (err) {
    if (isAbort(err)) throw err;
    throw new ApiError(0, 'network', 'Cannot reach the Stepwise server. Is it running?');
  }
  if (response.status === 401) {
    const err = await errorFrom(response);
    unauthorizedHook(err.message);
    throw err;
  }
  if (!response.ok) throw await errorFrom(response);
  if (options.raw) return response;
  if (response.status === 204) return null;
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(response.status, 'bad_response', 'The server sent a response that is not JSON.');
  }
}

/** A readable one-liner for an error, for toasts and notices. */
export function describeError(err) {
  if (!err) return 'Unknown error';
  if (err instanceof ApiError) {
    if (err.status === 403) return `Not allowed for this token's role: ${err.message}`;
    return err.message;
  }
  return err.message || String(err);
}

/** Module paths keep their slashes; each segment is encoded. */
export function modulePath(path) {
  return String(path).split('/').map(encodeURIComponent).join('/');
}

/**
 * PUT a module with upload progress (XMLHttpRequest: fetch has no upload progress).
 * Resolves {status, body}; rejects ApiError.
 */
export function uploadModule(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', `${BASE}/modules/${modulePath(path)}`);
    const t = token();
    if (t) xhr.setRequestHeader('Authorization', `Bearer ${t}`);
    xhr.setRequestHeader('Content-Type', 'application/wasm');
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total);
    });
    xhr.addEventListener('error', () => reject(new ApiError(0, 'network', 'Upload failed: cannot reach the server.')));
    xhr.addEventListener('abort', () => reject(new ApiError(0, 'aborted', 'Upload cancelled.')));
    xhr.addEventListener('load', () => {
      let body = null;
      try {
        body = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve({ status: xhr.status, body });
        return;
      }
      const e = body && body.error && typeof body.error === 'object' ? body.error : {};
      const message = e.message || (xhr.status === 413 ? 'The file is too large (at most 32 MiB).' : `${xhr.status} ${xhr.statusText}`);
      const err = new ApiError(xhr.status, e.code || `http_${xhr.status}`, message, e.field || null);
      if (xhr.status === 401) unauthorizedHook(err.message);
      reject(err);
    });
    xhr.send(file);
  });
}

/** Download an artifact with the bearer token and hand it to the browser as a file. */
export async function downloadArtifact(taskId, name, runId) {
  const response = await api('GET', `/tasks/${encodeURIComponent(taskId)}/artifacts/${encodeURIComponent(name)}`, {
    query: { run_id: runId }, raw: true,
  });
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name.split('/').pop() || 'artifact';
  a.rel = 'noopener';
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
