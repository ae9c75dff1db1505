import { randomBytes } from 'node:crypto';
import { Queue, type JobsOptions } from 'bullmq';
import type { RedisConnection } from './connection.js';
import type { Config } from '../config.js';
import { getOperation, isOperationType, operationTypes, type OperationType } from '../operations/index.js';

/** Each operation type has its own queue, named after it, under QUEUE_PREFIX. */
export function queueName(type: OperationType): string {
  return type;
}

/** Job ids carry their type (`backup-20261125t120000-9f2c1a`), so one id finds its queue. */
export function newJobId(type: OperationType, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, '').toLowerCase();
  return `${type}-${stamp}-${randomBytes(3).toString('hex')}`;
}

export function typeOfJobId(jobId: string): OperationType | undefined {
  const type = jobId.split('-')[0] ?? '';
  return isOperationType(type) ? type : undefined;
}

export function jobOptionsFor(config: Config, type: OperationType): JobsOptions {
  return {
    attempts: config.JOB_ATTEMPTS,
    backoff: { type: 'exponential', delay: config.JOB_BACKOFF_MS },
    removeOnComplete: { age: 14 * 86_400, count: config.JOB_KEEP_COMPLETED },
    removeOnFail: { age: 30 * 86_400, count: config.JOB_KEEP_FAILED },
    keepLogs: 2_000,
    ...getOperation(type).jobOptions,
  };
}

/**
 * A cancelled job's mark: a job cancelled while its worker was dead (or between two workers) is
 * refused by whichever worker takes it next, instead of running again.
 */
export function cancelledKey(config: Pick<Config, 'QUEUE_PREFIX'>, jobId: string): string {
  return `${config.QUEUE_PREFIX}:dbops:cancelled:${jobId}`;
}

/** Redis pub/sub channel on which `jobs cancel` reaches the worker running a job. */
export function cancelChannel(config: Pick<Config, 'QUEUE_PREFIX'>): string {
  return `${config.QUEUE_PREFIX}:dbops:cancel`;
}

/** Lazily opened queues over one shared connection. */
export class Queues {
  private readonly queues = new Map<OperationType, Queue>();
  constructor(
    private readonly config: Config,
    readonly connection: RedisConnection,
  ) {}

  get(type: OperationType): Queue {
    let queue = this.queues.get(type);
    if (!queue) {
      queue = new Queue(queueName(type), {
        connection: this.connection,
        prefix: this.config.QUEUE_PREFIX,
        defaultJobOptions: jobOptionsFor(this.config, type),
        streams: { events: { maxLen: this.config.JOB_EVENTS_MAX } },
      });
      queue.on('error', () => undefined);
      this.queues.set(type, queue);
    }
    return queue;
  }

  all(): Queue[] {
    return operationTypes.map((type) => this.get(type));
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((queue) => queue.close()));
    this.queues.clear();
  }
}
