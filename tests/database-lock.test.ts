import { mkdtempSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { holdDatabaseLock, loadPagila, sql } from './helpers/pg.js';
import { Rig } from './helpers/rig.js';
import { waitFor } from './helpers/wait.js';

/** Maintenance, trigger changes and migrations take the per-database lock; what only reads does not. */
describe('the per-database lock: who waits for it', () => {
  let rig: Rig;
  let db: string;
  let dir: string;

  beforeAll(async () => {
    rig = await Rig.create();
    db = rig.db('app');
    await loadPagila(db);
    rig.setEnv('app', db);
    dir = mkdtempSync(path.join(rig.backupDir, 'migrations-')); // inside MIGRATIONS_ROOT
    writeFileSync(
      path.join(dir, '1_things.sql'),
      '-- Up Migration\nCREATE TABLE things (id int);\n-- Down Migration\nDROP TABLE things;\n',
    );
    for (const type of ['maintenance', 'triggers', 'migrate']) await rig.startWorker(type);
  });
  afterAll(async () => {
    await rig?.cleanup(); // removes the migrations with the test's folder
  });

  const triggerState = async () =>
    (
      await sql<{ s: string }>(
        db,
        "SELECT tgenabled::text AS s FROM pg_trigger WHERE tgname = 'last_updated' AND tgrelid = 'public.film'::regclass",
      )
    )[0]?.s;
  const vacuums = async () =>
    (
      await sql<{ n: number }>(
        db,
        "SELECT vacuum_count::int AS n FROM pg_stat_user_tables WHERE relid = 'public.actor'::regclass",
      )
    )[0]?.n;
  const migrated = async () =>
    (await sql<{ t: string | null }>(db, "SELECT to_regclass('public.things')::text AS t"))[0]?.t;

  it('report, triggers list and migrate status run while a restore holds the lock; vacuum, trigger changes and migrations wait for it', async () => {
    const lock = await holdDatabaseLock(db, 'dbops:restore:held-by-the-test');
    const producer = rig.producer();
    let released = false;
    try {
      for (const args of [
        ['maintenance', 'report'],
        ['triggers', 'list'],
        ['migrate', '--dir', dir, 'status'],
      ]) {
        const run = await rig.cli([...args, '--env', 'app', '--wait', '--json']);
        expect(run.exitCode, `${args.join(' ')}: ${run.stderr}`).toBe(0);
      }

      const vacuumsBefore = await vacuums();
      const jobs = await Promise.all([
        producer.enqueue('maintenance', { env: 'app', action: 'vacuum', table: 'public.actor' }),
        producer.enqueue('triggers', { env: 'app', action: 'disable', table: 'public.film', name: 'last_updated' }),
        producer.enqueue('migrate', { env: 'app', dir, action: 'up' }),
      ]);
      for (const job of jobs) {
        await waitFor(`${job.id} to say it waits for the lock`, async () => {
          const fetched = await producer.getJob(job.id);
          const step = (fetched?.progress as { step?: string } | undefined)?.step ?? '';
          return (
            step.includes(`waiting for the lock on database "${db}"`) && step.includes('dbops:restore:held-by-the-test')
          );
        });
      }
      // While they wait, nothing of theirs has happened.
      expect(await triggerState()).toBe('O');
      expect(await migrated()).toBeNull();
      expect(await vacuums()).toBe(vacuumsBefore);
      for (const job of jobs) expect(await (await producer.getJob(job.id))!.getState()).toBe('active');

      await lock.release();
      released = true;
      const outcomes = await Promise.all(jobs.map((job) => producer.wait(job.id)));
      expect(outcomes.map((outcome) => outcome.state)).toEqual(['completed', 'completed', 'completed']);
      expect(await triggerState()).toBe('D');
      expect(await migrated()).toBe('things');
      await waitFor('the vacuum to show in pg_stat_user_tables', async () => (await vacuums())! > vacuumsBefore!);
    } finally {
      if (!released) await lock.release();
    }
  });
});
