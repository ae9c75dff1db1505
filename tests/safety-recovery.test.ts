import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisLedger } from '../src/queue/ledger.js';
import { lockTable, toolSessions } from './helpers/blocker.js';
import { ForeignProducer } from './helpers/foreign.js';
import { databaseExists, databasesLike, fingerprint, loadPagila, sql } from './helpers/pg.js';
import { Rig, sourceAndTarget } from './helpers/rig.js';
import { REDIS_URL } from './helpers/services.js';
import { waitFor } from './helpers/wait.js';

/** Every job's work directory under .partial (prefix/queue/job), as relative paths. */
function workDirectories(backupDir: string): string[] {
  const root = path.join(backupDir, '.partial');
  const found: string[] = [];
  const walk = (dir: string, depth: number) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      if (depth === 2) found.push(path.relative(root, path.join(dir, entry.name)));
      else walk(path.join(dir, entry.name), depth + 1);
    }
  };
  try {
    walk(root, 0);
  } catch {
    return [];
  }
  return found;
}

/** pg_dump processes (and their wrappers) working on a database, by the database's name in argv. */
function dumpProcesses(database: string): { pid: number; args: string }[] {
  const processes: { pid: number; args: string }[] = [];
  for (const pid of readdirSync('/proc').filter((entry) => /^\d+$/.test(entry))) {
    try {
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
      if (args.includes('pg_dump') && args.includes(database)) processes.push({ pid: Number(pid), args });
    } catch {
      // gone meanwhile
    }
  }
  return processes;
}

