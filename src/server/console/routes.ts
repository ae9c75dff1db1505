import express, { type Request, type RequestHandler, type Response } from 'express';
import { BackupCatalogue } from '../../backups/catalogue.js';
import { lastVerification, type Manifest } from '../../backups/manifest.js';
import type { Config } from '../../config.js';
import { ValidationError } from '../../errors.js';
import { getOperation, isOperationType } from '../../operations/index.js';
import { isNoteworthyLine } from '../../postgres/tools.js';
import { jobDurationMs, jobTarget, type JobSummary } from '../../queue/job-facts.js';
import type { Producer } from '../../queue/producer.js';
import { Schedules, describeOperation } from '../../schedules/schedules.js';
import { sendArchive } from '../archive.js';
import { factsCache } from '../facts-cache.js';
import { serverFacts } from '../environment-facts.js';
import { scrubSecrets } from '../../secrets.js';
import { Html, age, html, humanDuration, humanSize, inZone, page, table } from './html.js';

/*
 * The dbops console: environments, backups, schedules and jobs as pages a person reads, with the few
 * actions an operator takes (back up now, verify, restore, download, cancel, retry, drop a kept
 * version). Every action enqueues the same job the CLI would, through the same validation: a protected
 * environment needs its name typed, whoever asks. Mounted behind the dashboard's auth and guards.
 */

const param = (req: Request, name: string): string => String(req.params[name] ?? '');

const jobHref = (summary: Pick<JobSummary, 'type' | 'id'>) => `/jobs/${summary.type}/${encodeURIComponent(summary.id)}`;

function stateCell(
  state: string,
  kind = state === 'completed' ? 'ok' : state === 'failed' || state === 'cancelled' ? 'bad' : 'muted',
): Html {
  return html`<span class="${kind}">${state}</span>`;
}

/** A result in words, as the CLI prints it (the operation's own describe), else its JSON. */
function resultInWords(summary: JobSummary): string {
  if (summary.result === null || summary.result === undefined) return '';
  const operation = isOperationType(summary.type) ? getOperation(summary.type) : undefined;
  try {
    return operation?.describe ? operation.describe(summary.result as never) : JSON.stringify(summary.result, null, 2);
  } catch {
    return JSON.stringify(summary.result, null, 2);
  }
}

/** How long the console, open without credentials, shows a fact it learnt (a server's size, the stores' backups) before it asks again. */
const FACTS_TTL_MS = 10_000;

