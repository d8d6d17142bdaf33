// Create-task form: #/new (optionally #/new?module=tool/x preselects a module).
// Client-side checks first (JSON syntax, required fields), then the API's
// validation: error.field is mapped to the input and shown in a .field-error.
// A step whose module declares a settings schema gets a form built from it
// (schema_form.js), with "Edit as JSON" to fall back to the raw settings.

import { api, describeError, isAbort, ApiError } from './api.js';
import { h, toast, debounce } from './dom.js';
import { canRender, schemaForm } from './schema_form.js';

const UNITS = [['1', 'seconds'], ['60', 'minutes'], ['3600', 'hours'], ['86400', 'days']];

/** "steps[0].settings", "/steps/0/settings", "steps.0.settings" → "steps.0.settings". */
export function normaliseField(field) {
  return String(field || '')
    .trim()
    .replace(/^\$\.?/, '')
    .replace(/^\/+/, '')
    .replace(/\[(\d+)\]/g, '.$1')
    .replace(/\//g, '.')
    .replace(/^body\./, '')
    .replace(/^\.+|\.+$/g, '');
}

/** Parse JSON text; '' gives `fallback`. Returns {value} or {error}. */
export function parseJsonField(text, fallback) {
  const trimmed = String(text || '').trim();
  if (!trimmed) return { value: fallback };
  try {
    return { value: JSON.parse(trimmed) };
  } catch (err) {
    return { error: `Not valid JSON: ${err.message}` };
  }
}

/** The browser's own IANA zone (the default zone of a cron schedule). */
export function browserZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}

/** IANA zone names the browser knows, for the zone field's suggestions. */
function timeZones() {
  try {
    if (typeof Intl.supportedValuesOf === 'function') return ['UTC', ...Intl.supportedValuesOf('timeZone')];
  } catch {
    // An older browser: the user types the name.
  }
  return ['UTC'];
}

