import { QueueEvents, type Job } from 'bullmq';
import type { Config } from '../config.js';
import { wasCancelled } from '../errors.js';
import type { Logger } from '../logger.js';
import { isOperationType, type WorkerType } from '../operations/index.js';
import { createRedis } from '../queue/connection.js';
import type { Queues } from '../queue/queues.js';
import { scheduleNameOf } from '../job-ids.js';
import type { Schedules } from './schedules.js';
import type { Notifier } from './webhook.js';

/** The environment a job concerns, for people: restore/backup name it `env`, copy `to`, a drill `latest`. */
function environmentOf(data: unknown): string | undefined {
  const record = (data ?? {}) as Record<string, unknown>;
  const env = record.env ?? record.to ?? record.latest;
  return typeof env === 'string' ? env : undefined;
}

/**
 * Follows the jobs of one queue to their end: records the outcome of scheduled runs, and notifies once
 * per job that failed for good (and, with NOTIFY_ON_SUCCESS, completed). Every worker process of the
 * queue listens; a claim in Redis makes sure that only one of them sends.
 */
export async function watchJobOutcomes(options: {
  config: Config;
  queues: Queues;
  queue: WorkerType;
  schedules: Schedules;
  notifier: Notifier;
  logger: Logger;
}): Promise<{ close(): Promise<void> }> {
  const { config, queues, queue, schedules, notifier, logger } = options;
  const connection = createRedis(config, 'worker');
  const events = new QueueEvents(queue, { connection, prefix: config.QUEUE_PREFIX });
  events.on('error', () => undefined);

  const claim = async (job: Job) =>
    (await queues.connection.set(
      `${config.QUEUE_PREFIX}:dbops:notified:${job.id}:${job.finishedOn ?? job.attemptsMade}`,
      '1',
      'EX',
      30 * 86_400,
      'NX',
    )) === 'OK';

  const onEnd = async (jobId: string, state: 'completed' | 'failed') => {
    const job = await queues.get(queue).getJob(jobId);
    if (!job || !isOperationType(job.name)) return;
    const cancelled = state === 'failed' && wasCancelled(job.failedReason);
    const schedule = scheduleNameOf(job.repeatJobKey);
    const at = new Date(job.finishedOn ?? Date.now()).toISOString();
    if (schedule && !cancelled)
      await schedules.recordRun(schedule, {
        jobId,
        state,
        at,
        reason: state === 'failed' ? job.failedReason : undefined,
      });
    if (cancelled || (state === 'completed' && !config.NOTIFY_ON_SUCCESS) || !notifier.enabled) return;
    if (!(await claim(job))) return;
    const env = environmentOf(job.data);
    const what = `${job.name} job ${jobId}${env ? ` for ${env}` : ''}${schedule ? ` (schedule "${schedule}")` : ''}`;
    notifier.send({
      event: state === 'failed' ? 'job.failed' : 'job.completed',
      text:
        state === 'failed'
          ? `dbops: ${what} failed after ${job.attemptsMade} attempt(s): ${job.failedReason}`
          : `dbops: ${what} completed`,
      env,
      job: { id: jobId, type: job.name, attempts: job.attemptsMade },
      schedule,
      reason: state === 'failed' ? job.failedReason : undefined,
      at,
    });
  };
  const handle = (jobId: string, state: 'completed' | 'failed') =>
    void onEnd(jobId, state).catch((error: unknown) =>
      logger.warn({ err: error, jobId }, 'could not record or notify the outcome of a job'),
    );
  events.on('completed', ({ jobId }) => handle(jobId, 'completed'));
  events.on('failed', ({ jobId }) => handle(jobId, 'failed'));
  await events.waitUntilReady();
  return {
    async close() {
      await events.close();
      await connection.quit().catch(() => undefined);
    },
  };
}
