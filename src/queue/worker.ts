import { UnrecoverableError, WaitingChildrenError, WaitingError, Worker, type Job } from 'bullmq';
import type { Config } from '../config.js';
import { CANCELLED_REASON, errorMessage, isRetryable } from '../errors.js';
import type { JobRef } from '../job-ids.js';
import type { Logger } from '../logger.js';
import type { DatabaseLedger, RecoveryContext } from '../ownership.js';
import { createContext } from '../operations/context.js';
import {
  isOperationType,
  isWorkerType,
  operationsOn,
  type OperationType,
  type WorkerType,
} from '../operations/index.js';
import type { Operation } from '../operations/operation.js';
import { checkPayload, validatePayload } from '../operations/validate.js';
import { scrubSecrets } from '../secrets.js';
import { createRedis, type RedisConnection } from './connection.js';
import { redisLedger } from './ledger.js';
import { Queues, cancelChannel, cancelledKey, finishedJobRetention } from './queues.js';
import { History } from './history.js';
import { historyDraft } from './job-history.js';
import { forgetRequester, requesterOf } from './requester.js';
import { formatJobReference } from '../job-ids.js';

/** Why a running job's signal was aborted. */
export const SHUTDOWN = 'worker shutting down';
const RECOVERY_INTERVAL_MS = 10 * 60_000;

/**
 * A field dbops adds to the hash of a job that changed a database or backups, once it completed.
 * It lives and dies with the job (BullMQ's retry of a completed job keeps it), so a replayed job is
 * refused, and a new job that reuses a removed job's id is not.
 */
export const COMPLETED_FIELD = 'dbopsCompletedAt';

export interface RunningWorker {
  worker: Worker;
  /** Stops taking jobs, stops running ones and puts them back in the queue, closes connections. */
  shutdown(): Promise<void>;
}

/** Whether a job is being worked on: asked of its own queue, never guessed from its id. */
function jobLiveness(config: Config, queues: Queues): (job: JobRef) => Promise<boolean> {
  return async (job) => {
    // Another prefix's job (or an unknown queue) is not this worker's to judge: taken as alive.
    if (job.prefix !== config.QUEUE_PREFIX || !isWorkerType(job.queue)) return true;
    return (await queues.get(job.queue).getJobState(job.id)) === 'active';
  };
}

/**
 * Leftovers of dead workers (partial files, databases) are looked for at start, after a job fails
 * for good (e.g. one refused as cancelled after its worker died), and every few minutes.
 */
function recoveryLoop(operations: Operation[], context: RecoveryContext) {
  let recovering: Promise<void> | undefined;
  const recover = () => {
    recovering ??= (async () => {
      try {
        for (const operation of operations) await operation.recover?.(context);
      } catch (error) {
        context.logger.warn({ err: error }, 'recovery of leftovers failed; continuing');
      } finally {
        recovering = undefined;
      }
    })();
    return recovering;
  };
  const timer = setInterval(() => void recover(), RECOVERY_INTERVAL_MS);
  timer.unref();
  return { recover, stop: () => clearInterval(timer) };
}

/**
 * Appends a batch of lines to a job's log in one round trip, where `job.log` takes one per line: a
 * restore of thousands of tables prints tens of thousands. The same list BullMQ keeps, trimmed as it trims.
 */
async function appendLogs(connection: RedisConnection, job: Job, lines: string[]): Promise<void> {
  if (lines.length === 0) return;
  const key = `${job.queueQualifiedName}:${job.id}:logs`;
  const keep = job.opts.keepLogs;
  const batch = connection.multi().rpush(key, ...lines);
  if (keep) batch.ltrim(key, -keep, -1);
  await batch.exec();
}

/**
 * A failure reason leaves the worker (Redis, the HTTP API, webhooks): the worker's own directories in
 * it, as a tool names a file, are given by their variables instead.
 */
export function withoutServerPaths(message: string, config: Pick<Config, 'backupDir' | 'migrationsRoot'>): string {
  let text = message;
  for (const [dir, name] of [
    [config.backupDir, 'BACKUP_DIR'],
    [config.migrationsRoot, 'MIGRATIONS_ROOT'],
  ] as const) {
    if (dir.length > 1) text = text.split(dir).join(name);
  }
  return text;
}

