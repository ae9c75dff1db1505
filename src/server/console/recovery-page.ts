import { age, html, humanSize, table } from './html.js';
import type { ConsoleContext } from './context.js';
import { NO_STORE } from '../facts.js';

/** Point-in-time recovery at a glance: per server, what can be recovered, the gaps, and the archiver's lag. */
export function recoveryPage(context: ConsoleContext): void {
  const { get, send, recoveryListing } = context;
  get('/recovery', async (_req, res) => {
    const facts = await recoveryListing('');
    const rows = facts.map((one) => {
      const archiver = one.archiver;
      return html`<tr>
        <td>${one.server}<br /><span class="muted">${Object.keys(one.envs).join(', ') || '-'}</span></td>
        <td>${one.store}</td>
        <td>
          ${one.from ? html`${one.from.replace('T', ' ').slice(0, 19)}Z` : '-'}<br />
          ${one.to ? html`to ${one.to.replace('T', ' ').slice(0, 19)}Z` : ''}
        </td>
        <td>${one.rpoSeconds === undefined ? '-' : `${one.rpoSeconds} s`}</td>
        <td>${one.baseBackups.length} base, ${one.segments} WAL segments</td>
        <td>
          ${
            archiver
              ? html`${archiver.host} (pid ${archiver.pid}), ${age(archiver.at)}<br /><span class="muted"
                    >lag
                    ${humanSize(archiver.lagBytes ?? 0)}${archiver.lagSeconds !== undefined ? `, ${archiver.lagSeconds.toFixed(2)} s` : ''};
                    slot keeps ${humanSize(archiver.slotRetainedBytes ?? 0)}</span
                  >${archiver.error ? html`<br /><span class="bad">cannot archive: ${archiver.error}</span>` : ''}${
                    archiver.warning ? html`<br /><span class="bad">${archiver.warning}</span>` : ''
                  }`
              : one.store === NO_STORE
                ? '-'
                : html`<span class="bad">no archiver running</span>`
          }
        </td>
        <td>
          ${
            one.errors.length === 0
              ? html`<span class="ok">continuous</span>`
              : one.errors.map((error) => html`<span class="bad">${error}</span><br />`)
          }
        </td>
      </tr>`;
    });
    send(
      res,
      'Point-in-time recovery',
      '/recovery',
      rows.length === 0
        ? html`<p>
            No server is archived. Set PITR_ENVS, run the WAL archiver (<code>npm run worker -- wal</code>) and take a
            base backup (<code>manage-db backup --env ENV --physical</code>); see docs/pitr.md.
          </p>`
        : table(['Server', 'Store', 'Recoverable', 'Recovery point', 'Archive', 'Archiver', 'Window'], rows),
      10,
    );
  });
}
