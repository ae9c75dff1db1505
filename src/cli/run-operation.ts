import { randomBytes } from 'node:crypto';
import type { Config } from '../config.js';
import { PermanentError } from '../errors.js';
import { createLogger } from '../logger.js';
import { createContext } from '../operations/context.js';
import { getOperation, isOperationType, queueOf, type OperationType } from '../operations/index.js';
import { LOCAL_QUEUE } from '../job-ids.js';
import { unrecordedLedger } from '../ownership.js';
import { validatePayload } from '../operations/validate.js';
import { Producer, type JobOutcome } from '../queue/producer.js';
import { CliExit } from '../errors.js';
import { cliConfig } from './config.js';
import { EXIT, err, out, printJson } from './io.js';
import { createProgressDisplay } from './progress.js';

export interface RunFlags {
  wait?: boolean;
  json?: boolean;
  local?: boolean;
  /** Print nothing (a prerequisite run by --local). */
  quiet?: boolean;
}

/** What an operation command does with the payload it built: run it, or (schedule add) keep it. */
export type RunOperation = (type: OperationType, input: Record<string, unknown>, flags: RunFlags) => Promise<void>;

function describe(type: OperationType, result: unknown): string {
  const operation = getOperation(type);
  return operation.describe ? operation.describe(result) : JSON.stringify(result);
}

function report(type: OperationType, outcome: JobOutcome<OperationType>, flags: RunFlags): void {
  if (outcome.state === 'completed') {
    if (flags.json) printJson(outcome.result);
    else out(describe(type, outcome.result));
    return;
  }
  throw new CliExit(EXIT.failed, `job ${outcome.id} ${outcome.state}: ${outcome.failedReason}`);
}

/** Runs the processor in this process, with no Redis: the emergency mode of the old scripts. */
async function runLocally(config: Config, type: OperationType, payload: unknown, flags: RunFlags): Promise<unknown> {
  const operation = getOperation(type);
  // Prerequisite jobs (e.g. migrate --backup-first) run here too, first, and must succeed.
  const runChildren = async (children: { type: string; payload: unknown }[]) => {
    const results: unknown[] = [];
    for (const child of children) {
      if (!isOperationType(child.type)) throw new Error(`unknown child operation "${child.type}"`);
      results.push(await runLocally(config, child.type, await validatePayload(config, child.type, child.payload), { ...flags, json: true, quiet: true }));
    }
    return results;
  };
  const childResults = await runChildren(operation.children?.(payload) ?? []);
  process.umask(0o077); // a local backup is its owner's alone, as a worker's is
  const controller = new AbortController();
  const interrupt = () => controller.abort(new Error('interrupted'));
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);
  err(`running ${type} locally, without Redis${type === 'restore' ? '; the per-database lock is taken on the PostgreSQL server as usual' : ''}`);
  const display = createProgressDisplay();
  const jobId = `local-${randomBytes(4).toString('hex')}`;
  const { context, flush } = createContext(
    {
      jobId,
      // No queue to ask whether this run is alive: what it leaves when killed is reported, never removed.
      job: { prefix: config.QUEUE_PREFIX, queue: LOCAL_QUEUE, id: jobId },
      ledger: unrecordedLedger,
      attempt: 1,
      payload,
      config,
      logger: createLogger({ ...config, LOG_LEVEL: config.LOG_LEVEL === 'info' ? 'warn' : config.LOG_LEVEL }, { local: true }, 2),
      signal: controller.signal,
      childResults,
      awaitChildren: runChildren,
      enqueue: async () => {
        throw new PermanentError('this needs the queue: run it without --local');
      },
    },
    { progress: (progress) => display.update(progress), log: () => undefined },
    100,
  );
  try {
    const result = await operation.process(context);
    await flush();
    display.stop();
    if (!flags.quiet) report(type, { id: context.jobId, state: 'completed', result } as JobOutcome<OperationType>, flags);
    return result;
  } catch (error) {
    await flush();
    display.stop();
    throw error;
  } finally {
    process.off('SIGINT', interrupt);
    process.off('SIGTERM', interrupt);
  }
}

/** Says at once when no worker of the job's queue is connected: the job would only wait (and --wait with it). */
async function warnWithoutWorkers(producer: Producer, type: OperationType): Promise<void> {
  // CLIENT LIST, which BullMQ asks, may be disabled (some managed Redis): then nothing is said.
  const workers = await producer.queues
    .get(type)
    .getWorkersCount()
    .catch(() => undefined);
  if (workers === 0) err(`no ${queueOf(type)} worker is running: the job waits in the queue until one starts`);
}

/** What every operation command does: validate, enqueue (or run locally), print the id, maybe follow it. */
export async function runOperation(type: OperationType, input: Record<string, unknown>, flags: RunFlags): Promise<void> {
  const config = cliConfig();
  const payload = await validatePayload(config, type, input); // invalid input never reaches Redis
  if (flags.local) {
    await runLocally(config, type, payload, flags);
    return;
  }

  const producer = new Producer(config);
  try {
    const job = await producer.enqueue(type, payload);
    await warnWithoutWorkers(producer, type);
    // A question (a status, a list, a report) is waited for unless --no-wait says otherwise.
    const wait = flags.wait ?? getOperation(type).answers?.(payload as never) === true;
    if (!wait) {
      if (flags.json) printJson({ id: job.id });
      else out(job.id);
      return;
    }
    if (flags.json) err(`job ${job.id}`);
    else out(job.id);
    const display = createProgressDisplay();
    const outcome = await producer.wait(job.id, (progress) => display.update(progress));
    display.stop();
    report(type, outcome, flags);
  } finally {
    await producer.close();
  }
}
