import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MaintenanceReport } from '../src/operations/maintenance.js';
import { lockTable } from './helpers/blocker.js';
import { loadPagila, sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';

describe('maintenance', () => {
  let rig: Rig;
  let db: string;

  beforeAll(async () => {
    rig = await Rig.create();
    db = rig.db('app');
    await loadPagila(db);
    rig.setEnv('app', db);
    await rig.startWorker('maintenance');
  });
  afterAll(async () => rig?.cleanup());

  const maintenance = (...args: string[]) => rig.cli(['maintenance', ...args, '--env', 'app', '--wait', '--json']);
  const stats = (table: string) =>
    sql<{ vacuums: number; analyzes: number }>(
      db,
      `SELECT (vacuum_count + autovacuum_count)::int AS vacuums, (analyze_count + autoanalyze_count)::int AS analyzes
         FROM pg_stat_user_tables WHERE relname = $1`,
      [table],
    ).then((rows) => rows[0]!);

  it('vacuums (with analyze) one table, as pg_stat_user_tables records', async () => {
    const before = await stats('rental');
    const run = await maintenance('vacuum', '--table', 'public.rental', '--analyze');
    expect(run.exitCode).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ action: 'vacuum', done: ['public.rental'], skipped: [] });
    const after = await stats('rental');
    expect(after.vacuums).toBe(before.vacuums + 1);
    expect(after.analyzes).toBe(before.analyzes + 1);
  });

  it('analyzes and reindexes (concurrently) the whole database', async () => {
    const before = await stats('film');
    const analyzed = await maintenance('analyze');
    expect(analyzed.exitCode).toBe(0);
    expect(JSON.parse(analyzed.stdout).done).toEqual(
      expect.arrayContaining(['public.film', 'public.payment', 'public.payment_p2022_01']),
    );
    expect((await stats('film')).analyzes).toBe(before.analyzes + 1);

    const filenode = async () => (await sql<{ f: string }>(db, "SELECT pg_relation_filenode('film_pkey') AS f"))[0]!.f;
    const old = await filenode();
    const reindexed = await maintenance('reindex', '--table', 'public.film');
    expect(reindexed.exitCode).toBe(0);
    expect(JSON.parse(reindexed.stdout)).toMatchObject({
      action: 'reindex',
      concurrently: true,
      done: ['public.film'],
    });
    expect(await filenode()).not.toBe(old); // the index was rebuilt
  });

  it('skips a table whose lock does not come in time instead of queueing behind it', async () => {
    const blocker = await lockTable(db, 'public.actor');
    try {
      const run = await maintenance('vacuum', '--table', 'public.actor', '--lock-timeout', '500');
      expect(run.exitCode).toBe(0);
      expect(JSON.parse(run.stdout)).toMatchObject({
        done: [],
        skipped: [{ table: 'public.actor', reason: 'lock not granted within 500 ms' }],
      });
    } finally {
      await blocker.release();
    }
  });

  it('reports sizes, dead tuples, unused indexes, never-vacuumed tables and idle transactions', async () => {
    await sql(
      db,
      'CREATE TABLE scratch (id int, note text); CREATE INDEX scratch_note ON scratch (note); INSERT INTO scratch SELECT g, md5(g::text) FROM generate_series(1, 1000) g; DELETE FROM scratch WHERE id <= 500',
    );
    // As a migrate job leaves it (dbops' checksums of applied migration files).
    await sql(db, 'CREATE TABLE public.dbops_migration_checksums (name text PRIMARY KEY, sha256 text NOT NULL)');
    const idle = await lockTable(db, 'public.language'); // an open transaction, idle
    try {
      await new Promise((resolve) => setTimeout(resolve, 2_200));
      const run = await rig
        .producer()
        .enqueue('maintenance', { env: 'app', action: 'report', idleSeconds: 2 })
        .then(({ id }) => rig.producer().wait<'maintenance'>(id));
      expect(run.state).toBe('completed');
      const report = (run as { result: MaintenanceReport }).result;
      expect(report.database).toBe(db);
      expect(report.sizeBytes).toBeGreaterThan(1_000_000);
      const rental = report.tables.find((table) => table.table === 'public.rental')!;
      expect(rental.totalBytes).toBeGreaterThan(rental.tableBytes);
      expect(rental.liveTuples).toBeGreaterThan(16_000);
      expect(report.unusedIndexes.map((index) => index.index)).toContain('public.scratch_note');
      expect(report.neverVacuumed).toContain('public.scratch');
      expect(report.previousDatabases).toEqual([]); // no restore or copy has replaced this one
      // The blocker is idle in its transaction, and holds language locked: sizes there are estimates.
      expect(report.idleInTransaction).toHaveLength(1);
      expect(report.idleInTransaction[0]!.query).toMatch(/LOCK TABLE public.language/);
      expect(report.tables.find((table) => table.table === 'public.language')!.sizeEstimated).toBe(true);
      expect(rental.sizeEstimated).toBe(false);
      const human = await rig.cli(['maintenance', 'report', '--env', 'app', '--wait']);
      const rows = human.stdout.split('\n');
      const header = rows.find((line) => line.startsWith('TABLE '))!;
      expect(header).toMatch(/^TABLE +TOTAL +INDEXES +LIVE +DEAD +BLOAT~ +LAST VACUUM +LAST ANALYZE$/);
      const rentalRow = rows.find((line) => line.startsWith('public.rental '))!;
      // Aligned columns, sizes in their units: the TOTAL column starts where its header does.
      expect(rentalRow.slice(header.indexOf('TOTAL'))).toMatch(/^\d+(\.\d)? (B|KiB|MiB|GiB) /);
      expect(human.stdout).toContain('public.scratch_note');
      // Migration bookkeeping is not the application's data.
      expect(human.stdout).not.toContain('dbops_migration_checksums');
      expect(report.tables.map((table) => table.table)).not.toContain('public.dbops_migration_checksums');
    } finally {
      await idle.release();
    }
  });

  it('a report, a question, is waited for without --wait (and --no-wait gives the job id)', async () => {
    const run = await rig.cli(['maintenance', 'report', '--env', 'app']);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout).toContain(`database ${db}`);
    const queued = await rig.cli(['maintenance', 'report', '--env', 'app', '--no-wait']);
    expect(queued.stdout.trim()).toMatch(/^maintenance-\d{8}t\d{6}-[0-9a-f]+$/);
  });

  it('refuses hostile table names and options that do not go together', async () => {
    const hostile = await maintenance('vacuum', '--table', 'film; drop table actor');
    expect(hostile.exitCode).toBe(1);
    expect(hostile.stderr).toContain('no table "film; drop table actor"');
    const mixed = await maintenance('analyze', '--full');
    expect(mixed.exitCode).toBe(2);
    expect(await sql(db, 'SELECT count(*)::int AS n FROM actor')).toEqual([{ n: 200 }]);
  });
});
