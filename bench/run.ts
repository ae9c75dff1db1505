/**
 * `npm run bench`: what dbops costs over the raw tools and a bare queue, measured in one run, printed
 * as one table. Each job-vs-raw pair alternates, ROUNDS times, and medians are compared; a CHECKPOINT
 * runs before every timed step so that no step pays for the dirty buffers of the one before it.
 *
 * Every operation runs as a user runs it, `manage-db … --wait --json`: each row gives the CLI's wall time
 * and the job's own durationMs, each with the median and the spread (min–max) over the rounds.
 *
 *   backup job (plain, and encrypted) vs raw `pg_dump -Fc -f`; parallel backup job (directory, 2 jobs) vs `pg_dump -Fd -j 2`
 *   restore job (checks, shadow, swap; keeps the old database, dropped after the timing)
 *     vs raw `dropdb; createdb; pg_restore -j 2`
 *   stream copy job (pg_dump | pg_restore, shadow, swap) vs dump to a file, then restore it, and vs the raw pipe
 *   copy --jobs 2 vs `pgcopydb clone --table-jobs 2 --index-jobs 2` (when pgcopydb is installed)
 *   restore and backup of 4,000 small tables vs pg_restore -j 2 and pg_dump
 *   no-op job round trip (p50/p99) and throughput: dbops' worker runtime vs a bare BullMQ worker
 *   worker memory during the big backup (peak RSS in its second half vs its first), and peak memory
 *   (VmHWM) backing up a database 10x smaller and the big one
 *   one vs two backup worker processes on 8 independent backups
 *
 *   backup to an S3 store (s3rver on loopback), and to BACKUP_DIR + S3, vs to BACKUP_DIR; restore from
 *     S3 vs from BACKUP_DIR; a worker's memory while uploading (bench/s3.ts)
 *
 * BENCH_ONLY=s3 runs the S3 rows alone; BENCH_ONLY=cli the CLI's start (--version, --help, an enqueue),
 * 11 alternating rounds, beside bare `node -e 0`; BENCH_ONLY=history the job history's search on
 * 100,000 entries (bench/history.ts; also at the end of a full run); BENCH_ONLY=tables restore --table
 * and copy --subset against what a person does by hand and the full copy (bench/tables.ts);
 * BENCH_ONLY=pitr backup --physical, the WAL archiver's lag and memory under load, and restore
 * --latest-wal against the raw sequence, on a private server (bench/pitr.ts); BENCH_PITR_PARTS picks
 * parts (base,lag,restore), BENCH_PITR_SCALE its size (pgbench scale, default 20: about 300 MiB).
 *
 * Environment: BENCH_PG_URL (superuser URL, default postgres://postgres@127.0.0.1:5432/postgres),
 * BENCH_ROWS (default 1,300,000 rows: ~300 MB), BENCH_ROUNDS (default 5), REDIS_URL.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { loadConfig } from '../src/config.js';
import { Producer } from '../src/queue/producer.js';
import { benchHistory } from './history.js';
import { benchPitr } from './pitr.js';
import { benchTables } from './tables.js';
import { benchQueue } from './queue.js';
import { benchS3, type BenchRow } from './s3.js';
import {
  admin,
  checkpoint,
  currentRss,
  forkWorker,
  median,
  peakRss,
  redisUrl,
  stopWorkers,
  timed,
  urlFor,
} from './lib.js';

const rows = Number(process.env.BENCH_ROWS ?? 1_300_000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
const SOURCE = 'dbops_bench_source';
const SMALL = 'dbops_bench_small';
const TARGET = 'dbops_bench_target';
const COPY_TARGET = 'dbops_bench_copy';
const MANY = 'dbops_bench_many';
const MANY_TARGET = 'dbops_bench_many_target';
const CLI = path.resolve(import.meta.dirname, '../../bin/manage-db.cjs');

/** 4,000 small tables in 40 schemas (with a primary key each): the cost per table, not per byte. */
async function ensureManyTables(): Promise<void> {
  const exists = await admin('postgres', `SELECT 1 FROM pg_database WHERE datname = '${MANY}'`);
  if (exists.length > 0) return;
  process.stderr.write(`creating ${MANY} with 4000 tables…\n`);
  await admin('postgres', `CREATE DATABASE ${MANY}`);
  // A schema per transaction: 4,000 tables and their keys at once would outgrow the lock table.
  for (let schema = 1; schema <= 40; schema += 1) {
    await admin(
      MANY,
      `CREATE SCHEMA s${schema};
       DO $$ BEGIN
         FOR t IN 1..100 LOOP
           EXECUTE format('CREATE TABLE s${schema}.t%s (id int PRIMARY KEY, v text)', t);
           EXECUTE format('INSERT INTO s${schema}.t%s SELECT g, md5(g::text) FROM generate_series(1, 20) g', t);
         END LOOP;
       END $$`,
    );
  }
}

