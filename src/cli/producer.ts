import type { Producer } from '../queue/producer.js';
import { cliRequester } from '../queue/requester.js';
import { cliConfig } from './config.js';

/**
 * A producer for one command, as the person at the CLI (`user@host`), Redis checked first (a clear
 * "cannot reach Redis" rather than a client retrying), closed afterwards. Loaded when a command runs:
 * `--help` never loads BullMQ.
 */
export async function withProducer<T>(fn: (producer: Producer) => Promise<T>): Promise<T> {
  const { Producer } = await import('../queue/producer.js');
  const producer = new Producer(cliConfig(), undefined, cliRequester());
  try {
    await producer.ensureReachable();
    return await fn(producer);
  } finally {
    await producer.close();
  }
}
