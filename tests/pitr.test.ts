import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, mkdtemp, readdir, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa, type ResultPromise } from 'execa';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newServer, type NewServer } from './helpers/new-server.js';
import { databaseExists, sql } from './helpers/pg.js';
import { Rig, type WorkerProcess } from './helpers/rig.js';
import { S3Server } from './helpers/s3.js';
import { basic, startTestServer } from './helpers/server.js';
import { REDIS_URL } from './helpers/services.js';
import { waitFor } from './helpers/wait.js';

/*
 * Point-in-time recovery against a PostgreSQL server of the test's own (initdb, run as the postgres OS
 * user, password authentication), archived by real archiver processes while pgbench writes to it.
 */

const PG_BIN = `/usr/lib/postgresql/${execFileSync('ls', ['/usr/lib/postgresql']).toString().trim().split('\n').sort().at(-1)}/bin`;
const ARCHIVER_READY = /"msg":"(archiving WAL|another archiver holds this server; standing by)"/;
const SIGNING_KEY = 'a'.repeat(64);
/** A file the server's own recovery commands would make (see the file store's beforeAll). */
const TRIPWIRE = path.join(os.tmpdir(), `dbops-test-tripwire-${process.pid}`);

async function query<T extends pg.QueryResultRow>(url: string, text: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}

/** pgbench against the server until stopped: a steady write load. */
function startLoad(server: NewServer, database: string): ResultPromise {
  return execa(
    `${PG_BIN}/pgbench`,
    [
      '-n',
      '-c',
      '2',
      '-T',
      '600',
      '-R',
      '50',
      '-h',
      '127.0.0.1',
      '-p',
      String(server.port),
      '-U',
      'postgres',
      database,
    ],
    { env: { PGPASSWORD: server.password }, reject: false },
  );
}

async function startArchiver(rig: Rig, extra: Record<string, string> = {}): Promise<WorkerProcess> {
  const worker = await rig.startWorker('wal', extra, '"msg":"');
  await waitFor('the archiver to start', () => ARCHIVER_READY.test(worker.output()));
  return worker;
}

interface Listing {
  server: string;
  envs: Record<string, string>;
  from?: string;
  to?: string;
  errors: string[];
  segments: number;
  rpoSeconds?: number;
  baseBackups: { id: string }[];
}

async function windows(rig: Rig): Promise<{ exitCode: number; listed: Listing[]; stderr: string }> {
  const result = await rig.cli(['backups', 'list', '--physical', '--json']);
  return { exitCode: result.exitCode, listed: JSON.parse(result.stdout || '[]') as Listing[], stderr: result.stderr };
}

/** The temporary recovery instances' directories in $TMPDIR. */
async function pitrDirs(): Promise<string[]> {
  return (await readdir(os.tmpdir())).filter((name) => name.startsWith('dbops-pitr-'));
}

/** The newest base backup in the file store: its id and its directory. */
async function newestBase(rig: Rig): Promise<{ id: string; dir: string }> {
  const { listed } = await windows(rig);
  const bases = path.join(rig.backupDir, 'pitr', listed[0]!.server, 'base');
  const id = (await readdir(bases))
    .filter((name) => /^base-[^.]+$/.test(name))
    .sort()
    .at(-1)!;
  return { id, dir: path.join(bases, id) };
}

/** Waits until the archive holds everything the server wrote up to now. */
async function waitArchived(rig: Rig, since = new Date()): Promise<void> {
  await waitFor(
    'the archive to catch up',
    async () => {
      const { listed } = await windows(rig);
      return listed[0]?.to !== undefined && Date.parse(listed[0].to) > since.getTime();
    },
    60_000,
  );
}

/**
 * The active archiver frozen while 250,000 rows are written (its pg_receivewal goes on receiving into
 * its spool, but nothing reaches the stores), then killed: `other`, on another host, takes over from
 * the stores' last segment, and a restore to the latest WAL holds every row and the marker after it.
 */
async function takeOverFromFrozen(
  rig: Rig,
  frozen: WorkerProcess,
  other: WorkerProcess,
  url: string,
  table: string,
  marker: string,
): Promise<void> {
  process.kill(frozen.pid, 'SIGSTOP');
  await query(
    url,
    `CREATE TABLE ${table} AS SELECT g, repeat(md5(g::text), 10) AS pad FROM generate_series(1, 250000) g`,
  );
  await sleep(2_000);
  process.kill(frozen.pid, 'SIGKILL');
  await frozen.exited;
  await waitFor(
    'the other host to take over',
    () => other.output().includes("resuming after the stores' last WAL segment"),
    30_000,
  );
  await query(url, `INSERT INTO marker (name) VALUES ('${marker}')`);
  await waitArchived(rig, new Date());
  const { exitCode, listed, stderr } = await windows(rig);
  expect(exitCode, stderr).toBe(0);
  expect(listed[0]!.errors).toEqual([]);
  const restored = await rig.cli(['restore', '--env', 'staging', '--from', 'prod', '--latest-wal', '--wait']);
  expect(restored.exitCode, restored.stderr).toBe(0);
  expect(await sql(rig.db('staging'), `SELECT name FROM marker WHERE name = '${marker}'`)).toHaveLength(1);
  expect(await sql<{ n: string }>(rig.db('staging'), `SELECT count(*)::text AS n FROM ${table}`)).toEqual([
    { n: '250000' },
  ]);
}