/** A new, empty database under this name, as a raw restore into it starts from. */
async function emptyDatabase(name: string): Promise<void> {
  await admin('postgres', `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin('postgres', `CREATE DATABASE ${name}`);
}

/** Builds a benchmark database once; later runs reuse it when it has the requested size. */
async function ensureDatabase(name: string, count: number): Promise<number> {
  const exists = await admin('postgres', `SELECT 1 FROM pg_database WHERE datname = '${name}'`);
  if (exists.length > 0) {
    const [row] = await admin<{ n: string }>(
      name,
      "SELECT reltuples::bigint AS n FROM pg_class WHERE relname = 'events'",
    ).catch(() => []);
    if (row && Math.abs(Number(row.n) - count) < count * 0.01) return databaseSize(name);
    await admin('postgres', `DROP DATABASE ${name} WITH (FORCE)`);
  }
  process.stderr.write(`creating ${name} with ${count} rows…\n`);
  await admin('postgres', `CREATE DATABASE ${name}`);
  await admin(
    name,
    `CREATE TABLE events (id bigint PRIMARY KEY, account int NOT NULL, kind text NOT NULL, payload text NOT NULL, note text, at timestamptz NOT NULL);
     INSERT INTO events
       SELECT g, g % 5000, (ARRAY['created','updated','deleted','viewed'])[1 + g % 4],
              md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text),
              CASE WHEN g % 3 = 0 THEN repeat(md5(g::text), 2) END,
              timestamptz '2020-01-01' + g * interval '17 seconds'
         FROM generate_series(1, ${count}) g;
     CREATE INDEX events_account ON events (account, at);
     CREATE TABLE accounts AS SELECT g AS id, 'account ' || g AS name FROM generate_series(1, 5000) g;
     ALTER TABLE accounts ADD PRIMARY KEY (id);`,
  );
  await admin(name, 'VACUUM ANALYZE');
  return databaseSize(name);
}

async function databaseSize(name: string): Promise<number> {
  const [row] = await admin<{ size: string }>('postgres', `SELECT pg_database_size('${name}') AS size`);
  return Number(row!.size);
}

async function main(): Promise<void> {
  if (process.env.BENCH_ONLY === 'cli') {
    printTable(await benchCliStart(), "the CLI's start");
    return;
  }
  if (process.env.BENCH_ONLY === 'history') {
    printTable(await benchHistory(), 'the job history');
    return;
  }
  const size = await ensureDatabase(SOURCE, rows);
  const smallSize = await ensureDatabase(SMALL, Math.round(rows / 10));
  const backupDir = await mkdtemp(path.join(os.tmpdir(), 'dbops-bench-'));
  const env = {
    ...process.env,
    REDIS_URL: redisUrl,
    QUEUE_PREFIX: `bench-${process.pid}`,
    BACKUP_DIR: backupDir,
    LOG_LEVEL: 'warn',
    PROTECTED_ENVS: 'none',
    DATABASE_URL_BENCH: urlFor(SOURCE),
    DATABASE_URL_SMALL: urlFor(SMALL),
    DATABASE_URL_BENCHTARGET: urlFor(TARGET),
    DATABASE_URL_BENCHCOPY: urlFor(COPY_TARGET),
    DATABASE_URL_MANY: urlFor(MANY),
    DATABASE_URL_MANYTARGET: urlFor(MANY_TARGET),
  };
  if (process.env.BENCH_ONLY === 's3') {
    try {
      printTable(
        await benchS3(env, rounds, 'benchtarget'),
        `${SOURCE}: ${(size / 2 ** 20).toFixed(0)} MiB, ${smallSize} bytes small`,
      );
    } finally {
      await admin('postgres', `DROP DATABASE IF EXISTS ${TARGET} WITH (FORCE)`).catch(() => undefined);
      await rm(backupDir, { recursive: true, force: true });
    }
    return;
  }
  if (process.env.BENCH_ONLY === 'pitr') {
    try {
      printTable(await benchPitr(env, rounds), 'point-in-time recovery (a private PostgreSQL server)');
    } finally {
      await rm(backupDir, { recursive: true, force: true });
    }
    return;
  }
  if (process.env.BENCH_ONLY === 'tables') {
    try {
      printTable(await benchTables(env, SOURCE, COPY_TARGET, rounds), `${SOURCE}: ${(size / 2 ** 20).toFixed(0)} MiB`);
    } finally {
      await rm(backupDir, { recursive: true, force: true });
    }
    return;
  }
  await ensureManyTables();
  const manyFile = path.join(backupDir, 'many.dump');
  const config = loadConfig(env);
  const workers = ['backup', 'restore', 'copy'].map((type) => forkWorker(type, env));
  const producer = new Producer(config);
  // Encrypted backups (BACKUP_ENCRYPTION_KEY): a backup worker of their own, on a queue of their own.
  const encryptedEnv = {
    ...env,
    QUEUE_PREFIX: `bench-enc-${process.pid}`,
    BACKUP_ENCRYPTION_KEY: randomBytes(32).toString('hex'),
  };
  workers.push(forkWorker('backup', encryptedEnv));
  const encryptedProducer = new Producer(loadConfig(encryptedEnv));
  const rawFile = path.join(backupDir, 'raw.dump');
  const rawDir = path.join(backupDir, 'raw.d');
  const times: Record<string, number[]> = {};
  const record = (key: string, seconds: number) => (times[key] ??= []).push(seconds);
  const runJob = async <T>(
    type: Parameters<Producer['enqueue']>[0],
    payload: object,
    through = producer,
  ): Promise<T> => {
    const job = await through.enqueue(type, payload as never);
    const outcome = await through.wait(job.id);
    if (outcome.state !== 'completed') throw new Error(`${type} job ${outcome.state}: ${outcome.failedReason}`);
    return outcome.result as T;
  };
  /** As the user runs it, `manage-db … --wait --json`: records the CLI's wall time and the job's own durationMs. */
  const viaCli = async <T extends object = { previousDatabase?: string }>(
    key: string,
    args: string[],
    cliEnv = env,
    through = producer,
  ): Promise<T & { durationMs: number }> => {
    let result: (T & { durationMs: number }) | undefined;
    let jobId: string | undefined;
    const started = Date.now();
    record(
      `cli:${key}`,
      await timed(async () => {
        const run = await execa('node', [CLI, ...args, '--wait', '--json'], { env: cliEnv });
        result = JSON.parse(run.stdout) as T & { durationMs: number };
        jobId = /^job (\S+)/m.exec(run.stderr)?.[1]; // --json names the job on stderr
      }),
    );
    const ended = Date.now();
    record(`job:${key}`, result!.durationMs / 1000);
    // Where the CLI's wall time went beside the job's own work, from the times BullMQ keeps on the job.
    const job = jobId ? await through.getJob(jobId) : undefined;
    if (job?.processedOn && job.finishedOn) {
      record(`stage:${key}:start`, (job.timestamp - started) / 1000);
      record(`stage:${key}:pickup`, (job.processedOn - job.timestamp) / 1000);
      record(`stage:${key}:worker`, (job.finishedOn - job.processedOn - result!.durationMs) / 1000);
      record(`stage:${key}:end`, (ended - job.finishedOn) / 1000);
    }
    return result!;
  };
  const dropPrevious = async (result: { previousDatabase?: string }) => {
    if (result.previousDatabase) await admin('postgres', `DROP DATABASE "${result.previousDatabase}" WITH (FORCE)`);
  };
  const pgcopydb = (await execa('pgcopydb', ['--version'], { reject: false })).exitCode === 0 ? 'pgcopydb' : undefined;
  if (!pgcopydb)
    process.stderr.write('pgcopydb is not installed (Debian: apt install pgcopydb): its rows are left out\n');
  const pgcopydbDir = path.join(backupDir, 'pgcopydb');
  let memory = { small: 0, large: 0, firstHalf: 0, secondHalf: 0 };
  let scaling = { one: 0, two: 0 };
  let queue;
  let s3Rows: BenchRow[] | undefined;
  let cliRows: BenchRow[] | undefined;
  try {
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // let the workers connect
    await runJob('backup', { env: 'bench' }); // warms the page cache and the workers

    for (let round = 1; round <= rounds; round += 1) {
      process.stderr.write(`round ${round}/${rounds}\n`);
      await rm(rawFile, { force: true });
      await checkpoint();
      record('rawDump', await timed(() => execa('pg_dump', ['-Fc', '-f', rawFile, '-d', urlFor(SOURCE)])));
      await checkpoint();
      const { backupId } = await viaCli<{ backupId: string }>('dump', ['backup', '--env', 'bench']);
      await checkpoint();
      await viaCli('encryptedDump', ['backup', '--env', 'bench'], encryptedEnv, encryptedProducer);

      await rm(rawDir, { recursive: true, force: true });
      await checkpoint();
      record(
        'rawParallelDump',
        await timed(() => execa('pg_dump', ['-Fd', '-j', '2', '-f', rawDir, '-d', urlFor(SOURCE)])),
      );
      await checkpoint();
      await viaCli('parallelDump', ['backup', '--env', 'bench', '--format', 'directory', '--jobs', '2']);

      await checkpoint();
      record(
        'rawRestore',
        await timed(async () => {
          await emptyDatabase(TARGET);
          await execa('pg_restore', ['-j', '2', '--exit-on-error', '-d', urlFor(TARGET), rawFile]);
        }),
      );
      await checkpoint();
      await dropPrevious(
        await viaCli('restore', ['restore', '--env', 'benchtarget', '--backup', backupId, '--jobs', '2']),
      );

      await checkpoint();
      record(
        'rawDumpThenRestore',
        await timed(async () => {
          await execa('pg_dump', ['-Fc', '-f', rawFile, '-d', urlFor(SOURCE)]);
          await emptyDatabase(COPY_TARGET);
          await execa('pg_restore', ['-j', '2', '--exit-on-error', '-d', urlFor(COPY_TARGET), rawFile]);
        }),
      );
      await checkpoint();
      await dropPrevious(await viaCli('copy', ['copy', '--from', 'bench', '--to', 'benchcopy']));
      // The raw pipe a user would type for a copy.
      await checkpoint();
      record(
        'rawPipeCopy',
        await timed(async () => {
          await emptyDatabase(COPY_TARGET);
          await execa('bash', [
            '-o',
            'pipefail',
            '-c',
            `pg_dump -Fc -Z0 -d '${urlFor(SOURCE)}' | pg_restore --exit-on-error -d '${urlFor(COPY_TARGET)}'`,
          ]);
        }),
      );
      await checkpoint();
      await dropPrevious(await viaCli('parallelCopy', ['copy', '--from', 'bench', '--to', 'benchcopy', '--jobs', '2']));
      if (pgcopydb) {
        await checkpoint();
        record(
          'pgcopydb',
          await timed(async () => {
            await emptyDatabase(COPY_TARGET);
            await rm(pgcopydbDir, { recursive: true, force: true });
            await execa(pgcopydb, [
              'clone',
              '--source',
              urlFor(SOURCE),
              '--target',
              urlFor(COPY_TARGET),
              '--table-jobs',
              '2',
              '--index-jobs',
              '2',
              '--dir',
              pgcopydbDir,
            ]);
          }),
        );
      }

      // Many tables: the restore job against pg_restore -j 2 of the same archive.
      await execa('pg_dump', ['-Fc', '-f', manyFile, '-d', urlFor(MANY)]);
      const many = await runJob<{ backupId: string }>('backup', { env: 'many' });
      await checkpoint();
      record(
        'rawManyRestore',
        await timed(async () => {
          await emptyDatabase(MANY_TARGET);
          await execa('pg_restore', ['-j', '2', '--exit-on-error', '-d', urlFor(MANY_TARGET), manyFile]);
        }),
      );
      await checkpoint();
      await dropPrevious(
        await viaCli('manyRestore', ['restore', '--env', 'manytarget', '--backup', many.backupId, '--jobs', '2']),
      );
      await checkpoint();
      record('rawManyDump', await timed(() => execa('pg_dump', ['-Fc', '-f', manyFile, '-d', urlFor(MANY)])));
      await checkpoint();
      await viaCli('manyDump', ['backup', '--env', 'many']);
    }
    // Starting the CLI, cold: --version, --help, and an enqueue without --wait.
    cliRows = await benchCliStart();

    // Peak memory of a fresh backup worker, for a database ten times smaller and for the big one.
    for (const [key, envName] of [
      ['small', 'small'],
      ['large', 'bench'],
    ] as const) {
      const fresh = forkWorker('backup', { ...env, QUEUE_PREFIX: `bench-mem-${key}-${process.pid}` });
      const memoryProducer = new Producer(loadConfig({ ...env, QUEUE_PREFIX: `bench-mem-${key}-${process.pid}` }));
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const samples: number[] = [];
      const sampler = setInterval(() => samples.push(currentRss(fresh.pid!)), 100);
      const job = await memoryProducer.enqueue('backup', { env: envName });
      await memoryProducer.wait(job.id);
      clearInterval(sampler);
      memory = { ...memory, [key]: peakRss(fresh.pid!) };
      if (key === 'large') {
        const half = Math.floor(samples.length / 2);
        memory = {
          ...memory,
          firstHalf: Math.max(...samples.slice(0, half)),
          secondHalf: Math.max(...samples.slice(half)),
        };
      }
      await stopWorkers([fresh]);
      await memoryProducer.queues.get('backup').obliterate({ force: true });
      await memoryProducer.close();
    }

    // Eight independent backups of the small database: one backup worker process, then two.
    for (const count of [1, 2] as const) {
      const prefix = `bench-scale-${count}-${process.pid}`;
      const scaled = Array.from({ length: count }, () => forkWorker('backup', { ...env, QUEUE_PREFIX: prefix }));
      const scaleProducer = new Producer(loadConfig({ ...env, QUEUE_PREFIX: prefix }));
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const seconds = await timed(async () => {
        const jobs = await Promise.all(
          Array.from({ length: 8 }, () => scaleProducer.enqueue('backup', { env: 'small' })),
        );
        await Promise.all(jobs.map((job) => scaleProducer.wait(job.id)));
      });
      scaling = { ...scaling, [count === 1 ? 'one' : 'two']: seconds };
      await stopWorkers(scaled);
      await scaleProducer.queues.get('backup').obliterate({ force: true });
      await scaleProducer.close();
    }

    // A failure here must not throw away the half hour measured above: it is said, and its rows left out.
    queue = await benchQueue({ ...config, QUEUE_PREFIX: `bench-queue-${process.pid}` }).catch((error: unknown) => {
      process.stderr.write(`the queue benchmark failed: ${String(error)}\n`);
      return undefined;
    });
    s3Rows = await benchS3(env, rounds, 'benchtarget').catch((error: unknown) => {
      process.stderr.write(`the S3 benchmark failed: ${String(error)}\n`);
      return undefined;
    });
  } finally {
    await stopWorkers(workers);
    await producer.queues
      .get('backup')
      .obliterate({ force: true })
      .catch(() => undefined);
    for (const type of ['restore', 'copy', 'maintenance'] as const)
      await producer.queues
        .get(type)
        .obliterate({ force: true })
        .catch(() => undefined);
    await producer.close();
    await encryptedProducer.queues
      .get('backup')
      .obliterate({ force: true })
      .catch(() => undefined);
    await encryptedProducer.close();
    for (const database of [TARGET, COPY_TARGET, MANY_TARGET])
      await admin('postgres', `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => undefined);
    await rm(backupDir, { recursive: true, force: true });
  }

  const m = (key: string) => median(times[key]!);
  /** The median, and the spread over the rounds. */
  const seconds = (key: string) => withSpread(times[key]!, 's');
  const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
  const versus = (label: string, key: string, raw: string, target: string): BenchRow => [
    label,
    seconds(key),
    seconds(raw),
    (m(key) / m(raw)).toFixed(3),
    target,
  ];
  /** A job's own durationMs and the CLI's wall time, each against the same baseline. */
  const against = (
    what: string,
    key: string,
    raw: string,
    rawName: string,
    jobTarget: string,
    cliTarget: string,
  ): BenchRow[] => [
    versus(`${what}: job vs ${rawName}`, `job:${key}`, raw, jobTarget),
    versus(`${what}: CLI --wait vs ${rawName}`, `cli:${key}`, raw, cliTarget),
  ];
  const table: BenchRow[] = [
    ...against('backup', 'dump', 'rawDump', 'pg_dump -Fc', '≤ 1.02', '≤ 1.03'),
    versus('encrypted backup (AES-256-GCM): job vs pg_dump -Fc', 'job:encryptedDump', 'rawDump', ''),
    versus('parallel backup: job vs pg_dump -Fd -j 2', 'job:parallelDump', 'rawParallelDump', '≤ 1.05'),
    ...against('restore', 'restore', 'rawRestore', 'drop+create+pg_restore -j 2', '≤ 1.05', ''),
    versus('stream copy: job vs dump, then restore', 'job:copy', 'rawDumpThenRestore', '≤ 0.85'),
    ...against('stream copy', 'copy', 'rawPipeCopy', 'pg_dump -Z0 piped to pg_restore', '≤ 1.05', ''),
    ...(times.pgcopydb
      ? against('copy --jobs 2', 'parallelCopy', 'pgcopydb', 'pgcopydb clone, 2 jobs', '≤ 1.00', '')
      : [['copy --jobs 2: job (pgcopydb not installed)', seconds('job:parallelCopy'), '', '', ''] as BenchRow]),
    ...against('restore, 4000 tables', 'manyRestore', 'rawManyRestore', 'pg_restore -j 2', '≤ 1.05', ''),
    ...against('backup, 4000 tables', 'manyDump', 'rawManyDump', 'pg_dump -Fc', '≤ 1.03', ''),
    ...(cliRows ?? []),
    ...(queue ? queueRows(queue) : []),
    [
      `backup worker RSS, 2nd vs 1st half of the ${mib(size)} dump`,
      mib(memory.secondHalf),
      mib(memory.firstHalf),
      (memory.secondHalf / memory.firstHalf).toFixed(3),
      'flat (≈ 1)',
    ],
    [
      `backup worker peak RSS: ${mib(size)} vs ${mib(smallSize)} database`,
      mib(memory.large),
      mib(memory.small),
      (memory.large / memory.small).toFixed(3),
      '',
    ],
    [
      '8 small backups: 2 worker processes vs 1',
      `${scaling.two.toFixed(2)} s`,
      `${scaling.one.toFixed(2)} s`,
      (scaling.two / scaling.one).toFixed(3),
      '< 1',
    ],
    ...(s3Rows ?? []),
  ];
  printTable(table, `${SOURCE}: ${mib(size)} (${rows} rows)`);

  // The CLI's time beside the job: its start and enqueue, the wait for a worker, the worker's own work
  // around the processor (checks, locks, recording the result), and the way back to the CLI's exit.
  const ms = (key: string) => (times[key] ? `${(m(key) * 1000).toFixed(0)} ms` : '');
  const stages: BenchRow[] = [
    ['dump', 'backup'],
    ['restore', 'restore'],
    ['copy', 'stream copy'],
    ['parallelCopy', 'copy --jobs 2'],
    ['manyRestore', 'restore, 4000 tables'],
  ].map(([key, what]) => [
    what!,
    ms(`stage:${key}:start`),
    ms(`stage:${key}:pickup`),
    ms(`stage:${key}:worker`),
    ms(`stage:${key}:end`),
  ]);
  printTable(stages, "where a CLI --wait spends its time beside the job's durationMs", [
    'operation',
    'CLI start, enqueue',
    'queued until picked up',
    'worker, beside the job',
    'finished until CLI exit',
  ]);
  printTable(await benchHistory(), 'the job history');
}

