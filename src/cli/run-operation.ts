import { cliConfig } from './config.js';
import { getOperation, queueOf, type OperationType } from '../operations/index.js';
import { validatePayload } from '../operations/validate.js';
import { Producer, type JobOutcome } from '../queue/producer.js';
import { cliRequester } from '../queue/requester.js';
import { CliExit } from '../errors.js';
import { formatJobReference } from '../job-ids.js';
import { EXIT, err, out, printJson } from './io.js';
import { report } from './report.js';
import type { RunFlags } from './run-flags.js';

/** Says at once when no worker of the job's queue is connected: the job would only wait (and --wait with it). */
async function warnWithoutWorkers(producer: Producer, type: OperationType): Promise<void> {
  // CLIENT LIST, which BullMQ asks, may be disabled (some managed Redis): then nothing is said.
  const workers = await producer.queues
    .get(type)
    .getWorkersCount()
    .catch(() => undefined);
  if (workers === 0) err(`no ${queueOf(type)} worker is running: the job waits in the queue until one starts`);
}

const INTERRUPTED = Symbol('interrupted');

/**
 * Listens for the first Ctrl-C (SIGINT) from now on: `interrupted` resolves then. Taken before the job's
 * id is printed, so that no Ctrl-C after it meets Node's default (an abrupt exit, the terminal as the
 * progress bar left it).
 */
function listenForInterrupt(): { interrupted: Promise<typeof INTERRUPTED>; stop(): void } {
  let onInterrupt: () => void = () => undefined;
  const interrupted = new Promise<typeof INTERRUPTED>((resolve) => {
    onInterrupt = () => resolve(INTERRUPTED);
    process.once('SIGINT', onInterrupt);
  });
  return { interrupted, stop: () => process.off('SIGINT', onInterrupt) };
}

/** What every operation command does: validate, enqueue (or run locally), print the id, maybe follow it. */
export async function runOperation(
  type: OperationType,
  input: Record<string, unknown>,
  flags: RunFlags,
): Promise<void> {
  const config = cliConfig();
  const payload = await validatePayload(config, type, input); // invalid input never reaches Redis
  if (flags.local) {
    // The emergency mode, its logger and progress display are loaded only when asked for.
    await (await import('./run-locally.js')).runLocally(config, type, payload, flags);
    return;
  }

  const producer = new Producer(config, undefined, cliRequester());
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
    const interrupt = listenForInterrupt();
    let outcome: JobOutcome<OperationType> | typeof INTERRUPTED;
    try {
      if (flags.json) err(`job ${job.id}`);
      else out(job.id);
      const display = (await import('./progress.js')).createProgressDisplay();
      outcome = await Promise.race([
        producer.wait(job.id, (progress) => display.update(progress)),
        interrupt.interrupted,
      ]);
      display.stop(); // on a terminal: the cursor and line wrapping back as they were
    } finally {
      interrupt.stop();
    }
    const reference = formatJobReference(type, job.id);
    if (outcome === INTERRUPTED) {
      if (!flags.cancelOnInterrupt)
        throw new CliExit(
          EXIT.interrupted,
          `stopped following ${reference}; the job goes on (cancel it with: manage-db jobs cancel ${reference})`,
        );
      const cancelled = await producer.cancel(reference);
      throw new CliExit(
        EXIT.interrupted,
        cancelled === 'finished'
          ? `${reference} had already finished: nothing to cancel`
          : `cancelled ${reference} (${cancelled === 'removed' ? 'it had not started' : 'its worker stops it; the target stays as it was'})`,
      );
    }
    report(type, outcome, flags);
  } finally {
    await producer.close();
  }
}
