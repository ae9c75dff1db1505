import type { Logger } from '../logger.js';
import type { Notifier } from './webhook.js';
import { describeOperation, type Schedules } from './schedules.js';

/**
 * Looks for missed runs every `intervalMs` and sends one notification per streak of misses (every
 * worker process looks; the first to claim a miss sends it). Not a scheduler: runs are BullMQ's.
 */
export function watchMissedRuns(
  schedules: Schedules,
  notifier: Notifier,
  logger: Logger,
  intervalMs: number,
): { stop(): void } {
  // Without a webhook there is no one to tell: `schedule list` and /metrics work it out when asked.
  if (!notifier.enabled) return { stop: () => undefined };
  let checking = false;
  const check = async () => {
    if (checking) return;
    checking = true;
    try {
      for (const view of await schedules.list()) {
        if (view.status.state !== 'missed' || !view.status.dueAt) continue;
        if (!(await schedules.claimMissedAlert(view.name, view.status.dueAt))) continue;
        const last = view.lastRun
          ? `last run ${view.lastRun.state} at ${view.lastRun.at}${view.lastRun.reason ? `: ${view.lastRun.reason}` : ''}`
          : 'it has never run';
        const text = `dbops: schedule "${view.name}" (${describeOperation(view)}) missed its run due ${view.status.dueAt.toISOString()}; ${last}`;
        logger.warn({ schedule: view.name, dueAt: view.status.dueAt }, 'schedule missed a run');
        notifier.send({
          event: 'schedule.missed',
          text,
          schedule: view.name,
          env: typeof view.payload.env === 'string' ? view.payload.env : undefined,
          reason: last,
          at: new Date().toISOString(),
        });
      }
    } catch (error) {
      logger.debug({ err: error }, 'missed-run check failed; trying again later');
    } finally {
      checking = false;
    }
  };
  const timer = setInterval(() => void check(), intervalMs);
  timer.unref();
  void check();
  return { stop: () => clearInterval(timer) };
}
