/**
 * `npm run bench`: what the queue costs over the raw tools, on one ~300 MB database, in one run.
 *
 *   backup job (enqueue → worker → pg_dump → sha256 → manifest → result)  vs  raw `pg_dump -Fc -f`
 *   restore job (checks, shadow database, swap)    vs  raw `dropdb; createdb; pg_restore -j 2`
 *   (the raw way to replace a database; the job runs as by default, keeping the replaced database,
 *   which is dropped after the timing)
 *
 *   copy job, streaming (pg_dump | pg_restore, shadow, swap)  vs  raw `pg_dump -Fc -f`, then
 *   `dropdb; createdb; pg_restore -j 2` (dump to a file, then restore it)
 *
 * A CHECKPOINT runs before every timed step, so that no step pays for the dirty buffers of the one
 * before it (DROP DATABASE forces a checkpoint).
 *
 * The two sides alternate, ROUNDS times each, and the medians are compared. Environment:
 *   BENCH_PG_URL   a superuser URL on the server to use (default postgres://postgres@127.0.0.1:5432/postgres)
 *   BENCH_ROWS     rows in the generated table (default 1,300,000, about 300 MB on disk)
 *   BENCH_ROUNDS   rounds per side (default 3)
 *   REDIS_URL      the Redis for the queue (default redis://127.0.0.1:6379)
 */
import { fork } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import pg from 'pg';
import { loadConfig } from '../src/config.js';
import { Producer } from '../src/queue/producer.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const adminUrl = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const rows = Number(process.env.BENCH_ROWS ?? 1_300_000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const SOURCE = 'dbops_bench_source';
const TARGET = 'dbops_bench_target';
const COPY_TARGET = 'dbops_bench_copy';

