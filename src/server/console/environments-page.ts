import { lastVerification, type Manifest } from '../../backups/manifest.js';
import { jobTarget } from '../../queue/job-facts.js';
import { type Html, age, html, humanSize, table } from './html.js';
import { type ConsoleContext, jobHref, stateCell } from './context.js';

/** The environments: each server, its last backup, its last restore or copy, its kept versions. */
export function environmentsPage(context: ConsoleContext): void {
  const { config, producer, options, get, send, environmentFacts, backupListing } = context;
  get('/', async (_req, res) => {
    const names = [...config.environments.keys()].sort();
    const [listed, recent] = await Promise.all([
      backupListing('')
        .then((all) => all.map((item) => item.manifest))
        .catch(() => [] as Manifest[]),
      producer.list({ types: ['restore', 'copy'], limit: 100 }).catch(() => []),
    ]);
    const rows = await Promise.all(
      names.map(async (name) => {
        const last = listed.filter((manifest) => manifest.env === name).at(-1);
        const lastChange = recent.find((summary) => jobTarget(summary) === name);
        let server: Html;
        let kept: Html = html`<span class="muted">—</span>`;
        const facts = await environmentFacts(name);
        if (facts.reachable) {
          server = html`<span class="ok">reachable</span><br />PostgreSQL ${facts.version},
            ${humanSize(facts.sizeBytes)}`;
          const previous = facts.previous;
          if (previous.length > 0) {
            kept = html`${previous.map(
              (item) =>
                html`<div>
                  ${item.name}
                  (${humanSize(item.sizeBytes)})${
                    item.proven && !options.readOnly
                      ? html` <form
                          class="inline"
                          method="post"
                          action="/environments/${name}/previous/${encodeURIComponent(item.name)}/drop"
                        >
                          ${
                            config.protectedEnvs.has(name)
                              ? html`<input name="confirm" placeholder="type ${name}" aria-label="confirm" required />`
                              : ''
                          }<button>Drop</button>
                        </form>`
                      : ''
                  }
                </div>`,
            )}`;
          }
        } else {
          server = html`<span class="bad">unreachable</span><br /><span class="muted">${facts.reason}</span>`;
        }
        const check = last ? lastVerification(last) : undefined;
        return html`<tr>
          <td><a href="/backups?env=${name}">${name}</a></td>
          <td>${config.protectedEnvs.has(name) ? 'protected' : ''}</td>
          <td>${server}</td>
          <td>
            ${last ? html`${age(last.completedAt)}, ${humanSize(last.sizeBytes)}<br />${check ? html`<span class="${check.ok ? 'ok' : 'bad'}">${check.ok ? 'verified' : 'DAMAGED'} (${check.level})</span>` : 'never checked'}` : 'none'}
          </td>
          <td>
            ${lastChange ? html`<a href="${jobHref(lastChange)}">${lastChange.type}</a> ${stateCell(lastChange.state)} ${age(lastChange.finishedAt ?? lastChange.createdAt)}` : '—'}
          </td>
          <td>${kept}</td>
          <td>
            ${options.readOnly ? '' : html`<form class="inline" method="post" action="/environments/${name}/backup"><button>Back up now</button></form>`}
          </td>
        </tr>`;
      }),
    );
    const body =
      names.length === 0
        ? html`<p class="notice">No environment is configured: set DATABASE_URL_&lt;ENV&gt; for each database.</p>`
        : table(
            ['Environment', '', 'Server', 'Last backup', 'Last restore or copy', 'Kept previous versions', ''],
            rows,
          );
    send(res, 'Environments', '/', body);
  });
}