/** The CLI's start alone: what every command pays before it does anything, beside Node's own start. */
async function benchCliStart(): Promise<BenchRow[]> {
  // The enqueue's environment needs no database: validating a payload only resolves its URL.
  const env = {
    ...process.env,
    REDIS_URL: redisUrl,
    QUEUE_PREFIX: `bench-cli-${process.pid}`,
    LOG_LEVEL: 'warn',
    DATABASE_URL_SMALL: urlFor(SMALL),
  };
  const runs = {
    node: ['-e', '0'],
    version: [CLI, '--version'],
    help: [CLI, '--help'],
    enqueue: [CLI, 'maintenance', 'report', '--env', 'small', '--no-wait'],
  };
  const took: Record<string, number[]> = {};
  const uncached = { ...env, NODE_DISABLE_COMPILE_CACHE: '1' };
  await execa('node', runs.enqueue, { env }); // the code cache takes in the enqueue's functions
  for (let round = 0; round < 11; round += 1) {
    for (const [key, args] of Object.entries(runs))
      (took[key] ??= []).push(await timed(() => execa('node', args, { env })));
    (took.uncached ??= []).push(await timed(() => execa('node', runs.enqueue, { env: uncached })));
  }
  const producer = new Producer(loadConfig(env));
  await producer.queues
    .get('maintenance')
    .obliterate({ force: true })
    .catch(() => undefined);
  await producer.close();
  const ms = (key: string) => withSpread(took[key]!, 'ms');
  return [
    ['manage-db --version, cold, vs node -e 0 (median of 11)', ms('version'), ms('node'), '', '≤ 150 ms'],
    ['manage-db --help vs node -e 0 (median of 11)', ms('help'), ms('node'), '', ''],
    ['manage-db enqueue without --wait vs node -e 0 (median of 11)', ms('enqueue'), ms('node'), '', '≤ 300 ms'],
    ['the same enqueue without the code cache (NODE_DISABLE_COMPILE_CACHE=1)', ms('uncached'), '', '', ''],
  ];
}

