import { FlowProducer, QueueEvents, type Job, type JobState } from 'bullmq';
import type { Config } from '../config.js';
import { ValidationError, errorMessage, wasCancelled } from '../errors.js';
import { scrubSecrets } from '../secrets.js';
import {
  getOperation,
  isOperationType,
  queueOf,
  workerTypes,
  type OperationType,
  type WorkerType,
  type PayloadInput,
  type ResultOf,
} from '../operations/index.js';
import type { Progress } from '../operations/operation.js';
import { createRedis, type RedisConnection } from './connection.js';
import { formatJobReference, newJobId, parseJobReference } from '../job-ids.js';
import { validatePayload } from '../operations/validate.js';
import { progressOf, type JobSummary } from './job-facts.js';
import { bullStatesOf, filtersEachJob, matchesFilter, type JobFilter } from './job-filter.js';
import { Queues, cancelChannel, cancelledKey, jobOptionsFor, queueName, typeOfJobId } from './queues.js';
import { History } from './history.js';
import { historyDraft } from './job-history.js';
import { forgetRequester, localUser, requesterOf, type Requester } from './requester.js';

export interface EnqueuedJob {
  id: string;
  type: OperationType;
}

export type JobOutcome<T extends OperationType> =
  | { id: string; state: 'completed'; result: ResultOf<T> }
  | { id: string; state: 'failed' | 'cancelled'; failedReason: string };

/** How many jobs of one queue `list` reads at most (per state). */
const LIST_SCAN = 2_000;

const iso = (ms: number | undefined) => (ms ? new Date(ms).toISOString() : null);

/**
 * A job's operation: its name, when that is an operation its queue runs. Another producer may name a
 * job anything, or put it on the wrong queue (a restore on backup's): such a job is its queue's.
 */
function typeOf(job: Job): OperationType {
  return isOperationType(job.name) && queueOf(job.name) === job.queueName ? job.name : (job.queueName as OperationType);
}

/** A job as dbops shows it, in the state it was read in. */
function summaryOf(job: Job, state: JobState | 'unknown'): JobSummary {
  const cancelled = state === 'failed' && wasCancelled(job.failedReason);
  return {
    id: job.id!,
    type: typeOf(job),
    reference: formatJobReference(typeOf(job), job.id!),
    state: cancelled ? 'cancelled' : state,
    progress: progressOf(job.progress, state),
    data: job.data,
    result: job.returnvalue ?? null,
    failedReason: job.failedReason || null,
    attemptsMade: job.attemptsMade,
    createdAt: iso(job.timestamp),
    startedAt: iso(job.processedOn),
    finishedAt: iso(job.finishedOn),
  };
}

/**
 * What the application imports to run operations: typed enqueue, look-up, wait, cancel. Nothing
 * reaches Redis before the payload has passed validation.
 */
export class Producer {
  readonly queues: Queues;
  readonly history: History;
  private readonly events = new Map<WorkerType, { events: QueueEvents; connection: RedisConnection }>();

  constructor(
    readonly config: Config,
    connection: RedisConnection = createRedis(config, 'producer'),
    /** Who asks, for the history, unless a call says otherwise (the API and the console say per request). */
    readonly requester: Requester = { via: 'library', name: localUser() },
  ) {
    this.queues = new Queues(config, connection);
    this.history = new History(connection, config);
  }

  private reachable: Promise<void> | undefined;

  /** Fails fast, with a clear message, when Redis does not answer (instead of waiting for it forever). */
  ensureReachable(timeoutMs = 10_000): Promise<void> {
    this.reachable ??= new Promise<void>((resolve, reject) => {
      const where = scrubSecrets(this.config.REDIS_URL, this.config.secrets);
      let lastError = `no answer in ${timeoutMs / 1000}s`;
      const onError = (error: Error) => {
        lastError = errorMessage(error);
      };
      const connection = this.queues.connection;
      connection.on('error', onError);
      const fail = () => {
        this.reachable = undefined; // ask again next time
        reject(new Error(`cannot reach Redis at ${where}: ${lastError}`));
      };
      const timer = setTimeout(fail, timeoutMs);
      connection
        .ping()
        .then(() => resolve(), fail)
        .finally(() => {
          clearTimeout(timer);
          connection.off('error', onError);
        });
    });
    return this.reachable;
  }

