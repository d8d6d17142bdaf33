// Native tests of the pure parts: `node --test` in this folder.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sha256 } from './sha256.js';
import { render } from './template.js';

test('the fingerprint matches the Rust example', () => {
  assert.equal(sha256('secret').slice(0, 8), '2bb80d53');
  assert.equal(sha256(''), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  assert.equal(sha256('ab', 2), sha256('abab'));
});

test('templates substitute and name unknown variables', () => {
  assert.equal(render('Hi {{name}}, you owe {{ total }}.{{note}}', { name: 'Ann', total: 12.5, note: null }), 'Hi Ann, you owe 12.5.');
  assert.throws(() => render('Your code: {{ coupon }}', {}), /unknown variable `coupon`/);
  assert.throws(() => render('Hi {{name', {}), /without a closing/);
});
