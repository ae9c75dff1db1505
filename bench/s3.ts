import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { loadConfig } from '../src/config.js';
import { Producer } from '../src/queue/producer.js';
import { admin, currentRss, forkWorker, median, peakRss, stopWorkers, timed } from './lib.js';

/** One table row: measure, dbops, baseline, ratio, target. */
export type BenchRow = [string, string, string, string, string];

const BUCKET = 'dbops-bench';

/** s3rver (from npm) on a loopback port, in a process of its own: what the tests use too. */
async function startS3(): Promise<{ endpoint: string; stop(): Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dbops-bench-s3-'));
  const server = path.resolve(import.meta.dirname, '../../node_modules/s3rver/bin/s3rver.js');
  const child = execa(
    'node',
    [server, '-d', dir, '-a', '127.0.0.1', '-p', '0', '--silent', '--configure-bucket', BUCKET],
    {
      reject: false,
      all: true,
      buffer: false,
    },
  );
  const endpoint = await new Promise<string>((resolve, reject) => {
    let output = '';
    child.all!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const port = /listening on [\d.]+:(\d+)/.exec(output)?.[1];
      if (port) resolve(`http://127.0.0.1:${port}`);
    });
    void child.then(() => reject(new Error(`s3rver exited: ${output}`)));
  });
  return {
    endpoint,
    async stop() {
      child.kill('SIGTERM');
      await child;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

const checkpoint = () => admin('postgres', 'CHECKPOINT').then(() => execa('sync'));

/**
 * Backup and restore through an S3 store (s3rver on loopback) against the same through BACKUP_DIR,
 * alternating; and the peak memory of a worker uploading the big database and a ten times smaller one.
 */
export async function benchS3(
  env: Record<string, string | undefined>,
  rounds: number,
  target: string,
): Promise<BenchRow[]> {
  const s3 = await startS3();
  const backupDir = env.BACKUP_DIR!;
  const s3Vars = {
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    AWS_REGION: 'us-east-1',
    AWS_ENDPOINT_URL_S3: s3.endpoint,
  };
  const variants = {
    file: { ...env, QUEUE_PREFIX: `bench-file-${process.pid}` },
    s3: {
      ...env,
      ...s3Vars,
      QUEUE_PREFIX: `bench-s3-${process.pid}`,
      BACKUP_STORES: `s3://${BUCKET}/only?forcePathStyle=true`,
    },
    both: {
      ...env,
      ...s3Vars,
      QUEUE_PREFIX: `bench-both-${process.pid}`,
      BACKUP_STORES: `file://${backupDir},s3://${BUCKET}/both?forcePathStyle=true`,
    },
  };
  const workers = Object.values(variants).flatMap((variant) => [
    forkWorker('backup', variant),
    forkWorker('restore', variant),
  ]);
  const producers = Object.fromEntries(
    Object.entries(variants).map(([name, variant]) => [name, new Producer(loadConfig(variant))]),
  ) as Record<keyof typeof variants, Producer>;
  const times: Record<string, number[]> = {};
  const record = (key: string, seconds: number) => (times[key] ??= []).push(seconds);
  const run = async <T>(producer: Producer, type: 'backup' | 'restore', payload: object): Promise<T> => {
    const job = await producer.enqueue(type, payload as never);
    const outcome = await producer.wait(job.id);
    if (outcome.state !== 'completed') throw new Error(`${type} job ${outcome.state}: ${outcome.failedReason}`);
    return outcome.result as T;
  };
  const memory = { small: 0, large: 0, firstHalf: 0, secondHalf: 0 };
  try {
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    await run(producers.s3, 'backup', { env: 'bench' }); // warms the page cache and s3rver
    for (let round = 1; round <= rounds; round += 1) {
      process.stderr.write(`s3 round ${round}/${rounds}\n`);
      const ids: Record<string, string> = {};
      for (const name of ['file', 's3', 'both'] as const) {
        await checkpoint();
        record(
          `${name}Backup`,
          await timed(
            async () =>
              (ids[name] = (await run<{ backupId: string }>(producers[name], 'backup', { env: 'bench' })).backupId),
          ),
        );
      }
      for (const name of ['file', 's3'] as const) {
        await checkpoint();
        let previous: string | undefined;
        record(
          `${name}Restore`,
          await timed(
            async () =>
              (previous = (
                await run<{ previousDatabase?: string }>(producers[name], 'restore', {
                  env: target,
                  backup: ids[name],
                  jobs: 2,
                })
              ).previousDatabase),
          ),
        );
        if (previous) await admin('postgres', `DROP DATABASE "${previous}" WITH (FORCE)`);
      }
    }
    // Peak memory of a fresh worker uploading to S3: the small database, then the big one.
    for (const [key, envName] of [
      ['small', 'small'],
      ['large', 'bench'],
    ] as const) {
      const prefix = `bench-s3mem-${key}-${process.pid}`;
      const fresh = forkWorker('backup', { ...variants.s3, QUEUE_PREFIX: prefix });
      const producer = new Producer(loadConfig({ ...variants.s3, QUEUE_PREFIX: prefix }));
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const samples: number[] = [];
      const sampler = setInterval(() => samples.push(currentRss(fresh.pid!)), 100);
      await run(producer, 'backup', { env: envName });
      clearInterval(sampler);
      memory[key] = peakRss(fresh.pid!);
      if (key === 'large') {
        const half = Math.floor(samples.length / 2);
        memory.firstHalf = Math.max(...samples.slice(0, half));
        memory.secondHalf = Math.max(...samples.slice(half));
      }
      await stopWorkers([fresh]);
      await producer.queues.get('backup').obliterate({ force: true });
      await producer.close();
    }
  } finally {
    await stopWorkers(workers);
    for (const producer of Object.values(producers)) {
      for (const type of ['backup', 'restore'] as const)
        await producer.queues
          .get(type)
          .obliterate({ force: true })
          .catch(() => undefined);
      await producer.close();
    }
    await s3.stop();
  }
  const m = (key: string) => median(times[key]!);
  const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
  const pair = (measure: string, job: string, base: string, goal: string): BenchRow => [
    measure,
    `${m(job).toFixed(2)} s`,
    `${m(base).toFixed(2)} s`,
    (m(job) / m(base)).toFixed(3),
    goal,
  ];
  return [
    pair('backup job to S3 vs to BACKUP_DIR', 's3Backup', 'fileBackup', '≤ 1.15'),
    pair('backup job to BACKUP_DIR + S3 vs to BACKUP_DIR', 'bothBackup', 'fileBackup', '≤ 1.20'),
    pair('restore job from S3 vs from BACKUP_DIR', 's3Restore', 'fileRestore', '≤ 1.15'),
    [
      'worker RSS uploading to S3, 2nd vs 1st half',
      mib(memory.secondHalf),
      mib(memory.firstHalf),
      (memory.secondHalf / memory.firstHalf).toFixed(3),
      'flat (≈ 1)',
    ],
    [
      'worker peak RSS uploading to S3: big vs small database',
      mib(memory.large),
      mib(memory.small),
      (memory.large / memory.small).toFixed(3),
      '≤ 200 MiB',
    ],
  ];
}
