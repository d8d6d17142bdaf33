// The compiled-code cache panel of the Stats view (admin): what the node's
// cache holds, its hits and misses, and a Clear button. A token of a weaker
// role sees a calm note instead: the cache is an admin's business.

import { api, describeError, isAbort } from './api.js';
import { h, formatBytes, formatCount, toast } from './dom.js';

/** The panel and its loader; `signal` aborts its requests when the view goes. */
export function cachePanel(signal) {
  const cards = h('div', { class: 'stat-cards', id: 'cache-stats' });
  const note = h('div', { id: 'cache-note' });
  const clear = h('button', { type: 'button', id: 'cache-clear', class: 'button button-danger' }, 'Clear cache');
  const element = h('section', { class: 'panel', 'aria-labelledby': 'cache-heading' },
    h('div', { class: 'view-head' },
      h('h2', { id: 'cache-heading' }, 'Compiled-code cache'), clear),
    h('p', { class: 'notice notice-muted' },
      'Modules compiled by the node that answers. Clearing is safe while steps run: each module is compiled again when it next runs.'),
    note, cards);

  function card(id, value, label) {
    return h('div', { class: 'stat', id },
      h('span', { class: 'stat-value' }, value), h('span', { class: 'stat-label' }, label));
  }

  function show(stats) {
    cards.replaceChildren(
      card('cache-entries', formatCount(stats.entries ?? 0), 'compiled modules'),
      card('cache-bytes', formatBytes(stats.bytes ?? 0), 'on disk'),
      card('cache-loaded', formatCount(stats.loaded ?? 0), 'in memory'),
      card('cache-hits', formatCount(stats.hits ?? 0), 'hits'),
      card('cache-misses', formatCount(stats.misses ?? 0), 'misses'));
    cards.dataset.node = stats.node_id || '';
  }

  function failed(err) {
    if (err && err.status === 403) {
      clear.hidden = true;
      note.replaceChildren(h('p', { class: 'notice notice-muted', id: 'cache-admin-only' },
        'The compiled-code cache is shown to admin tokens only.'));
      return;
    }
    note.replaceChildren(h('div', { class: 'notice notice-error', role: 'alert' },
      `The cache could not be loaded: ${describeError(err)}`));
  }

  async function load() {
    try {
      show(await api('GET', '/cache', { signal }));
      clear.hidden = false;
      note.replaceChildren();
    } catch (err) {
      if (!isAbort(err)) failed(err);
    }
  }

  clear.addEventListener('click', async () => {
    clear.disabled = true;
    try {
      const cleared = await api('DELETE', '/cache', { signal });
      toast(`Cache cleared: ${formatCount(cleared.entries ?? 0)} compiled module(s), ${formatBytes(cleared.bytes ?? 0)}.`);
      await load();
    } catch (err) {
      if (!isAbort(err)) toast(`The cache could not be cleared: ${describeError(err)}`, 'error');
    } finally {
      clear.disabled = false;
    }
  });

  return { element, load };
}
