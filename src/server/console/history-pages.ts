import type { Request } from 'express';
import { ValidationError } from '../../errors.js';
import { HISTORY_STATES, historyFilterOf, type HistoryEntry } from '../../queue/history-entry.js';
import { JOB_FILTER_WORDS, parseJobFilter } from '../../queue/job-filter.js';
import { operationTypes } from '../../operations/index.js';
import { Schedules } from '../../schedules/schedules.js';
import { runTimes } from '../../schedules/definition.js';
import { jobsPerDayChart, timelineChart, timeSeriesChart, type DayCounts } from './charts.js';
import { html, humanDuration, humanSize, table } from './html.js';
import { type ConsoleContext, stateCell } from './context.js';
import { listTime } from '../../units.js';

const DAY = 86_400_000;
/** What the charts read: at most this many entries of their window. */
const CHART_ENTRIES = 20_000;

const wordOf = (req: Request, name: string) => {
  const value = req.query[name];
  return typeof value === 'string' && value.trim() !== '' ? value : undefined;
};

/** The history, searchable (a form that works without script), and its charts. */
export function historyPages(context: ConsoleContext): void {
  const { config, producer, get, send, safe } = context;

  get('/history', async (req, res) => {
    const words = Object.fromEntries(JOB_FILTER_WORDS.map((word) => [word, wordOf(req, word)]));
    let entries: HistoryEntry[] = [];
    let problem: string | undefined;
    try {
      entries = await producer.history.search(historyFilterOf(parseJobFilter(words)));
    } catch (error) {
      if (!(error instanceof ValidationError)) throw error;
      problem = error.message;
      res.status(400);
    }
    const field = (name: string, label: string, hint: string) =>
      html`<label
        >${label} <input name="${name}" value="${words[name] ?? ''}" placeholder="${hint}" size="12"
      /></label>`;
    const choice = (name: string, label: string, options: readonly string[]) =>
      html`<label
        >${label}
        <select name="${name}">
          <option value="">any</option>
          ${options.map(
            (option) => html`<option value="${option}" ${words[name] === option ? 'selected' : ''}>${option}</option>`,
          )}
        </select></label
      >`;
    const form = html`<form class="inline" method="get" action="/history" role="search">
      ${field('search', 'Text', 'who, what, id…')} ${field('env', 'Environment', 'production')}
      ${choice('type', 'Type', operationTypes)} ${choice('state', 'Outcome', HISTORY_STATES)}
      ${field('since', 'Since', '7d or 2026-12-01')} ${field('until', 'Until', 'ISO time')}
      <button>Search</button>
    </form>`;
    const rows = entries.map(
      (entry) =>
        html`<tr>
          <td class="nowrap">${listTime(entry.at)}</td>
          <td>
            <a href="/jobs/${entry.type}/${encodeURIComponent(entry.id)}">${entry.type}</a><br /><span class="muted"
              >${entry.id}</span
            >
          </td>
          <td>${entry.envs.join(' → ') || '—'}</td>
          <td>${stateCell(entry.state)}</td>
          <td>
            ${entry.requestedBy}${entry.cancelledBy ? html`<br /><span class="muted">cancelled by ${entry.cancelledBy}</span>` : ''}
          </td>
          <td>${humanDuration(entry.durationMs)}</td>
          <td class="wrap">${safe(entry.outcome)}</td>
        </tr>`,
    );
    send(
      res,
      'History',
      '/history',
      html`${form} ${problem ? html`<p class="notice bad" role="alert">${problem}</p>` : ''}
        ${
          rows.length === 0
            ? html`<p>No entries${Object.values(words).some(Boolean) ? ' match' : ' yet'}.</p>`
            : table(['Ended', 'Job', 'Environment', 'Outcome', 'Asked by', 'Took', 'What happened'], rows)
        }
        <p class="muted">
          Every finished job, kept ${config.HISTORY_RETENTION_DAYS} days; <code>manage-db history verify</code> checks
          that none was changed.
        </p>`,
    );
  });

  get('/charts', async (_req, res) => {
    const now = Date.now();
    const backups = await producer.history.search({
      types: ['backup'],
      since: new Date(now - 90 * DAY),
      limit: CHART_ENTRIES,
    });
    const recent = await producer.history.search({ since: new Date(now - 30 * DAY), limit: CHART_ENTRIES });
    const byEnv = new Map<string, HistoryEntry[]>();
    for (const entry of [...backups].reverse()) {
      if (!entry.env || entry.state === 'cancelled') continue;
      byEnv.set(entry.env, [...(byEnv.get(entry.env) ?? []), entry]);
    }
    const backupCharts = [...byEnv.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([env, list]) => {
        const points = (pick: (entry: HistoryEntry) => number | null, format: (value: number) => string) =>
          list.map((entry) => {
            const value = entry.state === 'completed' ? pick(entry) : null;
            return {
              at: Date.parse(entry.at),
              value,
              failed: entry.state === 'failed',
              label: `${listTime(entry.at)} ${entry.reference}: ${entry.state === 'failed' ? `failed: ${safe(entry.outcome)}` : format(value ?? 0)}`,
            };
          });
        const size = (entry: HistoryEntry) =>
          typeof entry.facts.sizeBytes === 'number' ? entry.facts.sizeBytes : null;
        return html`<section>
          <h3>${env}</h3>
          <div class="charts">
            ${timeSeriesChart(`Backup size of ${env}`, points(size, humanSize), humanSize)}
            ${timeSeriesChart(
              `Backup duration of ${env}`,
              points((entry) => entry.durationMs, humanDuration),
              humanDuration,
            )}
          </div>
        </section>`;
      });
    const dayOf = (ms: number) => Math.floor(ms / DAY) * DAY;
    const days: DayCounts[] = [];
    for (let day = dayOf(now - 29 * DAY); day <= dayOf(now); day += DAY)
      days.push({ day, completed: 0, failed: 0, cancelled: 0 });
    for (const entry of recent) {
      const slot = days.find((day) => day.day === dayOf(Date.parse(entry.at)));
      if (slot) slot[entry.state] += 1;
    }
    const windowEnd = now + 7 * DAY;
    const timeline = (await new Schedules(config, producer.queues).stored()).map((schedule) => {
      const runs: number[] = [];
      const next = runTimes(schedule).next;
      for (let at = next(new Date(now)); at.getTime() <= windowEnd && runs.length < 500; at = next(at))
        runs.push(at.getTime());
      return { name: schedule.name, runs };
    });
    send(
      res,
      'Charts',
      '/charts',
      html`<h2>Backups, last 90 days</h2>
        ${backupCharts.length ? backupCharts : html`<p class="muted">No backups in the history yet.</p>`}
        <h2>Jobs per day, last 30 days</h2>
        ${jobsPerDayChart('Jobs per day by outcome', days)}
        <h2>Schedules, next 7 days (UTC)</h2>
        ${timelineChart('Next runs of each schedule', timeline, now, windowEnd)}`,
    );
  });
}
