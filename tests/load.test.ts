import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { Producer } from '../src/queue/producer.js';
import { loadPagila } from './helpers/pg.js';
import { Rig, type WorkerProcess } from './helpers/rig.js';
import { waitFor } from './helpers/wait.js';

const BACKUPS = 40;
const REPORTS = 460;

/** 500 mixed jobs from 4 producers into 2 workers per type, on a Redis of the test's own. */
describe('load', () => {
  const port = 8400 + Math.floor(Math.random() * 100);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dbops-load-redis-'));
  let server: ResultPromise;
  let rig: Rig;
  const workers: WorkerProcess[] = [];
  const redisCli = (...args: string[]) => execa('redis-cli', ['-p', String(port), ...args]);
  const usedMemory = async () => Number(/used_memory:(\d+)/.exec((await redisCli('info', 'memory')).stdout)![1]);

  beforeAll(async () => {
    server = execa(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'],
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
    rig = await Rig.create({
      REDIS_URL: `redis://127.0.0.1:${port}`,
      JOB_KEEP_COMPLETED: '0',
      JOB_EVENTS_MAX: '100',
      LOG_LEVEL: 'info',
    });
    await loadPagila(rig.db('app'));
    rig.setEnv('app', rig.db('app'));
    for (const type of ['backup', 'backup', 'maintenance', 'maintenance']) workers.push(await rig.startWorker(type));
  });
  afterAll(async () => {
    await rig?.cleanup();
    server?.kill('SIGKILL');
    await server;
    rmSync(dir, { recursive: true, force: true });
  });

  it('completes every job exactly once, logs no error, and leaves no job in Redis once removed by policy', async () => {
    const config = loadConfig(rig.env);
    const baseline = await usedMemory();
    // Completions as the workers log them (an event stream trimmed to 100 events can drop some).
    const completions = () => {
      const counts = new Map<string, number>();
      for (const line of workers
        .map((worker) => worker.output())
        .join('\n')
        .split('\n')) {
        const match = /"jobId":"([^"]+)".*"msg":"job completed"/.exec(line);
        if (match) counts.set(match[1]!, (counts.get(match[1]!) ?? 0) + 1);
      }
      return counts;
    };

    const producers = Array.from({ length: 4 }, () => new Producer(config));
    const kinds = [...Array(BACKUPS).fill('backup'), ...Array(REPORTS).fill('report')].sort(() => Math.random() - 0.5);
    const ids = (
      await Promise.all(
        producers.map((producer, p) =>
          Promise.all(
            kinds
              .filter((_, i) => i % 4 === p)
              .map((kind) =>
                kind === 'backup'
                  ? producer.enqueue('backup', { env: 'app' })
                  : producer.enqueue('maintenance', { env: 'app', action: 'report' }),
              ),
          ),
        ),
      )
    )
      .flat()
      .map((job) => job.id);
    expect(new Set(ids).size).toBe(BACKUPS + REPORTS);

    await waitFor(
      'every job to complete',
      () => {
        const done = completions();
        return ids.every((id) => done.has(id));
      },
      240_000,
    );
    const logs = workers
      .map((worker) => worker.output())
      .join('\n')
      .split('\n');
    const counted = completions();
    expect([...counted.values()].every((count) => count === 1)).toBe(true);
    expect(counted.size).toBe(BACKUPS + REPORTS);
    expect(logs.filter((line) => /"level":(50|60)/.test(line))).toEqual([]);
    expect(readdirSync(rig.backupDir).filter((name) => name.endsWith('.json'))).toHaveLength(BACKUPS);

    // Completed jobs were removed as they finished (JOB_KEEP_COMPLETED=0): no job hash is left, and
    // what remains is the queues' fixed keys and their event streams, trimmed to JOB_EVENTS_MAX.
    const keys = (await redisCli('--scan', '--pattern', `${rig.prefix}:*`)).stdout.split('\n').filter(Boolean);
    expect(keys.filter((key) => /:(backup|maintenance)-\d{8}t/.test(key))).toEqual([]);
    const grown = (await usedMemory()) - baseline;
    // Two streams of about 100 events each (trimmed approximately, a stream node at a time), of which
    // the completed events carry results of up to ~10 kB (a report): a couple of MiB at most; with the
    // default trim of 10,000 events the same load leaves about 8 MiB.
    expect(grown).toBeLessThan(2 * 2 ** 20);

    for (const producer of producers) await producer.close();
  }, 300_000); // 500 jobs take a while when the rest of the suite shares the two cores
});
