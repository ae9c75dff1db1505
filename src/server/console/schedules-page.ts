import { Schedules, describeOperation } from '../../schedules/schedules.js';
import { html, inZone, table } from './html.js';
import { type ConsoleContext, stateCell } from './context.js';

/** The schedules: what each does, when, and how its last run went. */
export function schedulesPage(context: ConsoleContext): void {
  const { config, producer, get, send, safe } = context;
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
}
