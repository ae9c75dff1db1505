import { lastVerification } from '../../backups/manifest.js';
import { sendArchive } from '../archive.js';
import { age, html, humanDuration, humanSize, table } from './html.js';
import { type ConsoleContext, param } from './context.js';

/** The backups of every store, with verify, restore and download. */
export function backupsPage(context: ConsoleContext): void {
  const { config, options, get, catalogue, send, backupListing } = context;
  get('/backups', async (req, res) => {
    const env = typeof req.query.env === 'string' && config.environments.has(req.query.env) ? req.query.env : undefined;
    const listed = (await backupListing('')).filter(({ manifest }) => !env || manifest.env === env).reverse();
    const targets = [...config.environments.keys()].sort();
    const rows = listed.map(({ manifest, stores }) => {
      const check = lastVerification(manifest);
      const actions = options.readOnly
        ? ''
        : html`<form class="inline" method="post" action="/backups/${manifest.id}/verify"><button>Verify</button></form>
            <form class="inline" method="post" action="/backups/${manifest.id}/verify">
              <input type="hidden" name="full" value="1" /><button>Full verify</button>
            </form>
            <form class="inline" method="post" action="/backups/${manifest.id}/restore">
              <select name="env" aria-label="restore into">
                ${targets.map((target) => html`<option>${target}</option>`)}</select
              ><input name="confirm" placeholder="name, if protected" aria-label="confirm" /><button>Restore</button>
            </form>`;
      return html`<tr>
        <td>${manifest.completedAt.replace('T', ' ').slice(0, 16)}Z<br /><span class="muted">${manifest.id}</span></td>
        <td>
          ${manifest.env}${manifest.database !== manifest.env ? html`<br /><span class="muted">${manifest.database}</span>` : ''}
        </td>
        <td>${humanSize(manifest.sizeBytes)}</td>
        <td>${humanDuration(manifest.durationMs)}</td>
        <td>
          ${manifest.format}${manifest.encryption ? ', encrypted' : ''}${
            manifest.schemaVersion
              ? html`<br /><span class="muted">schema ${manifest.schemaVersion.revisions.join('+')}</span>`
              : ''
          }
        </td>
        <td>${stores.join(', ')}</td>
        <td>
          ${check ? html`<span class="${check.ok ? 'ok' : 'bad'}">${check.ok ? 'ok' : 'DAMAGED'}</span> (${check.level}, ${age(check.at)})` : 'never checked'}
        </td>
        <td>
          ${actions}${options.authenticated && manifest.format === 'custom' ? html`<a href="/backups/${manifest.id}/download" download>Download</a>` : ''}
        </td>
      </tr>`;
    });
    const filter = html`<p>
      ${[html`<a href="/backups">all</a>`, ...targets.map((name) => html` · <a href="/backups?env=${name}">${name}</a>`)]}
    </p>`;
    send(
      res,
      env ? `Backups of ${env}` : 'Backups',
      '/backups',
      html`${filter}${
        rows.length === 0
          ? html`<p>No backups yet.</p>`
          : table(['Made', 'Environment', 'Size', 'Took', 'Format', 'Stores', 'Last check', ''], rows)
      }`,
    );
  });

  // An archive is a whole database: it leaves only for someone who proved who they are.
  get('/backups/:id/download', (req, res) => {
    const refuse = (status: number, message: string) => res.status(status).type('text').send(message);
    if (!options.authenticated)
      return refuse(403, 'downloads need the dashboard credentials: set DASHBOARD_USER and DASHBOARD_PASSWORD');
    return sendArchive(res, catalogue(), param(req, 'id'), undefined, refuse);
  });
}