/** Turns whatever a processor threw into what BullMQ should do with the job. */
async function settle(
  config: Config,
  job: Job,
  token: string | undefined,
  signal: AbortSignal | undefined,
  error: unknown,
): Promise<Error> {
  if (error instanceof WaitingChildrenError) return error; // not a failure: BullMQ runs the job again once its children are done
  if (signal?.aborted && signal.reason === SHUTDOWN) {
    await job.moveToWait(token);
    return new WaitingError();
  }
  if (signal?.aborted && signal.reason === CANCELLED_REASON) return cancelled();
  const message = withoutServerPaths(scrubSecrets(errorMessage(error), config.secrets), config);
  const settled = isRetryable(error) ? new Error(message) : new UnrecoverableError(message);
  settled.stack = `${settled.name}: ${message}`; // stack traces stay in the worker's own log
  return settled;
}

/** A cancel is no fault: its record (Bull Board shows the stack) is the reason alone, no trace, no paths. */
function cancelled(): UnrecoverableError {
  const error = new UnrecoverableError(CANCELLED_REASON);
  error.stack = CANCELLED_REASON;
  return error;
}

interface ProcessorDeps {
  type: WorkerType | string;
  config: Config;
  logger: Logger;
  connection: RedisConnection;
  queues: Queues;
  ledger: DatabaseLedger;
  byName: Map<string, Operation>;
  isShuttingDown(): boolean;
}

/**
 * Runs one job: everything a payload must satisfy is checked here, whoever produced it (the CLI, the
 * HTTP API, Bull Board, a schedule, bullmq-python): the operation named, the schema, the confirmation a
 * protected environment needs, and that a job which changed something never runs a second time.
 */
function processorFor(deps: ProcessorDeps) {
  const { type, config, logger, connection, queues, ledger, byName } = deps;
  return async (job: Job, token?: string, signal?: AbortSignal) => {
    const jobLogger = logger.child({ jobId: job.id, attempt: job.attemptsMade + 1 });
    if (deps.isShuttingDown()) {
      await job.moveToWait(token);
      throw new WaitingError();
    }
    if (await connection.exists(cancelledKey(config, type, job.id!))) throw cancelled();
    const operation = byName.get(job.name);
    if (!operation) throw new UnrecoverableError(`a ${type} worker does not run "${job.name}" jobs`);
    let payload: unknown;
    try {
      payload = await checkPayload(operation, config, job.data);
    } catch (error) {
      jobLogger.warn({ reason: errorMessage(error) }, 'job refused');
      throw await settle(config, job, token, signal, error);
    }
    const changes = operation.changes?.(payload);
    const jobKey = `${job.queueQualifiedName}:${job.id}`;
    if (changes) {
      const completedAt = await connection.hget(jobKey, COMPLETED_FIELD);
      if (completedAt) {
        throw new UnrecoverableError(
          `this ${job.name} job already completed at ${completedAt}: a job that changed ${changes} never runs again; enqueue a new one`,
        );
      }
    }
    const ref: JobRef = { prefix: config.QUEUE_PREFIX, queue: type, id: job.id! };
    const byJob = { via: 'job', name: formatJobReference(job.name, job.id!) } as const;
    const { context, flush } = createContext(
      {
        jobId: job.id!,
        job: ref,
        ledger,
        attempt: job.attemptsMade + 1,
        payload,
        config,
        logger: jobLogger,
        signal: signal ?? new AbortController().signal,
        childResults: Object.values(await job.getChildrenValues()),
        awaitChildren: async (children) => {
          for (const child of children) {
            if (!isOperationType(child.type)) throw new Error(`unknown operation type "${child.type}"`);
            const data = await validatePayload(config, child.type, child.payload);
            await queues.add(
              child.type,
              data,
              { jobId: child.jobId, parent: { id: job.id!, queue: job.queueQualifiedName }, failParentOnFailure: true },
              byJob,
            );
          }
          if (await job.moveToWaitingChildren(token!)) throw new WaitingChildrenError();
          return Object.values(await job.getChildrenValues());
        },
        enqueue: async (followUp, followUpPayload, options) => {
          if (!isOperationType(followUp)) throw new Error(`unknown operation type "${followUp}"`);
          const data = await validatePayload(config, followUp, followUpPayload);
          await queues.add(followUp, data, { jobId: options.jobId, delay: options.delayMs }, byJob);
        },
      },
      {
        progress: (progress) => job.updateProgress(progress),
        log: (lines) => appendLogs(connection, job, lines),
      },
    );
    jobLogger.info({ payload }, 'job started');
    const startedAt = Date.now();
    try {
      const result = await operation.process(context);
      if (changes) await connection.hset(jobKey, COMPLETED_FIELD, new Date().toISOString());
      // Logged here, where the work is known done: BullMQ's 'completed' event never comes when
      // Redis recorded the completion but its reply was lost to a dropped connection.
      jobLogger.info({ durationMs: Date.now() - startedAt }, 'job succeeded');
      return result;
    } catch (error) {
      if (!signal?.aborted && !(error instanceof WaitingChildrenError))
        jobLogger.error({ err: error }, 'job attempt failed');
      throw await settle(config, job, token, signal, error);
    } finally {
      await flush();
    }
  };
}