function urlFor(database: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${database}`;
  return url.toString();
}

async function admin<T extends pg.QueryResultRow>(database: string, text: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: urlFor(database) });
  await client.connect();
  try {
    return (await client.query<T>(text)).rows;
  } finally {
    await client.end();
  }
}

/** Builds the benchmark database once; later runs reuse it when it has the requested size. */
async function ensureSource(): Promise<number> {
  const exists = await admin('postgres', `SELECT 1 FROM pg_database WHERE datname = '${SOURCE}'`);
  if (exists.length > 0) {
    const [count] = await admin<{ n: string }>(SOURCE, "SELECT reltuples::bigint AS n FROM pg_class WHERE relname = 'events'").catch(() => []);
    if (count && Math.abs(Number(count.n) - rows) < rows * 0.01) return databaseSize();
    await admin('postgres', `DROP DATABASE ${SOURCE} WITH (FORCE)`);
  }
  process.stderr.write(`creating ${SOURCE} with ${rows} rows…\n`);
  await admin('postgres', `CREATE DATABASE ${SOURCE}`);
  await admin(
    SOURCE,
    `CREATE TABLE events (id bigint PRIMARY KEY, account int NOT NULL, kind text NOT NULL, payload text NOT NULL, note text, at timestamptz NOT NULL);
     INSERT INTO events
       SELECT g, g % 5000, (ARRAY['created','updated','deleted','viewed'])[1 + g % 4],
              md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text),
              CASE WHEN g % 3 = 0 THEN repeat(md5(g::text), 2) END,
              timestamptz '2020-01-01' + g * interval '17 seconds'
         FROM generate_series(1, ${rows}) g;
     CREATE INDEX events_account ON events (account, at);
     CREATE TABLE accounts AS SELECT g AS id, 'account ' || g AS name FROM generate_series(1, 5000) g;
     ALTER TABLE accounts ADD PRIMARY KEY (id);`,
  );
  await admin(SOURCE, 'VACUUM ANALYZE');
  return databaseSize();
}

async function databaseSize(): Promise<number> {
  const [row] = await admin<{ size: string }>('postgres', `SELECT pg_database_size('${SOURCE}') AS size`);
  return Number(row!.size);
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const started = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - started) / 1e9;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

async function main(): Promise<void> {
  const size = await ensureSource();
  const backupDir = await mkdtemp(path.join(os.tmpdir(), 'dbops-bench-'));
  const env = {
    ...process.env,
    REDIS_URL: redisUrl,
    QUEUE_PREFIX: `bench-${process.pid}`,
    BACKUP_DIR: backupDir,
    LOG_LEVEL: 'warn',
    PROTECTED_ENVS: 'none',
    DATABASE_URL_BENCH: urlFor(SOURCE),
    DATABASE_URL_BENCHTARGET: urlFor(TARGET),
    DATABASE_URL_BENCHCOPY: urlFor(COPY_TARGET),
  };
  const workers = ['backup', 'restore', 'copy'].map((type) => fork(path.join(here, '..', 'workers', 'worker.js'), [type], { env, stdio: 'inherit' }));
  const producer = new Producer(loadConfig(env));
  const rawFile = path.join(backupDir, 'raw.dump');
  const times = {
    rawDump: [] as number[],
    jobDump: [] as number[],
    rawRestore: [] as number[],
    jobRestore: [] as number[],
    rawDumpThenRestore: [] as number[],
    jobCopy: [] as number[],
  };
  let lastBackup = '';
  try {
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // let the workers connect
    const warm = await producer.enqueue('backup', { env: 'bench' });
    await producer.wait(warm.id); // warms the page cache and the workers

    for (let round = 1; round <= rounds; round += 1) {
      process.stderr.write(`round ${round}/${rounds}\n`);
      await rm(rawFile, { force: true });
      await admin('postgres', 'CHECKPOINT');
      times.rawDump.push(await timed(() => execa('pg_dump', ['-Fc', '-f', rawFile, '-d', urlFor(SOURCE)])));
      await admin('postgres', 'CHECKPOINT');
      times.jobDump.push(
        await timed(async () => {
          const job = await producer.enqueue('backup', { env: 'bench' });
          const outcome = await producer.wait<'backup'>(job.id);
          if (outcome.state !== 'completed') throw new Error(`backup job ${outcome.state}: ${outcome.failedReason}`);
          lastBackup = outcome.result.backupId;
        }),
      );

      await admin('postgres', 'CHECKPOINT');
      times.rawRestore.push(
        await timed(async () => {
          await admin('postgres', `DROP DATABASE IF EXISTS ${TARGET} WITH (FORCE)`);
          await admin('postgres', `CREATE DATABASE ${TARGET}`);
          await execa('pg_restore', ['-j', '2', '--exit-on-error', '-d', urlFor(TARGET), rawFile]);
        }),
      );
      await admin('postgres', 'CHECKPOINT');
      let previous: string | undefined;
      times.jobRestore.push(
        await timed(async () => {
          const job = await producer.enqueue('restore', { env: 'benchtarget', backup: lastBackup, jobs: 2 });
          const outcome = await producer.wait<'restore'>(job.id);
          if (outcome.state !== 'completed') throw new Error(`restore job ${outcome.state}: ${outcome.failedReason}`);
          previous = outcome.result.previousDatabase;
        }),
      );
      if (previous) await admin('postgres', `DROP DATABASE "${previous}" WITH (FORCE)`);

      await admin('postgres', 'CHECKPOINT');
      times.rawDumpThenRestore.push(
        await timed(async () => {
          await execa('pg_dump', ['-Fc', '-f', rawFile, '-d', urlFor(SOURCE)]);
          await admin('postgres', `DROP DATABASE IF EXISTS ${COPY_TARGET} WITH (FORCE)`);
          await admin('postgres', `CREATE DATABASE ${COPY_TARGET}`);
          await execa('pg_restore', ['-j', '2', '--exit-on-error', '-d', urlFor(COPY_TARGET), rawFile]);
        }),
      );
      await admin('postgres', 'CHECKPOINT');
      let copied: string | undefined;
      times.jobCopy.push(
        await timed(async () => {
          const job = await producer.enqueue('copy', { from: 'bench', to: 'benchcopy' });
          const outcome = await producer.wait<'copy'>(job.id);
          if (outcome.state !== 'completed') throw new Error(`copy job ${outcome.state}: ${outcome.failedReason}`);
          copied = outcome.result.previousDatabase;
        }),
      );
      if (copied) await admin('postgres', `DROP DATABASE "${copied}" WITH (FORCE)`);
    }
  } finally {
    await producer.close();
    for (const worker of workers) worker.kill('SIGTERM');
    for (const database of [TARGET, COPY_TARGET]) await admin('postgres', `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => undefined);
    await rm(backupDir, { recursive: true, force: true });
  }

  const line = (name: string, job: number[], raw: number[], target: string) =>
    `| ${name.padEnd(38)} | ${median(job).toFixed(2).padStart(7)} s | ${median(raw).toFixed(2).padStart(7)} s | ${(median(job) / median(raw)).toFixed(3).padStart(6)} | ${target.padEnd(7)} |`;
  console.log(`\ndatabase ${SOURCE}: ${(size / 2 ** 20).toFixed(0)} MiB, ${rows} rows; medians of ${rounds} alternating rounds; ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB\n`);
  console.log('| measure                                |     job    |     raw    |  ratio | target  |');
  console.log('|----------------------------------------|------------|------------|--------|---------|');
  console.log(line('backup job vs pg_dump -Fc', times.jobDump, times.rawDump, '≤ 1.05'));
  console.log(line('restore job vs drop+create+pg_restore', times.jobRestore, times.rawRestore, '≤ 1.05'));
  console.log(line('stream copy job vs dump, then restore', times.jobCopy, times.rawDumpThenRestore, '≤ 0.85'));
}

await main();
