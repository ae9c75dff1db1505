import { execFileSync, type ChildProcess } from 'node:child_process';
import { chownSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import pg from 'pg';
import type { BenchRow } from './s3.js';
import { admin, currentRss, forkWorker, median, percentile, stopWorkers, timed, urlFor } from './lib.js';

/*
 * Issue 29's measures, on a PostgreSQL server of the bench's own (initdb, run as the postgres OS user):
 *   backup --physical against raw `pg_basebackup -D dir -X stream -c fast`;
 *   the archiver's lag under an unthrottled pgbench load (the server's flush_lag, and the age of the
 *     archive's recovery point), p50/p99, and its memory as the WAL volume grows;
 *   restore --to-* (here --latest-wal) against what a person types: copy the base backup, point
 *     restore_command at the WAL, start it, wait for promotion, pg_dump | pg_restore into the target.
 */

const CLI = path.resolve(import.meta.dirname, '../../bin/manage-db.cjs');
const BIN = `/usr/lib/postgresql/${readdirSync('/usr/lib/postgresql').sort((a, b) => Number(b) - Number(a))[0]}/bin`;
const TARGET = 'dbops_bench_pitr_target';

function asPostgres(...args: string[]): void {
  execFileSync('runuser', ['-u', 'postgres', '--', ...args], { stdio: 'pipe' });
}

function postgresOwned(dir: string): void {
  execFileSync('chown', ['-R', 'postgres:postgres', dir]);
}

async function query<T extends pg.QueryResultRow>(url: string, text: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(text)).rows;
  } finally {
    await client.end();
  }
}

