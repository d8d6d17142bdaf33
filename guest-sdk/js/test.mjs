// Native tests of the SDK's pure part (settings): `node --test guest-sdk/js/test.mjs`.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PermanentError } from './errors.js';
import { check } from './settings.js';

const schema = {
  tables: [{ name: 'string', rows: { type: 'integer', default: 0 } }],
  file: { type: 'string', default: 'backup.sql' },
  note: 'string?',
};

test('defaults and optional fields are filled in', () => {
  assert.deepEqual(check(schema, { tables: [{ name: 'a' }] }), {
    tables: [{ name: 'a', rows: 0 }],
    file: 'backup.sql',
    note: null,
  });
});

test('a wrong field is named, permanently', () => {
  const named = (value, message) =>
    assert.throws(() => check(schema, value), (e) => e instanceof PermanentError && e.message === message);
  named({ tables: [{ name: 3 }] }, 'invalid settings at `tables[0].name`: expected a string, got number 3');
  named({ tables: [{}] }, 'invalid settings at `tables[0]`: missing field `name`');
  named({ tables: [], fiel: 'x' }, 'invalid settings: unknown field `fiel`; the fields are `tables`, `file`, `note`');
  named({ tables: [{ name: 'a', rows: 1.5 }] }, 'invalid settings at `tables[0].rows`: expected an integer, got number 1.5');
  named({ tables: {} }, 'invalid settings at `tables`: expected a list, got an object');
});
