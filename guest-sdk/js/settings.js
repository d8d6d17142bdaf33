// Settings checked against a schema, with errors that name the field. No host calls:
// it runs (and is tested) in plain Node too.

import { PermanentError } from './errors.js';

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
