import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import { Notifier } from './webhook.js';
import type { Queues } from '../queue/queues.js';
import { applySchedulesFile } from './file.js';
import { watchMissedRuns } from './missed.js';
import { Schedules } from './schedules.js';

export interface ScheduleUpkeep {
  schedules: Schedules;
  notifier: Notifier;
  /** Stops watching for missed runs and sends what notifications are still pending. */
  stop(): Promise<void>;
}

/**
 * What every dbops process (each worker, the server) does beside its own work: applies SCHEDULES_FILE
 * (a ConfigError when it is invalid), then watches for missed runs and tells the webhook.
 */
export async function startScheduleUpkeep(
  config: Config,
  queues: Queues,
  logger: Logger,
  schedules = new Schedules(config, queues),
): Promise<ScheduleUpkeep> {
  await applySchedulesFile(config, schedules, logger);
  const notifier = new Notifier(config, logger);
  const missedRuns = watchMissedRuns(schedules, notifier, logger, config.SCHEDULE_CHECK_INTERVAL_MS);
  return {
    schedules,
    notifier,
    async stop() {
      missedRuns.stop();
      await notifier.flush();
    },
  };
}
