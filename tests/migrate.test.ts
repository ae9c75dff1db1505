import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MigrateResult } from '../src/operations/migrate.js';
import { loadPagila, scratchDatabasesOf, sql } from './helpers/pg.js';
import { Rig, type WorkerProcess } from './helpers/rig.js';

const INIT =
  '-- Up Migration\nCREATE TABLE things (id serial PRIMARY KEY, name text);\n-- Down Migration\nDROP TABLE things;\n';
const MORE =
  '-- Up Migration\nALTER TABLE things ADD COLUMN note text;\n-- Down Migration\nALTER TABLE things DROP COLUMN note;\n';

describe('migrate', () => {
  let rig: Rig;
  let db: string;
  let dir: string;
  let backupWorker: WorkerProcess;

  beforeAll(async () => {
    rig = await Rig.create();
    db = rig.db('app');
    await loadPagila(db);
    rig.setEnv('app', db);
    dir = path.join(rig.backupDir, 'migrations');
    mkdirSync(dir);
    writeFileSync(path.join(dir, '1_init.sql'), INIT);
    writeFileSync(path.join(dir, '2_more.sql'), MORE);
    await rig.startWorker('migrate');
    await rig.startWorker('migrate');
    backupWorker = await rig.startWorker('backup');
  });
  afterAll(async () => rig?.cleanup());

  const migrate = (...args: string[]) =>
    rig.cli(['migrate', ...args, '--env', 'app', '--dir', dir, '--wait', '--json']);
  const appliedNames = async () =>
    (await sql<{ t: string | null }>(db, "SELECT to_regclass('public.pgmigrations')::text AS t"))[0]!.t
      ? (await sql<{ name: string }>(db, 'SELECT name FROM pgmigrations ORDER BY id')).map((row) => row.name)
      : [];
  const columns = async (table: string) =>
    (
      await sql<{ c: string }>(
        db,
        'SELECT column_name AS c FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position',
        [table],
      )
    ).map((row) => row.c);

  it('status and --dry-run read only: they list and print, and create nothing', async () => {
    const status = await migrate('status');
    expect(status.exitCode).toBe(0);
    expect(JSON.parse(status.stdout)).toEqual({
      action: 'status',
      kind: 'sql',
      current: [],
      heads: ['2_more'],
      applied: [],
      pending: ['1_init', '2_more'],
      changed: [],
    });
    const dry = await migrate('up', '--dry-run');
    expect(dry.exitCode).toBe(0);
    const result = JSON.parse(dry.stdout) as { migrations: string[]; sql: string };
    expect(result.migrations).toEqual(['1_init', '2_more']);
    expect(result.sql).toContain('CREATE TABLE things');
    expect(result.sql).toContain('ALTER TABLE things ADD COLUMN note text;');
    expect(
      await sql(db, "SELECT to_regclass('public.pgmigrations')::text AS a, to_regclass('public.things')::text AS b"),
    ).toEqual([{ a: null, b: null }]);
  });

  it('up applies each pending migration once; two jobs at once never apply one twice; running again is a no-op', async () => {
    const producer = rig.producer();
    const jobs = await Promise.all([
      producer.enqueue('migrate', { env: 'app', dir, action: 'up' }),
      producer.enqueue('migrate', { env: 'app', dir, action: 'up' }),
    ]);
    const outcomes = await Promise.all(jobs.map((job) => producer.wait<'migrate'>(job.id)));
    expect(outcomes.map((outcome) => outcome.state)).toEqual(['completed', 'completed']);
    const ran = outcomes
      .flatMap((outcome) => (outcome as { result: { migrations: string[] } }).result.migrations)
      .sort();
    expect(ran).toEqual(['1_init', '2_more']);
    expect(await appliedNames()).toEqual(['1_init', '2_more']);
    expect(await columns('things')).toEqual(['id', 'name', 'note']);

    const again = await migrate('up');
    expect(JSON.parse(again.stdout)).toMatchObject({ action: 'up', migrations: [] });
    expect(await appliedNames()).toEqual(['1_init', '2_more']);
  });

  it('a broken migration leaves no trace, and the job names the file and the PostgreSQL error', async () => {
    const broken = path.join(dir, '3_broken.sql');
    writeFileSync(broken, '-- Up Migration\nCREATE TABLE half_done (id int);\nSELECT no_such_function();\n');
    try {
      const run = await migrate('up');
      expect(run.exitCode).toBe(1);
      expect(run.stderr).toMatch(/migration 3_broken.sql failed: function no_such_function\(\) does not exist/);
      expect(await sql(db, "SELECT to_regclass('public.half_done')::text AS t")).toEqual([{ t: null }]);
      expect(await appliedNames()).toEqual(['1_init', '2_more']);
    } finally {
      rmSync(broken);
    }
  });

  it('refuses to run when an applied migration was edited, naming the file', async () => {
    writeFileSync(path.join(dir, '1_init.sql'), INIT.replace('name text', 'name varchar(10)'));
    writeFileSync(path.join(dir, '3_next.sql'), '-- Up Migration\nCREATE TABLE next_one (id int);\n');
    try {
      const run = await migrate('up');
      expect(run.exitCode).toBe(1);
      expect(run.stderr).toContain('applied migration changed since: 1_init.sql');
      expect(await sql(db, "SELECT to_regclass('public.next_one')::text AS t")).toEqual([{ t: null }]);
      expect(JSON.parse((await migrate('status')).stdout).changed).toEqual(['1_init.sql']);
    } finally {
      writeFileSync(path.join(dir, '1_init.sql'), INIT);
      rmSync(path.join(dir, '3_next.sql'));
    }
  });

  it('down N reverts the last N migrations', async () => {
    const run = await migrate('down', '1');
    expect(run.exitCode).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ action: 'down', migrations: ['2_more'] });
    expect(await columns('things')).toEqual(['id', 'name']);
    expect(await appliedNames()).toEqual(['1_init']);
    const up = await migrate('up');
    expect(JSON.parse(up.stdout).migrations).toEqual(['2_more']);
  });

  it('--backup-first takes a backup before migrating; if the backup fails, no migration runs', async () => {
    writeFileSync(
      path.join(dir, '3_index.sql'),
      '-- Up Migration\nCREATE INDEX things_name ON things (name);\n-- Down Migration\nDROP INDEX things_name;\n',
    );
    const run = await migrate('up', '--backup-first');
    expect(run.exitCode).toBe(0);
    const result = JSON.parse(run.stdout) as MigrateResult & { backupId: string; migrations: string[] };
    expect(result.migrations).toEqual(['3_index']);
    expect(result.backupId).toMatch(/^app-/);
    const manifest = (await rig.cli(['backups', 'list', '--json'])).stdout;
    expect(JSON.parse(manifest).map((m: { id: string }) => m.id)).toContain(result.backupId);

    backupWorker.process.kill('SIGTERM');
    await backupWorker.exited;
    backupWorker = await rig.startWorker('backup', { PG_BIN_DIR: '/nonexistent' });
    writeFileSync(path.join(dir, '4_more.sql'), '-- Up Migration\nCREATE TABLE never_created (id int);\n');
    try {
      const failed = await migrate('up', '--backup-first');
      expect(failed.exitCode).toBe(1);
      expect(await sql(db, "SELECT to_regclass('public.never_created')::text AS t")).toEqual([{ t: null }]);
      expect(await appliedNames()).toEqual(['1_init', '2_more', '3_index']);
    } finally {
      rmSync(path.join(dir, '4_more.sql'));
      backupWorker.process.kill('SIGTERM');
      await backupWorker.exited;
      backupWorker = await rig.startWorker('backup');
    }
  });

  it('--rehearse --dry-run applies pending migrations to a scratch restore of the latest backup and touches nothing else; --rehearse then runs them for real', async () => {
    expect((await rig.cli(['backup', '--env', 'app', '--wait'])).exitCode).toBe(0);

    writeFileSync(
      path.join(dir, '4_rental_note.sql'),
      "-- Up Migration\nALTER TABLE rental ADD COLUMN note text;\nUPDATE rental SET note = 'checked';\n",
    );
    writeFileSync(path.join(dir, '5_bad.sql'), '-- Up Migration\nALTER TABLE rental ADD COLUMN note text;\n');
    try {
      const failing = await migrate('up', '--rehearse', '--dry-run');
      expect(failing.exitCode).toBe(1);
      expect(failing.stderr).toMatch(
        /rehearsal on app-.* failed: migration 5_bad.sql failed: column "note" of relation "rental" already exists \(4_rental_note \d+ ms ok; 5_bad \d+ ms FAILED\)/,
      );
      rmSync(path.join(dir, '5_bad.sql'));

      const run = await migrate('up', '--rehearse', '--dry-run');
      expect(run.exitCode).toBe(0);
      const result = JSON.parse(run.stdout);
      expect(result).toMatchObject({
        action: 'up',
        rehearsal: true,
        migrations: [{ name: '4_rental_note', ok: true }],
      });
      expect(result.migrations[0].ms).toBeGreaterThanOrEqual(0);
      expect(await columns('rental')).not.toContain('note');
      expect(await appliedNames()).toEqual(['1_init', '2_more', '3_index']);
      expect(await scratchDatabasesOf(rig.db('app'))).toEqual([]); // both scratch databases dropped

      // Without --dry-run, the rehearsal comes first and the real run follows it.
      const real = await migrate('up', '--rehearse');
      expect(real.exitCode, real.stderr).toBe(0);
      expect(JSON.parse(real.stdout)).toMatchObject({
        action: 'up',
        dryRun: false,
        migrations: ['4_rental_note'],
        rehearsal: { migrations: [{ name: '4_rental_note', ok: true }] },
      });
      expect(await columns('rental')).toContain('note');
      expect(await appliedNames()).toEqual(['1_init', '2_more', '3_index', '4_rental_note']);
      expect(await scratchDatabasesOf(rig.db('app'))).toEqual([]);
    } finally {
      rmSync(path.join(dir, '4_rental_note.sql'), { force: true });
      rmSync(path.join(dir, '5_bad.sql'), { force: true });
    }
  });
});
