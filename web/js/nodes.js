// Nodes page: #/nodes — the Stepwise servers sharing this database (one on
// SQLite, any number on PostgreSQL), each as it last reported itself.

import { api, describeError, isAbort } from './api.js';
import { h, notice, statusBadge, timeEl, formatDateTime, formatCount } from './dom.js';

/** How often the table is read again, in ticks of one second. */
const REFRESH_TICKS = 5;

export function mount(main, ctx) {
  ctx.setTitle('Nodes');
  const abort = new AbortController();
  const table = h('table', { id: 'nodes-table', class: 'table nodes-table' });
  const note = h('div', { id: 'nodes-note' });
  main.append(h('section', { class: 'view view-nodes', 'aria-labelledby': 'nodes-heading' },
    h('h2', { id: 'nodes-heading' }, 'Nodes'),
    h('p', { class: 'muted' },
      'The servers sharing this database. A node silent for longer than a lease is dead or cut off; ' +
      'its runs are resumed by the others from their checkpoints.'),
    note,
    h('div', { class: 'table-wrap' }, table)));

  function row(node) {
    const state = node.alive ? node.state : (node.state === 'stopped' ? 'stopped' : 'silent');
    return h('tr', { dataset: { nodeId: node.id, state, alive: String(node.alive) } },
      h('td', { class: 'node-id' }, node.id, node.this_node ? h('span', { class: 'muted' }, ' (this node)') : null),
      h('td', null, statusBadge(state, 'node-state')),
      h('td', { class: 'node-address' }, node.address || '—'),
      h('td', { class: 'node-running num' }, formatCount(node.running_runs)),
      h('td', { class: 'node-heartbeat' }, timeEl(node.last_heartbeat_at)),
      h('td', { class: 'node-started', title: formatDateTime(node.started_at) }, timeEl(node.started_at)),
      h('td', { class: 'node-version' }, node.version));
  }

  async function load() {
    try {
      const nodes = await api('GET', '/nodes', { signal: abort.signal });
      note.replaceChildren(nodes.length ? '' : notice('No node has reported itself yet.'));
      table.replaceChildren(
        h('thead', null, h('tr', null,
          ['Node', 'State', 'Address', 'Running', 'Last heartbeat', 'Started', 'Version']
            .map((label) => h('th', { scope: 'col' }, label)))),
        h('tbody', null, nodes.map(row)));
    } catch (err) {
      if (isAbort(err)) return;
      note.replaceChildren(notice(`Nodes could not be loaded: ${describeError(err)}`, 'error'));
    }
  }

  load();
  let ticks = 0;
  return {
    unmount() { abort.abort(); },
    tick() {
      ticks += 1;
      if (ticks % REFRESH_TICKS === 0) load();
    },
  };
}
