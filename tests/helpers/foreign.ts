import { Queue, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { Rig } from './rig.js';
import { REDIS_URL } from './services.js';
import { waitFor } from './wait.js';

/**
 * Another BullMQ producer than dbops' own (as bullmq-python, Bull Board's "add" or any script would
 * be): plain `Queue.add(name, data)`, BullMQ's default numeric ids, no validation, no job options.
 */
export class ForeignProducer {
  private readonly connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  private readonly queues = new Map<string, Queue>();
  constructor(private readonly rig: Rig) {}

  queue(name: string): Queue {
    let queue = this.queues.get(name);
    if (!queue) {
      queue = new Queue(name, { connection: this.connection, prefix: this.rig.prefix });
      this.queues.set(name, queue);
    }
    return queue;
  }

  add(queue: string, data: unknown, name = queue): Promise<Job> {
    return this.queue(queue).add(name, data);
  }

  /** Waits for a job to end; its state, result and failure reason. */
  async settled(
    queue: string,
    id: string,
    timeoutMs = 60_000,
  ): Promise<{ state: string; result: unknown; failedReason: string }> {
    return waitFor(
      `${queue} job ${id} to end`,
      async () => {
        const state = await this.queue(queue).getJobState(id);
        if (state !== 'completed' && state !== 'failed') return undefined;
        // Read after the state: a job read first may have been fetched while it still ran.
        const job = (await this.queue(queue).getJob(id))!;
        return { state, result: job.returnvalue, failedReason: job.failedReason ?? '' };
      },
      timeoutMs,
    );
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((queue) => queue.close()));
    await this.connection.quit();
  }
}