describe('recovery removes only what dbops provably made, for jobs provably dead', () => {
  let rig: Rig;
  let foreign: ForeignProducer;

  beforeAll(async () => {
    rig = await Rig.create();
    await loadPagila(rig.db('app'));
    rig.setEnv('app', rig.db('app'));
    foreign = new ForeignProducer(rig);
  });
  afterAll(async () => {
    await foreign?.close();
    await rig?.cleanup();
  });

  it('a backup with a numeric id (another producer) keeps its work files while a second worker starts and recovers', async () => {
    const first = await rig.startWorker('backup');
    const blocker = await lockTable(rig.db('app'), 'public.actor');
    const job = await foreign.add('backup', { env: 'app', format: 'directory' });
    expect(job.id).toMatch(/^\d+$/);
    await waitFor('pg_dump to wait for the table lock', async () =>
      (await toolSessions(rig.db('app'))).some((session) => session.waiting),
    );
    const [work] = workDirectories(rig.backupDir);
    expect(work).toBe(path.join(rig.prefix, 'backup', job.id!));

    const second = await rig.startWorker('backup'); // start-up recovery has run when it is ready
    // A job that fails on the second worker runs recovery once more.
    const failing = await foreign.add('backup', { env: 'nowhere' });
    expect((await foreign.settled('backup', failing.id!)).failedReason).toMatch(/unknown environment "nowhere"/);
    await waitFor('the recovery after the failed job', () => second.output().split('"msg":"job failed"').length > 1);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(workDirectories(rig.backupDir)).toEqual([work]);

    await blocker.release();
    const outcome = await foreign.settled('backup', job.id!);
    expect(outcome.state, outcome.failedReason).toBe('completed');
    expect(outcome.result).toMatchObject({ env: 'app', format: 'directory' });
    expect(workDirectories(rig.backupDir)).toEqual([]);
    first.process.kill('SIGTERM');
    second.process.kill('SIGTERM');
    await Promise.all([first.exited, second.exited]);
  });

  it('a scheduled backup (id repeat:…) keeps its work files while a second worker starts and recovers', async () => {
    const first = await rig.startWorker('backup');
    const blocker = await lockTable(rig.db('app'), 'public.actor');
    const queue = foreign.queue('backup');
    await queue.upsertJobScheduler('backup.nightly', { every: 60_000 }, { name: 'backup', data: { env: 'app' } });
    const running = await waitFor('the scheduled backup to start', async () => (await queue.getActive())[0]);
    await queue.removeJobScheduler('backup.nightly');
    expect(running.id).toMatch(/^repeat:backup\.nightly:\d+$/);
    await waitFor('pg_dump to wait for the table lock', async () =>
      (await toolSessions(rig.db('app'))).some((session) => session.waiting),
    );
    const [work] = workDirectories(rig.backupDir);
    expect(work).toBe(path.join(rig.prefix, 'backup', `repeat_3abackup_2enightly_3a${running.id!.split(':')[2]}`));

    const second = await rig.startWorker('backup');
    expect(workDirectories(rig.backupDir)).toEqual([work]);
    await blocker.release();
    const outcome = await foreign.settled('backup', running.id!);
    expect(outcome.state, outcome.failedReason).toBe('completed');
    first.process.kill('SIGTERM');
    second.process.kill('SIGTERM');
    await Promise.all([first.exited, second.exited]);
  });

  it("databases carrying dbops' mark, or its name, without dbops' own record of them survive recovery", async () => {
    const mark = (target: string) =>
      `'{"mark":"dbops-shadow","target":"${target}","job":"restore-1","createdAt":"2020-01-01T00:00:00.000Z"}'`;
    // "production" with a forged comment, as a triggers job on another environment of its server could set.
    const production = rig.db('production');
    await sql('postgres', `CREATE DATABASE "${production}"`);
    await sql(production, 'CREATE TABLE orders (id int)');
    await sql('postgres', `COMMENT ON DATABASE "${production}" IS ${mark(rig.db('other'))}`);
    // dbops' name pattern, no record; and dbops' name with a record of another database (other OID).
    const unrecorded = `dbops_shadow_${rig.id}0a0b`;
    const otherOid = `dbops_shadow_${rig.id}0c0d`;
    for (const name of [unrecorded, otherOid]) {
      await sql('postgres', `CREATE DATABASE "${name}"`);
      await sql('postgres', `COMMENT ON DATABASE "${name}" IS ${mark(rig.db('other'))}`);
    }
    const redis = new Redis(REDIS_URL);
    await redisLedger(redis, { QUEUE_PREFIX: rig.prefix }).record({
      name: otherOid,
      oid: 1,
      kind: 'shadow',
      target: rig.db('other'),
      job: { prefix: rig.prefix, queue: 'restore', id: 'gone' },
      createdAt: '2020-01-01T00:00:00.000Z',
    });
    await redis.quit();

    const worker = await rig.startWorker('restore');
    for (const name of [production, unrecorded, otherOid]) {
      expect(await databaseExists(name), name).toBe(true);
      expect(worker.output()).toContain(`"database":"${name}"`);
    }
    expect(worker.output()).toContain('left alone: dbops cannot prove it created this database');
    expect(await sql(production, "SELECT to_regclass('orders')::text AS t")).toEqual([{ t: 'orders' }]);

    // The report shows them, and says why they stay.
    const maintenance = await rig.startWorker('maintenance');
    const reported = await rig.cli(['maintenance', 'report', '--env', 'app', '--wait', '--json']);
    expect(reported.exitCode, reported.stderr).toBe(0);
    const unproven = (JSON.parse(reported.stdout) as { unprovenDatabases: { name: string; why: string }[] })
      .unprovenDatabases;
    expect(unproven).toEqual(
      expect.arrayContaining([
        { name: production, why: "carries dbops' mark but not a name dbops gives" },
        { name: unrecorded, why: 'no record that dbops created it' },
        { name: otherOid, why: 'another database than the one dbops recorded under this name' },
      ]),
    );
    for (const name of [unrecorded, otherOid]) await sql('postgres', `DROP DATABASE "${name}"`);
    worker.process.kill('SIGTERM');
    maintenance.process.kill('SIGTERM');
    await Promise.all([worker.exited, maintenance.exited]);
  });
});