describe('point-in-time recovery (file store)', () => {
  let server: NewServer;
  let rig: Rig;
  let prodUrl: string;
  let ledgerUrl: string;
  /** The tablespace's directory, when the test made one. */
  let spaceDir: string | undefined;
  let load: ResultPromise | undefined;
  let archiver: WorkerProcess;
  /** The second host's BACKUP_DIR (its spool), when the test made one. */
  let otherDir: string | undefined;

  beforeAll(async () => {
    server = await newServer();
    await query(server.url('postgres'), 'CREATE DATABASE app');
    prodUrl = server.url('app');
    execFileSync(
      `${PG_BIN}/pgbench`,
      ['-i', '-s', '2', '-q', '-h', '127.0.0.1', '-p', String(server.port), '-U', 'postgres', 'app'],
      {
        env: { ...process.env, PGPASSWORD: server.password },
        stdio: 'pipe',
      },
    );
    await query(
      prodUrl,
      'CREATE TABLE marker (name text PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())',
    );
    // ghost's server is down (nothing listens on its port): the archiver archives prod's meanwhile.
    // Settings of the server's own, in postgresql.auto.conf and so in every base backup: commands a
    // recovery would run on the worker's host. The temporary instance must run neither.
    for (const setting of ['recovery_end_command', 'archive_cleanup_command'])
      await query(server.url('postgres'), `ALTER SYSTEM SET ${setting} = 'touch ${TRIPWIRE}'`);
    // ledger shares prod's server (its archive); ledgercopy is where it is restored, on that server too.
    await query(server.url('postgres'), 'CREATE DATABASE ledger');
    await query(server.url('postgres'), 'CREATE DATABASE ledger_copy');
    ledgerUrl = server.url('ledger');
    rig = await Rig.create({
      PITR_ENVS: 'prod,ghost,ledger',
      PITR_OS_USER: 'postgres',
      BACKUP_SIGNING_KEY: SIGNING_KEY,
    });
    rig.env.DATABASE_URL_PROD = prodUrl;
    rig.env.DATABASE_URL_LEDGER = ledgerUrl;
    rig.env.DATABASE_URL_LEDGERCOPY = server.url('ledger_copy');
    rig.env.DATABASE_URL_GHOST = 'postgres://postgres@127.0.0.1:1/ghost';
    rig.setEnv('staging', rig.db('staging'));
    await sql('postgres', `CREATE DATABASE ${rig.db('staging')}`);
    await sql(rig.db('staging'), 'CREATE TABLE untouched (id int)');
    archiver = await startArchiver(rig);
    await rig.startWorker('backup');
    await rig.startWorker('restore');
    load = startLoad(server, 'app');
  }, 120_000);

  afterAll(async () => {
    load?.kill('SIGTERM');
    await load?.catch(() => undefined);
    await rig?.cleanup();
    server?.stop();
    if (otherDir) await rm(otherDir, { recursive: true, force: true });
    if (spaceDir) await rm(spaceDir, { recursive: true, force: true });
    await rm(TRIPWIRE, { force: true });
  });

  it('a base backup, then a restore to just after a marker holds the marker and nothing written after it', async () => {
    expect(archiver.output()).toContain("cannot reach ghost's server: archiving the others");
    const backup = await rig.cli(['backup', '--env', 'prod', '--physical', '--wait', '--json']);
    expect(backup.exitCode, backup.stderr).toBe(0);
    const base = JSON.parse(backup.stdout) as { id: string; archived: boolean; startLsn: string; stopLsn: string };
    expect(base.archived).toBe(true);
    await sleep(1_500);
    await query(prodUrl, "INSERT INTO marker (name) VALUES ('before')");
    await sleep(1_000);
    const target = new Date();
    await sleep(1_000);
    await query(prodUrl, "INSERT INTO marker (name) VALUES ('after')");
    await sleep(1_000);
    await waitArchived(rig);

    const restored = await rig.cli([
      'restore',
      '--env',
      'staging',
      '--from',
      'prod',
      '--to-time',
      target.toISOString(),
      '--wait',
      '--json',
    ]);
    expect(restored.exitCode, restored.stderr).toBe(0);
    const result = JSON.parse(restored.stdout) as { baseBackup: string; walSegments: number };
    expect(result.baseBackup).toBe(base.id);
    const staging = rig.db('staging');
    expect(
      (await sql<{ name: string }>(staging, 'SELECT name FROM marker ORDER BY name')).map((row) => row.name),
    ).toEqual(['before']);
    // pgbench stamps each transaction's history row with its start: none after the target.
    const [latest] = await sql<{ at: Date | null; n: string }>(
      staging,
      'SELECT max(mtime) AS at, count(*)::text AS n FROM pgbench_history',
    );
    expect(Number(latest!.n)).toBeGreaterThan(0);
    expect(latest!.at!.getTime()).toBeLessThanOrEqual(target.getTime());
    // The temporary instance and its files are gone; it ran none of the server's commands.
    expect(await pitrDirs()).toEqual([]);
    expect(existsSync(TRIPWIRE)).toBe(false);
  }, 240_000);
  it('a restore to --latest-wal holds every row committed before the archiver last caught up', async () => {
    await query(prodUrl, "INSERT INTO marker (name) VALUES ('latest')");
    const committed = new Date();
    await waitArchived(rig, committed);
    const restored = await rig.cli([
      'restore',
      '--env',
      'staging',
      '--from',
      'prod',
      '--latest-wal',
      '--wait',
      '--json',
    ]);
    expect(restored.exitCode, restored.stderr).toBe(0);
    expect(
      (await sql<{ name: string }>(rig.db('staging'), 'SELECT name FROM marker ORDER BY name')).map((row) => row.name),
    ).toEqual(['after', 'before', 'latest']);
  }, 180_000);

  it("a restore to the archive's last position, with no record after it archived yet, recovers to that position", async () => {
    await query(prodUrl, "INSERT INTO marker (name) VALUES ('at-lsn')");
    await waitArchived(rig, new Date());
    // Frozen, the archiver stores nothing more: the record that starts where the archive ends is not in it.
    process.kill(archiver.pid, 'SIGSTOP');
    try {
      const { listed } = await windows(rig);
      const end = (listed[0] as Listing & { toLsn: string }).toLsn;
      await query(prodUrl, "INSERT INTO marker (name) VALUES ('past-lsn')");
      const restored = await rig.cli(['restore', '--env', 'staging', '--from', 'prod', '--to-lsn', end, '--wait']);
      expect(restored.exitCode, restored.stderr).toBe(0);
    } finally {
      process.kill(archiver.pid, 'SIGCONT');
    }
    const names = (await sql<{ name: string }>(rig.db('staging'), 'SELECT name FROM marker')).map((row) => row.name);
    expect(names).toContain('at-lsn');
    expect(names).not.toContain('past-lsn');
  }, 120_000);

  it('a time outside the archived range fails before anything is touched, naming the range', async () => {
    const before = await sql<{ n: string }>(rig.db('staging'), 'SELECT count(*)::text AS n FROM marker');
    const run = await rig.cli([
      'restore',
      '--env',
      'staging',
      '--from',
      'prod',
      '--to-time',
      '2001-01-01T00:00:00Z',
      '--wait',
    ]);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toMatch(
      /2001-01-01T00:00:00Z is outside the archived range: recoverable from \S+ \(\S+\) to \S+ \(\S+\)/,
    );
    expect(await sql<{ n: string }>(rig.db('staging'), 'SELECT count(*)::text AS n FROM marker')).toEqual(before);
    const future = await rig.cli([
      'restore',
      '--env',
      'staging',
      '--from',
      'prod',
      '--to-time',
      '2999-01-01T00:00:00Z',
      '--wait',
    ]);
    expect(future.exitCode).toBe(1);
    expect(future.stderr).toMatch(/is outside the archived range/);
  }, 60_000);

  it('an archiver killed under load is taken over by another; the window stays continuous', async () => {
    const standby = await startArchiver(rig);
    expect(standby.output()).toMatch(/standing by/);
    // What a killed archiver leaves half-written (a putObject temporary a few minutes old) is swept.
    const wal = path.join(rig.backupDir, 'pitr', (await windows(rig)).listed[0]!.server, 'wal');
    const leftover = path.join(wal, '.000000010000000000000001.gz.0badf00d');
    await writeFile(leftover, 'half a segment');
    const old = new Date(Date.now() - 10 * 60_000);
    await utimes(leftover, old, old);
    archiver.process.kill('SIGKILL');
    await archiver.exited;
    await waitFor('the standby to take over', () => standby.output().includes('"msg":"archiving WAL"'), 30_000);
    await waitFor('the leftover to be swept', () => standby.output().includes('removed what a killed archiver left'));
    expect(existsSync(leftover)).toBe(false);
    // More WAL than a segment while the new archiver runs: segments complete after the takeover.
    await query(
      prodUrl,
      'CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 10) AS pad FROM generate_series(1, 200000) g',
    );
    await query(prodUrl, "INSERT INTO marker (name) VALUES ('after-kill')");
    const committed = new Date();
    await waitArchived(rig, committed);
    const { exitCode, listed, stderr } = await windows(rig);
    expect(exitCode, stderr).toBe(0);
    expect(listed).toHaveLength(1);
    expect(listed[0]!.errors).toEqual([]);
    expect(listed[0]!.envs).toEqual({ prod: 'app', ledger: 'ledger' });
    expect(listed[0]!.rpoSeconds).toBeLessThan(30);
    const restored = await rig.cli(['restore', '--env', 'staging', '--from', 'prod', '--latest-wal', '--wait']);
    expect(restored.exitCode, restored.stderr).toBe(0);
    expect(await sql(rig.db('staging'), "SELECT name FROM marker WHERE name = 'after-kill'")).toHaveLength(1);
    expect(await sql<{ n: string }>(rig.db('staging'), 'SELECT count(*)::text AS n FROM filler')).toEqual([
      { n: '200000' },
    ]);
    archiver = standby;
  }, 240_000);

  it('an archiver on another host takes over from one that stopped uploading: no WAL is lost', async () => {
    // The other host: a spool of its own (empty), the same store.
    otherDir = await mkdtemp(path.join(os.tmpdir(), 'dbops-otherhost-'));
    {
      const other = await startArchiver(rig, { BACKUP_DIR: otherDir, BACKUP_STORES: `file://${rig.backupDir}` });
      expect(other.output()).toMatch(/standing by/);
      await takeOverFromFrozen(rig, archiver, other, prodUrl, 'filler2', 'cross-host');
      archiver = other;
    }
  }, 240_000);

  it('the replication password appears in no argv, log, manifest or job data', async () => {
    const secret = server.password;
    const argv = execFileSync('ps', ['-eo', 'args']).toString();
    expect(argv).toContain('pg_receivewal');
    expect(argv).not.toContain(secret);
    for (const worker of rig.workers()) expect(worker.output()).not.toContain(secret);
    const files = (await readdir(rig.backupDir, { recursive: true })).filter((name) => name.endsWith('.json'));
    expect(files.some((name) => name.includes('pitr'))).toBe(true);
    for (const name of files) expect(await readFile(path.join(rig.backupDir, name), 'utf8')).not.toContain(secret);
    const redis = new Redis(REDIS_URL);
    try {
      for (const key of await rig.redisKeys()) {
        const type = await redis.type(key);
        const text =
          type === 'string'
            ? await redis.get(key)
            : type === 'hash'
              ? JSON.stringify(await redis.hgetall(key))
              : type === 'list'
                ? JSON.stringify(await redis.lrange(key, 0, -1))
                : type === 'stream'
                  ? JSON.stringify(await redis.xrange(key, '-', '+'))
                  : '';
        expect(text ?? '').not.toContain(secret);
      }
    } finally {
      redis.disconnect();
    }
  }, 60_000);

  it("the API, the console and /metrics show the window, the recovery point and the archiver's lag", async () => {
    const token = 'pitr-token-0123456789';
    const running = await startTestServer(rig, {
      API_TOKEN: token,
      DASHBOARD_USER: 'ops',
      DASHBOARD_PASSWORD: 'pw-1234567',
    });
    try {
      const base = running.url;
      const api = await fetch(`${base}/api/v1/pitr?env=prod`, { headers: { Authorization: `Bearer ${token}` } });
      expect(api.status).toBe(200);
      const [facts] = (await api.json()) as (Listing & {
        store: string;
        archiver?: { lagBytes?: number; serverLsn: string };
      })[];
      expect(facts!.store).toBe('file');
      expect(facts!.errors).toEqual([]);
      expect(facts!.archiver?.serverLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
      expect(facts!.rpoSeconds).toBeLessThan(30);
      const auth = { headers: { Authorization: basic('ops', 'pw-1234567') } };
      const metrics = await (await fetch(`${base}/metrics`, auth)).text();
      expect(metrics).toMatch(new RegExp(`dbops_wal_lag_bytes\\{server="${facts!.server}"\\} \\d+`));
      expect(metrics).toMatch(
        new RegExp(`dbops_wal_recovery_point_timestamp_seconds\\{server="${facts!.server}"\\} \\d`),
      );
      const page = await (await fetch(`${base}/recovery`, auth)).text();
      expect(page).toContain(facts!.server);
      expect(page).toContain('continuous');
      expect(page).not.toContain('no archiver running');
      // ghost's server never answered: said beside the others, with since when and why.
      const all = (await (
        await fetch(`${base}/api/v1/pitr`, { headers: { Authorization: `Bearer ${token}` } })
      ).json()) as Listing[];
      expect(all.find((one) => one.envs.ghost !== undefined)?.errors).toEqual([
        expect.stringMatching(/^the archiver cannot reach ghost's server \(since \d{4}-.+\): .*ECONNREFUSED/),
      ]);
      expect(page).toMatch(/the archiver cannot reach ghost(&#39;|&#x27;|')s server/);
      expect((await fetch(`${base}/api/v1/pitr`)).status).toBe(401);
    } finally {
      await running.close();
    }
  }, 60_000);

  it('base backups are schedulable: schedule add … backup --physical schedules a physicalbackup job', async () => {
    const added = await rig.cli([
      'schedule',
      'add',
      'nightly-base',
      '--cron',
      '0 2 * * *',
      'backup',
      '--env',
      'prod',
      '--physical',
    ]);
    expect(added.exitCode, added.stderr).toBe(0);
    const listed = JSON.parse((await rig.cli(['schedule', 'list', '--json'])).stdout) as {
      name: string;
      operation: string;
      payload: unknown;
    }[];
    expect(listed).toEqual([
      expect.objectContaining({ name: 'nightly-base', operation: 'physicalbackup', payload: { env: 'prod' } }),
    ]);
    expect((await rig.cli(['schedule', 'remove', 'nightly-base'])).exitCode).toBe(0);
  }, 60_000);

  it('backups verify --pitr recovers a point just taken and finds what the source held then', async () => {
    const run = await rig.cli(['backups', 'verify', '--pitr', '--env', 'prod', '--json']);
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as {
      compared: string[];
      changedDuringDrill: string[];
      lsn: string;
      recoveredTo?: string;
    };
    expect(result.compared).toEqual(expect.arrayContaining(['public.marker', 'public.filler']));
    // pgbench writes all the time: its history is written during the drill and cannot be compared.
    expect(result.changedDuringDrill).toContain('public.pgbench_history');
    expect(result.recoveredTo).toContain(result.lsn);
    expect(await pitrDirs()).toEqual([]);
  }, 180_000);

  it('a damaged WAL segment fails the restore before the target is touched; the temporary instance is gone', async () => {
    const { listed } = await windows(rig);
    const walDir = path.join(rig.backupDir, 'pitr', listed[0]!.server, 'wal');
    const segments = (await readdir(walDir)).filter((name) => /^[0-9A-F]{24}\.gz$/.test(name)).sort();
    const victim = segments.at(-2)!;
    const kept = await readFile(path.join(walDir, victim));
    await writeFile(path.join(walDir, victim), Buffer.concat([kept.subarray(0, 100), Buffer.alloc(4096, 7)]));
    const before = await sql(rig.db('staging'), 'SELECT name FROM marker ORDER BY name');
    const run = await rig.cli(['restore', '--env', 'staging', '--from', 'prod', '--latest-wal', '--wait']);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toContain(`WAL ${victim.replace(/\.gz$/, '')} in the file store is damaged`);
    expect(await sql(rig.db('staging'), 'SELECT name FROM marker ORDER BY name')).toEqual(before);
    expect(await pitrDirs()).toEqual([]);
    await writeFile(path.join(walDir, victim), kept);
  }, 120_000);

  it('a base backup holding a link or a tablespace_map is refused before the instance starts: they could point anywhere on the host', async () => {
    const newest = await newestBase(rig);
    const link = path.join(newest.dir, 'global', 'dbops-test-link');
    await symlink(os.tmpdir(), link);
    try {
      const before = await sql(rig.db('staging'), 'SELECT name FROM marker ORDER BY name');
      const run = await rig.cli(['restore', '--env', 'staging', '--from', 'prod', '--latest-wal', '--wait']);
      expect(run.exitCode).toBe(1);
      expect(run.stderr).toContain(
        `the base backup holds a link, global/dbops-test-link -> ${os.tmpdir()}: refusing to recover from it`,
      );
      expect(await sql(rig.db('staging'), 'SELECT name FROM marker ORDER BY name')).toEqual(before);
      expect(await pitrDirs()).toEqual([]);
    } finally {
      await rm(link);
    }
    // Nor a tablespace_map: PostgreSQL would make the links it names when it starts.
    const map = path.join(newest.dir, 'tablespace_map');
    await writeFile(map, `16999 ${os.tmpdir()}\n`);
    try {
      const run = await rig.cli(['restore', '--env', 'staging', '--from', 'prod', '--latest-wal', '--wait']);
      expect(run.exitCode).toBe(1);
      expect(run.stderr).toContain('the base backup holds a tablespace_map');
    } finally {
      await rm(map);
    }
  }, 120_000);

  it('a damaged base backup (a byte of a data file changed) fails the restore before the target is touched', async () => {
    const newest = await newestBase(rig);
    const relation = (
      await query<{ relation: string }>(prodUrl, "SELECT pg_relation_filepath('pgbench_accounts') AS relation")
    )[0]!.relation;
    const file = path.join(newest.dir, relation);
    const kept = await readFile(file);
    expect(kept.length).toBeGreaterThan(8192);
    const damaged = Buffer.from(kept);
    const at = Math.floor(kept.length / 2);
    damaged[at] = damaged[at]! ^ 0xff;
    await writeFile(file, damaged);
    try {
      const before = await sql(rig.db('staging'), 'SELECT name FROM marker ORDER BY name');
      const run = await rig.cli(['restore', '--env', 'staging', '--from', 'prod', '--latest-wal', '--wait']);
      expect(run.exitCode).toBe(1);
      expect(run.stderr).toContain(`base backup ${newest.id} in the file store is damaged: pg_verifybackup failed`);
      expect(run.stderr).toContain(`checksum mismatch for file "${relation}"`);
      expect(await sql(rig.db('staging'), 'SELECT name FROM marker ORDER BY name')).toEqual(before);
      expect(await pitrDirs()).toEqual([]);
    } finally {
      await writeFile(file, kept);
    }
  }, 120_000);

  it('a cancelled restore stops the temporary instance and removes its files', async () => {
    const producer = rig.producer();
    const job = await producer.enqueue('pitr', { env: 'staging', from: 'prod', latestWal: true });
    await waitFor('the temporary instance', async () => (await pitrDirs()).length > 0);
    expect(await producer.cancel(job.id)).toBe('signalled');
    expect(await producer.wait(job.id)).toMatchObject({ state: 'cancelled' });
    expect(await pitrDirs()).toEqual([]);
    expect(execFileSync('ps', ['-eo', 'args']).toString()).not.toContain('cluster_name=dbops-pitr');
  }, 120_000);

  it('a missing WAL segment: the window names the gap, and a restore across it fails before touching the target', async () => {
    const [{ listed }] = [await windows(rig)];
    const server = listed[0]!.server;
    const walDir = path.join(rig.backupDir, 'pitr', server, 'wal');
    const segments = (await readdir(walDir)).filter((name) => /^[0-9A-F]{24}\.gz$/.test(name)).sort();
    expect(segments.length).toBeGreaterThan(3);
    // After the base backup's end (the filler table made several segments since): the restore needs it.
    const victim = segments.at(-3)!.replace(/\.gz$/, '');
    const kept = await Promise.all(['gz', 'json'].map((ext) => readFile(path.join(walDir, `${victim}.${ext}`))));
    await rm(path.join(walDir, `${victim}.gz`));
    await rm(path.join(walDir, `${victim}.json`));
    const after = await windows(rig);
    expect(after.exitCode).toBe(1);
    expect(after.listed[0]!.errors).toEqual(
      expect.arrayContaining([expect.stringContaining(`missing WAL segment ${victim}`)]),
    );
    const human = await rig.cli(['backups', 'list', '--physical']);
    expect(human.exitCode).toBe(1);
    expect(human.stderr).toContain(`missing WAL segment ${victim}`);
    const before = await sql(rig.db('staging'), 'SELECT name FROM marker ORDER BY name');
    const run = await rig.cli(['restore', '--env', 'staging', '--from', 'prod', '--latest-wal', '--wait']);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toMatch(new RegExp(`no base backup is followed by unbroken WAL|missing WAL segment ${victim}`));
    expect(await sql(rig.db('staging'), 'SELECT name FROM marker ORDER BY name')).toEqual(before);
    expect(await databaseExists(rig.db('staging'))).toBe(true);
    // Put back: the window is whole again for the tests after this one.
    await writeFile(path.join(walDir, `${victim}.gz`), kept[0]!);
    await writeFile(path.join(walDir, `${victim}.json`), kept[1]!);
    expect((await windows(rig)).listed[0]!.errors).toEqual([]);
  }, 120_000);

  it('tablespaces: a base backup holds them; a restore never replays CREATE TABLESPACE into the live directory', async () => {
    const ledgerCopy = server.url('ledger_copy');
    const location = await mkdtemp(path.join(os.tmpdir(), 'dbops-test-space-'));
    spaceDir = location;
    execFileSync('chown', ['postgres:postgres', location]);
    await sleep(1_000);
    const beforeSpace = new Date();
    await sleep(1_000);
    await query(server.url('postgres'), `CREATE TABLESPACE ledger_space LOCATION '${location}'`);
    await query(ledgerUrl, 'CREATE TABLE entries (id int PRIMARY KEY, note text) TABLESPACE ledger_space');
    await query(ledgerUrl, "INSERT INTO entries SELECT g, 'entry ' || g FROM generate_series(1, 1000) g");
    await waitArchived(rig);
    const noEntries = async () => query(ledgerCopy, "SELECT to_regclass('entries')::text AS t");

    // Every base backup so far precedes the tablespace: recovery would replay its creation, and write
    // where the live server keeps it. Refused before an instance starts; the target untouched.
    const across = await rig.cli(['restore', '--env', 'ledgercopy', '--from', 'ledger', '--latest-wal', '--wait']);
    expect(across.exitCode).toBe(1);
    expect(across.stderr).toMatch(
      new RegExp(
        `the WAL to replay creates tablespace \\d+ at "${location}" \\(at [0-9A-F]+/[0-9A-F]+\\), after base backup base-`,
      ),
    );
    expect(await noEntries()).toEqual([{ t: null }]);
    expect(await pitrDirs()).toEqual([]);

    // A point before the tablespace was made replays no such record.
    const early = await rig.cli([
      'restore',
      '--env',
      'ledgercopy',
      '--from',
      'ledger',
      '--to-time',
      beforeSpace.toISOString(),
      '--wait',
    ]);
    expect(early.exitCode, early.stderr).toBe(0);
    expect(await noEntries()).toEqual([{ t: null }]);

    // A base backup now holds the tablespace, as a directory of its own.
    const backup = await rig.cli(['backup', '--env', 'prod', '--physical', '--wait', '--json']);
    expect(backup.exitCode, backup.stderr).toBe(0);
    const base = JSON.parse(backup.stdout) as { id: string; server: string };
    const [space] = await query<{ oid: number }>(
      server.url('postgres'),
      "SELECT oid::int AS oid FROM pg_tablespace WHERE spcname = 'ledger_space'",
    );
    const kept = await lstat(
      path.join(rig.backupDir, 'pitr', base.server, 'base', base.id, 'pg_tblspc', String(space!.oid)),
    );
    expect(kept.isDirectory()).toBe(true);
    await query(ledgerUrl, "INSERT INTO entries VALUES (1001, 'after the base backup')");
    await waitArchived(rig, new Date());

    const restored = await rig.cli(['restore', '--env', 'ledgercopy', '--from', 'ledger', '--latest-wal', '--wait']);
    expect(restored.exitCode, restored.stderr).toBe(0);
    expect(
      await query(
        ledgerCopy,
        "SELECT count(*)::int AS n, count(*) FILTER (WHERE note = 'after the base backup')::int AS late, (SELECT tablespace FROM pg_tables WHERE tablename = 'entries') AS space FROM entries",
      ),
    ).toEqual([{ n: 1001, late: 1, space: 'ledger_space' }]);
    expect(await pitrDirs()).toEqual([]);
    expect(existsSync(TRIPWIRE)).toBe(false);
    await query(ledgerCopy, 'DROP TABLE entries');
  }, 240_000);
});

describe('point-in-time recovery with an S3 store only', () => {
  let server: NewServer;
  let s3: S3Server;
  let rig: Rig;
  let secondDir: string;
  let thirdDir: string | undefined;
  let spaceDir: string | undefined;
  let archiver: WorkerProcess;
  let restorer: WorkerProcess;
  let load: ResultPromise | undefined;

  beforeAll(async () => {
    server = await newServer();
    await query(server.url('postgres'), 'CREATE DATABASE app');
    execFileSync(
      `${PG_BIN}/pgbench`,
      ['-i', '-s', '1', '-q', '-h', '127.0.0.1', '-p', String(server.port), '-U', 'postgres', 'app'],
      { env: { ...process.env, PGPASSWORD: server.password }, stdio: 'pipe' },
    );
    await query(server.url('app'), 'CREATE TABLE marker (name text PRIMARY KEY)');
    // A tablespace, with a table of another database in it: the base backups' tars carry it, and the
    // restores' instances link it into their own directories.
    spaceDir = await mkdtemp(path.join(os.tmpdir(), 'dbops-test-space-'));
    execFileSync('chown', ['postgres:postgres', spaceDir]);
    await query(server.url('postgres'), `CREATE TABLESPACE bucket_space LOCATION '${spaceDir}'`);
    await query(server.url('postgres'), 'CREATE DATABASE spare');
    await query(server.url('spare'), 'CREATE TABLE kept (g int) TABLESPACE bucket_space');
    await query(server.url('spare'), 'INSERT INTO kept SELECT generate_series(1, 1000)');
    s3 = await S3Server.start(['pitr-bucket']);
    rig = await Rig.create({
      PITR_ENVS: 'prod',
      PITR_OS_USER: 'postgres',
      BACKUP_SIGNING_KEY: SIGNING_KEY,
      // Low, for the outage test: the slot keeping more than 16 MiB is warned of.
      PITR_SLOT_WARN_MB: '16',
    });
    Object.assign(rig.env, s3.env(`s3://pitr-bucket/${rig.id}?forcePathStyle=true`), {
      BACKUP_ENCRYPTION_KEY: 'b'.repeat(64),
      BACKUP_RETENTION_PROD: 'last=1',
    });
    rig.env.DATABASE_URL_PROD = server.url('app');
    rig.setEnv('staging', rig.db('staging'));
    await sql('postgres', `CREATE DATABASE ${rig.db('staging')}`);
    archiver = await startArchiver(rig);
    await rig.startWorker('backup');
    // The restore runs on a "new host": a BACKUP_DIR of its own, nothing but the bucket in common.
    secondDir = await mkdtemp(path.join(os.tmpdir(), 'dbops-pitr-second-'));
    // A long job lock: the retention test holds this worker stopped for as long as a base backup takes.
    restorer = await rig.startWorker('restore', { BACKUP_DIR: secondDir, WORKER_LOCK_MS: '120000' });
    load = startLoad(server, 'app');
  }, 120_000);

  afterAll(async () => {
    load?.kill('SIGTERM');
    await load?.catch(() => undefined);
    await rig?.cleanup();
    await s3?.stop();
    server?.stop();
    if (secondDir) await rm(secondDir, { recursive: true, force: true });
    if (thirdDir) await rm(thirdDir, { recursive: true, force: true });
    if (spaceDir) await rm(spaceDir, { recursive: true, force: true });
  });

  it('archives WAL and a base backup into the bucket, encrypted, and restores from the bucket alone', async () => {
    const backup = await rig.cli(['backup', '--env', 'prod', '--physical', '--wait', '--json']);
    expect(backup.exitCode, backup.stderr).toBe(0);
    await query(server.url('app'), "INSERT INTO marker VALUES ('in-the-bucket')");
    const committed = new Date();
    await waitArchived(rig, committed);
    const keys = await s3.keys('pitr-bucket', `${rig.id}/pitr/`);
    expect(keys.some((key) => /\/base\/base-[^/]+\.tar\.gz$/.test(key))).toBe(true);
    expect(keys.some((key) => /\/wal\/[0-9A-F]{24}\.gz$/.test(key))).toBe(true);
    // Encrypted: no gzip header where a plain one would be.
    const walKey = keys.find((key) => /\/wal\/[0-9A-F]{24}\.gz$/.test(key))!;
    expect((await s3.get('pitr-bucket', walKey)).subarray(0, 2).equals(Buffer.from([0x1f, 0x8b]))).toBe(false);
    expect(existsSync(path.join(rig.backupDir, 'pitr'))).toBe(false);
    const restored = await rig.cli(['restore', '--env', 'staging', '--from', 'prod', '--latest-wal', '--wait']);
    expect(restored.exitCode, restored.stderr).toBe(0);
    expect(await sql(rig.db('staging'), 'SELECT name FROM marker')).toEqual([{ name: 'in-the-bucket' }]);
    expect(
      Number((await sql<{ n: string }>(rig.db('staging'), 'SELECT count(*)::text AS n FROM pgbench_accounts'))[0]!.n),
    ).toBe(100_000);
  }, 240_000);
  it('retention keeps the newest base backup and the WAL from its end on, and no more', async () => {
    const keysOf = async () => s3.keys('pitr-bucket', `${rig.id}/pitr/`);
    const before = await keysOf();
    const firstBase = before.find((key) => /\/base\/base-[^/]+\.json$/.test(key))!;
    const second = await rig.cli(['backup', '--env', 'prod', '--physical', '--wait', '--json']);
    expect(second.exitCode, second.stderr).toBe(0);
    const result = JSON.parse(second.stdout) as {
      id: string;
      stopLsn: string;
      pruned: { bases: string[]; walFiles: number };
    };
    expect(result.pruned.bases).toEqual([path.basename(firstBase, '.json')]);
    expect(result.pruned.walFiles).toBeGreaterThan(0);
    const after = await keysOf();
    expect(after.filter((key) => key.includes('/base/') && key.endsWith('.json'))).toEqual([
      expect.stringContaining(`/base/${result.id}.json`),
    ]);
    // No complete segment before the one that holds the kept base backup's end.
    const stopSegment =
      BigInt.asUintN(
        64,
        (BigInt(`0x${result.stopLsn.split('/')[0]}`) << 32n) + BigInt(`0x${result.stopLsn.split('/')[1]}`),
      ) / BigInt(16 * 2 ** 20);
    for (const key of after.filter((one) => /\/wal\/[0-9A-F]{24}\.gz$/.test(one))) {
      const name = path.basename(key, '.gz');
      const number = BigInt(`0x${name.slice(8, 16)}`) * 256n + BigInt(`0x${name.slice(16, 24)}`);
      expect(number >= stopSegment, `${name} is older than the kept base backup`).toBe(true);
    }
    await query(server.url('app'), "INSERT INTO marker VALUES ('after-retention')");
    await waitArchived(rig, new Date());
    const restored = await rig.cli(['restore', '--env', 'staging', '--from', 'prod', '--latest-wal', '--wait']);
    expect(restored.exitCode, restored.stderr).toBe(0);
    expect(await sql(rig.db('staging'), 'SELECT name FROM marker ORDER BY name')).toEqual([
      { name: 'after-retention' },
      { name: 'in-the-bucket' },
    ]);
  }, 240_000);
  it('retention leaves a base backup a restore is reading, until the restore is done', async () => {
    const bases = async () =>
      (await s3.keys('pitr-bucket', `${rig.id}/pitr/`))
        .filter((key) => /\/base\/base-[^/]+\.json$/.test(key))
        .map((key) => path.basename(key, '.json'))
        .sort();
    const [reading] = await bases();
    const producer = rig.producer();
    const job = await producer.enqueue('pitr', { env: 'staging', from: 'prod', latestWal: true });
    await waitFor('the restore to mark its base backup in use', async () =>
      (await s3.keys('pitr-bucket', `${rig.id}/.in-use/`)).some((key) => key.includes(reading!)),
    );
    // The restore held where it is (its worker stopped) while a base backup prunes with last=1.
    process.kill(restorer.pid, 'SIGSTOP');
    let newer: string;
    try {
      const backup = await rig.cli(['backup', '--env', 'prod', '--physical', '--wait', '--json']);
      expect(backup.exitCode, backup.stderr).toBe(0);
      const result = JSON.parse(backup.stdout) as { id: string; pruned: { bases: string[]; inUse: string[] } };
      expect(result.pruned).toMatchObject({ bases: [], inUse: [reading] });
      expect(await bases()).toEqual([reading, result.id].sort());
      newer = result.id;
    } finally {
      process.kill(restorer.pid, 'SIGCONT');
    }
    expect(await producer.wait(job.id)).toMatchObject({ state: 'completed' });
    expect(await s3.keys('pitr-bucket', `${rig.id}/.in-use/`)).toEqual([]);
    // Read no more: the next base backup prunes it.
    const next = await rig.cli(['backup', '--env', 'prod', '--physical', '--wait', '--json']);
    expect(next.exitCode, next.stderr).toBe(0);
    const after = JSON.parse(next.stdout) as { id: string; pruned: { bases: string[]; inUse: string[] } };
    expect(after.pruned.bases.sort()).toEqual([reading, newer].sort());
    expect(after.pruned.inUse).toEqual([]);
  }, 240_000);

  it('an archiver frozen and killed under load is taken over by one on a host with only the bucket: no WAL is lost', async () => {
    // The other host: its own BACKUP_DIR (an empty spool), the bucket in common.
    thirdDir = await mkdtemp(path.join(os.tmpdir(), 'dbops-pitr-third-'));
    const other = await startArchiver(rig, { BACKUP_DIR: thirdDir });
    expect(other.output()).toMatch(/standing by/);
    await takeOverFromFrozen(rig, archiver, other, server.url('app'), 'filler', 'taken-over');
    archiver = other;
  }, 240_000);
  it('a bucket that is down: the archiver goes on receiving, says what fails and warns as the slot grows; back up, it catches up with no gap', async () => {
    const token = 'pitr-outage-token-0123';
    const running = await startTestServer(rig, {
      API_TOKEN: token,
      DASHBOARD_USER: 'ops',
      DASHBOARD_PASSWORD: 'pw-1234567',
    });
    const bearer = { headers: { Authorization: `Bearer ${token}` } };
    const auth = { headers: { Authorization: basic('ops', 'pw-1234567') } };
    type Facts = Listing & {
      store: string;
      archiver?: { pid: number; error?: string; warning?: string; slotRetainedBytes?: number };
    };
    const facts = async () => (await (await fetch(`${running.url}/api/v1/pitr?env=prod`, bearer)).json()) as Facts[];
    const failing = (metrics: string, server: string) =>
      new RegExp(`dbops_wal_archiving_failed\\{server="${server}"\\} (\\d)`).exec(metrics)?.[1];
    try {
      const [before] = await facts();
      expect(before!.archiver?.error).toBeUndefined();
      const systemId = before!.server;
      await s3.down();
      try {
        // About 30 MiB of WAL while nothing can be stored: the slot keeps it on the server.
        await query(
          server.url('app'),
          'CREATE TABLE outage AS SELECT g, repeat(md5(g::text), 4) AS pad FROM generate_series(1, 150000) g',
        );
        const during = await waitFor(
          'the archiver to report the bucket failing and warn of the slot',
          async () => {
            const [one] = await facts();
            return one?.archiver?.error && one.archiver.warning ? one : undefined;
          },
          60_000,
        );
        expect(during.server).toBe(systemId);
        expect(during.errors).toEqual([expect.stringMatching(/^cannot read the store: /)]);
        expect(during.archiver!.pid).toBe(archiver.pid);
        expect(during.archiver!.error).toMatch(/^store s3: /);
        expect(during.archiver!.slotRetainedBytes).toBeGreaterThan(16 * 2 ** 20);
        expect(during.archiver!.warning).toMatch(/keeps \d+ MiB of WAL on the server \(limit 16 MiB\)/);
        // /metrics answers all the same, and says which store is down.
        const metrics = await (await fetch(`${running.url}/metrics`, auth)).text();
        expect(failing(metrics, systemId)).toBe('1');
        expect(metrics).toContain('dbops_store_up{store="s3"} 0');
        const page = await (await fetch(`${running.url}/recovery`, auth)).text();
        expect(page).toContain('cannot archive: store s3: ');
        expect(page).toContain('limit 16 MiB');
        expect(archiver.output()).toContain('cannot archive; trying again');
        // The CLI says which store it cannot read, and fails.
        const listed = await windows(rig);
        expect(listed.exitCode).toBe(1);
        expect(listed.stderr).toMatch(/cannot read the s3 store: /);
      } finally {
        await s3.up();
      }
      await query(server.url('app'), "INSERT INTO marker VALUES ('after-the-outage')");
      await waitArchived(rig, new Date());
      const after = await waitFor(
        'the archiver to catch up and stop warning',
        async () => {
          const [one] = await facts();
          return one?.archiver && !one.archiver.error && !one.archiver.warning ? one : undefined;
        },
        60_000,
      );
      expect(after.errors).toEqual([]);
      expect(after.archiver!.pid).toBe(archiver.pid);
      const metrics = await (await fetch(`${running.url}/metrics`, auth)).text();
      expect(failing(metrics, systemId)).toBe('0');
      expect(metrics).toContain('dbops_store_up{store="s3"} 1');
      // Nothing written during the outage was lost.
      const restored = await rig.cli(['restore', '--env', 'staging', '--from', 'prod', '--latest-wal', '--wait']);
      expect(restored.exitCode, restored.stderr).toBe(0);
      expect(await sql(rig.db('staging'), "SELECT name FROM marker WHERE name = 'after-the-outage'")).toHaveLength(1);
      expect(await sql<{ n: string }>(rig.db('staging'), 'SELECT count(*)::text AS n FROM outage')).toEqual([
        { n: '150000' },
      ]);
    } finally {
      await running.close();
    }
  }, 240_000);
});