/** The median, and in brackets the fastest and slowest round: `7.23 s (6.97–8.19)`, `331 ms (316–353)`. */
function withSpread(seconds: number[], unit: 's' | 'ms'): string {
  const show = (value: number) => (unit === 's' ? value.toFixed(2) : (value * 1000).toFixed(0));
  return `${show(median(seconds))} ${unit} (${show(Math.min(...seconds))}–${show(Math.max(...seconds))})`;
}

function queueRows(queue: Awaited<ReturnType<typeof benchQueue>>): BenchRow[] {
  return [
    [
      'no-op job round trip p50 (dbops vs bare BullMQ)',
      `${queue.dbops.p50Ms.toFixed(2)} ms`,
      `${queue.bare.p50Ms.toFixed(2)} ms`,
      `+${(queue.dbops.p50Ms - queue.bare.p50Ms).toFixed(2)} ms`,
      '≤ +5 ms',
    ],
    [
      'no-op job round trip p99 (dbops vs bare BullMQ)',
      `${queue.dbops.p99Ms.toFixed(2)} ms`,
      `${queue.bare.p99Ms.toFixed(2)} ms`,
      `+${(queue.dbops.p99Ms - queue.bare.p99Ms).toFixed(2)} ms`,
      '',
    ],
    [
      'no-op throughput, 1 worker (dbops vs bare)',
      `${queue.dbops.jobsPerSecond.toFixed(0)} /s`,
      `${queue.bare.jobsPerSecond.toFixed(0)} /s`,
      (queue.dbops.jobsPerSecond / queue.bare.jobsPerSecond).toFixed(3),
      '',
    ],
  ];
}

function printTable(
  table: BenchRow[],
  what: string,
  header = ['measure', 'dbops', 'baseline', 'ratio', 'target'],
): void {
  const width = header.map((title, i) => Math.max(title.length, ...table.map((cells) => cells[i]?.length ?? 0)));
  const row = (cells: string[]) => `| ${cells.map((cell, i) => cell.padEnd(width[i]!)).join(' | ')} |`;
  console.log(
    `\n${what}; medians of ${rounds} alternating rounds; ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB; ${os.cpus()[0]?.model ?? ''}\n`,
  );
  console.log(row(header));
  console.log(row(width.map((w) => '-'.repeat(w))));
  for (const cells of table) console.log(row(cells));
}

await main();
process.exit(0); // forked workers and Redis clients must not keep the benchmark alive