export async function benchPitr(baseEnv: NodeJS.ProcessEnv, rounds: number): Promise<BenchRow[]> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dbops-bench-pitr-'));
  chownSync(dir, Number(execFileSync('id', ['-u', 'postgres'])), Number(execFileSync('id', ['-g', 'postgres'])));
  const port = 24_000 + Math.floor(Math.random() * 1_000);
  const data = path.join(dir, 'data');
  asPostgres(`${BIN}/initdb`, '-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync');
  asPostgres(
    `${BIN}/pg_ctl`,
    '-D',
    data,
    '-l',
    path.join(dir, 'log'),
    '-w',
    '-o',
    `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c max_wal_size=2GB`,
    'start',
  );
  const url = (database: string) => `postgres://postgres@127.0.0.1:${port}/${database}`;
  const pgbench = (...args: string[]) =>
    execa(`${BIN}/pgbench`, ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', ...args, 'app'], {
      reject: false,
    });
  const backupDir = mkdtempSync(path.join(os.tmpdir(), 'dbops-bench-pitr-store-'));
  const env = {
    ...baseEnv,
    BACKUP_DIR: backupDir,
    QUEUE_PREFIX: `bench-pitr-${process.pid}`,
    PITR_ENVS: 'benchpitr',
    PITR_OS_USER: 'postgres',
    DATABASE_URL_BENCHPITR: url('app'),
    DATABASE_URL_BENCHPITRTARGET: urlFor(TARGET),
  };
  const workers: ChildProcess[] = [];
  const rows: BenchRow[] = [];
  const said = rows.push.bind(rows);
  rows.push = (...added: BenchRow[]) => {
    for (const row of added) process.stderr.write(`${row.join(' | ')}\n`);
    return said(...added);
  };
  try {
    await query(url('postgres'), 'CREATE DATABASE app');
    // pgbench scale 20 is a server of about 300 MiB; BENCH_PITR_SCALE=200 about 3 GiB, where fixed costs weigh less.
    await pgbench('-i', '-s', process.env.BENCH_PITR_SCALE ?? '20', '-q');
    const size = Number((await query<{ s: string }>(url('app'), "SELECT pg_database_size('app')::text AS s"))[0]!.s);
    const archiver = forkWorker('wal', env);
    workers.push(archiver, forkWorker('backup', env), forkWorker('restore', env));
    await sleep(3_000);
    const cli = (args: string[]) => execa('node', [CLI, ...args, '--wait', '--json'], { env });
    const { Queue } = await import('bullmq');
    const backupQueue = new Queue('backup', {
      connection: { url: baseEnv.REDIS_URL ?? 'redis://127.0.0.1:6379' },
      prefix: env.QUEUE_PREFIX,
    });

    const parts = (process.env.BENCH_PITR_PARTS ?? 'base,lag,restore').split(',');
    // 1. A base backup, as a user runs it, against raw pg_basebackup to a directory.
    const ours: number[] = [];
    const inJob: number[] = [];
    const theirs: number[] = [];
    for (let round = 0; round < (parts.includes('base') ? rounds : 0); round += 1) {
      await query(url('postgres'), 'CHECKPOINT');
      const started = Date.now();
      let jobId: string | undefined;
      ours.push(
        await timed(async () => {
          const run = await cli(['backup', '--env', 'benchpitr', '--physical']);
          const result = JSON.parse(run.stdout) as {
            durationMs: number;
            steps: { step: string; ms: number }[];
          };
          jobId = /^job (\S+)/m.exec(run.stderr)?.[1]; // --json names the job on stderr
          inJob.push(result.durationMs / 1000);
          process.stderr.write(
            `base backup steps: ${result.steps.map((one) => `${one.step} ${one.ms} ms`).join(', ')}\n`,
          );
        }),
      );
      // Where the CLI's wall time went beside the job, from the times BullMQ keeps on the job.
      const ended = Date.now();
      const job = jobId ? await backupQueue.getJob(jobId) : undefined;
      if (job?.processedOn && job.finishedOn)
        process.stderr.write(
          `base backup via the CLI: start and enqueue ${job.timestamp - started} ms, pick-up ${job.processedOn - job.timestamp} ms, ` +
            `worker ${job.finishedOn - job.processedOn} ms (job ${(job.returnvalue as { durationMs: number }).durationMs} ms), ` +
            `back to the CLI's exit ${ended - job.finishedOn} ms\n`,
        );
      await query(url('postgres'), 'CHECKPOINT');
      const rawDir = path.join(os.tmpdir(), `dbops-bench-rawbase-${round}`);
      theirs.push(
        await timed(() =>
          execa(`${BIN}/pg_basebackup`, [
            '-h',
            '127.0.0.1',
            '-p',
            String(port),
            '-U',
            'postgres',
            '-D',
            rawDir,
            '-X',
            'stream',
            '-c',
            'fast',
          ]),
        ),
      );
      rmSync(rawDir, { recursive: true, force: true });
      process.stderr.write(`raw pg_basebackup ${theirs.at(-1)!.toFixed(2)} s\n`);
    }
    if (parts.includes('base'))
      rows.push([
        `backup --physical (${(size / 2 ** 20).toFixed(0)} MiB): CLI wall / in job`,
        `${median(ours).toFixed(2)} s / ${median(inJob).toFixed(2)} s`,
        `${median(theirs).toFixed(2)} s (pg_basebackup -X stream)`,
        (median(ours) / median(theirs)).toFixed(2),
        '≤ 1.05',
      ]);
    await backupQueue.close();

    // 2. The archiver under an unthrottled write load: lag p50/p99, and its memory as WAL grows.
    const load = pgbench('-n', '-c', '4', '-j', '2', '-T', parts.includes('lag') ? '40' : '5');
    const flushLag: number[] = [];
    const pointAge: number[] = [];
    const rss: number[] = [];
    const started = Date.now();
    const { Redis } = await import('ioredis');
    const redis = new Redis(baseEnv.REDIS_URL ?? 'redis://127.0.0.1:6379');
    try {
      while (Date.now() - started < (parts.includes('lag') ? 38_000 : 4_000)) {
        await sleep(250);
        const [lag] = await query<{ lag: number | null }>(
          url('postgres'),
          "SELECT extract(epoch FROM flush_lag)::float8 AS lag FROM pg_stat_replication WHERE application_name = 'dbops-pg_receivewal'",
        );
        if (lag?.lag !== null && lag?.lag !== undefined) flushLag.push(lag.lag);
        const keys = await redis.keys(`${env.QUEUE_PREFIX}:dbops:wal:report:*`);
        const report = keys[0] ? (JSON.parse((await redis.get(keys[0])) ?? '{}') as { caughtUpAt?: string }) : {};
        if (report.caughtUpAt) pointAge.push((Date.now() - Date.parse(report.caughtUpAt)) / 1000);
        rss.push(currentRss(archiver.pid!));
      }
    } finally {
      redis.disconnect();
    }
    const loadResult = await load;
    const tps = /tps = ([\d.]+)/.exec(String(loadResult.stdout))?.[1] ?? '?';
    const wal = Number(
      (
        await query<{ b: string }>(url('postgres'), "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::text AS b")
      )[0]!.b,
    );
    rows.push([
      `archiver lag under pgbench -c 4 (${tps} tps): flush_lag p50 / p99`,
      `${percentile(flushLag, 50).toFixed(3)} s / ${percentile(flushLag, 99).toFixed(3)} s`,
      '-',
      '-',
      'p99 ≤ 1 s',
    ]);
    rows.push([
      'archive recovery point age (now − caughtUpAt) p50 / p99',
      `${percentile(pointAge, 50).toFixed(2)} s / ${percentile(pointAge, 99).toFixed(2)} s`,
      '-',
      '-',
      'p99 ≤ 1 s',
    ]);
    const half = Math.floor(rss.length / 2);
    rows.push([
      `archiver RSS, first vs second half of the load (${(wal / 2 ** 30).toFixed(1)} GiB WAL in all)`,
      `${(Math.max(...rss.slice(half)) / 2 ** 20).toFixed(0)} MiB`,
      `${(Math.max(...rss.slice(0, half)) / 2 ** 20).toFixed(0)} MiB`,
      (Math.max(...rss.slice(half)) / Math.max(...rss.slice(0, half))).toFixed(2),
      'flat',
    ]);

    // 3. A restore to the latest WAL, against the raw sequence.
    await cli(['backup', '--env', 'benchpitr', '--physical']);
    await pgbench('-n', '-c', '2', '-T', '5');
    await sleep(3_000);
    const baseDir = (() => {
      const root = path.join(backupDir, 'pitr');
      const server = readdirSync(root).find((name) => /^\d+$/.test(name))!;
      const bases = readdirSync(path.join(root, server, 'base'))
        .filter((name) => !name.endsWith('.json'))
        .sort();
      return { server, base: path.join(root, server, 'base', bases.at(-1)!), wal: path.join(root, server, 'wal') };
    })();
    await admin('postgres', `CREATE DATABASE ${TARGET}`).catch(() => undefined);
    const restoreOurs: number[] = [];
    const restoreInJob: number[] = [];
    const restoreTheirs: number[] = [];
    for (let round = 0; round < rounds; round += 1) {
      restoreOurs.push(
        await timed(async () => {
          const result = JSON.parse(
            (
              await cli([
                'restore',
                '--env',
                'benchpitrtarget',
                '--from',
                'benchpitr',
                '--latest-wal',
                '--drop-previous',
              ])
            ).stdout,
          ) as { durationMs: number; steps: { step: string; ms: number }[] };
          restoreInJob.push(result.durationMs / 1000);
          process.stderr.write(`restore steps: ${result.steps.map((one) => `${one.step} ${one.ms} ms`).join(', ')}\n`);
        }),
      );
      restoreTheirs.push(await timed(() => rawRecovery(baseDir, port + 1)));
    }
    rows.push([
      'restore --latest-wal: CLI wall / in job',
      `${median(restoreOurs).toFixed(2)} s / ${median(restoreInJob).toFixed(2)} s`,
      `${median(restoreTheirs).toFixed(2)} s (cp base, WAL, recovery, pg_dump | pg_restore)`,
      (median(restoreOurs) / median(restoreTheirs)).toFixed(2),
      '≤ 1.10',
    ]);
  } finally {
    await stopWorkers(workers);
    try {
      asPostgres(`${BIN}/pg_ctl`, '-D', data, '-m', 'fast', 'stop');
    } catch {
      // already stopped
    }
    rmSync(dir, { recursive: true, force: true });
    rmSync(backupDir, { recursive: true, force: true });
    await admin('postgres', `DROP DATABASE IF EXISTS ${TARGET} WITH (FORCE)`).catch(() => undefined);
    await admin('postgres', `DROP DATABASE IF EXISTS ${TARGET}_raw WITH (FORCE)`).catch(() => undefined);
  }
  return rows;
}

