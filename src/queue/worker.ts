import { UnrecoverableError, WaitingError, Worker, type Job } from 'bullmq';
import type { Config } from '../config.js';
import { errorMessage, isRetryable } from '../errors.js';
import type { Logger } from '../logger.js';
import { createContext } from '../operations/context.js';
import { isOperationType, operationsOn, type WorkerType } from '../operations/index.js';
import type { Operation } from '../operations/operation.js';
import { scrubSecrets } from '../secrets.js';
import { createRedis } from './connection.js';
import { validatePayload } from './producer.js';
import { Queues, cancelChannel, cancelledKey, typeOfJobId } from './queues.js';

/** Why a running job's signal was aborted. */
export const SHUTDOWN = 'worker shutting down';
export const CANCELLED = 'cancelled by user';
const RECOVERY_INTERVAL_MS = 10 * 60_000;

export interface RunningWorker {
  worker: Worker;
  /** Stops taking jobs, stops running ones and puts them back in the queue, closes connections. */
  shutdown(): Promise<void>;
}

function formatValidationIssues(issues: { path: PropertyKey[]; message: string }[]): string {
  return issues.map((issue) => `${issue.path.join('.') || 'payload'}: ${issue.message}`).join('; ');
}

/**
 * Runs the jobs of one worker type (its own operation and its companions, see Operation.queue), or of
 * any single Operation (the benchmarks' no-op).
 */
export async function startWorker(typeOrOperation: WorkerType | Operation, config: Config, logger: Logger): Promise<RunningWorker> {
  const operations = typeof typeOrOperation === 'string' ? operationsOn(typeOrOperation) : [typeOrOperation];
  const type = typeof typeOrOperation === 'string' ? typeOrOperation : typeOrOperation.type;
  const byName = new Map(operations.map((operation) => [operation.type, operation]));
  const concurrency = config.concurrencyByType.get(type) ?? config.WORKER_CONCURRENCY;
  const connection = createRedis(config, 'worker');
  const queues = new Queues(config, connection);
  let shuttingDown = false;

  const isJobActive = async (jobId: string) => {
    const owner = typeOfJobId(jobId);
    return owner !== undefined && (await queues.get(owner).getJobState(jobId)) === 'active';
  };
  // Leftovers of dead workers (partial files, shadow databases) are looked for at start, after a job
  // fails for good (e.g. one refused as cancelled after its worker died), and every few minutes.
  let recovering: Promise<void> | undefined;
  const recover = () => {
    recovering ??= (async () => {
      try {
        for (const operation of operations) await operation.recover?.({ config, logger, isJobActive });
      } catch (error) {
        logger.warn({ err: error }, 'recovery of leftovers failed; continuing');
      } finally {
        recovering = undefined;
      }
    })();
    return recovering;
  };
  await recover();
  const recoveryTimer = setInterval(() => void recover(), RECOVERY_INTERVAL_MS);
  recoveryTimer.unref();

  /** Turns whatever a processor threw into what BullMQ should do with the job. */
  const settle = async (job: Job, token: string | undefined, signal: AbortSignal | undefined, error: unknown): Promise<Error> => {
    if (signal?.aborted && signal.reason === SHUTDOWN) {
      await job.moveToWait(token);
      return new WaitingError();
    }
    if (signal?.aborted && signal.reason === CANCELLED) return new UnrecoverableError(CANCELLED);
    const message = scrubSecrets(errorMessage(error), config.secrets);
    const settled = isRetryable(error) ? new Error(message) : new UnrecoverableError(message);
    settled.stack = `${settled.name}: ${message}`; // stack traces stay in the worker's own log
    return settled;
  };

  const processor = async (job: Job, token?: string, signal?: AbortSignal) => {
    const jobLogger = logger.child({ jobId: job.id, attempt: job.attemptsMade + 1 });
    if (shuttingDown) {
      await job.moveToWait(token);
      throw new WaitingError();
    }
    if (await connection.exists(cancelledKey(config, job.id!))) throw new UnrecoverableError(CANCELLED);
    const operation = byName.get(job.name);
    if (!operation) throw new UnrecoverableError(`a ${type} worker does not run "${job.name}" jobs`);
    const parsed = operation.schema.safeParse(job.data);
    if (!parsed.success) throw new UnrecoverableError(`invalid payload: ${formatValidationIssues(parsed.error.issues)}`);
    const { context, flush } = createContext(
      {
        jobId: job.id!,
        attempt: job.attemptsMade + 1,
        payload: parsed.data,
        config,
        logger: jobLogger,
        signal: signal ?? new AbortController().signal,
        childResults: Object.values(await job.getChildrenValues()),
        enqueue: async (followUp, payload, options) => {
          if (!isOperationType(followUp)) throw new Error(`unknown operation type "${followUp}"`);
          const data = await validatePayload(config, followUp, payload);
          await queues.add(followUp, data, { jobId: options.jobId, delay: options.delayMs });
        },
      },
      {
        progress: (progress) => job.updateProgress(progress),
        log: (lines) => Promise.all(lines.map((line) => job.log(line))),
      },
    );
    jobLogger.info({ payload: parsed.data }, 'job started');
    try {
      await operation.precheck?.(parsed.data, config);
      return await operation.process(context);
    } catch (error) {
      if (!signal?.aborted) jobLogger.error({ err: error }, 'job attempt failed');
      throw await settle(job, token, signal, error);
    } finally {
      await flush();
    }
  };

  const worker = new Worker(type, processor, {
    connection,
    prefix: config.QUEUE_PREFIX,
    concurrency,
    lockDuration: config.WORKER_LOCK_MS,
    stalledInterval: config.WORKER_STALLED_INTERVAL_MS ?? config.WORKER_LOCK_MS,
    maxStalledCount: 2,
    autorun: false,
  });
  worker.on('completed', (job) => logger.info({ jobId: job.id }, 'job completed'));
  worker.on('failed', (job, error) => {
    logger.warn({ jobId: job?.id, reason: error.message }, 'job failed');
    if (!(error instanceof WaitingError)) setTimeout(() => void recover(), 100).unref();
  });
  worker.on('error', (error) => logger.error({ err: error }, 'worker error'));

  // `manage-db jobs cancel` publishes the id; whichever worker runs that job aborts it.
  const subscriber = connection.duplicate();
  subscriber.on('error', () => undefined);
  await subscriber.subscribe(cancelChannel(config));
  subscriber.on('message', (_channel, jobId: string) => {
    if (worker.cancelJob(jobId, CANCELLED)) logger.info({ jobId }, 'cancelling job');
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
        clearInterval(recoveryTimer);
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