  async enqueue<T extends OperationType>(
    type: T,
    payload: PayloadInput<T>,
    options: { jobId?: string; requester?: Requester } = {},
  ): Promise<EnqueuedJob> {
    const data = await validatePayload(this.config, type, payload);
    await this.ensureReachable();
    const id = options.jobId ?? newJobId(type);
    const requester = options.requester ?? this.requester;
    const children = getOperation(type).children?.(data) ?? [];
    if (children.length === 0) {
      await this.queues.add(type, data, { jobId: id }, requester);
      return { id, type };
    }
    await this.queues.stamp(type, id, requester);
    // A flow: this job waits in waiting-children until its children succeed.
    const childJobs = [];
    for (const child of children) {
      if (!isOperationType(child.type)) throw new Error(`unknown child operation "${child.type}"`);
      const childData = await validatePayload(this.config, child.type, child.payload);
      const childId = newJobId(child.type);
      await this.queues.stamp(child.type, childId, requester);
      childJobs.push({
        name: child.type,
        queueName: queueName(child.type),
        data: childData,
        opts: { ...jobOptionsFor(this.config, child.type), jobId: childId, failParentOnFailure: true },
      });
    }
    const flows = new FlowProducer({ connection: this.queues.connection, prefix: this.config.QUEUE_PREFIX });
    try {
      await flows.add({
        name: type,
        queueName: queueName(type),
        data,
        opts: { ...jobOptionsFor(this.config, type), jobId: id },
        children: childJobs,
      });
    } finally {
      await flows.close();
    }
    return { id, type };
  }

  /**
   * Finds a job by reference: `<type>/<id>`, or a bare id looked for in every queue (a dbops-made id's
   * own queue first). Two jobs with that id in two queues: a ValidationError naming both.
   */
  async getJob(reference: string): Promise<Job | undefined> {
    await this.ensureReachable();
    const { type, id } = parseJobReference(reference, isOperationType);
    if (type) {
      // In that type's queue; a companion's job (prune on backup's queue) answers to its own type only.
      const job = await this.queues.get(type as OperationType).getJob(id);
      return job && typeOf(job) === type ? job : undefined;
    }
    const hinted = typeOfJobId(id);
    const hit = hinted ? await this.queues.get(hinted).getJob(id) : undefined;
    if (hit) return hit;
    const found = (await Promise.all(workerTypes.map((queue) => this.queues.get(queue).getJob(id)))).filter(
      (job): job is Job => Boolean(job),
    );
    if (found.length > 1) {
      const names = found.map((job) => formatJobReference(typeOf(job), id)).join(', ');
      throw new ValidationError(`"${id}" names a job in several queues (${names}): name one as <type>/<id>`);
    }
    return found[0];
  }

  async summarize(fetched: Job): Promise<JobSummary> {
    const state = await fetched.getState();
    // The job's data may have been read just before it finished: read it again, it is final now.
    const again = async () =>
      (await this.queues.get(fetched.queueName as OperationType).getJob(fetched.id!)) ?? fetched;
    const job = (state === 'completed' || state === 'failed') && !fetched.finishedOn ? await again() : fetched;
    return summaryOf(job, state);
  }

  /**
   * The newest jobs that match a filter, newest first. A filter that only a job's summary can decide
   * (its environment, time, text, a type sharing a queue, failed apart from cancelled) reads at most
   * LIST_SCAN jobs of each queue and state, enough for what the queues keep (JOB_KEEP_COMPLETED,
   * JOB_KEEP_FAILED); any other needs only the newest `limit` of each.
   */
  async list(filter: Partial<JobFilter> = {}): Promise<JobSummary[]> {
    const wanted = { limit: 50, ...filter };
    await this.ensureReachable();
    const queues = wanted.types ? [...new Set(wanted.types.map(queueOf))] : workerTypes;
    const scan = filtersEachJob(wanted) ? LIST_SCAN : wanted.limit;
    const found: JobSummary[] = [];
    for (const queue of queues) {
      // State by state: each job's state is then known without asking Redis for it again.
      for (const state of bullStatesOf(wanted)) {
        for (const job of (await this.queues.get(queue).getJobs([state], 0, scan - 1)).filter(Boolean)) {
          const summary = summaryOf(job, state);
          if (matchesFilter(summary, wanted)) found.push(summary);
        }
      }
    }
    return found.sort((a, b) => Date.parse(b.createdAt ?? '') - Date.parse(a.createdAt ?? '')).slice(0, wanted.limit);
  }

  private async queueEvents(type: OperationType): Promise<QueueEvents> {
    const queue = queueName(type);
    let entry = this.events.get(queue);
    if (!entry) {
      const connection = createRedis(this.config, 'worker');
      const events = new QueueEvents(queue, { connection, prefix: this.config.QUEUE_PREFIX });
      events.on('error', () => undefined);
      entry = { events, connection };
      this.events.set(queue, entry);
      await events.waitUntilReady();
    }
    return entry.events;
  }