/**
 * What a person types: copy the base backup, write the WAL out of the archive (gunzip), set
 * restore_command, start the server, wait until it is promoted, then pg_dump | pg_restore the database
 * into a new one.
 */
async function rawRecovery(archive: { base: string; wal: string }, port: number): Promise<void> {
  const work = mkdtempSync(path.join(os.tmpdir(), 'dbops-bench-rawpitr-'));
  const data = path.join(work, 'data');
  const wal = path.join(work, 'wal');
  try {
    await execa('cp', ['-a', archive.base, data]);
    await execa('mkdir', [wal]);
    await execa('bash', [
      '-c',
      `cd '${archive.wal}' && for f in *.gz; do case "$f" in *.partial.gz) n="\${f%%.*}";; *) n="\${f%.gz}";; esac; gunzip -c "$f" > '${wal}'/"$n"; truncate -s 16M '${wal}'/"$n"; done`,
    ]);
    writeFileSync(path.join(data, 'recovery.signal'), '');
    writeFileSync(path.join(data, 'postgresql.conf'), '');
    writeFileSync(path.join(work, 'hba'), 'local all all trust\nhost all all 127.0.0.1/32 trust\n');
    postgresOwned(work);
    asPostgres(
      `${BIN}/pg_ctl`,
      '-D',
      data,
      '-l',
      path.join(work, 'log'),
      '-w',
      '-t',
      '600',
      '-o',
      `-p ${port} -k ${work} -c listen_addresses=127.0.0.1 -c hba_file=${work}/hba -c restore_command='cp ${wal}/%f %p' -c recovery_target_action=promote -c hot_standby=off`,
      'start',
    );
    // pg_ctl -w returns before the recovery ends: a person waits until the server is promoted.
    for (const deadline = Date.now() + 600_000; ;) {
      if (Date.now() > deadline) throw new Error('the raw recovery did not end within 10 minutes');
      const asked = await execa(
        'psql',
        ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-Atc', 'SELECT pg_is_in_recovery()', 'postgres'],
        { reject: false },
      );
      if (String(asked.stdout).trim() === 'f') break;
      await sleep(100);
    }
    await admin('postgres', `DROP DATABASE IF EXISTS ${TARGET}_raw WITH (FORCE)`);
    await admin('postgres', `CREATE DATABASE ${TARGET}_raw`);
    const copied = await execa(
      'bash',
      [
        '-o',
        'pipefail',
        '-c',
        `pg_dump -Fc -Z0 -h 127.0.0.1 -p ${port} -U postgres app | pg_restore -h 127.0.0.1 -U postgres -d ${TARGET}_raw`,
      ],
      { reject: false },
    );
    if (copied.exitCode !== 0) throw new Error(`pg_dump | pg_restore: ${String(copied.stderr).slice(-600)}`);
  } catch (error) {
    const log = await execa('tail', ['-5', path.join(work, 'log')], { reject: false });
    throw new Error(`the raw recovery failed: ${(error as Error).message}\n${String(log.stdout)}`, { cause: error });
  } finally {
    try {
      asPostgres(`${BIN}/pg_ctl`, '-D', data, '-m', 'immediate', 'stop');
    } catch {
      // not started, or stopped already
    }
    rmSync(work, { recursive: true, force: true });
  }
}
