import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EnqueuedJob } from '../src/queue/producer.js';
import { loadPagila } from './helpers/pg.js';
import { Rig, type WorkerProcess } from './helpers/rig.js';
import { waitFor } from './helpers/wait.js';

/** Redis stopped and started again on its port, with AOF persistence, while jobs wait and run. */
describe('a Redis restart', () => {
  const port = 8100 + Math.floor(Math.random() * 250);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dbops-redis-'));
  let server: ResultPromise;
  let rig: Rig;
  const workers: WorkerProcess[] = [];

  const startRedis = async () => {
    server = execa(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--dir',
        dir,
        '--appendonly',
        'yes',
        '--appendfsync',
        'always',
        '--save',
        '',
      ],
      {
        reject: false,
        stdio: 'ignore',
      },
    );
    await waitFor(
      'redis-server to answer',
      async () => (await execa('redis-cli', ['-p', String(port), 'ping'], { reject: false })).stdout === 'PONG',
      10_000,
    );
  };

  beforeAll(async () => {
    await startRedis();
    rig = await Rig.create({ REDIS_URL: `redis://127.0.0.1:${port}` });
    await loadPagila(rig.db('app'));
    rig.setEnv('app', rig.db('app'));
    workers.push(await rig.startWorker('backup'), await rig.startWorker('maintenance'));
  });
  afterAll(async () => {
    await rig?.cleanup(); // while its Redis still answers, so that its clients close cleanly
    server?.kill('SIGKILL');
    await server;
    rmSync(dir, { recursive: true, force: true });
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
    await execa('redis-cli', ['-p', String(port), 'shutdown']);
    await server;
    await sleep(1_500);
    await startRedis();

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
