import { randomBytes } from 'node:crypto';
import type { Config } from '../config.js';
import { PermanentError } from '../errors.js';
import { LOCAL_QUEUE } from '../job-ids.js';
import { createLogger } from '../logger.js';
import { createContext } from '../operations/context.js';
import { getOperation, isOperationType, type OperationType } from '../operations/index.js';
import { validatePayload } from '../operations/validate.js';
import { unrecordedLedger } from '../ownership.js';
import type { JobOutcome } from '../queue/producer.js';
import { err } from './io.js';
import { createProgressDisplay } from './progress.js';
import { report } from './report.js';
import type { RunFlags } from './run-flags.js';

/** Runs the processor in this process, with no Redis: the emergency mode of the old scripts. */
export async function runLocally(
  config: Config,
  type: OperationType,
  payload: unknown,
  flags: RunFlags,
): Promise<unknown> {
  const operation = getOperation(type);
  // Prerequisite jobs (e.g. migrate --backup-first) run here too, first, and must succeed.
  const runChildren = async (children: { type: string; payload: unknown }[]) => {
    const results: unknown[] = [];
    for (const child of children) {
      if (!isOperationType(child.type)) throw new Error(`unknown child operation "${child.type}"`);
      results.push(
        await runLocally(config, child.type, await validatePayload(config, child.type, child.payload), {
          ...flags,
          json: true,
          quiet: true,
        }),
      );
    }
    return results;
  };
  const childResults = await runChildren(operation.children?.(payload) ?? []);
  process.umask(0o077); // a local backup is its owner's alone, as a worker's is
  const controller = new AbortController();
  const interrupt = () => controller.abort(new Error('interrupted'));
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);
  err(
    `running ${type} locally, without Redis${type === 'restore' ? '; the per-database lock is taken on the PostgreSQL server as usual' : ''}`,
  );
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
      logger: createLogger(
        { ...config, LOG_LEVEL: config.LOG_LEVEL === 'info' ? 'warn' : config.LOG_LEVEL },
        { local: true },
        2,
      ),
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
    if (!flags.quiet)
      report(type, { id: context.jobId, state: 'completed', result } as JobOutcome<OperationType>, flags);
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