/** Whether a job's attempt that threw ended the job: no retry, no coming back (shutdown, children). */
function endedTheJob(job: Job, error: unknown): boolean {
  if (error instanceof WaitingError || error instanceof WaitingChildrenError) return false;
  return error instanceof UnrecoverableError || job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
}

type RecordEnd = (job: Job, startedAt: number, ended: { result?: unknown; error?: Error }) => Promise<void>;

/** Appends a job's end to the history. A lost entry is logged, never a reason to fail a job that did its work. */
function historyRecorder(deps: ProcessorDeps, history: History): RecordEnd {
  const { config, connection, logger, byName } = deps;
  return async (job, startedAt, ended) => {
    try {
      const operation = byName.get(job.name);
      const reason = ended.error?.message;
      const state = ended.error ? (reason === CANCELLED_REASON ? 'cancelled' : 'failed') : 'completed';
      await history.append(
        historyDraft({
          job,
          type: operation ? job.name : deps.type,
          operation,
          config,
          state,
          requester: await requesterOf(connection, config, job),
          result: ended.result,
          reason,
          startedAt,
          clean: (text) => withoutServerPaths(text, config),
        }),
      );
      if (state !== 'failed') await forgetRequester(connection, config, job.queueName, job.id!);
    } catch (error) {
      logger.error({ jobId: job.id, err: error }, 'the job history did not take this job');
    }
  };
}

/** Each job that ends (completed, failed for good, cancelled) in this worker's hands leaves an entry in the history. */
function recordedInHistory(
  record: RecordEnd,
  run: (job: Job, token?: string, signal?: AbortSignal) => Promise<unknown>,
) {
  return async (job: Job, token?: string, signal?: AbortSignal) => {
    const startedAt = Date.now();
    try {
      const result = await run(job, token, signal);
      await record(job, startedAt, { result });
      return result;
    } catch (error) {
      if (endedTheJob(job, error)) await record(job, startedAt, { error: error as Error });
      throw error;
    }
  };
}

/** How many times a job may be found stalled (its worker gone) and run again; one more fails it. */
const MAX_STALLED = 2;
const STALLED_LIMIT_REASON = 'job stalled more than allowable limit';

/**
 * A job BullMQ fails because its workers died with it too many times ends in no processor's hands: the
 * stalled-job check fails it in Redis. Each check of this worker's reads the queue's failed jobs since
 * the last one and records those in the history; one marker per failure, so that of all the workers
 * looking, one records it.
 */
function stalledFailuresRecorder(deps: ProcessorDeps, record: RecordEnd): () => Promise<void> {
  const { config, connection, queues, logger } = deps;
  const queue = queues.get(deps.type as OperationType);
  let since = Date.now() - 60 * 60_000;
  return async () => {
    try {
      const now = Date.now();
      // A little overlap: a failure scored just before the last look is not missed (the marker dedupes).
      const ids = await connection.zrangebyscore(queue.keys.failed!, since - 5_000, '+inf');
      since = now;
      for (const id of ids) {
        const job = await queue.getJob(id);
        if (!job || job.failedReason !== STALLED_LIMIT_REASON) continue;
        const marker = `${config.QUEUE_PREFIX}:dbops:history-stalled:${deps.type}:${id}:${job.finishedOn ?? 0}`;
        if ((await connection.set(marker, '1', 'PX', 7 * 24 * 60 * 60_000, 'NX')) !== 'OK') continue;
        await record(job, job.processedOn ?? job.timestamp, {
          error: new Error(`its worker stopped with it ${MAX_STALLED + 1} times (${STALLED_LIMIT_REASON})`),
        });
      }
    } catch (error) {
      logger.warn({ err: error }, 'could not read the jobs failed for stalling; the next check tries again');
    }
  };
}

