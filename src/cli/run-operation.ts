import { cliConfig } from './config.js';
import { getOperation, queueOf, type OperationType } from '../operations/index.js';
import { validatePayload } from '../operations/validate.js';
import { Producer } from '../queue/producer.js';
import { err, out, printJson } from './io.js';
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
    const display = (await import('./progress.js')).createProgressDisplay();
    const outcome = await producer.wait(job.id, (progress) => display.update(progress));
    display.stop();
    report(type, outcome, flags);
  } finally {
    await producer.close();
  }
}