describe('a completed job that changed something never runs again', () => {
  let rig: Rig;
  let foreign: ForeignProducer;

  beforeAll(async () => {
    rig = await Rig.create();
    await sourceAndTarget(rig);
    foreign = new ForeignProducer(rig);
  });
  afterAll(async () => {
    await foreign?.close();
    await rig?.cleanup();
  });

  it("Bull Board's 'retry completed' on a restore is refused by the worker; the target keeps its data", async () => {
    await rig.startWorker('backup');
    await rig.startWorker('restore');
    const backup = await rig.cli(['backup', '--env', 'source', '--wait', '--json']);
    expect(backup.exitCode, backup.stderr).toBe(0);
    const { backupId } = JSON.parse(backup.stdout) as { backupId: string };
    const restore = await foreign.add('restore', { env: 'target', backup: backupId });
    expect((await foreign.settled('restore', restore.id!)).state).toBe('completed');
    await sql(rig.db('target'), 'CREATE TABLE written_after_the_restore (id int)');
    const after = await fingerprint(rig.db('target'));
    const kept = await databasesLike(`${rig.db('target')}_prev_%`);

    const job = (await foreign.queue('restore').getJob(restore.id!))!;
    await job.retry('completed'); // what Bull Board's button does
    const replay = await foreign.settled('restore', restore.id!);
    expect(replay.state).toBe('failed');
    expect(replay.failedReason).toMatch(
      /^this restore job already completed at \S+: a job that changed target never runs again; enqueue a new one$/,
    );
    expect(await fingerprint(rig.db('target'))).toEqual(after);
    expect(await databasesLike(`${rig.db('target')}_prev_%`)).toEqual(kept);

    // A new job does the same work when that is what is wanted.
    const again = await foreign.add('restore', { env: 'target', backup: backupId });
    expect((await foreign.settled('restore', again.id!)).state).toBe('completed');
  });

  it('`jobs retry` of a completed job says that it never runs again', async () => {
    const backup = await rig.cli(['backup', '--env', 'source', '--wait', '--json']);
    const { backupId } = JSON.parse(backup.stdout) as { backupId: string };
    const producer = rig.producer();
    const restore = await producer.enqueue('restore', { env: 'target', backup: backupId });
    expect((await producer.wait<'restore'>(restore.id)).state).toBe('completed');
    const retried = await rig.cli(['jobs', 'retry', restore.id]);
    expect(retried.exitCode).toBe(1);
    expect(retried.stdout + retried.stderr).toContain('a completed job never runs again: enqueue a new one');
  });
});

describe('tools run in a process group of their own, with only their own connection', () => {
  let rig: Rig;

  beforeAll(async () => {
    rig = await Rig.create();
    // Two tables big enough that pg_dump's parallel workers are still busy when the worker is killed.
    await sql('postgres', `CREATE DATABASE "${rig.db('big')}"`);
    for (const table of ['one', 'two']) {
      await sql(
        rig.db('big'),
        `CREATE TABLE ${table} AS SELECT i, md5(i::text) || md5((i * 7)::text) AS filler FROM generate_series(1, 1500000) AS i`,
      );
    }
    rig.setEnv('big', rig.db('big'), 'big-password-1');
    rig.setEnv('elsewhere', rig.db('elsewhere'), 'another-environments-password');
  });
  afterAll(async () => {
    await rig?.cleanup();
  });

  it("a SIGKILLed worker's parallel pg_dump workers are gone within 2 s", async () => {
    const worker = await rig.startWorker('backup');
    const job = await rig.producer().enqueue('backup', { env: 'big', format: 'directory', jobs: 2, compress: 9 });
    // The leader and its two forked workers (and the wrapping shell) are all at work.
    await waitFor(
      'pg_dump and its two parallel workers',
      () => dumpProcesses(rig.db('big')).filter((p) => !p.args.startsWith('/bin/sh')).length >= 3,
    );
    worker.process.kill('SIGKILL');
    await worker.exited;
    const killedAt = Date.now();
    await waitFor('every pg_dump process to end', () => dumpProcesses(rig.db('big')).length === 0, 10_000);
    expect(Date.now() - killedAt).toBeLessThan(2_000);
    expect(job.id).toBeTruthy();
  });

  it("a tool's environment holds its own connection's password and nothing else of the worker's", async () => {
    const blocker = await lockTable(rig.db('big'), 'public.one');
    const worker = await rig.startWorker('backup', {
      API_TOKEN: 'api-token-not-for-tools',
      BACKUP_ENCRYPTION_KEY: 'ab'.repeat(32),
    });
    await rig.producer().enqueue('backup', { env: 'big' });
    await waitFor('pg_dump to wait for the table lock', async () =>
      (await toolSessions(rig.db('big'))).some((session) => session.waiting),
    );
    const tool = dumpProcesses(rig.db('big')).find(
      (p) => !p.args.startsWith('/bin/sh') && !p.args.includes('setpriv'),
    )!;
    const environment = readFileSync(`/proc/${tool.pid}/environ`, 'utf8').split('\0').filter(Boolean);
    const names = environment.map((entry) => entry.slice(0, entry.indexOf('=')));
    expect(environment).toContain('PGPASSWORD=big-password-1');
    expect(environment.join('\n')).not.toContain('another-environments-password');
    // PWD is the wrapping shell's own (its working directory), not the worker's.
    for (const name of names)
      expect(name).toMatch(/^(PATH|LANG|LANGUAGE|TZ|LC_[A-Z_]+|PGPASSWORD|PGCONNECT_TIMEOUT|PGAPPNAME|PWD)$/);
    await blocker.release();
    worker.process.kill('SIGTERM');
    await worker.exited;
  });
});
