import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createShadowDatabase } from '../src/postgres/databases.js';
import { redisLedger } from '../src/queue/ledger.js';
import { toolProcesses } from './helpers/blocker.js';
import { databaseLockIsFree, fingerprint, shadowDatabasesFor, sql } from './helpers/pg.js';
import { PG_ADMIN_URL, REDIS_URL } from './helpers/services.js';
import { Rig, sourceAndTarget } from './helpers/rig.js';
import { waitFor } from './helpers/wait.js';

/** Copy, restore and migrate under crashes and cancellation: no half-applied state, ever. */
describe('destructive operations under faults', () => {
  let rig: Rig;

  beforeAll(async () => {
    rig = await Rig.create();
    await sourceAndTarget(rig);
  });
  afterAll(async () => rig?.cleanup());

  /** The shadow database of our target, once a tool is filling it. */
  const shadowBeingFilled = (tool: string) =>
    waitFor(
      `${tool} to be filling the shadow database`,
      async () => {
        const [name] = await shadowDatabasesFor(rig.db('target'));
        return name && (await toolProcesses(tool, name)).length > 0 ? name : undefined;
      },
      30_000,
    );

  it.each([
    ['stream', 1],
    ['parallel', 2],
  ])(
    'copy (%s): SIGKILL mid-copy leaves the target untouched; the next worker drops the shadow and completes',
    async (_mode, jobs) => {
      const before = await fingerprint(rig.db('target'));
      const first = await rig.startWorker('copy');
      const producer = rig.producer();
      const job = await producer.enqueue('copy', { from: 'source', to: 'target', jobs });
      const outcome = producer.wait<'copy'>(job.id);
      const shadow = await shadowBeingFilled('pg_restore');
      first.process.kill('SIGKILL');
      await first.exited;
      await waitFor(
        'the orphaned pg_dump, pg_restore and psql to end',
        async () =>
          (await toolProcesses('pg_restore', shadow)).length === 0 &&
          (await toolProcesses('pg_dump', rig.db('source'))).length === 0 &&
          (await toolProcesses('psql', shadow)).length === 0,
      );
      expect(await fingerprint(rig.db('target'))).toEqual(before);
      // Until the server notices that the dead worker's session is gone, its lock on the target stands
      // and start-up recovery must leave the shadow alone (the next test covers that case).
      await waitFor("the server to release the dead worker's lock", () => databaseLockIsFree(rig.db('target')));

      const second = await rig.startWorker('copy');
      expect(second.output()).toContain('dropped the shadow database of a dead worker');
      expect((await outcome).state).toBe('completed');
      expect(await fingerprint(rig.db('target'))).toEqual(await fingerprint(rig.db('source')));
      expect(await shadowDatabasesFor(rig.db('target'))).toEqual([]);
      second.process.kill('SIGTERM');
      await second.exited;
    },
  );

  it("copy: a dead worker's shadow that start-up recovery could not drop is dropped by the next copy into its target", async () => {
    const worker = await rig.startWorker('copy'); // its start-up recovery has run, and found nothing
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    const redis = new Redis(REDIS_URL);
    const owner = {
      job: { prefix: rig.prefix, queue: 'copy', id: 'copy-from-a-dead-worker' },
      ledger: redisLedger(redis, { QUEUE_PREFIX: rig.prefix }),
    };
    const { name: leftover } = await createShadowDatabase(admin, rig.db('target'), owner).finally(() =>
      Promise.all([admin.end(), redis.quit()]),
    );
    expect(await shadowDatabasesFor(rig.db('target'))).toEqual([leftover]);

    const producer = rig.producer();
    const job = await producer.enqueue('copy', { from: 'source', to: 'target' });
    expect((await producer.wait<'copy'>(job.id)).state).toBe('completed');
    expect(await shadowDatabasesFor(rig.db('target'))).toEqual([]);
    const { logs } = await producer.queues.get('copy').getJobLogs(job.id);
    expect(logs).toContain(`dropped the shadow database "${leftover}" of a dead worker (job copy-from-a-dead-worker)`);
    expect(await fingerprint(rig.db('target'))).toEqual(await fingerprint(rig.db('source')));
    worker.process.kill('SIGTERM');
    await worker.exited;
  });

  /**
   * Ends `tool`'s sessions (in `database`, or in the shadow when not given) until the attempt gives up
   * its shadow; then, while the retry waits out its backoff, the target must be as it was.
   */
  async function terminateUntilRetried(tool: 'pg_dump' | 'pg_restore', database?: string): Promise<void> {
    const worker = await rig.startWorker('copy');
    const before = await fingerprint(rig.db('target'));
    const producer = rig.producer({ JOB_BACKOFF_MS: '5000' });
    const job = await producer.enqueue('copy', { from: 'source', to: 'target' });
    const outcome = producer.wait<'copy'>(job.id);
    const shadow = await shadowBeingFilled('pg_restore'); // pg_dump runs while pg_restore does
    let terminated = 0;
    while ((await sql('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [shadow])).length > 0) {
      const rows = await sql<{ ended: boolean }>(
        'postgres',
        'SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity WHERE datname = $1 AND application_name = $2',
        [database ?? shadow, `dbops-${tool}`],
      );
      terminated += rows.filter((row) => row.ended).length;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(terminated).toBeGreaterThan(0);
    const attempt = (await producer.getJob(job.id))!;
    const state = await waitFor('the attempt to end', async () => {
      const now = await attempt.getState();
      return now === 'delayed' || now === 'failed' || now === 'completed' ? now : undefined;
    });
    expect(state, `the attempt ended ${state}: ${(await producer.getJob(job.id))!.failedReason}`).toBe('delayed'); // waiting for its retry
    expect(await fingerprint(rig.db('target'))).toEqual(before);
    expect(await shadowDatabasesFor(rig.db('target'))).toEqual([]);
    expect((await outcome).state).toBe('completed');
    expect((await producer.getJob(job.id))!.attemptsMade).toBe(2); // the failed attempt and the one that completed
    expect(await fingerprint(rig.db('target'))).toEqual(await fingerprint(rig.db('source')));
    expect(await shadowDatabasesFor(rig.db('target'))).toEqual([]);
    worker.process.kill('SIGTERM');
    await worker.exited;
  }

  it("copy: pg_terminate_backend on the copy's pg_restore session fails the attempt cleanly; the retry completes", async () => {
    await terminateUntilRetried('pg_restore');
  });

  it("copy: pg_terminate_backend on the copy's pg_dump session fails the attempt cleanly; the retry completes", async () => {
    await terminateUntilRetried('pg_dump', rig.db('source'));
  });

  it('restore: jobs cancel mid-restore ends pg_restore, drops the shadow, leaves the target as it was', async () => {
    await rig.startWorker('backup');
    const backup = await rig.cli(['backup', '--env', 'source', '--wait', '--json']);
    const { backupId } = JSON.parse(backup.stdout) as { backupId: string };
    await sql(
      rig.db('target'),
      "CREATE TABLE IF NOT EXISTS precious_again (note text); INSERT INTO precious_again VALUES ('again')",
    );
    const before = await fingerprint(rig.db('target'));
    await rig.startWorker('restore');
    const producer = rig.producer();
    const job = await producer.enqueue('restore', { env: 'target', backup: backupId, jobs: 1 });
    const shadow = await shadowBeingFilled('pg_restore');
    // The producer's cancel is what `manage-db jobs cancel` calls (tested through the CLI with a backup).
    expect(await producer.cancel(job.id)).toBe('signalled');
    expect(await producer.wait(job.id)).toMatchObject({ state: 'cancelled' });
    expect(await toolProcesses('pg_restore', shadow)).toEqual([]);
    expect(await shadowDatabasesFor(rig.db('target'))).toEqual([]);
    expect(await fingerprint(rig.db('target'))).toEqual(before);
  });

  it('migrate: SIGKILL mid-migration rolls it back; the next worker applies it exactly once', async () => {
    const dir = path.join(rig.backupDir, 'migrations');
    mkdirSync(dir);
    writeFileSync(
      path.join(dir, '1_slow.sql'),
      '-- Up Migration\nCREATE TABLE slow_one (id int);\nINSERT INTO slow_one VALUES (1);\nSELECT pg_sleep(3);\n',
    );
    const first = await rig.startWorker('migrate');
    const producer = rig.producer();
    const job = await producer.enqueue('migrate', { env: 'target', dir, action: 'up' });
    const outcome = producer.wait<'migrate'>(job.id);
    await waitFor(
      'the migration to be running',
      async () =>
        (
          await sql('postgres', "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3)%' AND datname = $1", [
            rig.db('target'),
          ])
        ).length > 0,
    );
    first.process.kill('SIGKILL');
    await first.exited;
    await rig.startWorker('migrate');
    expect((await outcome).state).toBe('completed');
    expect(await sql(rig.db('target'), 'SELECT id FROM slow_one')).toEqual([{ id: 1 }]);
    expect(await sql(rig.db('target'), "SELECT count(*)::int AS n FROM pgmigrations WHERE name = '1_slow'")).toEqual([
      { n: 1 },
    ]);
  });
});
