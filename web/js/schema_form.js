// A step's settings as a form, rendered from the JSON Schema its module
// declares (GET /modules → metadata.settings_schema). Each top-level property
// becomes one input: text, number, checkbox, a choice for an enum, one line per
// item for an array of strings, and a small JSON box for anything else. The
// server checks the settings against the whole schema again at create; its
// errors name the field (steps[0].settings.file), which is the input's
// data-field here, so they show beside the input.

import { h } from './dom.js';

/** How a property is edited. */
export function kindOf(prop) {
  if (!prop || typeof prop !== 'object') return 'json';
  if (Array.isArray(prop.enum) && prop.enum.length && prop.enum.every((v) => typeof v === 'string' || typeof v === 'number')) return 'enum';
  const type = prop.type;
  if (type === 'string' || type === 'integer' || type === 'number' || type === 'boolean') return type;
  if (type === 'array' && prop.items && prop.items.type === 'string' && !prop.items.enum) return 'strings';
  return 'json';
}

/** Whether a schema can be shown as a form: an object with named properties. */
export function canRender(schema) {
  return !!schema && typeof schema === 'object' && schema.type === 'object'
    && !!schema.properties && typeof schema.properties === 'object'
    && Object.keys(schema.properties).length > 0
    && Object.values(schema.properties).every((p) => p && typeof p === 'object');
}

const safeId = (name) => String(name).replace(/[^A-Za-z0-9_-]/g, '_');

function makeField(name, prop, required) {
  const kind = kindOf(prop);
  const title = prop.title || name;
  const label = h('label', null, title, required ? h('span', { class: 'required-mark', title: 'required' }, ' *') : null);
  let input;
  if (kind === 'enum') {
    input = h('select', { class: 'schema-input' },
      required ? null : h('option', { value: '' }, '(not set)'),
      prop.enum.map((v) => h('option', { value: JSON.stringify(v) }, String(v))));
  } else if (kind === 'boolean') {
    input = h('input', { type: 'checkbox', class: 'schema-input' });
  } else if (kind === 'integer' || kind === 'number') {
    input = h('input', {
      type: 'number', class: 'schema-input', inputmode: kind === 'integer' ? 'numeric' : 'decimal',
      step: kind === 'integer' ? '1' : 'any',
      min: prop.minimum !== undefined ? String(prop.minimum) : null,
      max: prop.maximum !== undefined ? String(prop.maximum) : null,
    });
  } else if (kind === 'string') {
    input = h('input', { type: 'text', class: 'schema-input', autocomplete: 'off', spellcheck: 'false' });
  } else {
    input = h('textarea', { class: 'schema-input json-input', rows: kind === 'strings' ? '3' : '4', spellcheck: 'false' });
  }
  if (required) input.setAttribute('aria-required', 'true');
  input.dataset.property = name;
  input.dataset.kind = kind;
  const hintText = kind === 'strings' ? [prop.description, 'One per line.'].filter(Boolean).join(' ')
    : kind === 'json' ? [prop.description, 'JSON.'].filter(Boolean).join(' ') : prop.description;
  const hint = hintText ? h('p', { class: 'hint' }, hintText) : null;
  const box = kind === 'boolean'
    ? h('div', { class: 'field field-check schema-field' }, input, label, hint)
    : h('div', { class: 'field schema-field' }, label, input, hint);

  /** The value, `undefined` when not set, or {error}. */
  function read() {
    if (kind === 'boolean') return { value: input.checked };
    if (kind === 'enum') return input.value === '' ? {} : { value: JSON.parse(input.value) };
    const raw = input.value.trim();
    if (raw === '') return required ? { error: `${title} is required.` } : {};
    if (kind === 'integer' || kind === 'number') {
      const n = Number(raw);
      if (!Number.isFinite(n)) return { error: 'Enter a number.' };
      if (kind === 'integer' && !Number.isInteger(n)) return { error: 'Enter a whole number.' };
      if (prop.minimum !== undefined && n < prop.minimum) return { error: `At least ${prop.minimum}.` };
      if (prop.maximum !== undefined && n > prop.maximum) return { error: `At most ${prop.maximum}.` };
      return { value: n };
    }
    if (kind === 'string') return { value: input.value };
    if (kind === 'strings') return { value: input.value.split('\n').map((s) => s.trim()).filter(Boolean) };
    try {
      return { value: JSON.parse(raw) };
    } catch (err) {
      return { error: `Not valid JSON: ${err.message}` };
    }
  }

  /** Show `value`, or the schema's default when it is undefined. */
  function write(value) {
    const v = value === undefined ? prop.default : value;
    if (kind === 'boolean') input.checked = v === true;
    else if (kind === 'enum') input.value = v === undefined ? (required ? JSON.stringify(prop.enum[0]) : '') : JSON.stringify(v);
    else if (v === undefined || v === null) input.value = '';
    else if (kind === 'strings' && Array.isArray(v)) input.value = v.join('\n');
    else if (kind === 'string' || kind === 'integer' || kind === 'number') input.value = String(v);
    else input.value = JSON.stringify(v, null, 2);
  }

  return { name, input, label, box, read, write };
}

/**
 * The form for `schema` (check canRender first). `name(idBase, fieldBase)`
 * gives each input its id (`${idBase}-${property}`) and data-field
 * (`${fieldBase}.${property}`); `read()` gives {value} or {errors: [[field,
 * message]…]}; `fill(settings)` shows settings (defaults where unset).
 */
export function schemaForm(schema) {
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  const fields = Object.entries(schema.properties).map(([name, prop]) => makeField(name, prop, required.has(name)));
  const el = h('div', { class: 'schema-form' }, fields.map((f) => f.box));
  const form = {
    el,
    name(idBase, fieldBase) {
      for (const f of fields) {
        f.input.id = `${idBase}-${safeId(f.name)}`;
        f.input.name = `${fieldBase}.${f.name}`;
        f.input.dataset.field = `${fieldBase}.${f.name}`;
        f.label.setAttribute('for', f.input.id);
      }
    },
    read() {
      const value = {};
      const errors = [];
      for (const f of fields) {
        const r = f.read();
        if (r.error) errors.push([f.input.dataset.field, r.error]);
        else if (r.value !== undefined) value[f.name] = r.value;
      }
      return errors.length ? { errors } : { value };
    },
    fill(settings) {
      const given = settings && typeof settings === 'object' && !Array.isArray(settings) ? settings : {};
      for (const f of fields) f.write(given[f.name]);
    },
    /** Whether every key of `settings` has an input (else the raw JSON keeps them). */
    covers(settings) {
      if (!settings || typeof settings !== 'object' || Array.isArray(settings)) return false;
      return Object.keys(settings).every((k) => fields.some((f) => f.name === k));
    },
  };
  form.fill(undefined);
  return form;
}
