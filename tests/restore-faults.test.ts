import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toolProcesses } from './helpers/blocker.js';
import { databaseLockIsFree, fingerprint, shadowDatabasesFor, sql, type Fingerprint } from './helpers/pg.js';
import { Rig, sourceAndTarget } from './helpers/rig.js';
import { waitFor } from './helpers/wait.js';

/** A restore worker killed half-way: the target is untouched, and the next worker cleans up and finishes. */
describe('a restore whose worker dies', () => {
  let rig: Rig;
  let target: Fingerprint;
  let backupId: string;

  beforeAll(async () => {
    rig = await Rig.create();
    target = await sourceAndTarget(rig);
    await rig.startWorker('backup');
    const backup = await rig.cli(['backup', '--env', 'source', '--wait', '--json']);
    expect(backup.exitCode).toBe(0);
    backupId = JSON.parse(backup.stdout).backupId;
  });
  afterAll(async () => rig?.cleanup());

  it('SIGKILL while pg_restore fills the shadow: target untouched, shadow dropped by the next worker, job completed', async () => {
    const first = await rig.startWorker('restore');
    const producer = rig.producer();
    const job = await producer.enqueue('restore', { env: 'target', backup: backupId, jobs: 1 });
    const outcome = producer.wait<'restore'>(job.id);
    const shadow = await waitFor(
      'pg_restore to be filling the shadow database',
      async () => {
        const [name] = await shadowDatabasesFor(rig.db('target'));
        return name && (await toolProcesses('pg_restore', name)).length > 0 ? name : undefined;
      },
      30_000,
    );
    first.process.kill('SIGKILL');
    await first.exited;
    await waitFor(
      'the orphaned pg_restore to end',
      async () => (await toolProcesses('pg_restore', shadow)).length === 0,
    );
    expect(await shadowDatabasesFor(rig.db('target'))).toEqual([shadow]); // left behind by the dead worker
    expect(await fingerprint(rig.db('target'))).toEqual(target);
    // The server releases the dead worker's lock once it notices the session is gone; on a loaded
    // machine that is not instantaneous, and until then a live worker could still own the shadow.
    await waitFor("the server to release the dead worker's lock", () => databaseLockIsFree(rig.db('target')));

    const second = await rig.startWorker('restore');
    expect(second.output()).toContain('dropped the shadow database of a dead worker');
    const finished = await outcome;
    expect(finished.state).toBe('completed');
    expect(await fingerprint(rig.db('target'))).toEqual(await fingerprint(rig.db('source')));
    expect(await shadowDatabasesFor(rig.db('target'))).toEqual([]);
  });

  it("pg_terminate_backend on the restore's connection: the attempt fails cleanly, the retry completes", async () => {
    await rig.startWorker('restore');
    await sql(rig.db('target'), 'DROP TABLE IF EXISTS precious'); // whatever is there now stays until the swap
    const before = await fingerprint(rig.db('target'));
    // A backoff long enough to look at the target between the failed attempt and the retry's swap.
    const producer = rig.producer({ JOB_BACKOFF_MS: '5000' });
    const job = await producer.enqueue('restore', { env: 'target', backup: backupId, jobs: 1 });
    const outcome = producer.wait<'restore'>(job.id);
    const shadow = await waitFor(
      "pg_restore's session in the shadow database",
      async () => {
        const [name] = await shadowDatabasesFor(rig.db('target'));
        if (!name) return undefined;
        const sessions = await sql<{ pid: number }>(
          'postgres',
          "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'dbops-pg_restore'",
          [name],
        );
        return sessions.length > 0 ? name : undefined;
      },
      30_000,
    );
    // Keep ending pg_restore's sessions in this first shadow until the attempt gives it up.
    let terminated = 0;
    while (
      await sql('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [shadow]).then((rows) => rows.length > 0)
    ) {
      const rows = await sql<{ ended: boolean }>(
        'postgres',
        "SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity WHERE datname = $1 AND application_name = 'dbops-pg_restore'",
        [shadow],
      );
      terminated += rows.filter((row) => row.ended).length;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(terminated).toBeGreaterThan(0);
    const attempt = (await producer.getJob(job.id))!;
    await waitFor('the failed attempt to wait for its retry', async () => (await attempt.getState()) === 'delayed');
    expect(await fingerprint(rig.db('target'))).toEqual(before); // untouched by the failed attempt
    const finished = await outcome;
    expect(finished.state).toBe('completed');
    expect((await producer.getJob(job.id))!.attemptsMade).toBe(2); // the failed attempt and the one that completed
    expect(await fingerprint(rig.db('target'))).toEqual(await fingerprint(rig.db('source')));
    expect(await shadowDatabasesFor(rig.db('target'))).toEqual([]);
    expect(await sql('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [shadow])).toEqual([]);
  });
});
