// Modules page: #/modules — upload (file picker or drag-and-drop), list,
// enable/disable, delete, usage (how many tasks use each module), each
// module's title and step-run statistics (last 30 days), a rescan of the
// server's --modules-dir, and the tasks whose module is missing.

import { api, describeError, isAbort, ApiError, uploadModule, modulePath } from './api.js';
import { h, timeEl, formatBytes, toast, updateTimeEl } from './dom.js';

const MAX_BYTES = 32 * 1024 * 1024;
const PATH_RE = /^[a-z0-9_-]+(\/[a-z0-9_-]+){0,7}$/;

/** Problems with a module path, or '' when it is fine. */
export function checkModulePath(path) {
  if (!path) return 'Enter a path like tool/backup/dumptables.';
  if (path.split('/').length > 8) return 'At most 8 segments.';
  if (!PATH_RE.test(path)) return 'Use lowercase letters, digits, "_" and "-", with "/" between segments (no empty segments, no "..").';
  return '';
}

/** A path suggestion from a file name: "Dump Tables.wasm" → "dump-tables". */
export function pathFromFileName(fileName) {
  return String(fileName || '')
    .replace(/\.(wasm|component)$/i, '')
    .toLowerCase()
    .replace(/[^a-z0-9_/-]+/g, '-')
    .replace(/\/+/g, '/')
    .replace(/^[-/]+|[-/]+$/g, '');
}