  /**
   * Follows a job until it has finished for good (retries included), reporting progress on the way.
   * Resolves with the outcome; a failed job is an outcome, not an exception.
   */
  async wait<T extends OperationType>(
    reference: string,
    onProgress?: (progress: Progress) => void,
  ): Promise<JobOutcome<T>> {
    // A job removed meanwhile (cancelled before it started) is still followed to that outcome below.
    const named = parseJobReference(reference, isOperationType);
    const located = named.type ? undefined : await this.getJob(reference);
    const type = (named.type as OperationType | undefined) ?? (located ? typeOf(located) : typeOfJobId(named.id));
    if (!type) throw new ValidationError(`no job "${reference}"`);
    const id = named.id;
    const events = await this.queueEvents(type);
    // Events only wake the loop early; the job's state in Redis is what decides.
    let wake: (() => void) | undefined;
    let woken: boolean | undefined;
    const onEnd = ({ jobId }: { jobId: string }) => {
      if (jobId !== id) return;
      woken = true;
      wake?.();
    };
    const onEvent = ({ jobId, data }: { jobId: string; data: unknown }) => {
      if (jobId === id && onProgress && typeof data === 'object' && data) onProgress(data as Progress);
    };
    events.on('progress', onEvent);
    events.on('completed', onEnd);
    events.on('failed', onEnd);
    events.on('removed', onEnd);
    try {
      for (let round = 0; ; round += 1) {
        woken = false;
        let job: Job | undefined;
        let state: JobState | 'unknown';
        try {
          // State first, then the data: the data is then at least as new as the state (no finished
          // job without its result).
          state = await this.queues.get(type).getJobState(id);
          job = (await this.queues.get(type).getJob(id)) ?? undefined;
        } catch {
          // Redis is away (restarting, failing over): keep following the job once it is back.
          await new Promise((resolve) => setTimeout(resolve, 1_000));
          continue;
        }
        if (!job) return { id, state: 'cancelled', failedReason: 'the job no longer exists (cancelled or removed)' };
        if (state === 'completed') return { id, state, result: job.returnvalue as ResultOf<T> };
        if (state === 'failed') {
          const reason = job.failedReason || 'failed';
          return { id, state: wasCancelled(reason) ? 'cancelled' : 'failed', failedReason: reason };
        }
        if (onProgress && typeof job.progress === 'object' && job.progress) onProgress(job.progress as Progress);
        if (!woken) {
          await new Promise<void>((resolve) => {
            // QueueEvents reads from the moment its first read reaches Redis: a job that ends before
            // then is never announced. So look again soon at first (50 ms, doubling), then every 2 s.
            const timer = setTimeout(resolve, Math.min(2_000, 50 * 2 ** round));
            wake = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          wake = undefined;
        }
      }
    } finally {
      events.off('progress', onEvent);
      events.off('completed', onEnd);
      events.off('failed', onEnd);
      events.off('removed', onEnd);
    }
  }

  /**
   * Cancels a job: one not started yet is removed from its queue; a running one is told to stop
   * (its worker ends the child process and leaves the target as it was).
   */
  async cancel(
    reference: string,
    requester: Requester = this.requester,
  ): Promise<'removed' | 'signalled' | 'finished' | 'unknown'> {
    const job = await this.getJob(reference);
    return job ? this.cancelJob(job, requester) : 'unknown';
  }

  /**
   * cancel, for a job already found. A job removed before it started is in the history as cancelled,
   * by whom; a running one is recorded by its worker when it stops.
   */
  async cancelJob(job: Job, requester: Requester = this.requester): Promise<'removed' | 'signalled' | 'finished'> {
    const state = await job.getState();
    if (state === 'completed' || state === 'failed') return 'finished';
    if (state === 'active') {
      await this.queues.connection.set(cancelledKey(this.config, job.queueName, job.id!), '1', 'EX', 7 * 86_400);
      await this.queues.connection.publish(cancelChannel(this.config), `${job.queueName}/${job.id}`);
      return 'signalled';
    }
    await job.remove();
    const type = typeOf(job);
    await this.history.append(
      historyDraft({
        job,
        type,
        operation: getOperation(type),
        config: this.config,
        state: 'cancelled',
        requester: await requesterOf(this.queues.connection, this.config, job),
        reason: 'cancelled before it started',
        cancelledBy: requester,
      }),
    );
    await forgetRequester(this.queues.connection, this.config, job.queueName, job.id!);
    return 'removed';
  }

  /** Runs a job that failed (or was cancelled) for good once more, from its first attempt. */
  async retry(reference: string): Promise<'retrying' | 'not-failed' | 'unknown'> {
    const job = await this.getJob(reference);
    return job ? this.retryJob(job) : 'unknown';
  }

  /** retry, for a job already found. */
  async retryJob(job: Job): Promise<'retrying' | 'not-failed'> {
    if ((await job.getState()) !== 'failed') return 'not-failed';
    await this.queues.connection.del(cancelledKey(this.config, job.queueName, job.id!));
    await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
    return 'retrying';
  }

  /** Drops every Redis connection at once: pending commands fail (for a close that Redis, being away, would keep waiting). */
  disconnect(): void {
    for (const { connection } of this.events.values()) connection.disconnect();
    this.queues.connection.disconnect();
  }

  async close(): Promise<void> {
    await Promise.all(
      [...this.events.values()].map(async ({ events, connection }) => {
        await events.close();
        await connection.quit().catch(() => undefined);
      }),
    );
    await this.queues.close();
    await this.queues.connection.quit().catch(() => undefined);
  }
}