export function mount(main, ctx) {
  ctx.setTitle('New task');
  const abort = new AbortController();
  let modules = [];
  let submitting = false;

  // ---------------------------------------------------------------- fields
  const name = h('input', { id: 'new-name', name: 'name', type: 'text', required: true, maxlength: '200', autocomplete: 'off', dataset: { field: 'name' } });
  const code = h('input', { id: 'new-code', name: 'code', type: 'text', autocomplete: 'off', dataset: { field: 'code' }, 'aria-describedby': 'new-code-hint' });
  const priority = h('select', { id: 'new-priority', name: 'priority', dataset: { field: 'priority' } },
    h('option', { value: 'low' }, 'low'), h('option', { value: 'normal', selected: true }, 'normal'), h('option', { value: 'high' }, 'high'));
  priority.value = 'normal';
  const startAt = h('input', { id: 'new-start-at', name: 'start_at', type: 'datetime-local', dataset: { field: 'start_at' }, 'aria-describedby': 'new-start-hint' });
  const interval = h('input', { id: 'new-interval', name: 'run_interval', type: 'number', min: '0', step: '1', value: '0', inputmode: 'numeric', dataset: { field: 'run_interval' }, 'aria-describedby': 'new-interval-hint' });
  const intervalUnit = h('select', { id: 'new-interval-unit', name: 'run_interval_unit', 'aria-label': 'Interval unit' },
    UNITS.map(([v, label]) => h('option', { value: v }, label)));
  intervalUnit.value = '60';
  const cron = h('input', { id: 'new-cron', name: 'cron', type: 'text', autocomplete: 'off', spellcheck: 'false', placeholder: '0 3 * * *', dataset: { field: 'cron' }, 'aria-describedby': 'new-cron-hint' });
  const timezone = h('input', { id: 'new-timezone', name: 'timezone', type: 'text', autocomplete: 'off', spellcheck: 'false', list: 'new-timezones', dataset: { field: 'timezone' }, 'aria-describedby': 'new-timezone-hint' });
  timezone.value = browserZone();
  const zones = h('datalist', { id: 'new-timezones' }, timeZones().map((z) => h('option', { value: z })));
  const maxTime = h('input', { id: 'new-max-time', name: 'max_execution_time', type: 'number', min: '0', step: '1', inputmode: 'numeric', placeholder: 'server default', dataset: { field: 'max_execution_time' }, 'aria-describedby': 'new-max-time-hint' });
  const maxAttempts = h('input', { id: 'new-max-attempts', name: 'max_attempts', type: 'number', min: '1', max: '100', step: '1', inputmode: 'numeric', placeholder: 'server default', dataset: { field: 'max_attempts' } });
  const maxStarts = h('input', { id: 'new-max-starts', name: 'max_starts_per_minute', type: 'number', min: '1', step: '1', inputmode: 'numeric', placeholder: 'any', dataset: { field: 'max_starts_per_minute' }, 'aria-describedby': 'new-max-starts-hint' });
  const hookUrl = h('input', { id: 'new-hook-url', name: 'hook_url', type: 'url', autocomplete: 'off', spellcheck: 'false', placeholder: 'http://127.0.0.1:8080/stepwise/done', dataset: { field: 'hook_url' }, 'aria-describedby': 'new-hook-url-hint' });
  const disabled = h('input', { id: 'new-disabled', name: 'disabled', type: 'checkbox', dataset: { field: 'disabled' } });
  const details = h('textarea', { id: 'new-details', name: 'details', rows: '4', spellcheck: 'false', placeholder: '{"shop": "main"}', dataset: { field: 'details' } });
  const secrets = h('textarea', { id: 'new-secrets', name: 'secrets', rows: '3', spellcheck: 'false', placeholder: '{"mail_api_key": "…"}', dataset: { field: 'secrets' }, 'aria-describedby': 'new-secrets-hint' });
  const formError = h('div', { id: 'new-error', class: 'form-error-area', role: 'alert' });
  const submit = h('button', { type: 'submit', id: 'new-submit', class: 'button button-primary' }, 'Create task');
  const stepsBox = h('div', { id: 'new-steps', class: 'new-steps', dataset: { field: 'steps' } });
  const addStep = h('button', { type: 'button', id: 'new-add-step', class: 'button' }, 'Add a step');
  const modulesNote = h('p', { class: 'hint', id: 'new-modules-note' });

  const field = (label, input, hint, cls) => h('div', { class: `field ${cls || ''}` },
    h('label', { for: input.id }, label), input, hint ? h('p', { class: 'hint', id: hint[0] }, hint[1]) : null);

  const form = h('form', { id: 'new-task-form', class: 'form', novalidate: true },
    formError,
    h('fieldset', null, h('legend', null, 'Task'),
      field('Name', name),
      h('div', { class: 'field-row' },
        field('Code (optional)', code, ['new-code-hint', 'A unique key: creating a task with an existing code updates that task.']),
        field('Priority', priority))),
    h('fieldset', null, h('legend', null, 'Steps'), modulesNote, stepsBox, addStep),
    h('fieldset', null, h('legend', null, 'Schedule'),
      h('div', { class: 'field-row' },
        field('Start at', startAt, ['new-start-hint', 'Your local time. Empty: as soon as possible.']),
        h('div', { class: 'field' },
          h('label', { for: 'new-interval' }, 'Repeat every'),
          h('div', { class: 'input-group' }, interval, intervalUnit),
          h('p', { class: 'hint', id: 'new-interval-hint' }, '0 runs once (or on the cron schedule).'))),
      h('div', { class: 'field-row' },
        field('Or on a cron schedule', cron, ['new-cron-hint', 'Instead of repeating: minute hour day month weekday, e.g. 0 3 * * * for 03:00 every day (a sixth field first is seconds). Leave Repeat every at 0.']),
        h('div', { class: 'field' },
          h('label', { for: 'new-timezone' }, 'Time zone of the schedule'), timezone, zones,
          h('p', { class: 'hint', id: 'new-timezone-hint' }, 'An IANA name such as Europe/Berlin or UTC.'))),
      h('div', { class: 'field field-check' }, disabled, h('label', { for: 'new-disabled' }, 'Create disabled (it will not run until enabled)'))),
    h('fieldset', null, h('legend', null, 'Limits'),
      h('div', { class: 'field-row' },
        field('Time limit for the whole task (seconds)', maxTime, ['new-max-time-hint', '0: no task limit; steps keep their own.']),
        field('Attempts (1–100)', maxAttempts),
        field('Runs a minute at most', maxStarts, ['new-max-starts-hint', 'Empty: no limit. A run due sooner waits its turn.']))),
    h('details', { class: 'advanced' }, h('summary', null, 'Details, secrets and completion hook'),
      field('Details (JSON object, shown to steps)', details),
      field('Secrets (JSON object of strings)', secrets, ['new-secrets-hint', 'Write-only: stored encrypted; only names are shown afterwards.']),
      field('Completion hook URL', hookUrl, ['new-hook-url-hint', 'Gets a signed JSON POST each time a run ends: http, on this machine or a host the admin allows.'])),
    h('div', { class: 'form-actions' }, submit, h('a', { href: '#/tasks', class: 'button button-quiet' }, 'Cancel')));

  main.append(h('section', { class: 'view view-new', 'aria-labelledby': 'new-heading' },
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/tasks' }, 'Tasks'), ' › New'),
    h('h1', { id: 'new-heading' }, 'New task'), form));

  // ---------------------------------------------------------------- steps
  function moduleOptions(select, value) {
    const keep = value !== undefined ? value : select.value;
    const options = [h('option', { value: '' }, modules.length ? 'Choose a module…' : 'No modules registered')];
    for (const m of modules) {
      options.push(h('option', { value: m.path }, m.active === false ? `${m.path} (inactive)` : m.path));
    }
    if (keep && !modules.some((m) => m.path === keep)) options.push(h('option', { value: keep }, keep));
    select.replaceChildren(...options);
    select.value = keep || '';
  }

  function makeStep(preset) {
    const select = h('select', { required: true, class: 'step-module' });
    const settings = h('textarea', { rows: '5', spellcheck: 'false', class: 'step-settings json-input' });
    settings.value = '{}';
    const time = h('input', { type: 'number', min: '1', step: '1', inputmode: 'numeric', placeholder: 'server default', class: 'step-time' });
    const memory = h('input', { type: 'number', min: '1', step: '1', inputmode: 'numeric', placeholder: 'no cap', class: 'step-memory' });
    const interrupt = h('input', { type: 'checkbox', checked: true, class: 'step-interrupt' });
    const legend = h('legend');
    const up = h('button', { type: 'button', class: 'button button-small step-up' }, 'Move up');
    const down = h('button', { type: 'button', class: 'button button-small step-down' }, 'Move down');
    const remove = h('button', { type: 'button', class: 'button button-small step-remove' }, 'Remove');
    const labels = {
      select: h('label', null, 'Module'),
      settings: h('label', null, 'Settings (JSON)'),
      time: h('label', null, 'Time limit (seconds)'),
      memory: h('label', null, 'Memory cap (MiB)'),
      interrupt: h('label', null, 'Stop the run if this step fails'),
    };
    const about = h('p', { class: 'hint step-module-about' });
    about.hidden = true;
    const schemaBox = h('div', { class: 'step-schema' });
    schemaBox.hidden = true;
    const rawField = h('div', { class: 'field step-raw' }, labels.settings, settings);
    const rawToggle = h('button', { type: 'button', class: 'button button-small step-raw-toggle' }, 'Edit as JSON');
    rawToggle.hidden = true;
    const box = h('fieldset', { class: 'new-step' }, legend,
      h('div', { class: 'field' }, labels.select, select),
      about, schemaBox, rawField, rawToggle,
      h('div', { class: 'field-row' },
        h('div', { class: 'field' }, labels.time, time),
        h('div', { class: 'field' }, labels.memory, memory)),
      h('div', { class: 'field field-check' }, interrupt, labels.interrupt),
      h('div', { class: 'step-tools' }, up, down, remove));
    // Checked as the user types (debounced) and on leaving the field, but only
    // when the text changed since the last check or submit: an error the
    // server gave for this text stays until the text changes.
    const check = debounce(() => checkJsonIfChanged(settings), 400);
    const step = { box, select, settings, check, time, memory, interrupt, legend, labels, up, down, remove, schema: null, raw: false };
    moduleOptions(select, preset || '');

    /** Show the form or the raw JSON box. */
    function showForm(form) {
      step.raw = !form;
      schemaBox.hidden = !form;
      rawField.hidden = form;
      rawToggle.textContent = form ? 'Edit as JSON' : 'Edit as form';
    }
    /** The chosen module's description and, when it has a schema we can render, its form. */
    step.applyModule = () => {
      const m = modules.find((x) => x.path === select.value);
      const meta = (m && m.metadata) || {};
      const text = [meta.title, meta.description].filter(Boolean).join(' — ');
      about.textContent = meta.version ? `${text} (version ${meta.version})` : text;
      about.hidden = !text;
      const schema = meta.settings_schema;
      if (!canRender(schema)) {
        step.schema = null;
        schemaBox.replaceChildren();
        schemaBox.hidden = true;
        rawField.hidden = false;
        rawToggle.hidden = true;
        step.raw = false;
        renumber();
        return;
      }
      step.schema = schemaForm(schema);
      const current = parseJsonField(settings.value, {});
      if (!current.error && step.schema.covers(current.value)) step.schema.fill(current.value);
      schemaBox.replaceChildren(step.schema.el);
      rawToggle.hidden = false;
      showForm(true);
      renumber();
    };
    select.addEventListener('change', () => step.applyModule());
    rawToggle.addEventListener('click', () => {
      clearFieldError(settings);
      if (!step.raw) {
        const r = step.schema.read();
        settings.value = JSON.stringify(r.value || {}, null, 2);
        showForm(false);
        settings.focus();
        return;
      }
      const parsed = parseJsonField(settings.value, {});
      if (parsed.error) {
        showFieldError(settings.dataset.field, parsed.error);
        return;
      }
      if (!step.schema.covers(parsed.value)) {
        showFieldError(settings.dataset.field, 'These settings have keys the form has no field for; keep editing them as JSON.');
        return;
      }
      step.schema.fill(parsed.value);
      showForm(true);
    });
    settings.addEventListener('input', check);
    settings.addEventListener('blur', () => { check.cancel(); checkJsonIfChanged(settings); });
    remove.addEventListener('click', () => {
      steps.splice(steps.indexOf(step), 1);
      box.remove();
      renumber();
      (steps[0] ? steps[0].select : addStep).focus();
    });
    up.addEventListener('click', () => move(step, -1));
    down.addEventListener('click', () => move(step, 1));
    return step;
  }

  const steps = [];

  function move(step, delta) {
    const i = steps.indexOf(step);
    const j = i + delta;
    if (j < 0 || j >= steps.length) return;
    steps.splice(i, 1);
    steps.splice(j, 0, step);
    stepsBox.replaceChildren(...steps.map((s) => s.box));
    renumber();
    (delta < 0 ? step.up : step.down).focus();
  }

  /** Ids, legends and data-field names follow the order; the first step owns #new-module etc. */
  function renumber() {
    steps.forEach((s, i) => {
      const suffix = i === 0 ? '' : `-${i + 1}`;
      const ids = {
        select: `new-module${suffix}`, settings: `new-settings${suffix}`, time: `new-step-time${suffix}`,
        memory: `new-step-memory${suffix}`, interrupt: `new-step-interrupt${suffix}`,
      };
      const fields = { select: 'controller', settings: 'settings', time: 'max_execution_time', memory: 'max_memory', interrupt: 'interrupt_on_step_fault' };
      for (const key of Object.keys(ids)) {
        s[key].id = ids[key];
        s[key].name = `steps.${i}.${fields[key]}`;
        s[key].dataset.field = `steps.${i}.${fields[key]}`;
        s.labels[key].setAttribute('for', ids[key]);
      }
      if (s.schema) s.schema.name(ids.settings, `steps.${i}.settings`);
      s.box.dataset.stepIndex = String(i);
      s.legend.textContent = steps.length > 1 ? `Step ${i + 1}` : 'Step';
      s.remove.hidden = steps.length === 1;
      s.up.hidden = steps.length === 1;
      s.down.hidden = steps.length === 1;
      s.up.disabled = i === 0;
      s.down.disabled = i === steps.length - 1;
      s.up.setAttribute('aria-label', `Move step ${i + 1} up`);
      s.down.setAttribute('aria-label', `Move step ${i + 1} down`);
      s.remove.setAttribute('aria-label', `Remove step ${i + 1}`);
    });
  }

  function addStepBox(preset) {
    const step = makeStep(preset);
    steps.push(step);
    stepsBox.appendChild(step.box);
    renumber();
    return step;
  }

  addStep.addEventListener('click', () => addStepBox('').select.focus());
  addStepBox(ctx.query.module || '');

  async function loadModules() {
    try {
      const data = await api('GET', '/modules', { signal: abort.signal });
      modules = ((data && data.modules) || []).slice().sort((a, b) => String(a.path).localeCompare(String(b.path)));
      for (const s of steps) {
        moduleOptions(s.select);
        s.applyModule();
      }
      if (!modules.length) {
        modulesNote.replaceChildren('No modules are registered yet. ', h('a', { href: '#/modules' }, 'Upload one'), ' first.');
      } else {
        modulesNote.replaceChildren(`Pick modules from the ${modules.length} registered. Steps run in this order.`);
      }
    } catch (err) {
      if (isAbort(err)) return;
      modulesNote.replaceChildren(h('span', { class: 'notice-error' }, `Modules could not be loaded: ${describeError(err)}`));
    }
  }
  loadModules();

  // ---------------------------------------------------------------- errors
  function clearErrors() {
    for (const el of form.querySelectorAll('.field-error')) el.remove();
    for (const el of form.querySelectorAll('[aria-invalid]')) {
      el.removeAttribute('aria-invalid');
      const described = (el.getAttribute('aria-describedby') || '').split(' ').filter((x) => x && !x.startsWith('err-'));
      if (described.length) el.setAttribute('aria-describedby', described.join(' '));
      else el.removeAttribute('aria-describedby');
    }
    formError.replaceChildren();
  }

  function clearFieldError(input) {
    const next = input.closest('.field, .input-group, .new-steps');
    const box = next && next.classList.contains('input-group') ? next.parentElement : next;
    if (box) for (const el of box.querySelectorAll(`.field-error[data-for="${input.dataset.field}"]`)) el.remove();
    input.removeAttribute('aria-invalid');
  }

  function findField(fieldName) {
    const all = [...form.querySelectorAll('[data-field]')];
    let key = normaliseField(fieldName);
    const original = key;
    while (key) {
      const el = all.find((e) => e.dataset.field === key);
      if (el) return el;
      const i = key.lastIndexOf('.');
      if (i < 0) break;
      key = key.slice(0, i);
    }
    const last = original.split('.').pop();
    const aliases = { controller: 'controller', module: 'controller', settings: 'settings' };
    if (aliases[last]) return all.find((e) => e.dataset.field === `steps.0.${aliases[last]}`) || null;
    return null;
  }

  let errorCounter = 0;
  function showFieldError(fieldName, message) {
    let input = findField(fieldName);
    // The raw settings box while the step shows its form: say it above the form.
    if (input && input.closest('[hidden]')) input = null;
    errorCounter += 1;
    const id = `err-${errorCounter}`;
    const el = h('p', { class: 'field-error', id, dataset: { for: input ? input.dataset.field : normaliseField(fieldName) } }, message);
    if (!input) {
      el.textContent = fieldName ? `${fieldName}: ${message}` : message;
      formError.appendChild(el);
      return null;
    }
    if (input.type === 'checkbox') input.parentElement.appendChild(el);
    else if (input.parentElement.classList.contains('input-group')) input.parentElement.after(el);
    else if (input === stepsBox) stepsBox.before(el);
    else input.after(el);
    input.setAttribute('aria-invalid', 'true');
    const folded = input.closest('details');
    if (folded) folded.open = true;
    const described = (input.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
    described.push(id);
    input.setAttribute('aria-describedby', described.join(' '));
    return input;
  }

  function checkJson(textarea, required) {
    clearFieldError(textarea);
    const parsed = parseJsonField(textarea.value, required ? undefined : {});
    if (parsed.error) {
      showFieldError(textarea.dataset.field, parsed.error);
      return false;
    }
    return true;
  }

  function checkJsonIfChanged(textarea) {
    if (textarea.value === textarea.lastChecked) return;
    textarea.lastChecked = textarea.value;
    checkJson(textarea, false);
  }

  // ---------------------------------------------------------------- submit
  function intValue(input) {
    const raw = input.value.trim();
    if (raw === '') return { empty: true };
    const n = Number(raw);
    if (!Number.isInteger(n)) return { error: 'Enter a whole number.' };
    return { value: n };
  }

  /** Build the request body, or return {errors: [[field, message]…]}. */
  function build() {
    const errors = [];
    const body = {};
    const nameValue = name.value.trim();
    if (!nameValue) errors.push(['name', 'Give the task a name.']);
    else if (nameValue.length > 200) errors.push(['name', 'At most 200 characters.']);
    body.name = nameValue;
    if (code.value.trim()) body.code = code.value.trim();
    body.priority = priority.value;
    if (startAt.value) {
      const t = new Date(startAt.value);
      if (Number.isNaN(t.getTime())) errors.push(['start_at', 'Enter a valid date and time.']);
      else body.start_at = t.toISOString();
    }
    const iv = intValue(interval);
    if (iv.error) errors.push(['run_interval', iv.error]);
    else if (!iv.empty && iv.value < 0) errors.push(['run_interval', 'Must be 0 or more.']);
    else body.run_interval = iv.empty ? 0 : iv.value * Number(intervalUnit.value);
    if (cron.value.trim()) {
      body.cron = cron.value.trim();
      body.timezone = timezone.value.trim() || 'UTC';
      if (body.run_interval > 0) errors.push(['cron', 'Use either Repeat every or a cron schedule: set Repeat every to 0.']);
    }
    const mt = intValue(maxTime);
    if (mt.error) errors.push(['max_execution_time', mt.error]);
    else if (!mt.empty && mt.value < 0) errors.push(['max_execution_time', 'Must be 0 or more.']);
    else if (!mt.empty) body.max_execution_time = mt.value;
    const ma = intValue(maxAttempts);
    if (ma.error) errors.push(['max_attempts', ma.error]);
    else if (!ma.empty && (ma.value < 1 || ma.value > 100)) errors.push(['max_attempts', 'Between 1 and 100.']);
    else if (!ma.empty) body.max_attempts = ma.value;
    const ms = intValue(maxStarts);
    if (ms.error) errors.push(['max_starts_per_minute', ms.error]);
    else if (!ms.empty && ms.value < 1) errors.push(['max_starts_per_minute', 'At least 1, or empty for no limit.']);
    else if (!ms.empty) body.max_starts_per_minute = ms.value;
    if (hookUrl.value.trim()) body.hook_url = hookUrl.value.trim();
    body.disabled = disabled.checked;
    const d = parseJsonField(details.value, undefined);
    if (d.error) errors.push(['details', d.error]);
    else if (d.value !== undefined) {
      if (!d.value || typeof d.value !== 'object' || Array.isArray(d.value)) errors.push(['details', 'Details must be a JSON object, like {"shop": "main"}.']);
      else body.details = d.value;
    }
    const s = parseJsonField(secrets.value, undefined);
    if (s.error) errors.push(['secrets', s.error]);
    else if (s.value !== undefined) {
      if (!s.value || typeof s.value !== 'object' || Array.isArray(s.value)) errors.push(['secrets', 'Secrets must be a JSON object of strings.']);
      else if (Object.values(s.value).some((v) => typeof v !== 'string')) errors.push(['secrets', 'Every secret value must be a string.']);
      else body.secrets = s.value;
    }
    if (!steps.length) errors.push(['steps', 'Add at least one step.']);
    body.steps = steps.map((st, i) => {
      const step = { sort_order: i + 1, controller: st.select.value, interrupt_on_step_fault: st.interrupt.checked, status: 'scheduled' };
      if (!st.select.value) errors.push([`steps.${i}.controller`, 'Choose a module.']);
      if (st.schema && !st.raw) {
        const r = st.schema.read();
        if (r.errors) errors.push(...r.errors);
        else step.settings = r.value;
      } else {
        const parsed = parseJsonField(st.settings.value, {});
        if (parsed.error) errors.push([`steps.${i}.settings`, parsed.error]);
        else step.settings = parsed.value;
      }
      const t = intValue(st.time);
      if (t.error) errors.push([`steps.${i}.max_execution_time`, t.error]);
      else if (!t.empty && t.value < 1) errors.push([`steps.${i}.max_execution_time`, 'At least 1 second.']);
      else if (!t.empty) step.max_execution_time = t.value;
      const m = intValue(st.memory);
      if (m.error) errors.push([`steps.${i}.max_memory`, m.error]);
      else if (!m.empty && m.value < 1) errors.push([`steps.${i}.max_memory`, 'At least 1 MiB.']);
      else step.max_memory = m.empty ? null : m.value * 1024 * 1024;
      return step;
    });
    return errors.length ? { errors } : { body };
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (submitting) return;
    // The submit checks everything now: no pending check may clear what it shows.
    for (const s of steps) {
      s.check.cancel();
      s.settings.lastChecked = s.settings.value;
    }
    clearErrors();
    const built = build();
    if (built.errors) {
      let first = null;
      for (const [f, m] of built.errors) {
        const input = showFieldError(f, m);
        if (!first && input) first = input;
      }
      if (first && first.focus) first.focus();
      return;
    }
    submitting = true;
    submit.disabled = true;
    submit.setAttribute('aria-busy', 'true');
    submit.textContent = 'Creating…';
    try {
      const response = await api('POST', '/tasks', { body: built.body, raw: true, signal: abort.signal });
      let task = null;
      try {
        task = await response.json();
      } catch {
        task = null;
      }
      const label = task && task.name ? `Task "${task.name}"` : 'Task';
      toast(response.status === 200 ? `${label} updated (same code).` : `${label} created.`);
      if (task && task.id !== undefined) {
        ctx.store.putTasks([task]);
        ctx.navigate(`#/tasks/${task.id}`);
      } else {
        ctx.navigate('#/tasks');
      }
    } catch (err) {
      if (isAbort(err)) return;
      if (err instanceof ApiError && err.field) {
        const input = showFieldError(err.field, err.message);
        if (input && input.focus) input.focus();
      } else {
        formError.replaceChildren(h('p', { class: 'form-error' }, `The task was not created: ${describeError(err)}`));
        formError.scrollIntoView({ block: 'nearest' });
      }
    } finally {
      submitting = false;
      submit.disabled = false;
      submit.removeAttribute('aria-busy');
      submit.textContent = 'Create task';
    }
  });

  return {
    unmount() {
      abort.abort();
    },
  };
}
