import { Queue, type JobsOptions, type KeepJobs } from 'bullmq';
import type { RedisConnection } from './connection.js';
import type { Config } from '../config.js';
import { stampRequester, type Requester } from './requester.js';
import {
  getOperation,
  isOperationType,
  queueOf,
  workerTypes,
  type OperationType,
  type WorkerType,
} from '../operations/index.js';

/** Each worker type has its own queue, named after it, under QUEUE_PREFIX; jobs are named by operation. */
export function queueName(type: OperationType): WorkerType {
  return queueOf(type);
}

/** A job made by a schedule: `repeat:<operation>.<schedule name>:<run time>` (see schedules/). */
const SCHEDULED_JOB_ID = /^repeat:([a-z]+)\./;

/**
 * The queue a dbops-made id hints at (`backup-…`, a schedule's `repeat:backup.…`), to find a job from
 * its id alone faster. A hint for look-ups only: nothing about a job's life is decided from its id.
 */
export function typeOfJobId(jobId: string): OperationType | undefined {
  const type = SCHEDULED_JOB_ID.exec(jobId)?.[1] ?? jobId.split('-')[0] ?? '';
  return isOperationType(type) ? type : undefined;
}

/**
 * How long finished jobs stay in Redis. Set on every job dbops adds, and by every worker as the default
 * for jobs added without it (another producer's), so Redis never keeps jobs forever.
 */
export function finishedJobRetention(config: Pick<Config, 'JOB_KEEP_COMPLETED' | 'JOB_KEEP_FAILED'>): {
  removeOnComplete: KeepJobs;
  removeOnFail: KeepJobs;
} {
  return {
    removeOnComplete: { age: 14 * 86_400, count: config.JOB_KEEP_COMPLETED },
    removeOnFail: { age: 30 * 86_400, count: config.JOB_KEEP_FAILED },
  };
}

export function jobOptionsFor(config: Config, type: OperationType): JobsOptions {
  return {
    attempts: config.JOB_ATTEMPTS,
    backoff: { type: 'exponential', delay: config.JOB_BACKOFF_MS },
    ...finishedJobRetention(config),
    keepLogs: 2_000,
    ...getOperation(type).jobOptions,
  };
}

/**
 * A cancelled job's mark: a job cancelled while its worker was dead (or between two workers) is
 * refused by whichever worker takes it next, instead of running again.
 */
export function cancelledKey(config: Pick<Config, 'QUEUE_PREFIX'>, queue: string, jobId: string): string {
  return `${config.QUEUE_PREFIX}:dbops:cancelled:${queue}:${jobId}`;
}

/** Redis pub/sub channel on which `jobs cancel` reaches the worker running a job; messages are `<queue>/<id>`. */
export function cancelChannel(config: Pick<Config, 'QUEUE_PREFIX'>): string {
  return `${config.QUEUE_PREFIX}:dbops:cancel`;
}

/** Lazily opened queues over one shared connection. */
export class Queues {
  private readonly queues = new Map<WorkerType, Queue>();
  constructor(
    private readonly config: Config,
    readonly connection: RedisConnection,
  ) {}

  /** The queue that holds jobs of this operation type. */
  get(type: OperationType): Queue {
    const name = queueName(type);
    let queue = this.queues.get(name);
    if (!queue) {
      queue = new Queue(name, {
        connection: this.connection,
        prefix: this.config.QUEUE_PREFIX,
        defaultJobOptions: jobOptionsFor(this.config, name),
        streams: { events: { maxLen: this.config.JOB_EVENTS_MAX } },
      });
      queue.on('error', () => undefined);
      this.queues.set(name, queue);
    }
    return queue;
  }

  /** Writes who asks for the job beside it, before it exists (a flow's jobs are added all at once). */
  stamp(type: OperationType, jobId: string, requester: Requester): Promise<void> {
    return stampRequester(this.connection, this.config, queueName(type), jobId, requester);
  }

  /** Adds a job of one operation, with that operation's job options, and who asked for it. */
  async add(
    type: OperationType,
    data: unknown,
    options: JobsOptions & { jobId: string },
    requester: Requester,
  ): Promise<unknown> {
    await this.stamp(type, options.jobId, requester);
    return this.get(type).add(type, data, { ...jobOptionsFor(this.config, type), ...options });
  }

  all(): Queue[] {
    return workerTypes.map((type) => this.get(type));
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((queue) => queue.close()));
    this.queues.clear();
  }
}