/**
 * Runs the jobs of one worker type (its own operation and its companions, see Operation.queue), or of
 * any single Operation (the benchmarks' no-op).
 */
export async function startWorker(
  typeOrOperation: WorkerType | Operation,
  config: Config,
  logger: Logger,
): Promise<RunningWorker> {
  const operations = typeof typeOrOperation === 'string' ? operationsOn(typeOrOperation) : [typeOrOperation];
  const type = typeof typeOrOperation === 'string' ? typeOrOperation : typeOrOperation.type;
  const concurrency = config.concurrencyByType.get(type) ?? config.WORKER_CONCURRENCY;
  const connection = createRedis(config, 'worker');
  const queues = new Queues(config, connection);
  const ledger = redisLedger(connection, config);
  let shuttingDown = false;

  const recovery = recoveryLoop(operations, {
    config,
    logger,
    prefix: config.QUEUE_PREFIX,
    isJobActive: jobLiveness(config, queues),
    ledger,
  });
  await recovery.recover();

  const deps: ProcessorDeps = {
    type,
    config,
    logger,
    connection,
    queues,
    ledger,
    byName: new Map(operations.map((operation) => [operation.type, operation])),
    isShuttingDown: () => shuttingDown,
  };
  const record = historyRecorder(deps, new History(connection, config));
  const processor = recordedInHistory(record, processorFor(deps));
  const recordStalledFailures = stalledFailuresRecorder(deps, record);
  const worker = new Worker(type, processor, {
    connection,
    prefix: config.QUEUE_PREFIX,
    concurrency,
    lockDuration: config.WORKER_LOCK_MS,
    stalledInterval: config.WORKER_STALLED_INTERVAL_MS ?? config.WORKER_LOCK_MS,
    maxStalledCount: MAX_STALLED,
    autorun: false,
    ...finishedJobRetention(config),
  });
  worker.on('completed', (job) => logger.info({ jobId: job.id }, 'job completed'));
  worker.on('failed', (job, error) => {
    logger.warn({ jobId: job?.id, reason: error.message }, 'job failed');
    if (!(error instanceof WaitingError)) setTimeout(() => void recovery.recover(), 100).unref();
  });
  worker.on('error', (error) => logger.error({ err: error }, 'worker error'));
  const stalledCheck = setInterval(
    () => void recordStalledFailures(),
    config.WORKER_STALLED_INTERVAL_MS ?? config.WORKER_LOCK_MS,
  );
  stalledCheck.unref();

  // `manage-db jobs cancel` publishes the id; whichever worker runs that job aborts it.
  const subscriber = connection.duplicate();
  subscriber.on('error', () => undefined);
  await subscriber.subscribe(cancelChannel(config));
  subscriber.on('message', (_channel, message: string) => {
    const slash = message.indexOf('/');
    if (message.slice(0, slash) !== type) return; // another queue's job of the same id
    const jobId = message.slice(slash + 1);
    if (worker.cancelJob(jobId, CANCELLED_REASON)) logger.info({ jobId }, 'cancelling job');
  });

  void worker.run();
  await worker.waitUntilReady();
  logger.info({ type, prefix: config.QUEUE_PREFIX, concurrency }, 'worker ready');

  let closing: Promise<void> | undefined;
  return {
    worker,
    shutdown() {
      closing ??= (async () => {
        shuttingDown = true;
        recovery.stop();
        clearInterval(stalledCheck);
        const closed = worker.close();
        worker.cancelAllJobs(SHUTDOWN);
        await closed;
        await subscriber.quit().catch(() => undefined);
        await queues.close();
        await connection.quit().catch(() => undefined);
      })();
      return closing;
    },
  };
}