export function mount(main, ctx) {
  ctx.setTitle('Modules');
  const abort = new AbortController();
  let modules = [];
  const usage = new Map();      // path → tasks count (or null while unknown)
  let selectedFile = null;
  let autoPath = true;
  let uploading = false;

  // ---------------------------------------------------------------- upload form
  const fileInput = h('input', { type: 'file', id: 'module-file', name: 'file', accept: '.wasm,application/wasm', 'aria-describedby': 'module-file-name' });
  const fileName = h('p', { class: 'file-name', id: 'module-file-name' }, 'No file chosen.');
  const drop = h('div', { id: 'module-drop', class: 'dropzone', dataset: { field: 'file' } },
    h('p', { class: 'dropzone-title' }, 'Drop a .wasm component here'),
    h('p', { class: 'muted' }, 'or'),
    h('label', { for: 'module-file', class: 'file-label' }, 'Choose a file'), ' ', fileInput,
    fileName);
  const pathInput = h('input', {
    id: 'module-path', name: 'path', type: 'text', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'none',
    placeholder: 'tool/backup/dumptables', dataset: { field: 'path' }, 'aria-describedby': 'module-path-hint',
  });
  const uploadButton = h('button', { type: 'submit', id: 'module-upload', class: 'button button-primary' }, 'Upload');
  const progress = h('progress', { id: 'module-upload-progress', max: '1', value: '0', 'aria-label': 'Upload progress' });
  progress.hidden = true;
  const message = h('div', { id: 'module-message', class: 'form-message', role: 'status' });
  const form = h('form', { id: 'module-form', class: 'form', novalidate: true },
    drop,
    h('div', { class: 'field' },
      h('label', { for: 'module-path' }, 'Path'),
      pathInput,
      h('p', { class: 'hint', id: 'module-path-hint' },
        'Segments of a–z, 0–9, "_" and "-", up to 8 deep. Uploading to an existing path adds a new version; runs keep the version they started with.')),
    h('div', { class: 'form-actions' }, uploadButton, progress),
    message);

  const tbody = h('tbody');
  const table = h('table', { id: 'modules-table', class: 'table modules-table' },
    h('caption', { class: 'visually-hidden' }, 'Registered modules'),
    h('thead', null, h('tr', null,
      h('th', { scope: 'col' }, 'Path'),
      h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col' }, 'Language'),
      h('th', { scope: 'col' }, 'Used by'),
      h('th', { scope: 'col' }, 'Runs (30 days)'),
      h('th', { scope: 'col' }, 'Limits'),
      h('th', { scope: 'col' }, 'Size'),
      h('th', { scope: 'col' }, 'Hash'),
      h('th', { scope: 'col' }, 'Updated'),
      h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
    tbody);
  const listNote = h('div', { id: 'modules-note' }, h('p', { class: 'notice notice-muted' }, 'Loading modules…'));
  const rescanButton = h('button', { type: 'button', id: 'modules-rescan', class: 'button' }, 'Rescan modules directory');
  const rescanMessage = h('div', { id: 'modules-rescan-message', class: 'form-message', role: 'status' });
  const missingBody = h('tbody');
  const missingPanel = h('section', { class: 'panel', id: 'modules-missing', 'aria-labelledby': 'missing-heading' },
    h('h2', { id: 'missing-heading' }, 'Tasks with a missing module'),
    h('p', { class: 'hint' }, 'These tasks name a module that is not registered (never uploaded, or deleted): their steps cannot run until it is uploaded again.'),
    h('div', { class: 'table-wrap' }, h('table', { id: 'modules-missing-table', class: 'table' },
      h('thead', null, h('tr', null,
        h('th', { scope: 'col' }, 'Module'), h('th', { scope: 'col' }, 'Task'), h('th', { scope: 'col' }, 'Status'))),
      missingBody)));
  missingPanel.hidden = true;

  main.append(h('section', { class: 'view view-modules', 'aria-labelledby': 'modules-heading' },
    h('h1', { id: 'modules-heading' }, 'Modules'),
    h('section', { class: 'panel', 'aria-labelledby': 'upload-heading' },
      h('h2', { id: 'upload-heading' }, 'Upload a module'),
      h('p', { class: 'hint' }, 'A WebAssembly component built for wasm32-wasip2 with the Stepwise guest SDK, at most 32 MiB. It is checked and compiled before it is accepted.'),
      form),
    h('section', { class: 'panel', 'aria-labelledby': 'registered-heading' },
      h('h2', { id: 'registered-heading' }, 'Registered modules'),
      h('div', { class: 'form-actions' }, rescanButton), rescanMessage,
      listNote, h('div', { class: 'table-wrap' }, table)),
    missingPanel));
  table.hidden = true;

  // ---------------------------------------------------------------- field errors
  function clearErrors() {
    for (const el of form.querySelectorAll('.field-error')) el.remove();
    for (const el of [fileInput, pathInput]) el.removeAttribute('aria-invalid');
    message.replaceChildren();
  }

  function fieldError(which, text) {
    const el = h('p', { class: 'field-error', id: `module-${which}-error`, dataset: { for: which } }, text);
    if (which === 'path') {
      pathInput.after(el);
      pathInput.setAttribute('aria-invalid', 'true');
      pathInput.setAttribute('aria-describedby', 'module-path-hint module-path-error');
    } else {
      drop.after(el);
      fileInput.setAttribute('aria-invalid', 'true');
      fileInput.setAttribute('aria-describedby', 'module-file-name module-file-error');
    }
  }

  // ---------------------------------------------------------------- choosing a file
  function choose(file) {
    selectedFile = file || null;
    for (const el of form.querySelectorAll('.field-error[data-for="file"]')) el.remove();
    fileInput.removeAttribute('aria-invalid');
    if (!selectedFile) {
      fileName.textContent = 'No file chosen.';
      return;
    }
    fileName.textContent = `${selectedFile.name} (${formatBytes(selectedFile.size)})`;
    if (autoPath || !pathInput.value.trim()) {
      pathInput.value = pathFromFileName(selectedFile.name);
      autoPath = true;
    }
    if (selectedFile.size > MAX_BYTES) fieldError('file', `This file is ${formatBytes(selectedFile.size)}; the limit is 32 MiB.`);
  }

  fileInput.addEventListener('change', () => choose(fileInput.files && fileInput.files[0]));
  pathInput.addEventListener('input', () => { autoPath = false; });

  let dragDepth = 0;
  drop.addEventListener('dragenter', (e) => {
    e.preventDefault();
    dragDepth += 1;
    drop.classList.add('dragging');
  });
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    if (e.dataTransfer) e.dataTransfer.dropEffect = 'copy';
  });
  drop.addEventListener('dragleave', () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) drop.classList.remove('dragging');
  });
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    e.stopPropagation();
    dragDepth = 0;
    drop.classList.remove('dragging');
    const files = e.dataTransfer && e.dataTransfer.files;
    if (!files || !files.length) return;
    try {
      fileInput.files = files;
    } catch {
      // Some browsers do not allow setting files; selectedFile is enough.
    }
    choose(files[0]);
  });

  async function looksLikeWasm(file) {
    try {
      const head = new Uint8Array(await file.slice(0, 4).arrayBuffer());
      return head.length === 4 && head[0] === 0 && head[1] === 0x61 && head[2] === 0x73 && head[3] === 0x6d;
    } catch {
      return true; // Could not read it here: let the server decide.
    }
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (uploading) return;
    clearErrors();
    const path = pathInput.value.trim();
    let bad = false;
    if (!selectedFile) {
      fieldError('file', 'Choose a .wasm file or drop one here.');
      bad = true;
    } else if (selectedFile.size === 0) {
      fieldError('file', 'This file is empty.');
      bad = true;
    } else if (selectedFile.size > MAX_BYTES) {
      fieldError('file', `This file is ${formatBytes(selectedFile.size)}; the limit is 32 MiB.`);
      bad = true;
    } else if (!(await looksLikeWasm(selectedFile))) {
      fieldError('file', 'This is not a WebAssembly file (it does not start with "\\0asm").');
      bad = true;
    }
    const pathProblem = checkModulePath(path);
    if (pathProblem) {
      fieldError('path', pathProblem);
      bad = true;
    }
    if (bad) {
      (form.querySelector('[aria-invalid="true"]') || fileInput).focus();
      return;
    }
    uploading = true;
    uploadButton.disabled = true;
    uploadButton.textContent = 'Uploading…';
    progress.hidden = false;
    progress.value = 0;
    try {
      const { status, body } = await uploadModule(path, selectedFile, (fraction) => {
        progress.value = fraction;
        if (fraction >= 1) uploadButton.textContent = 'Checking and compiling…';
      });
      const hash = body && body.hash ? ` (sha256 ${String(body.hash).slice(0, 12)}…)` : '';
      message.replaceChildren(h('p', { class: 'notice notice-ok' },
        `${status === 201 ? 'Registered' : 'New version of'} ${path}${hash}.`));
      toast(`Module ${path} uploaded.`);
      selectedFile = null;
      fileInput.value = '';
      fileName.textContent = 'No file chosen.';
      pathInput.value = '';
      autoPath = true;
      loadModules();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return;
      const text = describeError(err);
      if (err instanceof ApiError && err.field === 'path') fieldError('path', text);
      else if (err instanceof ApiError && (err.status === 422 || err.status === 413 || err.status === 400)) fieldError('file', text);
      else message.replaceChildren(h('p', { class: 'notice notice-error', role: 'alert' }, `Upload failed: ${text}`));
    } finally {
      uploading = false;
      uploadButton.disabled = false;
      uploadButton.textContent = 'Upload';
      progress.hidden = true;
    }
  });

  // ---------------------------------------------------------------- list
  function usageText(path) {
    const n = usage.get(path);
    if (n === undefined) return '…';
    if (n === null) return '—';
    return `${n} task${n === 1 ? '' : 's'}`;
  }

  /** "12 runs · 92% ok · 1.4 s avg · last <time>", or "No runs". */
  function statsCell(stats) {
    if (!stats || !stats.runs) return 'No runs';
    const parts = [`${stats.runs} run${stats.runs === 1 ? '' : 's'}`];
    if (typeof stats.success_rate === 'number') parts.push(`${Math.round(stats.success_rate * 100)}% ok`);
    if (typeof stats.average_duration_seconds === 'number') {
      const secs = stats.average_duration_seconds;
      parts.push(`${secs < 10 ? secs.toFixed(1) : Math.round(secs)} s avg`);
    }
    return h('span', null, parts.join(' · '), stats.last_run_at ? [' · last ', timeEl(stats.last_run_at)] : null);
  }

  /** "≤ 2 at once · ≤ 30/min · 1 running", or "None". */
  function limitsText(m) {
    const limits = m.limits || {};
    const parts = [];
    if (limits.max_running != null) parts.push(`≤ ${limits.max_running} at once`);
    if (limits.max_starts_per_minute != null) parts.push(`≤ ${limits.max_starts_per_minute}/min`);
    if (!parts.length) return 'None';
    if (m.usage) parts.push(`${m.usage.running} running`);
    return parts.join(' · ');
  }

  /** The limits cell: what they are, and a small form to change them. */
  function limitsCell(m) {
    const path = m.path;
    const limits = m.limits || {};
    const field = (name, label) => h('label', { class: 'limit-field' }, label,
      h('input', { type: 'number', min: '1', step: '1', name, class: `input-${name.replaceAll('_', '-')}`,
        value: limits[name] == null ? '' : String(limits[name]), placeholder: 'any' }));
    const form = h('form', { class: 'limits-form' },
      field('max_running', 'At once'),
      field('max_starts_per_minute', 'Starts a minute'),
      h('button', { type: 'submit', class: 'button button-small btn-limits-save' }, 'Save'));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const body = {};
      for (const name of ['max_running', 'max_starts_per_minute']) {
        const text = form.elements[name].value.trim();
        body[name] = text === '' ? null : Number(text);
      }
      try {
        const updated = await api('PATCH', `/modules/${modulePath(path)}`, { body: { limits: body }, signal: abort.signal });
        replaceModule({ ...updated, usage: m.usage }, 'btn-limits-edit');
        toast(`${path}: limits saved.`);
      } catch (err) {
        if (isAbort(err)) return;
        // Created only when there is an error (as the other forms' are).
        const error = form.querySelector('.limits-error')
          || form.appendChild(h('p', { class: 'field-error limits-error', role: 'alert' }));
        error.textContent = describeError(err);
      }
    });
    return h('details', { class: 'module-limits' },
      h('summary', { class: 'btn-limits-edit', 'aria-label': `Limits of ${path}` }, h('span', { class: 'limits-text' }, limitsText(m))),
      form);
  }

  function makeRow(m) {
    const path = m.path;
    const active = m.active !== false;
    const toggle = h('button', { type: 'button', class: 'button button-small btn-module-toggle', 'aria-label': `${active ? 'Disable' : 'Enable'} ${path}` }, active ? 'Disable' : 'Enable');
    const del = h('button', { type: 'button', class: 'button button-small button-danger btn-module-delete', 'aria-label': `Delete ${path}` }, 'Delete');
    const confirm = h('span', { class: 'confirm', role: 'group', 'aria-label': `Confirm deleting ${path}` },
      h('span', null, 'Delete?'),
      h('button', { type: 'button', class: 'button button-small button-danger btn-module-delete-confirm' }, 'Yes, delete'),
      h('button', { type: 'button', class: 'button button-small btn-module-delete-keep' }, 'Keep'));
    confirm.hidden = true;
    const usageLink = h('a', { class: 'module-usage', href: `#/tasks?module=${encodeURIComponent(path)}` }, usageText(path));
    const meta = m.metadata || {};
    const tr = h('tr', { dataset: { modulePath: path, active: String(active) } },
      h('td', { 'data-label': 'Path' }, h('code', { class: 'module-path' }, path),
        meta.title ? h('div', { class: 'module-title', title: meta.description || '' },
          meta.version ? `${meta.title} ${meta.version}` : meta.title) : null),
      h('td', { 'data-label': 'Status' }, h('span', { class: 'module-active badge', dataset: { status: active ? 'active' : 'inactive' } }, active ? 'active' : 'inactive')),
      h('td', { 'data-label': 'Language', class: 'module-language' }, m.language || '—'),
      h('td', { 'data-label': 'Used by' }, usageLink),
      h('td', { 'data-label': 'Runs (30 days)', class: 'module-stats' }, statsCell(m.stats)),
      h('td', { 'data-label': 'Limits' }, limitsCell(m)),
      h('td', { 'data-label': 'Size' }, formatBytes(m.size)),
      h('td', { 'data-label': 'Hash' }, h('code', { class: 'module-hash', title: m.hash || '' }, m.hash ? `${String(m.hash).slice(0, 12)}…` : '—')),
      h('td', { 'data-label': 'Updated' }, timeEl(m.updated_at || m.created_at)),
      h('td', { class: 'cell-actions', 'data-label': 'Actions' }, h('div', { class: 'row-actions' },
        toggle,
        h('a', { class: 'button button-small', href: `#/new?module=${encodeURIComponent(path)}`, 'aria-label': `New task with ${path}` }, 'New task'),
        del, confirm)));

    toggle.addEventListener('click', async () => {
      toggle.disabled = true;
      try {
        const updated = await api('PATCH', `/modules/${modulePath(path)}`, { body: { active: !active }, signal: abort.signal });
        replaceModule(updated && updated.path ? updated : { ...m, active: !active }, 'btn-module-toggle');
        toast(`${path} ${active ? 'disabled' : 'enabled'}.`);
      } catch (err) {
        if (!isAbort(err)) toast(`Could not change ${path}: ${describeError(err)}`, 'error');
        toggle.disabled = false;
      }
    });
    del.addEventListener('click', () => {
      confirm.hidden = false;
      del.hidden = true;
      confirm.querySelector('.btn-module-delete-keep').focus();
    });
    confirm.querySelector('.btn-module-delete-keep').addEventListener('click', () => {
      confirm.hidden = true;
      del.hidden = false;
      del.focus();
    });
    const yes = confirm.querySelector('.btn-module-delete-confirm');
    yes.addEventListener('click', async () => {
      yes.disabled = true;
      try {
        await api('DELETE', `/modules/${modulePath(path)}`, { signal: abort.signal });
        modules = modules.filter((x) => x.path !== path);
        usage.delete(path);
        renderList();
        loadMissing();
        toast(`${path} deleted.`);
        const next = tbody.querySelector('button');
        (next || pathInput).focus();
      } catch (err) {
        if (!isAbort(err)) toast(`Could not delete ${path}: ${describeError(err)}`, 'error');
        yes.disabled = false;
      }
    });
    return tr;
  }

  function replaceModule(updated, focusClass) {
    modules = modules.map((x) => (x.path === updated.path ? { ...x, ...updated } : x));
    renderList();
    const row = [...tbody.children].find((tr) => tr.dataset.modulePath === updated.path);
    const button = row && row.querySelector(`.${focusClass}`);
    if (button) button.focus();
  }

  function renderList() {
    if (!modules.length) {
      table.hidden = true;
      listNote.replaceChildren(h('p', { class: 'notice', id: 'modules-empty' }, 'No modules yet. Upload one above.'));
      tbody.replaceChildren();
      return;
    }
    listNote.replaceChildren();
    table.hidden = false;
    tbody.replaceChildren(...modules.map(makeRow));
  }

  function renderUsage() {
    for (const tr of tbody.children) {
      const link = tr.querySelector('.module-usage');
      if (link) link.textContent = usageText(tr.dataset.modulePath);
    }
  }

  async function loadUsage(paths) {
    let i = 0;
    const worker = async () => {
      while (i < paths.length) {
        const path = paths[i++];
        try {
          const m = await api('GET', `/modules/${modulePath(path)}`, { signal: abort.signal });
          usage.set(path, m && typeof m.tasks === 'number' ? m.tasks : null);
        } catch (err) {
          if (isAbort(err)) return;
          usage.set(path, null);
        }
        renderUsage();
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
  }

  async function loadModules() {
    try {
      const data = await api('GET', '/modules', { signal: abort.signal });
      modules = ((data && data.modules) || []).slice().sort((a, b) => String(a.path).localeCompare(String(b.path)));
      renderList();
      loadUsage(modules.slice(0, 200).map((m) => m.path));
    } catch (err) {
      if (isAbort(err)) return;
      const retry = h('button', { type: 'button', class: 'button' }, 'Try again');
      retry.addEventListener('click', loadModules);
      listNote.replaceChildren(h('div', { class: 'notice notice-error', role: 'alert' },
        `Modules could not be loaded: ${describeError(err)} `, retry));
    }
  }

  async function loadMissing() {
    try {
      const data = await api('GET', '/modules/missing', { signal: abort.signal });
      const tasks = (data && data.tasks) || [];
      missingBody.replaceChildren(...tasks.map((t) => h('tr', { dataset: { module: t.module, taskId: String(t.task_id) } },
        h('td', { 'data-label': 'Module' }, h('code', null, t.module)),
        h('td', { 'data-label': 'Task' }, h('a', { href: `#/tasks/${t.task_id}` }, `${t.task_name} (#${t.task_id})`)),
        h('td', { 'data-label': 'Status' }, t.task_status))));
      missingPanel.hidden = !tasks.length;
    } catch (err) {
      if (!isAbort(err)) missingPanel.hidden = true;
    }
  }

  rescanButton.addEventListener('click', async () => {
    rescanButton.disabled = true;
    rescanButton.textContent = 'Rescanning…';
    rescanMessage.replaceChildren();
    try {
      const r = await api('POST', '/modules/rescan', { signal: abort.signal });
      const count = (k) => ((r && r[k]) || []).length;
      const failed = (r && r.failed) || [];
      rescanMessage.replaceChildren(h('p', { class: `notice ${failed.length ? 'notice-error' : 'notice-ok'}` },
        `Rescanned: ${count('added')} added, ${count('updated')} updated, ${count('unchanged')} unchanged, ${failed.length} failed.`),
      failed.length ? h('ul', null, failed.map((f) => h('li', null, `${f.module}: ${f.error}`))) : null);
      loadModules();
      loadMissing();
    } catch (err) {
      if (!isAbort(err)) rescanMessage.replaceChildren(h('p', { class: 'notice notice-error', role: 'alert' }, `Rescan failed: ${describeError(err)}`));
    } finally {
      rescanButton.disabled = false;
      rescanButton.textContent = 'Rescan modules directory';
    }
  });

  loadModules();
  loadMissing();

  let ticks = 0;
  return {
    unmount() {
      abort.abort();
    },
    tick() {
      ticks += 1;
      if (ticks % 15) return;
      for (const el of tbody.querySelectorAll('time[datetime]')) updateTimeEl(el, el.getAttribute('datetime'));
    },
  };
}
