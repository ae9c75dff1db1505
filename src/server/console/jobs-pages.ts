import { isOperationType } from '../../operations/index.js';
import { isNoteworthyLine } from '../../postgres/tools.js';
import { jobDurationMs, jobTarget } from '../../queue/job-facts.js';
import { age, html, humanDuration, table } from './html.js';
import { type ConsoleContext, jobHref, stateCell, resultInWords } from './context.js';

/** The jobs: the recent ones, and one job with its progress, result and log. */
export function jobsPages(context: ConsoleContext): void {
  const { producer, options, get, send, safe } = context;
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
}
