/** Queue overhead: a no-op job through dbops' worker runtime against a bare BullMQ worker. */
import { Queue, QueueEvents, Worker } from 'bullmq';
import * as z from 'zod';
import type { Config } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { defineOperation } from '../src/operations/operation.js';
import { createRedis } from '../src/queue/connection.js';
import { startWorker } from '../src/queue/worker.js';
import { percentile } from './lib.js';

export interface QueueFigures {
  p50Ms: number;
  p99Ms: number;
  jobsPerSecond: number;
}

async function measure(config: Config, queueName: string, roundTrips: number, burst: number): Promise<QueueFigures> {
  const connection = createRedis(config, 'worker');
  const queue = new Queue(queueName, { connection, prefix: config.QUEUE_PREFIX });
  const eventsConnection = createRedis(config, 'worker');
  const events = new QueueEvents(queueName, { connection: eventsConnection, prefix: config.QUEUE_PREFIX });
  await events.waitUntilReady();
  try {
    const latencies: number[] = [];
    for (let i = 0; i < roundTrips + 20; i += 1) {
      const started = process.hrtime.bigint();
      // Named after the operation, as dbops names jobs; kept a while, so that waitUntilFinished still finds a job done before it looks.
      const job = await queue.add(queueName, { n: i }, { removeOnComplete: { count: 1_000 } });
      await job.waitUntilFinished(events);
      if (i >= 20) latencies.push(Number(process.hrtime.bigint() - started) / 1e6); // after a warm-up
    }
    const started = process.hrtime.bigint();
    await queue.addBulk(
      Array.from({ length: burst }, (_, n) => ({
        name: queueName,
        data: { n },
        opts: { removeOnComplete: { count: burst } },
      })),
    );
    for (;;) {
      const counts = await queue.getJobCounts('completed', 'waiting', 'active');
      if ((counts.waiting ?? 0) === 0 && (counts.active ?? 0) === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    return { p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99), jobsPerSecond: burst / seconds };
  } finally {
    await events.close();
    await eventsConnection.quit();
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
    await connection.quit();
  }
}

export async function benchQueue(
  config: Config,
  roundTrips = 500,
  burst = 2000,
): Promise<{ dbops: QueueFigures; bare: QueueFigures }> {
  const noop = defineOperation({
    type: 'bench-noop',
    summary: 'does nothing',
    schema: z.strictObject({ n: z.number() }),
    result: z.object({ ok: z.boolean() }),
    process: async () => ({ ok: true }),
  });
  const running = await startWorker(noop, config, createLogger({ ...config, LOG_LEVEL: 'silent' }));
  const dbops = await measure(config, noop.type, roundTrips, burst);
  await running.shutdown();

  const bareConnection = createRedis(config, 'worker');
  const bare = new Worker('bench-bare', async () => ({ ok: true }), {
    connection: bareConnection,
    prefix: config.QUEUE_PREFIX,
    concurrency: 1,
  });
  await bare.waitUntilReady();
  const bareFigures = await measure(config, 'bench-bare', roundTrips, burst);
  await bare.close();
  await bareConnection.quit();
  return { dbops, bare: bareFigures };
}