export function consoleRouter(
  config: Config,
  producer: Producer,
  options: {
    readOnly: boolean;
    guard: RequestHandler[];
    /** Dashboard credentials are configured (and so asked for). */
    authenticated: boolean;
  },
): express.Router {
  const router = express.Router();
  // Each route behind the dashboard's guards (so that paths that are not the console's fall through to 404).
  const get = (path: string, handler: RequestHandler) => router.get(path, ...options.guard, handler);
  const post = (path: string, ...handlers: RequestHandler[]) => router.post(path, ...options.guard, ...handlers);
  const catalogue = () => BackupCatalogue.of(config);
  const send = (res: Response, title: string, current: string, body: Html, refreshSeconds?: number) =>
    res.type('html').send(page(title, current, body, { refreshSeconds, readOnly: options.readOnly }));
  const safe = (text: string) => scrubSecrets(text, config.secrets);
  const form = express.urlencoded({ extended: false, limit: '16kb' });
  /** An action: the job it enqueued is shown; an invalid one (a protected target without its name) is said, nothing enqueued. */
  const act =
    (title: string, enqueue: (req: Request) => Promise<{ type: string; id: string } | string>): RequestHandler =>
    async (req, res, next) => {
      try {
        const done = await enqueue(req);
        res.redirect(303, typeof done === 'string' ? done : jobHref(done as JobSummary));
      } catch (error) {
        if (!(error instanceof ValidationError)) return next(error);
        res.status(400);
        send(
          res,
          title,
          '',
          html`<p class="notice bad" role="alert">${safe(error.message)}</p>
            <p><a href="javascript:history.back()">Back</a></p>`,
        );
      }
    };

  // Behind credentials each page asks afresh; open to anyone on the host, it answers from what it learnt
  // in the last seconds (factsCache), so that no visitor makes it connect to every database per request.
  const factsTtl = options.authenticated ? 0 : FACTS_TTL_MS;
  /** A server's facts and the kept versions of its database. */
  const environmentFacts = factsCache(factsTtl, (name) => serverFacts(config, producer.queues.connection, name));
  const backupListing = factsCache(factsTtl, () => catalogue().listWithStores());

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

  get('/schedules', async (_req, res) => {
    const views = await new Schedules(config, producer.queues).list();
    const rows = views.map(
      (view) =>
        html`<tr>
          <td>${view.name}</td>
          <td>${describeOperation(view)}</td>
          <td><code>${view.cron}</code><br /><span class="muted">${view.tz ?? 'UTC'}</span></td>
          <td>${inZone(view.nextRunAt, view.tz ?? 'UTC')}</td>
          <td>
            ${view.lastRun ? html`${stateCell(view.lastRun.state)} ${inZone(view.lastRun.at, view.tz ?? 'UTC')}${view.lastRun.reason ? html`<br /><span class="muted">${safe(view.lastRun.reason)}</span>` : ''}` : 'not run yet'}
          </td>
          <td>
            ${stateCell(view.status.state, view.status.state === 'ok' ? 'ok' : view.status.state === 'missed' ? 'bad' : 'muted')}
          </td>
        </tr>`,
    );
    send(
      res,
      'Schedules',
      '/schedules',
      rows.length === 0
        ? html`<p>No schedules. Add one with <code>manage-db schedule add</code> or SCHEDULES_FILE.</p>`
        : table(['Name', 'Does', 'When', 'Next run', 'Last run', 'Status'], rows),
    );
  });

  get('/jobs', async (_req, res) => {
    const jobs = (await producer.list({ limit: 30 })).sort((a, b) =>
      (b.createdAt ?? '').localeCompare(a.createdAt ?? ''),
    );
    const running = jobs.some((job) => job.state === 'active' || job.state === 'waiting');
    const rows = jobs.map((job) => {
      const { percent, step } = job.progress;
      return html`<tr>
        <td><a href="${jobHref(job)}">${job.type}</a><br /><span class="muted">${job.id}</span></td>
        <td>${jobTarget(job) || '—'}</td>
        <td>${stateCell(job.state)}</td>
        <td>
          <progress max="100" value="${Math.round(percent)}">${Math.round(percent)}%</progress>
          ${Math.round(percent)}%<br /><span class="muted">${step}</span>
        </td>
        <td>${humanDuration(jobDurationMs(job))}</td>
        <td>${age(job.createdAt)}</td>
      </tr>`;
    });
    send(
      res,
      'Jobs',
      '/jobs',
      rows.length === 0
        ? html`<p>No jobs yet.</p>`
        : table(['Job', 'Target', 'State', 'Progress', 'Took', 'Queued'], rows),
      running ? 3 : undefined,
    );
  });

  get('/jobs/:type/:id', async (req, res) => {
    const { type, id } = req.params as { type: string; id: string };
    const job = isOperationType(type) ? await producer.getJob(`${type}/${id}`) : undefined;
    if (!job)
      return send(
        res.status(404),
        'No such job',
        '/jobs',
        html`<p>No ${type} job ${id}: it may have been removed by the retention of finished jobs.</p>`,
      );
    const summary = await producer.summarize(job);
    const { percent, step } = summary.progress;
    const { logs } = await producer.queues.get(summary.type).getJobLogs(summary.id, -500, -1);
    // Jobs logged before tool chatter was left out of job logs are filtered here.
    const noteworthy = logs.filter(isNoteworthyLine);
    const shown = noteworthy.slice(-80);
    const finished = ['completed', 'failed', 'cancelled'].includes(summary.state);
    const actions = options.readOnly
      ? ''
      : html`${!finished ? html`<form class="inline" method="post" action="${jobHref(summary)}/cancel"><button>Cancel</button></form>` : ''}${
          summary.state === 'failed' || summary.state === 'cancelled'
            ? html`<form class="inline" method="post" action="${jobHref(summary)}/retry"><button>Retry</button></form>`
            : ''
        }`;
    const body = html`<p>
        ${stateCell(summary.state)} · ${jobTarget(summary) || '—'} · queued ${age(summary.createdAt)} · took
        ${humanDuration(jobDurationMs(summary))} · attempts ${summary.attemptsMade}
      </p>
      <p>
        <progress max="100" value="${Math.round(percent)}">${Math.round(percent)}%</progress> ${Math.round(percent)}%
        <span class="muted">${step}</span>
      </p>
      ${actions}
      ${
        summary.state === 'completed'
          ? html`<h2>Result</h2>
              <pre>${safe(resultInWords(summary))}</pre>`
          : ''
      }
      ${
        summary.failedReason
          ? html`<h2>Why it ${summary.state === 'cancelled' ? 'stopped' : 'failed'}</h2>
              <p class="notice bad">${safe(summary.failedReason.split('\n')[0]!)}</p>`
          : ''
      }
      <h2>Log</h2>
      ${
        shown.length
          ? html`${noteworthy.length > shown.length ? html`<p class="muted">The last ${shown.length} of ${noteworthy.length} lines.</p>` : ''}
              <pre>${safe(shown.join('\n'))}</pre>`
          : html`<p class="muted">Nothing logged.</p>`
      }
      <details>
        <summary>Payload</summary>
        <pre>${JSON.stringify(summary.data, null, 2)}</pre>
      </details>`;
    send(res, `${summary.type} job ${summary.id}`, '/jobs', body, finished ? undefined : 2);
  });

  // Actions: mutating routes, behind the dashboard's guards (405 read-only, same-origin with credentials).
  post(
    '/environments/:env/backup',
    form,
    act(
      'Back up',
      (req) => producer.enqueue('backup', { env: param(req, 'env') }) as Promise<{ type: string; id: string }>,
    ),
  );
  post(
    '/environments/:env/previous/:name/drop',
    form,
    act('Drop a kept version', (req) =>
      producer.enqueue('previous', {
        env: param(req, 'env'),
        action: 'drop',
        name: param(req, 'name'),
        confirm: (req.body as Record<string, string>).confirm || undefined,
      }),
    ),
  );
  post(
    '/backups/:id/verify',
    form,
    act('Verify', (req) =>
      producer.enqueue('verify', { backup: param(req, 'id'), full: (req.body as Record<string, string>).full === '1' }),
    ),
  );
  post(
    '/backups/:id/restore',
    form,
    act('Restore', (req) => {
      const body = req.body as Record<string, string>;
      return producer.enqueue('restore', {
        env: body.env ?? '',
        backup: param(req, 'id'),
        confirm: body.confirm || undefined,
      });
    }),
  );
  post(
    '/jobs/:type/:id/cancel',
    act('Cancel', async (req) => {
      await producer.cancel(`${param(req, 'type')}/${param(req, 'id')}`);
      return `/jobs/${param(req, 'type')}/${encodeURIComponent(param(req, 'id'))}`;
    }),
  );
  post(
    '/jobs/:type/:id/retry',
    act('Retry', async (req) => {
      const outcome = await producer.retry(`${param(req, 'type')}/${param(req, 'id')}`);
      if (outcome === 'not-failed') throw new ValidationError('only a failed or cancelled job can be retried');
      return `/jobs/${param(req, 'type')}/${encodeURIComponent(param(req, 'id'))}`;
    }),
  );
  return router;
}
