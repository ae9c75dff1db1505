import { readdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EnqueuedJob } from '../src/queue/producer.js';
import { loadPagila } from './helpers/pg.js';
import { PersistentRedis } from './helpers/redis-servers.js';
import { Rig, type WorkerProcess } from './helpers/rig.js';
import { waitFor } from './helpers/wait.js';

/** Redis stopped and started again on its port, with AOF persistence, while jobs wait and run. */
describe('a Redis restart', () => {
  const port = 8100 + Math.floor(Math.random() * 250);
  const redis = new PersistentRedis(port);
  let rig: Rig;
  const workers: WorkerProcess[] = [];

  beforeAll(async () => {
    await redis.start();
    rig = await Rig.create({ REDIS_URL: redis.url });
    await loadPagila(rig.db('app'));
    rig.setEnv('app', rig.db('app'));
    workers.push(await rig.startWorker('backup'), await rig.startWorker('maintenance'));
  });
  afterAll(async () => {
    await rig?.cleanup(); // while its Redis still answers, so that its clients close cleanly
    await redis.stop();
  });

  it('workers and clients reconnect by themselves; no job is lost or completed twice', async () => {
    const producer = rig.producer();
    const jobs: EnqueuedJob[] = [];
    for (let i = 0; i < 4; i += 1) jobs.push(await producer.enqueue('backup', { env: 'app' }));
    for (let i = 0; i < 8; i += 1) jobs.push(await producer.enqueue('maintenance', { env: 'app', action: 'report' }));
    const outcomes = Promise.all(jobs.map((job) => producer.wait(job.id)));

    await waitFor(
      'a job to have completed',
      async () => (await producer.queues.get('maintenance').getCompletedCount()) > 0,
      30_000,
    );
    await redis.restart(1_500);

    const finished = await outcomes;
    expect(finished.map((outcome) => outcome.state)).toEqual(jobs.map(() => 'completed'));
    // Each job's work ran to success exactly once, on one worker. (BullMQ's 'completed' event, and so
    // the "job completed" line, is missing where Redis stored the completion but the reply was lost.)
    const lines = (id: string, msg: string) =>
      workers
        .map((worker) => worker.output())
        .join('\n')
        .split('\n')
        .filter((line) => line.includes(`"jobId":"${id}"`) && line.includes(`"msg":"${msg}"`));
    await waitFor(
      "every success in the workers' logs",
      () => jobs.every((job) => lines(job.id, 'job succeeded').length > 0),
      10_000,
    );
    for (const job of jobs) {
      expect(lines(job.id, 'job succeeded'), job.id).toHaveLength(1);
      expect(lines(job.id, 'job completed').length, job.id).toBeLessThanOrEqual(1);
    }
    expect(readdirSync(rig.backupDir).filter((name) => name.endsWith('.json'))).toHaveLength(4);
    expect(readdirSync(path.join(rig.backupDir, '.partial'))).toEqual([]);
  });
});
